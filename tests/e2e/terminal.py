"""A command run on a real pseudo-terminal, as a user at a terminal runs it.

``Terminal`` starts a process whose stdin, stdout and stderr are the slave side of a
new pty of a given size (80 columns by default, ``TERM=xterm``), and collects every
byte the process writes to it, as the terminal emulator would receive them. The
process is stopped (SIGKILL) if it is still running when the terminal is closed;
every wait is bounded.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Sequence
from types import TracebackType

import pytest

from tests.e2e.procs import default_sigint

__all__ = ("Terminal", "lines_of")


class Terminal:
    """``argv`` running on a pty of ``columns`` x ``rows``; use as a context manager.

    Args:
        argv: the command.
        env: its environment (``TERM`` set to ``xterm``, ``COLUMNS``/``LINES`` removed
            so that programs ask the terminal its size).
        columns: the terminal's width.
        rows: its height.
    """

    def __init__(
        self, argv: Sequence[str], env: dict[str, str], columns: int = 80, rows: int = 24
    ) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        environment = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")}
        environment["TERM"] = "xterm"
        try:
            self.popen = subprocess.Popen(
                list(argv),
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=environment,
                start_new_session=True,  # the pty becomes its controlling terminal
                preexec_fn=default_sigint,
            )
        finally:
            os.close(slave)
        self._master = master
        self._data = bytearray()
        self._cond = threading.Condition()
        self._done = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self._master, 65536)
            except OSError:  # EIO: every slave descriptor is closed (the process ended)
                chunk = b""
            with self._cond:
                if not chunk:
                    self._done = True
                    self._cond.notify_all()
                    return
                self._data += chunk
                self._cond.notify_all()

    @property
    def output(self) -> bytes:
        """Everything the process wrote to the terminal so far."""
        with self._cond:
            return bytes(self._data)

    def wait_for(self, pattern: bytes, timeout: float = 60.0) -> re.Match[bytes]:
        """The first match of ``pattern`` in the output; fails after ``timeout`` s."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = regex.search(self._data)
                if found:
                    return found
                left = deadline - time.monotonic()
                if self._done or left <= 0:
                    pytest.fail(f"no {pattern!r} on the terminal; it shows {bytes(self._data)!r}")
                self._cond.wait(min(left, 0.5))

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the process (as the terminal's Ctrl+C sends SIGINT)."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def wait(self, timeout: float = 120.0) -> int:
        """Wait for the process to end and the terminal to be drained; its exit code."""
        code = self.popen.wait(timeout)
        self._reader.join(timeout)
        return code

    def __enter__(self) -> Terminal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)
        self._reader.join(10)
        with contextlib.suppress(OSError):
            os.close(self._master)


def lines_of(output: bytes) -> list[str]:
    """The text lines of terminal output (the pty turns each ``\\n`` into ``\\r\\n``)."""
    return output.decode("utf-8", "replace").replace("\r\n", "\n").split("\n")
