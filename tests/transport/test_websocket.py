"""Websocket links: the server upgrade hand-off, the dialer, both directions, limits, TLS."""

from __future__ import annotations

import ssl

import anyio
import pytest
from anyio.abc import ByteStream
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection
from wsproto.events import BytesMessage, Ping, Pong, Request
from wsproto.utilities import generate_accept_token

from kbtransport.errors import ConnectError, PeerProtocolError, TransportTimeout
from kbtransport.http import Request as HttpRequest
from kbtransport.http import Response, WebSocketAccept, error_response
from kbtransport.listener import BoundAddress, ListenConfig, serve_tcp
from kbtransport.websocket import (
    WebSocketClosed,
    WebSocketLink,
    connect_websocket,
    websocket_url,
)
from tests.transport.transport_helpers import loopback_server, memory_server

pytestmark = pytest.mark.anyio


def echo_server(results: list[object], max_message_bytes: int = 1 << 20):  # type: ignore[no-untyped-def]
    """An app accepting websockets at /ws: greets, then echoes every message."""

    async def handler(link: WebSocketLink) -> None:
        await link.send(b"hello from server")
        try:
            while True:
                message = await link.receive()
                await link.send(b"echo:" + message)
        except (WebSocketClosed, PeerProtocolError) as exc:
            results.append(exc)

    async def app(request: HttpRequest) -> Response:
        if request.path != "/ws":
            return error_response(404)
        return Response(
            status=101,
            body=WebSocketAccept(handler=handler, max_message_bytes=max_message_bytes),
        )

    return app


async def manual_client(stream: ByteStream, first_frames: bytes) -> WebSocketLink:
    """Handshake by hand, sending ``first_frames`` in the same write as the request."""
    handshake = WSConnection(ConnectionType.CLIENT)
    request = handshake.send(Request(host="x", target="/ws"))
    await stream.send(request + first_frames)
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        buffer += await stream.receive()
    head, rest = buffer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 101 ")
    key = request.split(b"Sec-WebSocket-Key: ")[1].split(b"\r\n")[0]
    assert generate_accept_token(key) in head
    return WebSocketLink(stream, Connection(ConnectionType.CLIENT, trailing_data=rest))


async def test_upgrade_hands_trailing_data_to_the_websocket() -> None:
    results: list[object] = []
    framer = Connection(ConnectionType.CLIENT)
    early = framer.send(BytesMessage(data=b"sent with the handshake"))
    async with memory_server(echo_server(results)) as client:
        link = await manual_client(client, early)
        with anyio.fail_after(5):
            assert await link.receive() == b"hello from server"
            assert await link.receive() == b"echo:sent with the handshake"
            # This link's own framer continues from a fresh client state; the
            # server sees a continuous stream of valid frames either way.
            await link.send(b"x" * 100_000)
            assert await link.receive() == b"echo:" + b"x" * 100_000
            await link.aclose()
            with pytest.raises(WebSocketClosed):
                await link.receive()
        await anyio.sleep(0.05)
    assert isinstance(results[0], WebSocketClosed)
    assert results[0].code == 1000


async def test_ping_is_answered_with_pong() -> None:
    framer = Connection(ConnectionType.CLIENT)
    ping = framer.send(Ping(payload=b"are you there"))
    async with memory_server(echo_server([])) as client:
        await manual_client(client, ping)
        reader = Connection(ConnectionType.CLIENT)
        events: list[object] = []
        with anyio.fail_after(5):
            while not any(isinstance(e, Pong) for e in events):
                reader.receive_data(await client.receive())
                events.extend(reader.events())
    pong = next(e for e in events if isinstance(e, Pong))
    assert pong.payload == b"are you there"


