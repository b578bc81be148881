"""The h11+anyio HTTP client against our server on 127.0.0.1 (and a few raw servers)."""

from __future__ import annotations

import contextlib
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
import trustme
from anyio.abc import ByteStream

from kbtransport.errors import (
    ConnectError,
    PeerProtocolError,
    ReadError,
    TransportTimeout,
)
from kbtransport.http import Request, Response, StreamBody, json_response
from kbtransport.http_client import ClientConfig, HttpClient
from kbtransport.http_server import ServerConfig
from kbtransport.listener import BoundAddress, ListenConfig, serve_tcp
from kbtransport.ranges import file_response
from kbtransport.websocket import connect_websocket
from tests.transport.transport_helpers import loopback_server

pytestmark = pytest.mark.anyio

BIG = bytes(range(251)) * 12_000  # ~3 MB, not a multiple of any read size


def make_app(tmp_path: Path, seen: list[tuple[str, int]]):  # type: ignore[no-untyped-def]
    big = tmp_path / "big.bin"
    big.write_bytes(BIG)

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(50):
            yield str(i).encode() * 1000

    async def app(request: Request) -> Response:
        if request.client is not None:
            seen.append((request.path, request.client[1]))
        if request.path == "/big":
            return file_response(request, big.open("rb"), len(BIG), name="big.bin")
        if request.path == "/chunked":
            return Response(status=200, body=StreamBody(chunks=chunks()))
        if request.path == "/slow":
            await anyio.sleep(30)
        if request.path == "/redirect":
            return Response(status=302, headers=(("Location", "/big"),))
        return json_response(200, {"path": request.path, "body": request.body.decode()})

    return app


EXPECTED_CHUNKED = b"".join(str(i).encode() * 1000 for i in range(50))


@pytest.mark.parametrize("raw_sockets", [True, False], ids=["raw-socket", "anyio-stream"])
async def test_get_range_head_chunked_and_keep_alive(tmp_path: Path, raw_sockets: bool) -> None:
    seen: list[tuple[str, int]] = []
    async with loopback_server(make_app(tmp_path, seen)) as bound:
        base = f"http://127.0.0.1:{bound.port}"
        with anyio.fail_after(20):
            async with HttpClient(ClientConfig(raw_sockets=raw_sockets)) as client:
                async with client.stream("GET", base + "/big") as response:
                    assert response.status == 200
                    assert response.content_length == len(BIG)
                    sizes = []
                    parts = []
                    async for chunk in response.iter_bytes():
                        sizes.append(len(chunk))
                        parts.append(chunk)
                assert b"".join(parts) == BIG
                assert max(sizes) <= 1024 * 1024
                response, body = await client.request(
                    "GET", base + "/big", headers=[("Range", "bytes=1000-1999")]
                )
                assert response.status == 206
                assert body == BIG[1000:2000]
                assert response.header("Content-Range") == f"bytes 1000-1999/{len(BIG)}"
                response, body = await client.request("HEAD", base + "/big")
                assert (response.status, body, response.content_length) == (200, b"", len(BIG))
                response, body = await client.request("GET", base + "/chunked")
                assert body == EXPECTED_CHUNKED
                response, body = await client.request("POST", base + "/echo", body=b"hi")
                assert response.status == 200
                assert b'"body":"hi"' in body
    # Every request after the first reused the first connection.
    assert len({port for _, port in seen}) == 1
    assert [path for path, _ in seen] == ["/big", "/big", "/big", "/chunked", "/echo"]


async def test_redirects_are_not_followed(tmp_path: Path) -> None:
    async with loopback_server(make_app(tmp_path, [])) as bound, HttpClient() as client:
        response, _ = await client.request("GET", f"http://127.0.0.1:{bound.port}/redirect")
    assert response.status == 302
    assert response.header("location") == "/big"


async def test_read_timeout(tmp_path: Path) -> None:
    async with (
        loopback_server(make_app(tmp_path, [])) as bound,
        HttpClient(ClientConfig(read_timeout=0.3)) as client,
    ):
        with anyio.fail_after(10), pytest.raises(TransportTimeout):
            await client.request("GET", f"http://127.0.0.1:{bound.port}/slow")


