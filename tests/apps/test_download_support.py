"""A stand-in network for the download client tests (no tests of its own).

The real hubs and shares are built elsewhere; these tests need something that answers
the two docs/http.md routes a client uses, with sources the test controls, including
misbehaving ones. ``FakeNetwork`` serves on 127.0.0.1 from an event loop in a
background thread (an anyio blocking portal), so the client under test (its API in
the test's own ``anyio.run``, or the console scripts as subprocesses) talks to it over
real sockets.

Routes (``SHA1`` is a content id the network was given with ``add``):

- ``GET /find/SHA1``: docs/http.md's find JSON; ``urls`` come from ``sources[SHA1]``
  (names of the routes below, or full URLs), ``found: false`` for unknown content.
- ``GET /good/SHA1``: the bytes, with Range (``kbtransport.ranges.file_response``).
- ``GET /wrong/SHA1``: other bytes of the same length (first 1000 bytes wrong too).
- ``GET /wrongtail/SHA1``: the right bytes except the last one.
- ``GET /cut/SHA1``: announces the whole length, sends half, closes.
- ``GET /norange/SHA1``: always 200 with the whole body, ignoring Range.
- ``GET /shortlen/SHA1``: 200 with one byte less than the content.
- ``GET /badrange/SHA1``: 206 with ``bytes 1-END/SIZE`` whatever was asked.
- ``GET /slow/SHA1``: sends 64 KiB, then nothing (the client's read timeout fires).
- ``GET /missing/SHA1``: 404 with the error JSON of docs/http.md.
- ``GET /sha1/SHA1``: the bytes, with Range (the hub's fallback route).
- ``GET /wrongmid/SHA1``: the right bytes up to the middle of the file (``bad_from``
  if set), wrong after; paced like ``paced``.
- ``GET /paced/SHA1``: the bytes, with Range, sent in 64 KiB steps at most
  ``pace`` bytes per second (a rate-limited source; 0: no limit).
- ``GET /NODE/download/ROUTE/SHA1`` (``NODE``: 12 hex digits): ``ROUTE``'s answer, at a
  URL naming a node, as a share's download URLs do (``node_url``), so the client
  counts each ``NODE`` as a distinct source.
- ``GET /NODE/sha1/SHA1/chunks``, ``GET /sha1/SHA1/chunks``: the content's chunk
  digest list (``kbproto.chunks``); ``bad_lists`` makes some nodes serve a wrong one.

Every request is logged with its Range header and the number of body bytes the server
set out to send, so tests can prove what was (not) transferred.
"""

from __future__ import annotations

import hashlib
import io
import json
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.from_thread

from kbproto.chunks import chunk_digests, digest_list_root
from kbproto.prv import Prv, PrvDir, make_prv, serialize_prv, serialize_prvdir
from kbtransport.http import FileBody, Request, Response, StreamBody, error_response, json_response
from kbtransport.listener import ListenConfig, serve_http
from kbtransport.ranges import file_response
from kbtransport.routing import Match, Router

#: ``bytes.translate`` table turning every byte into its complement.
_FLIP = bytes(b ^ 0xFF for b in range(256))
#: Bytes the slow source sends before it stalls.
SLOW_PREFIX = 64 * 1024


@dataclass
class Logged:
    """One request the network answered."""

    route: str
    sha1: str
    range: str | None
    status: int
    body_bytes: int


