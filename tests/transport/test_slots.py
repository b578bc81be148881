"""Connection slots (``kbtransport.slots``, ``kbtransport.listener``): per-client caps, and
connections that wait on their client yielding their slot when slots run out."""

from __future__ import annotations

import json

import anyio
import pytest
from anyio.abc import ByteStream

from kbtransport.clients import client_key
from kbtransport.http import Request, Response, WebSocketAccept, json_response
from kbtransport.listener import BoundAddress, ListenConfig, serve_tcp
from kbtransport.slots import ConnectionSlot, ConnectionSlots
from kbtransport.testing import parse_raw_responses, raw_http
from kbtransport.websocket import WebSocketLink, connect_websocket
from tests.transport.transport_helpers import loopback_server

pytestmark = pytest.mark.anyio

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
SLOW = b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"


def test_client_key_groups_addresses_into_clients() -> None:
    assert client_key("192.0.2.7") == "192.0.2.7"
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"
    # One IPv6 client owns its /64: every address inside it is the same client.
    assert (
        client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff::9") == ("2001:db8:1:2::/64")
    )
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("fe80::1%eth0") == "fe80::/64"
    assert client_key(None) == client_key("") == client_key("not:an:address") == ""


async def test_slot_table_evicts_the_longest_waiting_and_refuses_when_none_waits() -> None:
    slots = ConnectionSlots(limit=3, per_client=2)
    a1 = slots.admit("a", 1.0)
    a2 = slots.admit("a", 2.0)
    assert isinstance(a1, ConnectionSlot)
    assert isinstance(a2, ConnectionSlot)
    a1.since = None  # a1 is being served; a2 still waits on its client
    a3 = slots.admit("a", 3.0)  # at a's cap: a2 (waiting) yields, a1 (busy) stays
    assert isinstance(a3, ConnectionSlot)
    assert a2.scope.cancel_called
    assert not a1.scope.cancel_called
    assert slots.count("a") == 2
    assert len(slots) == 2
    a3.since = None
    assert slots.admit("a", 4.0) == 429  # nothing of a's waits
    b1 = slots.admit("b", 5.0)
    assert isinstance(b1, ConnectionSlot)
    assert len(slots) == 3
    c1 = slots.admit("c", 6.0)  # full: b1, the only waiting one, yields
    assert isinstance(c1, ConnectionSlot)
    assert b1.scope.cancel_called
    c1.since = None
    assert not slots.has_room()
    assert slots.admit("d", 7.0) == 503
    slots.release(b1)  # an evicted slot was already freed: a no-op
    assert len(slots) == 3
    slots.release(a1)
    assert slots.has_room()
    assert slots.count("a") == 1
    with anyio.fail_after(5):
        await slots.wait_for_room()
    with pytest.raises(ValueError, match="at least 1"):
        ConnectionSlots(limit=0, per_client=1)


def _app(release: anyio.Event) -> object:
    async def app(request: Request) -> Response:
        if request.path == "/slow":
            await release.wait()
        return json_response(200, {"ok": True})

    return app


async def _connect(port: int, source: str = "127.0.0.1") -> ByteStream:
    return await anyio.connect_tcp("127.0.0.1", port, local_host=source)


async def _answer(stream: ByteStream, request: bytes, timeout: float = 5.0) -> bytes:
    await stream.send(request)
    with anyio.fail_after(timeout):
        return await stream.receive()


async def _closed(stream: ByteStream, timeout: float = 5.0) -> bool:
    with anyio.move_on_after(timeout):
        try:
            while await stream.receive():
                pass
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            return True
    return False


async def test_idle_keep_alive_connections_yield_their_slots_oldest_first() -> None:
    release = anyio.Event()
    async with loopback_server(_app(release), max_connections=2) as bound:  # type: ignore[arg-type]
        first = await _connect(bound.port)
        assert (await _answer(first, GET)).startswith(b"HTTP/1.1 200")
        await anyio.sleep(0.05)
        second = await _connect(bound.port)
        assert (await _answer(second, GET)).startswith(b"HTTP/1.1 200")
        # Both idle: a third connection is served at once; the older idle one yields.
        third = await _connect(bound.port)
        assert (await _answer(third, GET)).startswith(b"HTTP/1.1 200")
        assert await _closed(first)
        assert (await _answer(second, GET)).startswith(b"HTTP/1.1 200")
        for stream in (first, second, third):
            await stream.aclose()