async def test_connection_refused(tmp_path: Path) -> None:
    async with loopback_server(make_app(tmp_path, [])) as bound:
        port = bound.port
    async with HttpClient() as client:
        with anyio.fail_after(10), pytest.raises(ConnectError, match="cannot connect"):
            await client.request("GET", f"http://127.0.0.1:{port}/")


async def test_bad_urls_are_connect_errors() -> None:
    async with HttpClient() as client:
        for url in ("ftp://x/", "http:///nohost", "http://x:99999/", "not a url"):
            with pytest.raises(ConnectError):
                await client.request("GET", url)


async def test_body_limit(tmp_path: Path) -> None:
    async with (
        loopback_server(make_app(tmp_path, [])) as bound,
        HttpClient() as client,
        client.stream("GET", f"http://127.0.0.1:{bound.port}/big") as response,
    ):
        with anyio.fail_after(10), pytest.raises(PeerProtocolError):
            await response.read(max_bytes=1000)


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"a" * 10, ReadError),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", ReadError),
        (b"NOT HTTP AT ALL\r\n\r\n", PeerProtocolError),
        (b"", ReadError),
        (
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n"
            b"2\r\nab\r\n0\r\n\r\n",
            PeerProtocolError,
        ),
    ],
    ids=["short-body", "short-chunked", "garbage", "silent-close", "http10-transfer-encoding"],
)
async def test_broken_servers(reply: bytes, error: type[Exception]) -> None:
    async def handler(stream: ByteStream) -> None:
        await stream.receive()
        await stream.send(reply)
        await stream.aclose()

    async with anyio.create_task_group() as tg:
        bound: BoundAddress = await tg.start(
            serve_tcp, handler, ListenConfig(host="127.0.0.1", port=0)
        )
        async with HttpClient() as client:
            with anyio.fail_after(10), pytest.raises(error):
                await client.request("GET", f"http://127.0.0.1:{bound.port}/")
        tg.cancel_scope.cancel()


async def test_both_framings_read_as_chunked_and_the_connection_is_not_reused() -> None:
    connections: list[int] = []
    reply = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n"
    )

    async def handler(stream: ByteStream) -> None:
        connections.append(len(connections))
        with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
            for _ in range(4):  # bounded: a pooled connection would ask again here
                await stream.receive()
                await stream.send(reply)
        await stream.aclose()

    async with anyio.create_task_group() as tg:
        bound: BoundAddress = await tg.start(
            serve_tcp, handler, ListenConfig(host="127.0.0.1", port=0)
        )
        async with HttpClient() as client:
            url = f"http://127.0.0.1:{bound.port}/"
            with anyio.fail_after(10):
                first = await client.request("GET", url)
                second = await client.request("GET", url)
        tg.cancel_scope.cancel()
    # Transfer-Encoding wins over the Content-Length, and each request had its own
    # connection (RFC 9112 §6.3).
    assert first[1] == second[1] == b"hello"
    assert len(connections) == 2


async def test_stale_pooled_connection_is_retried(tmp_path: Path) -> None:
    seen: list[tuple[str, int]] = []
    config = ServerConfig(idle_timeout=0.1)
    async with loopback_server(make_app(tmp_path, seen), config) as bound, HttpClient() as client:
        url = f"http://127.0.0.1:{bound.port}/a"
        first, _ = await client.request("GET", url)
        await anyio.sleep(0.5)  # the server drops the idle connection meanwhile
        with anyio.fail_after(10):
            second, _body = await client.request("GET", url)
    assert (first.status, second.status) == (200, 200)
    assert len({port for _, port in seen}) == 2