def content(size: int, seed: int = 0) -> bytes:
    """Deterministic pseudo-random bytes (no two seeds alike)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}/{counter}".encode()).digest() * 64
        counter += 1
    return bytes(out[:size])


def prv_of(data: bytes, name: str = "file.dat", *, chunks: bool = False) -> Prv:
    """The ``.prv`` of ``data`` (with its ``chunks`` field if ``chunks``)."""
    return make_prv(
        sha1=hashlib.sha1(data).hexdigest(),
        size=len(data),
        head_sha1=hashlib.sha1(data[:1000]).hexdigest(),
        path=name,
        chunks_root=digest_list_root(chunk_digests(data)) if chunks else None,
    )


def write_prv(path: Path, data: bytes, name: str = "file.dat") -> Prv:
    """Write the ``.prv`` of ``data`` to ``path``; return it."""
    prv = prv_of(data, name)
    path.write_bytes(serialize_prv(prv))
    return prv


def write_prvdir(path: Path, tree: PrvDir) -> None:
    """Write a ``.prvdir`` file."""
    path.write_bytes(serialize_prvdir(tree))


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (connection refused)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    sock.close()
    return port


@dataclass
class FakeNetwork:
    """The stand-in hub and sources; see the module docstring."""

    root: Path
    base: str = ""
    blobs: dict[str, Path] = field(default_factory=dict)
    sources: dict[str, list[str]] = field(default_factory=dict)
    log: list[Logged] = field(default_factory=list)
    find_status: int = 200
    find_body: bytes | None = None
    #: False makes the hub's ``/sha1/SHA1`` fallback answer 404.
    serve_sha1: bool = True
    #: ``gated`` requests wait until this many are in flight at once (or 10 s).
    gate: int = 2
    max_in_flight: int = 0
    #: Bytes per second of the ``paced`` route, per request (0: unpaced), and per node
    #: where ``node_pace`` says otherwise (1: a source that stalls after its head).
    pace: int = 0
    node_pace: dict[str, int] = field(default_factory=dict)
    #: Nodes whose digest list is wrong (one digest changed).
    bad_lists: set[str] = field(default_factory=set)
    #: Where ``wrongmid`` starts lying (None: the middle).
    bad_from: int | None = None
    _in_flight: int = 0
    _gate_open: anyio.Event | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, data: bytes, sources: list[str] | None = None) -> str:
        """Hold ``data``; ``sources`` are route names (``good``...) or full URLs."""
        sha1 = hashlib.sha1(data).hexdigest()
        path = self.root / sha1
        path.write_bytes(data)
        self.blobs[sha1] = path
        self.sources[sha1] = list(sources if sources is not None else ["good"])
        return sha1

    def url(self, route: str, sha1: str) -> str:
        """The URL of ``route`` for ``sha1`` (full URLs pass through)."""
        if "://" in route:
            return route
        return f"{self.base}/{route}/{sha1}"

    def node_url(self, node: str, route: str, sha1: str) -> str:
        """The URL of ``route`` for ``sha1`` as served by the node ``node``."""
        return f"{self.base}/{node}/download/{route}/{sha1}"

    def requests(self, route: str | None = None) -> list[Logged]:
        """The log, optionally only one route's entries."""
        with self._lock:
            return [e for e in self.log if route is None or e.route == route]

    def _record(self, route: str, sha1: str, request: Request, response: Response) -> Response:
        body = response.body
        if isinstance(body, FileBody):
            length = body.length
        elif isinstance(body, StreamBody):
            length = body.length or 0
        elif isinstance(body, bytes):
            length = len(body)
        else:
            length = 0
        with self._lock:
            self.log.append(Logged(route, sha1, request.header("range"), response.status, length))
        return response

    async def _wait_at_gate(self) -> bool:
        # Runs on the server's loop: count concurrent arrivals; open once enough.
        if self._gate_open is None:
            self._gate_open = anyio.Event()
        self._in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            if self._in_flight >= self.gate:
                self._gate_open.set()
            with anyio.move_on_after(10):
                await self._gate_open.wait()
            return self._gate_open.is_set()
        finally:
            self._in_flight -= 1

    def _paced(self, request: Request, data: bytes, node: str) -> Response:
        """``data`` (with Range) in 64 KiB steps, at most the node's pace per second."""
        size = len(data)
        start, end, status, headers = 0, size, 200, [("Content-Type", "application/octet-stream")]
        asked = request.header("range") or ""
        if asked.startswith("bytes="):
            first, _, last = asked[6:].partition("-")
            start, end = int(first), (int(last) + 1 if last else size)
            status = 206
            headers.append(("Content-Range", f"bytes {start}-{end - 1}/{size}"))
        pace = self.node_pace.get(node, self.pace)

        async def body() -> AsyncIterator[bytes]:
            step = 64 * 1024
            for offset in range(start, end, step):
                if pace:
                    await anyio.sleep(step / pace)
                yield data[offset : min(offset + step, end)]

        return Response(
            status=status,
            headers=tuple(headers),
            body=StreamBody(chunks=body(), length=end - start),
        )

    def router(self) -> Router:
        """The route table (see the module docstring)."""
        router = Router()

        async def find(request: Request, match: Match) -> Response:
            sha1 = match.params["sha1"]
            if self.find_status != 200 or self.find_body is not None:
                response = Response(
                    status=self.find_status,
                    headers=(("Content-Type", "application/json"),),
                    body=self.find_body or b'{"success": false, "error": "hub trouble"}',
                )
                return self._record("find", sha1, request, response)
            if sha1 not in self.blobs:
                payload: dict[str, object] = {"success": True, "found": False}
            else:
                size = self.blobs[sha1].stat().st_size
                payload = {
                    "success": True,
                    "found": True,
                    "size": size,
                    "urls": [self.url(r, sha1) for r in self.sources[sha1]],
                    "results": [{"kbshare_id": "0123456789ab", "size": size, "path": "f.dat"}],
                }
            return self._record("find", sha1, request, json_response(200, payload))

        def serve(route: str) -> None:
            async def handler(request: Request, match: Match) -> Response:
                sha1 = match.params["sha1"]
                path = self.blobs.get(sha1)
                if route == "gated":
                    if await self._wait_at_gate() is False:
                        response = error_response(503, "gate never opened: no concurrency")
                        return self._record(route, sha1, request, response)
                    route_as = "good"
                else:
                    route_as = route
                if (
                    path is None
                    or route_as == "missing"
                    or (route == "sha1" and not self.serve_sha1)
                ):
                    response = error_response(404, "no such file")
                    return self._record(route, sha1, request, response)
                data = path.read_bytes()
                size = len(data)
                node = match.params.get("node", "-")
                if route_as in ("paced", "wrongmid"):
                    if route_as == "wrongmid":
                        bad = size // 2 if self.bad_from is None else self.bad_from
                        data = data[:bad] + data[bad:].translate(_FLIP)
                    response = self._paced(request, data, node)
                    return self._record(route, sha1, request, response)
                if route == "wrong":
                    data = content(size, seed=999)
                elif route == "wrongtail":
                    data = data[:-1] + bytes([data[-1] ^ 0xFF])
                if route_as in ("good", "sha1", "wrong", "wrongtail", "badetag"):
                    etag = {"good": f'"{sha1}"', "sha1": f'"{sha1}"', "badetag": f'"{"0" * 40}"'}
                    etag_value = etag.get(route_as)
                    response = file_response(
                        request,
                        io.BytesIO(data),
                        size,
                        name="f.dat",
                        etag=etag_value,
                    )
                elif route_as == "norange":
                    response = Response(status=200, body=data)
                elif route_as == "shortlen":
                    response = Response(status=200, body=data[:-1])
                elif route_as == "badrange":
                    wrong = f"bytes 1-{size - 1}/{size}"  # whatever was asked for
                    response = Response(
                        status=206, headers=(("Content-Range", wrong),), body=data[1:]
                    )
                elif route_as == "cut":
                    half = data[: size // 2]

                    async def cut() -> AsyncIterator[bytes]:
                        yield half
                        raise RuntimeError("cut the connection half-way")

                    response = Response(status=200, body=StreamBody(chunks=cut(), length=size))
                else:  # slow
                    head = data[:SLOW_PREFIX]

                    async def slow() -> AsyncIterator[bytes]:
                        yield head
                        await anyio.sleep(3600)
                        yield b""  # pragma: no cover - never reached

                    response = Response(status=200, body=StreamBody(chunks=slow(), length=size))
                return self._record(route, sha1, request, response)

            router.add(("GET", "HEAD"), f"/{route}/{{sha1}}", handler)
            router.add(("GET", "HEAD"), f"/{{node}}/download/{route}/{{sha1}}", handler)

        async def chunks(request: Request, match: Match) -> Response:
            sha1 = match.params["sha1"]
            path = self.blobs.get(sha1)
            if path is None:
                return error_response(404, "no such content")
            digests = bytearray(chunk_digests(path.read_bytes()))
            if match.params.get("node") in self.bad_lists and digests:
                digests[0] ^= 0xFF
            response = Response(status=200, body=bytes(digests))
            return self._record("chunks", sha1, request, response)

        router.add(("GET",), "/find/{sha1}", find)
        router.add(("GET",), "/sha1/{sha1}/chunks", chunks)
        router.add(("GET",), "/{node}/sha1/{sha1}/chunks", chunks)
        for route in (
            "good",
            "sha1",
            "wrong",
            "wrongtail",
            "badetag",
            "norange",
            "shortlen",
            "badrange",
            "cut",
            "slow",
            "missing",
            "gated",
            "paced",
            "wrongmid",
        ):
            serve(route)
        return router


@contextmanager
def fake_network(root: Path, ssl_context: ssl.SSLContext | None = None) -> Iterator[FakeNetwork]:
    """Run a ``FakeNetwork`` on 127.0.0.1 (any free port) until the block ends.

    With ``ssl_context`` it serves HTTPS, and ``base`` is an ``https://`` URL.
    """
    blobs = root / "blobs"
    blobs.mkdir()
    network = FakeNetwork(root=blobs)
    listen = ListenConfig(host="127.0.0.1", port=0, ssl_context=ssl_context)
    with anyio.from_thread.start_blocking_portal() as portal:
        future, bound = portal.start_task(serve_http, network.router().app, listen)
        scheme = "https" if ssl_context is not None else "http"
        network.base = f"{scheme}://127.0.0.1:{bound.port}"
        try:
            yield network
        finally:
            future.cancel()


def events_of(stdout: str) -> list[dict[str, object]]:
    """Parse JSON Lines output."""
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def process_gone(pid: int) -> bool:
    """True once process ``pid`` has ended (gone, or a zombie nobody reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def wait_for_caching(stdout: str, timeout: float = 60.0) -> int:
    """Wait until the background cache copies announced in ``stdout`` (``--json``
    ``caching`` events) have ended; return how many there were."""
    pids = [e["pid"] for e in events_of(stdout) if e["event"] == "caching"]
    deadline = time.monotonic() + timeout
    for pid in pids:
        assert isinstance(pid, int)
        while not process_gone(pid):
            assert time.monotonic() < deadline, f"cache copy {pid} still running"
            time.sleep(0.02)
    return len(pids)
