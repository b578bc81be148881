"""Counting a download's bytes and files for the progress bar and ``progress`` events."""

from __future__ import annotations

import time
from collections.abc import Callable

from kbapps.download.results import EventSink

__all__ = ("Reporter",)


class Reporter:
    """Counts bytes for the progress bar and rate-limits ``progress`` events."""

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

    def add(self, files: int = 0, nbytes: int = 0) -> None:
        """Count ``files`` finished files and ``nbytes`` more bytes (deltas)."""
        self.bytes += nbytes
        self.files += files
        if self.progress is not None:
            self.progress(files, nbytes)
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self.emit(
                {
                    "event": "progress",
                    "bytes": self.bytes,
                    "total_bytes": self.total_bytes,
                    "files": self.files,
                    "total_files": self.total_files,
                }
            )

    def undo(self, nbytes: int) -> None:
        """Take back ``nbytes`` thrown away (a restart from byte 0)."""
        if nbytes:
            self.bytes -= nbytes
            if self.progress is not None:
                self.progress(0, -nbytes)
