"""File bodies on real sockets (sendfile on plain TCP with asyncio; read+send under TLS
and on trio), the listener."""

from __future__ import annotations

import hashlib
import ssl
from pathlib import Path

import anyio
import pytest

from kbtransport.http import FileBody, Request, Response, json_response
from kbtransport.http_client import ClientConfig, HttpClient
from kbtransport.listener import ListenConfig
from kbtransport.ranges import file_response
from kbtransport.testing import parse_raw_responses, raw_http
from tests.transport.transport_helpers import loopback_server

pytestmark = pytest.mark.anyio

SIZE = 5 * 1024 * 1024 + 17


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "data.bin"
    with path.open("wb") as f:
        for i in range(SIZE // 4096 + 1):
            f.write(hashlib.sha256(i.to_bytes(4, "big")).digest() * 128)
        f.truncate(SIZE)
    return path


def file_app(path: Path):  # type: ignore[no-untyped-def]
    async def app(request: Request) -> Response:
        return file_response(request, path.open("rb"), path.stat().st_size, name=path.name)

    return app


async def test_sendfile_on_plain_tcp(
    data_file: Path, sendfile_calls: list[tuple[int, int]], anyio_backend: str
) -> None:
    expected = data_file.read_bytes()
    async with loopback_server(file_app(data_file)) as bound:
        url = f"http://127.0.0.1:{bound.port}/f"
        with anyio.fail_after(30):
            async with HttpClient() as client:
                _, whole = await client.request("GET", url, max_body_bytes=SIZE)
                _, part = await client.request(
                    "GET", url, headers=[("Range", "bytes=4095-1048576")]
                )
    assert whole == expected
    assert part == expected[4095:1048577]
    # asyncio's loop.sendfile where it can be had; trio's streams read and send.
    taken = [(0, SIZE), (4095, 1044482)] if anyio_backend == "asyncio" else []
    assert sendfile_calls == taken


async def test_tls_falls_back_to_read_and_send(
    data_file: Path,
    sendfile_calls: list[tuple[int, int]],
    server_ssl: ssl.SSLContext,
    client_ssl: ssl.SSLContext,
) -> None:
    async with loopback_server(file_app(data_file), ssl_context=server_ssl) as bound:
        with anyio.fail_after(30):
            async with HttpClient(ClientConfig(ssl_context=client_ssl)) as client:
                _, body = await client.request(
                    "GET", f"https://127.0.0.1:{bound.port}/f", max_body_bytes=SIZE
                )
    assert body == data_file.read_bytes()
    assert sendfile_calls == []


async def test_file_that_shrinks_while_served_cuts_the_connection(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 1000)

    async def app(request: Request) -> Response:
        file = path.open("rb")
        path.write_bytes(b"x" * 10)  # truncated after the size was taken
        return Response(status=200, body=FileBody(file=file, offset=0, length=1000))

    async with loopback_server(app) as bound:
        stream = await anyio.connect_tcp("127.0.0.1", bound.port)
        data = await raw_http(stream, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await stream.aclose()
    head, body = data.split(b"\r\n\r\n", 1)
    assert b"content-length: 1000" in head
    assert len(body) < 1000


async def test_listener_reports_port_and_bounds_connections() -> None:
    release = anyio.Event()

    async def app(request: Request) -> Response:
        if request.path == "/slow":
            await release.wait()
        return json_response(200, {"ok": True})

    async with loopback_server(app, max_connections=1) as bound:
        assert bound.port > 0
        first = await anyio.connect_tcp("127.0.0.1", bound.port)
        await first.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        await anyio.sleep(0.1)
        # The only slot is busy serving a request: the second connection waits.
        second = await anyio.connect_tcp("127.0.0.1", bound.port)
        await second.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        with anyio.move_on_after(0.3) as waited:
            await second.receive()
        assert waited.cancelled_caught
        release.set()
        with anyio.fail_after(5):
            assert (await first.receive()).startswith(b"HTTP/1.1 200")
        # The first connection is now an idle keep-alive one: it yields its slot.
        data = await raw_http(second, b"", timeout=5)
        await second.aclose()
        with anyio.fail_after(5):
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                await first.receive()
        await first.aclose()
    assert parse_raw_responses(data)[0].status == 200


def test_listen_config_validates() -> None:
    with pytest.raises(ValueError, match="port"):
        ListenConfig(port=70000)
    with pytest.raises(ValueError, match="max_connections"):
        ListenConfig(max_connections=0)
    with pytest.raises(ValueError, match="max_connections_per_client"):
        ListenConfig(max_connections_per_client=0)
