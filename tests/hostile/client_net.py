"""What the download-client attacks need (``test_client_*.py``): a real hub and share
holding known files, ``kb-prv-download`` run as a process, and an attacker's own HTTP
server (``FakeSource``) playing a hub and sources that lie, trickle or stall.

Everything listens on 127.0.0.1; every process and thread started here is stopped when
its fixture ends, and every wait is bounded.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from kbproto.prv import Prv, PrvDir, make_prv, serialize_prv, serialize_prvdir
from tests.e2e.procs import Node, Procs, command, write_pattern

__all__ = (
    "FILES",
    "ClientNet",
    "FakeSource",
    "client_net",
    "fake_source",
    "prv_of",
    "run_download",
    "tree_of",
    "wait_until",
)

#: The share's files: name -> (size, seed). Sizes straddle the client's 256 KiB limit
#: for writing on the event loop (larger bodies go through its writer thread).
FILES: dict[str, tuple[int, int]] = {
    "small.csv": (1_800, 1),
    "big.bin": (600_000, 2),
    "lru/a.bin": (200_000, 3),
    "lru/b.bin": (200_000, 4),
    "lru/c.bin": (200_000, 5),
    "tree/x.txt": (3_000, 6),
    "tree/sub/y.txt": (4_000, 7),
    "tree/sub/z.bin": (300_000, 8),
}
#: Bound on one ``kb-prv-download`` run.
RUN_TIMEOUT = 90.0


def prv_of(data: bytes, name: str) -> Prv:
    """The ``.prv`` of ``data`` under the file name ``name``."""
    return make_prv(
        sha1=hashlib.sha1(data).hexdigest(),
        size=len(data),
        head_sha1=hashlib.sha1(data[:1000]).hexdigest(),
        path=name,
    )


def tree_of(files: dict[str, bytes]) -> PrvDir:
    """A ``PrvDir`` holding ``files`` (``a/b/c.dat`` -> bytes)."""
    nested: dict[str, object] = {}
    for rel, data in files.items():
        *dirs, name = rel.split("/")
        node = nested
        for part in dirs:
            child = node.setdefault(part, {})
            assert isinstance(child, dict)
            node = child
        node[name] = prv_of(data, rel)

    def build(node: dict[str, object]) -> PrvDir:
        return PrvDir(
            files={k: v for k, v in node.items() if isinstance(v, Prv)},
            dirs={k: build(v) for k, v in node.items() if isinstance(v, dict)},
        )

    return build(nested)


@dataclass
class ClientNet:
    """A running hub and a share joined to it, holding ``FILES``."""

    procs: Procs
    hub: Node
    share: Node
    data: dict[str, bytes]

    def sha1(self, name: str) -> str:
        """The content id of the share's file ``name``."""
        return hashlib.sha1(self.data[name]).hexdigest()

    def write_prv(self, path: Path, name: str) -> Prv:
        """Write the ``.prv`` of the share's file ``name`` to ``path``."""
        prv = prv_of(self.data[name], name.rsplit("/", 1)[-1])
        path.write_bytes(serialize_prv(prv))
        return prv

    def write_prvdir(self, path: Path, prefix: str) -> dict[str, bytes]:
        """Write the ``.prvdir`` of the share's files under ``prefix/``; return them."""
        files = {
            name.removeprefix(prefix + "/"): data
            for name, data in self.data.items()
            if name.startswith(prefix + "/")
        }
        path.write_bytes(serialize_prvdir(tree_of(files)))
        return files

    def env(self, cache: Path, **extra: str) -> dict[str, str]:
        """The environment of a client with its own cache directory."""
        values = dict(self.procs.env)
        values["KBUCKET_CACHE_DIR"] = str(cache)
        values.update(extra)
        return values

    def download_url(self, name: str) -> str:
        """The share's own URL of its file ``name``."""
        return f"{self.share.url}/{self.share.node_id}/download/{name}"


@pytest.fixture(scope="module")
def client_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClientNet]:
    """A real ``kbucket-hub`` and ``kbucket-host`` for the module's tests."""
    work = tmp_path_factory.mktemp("client-net").resolve()
    procs = Procs(work)
    try:
        share_dir = work / "share"
        data = {
            name: write_pattern(share_dir / name, size, seed)
            for name, (size, seed) in FILES.items()
        }
        hub = procs.node("kbucket-hub", work / "hub", name="client-hub")
        share = procs.node("kbucket-host", share_dir, name="client-share", parent=hub)
        yield ClientNet(procs, hub, share, data)
    finally:
        procs.close()


