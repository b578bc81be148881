"""The server's lean per-request path: the idle watch and the cached header lines.

The idle watch replaces a cancel scope per wait: it must close a connection idle
between requests, and never one whose request is still being served. The cached header
lines replace h11's per-response validation: the head must still carry every header
once, honour an app's ``Connection: close`` and refuse a malformed header.
"""

from __future__ import annotations

import anyio
import pytest

from kbtransport.http import Request, Response
from kbtransport.http_server import ServerConfig
from kbtransport.testing import parse_raw_responses, raw_http
from tests.transport.transport_helpers import loopback_server, memory_server

pytestmark = pytest.mark.anyio

GET = b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n"


async def slow_app(request: Request) -> Response:
    """Takes longer than the idle timeout used below before answering."""
    if request.path == "/slow":
        await anyio.sleep(0.6)
    return Response(status=200, headers=(("Content-Type", "text/plain"),), body=b"ok")


async def test_a_request_served_longer_than_the_idle_timeout_is_not_cut() -> None:
    config = ServerConfig(idle_timeout=0.2)
    async with memory_server(slow_app, config) as client:
        # A slow answer, then a quick one on the same connection, then idle: closed.
        data = await raw_http(client, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n" + GET, timeout=5)
    responses = parse_raw_responses(data)
    assert [r.status for r in responses] == [200, 200]
    assert [r.body for r in responses] == [b"ok", b"ok"]


async def test_idle_close_counts_from_the_last_request_not_the_connection_start() -> None:
    config = ServerConfig(idle_timeout=0.5)
    async with memory_server(slow_app, config) as client:
        with anyio.fail_after(10):
            # Busy for longer than the idle timeout in all, with short pauses only: the
            # connection stays open (a timer counting from its start would cut it).
            for _ in range(15):
                await client.send(GET)
                assert (await client.receive()).startswith(b"HTTP/1.1 200 OK\r\n")
                await anyio.sleep(0.05)
            # Then silence: the server closes it.
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                await client.receive()


async def test_idle_connections_on_a_real_socket_are_closed() -> None:
    config = ServerConfig(idle_timeout=0.2)
    async with loopback_server(slow_app, config) as bound:
        stream = await anyio.connect_tcp("127.0.0.1", bound.port)
        async with stream:
            data = await raw_http(stream, GET, timeout=5)
    (response,) = parse_raw_responses(data)
    assert response.body == b"ok"


async def headers_app(request: Request) -> Response:
    if request.path == "/close":
        return Response(status=200, headers=(("Connection", "close"),), body=b"bye")
    if request.path == "/bad":
        return Response(status=200, headers=(("X-Bad", "a\r\nInjected: 1"),), body=b"")
    value = request.path.rsplit("/", 1)[-1]
    return Response(
        status=200, headers=(("Content-Type", "text/plain"), ("X-Echo", value)), body=b"hi"
    )


async def test_every_header_goes_out_once_with_the_right_values() -> None:
    async with memory_server(headers_app) as client:
        data = await raw_http(
            client,
            b"GET /e/one HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /e/two HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /close HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /e/never HTTP/1.1\r\nHost: x\r\n\r\n",
            timeout=5,
        )
    heads = [part.split(b"\r\n\r\n", 1)[0] for part in data.split(b"HTTP/1.1 ")[1:]]
    # The app's Connection: close reached h11: the fourth request is never answered.
    assert len(heads) == 3
    for head, echo in zip(heads[:2], (b"one", b"two"), strict=True):
        lines = head.split(b"\r\n")[1:]
        names = [line.split(b":", 1)[0].lower() for line in lines]
        assert sorted(names) == sorted(
            [
                b"server",
                b"access-control-allow-origin",
                b"access-control-expose-headers",
                b"content-type",
                b"x-echo",
                b"content-length",
            ]
        )
        assert b"X-Echo: " + echo in lines
        assert b"content-length: 2" in lines
    assert b"connection: close" in heads[2].lower()


async def test_a_malformed_app_header_is_never_sent() -> None:
    async with memory_server(headers_app) as client:
        data = await raw_http(client, b"GET /bad HTTP/1.1\r\nHost: x\r\n\r\n", timeout=5)
    assert b"Injected" not in data
