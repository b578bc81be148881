"""Fuzz the HTTP request path: kbtransport's h11 server plus the share's routes.

A share directory is built once per process (a file, a sub-directory, a dot-file, a
``.kbucket/private.pem`` holding a marker, a symlink to a secret outside the share,
a symlinked directory escaping it) and served, with the web routes, by
``kbtransport.http_server.serve_http_connection`` over an in-memory byte stream. The
input is sent in pieces chosen by the input, then EOF.

Invariant, for any bytes:

- the server returns (no exception escapes, no hang: bounded by a deadline);
- what it wrote is empty or a sequence of well-formed HTTP/1.1 responses (status
  line, headers, a body framed by ``Content-Length`` or chunked) — when no ``HEAD``
  was sent, so bodies can be framed without knowing the methods;
- no status is 5xx (a share answering its own routes has no upstream to blame) except
  h11's own refusals of what it cannot parse (501 for an unsupported or repeated
  ``Transfer-Encoding``, 505 for a version it does not speak); no ``Traceback``;
- no byte of a secret (the outside file, the private key marker, a dot-file) and no
  absolute local path is in the output.

Input layout: the first byte picks raw mode (odd: the rest is sent as is) or
structured mode (even: requests assembled from hostile targets, methods and headers
chosen by the input, then the rest as a raw tail).

Run by hand (atheris): ``python -m fuzz.fuzz_http fuzz/corpus/http -max_total_time=600``
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

import anyio

from fuzz._reader import ByteReader
from kbapps.nodeapp import NodeApp
from kbapps.share.app import ShareApp, build_share_app
from kbapps.share.index import INDEX_FILENAME, FileIndex
from kbapps.share.paths import ShareDir
from kbapps.web import add_web_routes
from kbtransport.http_server import ServerConfig, serve_http_connection
from kbtransport.testing import memory_stream_pair, parse_raw_responses

__all__ = ("NODE_ID", "TestOneInput")

NODE_ID = "0123456789ab"
SECRET = b"FUZZ-SECRET-OUTSIDE-THE-SHARE"
KEY_MARKER = b"FUZZ-PRIVATE-KEY-BODY"
DOT_MARKER = b"FUZZ-DOT-FILE-BODY"
#: Short limits, so slow paths stay cheap; the deadline bounds one input.
_CONFIG = ServerConfig(header_timeout=1.0, idle_timeout=1.0, body_timeout=1.0, write_timeout=1.0)
_DEADLINE = 10.0

_TARGETS = (
    "/{id}/download/a.txt",
    "/{id}/download/sub/b.txt",
    "/{id}/download/../outside/secret.txt",
    "/{id}/download/%2e%2e/outside/secret.txt",
    "/{id}/download/%252e%252e/outside/secret.txt",
    "/{id}/download/sub%2f..%2f..%2foutside%2fsecret.txt",
    "/{id}/download/sub%5c..%5c..%5coutside%5csecret.txt",
    "/{id}/download/..\\..\\outside\\secret.txt",
    "/{id}/download//etc/passwd",
    "/{id}/download/%c0%ae%c0%ae/outside/secret.txt",
    "/{id}/download/a.txt%00.png",
    "/{id}/download/.kbucket/private.pem",
    "/{id}/download/sub/.hidden",
    "/{id}/download/escape.txt",
    "/{id}/download/escdir/secret.txt",
    "/{id}/api/readdir/",
    "/{id}/api/readdir/sub",
    "/{id}/api/readdir/.kbucket",
    "/{id}/api/readdir/escdir",
    "/{id}/api/readdir/..",
    "/{id}/prv/a.txt",
    "/{id}/prv/.kbucket/kbnode.json",
    "/{id}/sha1/" + "0" * 40,
    "/{id}/sha1/xyz",
    "/",
    "/web/",
    "/web/../../etc/passwd",
    "/web/%2e%2e/%2e%2e/etc/passwd",
    "*",
    "http://127.0.0.1/{id}/download/a.txt",
)
_METHODS = (b"GET", b"HEAD", b"POST", b"PUT", b"OPTIONS", b"DELETE", b"G\x00T", b"CONNECT")
_HEADERS = (
    b"Range: bytes=0-3\r\n",
    b"Range: bytes=99999-\r\n",
    b"Range: bytes=-0\r\n",
    b"Range: bytes=5-1,0-0\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Content-Length: 5\r\n",
    b"Content-Length: -1\r\n",
    b"Content-Length: 5\r\nContent-Length: 6\r\n",
    b"Connection: close\r\n",
    b"Upgrade: websocket\r\nConnection: Upgrade\r\n",
    b"Expect: 100-continue\r\n",
    b"If-None-Match: *\r\n",
    b"X-Long: " + b"x" * 20000 + b"\r\n",
)
#: 5xx statuses h11 itself picks for requests it cannot parse (``error_status_hint``).
_H11_REFUSALS = (b"501", b"505")
_STATUS_LINE = re.compile(rb"HTTP/1\.1 [1-5]\d\d [ -~]*\r\n")


class _Share:
    """The served directory and app (built once per process)."""

    def __init__(self) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="kbfuzz-http-")
        base = Path(self.tmp.name).resolve()
        self.base = base
        root = base / "share"
        (root / "sub").mkdir(parents=True)
        (root / ".kbucket").mkdir()
        (base / "outside").mkdir()
        (base / "outside" / "secret.txt").write_bytes(SECRET)
        (root / "a.txt").write_bytes(b"hello share\n")
        (root / "sub" / "b.txt").write_bytes(b"file b\n")
        (root / "sub" / ".hidden").write_bytes(DOT_MARKER)
        (root / ".kbucket" / "private.pem").write_bytes(KEY_MARKER)
        (root / ".kbucket" / "kbnode.json").write_bytes(KEY_MARKER)
        (root / "escape.txt").symlink_to(base / "outside" / "secret.txt")
        (root / "escdir").symlink_to(base / "outside")
        self.index = FileIndex(root / ".kbucket" / INDEX_FILENAME)
        self.app: ShareApp = build_share_app(ShareDir(root), self.index, NODE_ID)
        # The pages ask the share's own routes (there is no node around it here).
        network = NodeApp()
        network.attach(self.app.router.app)
        add_web_routes(self.app.router, node_id=NODE_ID, node_type="leaf", network=network)
        self.forbidden = (SECRET, KEY_MARKER, DOT_MARKER, str(base).encode(), b"Traceback")


_share: _Share | None = None


def _get_share() -> _Share:
    global _share
    if _share is None:
        _share = _Share()
    return _share


def _build(reader: ByteReader) -> bytes:
    out = bytearray()
    for _ in range(1 + reader.below(4)):
        method = _METHODS[reader.below(len(_METHODS))]
        target = _TARGETS[reader.below(len(_TARGETS))].format(id=NODE_ID).encode()
        if reader.below(4) == 0:
            target += reader.take(reader.below(16))
        out += method + b" " + target + b" HTTP/1.1\r\nHost: x\r\n"
        for _ in range(reader.below(3)):
            out += _HEADERS[reader.below(len(_HEADERS))]
        out += b"\r\n"
    return bytes(out) + reader.rest()


async def _serve(share: _Share, pieces: list[bytes]) -> bytes:
    client, server = memory_stream_pair()
    received = bytearray()

    async def read_all() -> None:
        while True:
            try:
                chunk = await client.receive(65536)
            except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                return
            received.extend(chunk)

    with anyio.fail_after(_DEADLINE):
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve_http_connection, server, share.app.router.app, _CONFIG)
            tg.start_soon(read_all)
            try:
                for piece in pieces:
                    await client.send(piece)
                await client.send_eof()
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass  # the server closed first: fine
    return bytes(received)


def check_output(data: bytes, out: bytes, forbidden: tuple[bytes, ...]) -> None:
    """Raise ``AssertionError`` if ``out`` breaks the invariant (see the module doc)."""
    for bad in forbidden:
        if bad in out:
            raise AssertionError(f"output holds {bad[:40]!r}: {out[:400]!r}")
    if not out:
        return
    if not _STATUS_LINE.match(out):
        raise AssertionError(f"output is not an HTTP response: {out[:200]!r}")
    if b"HEAD" in data or b"CONNECT" in data:
        statuses = re.findall(rb"HTTP/1\.1 (\d\d\d) ", out)
    else:
        try:
            responses = parse_raw_responses(out)
        except (ValueError, IndexError) as exc:
            raise AssertionError(f"malformed response stream ({exc}): {out[:400]!r}") from None
        statuses = [str(r.status).encode() for r in responses]
    for status in statuses:
        if status.startswith(b"5") and status not in _H11_REFUSALS:
            raise AssertionError(f"server error {status!r} for input {data[:200]!r}: {out[:400]!r}")


def TestOneInput(data: bytes) -> None:  # the name atheris looks for
    """Check the HTTP invariant on one input (raises on a violation)."""
    if not data:
        return
    share = _get_share()
    reader = ByteReader(data[1:])
    wire = reader.rest() if data[0] & 1 else _build(reader)
    pieces = ByteReader(data[:8]).chunks(wire) if len(wire) < 4096 else [wire]
    out = anyio.run(_serve, share, pieces)
    check_output(wire, out, share.forbidden)


def main() -> None:
    """Run under atheris (``pip install atheris``)."""
    import atheris

    atheris.instrument_all()
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
