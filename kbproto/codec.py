"""Encode messages to frames and decode frame payloads to messages (protocol.md §3).

Strategy
--------
Control messages are compact JSON objects: ``{"type": "<TYPE>", <field>: <value>...}``
with exactly the fields of the message class, in class order, no whitespace, UTF-8
(not ASCII-escaped). Tuples travel as arrays; ``NodeInfo``, ``Placement`` and
``FindResult`` as objects. Data frames carry the stream number in 4 bytes and the body raw.

Decoding is strict: duplicate keys, unknown or missing keys, floats, ``NaN``, lone
surrogates, nesting the schema does not have and values out of range are all errors.
The codec only checks JSON *shape*; the message constructors check values, and the
codec turns their ``ValueError``/``TypeError`` into ``RemoteProtocolError``. So
``decode`` returns a valid message or raises a ``ProtocolError``, nothing else (the
fuzz harness holds it to that).
"""

from __future__ import annotations

import dataclasses
import json
import struct
from typing import Any

from kbproto.errors import RemoteProtocolError
from kbproto.framing import HEADER_SIZE, KIND_CONTROL, KIND_DATA, encode_frame
from kbproto.messages import (
    PROTOCOL_VERSION,
    Challenge,
    Credit,
    Data,
    End,
    Error,
    Find,
    FindReply,
    FindResult,
    HubIndexUpdate,
    IndexAck,
    Message,
    NodeInfo,
    Open,
    Ping,
    Placement,
    Register,
    Reset,
    Response,
    Resync,
    ShareIndexUpdate,
    Welcome,
)

__all__ = (
    "DATA_FRAME_OVERHEAD",
    "decode",
    "decode_split",
    "encode",
    "encode_data",
    "encode_data_frames",
    "encoded_size",
)

_STREAM = struct.Struct("!I")
_HEADER_AND_STREAM = struct.Struct("!BBII")
#: Bytes a data frame adds to its body: the frame header and the stream number.
DATA_FRAME_OVERHEAD = _HEADER_AND_STREAM.size

#: Wire type name -> message class, for every control message.
_CONTROL: dict[str, type[Any]] = {
    cls.TYPE: cls
    for cls in (
        Challenge,
        Register,
        Welcome,
        Error,
        Ping,
        ShareIndexUpdate,
        HubIndexUpdate,
        IndexAck,
        Resync,
        Find,
        FindReply,
        Open,
        Response,
        End,
        Credit,
        Reset,
    )
}
#: The field names of each class, in order (computed once; ``fields()`` is slow).
_FIELDS: dict[type[Any], tuple[str, ...]] = {
    cls: tuple(f.name for f in dataclasses.fields(cls))
    for cls in (*_CONTROL.values(), NodeInfo, Placement, FindResult)
}
#: Keys holding one nested object, and the class it decodes to.
_OBJECT_KEYS: dict[str, type[Any]] = {"info": NodeInfo, "placement": Placement}
#: Keys holding an array of nested objects, and the class of each.
_OBJECT_ARRAY_KEYS: dict[str, type[Any]] = {"results": FindResult, "nodes_put": Placement}
_NESTED_KEYS = frozenset(_OBJECT_KEYS) | frozenset(_OBJECT_ARRAY_KEYS)
#: JSON values ``_convert`` returns unchanged (under keys not in ``_NESTED_KEYS``).
_SCALARS = frozenset({str, int, bool, type(None)})


#: One encoder for every control frame: ``json.dumps`` with any option builds a new
#: ``JSONEncoder`` per call (a fifth of encoding a ping-sized message).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
#: The one frame of each message without fields (``Ping``), encoded once, and the one
#: instance its canonical payload decodes to (messages are frozen: sharing is safe).
#: Pings are most of an idle network's frames.
_FIELDLESS_FRAMES: dict[type[Any], bytes] = {
    cls: encode_frame(KIND_CONTROL, _ENCODER.encode({"type": cls.TYPE}).encode("utf-8"))
    for cls, names in _FIELDS.items()
    if not names
}
_FIELDLESS_MESSAGES: dict[bytes, Message] = {
    frame[HEADER_SIZE:]: cls() for cls, frame in _FIELDLESS_FRAMES.items()
}


