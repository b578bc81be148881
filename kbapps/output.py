"""Console output shared by every kbucket command: errors, warnings, progress.

docs/commands.md: every error is one clear line on stderr and a non-zero exit code, never a
traceback; long work shows a progress bar on a terminal and stays quiet, one line per
milestone, when stderr is not a terminal.

Commands raise ``UsageError`` (or let ``OSError`` escape) and run their body through
``run_command``, the one place that prints ``Error: ...`` and picks the exit code.

Everything a command prints goes through this module (a test walks ``kbapps`` for
``print`` and stream writes elsewhere), and everything it prints is made inert first:
names, paths, URLs and error texts come from peers, ``.prv``/``.prvdir`` files and
directories, and a control character in them could drive the reader's terminal (clear
the screen, retitle the window, hide or fake text). ``inert`` writes every character a
terminal may act on as a visible ``\\uXXXX``: the C0 controls (ESC starts every escape
sequence), DEL, the C1 controls (U+009B is a one-character CSI on some terminals), the
line and paragraph separators, and the bidirectional marks, embeddings, overrides and
isolates, which reorder what follows them on screen (``docs/security.md`` §2). Lines
(``line``, ``error``, ``warning``, the console of a running node, log records) are one
line each: a line break inside becomes a space. JSON output (``json_text``) is escaped
the same way inside its strings, where ``\\uXXXX`` is JSON's own escape: it stays valid
JSON meaning the same text.

``rich`` is imported only when a progress bar is actually drawn: importing it costs
about 0.1 s, which would dominate short runs such as a cached ``kb-prv-create``.

While a bar is on a terminal, a line for that terminal (stderr, or stdout when it is
the same terminal) is printed above the bar, whole: never wrapped at the terminal's
width, never moved to another stream, never drawn into the bar's own line. rich's
own redirection of ``sys.stdout``/``sys.stderr`` is off, since it re-flows every line
to the console's width and sends stdout's lines to the bar's stream
(``docs/commands.md``, "Output").
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import IO, Any, TypeVar

__all__ = (
    "ANYIO_BACKENDS",
    "BACKEND_VARIABLE",
    "EXIT_BAD_INPUT",
    "EXIT_BROKEN_PIPE",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_NETWORK",
    "EXIT_NO",
    "EXIT_OK",
    "Progress",
    "UsageError",
    "anyio_backend",
    "counted",
    "error",
    "exit_process",
    "format_bytes",
    "inert",
    "json_text",
    "line",
    "noun",
    "print_json",
    "print_json_bytes",
    "prompt",
    "run_async",
    "run_command",
    "warning",
)

T = TypeVar("T")

# The exit codes of every command: one table, ``docs/commands.md`` "Exit codes".
#: Done (a node: stopped by Ctrl+C or SIGTERM).
EXIT_OK = 0
#: The answer is no: the content is nowhere in the network, or the user declined.
EXIT_NO = 1
#: Bad input: arguments, options, or a file or directory the command was given (or
#: would write) that is missing, unreadable, unwritable, malformed or in the way.
EXIT_BAD_INPUT = 2
#: The network failed: the hub is unreachable, no source delivered the right bytes,
#: or a node cannot listen on its port.
EXIT_NETWORK = 3
#: A bug: an exception nobody expected (``KBUCKET_DEBUG=1`` shows its traceback);
#: 70 is ``EX_SOFTWARE`` of BSD's ``sysexits.h``.
EXIT_INTERNAL = 70
#: Exit code after Ctrl+C, as shells report a SIGINT death (128 + 2).
EXIT_INTERRUPTED = 130
#: The reader of stdout went away (``| head``), as shells report a SIGPIPE death (128 + 13).
EXIT_BROKEN_PIPE = 141
#: The environment variable choosing the event loop (``anyio_backend``).
BACKEND_VARIABLE = "KBUCKET_ANYIO_BACKEND"
#: The anyio backends the commands run on.
ANYIO_BACKENDS = ("asyncio", "trio")


class UsageError(Exception):
    """A failure to report as one line, ``Error: <message>``, then exit.

    Args:
        message: what went wrong, naming the file or option involved.
        exit_code: one of the ``EXIT_*`` codes; ``EXIT_BAD_INPUT`` by default.
    """

    def __init__(self, message: str, exit_code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


#: Code points a terminal may act on (see the module docstring): C0, DEL, C1, the line
#: and paragraph separators, the Arabic letter mark, LRM/RLM, the bidi embeddings and
#: overrides (U+202A-U+202E) and isolates (U+2066-U+2069).
_UNSAFE = (
    *range(0x20),
    *range(0x7F, 0xA0),
    0x061C,
    0x200E,
    0x200F,
    0x2028,
    0x2029,
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
)
#: ``str.translate`` tables: every unsafe character as ``\uXXXX`` ...
_INERT = {code: f"\\u{code:04x}" for code in _UNSAFE}
#: ... and for a line, a line break as a space (a name holding a newline stays one line).
_INERT_LINE = {**_INERT, ord("\n"): " ", ord("\r"): " "}
#: ... and for JSON text, whose only raw control characters are its own line breaks
#: between values (``json.dumps`` escapes C0 controls inside strings).
_INERT_JSON = {code: text for code, text in _INERT.items() if code != ord("\n")}


def inert(text: str) -> str:
    """``text`` with every character a terminal may act on written as ``\\uXXXX``."""
    return text.translate(_INERT)


def _one_line(text: str) -> str:
    return text.translate(_INERT_LINE)


#: The progress bar on a terminal now, if any: lines for that terminal go above it.
_live_bar: Progress | None = None


def _write(text: str, stream: IO[str] | None) -> None:
    out = stream if stream is not None else sys.stderr
    bar = _live_bar
    if bar is not None and text.endswith("\n") and bar.draws_on(out):
        bar.print_above(text[:-1])
        return
    out.write(text)
    out.flush()


def noun(count: int, singular: str, plural: str | None = None) -> str:
    """``singular`` for a count of one, else ``plural`` (default: ``singular + "s"``)."""
    if count == 1:
        return singular
    return plural if plural is not None else singular + "s"


def counted(count: int, singular: str, plural: str | None = None) -> str:
    """``count`` with thousands separators and the noun that agrees: ``1 file``,
    ``1,234 files``."""
    return f"{count:,} {noun(count, singular, plural)}"


def line(text: str, *, stream: IO[str] | None = None) -> None:
    """Print ``text`` as one inert line (on stderr unless ``stream`` is given)."""
    _write(_one_line(text) + "\n", stream)


def prompt(text: str, *, stream: IO[str] | None = None) -> None:
    """Print ``text`` inert, with no line end (a question waiting for its answer)."""
    _write(_one_line(text), stream)


def json_text(value: object, *, indent: int | None = None) -> str:
    """``value`` as JSON (UTF-8 text, not ASCII-escaped) that is inert on a terminal."""
    import json  # here: kb-prv-create's cached runs never need it (start-up time)

    return json.dumps(value, ensure_ascii=False, indent=indent).translate(_INERT_JSON)


def print_json(value: object, *, indent: int | None = None, stream: IO[str] | None = None) -> None:
    """Print ``json_text(value)`` and a line end (on stdout unless ``stream`` is given):
    one JSON Lines record, or with ``indent`` one indented document."""
    _write(json_text(value, indent=indent) + "\n", stream if stream is not None else sys.stdout)


def print_json_bytes(data: bytes) -> None:
    """Write a UTF-8 JSON document (a ``.prv``) to stdout's bytes, inert as ``json_text``
    makes it, and otherwise unchanged."""
    text = data.decode("utf-8").translate(_INERT_JSON)
    sys.stdout.buffer.write(text.encode("utf-8"))
    sys.stdout.buffer.flush()


def error(message: str, *, stream: IO[str] | None = None) -> None:
    """Print ``Error: <message>`` as one inert line on stderr."""
    line(f"Error: {message}", stream=stream)


def warning(message: str, *, stream: IO[str] | None = None) -> None:
    """Print ``Warning: <message>`` as one inert line on stderr."""
    line(f"Warning: {message}", stream=stream)


def anyio_backend() -> str:
    """The event loop the commands run on: ``$KBUCKET_ANYIO_BACKEND`` (``asyncio``, the
    default, or ``trio``), for testing the nodes and clients on both.

    Raises:
        UsageError: any other value (exit code 2).
    """
    backend = os.environ.get(BACKEND_VARIABLE, "") or "asyncio"
    if backend not in ANYIO_BACKENDS:
        raise UsageError(
            f"{BACKEND_VARIABLE} must be one of {', '.join(ANYIO_BACKENDS)}, not {backend!r}"
        )
    return backend


def run_async(func: Callable[..., Awaitable[T]], *args: object) -> T:
    """``anyio.run(func, *args)``, with log records printed inert on stderr meanwhile.

    The one way ``kbapps`` runs an event loop (a test checks), on the backend
    ``anyio_backend`` names, so whatever ``kbtransport`` logs (level WARNING and up: a
    failed handler, a peer's odd behaviour, often with text the peer chose) is printed
    through this module, one inert line per record (a traceback line by line), like
    Python's last-resort handler prints the message alone. ``anyio`` and ``logging``
    are imported here, not at start-up: commands that need no event loop never pay
    for them.

    Raises:
        UsageError: ``$KBUCKET_ANYIO_BACKEND`` names no backend we run on.
    """
    backend = anyio_backend()
    import anyio

    from kbapps._logs import inert_log_records

    if backend != "asyncio":
        # Said once, so a test (or a user) sees the variable was honoured.
        line(f"Note: running on {backend} (${BACKEND_VARIABLE})", stream=sys.stderr)
    with inert_log_records(_one_line, inert, lambda text: _write(text, sys.stderr)):
        return anyio.run(func, *args, backend=backend)


def _describe_os_error(exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    if exc.filename is not None:
        name = os.fsdecode(exc.filename) if isinstance(exc.filename, bytes) else exc.filename
        return f"{name}: {reason}"
    return reason


def run_command(body: Callable[[], int | None], *, stream: IO[str] | None = None) -> int:
    """Run a command's body and turn every way it can end into an exit code.

    ``UsageError`` prints its message and exits with its code; an ``OSError`` (a file
    that cannot be read or written) prints the file and reason and exits 2; Ctrl+C
    prints ``Interrupted.`` and exits 130; a closed stdout (``| head``) exits 141
    quietly; anything else is a bug, reported in one line, exit 70 (set
    ``KBUCKET_DEBUG=1`` to let the traceback through).

    Returns:
        The exit code: the body's return value, or 0 if it returned None.
    """
    try:
        return body() or EXIT_OK
    except UsageError as exc:
        error(exc.message, stream=stream)
        return exc.exit_code
    except KeyboardInterrupt:
        line("Interrupted.", stream=stream)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of our stdout went away; say nothing more, and keep Python from
        # complaining when it flushes stdout at exit.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except OSError as exc:
        error(_describe_os_error(exc), stream=stream)
        return EXIT_BAD_INPUT
    except Exception as exc:
        if os.environ.get("KBUCKET_DEBUG"):
            raise
        error(f"internal error: {type(exc).__name__}: {exc}", stream=stream)
        return EXIT_INTERNAL


def exit_process(code: int) -> int:
    """End a finished command's process now: run the ``atexit`` handlers, flush stdout
    and stderr, then ``os._exit(code)``, skipping the interpreter's teardown (freeing
    every object and module one by one: ~10 ms, a twentieth of a first
    ``kb-prv-create`` of 20,000 files and a fifth of one of a single file,
    ``docs/benchmarks.md``). For a console script's ``main`` only, never in-process.

    Returns:
        ``code``, for the usual exit, when another thread runs (the interpreter waits
        for it) or a stream cannot be flushed (the interpreter's own exit reports it).
    """
    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() > 1:
        return code
    import atexit

    atexit._run_exitfuncs()  # (and forgets them: they never run twice)
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):
        return code
    os._exit(code)


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
        quiet: count only, print nothing (``--json``, ``-q``).
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
        quiet: bool = False,
    ) -> None:
        self.description = description
        self.quiet = quiet
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
        self._note = ""

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
        if self.quiet:
            return
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
            # No redirection of sys.stdout/sys.stderr: lines reach the bar through
            # print_above (see the module docstring).
            self._rich = RichProgress(
                *columns,
                console=Console(file=self._stream, force_terminal=True),
                auto_refresh=False,
                transient=False,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            total = self.total_bytes or self.total_files
            # Starts where the job stands (a resumed download: the bytes on disk).
            self._task = self._rich.add_task(
                inert(self.description), total=total, completed=self._completed(), files=""
            )
            self._rich.start()
            global _live_bar
            _live_bar = self
        self._rich.update(
            self._task,
            completed=self._completed(),
            files=self._files_text() if self.total_bytes else self._summary(),
        )
        self._rich.refresh()

    def _completed(self) -> int:
        return self.nbytes if self.total_bytes else self.files

    def draws_on(self, stream: IO[str]) -> bool:
        """Whether ``stream`` shows on the terminal this bar is drawn on (its own
        stream, or another descriptor of the same terminal device)."""
        if stream is self._stream:
            return True
        try:
            mine, theirs = self._stream.fileno(), stream.fileno()
            return (
                os.isatty(mine)
                and os.isatty(theirs)
                and os.path.samestat(os.fstat(mine), os.fstat(theirs))
            )
        except (OSError, ValueError, AttributeError):  # no descriptor (a StringIO)
            return False

    def print_above(self, text: str) -> None:
        """Print the line ``text`` above the bar (no line end in ``text``): whole,
        never wrapped, then the bar again below it."""
        from rich.text import Text

        assert self._rich is not None
        self._rich.console.print(Text(text), soft_wrap=True, highlight=False)

    def set_note(self, text: str) -> None:
        """Show ``text`` after the file count (``2 sources``: a download from several
        sources at once; empty: nothing); drawn with the next update."""
        self._note = inert(text)

    def _files_text(self) -> str:
        if self.total_files is not None:
            text = f"{self.files:,}/{counted(self.total_files, 'file')}"
        else:
            text = counted(self.files, "file")
        return f"{text}, {self._note}" if self._note else text

    def _log_line(self, text: str) -> None:
        line(f"{self.description}: {text}", stream=self._stream)
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
            global _live_bar
            if _live_bar is self:
                _live_bar = None
            self._rich.stop()
            self._rich = None
        elif self._printed and success:
            elapsed = self._clock() - self._start
            self._log_line(f"done ({self._summary()}) in {elapsed:.1f} s")