async def test_a_slow_request_head_yields_its_slot() -> None:
    release = anyio.Event()
    async with loopback_server(_app(release), max_connections=2) as bound:  # type: ignore[arg-type]
        slowloris = await _connect(bound.port)
        await slowloris.send(b"GET / HTTP/1.1\r\nHost: x\r\n")  # the head never ends
        busy = await _connect(bound.port)
        await busy.send(SLOW)
        await anyio.sleep(0.2)
        newcomer = await _connect(bound.port)
        assert (await _answer(newcomer, GET)).startswith(b"HTTP/1.1 200")
        assert await _closed(slowloris)
        release.set()
        with anyio.fail_after(5):
            assert (await busy.receive()).startswith(b"HTTP/1.1 200")
        for stream in (slowloris, busy, newcomer):
            await stream.aclose()


async def test_a_client_at_its_cap_gets_a_429_while_others_are_served() -> None:
    release = anyio.Event()
    app = _app(release)
    async with loopback_server(app, max_connections_per_client=2) as bound:  # type: ignore[arg-type]
        held = [await _connect(bound.port) for _ in range(2)]
        for stream in held:
            await stream.send(SLOW)  # both busy: nothing of this client can yield
        await anyio.sleep(0.2)
        extra = await _connect(bound.port)
        data = await raw_http(extra, GET, timeout=5)
        (refused,) = parse_raw_responses(data)
        assert refused.status == 429
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["access-control-allow-origin"] == "*"
        assert json.loads(refused.body) == {
            "success": False,
            "error": "Too many connections from your address; close some, then try again",
        }
        # Another address is another client.
        other = await _connect(bound.port, source="127.0.0.2")
        assert (await _answer(other, GET)).startswith(b"HTTP/1.1 200")
        release.set()
        for stream in held:
            with anyio.fail_after(5):
                assert (await stream.receive()).startswith(b"HTTP/1.1 200")
        # Now idle, one of them yields to the same client's new connection.
        again = await _connect(bound.port)
        assert (await _answer(again, GET)).startswith(b"HTTP/1.1 200")
        for stream in (*held, extra, other, again):
            await stream.aclose()


async def test_a_websocket_never_yields_its_slot() -> None:
    done = anyio.Event()

    async def hold(link: WebSocketLink) -> None:
        await done.wait()

    async def app(request: Request) -> Response:
        if request.wants_websocket:
            return Response(status=101, body=WebSocketAccept(handler=hold))
        return json_response(200, {"ok": True})

    async with loopback_server(app, max_connections=1) as bound:
        ws = await connect_websocket(f"ws://127.0.0.1:{bound.port}/", timeout=5)
        waiting = await _connect(bound.port)
        await waiting.send(GET)
        with anyio.move_on_after(0.5) as waited:
            await waiting.receive()
        assert waited.cancelled_caught  # the idle websocket kept its slot
        done.set()
        with anyio.fail_after(5):
            assert (await waiting.receive()).startswith(b"HTTP/1.1 200")
        await ws.aclose()
        await waiting.aclose()


async def test_plain_tcp_handlers_are_busy_and_a_capped_client_is_closed() -> None:
    finish = anyio.Event()

    async def handler(stream: ByteStream) -> None:
        await stream.send(b"hello")
        await finish.wait()

    listen = ListenConfig(host="127.0.0.1", max_connections=1, max_connections_per_client=1)
    async with anyio.create_task_group() as tg:
        bound: BoundAddress = await tg.start(serve_tcp, handler, listen)
        first = await _connect(bound.port)
        with anyio.fail_after(5):
            assert await first.receive() == b"hello"
        # The client is at its cap with a busy connection: the next one is closed.
        second = await _connect(bound.port)
        assert await _closed(second)
        finish.set()
        await first.aclose()
        await second.aclose()
        tg.cancel_scope.cancel()