def _plain(value: object) -> object:
    """A message value as JSON-ready data (nested dataclasses become dicts).

    Tuples of plain values are left alone: ``json`` writes tuples as arrays, and not
    copying a 4096-entry index batch entry by entry is most of the encoder's speed.
    """
    if isinstance(value, NodeInfo | Placement | FindResult):
        plain = {name: getattr(value, name) for name in _FIELDS[type(value)]}
        if "info" in plain:  # a Placement: its NodeInfo is the one nested value
            plain["info"] = _plain(plain["info"])
        return plain
    if isinstance(value, tuple) and value and isinstance(value[0], FindResult | Placement):
        return [_plain(item) for item in value]
    return value


def encode(message: Message) -> bytes:
    """Return the whole frame (header included) that carries ``message``."""
    if isinstance(message, Data):
        return encode_data(message.stream, message.data)
    names = _FIELDS[type(message)]
    if not names:
        return _FIELDLESS_FRAMES[type(message)]
    body: dict[str, object] = {"type": message.TYPE}
    for name in names:
        value = getattr(message, name)
        # Only the nested keys hold dataclasses; every other value is JSON-ready.
        body[name] = _plain(value) if name in _NESTED_KEYS else value
    return encode_frame(KIND_CONTROL, _ENCODER.encode(body).encode("utf-8"))


def encoded_size(value: Placement) -> int:
    """Bytes ``value`` takes inside a control message (compact UTF-8 JSON), so a
    sender can size an index batch to the frame cap."""
    return len(_ENCODER.encode(_plain(value)).encode("utf-8"))


def encode_data(stream: int, data: bytes) -> bytes:
    """Return one data frame for ``stream`` without building a ``Data``.

    The caller guarantees ``len(data) <= MAX_DATA_CHUNK`` (tests and fuzzers send an
    empty body on purpose).
    """
    return _HEADER_AND_STREAM.pack(PROTOCOL_VERSION, KIND_DATA, 4 + len(data), stream) + data


def encode_data_frames(stream: int, data: bytes | memoryview, chunk: int) -> bytes:
    """Return ``data`` as consecutive data frames of at most ``chunk`` bytes each.

    One copy of ``data`` for all of them (one buffer, one outbox entry), where a
    buffer per frame plus the outbox joining them copied it twice. The caller
    guarantees ``1 <= len(data)`` and ``1 <= chunk <= MAX_DATA_CHUNK``.
    """
    view = memoryview(data)
    pack = _HEADER_AND_STREAM.pack
    parts: list[bytes | memoryview] = []
    for start in range(0, len(view), chunk):
        piece = view[start : start + chunk]
        parts.append(pack(PROTOCOL_VERSION, KIND_DATA, 4 + len(piece), stream))
        parts.append(piece)
    return b"".join(parts)


def decode_split(kind: int, stream: int, payload: bytes) -> Message:
    """Return the message of a frame from ``FrameBuffer.next_split``.

    Raises:
        RemoteProtocolError: the payload is not a valid message.
    """
    if kind == KIND_DATA:
        data: Data = _build(Data, {"stream": stream, "data": payload})
        return data
    return decode(kind, payload)


def decode(kind: int, payload: bytes) -> Message:
    """Return the message carried by one frame's payload.

    Raises:
        RemoteProtocolError: the payload is not a valid message.
    """
    if kind == KIND_DATA:
        if len(payload) < 5:
            raise RemoteProtocolError("data frame shorter than 5 bytes")
        (stream,) = _STREAM.unpack_from(payload)
        data: Data = _build(Data, {"stream": stream, "data": payload[4:]})
        return data
    fieldless = _FIELDLESS_MESSAGES.get(bytes(payload))  # no copy of a ``bytes``
    if fieldless is not None:
        return fieldless
    try:
        obj = _DECODER.decode(payload.decode("utf-8"))
    except RemoteProtocolError:
        raise
    except (ValueError, RecursionError) as exc:
        # UnicodeDecodeError and JSONDecodeError are ValueErrors; RecursionError is
        # deep nesting; ValueError is also CPython's cap on huge integer literals.
        raise RemoteProtocolError(f"control frame is not JSON: {exc}") from None
    if b"\\u" in payload and _has_surrogate(obj):
        raise RemoteProtocolError("control frame holds a lone surrogate")
    if not isinstance(obj, dict):
        raise RemoteProtocolError("control frame is not a JSON object")
    name = obj.pop("type", None)
    cls = _CONTROL.get(name) if isinstance(name, str) else None
    if cls is None:
        raise RemoteProtocolError(f"unknown message type {name!r}")
    message: Message = _build(cls, obj)
    return message