async def test_not_an_upgrade_request_gets_400() -> None:
    async with memory_server(echo_server([])) as client:
        await client.send(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        with anyio.fail_after(5):
            data = await client.receive()
    assert data.startswith(b"HTTP/1.1 400")


async def test_loopback_dialer_round_trips_both_directions() -> None:
    results: list[object] = []
    async with loopback_server(echo_server(results)) as bound:
        with anyio.fail_after(10):
            link = await connect_websocket(f"http://127.0.0.1:{bound.port}/ws")
            assert await link.receive() == b"hello from server"
            for size in (0, 1, 125, 126, 65535, 65536, 700_000):
                payload = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
                await link.send(payload)
                assert await link.receive() == b"echo:" + payload
            await link.ping(b"p")
            await link.send(b"after ping")
            assert await link.receive() == b"echo:after ping"
            await link.aclose()
            await anyio.sleep(0.1)
    assert isinstance(results[0], WebSocketClosed)


async def test_message_over_the_limit_closes_with_1009() -> None:
    results: list[object] = []
    async with loopback_server(echo_server(results, max_message_bytes=1000)) as bound:
        with anyio.fail_after(10):
            link = await connect_websocket(f"ws://127.0.0.1:{bound.port}/ws")
            assert await link.receive() == b"hello from server"
            await link.send(b"y" * 1001)
            with pytest.raises(WebSocketClosed) as info:
                await link.receive()
    assert info.value.code == 1009
    assert isinstance(results[0], PeerProtocolError)


async def test_peer_close_raises_websocket_closed_on_the_client() -> None:
    async def handler(link: WebSocketLink) -> None:
        await link.aclose(4000, "bye")

    async def app(request: HttpRequest) -> Response:
        return Response(status=101, body=WebSocketAccept(handler=handler))

    async with loopback_server(app) as bound:
        with anyio.fail_after(10):
            link = await connect_websocket(f"ws://127.0.0.1:{bound.port}/")
            with pytest.raises(WebSocketClosed) as info:
                await link.receive()
            assert (info.value.code, info.value.reason) == (4000, "bye")
            with pytest.raises(WebSocketClosed):
                await link.send(b"too late")


async def test_refused_upgrade_is_a_connect_error() -> None:
    async with loopback_server(echo_server([])) as bound:
        with anyio.fail_after(10), pytest.raises(ConnectError, match="404"):
            await connect_websocket(f"ws://127.0.0.1:{bound.port}/nope")


async def test_dial_refused_port_is_a_connect_error() -> None:
    async with loopback_server(echo_server([])) as bound:
        port = bound.port
    with anyio.fail_after(10), pytest.raises(ConnectError):
        await connect_websocket(f"ws://127.0.0.1:{port}/ws")


async def test_wss_with_a_test_certificate(
    server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    results: list[object] = []
    async with loopback_server(echo_server(results), ssl_context=server_ssl) as bound:
        assert bound.secure
        with anyio.fail_after(10):
            link = await connect_websocket(
                f"https://127.0.0.1:{bound.port}/ws", ssl_context=client_ssl
            )
            assert await link.receive() == b"hello from server"
            await link.send(b"secret")
            assert await link.receive() == b"echo:secret"
            await link.aclose()
            # Without trusting the test CA, the handshake fails cleanly.
            with pytest.raises(ConnectError):
                await connect_websocket(
                    f"wss://127.0.0.1:{bound.port}/ws", ssl_context=ssl.create_default_context()
                )


def test_websocket_url() -> None:
    assert websocket_url("http://h:1/p") == "ws://h:1/p"
    assert websocket_url("https://h/p") == "wss://h/p"
    assert websocket_url("ws://h") == "ws://h"


async def test_concurrent_send_and_receive_tasks() -> None:
    async with loopback_server(echo_server([])) as bound:
        with anyio.fail_after(20):
            link = await connect_websocket(f"ws://127.0.0.1:{bound.port}/ws")
            assert await link.receive() == b"hello from server"
            received: list[bytes] = []

            async def sender() -> None:
                for i in range(200):
                    await link.send(i.to_bytes(2, "big") * (1 + i * 50))
                    if i % 50 == 0:
                        await link.ping(b"k")

            async def receiver() -> None:
                for _ in range(200):
                    received.append(await link.receive())

            async with anyio.create_task_group() as tg:
                tg.start_soon(sender)
                tg.start_soon(receiver)
            await link.aclose()
    assert received == [b"echo:" + i.to_bytes(2, "big") * (1 + i * 50) for i in range(200)]


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (None, TransportTimeout),  # accepts TCP, never answers
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", ConnectError),
        (b"garbage\r\n\r\n", ConnectError),
        (b"", ConnectError),  # closes at once
    ],
    ids=["silent", "not-101", "garbage", "closed"],
)
async def test_dial_against_broken_servers(reply: bytes | None, error: type[Exception]) -> None:
    async def handler(stream: ByteStream) -> None:
        await stream.receive()
        if reply is None:
            await anyio.sleep(30)
        await stream.send(reply or b"")
        await stream.aclose()

    async with anyio.create_task_group() as tg:
        bound: BoundAddress = await tg.start(
            serve_tcp, handler, ListenConfig(host="127.0.0.1", port=0)
        )
        with anyio.fail_after(10), pytest.raises(error):
            await connect_websocket(f"ws://127.0.0.1:{bound.port}/", timeout=0.5)
        tg.cancel_scope.cancel()
