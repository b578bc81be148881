"""Ambiguous HTTP/1.1 message framing (issue 11, class 12; docs/security.md "Request framing").

A request carrying both ``Content-Length`` and ``Transfer-Encoding`` (or
``Transfer-Encoding`` in HTTP/1.0) can be framed two ways; the bytes after it may be a
second, smuggled request to a server that framed it the other way. RFC 9112 §6.1/§6.3:
reject, or answer and close. Our nodes answer 400 and close. The other framing tricks
(two different lengths, a signed length, an unknown or doubled transfer coding, a
malformed chunk size) are refused by h11; they are attacked here too so that a change
of HTTP library cannot let them through unnoticed.

The client side is attacked with a real ``kb-prv-download`` against a hand-written
server whose find answer carries both framings: the client must read it as chunked
and never send another request on that connection.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.procs import Procs, command
from tests.hostile.conftest import Net

#: The request every attack tries to smuggle behind its first request.
SMUGGLED = b"GET /smuggled-marker HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

#: (name, request bytes). ``SMUGGLED`` follows each: it must never be answered; the one
#: answer is a 400 and the connection is closed.
AMBIGUOUS = (
    (
        "Content-Length then Transfer-Encoding",
        b"POST /web/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "Transfer-Encoding then Content-Length",
        b"GET /web/ HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: 0\r\n\r\n0\r\n\r\n",
    ),
    (
        "Transfer-Encoding after a tab, with Content-Length",
        b"GET /web/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "Transfer-Encoding in HTTP/1.0, kept alive",
        b"GET /web/ HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
)
#: Framings h11 refuses (400 or 501); kept here as regression guards.
MALFORMED = (
    ("two different lengths", b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
    ("a list of different lengths", b"Content-Length: 3, 4\r\n\r\nabcd"),
    ("a signed length", b"Content-Length: +3\r\n\r\nabc"),
    ("a negative length", b"Content-Length: -3\r\n\r\nabc"),
    ("a hexadecimal length", b"Content-Length: 0x3\r\n\r\nabc"),
    ("two numbers as a length", b"Content-Length: 3 3\r\n\r\nabc"),
    ("a space before the colon", b"Content-Length : 3\r\n\r\nabc"),
    ("a coding other than chunked", b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
    ("identity coding", b"Transfer-Encoding: identity\r\n\r\n"),
    ("chunked twice", b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"),
    (
        "two Transfer-Encoding fields",
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    ("a chunk size with a sign", b"Transfer-Encoding: chunked\r\n\r\n+3\r\nabc\r\n0\r\n\r\n"),
    ("a chunk size in 0x form", b"Transfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n"),
)

_STATUS_RE = re.compile(rb"HTTP/1\.[01] (\d{3}) ")


def _exchange(port: int, data: bytes, timeout: float = 5.0) -> tuple[list[int], bool]:
    """Send ``data`` on a fresh connection; return the statuses of every response read
    and whether the server closed the connection within ``timeout`` seconds."""
    out = bytearray()
    closed = False
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        deadline = time.monotonic() + timeout
        with contextlib.suppress(OSError):
            sock.sendall(data)
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except OSError:
                closed = True  # reset: closed too
                break
            if not chunk:
                closed = True
                break
            out += chunk
    assert b"smuggled-marker" not in out
    return [int(m) for m in _STATUS_RE.findall(bytes(out))], closed


def test_ambiguous_request_framing_is_refused_and_closed(net: Net) -> None:
    for node in (net.hub, net.share):
        for name, request in AMBIGUOUS:
            statuses, closed = _exchange(node.port, request + SMUGGLED)
            assert statuses == [400], (node.proc.name, name, statuses)
            assert closed, (node.proc.name, name, "connection left open")
        for name, tail in MALFORMED:
            request = b"POST /web/ HTTP/1.1\r\nHost: 127.0.0.1\r\n" + tail + SMUGGLED
            statuses, closed = _exchange(node.port, request)
            assert statuses in ([400], [501]), (node.proc.name, name, statuses)
            assert closed, (node.proc.name, name, "connection left open")
    net.assert_serving()


# --- the client ---------------------------------------------------------------------------


@dataclass
class _FramingServer:
    """A hand-written HTTP server: its find answer carries Content-Length *and*
    Transfer-Encoding; it records which connection each request came on."""

    content: bytes
    node_id: str = "0123456789ab"
    sock: socket.socket = field(default_factory=socket.socket)
    requests: list[tuple[int, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: bool = False

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def start(self) -> None:
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self) -> None:
        self.stopping = True
        self.sock.close()

    def _accept(self) -> None:
        number = 0
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            number += 1
            threading.Thread(target=self._serve, args=(conn, number), daemon=True).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        conn.settimeout(10)
        buffer = b""
        with conn:
            for _ in range(16):  # bounded: a few requests per connection at most
                while b"\r\n\r\n" not in buffer:
                    try:
                        chunk = conn.recv(65536)
                    except OSError:
                        return
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                target = head.split(b" ")[1].decode()
                with self.lock:
                    self.requests.append((number, target))
                try:
                    conn.sendall(self._answer(target))
                except OSError:
                    return

    def _answer(self, target: str) -> bytes:
        sha1 = hashlib.sha1(self.content).hexdigest()
        if target == f"/find/{sha1}":
            body = json.dumps(
                {
                    "success": True,
                    "found": True,
                    "size": len(self.content),
                    "urls": [f"http://127.0.0.1:{self.port}/{self.node_id}/download/x.bin"],
                    "results": [
                        {"kbshare_id": self.node_id, "size": len(self.content), "path": "x.bin"}
                    ],
                }
            ).encode()
            # Transfer-Encoding wins: the body is chunked; the Content-Length lies.
            return (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: 7\r\nTransfer-Encoding: chunked\r\n\r\n"
                + b"%x\r\n" % len(body)
                + body
                + b"\r\n0\r\n\r\n"
            )
        if target == f"/{self.node_id}/download/x.bin":
            return (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Length: %d\r\n\r\n" % len(self.content) + self.content
            )
        return b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


@pytest.fixture
def framing_server() -> Iterator[_FramingServer]:
    server = _FramingServer(content=b"content behind an ambiguous find answer\n" * 50)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_client_reads_transfer_encoding_and_does_not_reuse_the_connection(
    procs: Procs, tmp_path: Path, framing_server: _FramingServer
) -> None:
    content = framing_server.content
    prv = tmp_path / "x.prv"
    prv.write_text(
        json.dumps(
            {
                "original_checksum": hashlib.sha1(content).hexdigest(),
                "original_size": len(content),
                "original_fcs": "head1000-" + hashlib.sha1(content[:1000]).hexdigest(),
                "original_path": "x.bin",
                "prv_version": "0.11",
            },
            indent=4,
        )
        + "\n"
    )
    out = tmp_path / "out.bin"
    hub = f"http://127.0.0.1:{framing_server.port}"
    proc = procs.start(
        "kb-prv-download", command("kb-prv-download", str(prv), str(out), "--hub", hub)
    )
    assert proc.popen.wait(60) == 0, proc.stderr()
    assert out.read_bytes() == content
    with framing_server.lock:
        requests = list(framing_server.requests)
    find = [number for number, target in requests if target.startswith("/find/")]
    download = [number for number, target in requests if "/download/" in target]
    assert len(find) == 1, requests
    assert len(download) == 1, requests
    # The connection that carried both framings was not trusted with the next request.
    assert find[0] != download[0], requests
