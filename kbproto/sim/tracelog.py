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

__all__ = ("TraceLog",)


class TraceLog:
    """Collects canonical trace lines and digests them.

    Lines are hashed in batches (SHA-256 is a stream, so hashing a batch of lines at
    once gives the digest hashing them one by one would): a line costs one list
    append until the batch is full or ``digest`` is asked for.

    Args:
        keep: keep every line in ``lines`` (for golden traces and debugging).
        tail_size: how many of the latest lines ``tail`` can show.
    """

    #: Lines hashed together in one ``update`` call.
    BATCH = 512

    def __init__(self, *, keep: bool = False, tail_size: int = 60) -> None:
        self._hash = hashlib.sha256()
        # The newest lines: ``_recent[:_hashed]`` are digested already (kept for the
        # tail), the rest wait for the next batch.
        self._recent: list[str] = []
        self._hashed = 0
        self._tail_size = tail_size
        self._time: float | None = None
        self._stamp = ""
        self.keep = keep
        #: Every line, if ``keep`` (else empty).
        self.lines: list[str] = []
        #: How many lines were recorded.
        self.count = 0

    def add(self, time: float, node: str, direction: str, link: int | None, summary: str) -> None:
        """Record one line (``link`` None prints as ``-``)."""
        if time != self._time:
            # Many lines share one instant: format it once.
            self._time = time
            self._stamp = f"{time:.6f}"
        line = f"{self._stamp} {node} {direction} {'-' if link is None else link} {summary}"
        recent = self._recent
        recent.append(line)
        self.count += 1
        if self.keep:
            self.lines.append(line)
        if len(recent) - self._hashed >= self.BATCH:
            self._flush()

    def _flush(self) -> None:
        recent = self._recent
        if len(recent) > self._hashed:
            fresh = "\n".join(recent[self._hashed :]) + "\n"
            self._hash.update(fresh.encode("utf-8", "backslashreplace"))
            del recent[: max(0, len(recent) - self._tail_size)]
            self._hashed = len(recent)

    def digest(self) -> str:
        """The hex SHA-256 of every line so far."""
        self._flush()
        return self._hash.hexdigest()

    def tail(self, n: int | None = None) -> list[str]:
        """The last ``n`` lines (all kept tail lines if None)."""
        size = self._tail_size if n is None else min(n, self._tail_size)
        return self._recent[-size:] if size > 0 else []
