"""Helpers for end-to-end tests: real ``kbucket-*`` and ``kb-prv-*`` processes on 127.0.0.1.

``Procs`` starts console commands (``python -m kbapps.cli.X``, so the tests do not
depend on where console scripts are installed), reads each process's stdout in a
thread (so a test can wait for a console line as it happens) and stops every process
it started when the test ends: SIGTERM, a bounded wait, then SIGKILL.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = (
    "Node",
    "Proc",
    "Procs",
    "rss_mb",
    "sha1_of",
    "wait_for",
    "write_pattern",
)

#: A URL nothing listens on: a share advertising it is "behind a firewall".
UNREACHABLE = "http://127.0.0.1:9"
#: Heartbeat timeout of every node in these tests (seconds): a dead peer is noticed fast.
HEARTBEAT = "4"
#: Bound on any single wait for a console line (start-up of a loaded machine included).
LINE_TIMEOUT = 30.0

_MODULES = {
    "kbucket-host": "kbapps.cli.host",
    "kbucket-hub": "kbapps.cli.hub",
    "kb-prv-create": "kbapps.cli.prv_create",
    "kb-prv-find": "kbapps.cli.prv_find",
    "kb-prv-download": "kbapps.cli.prv_download",
}


def command(name: str, *args: str) -> list[str]:
    """The argv running console command ``name`` with this interpreter."""
    return [sys.executable, "-m", _MODULES[name], *args]


@dataclass
class Proc:
    """A started process whose stdout lines are collected as they arrive."""

    name: str
    popen: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)
    closed: bool = False
    stderr_path: Path | None = None

    def _pump(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def wait_line(
        self, pattern: str, timeout: float = LINE_TIMEOUT, start: int = 0
    ) -> re.Match[str]:
        """The first stdout line from index ``start`` matching ``pattern`` (regex, from
        the line's start); fails after ``timeout`` seconds or if the process ends."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = start
        with self.cond:
            while True:
                for line in self.lines[seen:]:
                    m = regex.match(line)
                    if m:
                        return m
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if self.closed or left <= 0:
                    pytest.fail(
                        f"{self.name}: no line matching {pattern!r} "
                        f"({'exited ' + str(self.popen.poll()) if self.closed else 'timeout'});"
                        f" stdout: {self.lines!r}; stderr: {self.stderr()!r}"
                    )
                self.cond.wait(min(left, 0.5))

    def has_line(self, pattern: str) -> bool:
        """True if some stdout line so far matches ``pattern``."""
        regex = re.compile(pattern)
        with self.cond:
            return any(regex.match(line) for line in self.lines)

    def stderr(self) -> str:
        """What the process wrote on stderr so far (bounded)."""
        if self.stderr_path is None or not self.stderr_path.exists():
            return ""
        return self.stderr_path.read_text(errors="replace")[-4000:]

    def signal(self, sig: int) -> None:
        """Send ``sig`` if the process still runs."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait at most ``timeout`` s (then SIGKILL); return the exit code."""
        self.signal(signal.SIGCONT)  # a test may have paused it
        self.signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(10)
            pytest.fail(f"{self.name} did not stop within {timeout} s of SIGTERM")


@dataclass
class Node:
    """A running ``kbucket-host``/``kbucket-hub`` and what its console said."""

    proc: Proc
    port: int
    directory: Path
    scheme: str = "http"

    @property
    def url(self) -> str:
        """The node's local URL."""
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def node_id(self) -> str:
        """The node id, from ``.kbucket/kbnode.json``."""
        import json

        config = json.loads((self.directory / ".kbucket" / "kbnode.json").read_text())
        node_id = config["node_id"]
        assert isinstance(node_id, str)
        return node_id


class Procs:
    """Starts processes; ``close`` stops all of them (the fixture's finalizer)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.all: list[Proc] = []
        self._count = 0
        self.env = dict(os.environ)
        self.env["KBUCKET_CACHE_DIR"] = str(workdir / "user-cache")
        self.env.pop("KBUCKET_URL", None)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        stdin: str | None = None,
        env: dict[str, str] | None = None,
    ) -> Proc:
        """Start ``argv``; stdout is read line by line, stderr goes to a file."""
        self._count += 1
        err = self.workdir / f"{self._count:02d}-{name}.stderr"
        with err.open("w") as err_file:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err_file,
                text=True,
                env=env if env is not None else self.env,
                preexec_fn=default_sigint,
            )
        proc = Proc(name, popen, stderr_path=err)
        self.all.append(proc)
        threading.Thread(target=proc._pump, daemon=True).start()
        if stdin is not None:
            assert popen.stdin is not None
            popen.stdin.write(stdin)
            popen.stdin.close()
        return proc

    def node(
        self,
        kind: str,
        directory: Path,
        *args: str,
        name: str | None = None,
        parent: Node | None = None,
        env: dict[str, str] | None = None,
        wait_joined: bool = True,
        port: int = 0,
    ) -> Node:
        """Start a node with ``--auto --port 0`` on 127.0.0.1 and wait until it runs
        (and, with a parent, until it joined; a share also until it indexed)."""
        return self.launch(
            kind,
            directory,
            *args,
            name=name,
            parent=parent,
            env=env,
            wait_joined=wait_joined,
            port=port,
        )()

    def launch(
        self,
        kind: str,
        directory: Path,
        *args: str,
        name: str | None = None,
        parent: Node | None = None,
        env: dict[str, str] | None = None,
        wait_joined: bool = True,
        port: int = 0,
    ) -> Callable[[], Node]:
        """Start a node as ``node`` does; the returned function waits until it is ready
        (so several nodes can start at once)."""
        directory.mkdir(parents=True, exist_ok=True)
        label = name or directory.name
        argv = [
            "--auto",
            "--name",
            label,
            "--scientific-research",
            "yes",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--heartbeat-timeout",
            HEARTBEAT,
        ]
        if kind == "kbucket-host":
            argv += ["--confirm-share", "yes"]
        if parent is not None:
            argv += ["--parent-hub", parent.url]
        proc = self.start(label, command(kind, str(directory), *argv, *args), env=env)
        noun = "share" if kind == "kbucket-host" else "hub"

        def ready() -> Node:
            m = proc.wait_line(rf"kbucket-{noun} is running (https?) on port (\d+)$")
            node = Node(proc, int(m.group(2)), directory, m.group(1))
            if parent is not None and wait_joined:
                proc.wait_line(r"Connected to parent hub: ")
            if kind == "kbucket-host":
                proc.wait_line(r"Indexed \d+ files?\.$")
            return node

        return ready

    def close(self) -> None:
        """Stop every process still running (SIGTERM, then SIGKILL)."""
        for proc in reversed(self.all):
            if proc.popen.poll() is None:
                proc.signal(signal.SIGCONT)
                proc.signal(signal.SIGTERM)
        for proc in reversed(self.all):
            try:
                proc.popen.wait(10)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait(10)


def default_sigint() -> None:
    """``preexec_fn`` of the processes a test may Ctrl+C: SIGINT back to its default, as
    in a terminal (a shell without job control starts background jobs with SIGINT
    ignored, and a Python started so ignores Ctrl+C: as users expect, but not a test)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now, not ending in 443 (a node on such a port
    turns HTTPS on and would need a certificate)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port % 1000 != 443:
            return port


def write_pattern(path: Path, size: int, seed: int) -> bytes:
    """Write ``size`` deterministic bytes (every 64 KiB block tagged with its offset)."""
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB
    buf = bytearray((block * (size // len(block) + 1))[:size])
    for offset in range(0, size, 65536):
        buf[offset : offset + 8] = offset.to_bytes(8, "big")[: size - offset]
    data = bytes(buf)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def rss_mb(pid: int) -> float:
    """Resident set size of process ``pid`` in MiB (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def sha1_of(data: bytes) -> str:
    """Hex SHA-1 of ``data``."""
    return hashlib.sha1(data).hexdigest()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    """Poll ``predicate`` until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)


def iter_json_lines(text: str) -> Iterator[dict[str, object]]:
    """The JSON objects of a JSON Lines text (other lines skipped)."""
    import json

    for line in text.splitlines():
        if line.startswith("{"):
            yield json.loads(line)
