"""Fuzz the message buffer: ``kbproto.framing.FrameBuffer`` under any chunking.

Invariant: feeding a byte stream in arbitrary pieces gives exactly the frames (and
the same error class, at the same point) as feeding it whole; the only exceptions
are ``ProtocolError``; after each piece the unread remainder is smaller than one
maximal frame (the buffer never grows without bound); and ``next_split`` with
``decode_split`` (what the core uses) gives the messages and error that
``next_frame`` with ``decode`` give.

Input layout: first byte picks the control-frame cap (64 KiB .. 1 MiB), the next
bytes up to the first 0xFF marker choose the piece sizes, the rest is the stream.

Run by hand (atheris): ``python -m fuzz.fuzz_framing fuzz/corpus/framing -max_total_time=600``
"""

from __future__ import annotations

import sys

from fuzz._reader import ByteReader
from kbproto.codec import decode, decode_split
from kbproto.errors import ProtocolError
from kbproto.framing import DEFAULT_MAX_CONTROL_FRAME, HEADER_SIZE, FrameBuffer
from kbproto.messages import MAX_DATA_CHUNK

__all__ = ("TestOneInput",)

_CAPS = (65536, 131072, 262144, DEFAULT_MAX_CONTROL_FRAME)


def _frames(cap: int, pieces: list[bytes]) -> tuple[list[tuple[int, bytes]], str | None]:
    buffer = FrameBuffer(cap)
    frames: list[tuple[int, bytes]] = []
    bound = HEADER_SIZE + max(cap, 4 + MAX_DATA_CHUNK)
    try:
        for piece in pieces:
            buffer.feed(piece)
            while (frame := buffer.next_frame()) is not None:
                frames.append(frame)
            if len(buffer) >= bound + len(piece):
                raise AssertionError(f"{len(buffer)} bytes held after a piece (bound {bound})")
    except ProtocolError as exc:
        return frames, type(exc).__name__
    return frames, None


def _messages(cap: int, pieces: list[bytes], split: bool) -> tuple[list[object], str | None]:
    buffer = FrameBuffer(cap)
    messages: list[object] = []
    try:
        for piece in pieces:
            buffer.feed(piece)
            if split:
                while (parts := buffer.next_split()) is not None:
                    messages.append(decode_split(*parts))
            else:
                while (frame := buffer.next_frame()) is not None:
                    messages.append(decode(*frame))
    except ProtocolError as exc:
        return messages, type(exc).__name__
    return messages, None


def TestOneInput(data: bytes) -> None:  # the name atheris looks for
    """Check the chunking invariant on one input (raises on a violation)."""
    reader = ByteReader(data)
    cap = _CAPS[reader.byte() % len(_CAPS)]
    sizes = reader.take(reader.below(32))
    stream = reader.rest()
    whole = _frames(cap, [stream])
    pieces: list[bytes] = []
    pos = 0
    for i in range(len(stream)):
        if pos >= len(stream):
            break
        size = 1 + (sizes[i % len(sizes)] if sizes else 0)
        pieces.append(stream[pos : pos + size])
        pos += size
    split = _frames(cap, pieces)
    if whole != split:
        raise AssertionError(f"chunking changed the result: {whole!r} != {split!r}")
    bytewise = _frames(cap, [stream[i : i + 1] for i in range(min(len(stream), 4096))])
    if len(stream) <= 4096 and bytewise != whole:
        raise AssertionError("byte-at-a-time feeding changed the result")
    if _messages(cap, pieces, split=True) != _messages(cap, pieces, split=False):
        raise AssertionError("next_split + decode_split disagree with next_frame + decode")


def main() -> None:
    """Run under atheris (``pip install atheris``)."""
    import atheris

    # Coverage guidance: instrument every module already imported (kbproto included).
    atheris.instrument_all()
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
