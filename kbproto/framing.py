"""Frames: how kbproto cuts a link's byte stream into messages (protocol.md §2).

Strategy
--------
kbproto sees each link as one ordered byte stream with no boundaries: kbtransport
carries it inside websocket binary messages cut wherever it likes, and the simulator
cuts it at random. So every frame carries its own length::

    +---------+------+----------------+-----------------+
    | version | kind | length (u32 BE)| payload (length)|
    +---------+------+----------------+-----------------+
       1 byte  1 byte     4 bytes

``kind`` 1 is a control frame (a compact UTF-8 JSON object, see ``codec``), kind 2 a
data frame (a u32 BE stream number, then raw body bytes: no base64). The length is
checked against the cap for its kind as soon as the 6 header bytes are in, so a peer
can never make us buffer more than one maximal frame.

``FrameBuffer`` is linear and copies each payload byte once: it keeps the fed chunks
as they came (no growing buffer to append to and compact), slices a frame that lies
inside one chunk straight out of it, and joins the pieces of a payload that spans
chunks. ``next_split`` takes a data frame's stream number apart from its body, so the
body is that one copy too. It never rescans bytes it has consumed. While a frame is
incomplete, a first chunk mostly consumed is cut down to its unread rest, so a large
read whose last few bytes start a frame is not kept whole for them. Once it has
raised, it stays broken (the link is closed anyway).
"""

from __future__ import annotations

import struct
from collections import deque

from kbproto.errors import LimitExceeded, RemoteProtocolError
from kbproto.messages import MAX_DATA_CHUNK, PROTOCOL_VERSION

__all__ = (
    "DEFAULT_MAX_CONTROL_FRAME",
    "HEADER_SIZE",
    "KIND_CONTROL",
    "KIND_DATA",
    "FrameBuffer",
    "encode_frame",
)

#: A JSON control message.
KIND_CONTROL = 1
#: A binary data frame: u32 stream number, then body bytes.
KIND_DATA = 2
#: version, kind, u32 length.
HEADER_SIZE = 6
#: Largest control payload a sender may emit (1 MiB): an index batch of 4096 entries
#: with long paths fits; anything bigger is an attack or a bug.
DEFAULT_MAX_CONTROL_FRAME = 1 << 20

_HEADER = struct.Struct("!BBI")
#: Feeds shorter than this are appended to a small tail chunk instead of queued alone.
_SMALL_FEED = 4096
#: A data payload is the 4-byte stream number plus at most one maximal chunk.
_MAX_DATA_PAYLOAD = 4 + MAX_DATA_CHUNK


def encode_frame(kind: int, payload: bytes) -> bytes:
    """Return the bytes of one frame of ``kind`` carrying ``payload``."""
    return _HEADER.pack(PROTOCOL_VERSION, kind, len(payload)) + payload


