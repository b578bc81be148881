"""Counting a download's bytes and files for the progress bar and ``progress`` events."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kbapps.download.results import EventSink

__all__ = ("Reporter",)


class Reporter:
    """Counts bytes for the progress bar and rate-limits ``progress`` events.

    A download from several sources at once also counts each source's bytes
    (``source_bytes``) and how many sources are sending (``active``); ``progress``
    events then carry ``sources`` (URL -> verified bytes it delivered) and
    ``active_sources``.
    """

    def __init__(
        self,
        emit: EventSink,
        progress: Callable[[int, int], None] | None,
        interval: float,
        total_bytes: int,
        total_files: int,
    ) -> None:
        self.emit = emit
        self.progress = progress
        self.interval = interval
        self.total_bytes = total_bytes
        self.total_files = total_files
        self.bytes = 0
        self.files = 0
        self._last = 0.0
        #: Bytes each source delivered (parallel downloads), by URL.
        self.sources: dict[str, int] = {}
        #: Sources sending now (parallel downloads).
        self.active = 0

    def source_bytes(self, url: str, nbytes: int) -> None:
        """Count ``nbytes`` more verified bytes delivered by the source ``url``."""
        self.sources[url] = self.sources.get(url, 0) + nbytes

    def add(self, files: int = 0, nbytes: int = 0) -> None:
        """Count ``files`` finished files and ``nbytes`` more bytes (deltas)."""
        self.bytes += nbytes
        self.files += files
        if self.progress is not None:
            self.progress(files, nbytes)
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            event: dict[str, Any] = {
                "event": "progress",
                "bytes": self.bytes,
                "total_bytes": self.total_bytes,
                "files": self.files,
                "total_files": self.total_files,
            }
            if self.sources:
                event["sources"] = dict(self.sources)
                event["active_sources"] = self.active
            self.emit(event)

    def undo(self, nbytes: int) -> None:
        """Take back ``nbytes`` thrown away (a restart from byte 0)."""
        if nbytes:
            self.bytes -= nbytes
            if self.progress is not None:
                self.progress(0, -nbytes)