def _build(cls: type[Any], fields: dict[str, Any]) -> Any:
    """Construct ``cls`` from decoded JSON ``fields``, checking the key set."""
    expected = _FIELDS.get(cls, ())
    # Our encoder writes the fields in class order: one tuple comparison then; any
    # other order is fine too, and costs the set comparison.
    if cls is not Data and tuple(fields) != expected and set(fields) != set(expected):
        missing = sorted(set(expected) - set(fields))
        extra = sorted(set(fields) - set(expected))
        raise RemoteProtocolError(
            f"{cls.__name__}: missing fields {missing}, unknown fields {extra}"
        )
    try:
        values: dict[str, Any] = {}
        for key, value in fields.items():
            # Most values are plain scalars under plain keys: nothing to convert, and
            # no call per field (the constructor checks their types and ranges).
            if type(value) in _SCALARS and key not in _NESTED_KEYS:
                values[key] = value
            else:
                values[key] = _convert(key, value)
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise RemoteProtocolError(f"invalid {cls.__name__}: {exc}") from None


def _convert(key: str, value: Any) -> Any:
    """Turn JSON arrays into tuples and the nested objects into their classes."""
    cls = _OBJECT_KEYS.get(key)
    if cls is not None:
        if not isinstance(value, dict):
            raise TypeError(f"{key} must be an object")
        return _build(cls, value)
    cls = _OBJECT_ARRAY_KEYS.get(key)
    if cls is not None:
        if not isinstance(value, list):
            raise TypeError(f"{key} must be an array")
        items = []
        for item in value:
            if not isinstance(item, dict):
                raise TypeError(f"each item of {key} must be an object")
            items.append(_build(cls, item))
        return tuple(items)
    if type(value) is list:
        # Two levels at most (``put``, ``headers``, ``hops``): inner arrays become
        # tuples; anything nested deeper stays a list and the constructor rejects it.
        return tuple(tuple(item) if type(item) is list else item for item in value)
    if isinstance(value, dict):
        raise TypeError(f"{key or 'value'} must not be an object")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Reject objects with a repeated key (JSON allows them; we do not)."""
    result = dict(pairs)
    if len(result) != len(pairs):
        raise RemoteProtocolError("duplicate key in control frame")
    return result


def _no_float(text: str) -> Any:
    """Reject every non-integer number: no field is a float."""
    raise RemoteProtocolError(f"non-integer number {text[:20]!r} in control frame")


#: One decoder for every control frame. ``json.loads`` with hooks builds a new decoder
#: (and its C scanner) per call; a hub fed a million index entries then kept 215 of
#: its 240 pymalloc arenas (1 MiB each) after the child left, each pinned by a few of
#: those short-lived allocations interleaved with the index's (``sys._debugmallocstats``:
#: 27 KB live in 215 MiB of arenas); with one shared decoder it kept 10. It is also
#: 45 % faster on a small frame (3.5 against 6.2 µs for a ``find``). Decoding runs
#: under the GIL; the scanner's memo only deduplicates equal keys.
_DECODER = json.JSONDecoder(
    object_pairs_hook=_no_duplicates, parse_float=_no_float, parse_constant=_no_float
)


def _has_surrogate(obj: object) -> bool:
    """True if any string in ``obj`` holds a lone surrogate (not valid UTF-8)."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if any("\ud800" <= c <= "\udfff" for c in item):
                return True
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
    return False
