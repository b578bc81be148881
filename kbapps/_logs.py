"""Log records printed inert on a terminal (internal; see ``kbapps.output.run_async``).

Apart from ``kbapps.output`` because it needs ``logging``, which imports ``threading``:
commands that never run an event loop (``kb-prv-create``) must not pay for either.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

__all__ = ("inert_log_records",)


class _InertLogHandler(logging.Handler):
    """Prints records of level WARNING and up as Python's last-resort handler does (the
    message alone), but through the output layer: the message as one inert line, a
    traceback inert line by line."""

    def __init__(
        self,
        one_line: Callable[[str], str],
        inert: Callable[[str], str],
        write: Callable[[str], None],
    ) -> None:
        super().__init__(logging.WARNING)
        self._one_line = one_line
        self._inert = inert
        self._out = write

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self._one_line(record.getMessage())
            if record.exc_info:
                trace = logging.Formatter().formatException(record.exc_info)
                text += "".join("\n" + self._inert(part) for part in trace.splitlines())
            self._out(text + "\n")
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def inert_log_records(
    one_line: Callable[[str], str],
    inert: Callable[[str], str],
    write: Callable[[str], None],
) -> Iterator[None]:
    """Route log records to an inert handler on the root logger for the block."""
    root = logging.getLogger()
    handler = _InertLogHandler(one_line, inert, write)
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
