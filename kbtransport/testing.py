"""In-memory doubles for testing drivers without sockets (STYLE rule 13).

``memory_stream_pair()`` gives two connected ``anyio.abc.ByteStream`` objects: bytes sent
on one are received on the other, in order, with ``receive(max_bytes)`` honoured and
``send_eof`` / ``aclose`` behaving like a TCP half-close / close. Built the way anyio's
``streams/memory.py`` and ``streams/stapled.py`` are, after httpcore's
``AsyncMockStream``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import anyio
from anyio.abc import ByteStream
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

__all__ = (
    "MemoryByteStream",
    "RawResponse",
    "memory_stream_pair",
    "parse_raw_responses",
    "raw_http",
)


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


@dataclass(frozen=True, slots=True)
class RawResponse:
    """One HTTP/1.x response parsed from raw bytes (for tests).

    Attributes:
        status: the status code.
        headers: lower-case header names to values (last one wins).
        body: the body bytes (by ``Content-Length``, chunked, or up to the end).
    """

    status: int
    headers: dict[str, str]
    body: bytes


def parse_raw_responses(data: bytes, *, head_only: bool = False) -> list[RawResponse]:
    """Split raw server output into responses (Content-Length, chunked or to-EOF bodies).

    Args:
        data: everything the server sent.
        head_only: the responses answer HEAD requests (no bodies follow the heads).
    """
    responses: list[RawResponse] = []
    while data:
        head, sep, data = data.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError(f"incomplete response head: {head[:200]!r}")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if head_only or status in (101, 204, 304) or 100 <= status < 200:
            body = b""
        elif "content-length" in headers:
            size = int(headers["content-length"])
            body, data = data[:size], data[size:]
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size_line, _, data = data.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                parts.append(data[:size])
                data = data[size + 2 :]
                if size == 0:
                    break
            body = b"".join(parts)
        else:
            body, data = data, b""
        responses.append(RawResponse(status, headers, body))
        if status == 101:
            break
    return responses


async def raw_http(
    stream: ByteStream, request: bytes, *, timeout: float = 10.0, limit: int = 1 << 30
) -> bytes:
    """Send ``request`` bytes, then read until the server closes (bounded by ``timeout``).

    The request should end with a ``Connection: close`` request (or the server's idle
    timeout must be short), or this waits for ``timeout`` and raises ``TimeoutError``.
    """
    chunks: list[bytes] = []
    size = 0
    with anyio.fail_after(timeout):
        await stream.send(request)
        while size < limit:
            try:
                chunk = await stream.receive(1 << 20)
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                break
            chunks.append(chunk)
            size += len(chunk)
    return b"".join(chunks)
