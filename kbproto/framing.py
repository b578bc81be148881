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

``FrameBuffer`` is linear: it never rescans bytes it has consumed, and it compacts its
buffer once per ``feed`` rather than once per frame. Once it has raised, it stays
broken (the link is closed anyway).
"""

from __future__ import annotations

import struct

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
#: A data payload is the 4-byte stream number plus at most one maximal chunk.
_MAX_DATA_PAYLOAD = 4 + MAX_DATA_CHUNK


def encode_frame(kind: int, payload: bytes) -> bytes:
    """Return the bytes of one frame of ``kind`` carrying ``payload``."""
    return _HEADER.pack(PROTOCOL_VERSION, kind, len(payload)) + payload


class FrameBuffer:
    """Reassembles frames from arbitrarily chunked bytes.

    Args:
        max_control: the largest control payload accepted (bytes).

    Usage: ``feed(data)`` then call ``next_frame()`` until it returns None.
    """

    def __init__(self, max_control: int = DEFAULT_MAX_CONTROL_FRAME) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._max_control = max_control
        self._broken = False

    def __len__(self) -> int:
        """Bytes received but not yet returned as frames."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> None:
        """Append bytes received from the peer."""
        if self._pos:
            # Compact once per feed, not once per frame: keeps parsing linear.
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next_frame(self) -> tuple[int, bytes] | None:
        """Return the next complete ``(kind, payload)``, or None if more bytes are needed.

        Raises:
            RemoteProtocolError: bad version or kind (and on every call after an error).
            LimitExceeded: the announced length is over the cap for its kind.
        """
        if self._broken:
            raise RemoteProtocolError("frame buffer already failed", "protocol")
        available = len(self._buf) - self._pos
        if available < HEADER_SIZE:
            return None
        version, kind, length = _HEADER.unpack_from(self._buf, self._pos)
        if version != PROTOCOL_VERSION:
            self._broken = True
            raise RemoteProtocolError(
                f"unsupported protocol version {version} (we speak {PROTOCOL_VERSION})"
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
        end = self._pos + HEADER_SIZE + length
        if len(self._buf) < end:
            return None
        payload = bytes(self._buf[self._pos + HEADER_SIZE : end])
        self._pos = end
        return kind, payload