class FrameBuffer:
    """Reassembles frames from arbitrarily chunked bytes.

    Args:
        max_control: the largest control payload accepted (bytes).

    Usage: ``feed(data)`` then call ``next_frame()`` (or ``next_split()``) until it
    returns None.
    """

    def __init__(self, max_control: int = DEFAULT_MAX_CONTROL_FRAME) -> None:
        # Unconsumed input, oldest first; ``_pos`` bytes of the first chunk are consumed.
        # Small feeds are gathered into a bytearray tail, so a peer trickling bytes
        # cannot make the per-chunk overhead many times the bytes it sent.
        self._chunks: deque[bytes | bytearray] = deque()
        self._pos = 0
        self._size = 0
        self._max_control = max_control
        self._broken = False

    def __len__(self) -> int:
        """Bytes received but not yet returned as frames."""
        return self._size

    def feed(self, data: bytes) -> None:
        """Append bytes received from the peer."""
        if not data:
            return
        chunks = self._chunks
        if len(data) < _SMALL_FEED and chunks and len(chunks[-1]) < _SMALL_FEED:
            tail = chunks[-1]
            if not isinstance(tail, bytearray):
                tail = chunks[-1] = bytearray(tail)
            tail += data
        else:
            chunks.append(bytes(data))  # no copy for ``bytes``
        self._size += len(data)

    def next_frame(self) -> tuple[int, bytes] | None:
        """Return the next complete ``(kind, payload)``, or None if more bytes are needed.

        Raises:
            RemoteProtocolError: bad version or kind (and on every call after an error).
            LimitExceeded: the announced length is over the cap for its kind.
        """
        head = self._complete_frame()
        if head is None:
            return None
        kind, length = head
        self._skip(HEADER_SIZE)
        return kind, self._take(length)

    def next_split(self) -> tuple[int, int, bytes] | None:
        """Like ``next_frame``, with a data frame's stream number split off its body.

        Returns ``(kind, stream, payload)``: for a data frame the stream number and the
        body bytes (copied once out of the fed chunks, where ``next_frame`` plus slicing
        off the number copies the body twice); for a control frame 0 and the payload.

        Raises:
            RemoteProtocolError: as ``next_frame``, or a data frame without body bytes.
            LimitExceeded: as ``next_frame``.
        """
        head = self._complete_frame()
        if head is None:
            return None
        kind, length = head
        if kind == KIND_DATA and length < 5:
            self._broken = True
            raise RemoteProtocolError("data frame shorter than 5 bytes")
        self._skip(HEADER_SIZE)
        if kind == KIND_DATA:
            stream = int.from_bytes(self._take(4), "big")
            return kind, stream, self._take(length - 4)
        return kind, 0, self._take(length)

    def _complete_frame(self) -> tuple[int, int] | None:
        """Check the next frame's header; ``(kind, length)`` once it is all buffered."""
        if self._broken:
            raise RemoteProtocolError("frame buffer already failed", "protocol")
        if self._size < HEADER_SIZE:
            return None
        first = self._chunks[0]
        pos = self._pos
        if len(first) - pos >= HEADER_SIZE:
            version, kind, length = _HEADER.unpack_from(first, pos)
        else:
            version, kind, length = _HEADER.unpack(self._peek(HEADER_SIZE))
        if version != PROTOCOL_VERSION:
            self._broken = True
            raise RemoteProtocolError(
                f"unsupported protocol version {version} (we speak {PROTOCOL_VERSION}: "
                "both nodes need the same kbucket release)"
            )
        if kind == KIND_CONTROL:
            cap = self._max_control
        elif kind == KIND_DATA:
            cap = _MAX_DATA_PAYLOAD
        else:
            self._broken = True
            raise RemoteProtocolError(f"unknown frame kind {kind}")
        if length > cap:
            self._broken = True
            raise LimitExceeded(
                f"frame of {length} bytes is over the {cap}-byte cap", "max_frame_size"
            )
        if self._size < HEADER_SIZE + length:
            if pos > len(first) // 2:
                # Keep the unread rest, not the whole (up to 1 MiB) chunk it came in:
                # a copy of less than half, at most once per chunk.
                self._chunks[0] = first[pos:]
                self._pos = 0
            return None
        return kind, length

    def _peek(self, count: int) -> bytes:
        """The next ``count`` unconsumed bytes (``count`` <= ``len(self)``), not consumed."""
        out = b""
        pos = self._pos
        chunks = iter(self._chunks)
        while len(out) < count:
            out += next(chunks)[pos : pos + count - len(out)]
            pos = 0
        return out

    def _skip(self, count: int) -> None:
        """Consume ``count`` bytes (``count`` <= ``len(self)``) without copying them."""
        self._size -= count
        chunks = self._chunks
        while count:
            available = len(chunks[0]) - self._pos
            if available <= count:
                chunks.popleft()
                self._pos = 0
                count -= available
            else:
                self._pos += count
                count = 0

    def _take(self, count: int) -> bytes:
        """Consume and return the next ``count`` bytes: one copy, from as many chunks."""
        if not count:
            return b""
        self._size -= count
        chunks = self._chunks
        first = chunks[0]
        pos = self._pos
        if len(first) - pos > count:
            self._pos = pos + count
            return bytes(first[pos : pos + count])  # bytes of a bytes slice: no 2nd copy
        parts: list[memoryview] = []
        while count:
            chunk = chunks[0]
            available = len(chunk) - self._pos
            if available <= count:
                parts.append(memoryview(chunk)[self._pos :])
                chunks.popleft()
                self._pos = 0
                count -= available
            else:
                parts.append(memoryview(chunk)[self._pos : self._pos + count])
                self._pos += count
                count = 0
        return b"".join(parts)