def run_download(
    env: dict[str, str], *args: str | Path, timeout: float = RUN_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run ``kb-prv-download ARGS`` to its end (at most ``timeout`` seconds)."""
    return subprocess.run(
        command("kb-prv-download", *map(str, args)),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll ``predicate`` every 50 ms; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


@dataclass
class Served:
    """How ``FakeSource`` serves one content at ``/blob/<mode>/<sha1>``."""

    data: bytes
    #: ``trickle``: the first ``fast`` body bytes at once, then one byte per
    #: ``interval`` seconds. ``slow``: the same with ``step`` bytes per ``interval``
    #: (a slow but real link). ``trickle-head``: the status line and headers one byte
    #: per ``interval``. ``pause``: the first ``fast`` bytes, then wait for
    #: ``release`` before the rest. Every mode honours ``Range: bytes=N-``.
    fast: int = 0
    interval: float = 0.2
    step: int = 1
    release: threading.Event = field(default_factory=threading.Event)


class FakeSource:
    """An attacker's HTTP server: a hub's ``/find/SHA1`` and misbehaving sources.

    ``urls[sha1]`` is the list the fake hub answers for ``sha1`` (its own blob URLs or
    anyone's); ``blobs[(mode, sha1)]`` what its ``/blob/<mode>/<sha1>`` route serves
    (``add`` sets both). Every request line and its Range header is logged.
    """

    def __init__(self) -> None:
        self.urls: dict[str, list[str]] = {}
        self.blobs: dict[tuple[str, str], Served] = {}
        #: When set, the find answer is sent one byte per this many seconds.
        self.find_interval: float | None = None
        self.log: list[tuple[str, str | None]] = []
        self._stop = threading.Event()
        source = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                del format, args

            def do_GET(self) -> None:
                source.log.append((self.path, self.headers.get("Range")))
                find = re.fullmatch(r"/find/([0-9a-f]{40})", self.path)
                if find:
                    self._json(find.group(1))
                    return
                blob = re.fullmatch(r"/blob/([a-z-]+)/([0-9a-f]{40})", self.path)
                served = source.blobs.get((blob.group(1), blob.group(2))) if blob else None
                if blob is None or served is None:
                    self.send_error(404)
                    return
                source.serve(self, blob.group(1), served)

            def _json(self, sha1: str) -> None:
                urls = source.urls.get(sha1)
                answer: dict[str, object] = {"success": True, "found": urls is not None}
                if urls is not None:
                    answer["urls"] = urls
                body = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if source.find_interval is None:
                    self.wfile.write(body)
                    return
                try:
                    for byte in body:
                        if source._stop.wait(source.find_interval):
                            return
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                except OSError:
                    return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def add(self, mode: str, served: Served) -> str:
        """Serve ``served`` at ``/blob/<mode>/<its sha1>``; return that URL."""
        sha1 = hashlib.sha1(served.data).hexdigest()
        self.blobs[(mode, sha1)] = served
        return f"{self.base}/blob/{mode}/{sha1}"

    def serve(self, handler: BaseHTTPRequestHandler, mode: str, served: Served) -> None:
        """Answer one blob request as ``mode`` says (a 200, or a 206 from a Range)."""
        data = served.data
        asked = re.fullmatch(r"bytes=(\d+)-", handler.headers.get("Range") or "")
        start = int(asked.group(1)) if asked else 0
        status = "206 Partial Content" if asked else "200 OK"
        extra = f"Content-Range: bytes {start}-{len(data) - 1}/{len(data)}\r\n" if asked else ""
        head = (
            f"HTTP/1.1 {status}\r\nContent-Length: {len(data) - start}\r\n{extra}"
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        body = data[start:]
        out = handler.wfile
        try:
            if mode == "trickle-head":
                for byte in head:
                    if self._stop.wait(served.interval):
                        return
                    out.write(bytes([byte]))
                    out.flush()
                out.write(body)
                return
            out.write(head + body[: served.fast])
            out.flush()
            if mode == "pause":
                if not served.release.wait(60):
                    return
                out.write(body[served.fast :])
                return
            step = served.step if mode == "slow" else 1
            for index in range(served.fast, len(body), step):  # slow, trickle
                if self._stop.wait(served.interval):
                    return
                out.write(body[index : index + step])
                out.flush()
        except OSError:
            return  # the client went away: what a dropped source looks like

    def close(self) -> None:
        """Stop serving (trickling handlers end at their next byte)."""
        self._stop.set()
        for served in self.blobs.values():
            served.release.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)


@pytest.fixture
def fake_source() -> Iterator[FakeSource]:
    """A ``FakeSource`` stopped when the test ends."""
    source = FakeSource()
    try:
        yield source
    finally:
        source.close()
