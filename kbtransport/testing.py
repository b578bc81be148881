"""In-memory doubles for testing drivers without sockets (STYLE rule 13).

``memory_stream_pair()`` gives two connected ``anyio.abc.ByteStream`` objects: bytes sent
on one are received on the other, in order, with ``receive(max_bytes)`` honoured and
``send_eof`` / ``aclose`` behaving like a TCP half-close / close. Built the way anyio's
``streams/memory.py`` and ``streams/stapled.py`` are, after httpcore's
``AsyncMockStream``.
"""

from __future__ import annotations

import math

import anyio
from anyio.abc import ByteStream
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

__all__ = ("MemoryByteStream", "memory_stream_pair")


class MemoryByteStream(ByteStream):
    """One end of an in-memory byte pipe pair; build it with ``memory_stream_pair``."""

    def __init__(
        self,
        send_stream: MemoryObjectSendStream[bytes],
        receive_stream: MemoryObjectReceiveStream[bytes],
    ) -> None:
        self._send_stream = send_stream
        self._receive_stream = receive_stream
        self._leftover = b""
        self._closed = False

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """Return up to ``max_bytes`` bytes; raise ``anyio.EndOfStream`` after the peer's EOF."""
        if max_bytes < 1:
            raise ValueError("max_bytes must be a positive integer")
        if self._closed:
            raise anyio.ClosedResourceError
        if not self._leftover:
            chunk = await self._receive_stream.receive()
            while not chunk:  # empty sends carry nothing; keep waiting
                chunk = await self._receive_stream.receive()
            self._leftover = chunk
        else:
            await anyio.lowlevel.checkpoint()
        data, self._leftover = self._leftover[:max_bytes], self._leftover[max_bytes:]
        return data

    async def send(self, item: bytes) -> None:
        """Queue ``item`` for the peer; raise ``anyio.BrokenResourceError`` if it has closed."""
        if self._closed:
            raise anyio.ClosedResourceError
        await self._send_stream.send(bytes(item))

    async def send_eof(self) -> None:
        """Half-close: the peer's ``receive`` raises ``EndOfStream`` once it has read all."""
        await self._send_stream.aclose()

    async def aclose(self) -> None:
        """Close both directions."""
        self._closed = True
        await self._send_stream.aclose()
        await self._receive_stream.aclose()


def memory_stream_pair(max_buffered_chunks: float = math.inf) -> tuple[ByteStream, ByteStream]:
    """Return two connected in-memory byte streams.

    Args:
        max_buffered_chunks: how many sent chunks may wait unread before ``send`` blocks
            (back-pressure); unbounded by default, like a generous socket buffer.
    """
    a_send, b_receive = anyio.create_memory_object_stream[bytes](max_buffered_chunks)
    b_send, a_receive = anyio.create_memory_object_stream[bytes](max_buffered_chunks)
    return MemoryByteStream(a_send, a_receive), MemoryByteStream(b_send, b_receive)
