"""The run trace of a simulation: canonical lines, a stable digest, and a tail.

Strategy
--------
Every message, event, action, timer firing and fault is one line
``"<time> <node> <direction> <link> <summary>"`` with the time printed to the
microsecond, so the same seed gives byte-identical lines. The digest is a running
SHA-256 over the lines (each followed by a newline), so a long run needs no memory
for its digest; only the last ``tail_size`` lines are kept for failure messages,
plus every line when ``keep`` is set (golden traces). Summaries must not contain
anything that changes between processes (ids of objects, set order, hash order).
"""

from __future__ import annotations

import hashlib
from collections import deque

__all__ = ("TraceLog",)


class TraceLog:
    """Collects canonical trace lines and digests them.

    Args:
        keep: keep every line in ``lines`` (for golden traces and debugging).
        tail_size: how many of the latest lines ``tail`` can show.
    """

    def __init__(self, *, keep: bool = False, tail_size: int = 60) -> None:
        self._hash = hashlib.sha256()
        self._tail: deque[str] = deque(maxlen=tail_size)
        self.keep = keep
        #: Every line, if ``keep`` (else empty).
        self.lines: list[str] = []
        #: How many lines were recorded.
        self.count = 0

    def add(self, time: float, node: str, direction: str, link: int | None, summary: str) -> None:
        """Record one line (``link`` None prints as ``-``)."""
        line = f"{time:.6f} {node} {direction} {'-' if link is None else link} {summary}"
        self._hash.update(line.encode("utf-8", "backslashreplace"))
        self._hash.update(b"\n")
        self._tail.append(line)
        self.count += 1
        if self.keep:
            self.lines.append(line)

    def digest(self) -> str:
        """The hex SHA-256 of every line so far."""
        return self._hash.hexdigest()

    def tail(self, n: int | None = None) -> list[str]:
        """The last ``n`` lines (all kept tail lines if None)."""
        lines = list(self._tail)
        return lines if n is None else lines[-n:]
