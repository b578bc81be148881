"""Console output shared by every kbucket command: errors, warnings, progress.

SPEC §3: every error is one clear line on stderr and a non-zero exit code, never a
traceback; long work shows a progress bar on a terminal and stays quiet, one line per
milestone, when stderr is not a terminal.

Commands raise ``UsageError`` (or let ``OSError`` escape) and run their body through
``run_command``, the one place that prints ``Error: ...`` and picks the exit code.

``rich`` is imported only when a progress bar is actually drawn: importing it costs
about 0.1 s, which would dominate short runs such as a cached ``kb-prv-create``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import IO, Any

__all__ = (
    "EXIT_INTERRUPTED",
    "Progress",
    "UsageError",
    "error",
    "format_bytes",
    "info",
    "run_command",
    "warning",
)

#: Exit code after Ctrl+C, as shells report a SIGINT death (128 + 2).
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A failure to report as one line, ``Error: <message>``, then exit.

    Args:
        message: what went wrong, naming the file or option involved.
        exit_code: 2 for bad input (the default), 1 for other failures; commands
            document their own codes.
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def _one_line(text: str) -> str:
    # One line whatever the message holds (a file name may contain a newline).
    return " ".join(text.split("\n")).replace("\r", " ")


def error(message: str, *, stream: IO[str] | None = None) -> None:
    """Print ``Error: <message>`` as one line on stderr."""
    print(f"Error: {_one_line(message)}", file=stream or sys.stderr, flush=True)


def warning(message: str, *, stream: IO[str] | None = None) -> None:
    """Print ``Warning: <message>`` as one line on stderr."""
    print(f"Warning: {_one_line(message)}", file=stream or sys.stderr, flush=True)


def info(message: str, *, stream: IO[str] | None = None) -> None:
    """Print ``message`` as one line on stderr (a command's report, no prefix)."""
    print(_one_line(message), file=stream or sys.stderr, flush=True)


def _describe_os_error(exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    if exc.filename is not None:
        name = os.fsdecode(exc.filename) if isinstance(exc.filename, bytes) else exc.filename
        return f"{name}: {reason}"
    return reason


def run_command(body: Callable[[], int | None], *, stream: IO[str] | None = None) -> int:
    """Run a command's body and turn every way it can end into an exit code.

    ``UsageError`` prints its message and exits with its code; ``OSError`` prints the
    file and reason and exits 1; Ctrl+C exits 130; a closed stdout (``| head``) exits
    quietly; anything else is a bug, reported in one line (set ``KBUCKET_DEBUG=1`` to
    let the traceback through).

    Returns:
        The exit code: the body's return value, or 0 if it returned None.
    """
    try:
        return body() or 0
    except UsageError as exc:
        error(exc.message, stream=stream)
        return exc.exit_code
    except KeyboardInterrupt:
        error("interrupted", stream=stream)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of our stdout went away; say nothing more, and keep Python from
        # complaining when it flushes stdout at exit.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 1
    except OSError as exc:
        error(_describe_os_error(exc), stream=stream)
        return 1
    except Exception as exc:
        if os.environ.get("KBUCKET_DEBUG"):
            raise
        error(f"internal error: {type(exc).__name__}: {exc}", stream=stream)
        return 1


def format_bytes(n: int) -> str:
    """Return a short human size: ``999 B``, ``1.2 kB``, ``3.4 GB`` (powers of 1000)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


class Progress:
    """Progress of a job counted in files and bytes, for a terminal or a log.

    On a terminal (``stream.isatty()``) it draws a rich progress bar, but only once the
    job has run for ``delay`` seconds, so quick jobs print nothing and never import
    rich. Elsewhere it prints a line at each 10% milestone, again only after ``delay``,
    and a final line if it printed any. All calls must come from one thread.

    Args:
        description: what is being done (``Hashing``).
        total_files: number of files expected, if known.
        total_bytes: number of bytes expected, if known; drives the bar when > 0,
            else the file count does.
        stream: where to draw (default ``sys.stderr``).
        tty: force terminal (True) or log (False) mode; default ``stream.isatty()``.
        delay: seconds of silence before the first output.
        clock: monotonic clock in seconds (tests pass a fake).
    """

    def __init__(
        self,
        description: str,
        *,
        total_files: int | None = None,
        total_bytes: int | None = None,
        stream: IO[str] | None = None,
        tty: bool | None = None,
        delay: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.description = description
        self.total_files = total_files
        self.total_bytes = total_bytes
        self.files = 0
        self.nbytes = 0
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty() if tty is None else tty
        self._delay = delay
        self._clock = clock
        self._start = clock()
        self._last_draw = 0.0
        self._milestone = 0
        self._printed = False
        self._closed = False
        self._rich: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(success=exc_type is None)

    def _fraction(self) -> float | None:
        if self.total_bytes:
            return min(1.0, self.nbytes / self.total_bytes)
        if self.total_files:
            return min(1.0, self.files / self.total_files)
        return None

    def update(self, files: int = 0, nbytes: int = 0) -> None:
        """Add ``files`` finished files and ``nbytes`` processed bytes (deltas)."""
        self.files += files
        self.nbytes += nbytes
        now = self._clock()
        if now - self._start < self._delay:
            return
        if self._tty:
            # Redraw at most 10 times a second: drawing costs far more than counting.
            if now - self._last_draw >= 0.1:
                self._last_draw = now
                self._draw_rich()
        else:
            self._log_milestones()

    def _draw_rich(self) -> None:
        if self._rich is None:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                TaskProgressColumn,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )
            from rich.progress import Progress as RichProgress

            columns: list[Any] = [
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[files]}"),
            ]
            if self.total_bytes:
                columns += [DownloadColumn(), TransferSpeedColumn()]
            columns.append(TimeRemainingColumn())
            # auto_refresh=False: no refresh thread, so no thread exists when the
            # hasher forks its worker processes; we refresh from update() instead.
            self._rich = RichProgress(
                *columns,
                console=Console(file=self._stream, force_terminal=True),
                auto_refresh=False,
                transient=False,
            )
            total = self.total_bytes or self.total_files
            self._task = self._rich.add_task(self.description, total=total, files="")
            self._rich.start()
        self._rich.update(
            self._task,
            completed=self.nbytes if self.total_bytes else self.files,
            files=self._files_text() if self.total_bytes else self._summary(),
        )
        self._rich.refresh()

    def _files_text(self) -> str:
        if self.total_files is not None:
            return f"{self.files}/{self.total_files} files"
        return f"{self.files} files"

    def _log_line(self, text: str) -> None:
        print(f"{self.description}: {text}", file=self._stream, flush=True)
        self._printed = True

    def _log_milestones(self) -> None:
        fraction = self._fraction()
        if fraction is None:
            return
        step = int(fraction * 10)
        if step > self._milestone and step < 10:
            self._milestone = step
            self._log_line(f"{step * 10}% ({self._summary()})")

    def _summary(self) -> str:
        text = self._files_text()
        if self.total_bytes:
            text += f", {format_bytes(self.nbytes)} of {format_bytes(self.total_bytes)}"
        elif self.nbytes:
            text += f", {format_bytes(self.nbytes)}"
        return text

    def close(self, success: bool = True) -> None:
        """Finish the display (a final "done" line in log mode if anything was printed
        and the job succeeded). Only the first call counts."""
        if self._closed:
            return
        self._closed = True
        if self._rich is not None:
            if success:
                self._draw_rich()
            self._rich.stop()
            self._rich = None
        elif self._printed and success:
            elapsed = self._clock() - self._start
            self._log_line(f"done ({self._summary()}) in {elapsed:.1f} s")
