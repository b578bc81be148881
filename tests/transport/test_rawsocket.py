"""RawSocketStream: the transport-free byte stream the HTTP client uses for bodies."""

from __future__ import annotations

import anyio
import pytest
from anyio.abc import ByteStream, SocketAttribute

from kbtransport.listener import BoundAddress, ListenConfig, serve_tcp
from kbtransport.rawsocket import open_raw_tcp

pytestmark = pytest.mark.anyio


async def test_round_trip_eof_and_close() -> None:
    async def echo(stream: ByteStream) -> None:
        try:
            while True:
                await stream.send(await stream.receive())
        except anyio.EndOfStream:
            await stream.send(b"bye")

    async with anyio.create_task_group() as tg:
        bound: BoundAddress = await tg.start(serve_tcp, echo, ListenConfig(host="127.0.0.1"))
        with anyio.fail_after(10):
            stream = await open_raw_tcp("127.0.0.1", bound.port)
            assert stream.extra(SocketAttribute.remote_address)[1] == bound.port
            payload = bytes(range(256)) * 8192  # 2 MiB: more than one socket buffer
            async with anyio.create_task_group() as inner:
                inner.start_soon(stream.send, payload)
                got = b""
                while len(got) < len(payload):
                    got += await stream.receive(1 << 20)
            assert got == payload
            await stream.send_eof()
            assert await stream.receive() == b"bye"
            with pytest.raises(anyio.EndOfStream):
                await stream.receive()
            await stream.aclose()
            await stream.aclose()  # idempotent
            with pytest.raises(anyio.ClosedResourceError):
                await stream.receive()
            with pytest.raises(anyio.ClosedResourceError):
                await stream.send(b"x")
            with pytest.raises(ValueError, match="max_bytes"):
                await stream.receive(0)
        tg.cancel_scope.cancel()


async def test_connect_refused() -> None:
    async with anyio.create_task_group() as tg:
        bound: BoundAddress = await tg.start(
            serve_tcp, lambda s: s.aclose(), ListenConfig(host="127.0.0.1")
        )
        tg.cancel_scope.cancel()
    with anyio.fail_after(10), pytest.raises(ConnectionRefusedError):
        await open_raw_tcp("127.0.0.1", bound.port)