async def test_https_with_a_test_certificate(
    tmp_path: Path, server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    async with loopback_server(make_app(tmp_path, []), ssl_context=server_ssl) as bound:
        url = f"https://127.0.0.1:{bound.port}/big"
        with anyio.fail_after(20):
            async with HttpClient(ClientConfig(ssl_context=client_ssl)) as client:
                _response, body = await client.request("GET", url)
            assert body == BIG
            async with HttpClient(ClientConfig(ssl_context=ssl.create_default_context())) as c:
                with pytest.raises(ConnectError):
                    await c.request("GET", url)


def body_app(seen: list[int]):  # type: ignore[no-untyped-def]
    """Answers with the size of the (buffered) request body; records client ports."""

    async def app(request: Request) -> Response:
        assert request.client is not None
        seen.append(request.client[1])
        return json_response(200, {"buffered": len(request.body)})

    return app


async def test_small_posts_and_the_body_limit() -> None:
    seen: list[int] = []
    config = ServerConfig(max_body_bytes=1000)
    async with loopback_server(body_app(seen), config) as bound, HttpClient() as client:
        base = f"http://127.0.0.1:{bound.port}"
        with anyio.fail_after(30):
            _, body = await client.request("POST", base + "/x", body=b"abc")
            assert json.loads(body) == {"buffered": 3}
            _, body = await client.request("POST", base + "/x", body=b"y" * 1000)
            assert json.loads(body) == {"buffered": 1000}
            response, _ = await client.request("POST", base + "/x", body=b"x" * 1001)
            assert response.status == 413
            _, body = await client.request("POST", base + "/x")
            assert json.loads(body) == {"buffered": 0}
    # One kept-alive connection for the first two; the 413 (answered without the
    # app) closed it, so the last request came on a new one.
    assert len(seen) == 3
    assert seen[0] == seen[1] != seen[2]


async def test_https_trusts_ssl_cert_file(
    tmp_path: Path,
    server_ssl: ssl.SSLContext,
    ca: trustme.CA,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    async with loopback_server(make_app(tmp_path, []), ssl_context=server_ssl) as bound:
        with anyio.fail_after(20):
            # No context given: the default one must pick the CA up from SSL_CERT_FILE.
            async with HttpClient() as client:
                response, _ = await client.request("GET", f"https://127.0.0.1:{bound.port}/a")
            assert response.status == 200
            # TLS is verified the same way for wss: the handshake gets as far as HTTP
            # (this app has no websocket route, so the upgrade itself is refused).
            with pytest.raises(ConnectError, match="refused"):
                await connect_websocket(f"wss://127.0.0.1:{bound.port}/ws")


async def test_relay_a_response_through_a_second_server(tmp_path: Path) -> None:
    """The proxy pattern: open upstream, answer with its status and a StreamBody."""
    relays_closed: list[bool] = []

    async with loopback_server(make_app(tmp_path, [])) as origin, HttpClient() as upstream:

        async def relay_app(request: Request) -> Response:
            headers = [("Range", r)] if (r := request.header("range")) else []
            response = await upstream.open(
                request.method, f"http://127.0.0.1:{origin.port}{request.path}", headers=headers
            )

            async def done() -> None:
                await response.aclose()
                relays_closed.append(True)

            passed = [
                (k, response.header(k) or "")
                for k in ("Content-Range", "Accept-Ranges", "Content-Type")
                if response.header(k)
            ]
            return Response(
                status=response.status,
                headers=tuple(passed),
                body=StreamBody(
                    chunks=response.iter_bytes(), length=response.content_length, on_close=done
                ),
            )

        async with loopback_server(relay_app) as proxy, HttpClient() as client:
            base = f"http://127.0.0.1:{proxy.port}"
            with anyio.fail_after(30):
                _, body = await client.request("GET", base + "/big")
                assert body == BIG
                response, body = await client.request(
                    "GET", base + "/big", headers=[("Range", "bytes=-5")]
                )
                assert (response.status, body) == (206, BIG[-5:])
                assert response.header(
                    "content-range"
                ) == f"bytes {len(BIG) - 5}-/{len(BIG)}".replace("-/", f"-{len(BIG) - 1}/")
                response, body = await client.request("HEAD", base + "/big")
                assert (response.status, response.content_length, body) == (200, len(BIG), b"")
                # A client that goes away mid-body closes the relay (and its upstream).
                async with client.stream("GET", base + "/big") as response:
                    async for _chunk in response.iter_bytes():
                        break
                while len(relays_closed) < 4:
                    await anyio.sleep(0.01)
    assert relays_closed == [True] * 4


async def test_connect_timeout_covers_the_tls_handshake() -> None:
    async def silent(stream: ByteStream) -> None:
        await anyio.sleep(30)  # accepts TCP, never speaks TLS

    async with anyio.create_task_group() as tg:
        bound: BoundAddress = await tg.start(
            serve_tcp, silent, ListenConfig(host="127.0.0.1", port=0)
        )
        async with HttpClient(ClientConfig(connect_timeout=0.3)) as client:
            with anyio.fail_after(10), pytest.raises(TransportTimeout, match="connecting"):
                await client.request("GET", f"https://127.0.0.1:{bound.port}/")
        tg.cancel_scope.cancel()
