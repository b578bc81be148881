"""Fuzz the frame codec: ``kbproto.codec.decode`` on arbitrary payloads.

Invariant: for any ``(kind, payload)``, ``decode`` returns a ``Message`` or raises a
``ProtocolError`` (the ``RemoteProtocolError`` family), nothing else: no
``KeyError``, ``TypeError``, ``RecursionError``... And whatever it accepts
re-encodes to a frame that decodes to an equal message (the codec is symmetric, so
a hub relaying what it parsed never emits something its peer would reject).

Input layout: first byte selects the frame kind (1 control, 2 data, anything else
as is), the rest is the payload.

Run by hand (atheris): ``python -m fuzz.fuzz_codec fuzz/corpus/codec -max_total_time=600``
"""

from __future__ import annotations

import sys

from kbproto.codec import decode, encode
from kbproto.errors import ProtocolError
from kbproto.framing import HEADER_SIZE

__all__ = ("TestOneInput",)


def TestOneInput(data: bytes) -> None:  # the name atheris looks for
    """Check the codec invariant on one input (raises on a violation)."""
    if not data:
        return
    kind = data[0] if data[0] > 2 else (data[0] % 2) + 1
    payload = data[1:]
    try:
        message = decode(kind, payload)
    except ProtocolError:
        return
    frame = encode(message)
    again = decode(frame[1], frame[HEADER_SIZE:])
    if again != message:
        raise AssertionError(f"re-encoding changed the message: {message!r} -> {again!r}")


def main() -> None:
    """Run under atheris (``pip install atheris``)."""
    import atheris

    # Coverage guidance: instrument every module already imported (kbproto included).
    atheris.instrument_all()
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
