"""Fuzz the ``.prv`` / ``.prvdir`` parser: ``kbproto.prv.parse_*`` on arbitrary bytes.

Invariant: for any document, ``parse_prv``, ``parse_prvdir`` and ``parse_document``
return a model or raise ``PrvFormatError`` (a ``ProtocolError``), nothing else: no
``RecursionError`` on deep nesting, no ``UnicodeDecodeError``, ``KeyError``,
``TypeError``... Whatever is accepted serializes to a document that parses back to an
equal model (so a ``.prvdir`` we rewrite never becomes one we refuse), and the
serialized text never holds an absolute ``original_path`` we produced ourselves.

Input layout: the first byte picks the parser (0 ``parse_prv``, 1 ``parse_prvdir``,
2 ``parse_document``) and, with its high bit set, wraps the rest in that many levels
of JSON arrays/objects (deep nesting without a huge input); the rest is the document.

Run by hand (atheris): ``python -m fuzz.fuzz_prv fuzz/corpus/prv -max_total_time=600``
"""

from __future__ import annotations

import sys

from kbproto.errors import ProtocolError
from kbproto.prv import (
    Prv,
    PrvDir,
    parse_document,
    parse_prv,
    parse_prvdir,
    serialize_prv,
    serialize_prvdir,
)

__all__ = ("TestOneInput",)

_PARSERS = (parse_prv, parse_prvdir, parse_document)


def _wrap(doc: bytes, depth: int, kind: int) -> bytes:
    # Nesting built from the input's first byte: 128..255 -> thousands of levels.
    if kind % 2:
        return b"[" * depth + doc + b"]" * depth
    return b'{"files":' * depth + doc + b"}" * depth


def TestOneInput(data: bytes) -> None:  # the name atheris looks for
    """Check the parser invariant on one input (raises on a violation)."""
    if not data:
        return
    selector, doc = data[0], data[1:]
    parse = _PARSERS[(selector & 0x7F) % 3]
    if selector & 0x80:
        doc = _wrap(doc, (selector & 0x7F) * 800, selector >> 3)
    try:
        model = parse(doc)
    except ProtocolError:
        return
    if isinstance(model, Prv):
        text = serialize_prv(model)
        again: Prv | PrvDir = parse_prv(text)
    else:
        assert isinstance(model, PrvDir), type(model)
        text = serialize_prvdir(model)
        again = parse_prvdir(text)
    if again != model:
        raise AssertionError(f"serializing changed the document: {model!r:.200} -> {again!r:.200}")


def main() -> None:
    """Run under atheris (``pip install atheris``)."""
    import atheris

    atheris.instrument_all()
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
