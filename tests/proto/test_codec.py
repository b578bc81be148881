"""Codec and framing: pinned bytes, round trips, chunking invariance, malformed input."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kbproto.messages
from kbproto.codec import decode, decode_split, encode, encode_data_frames
from kbproto.errors import LimitExceeded, ProtocolError, RemoteProtocolError
from kbproto.framing import KIND_CONTROL, KIND_DATA, FrameBuffer, encode_frame
from kbproto.ids import NodeId
from kbproto.messages import (
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

SHA = "a" * 40
NODE = NodeId(NodeId("0123456789ab"))
#: The message classes, untyped: for building deliberately invalid messages.
_M: Any = kbproto.messages
INFO = NodeInfo(
    node_id=NODE,
    node_type="leaf",
    name="n",
    description="d",
    owner="o",
    owner_email="e@x",
    listen_url="http://x:1",
    public_key="PEM",
    scientific_research="yes",
    confirm_share="yes",
)
PLACEMENT = Placement(
    info=INFO,
    parent=NODE,
    nonce="cd" * 32,
    stamp=1_700_000_000_000,
    scheme="ed25519",
    signature="00ff",
)
RESULT = FindResult(
    kbshare_id=NODE,
    share_url="http://s",
    path="a/b.dat",
    size=3,
    hops=((NODE, "http://h"),),
)
SAMPLES: list[Message] = [
    Challenge(
        nonce="ab" * 32, node_id=NODE, max_streams=4, max_lookups=5, heartbeat_timeout_ms=4000
    ),
    Register(
        placement=PLACEMENT,
        passcode="p",
        max_streams=1,
        max_lookups=2,
        heartbeat_timeout_ms=30_000,
    ),
    Welcome(info=INFO),
    Error(code="protocol", reason="bad ünïcode"),
    Ping(),
    ShareIndexUpdate(seq=3, reset=True, put=((SHA, "p/q", 9),), drop=("b" * 40,)),
    HubIndexUpdate(
        seq=0,
        reset=False,
        content_put=(SHA,),
        content_drop=(),
        nodes_put=(PLACEMENT, PLACEMENT),
        nodes_drop=(NODE,),
    ),
    IndexAck(seq=7),
    Resync(expected=2),
    Find(query=1, sha1=SHA, share_id=None, up=True, ttl_ms=1000),
    Find(query=2, sha1=SHA, share_id=NODE, up=False, ttl_ms=0),
    FindReply(query=1, results=(RESULT,)),
    Open(
        stream=3,
        target=NODE,
        method="GET",
        path="/x/download/a",
        headers=(("Range", "bytes=0-1"),),
        credit=10,
    ),
    Response(stream=3, status=206, headers=(("Content-Range", "bytes 0-1/9"),)),
    Data(stream=3, data=b"\x00\x01"),
    End(stream=3),
    Credit(stream=3, credit=100),
    Reset(stream=3, status=499, reason="gone"),
]


def _decode_all(data: bytes) -> list[Message]:
    buffer = FrameBuffer()
    buffer.feed(data)
    out = []
    while (frame := buffer.next_frame()) is not None:
        out.append(decode(*frame))
    return out


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(message: Message) -> None:
    assert _decode_all(encode(message)) == [message]


def test_pinned_bytes() -> None:
    assert encode(IndexAck(seq=7)) == b'\x04\x01\x00\x00\x00\x1c{"type":"index_ack","seq":7}'
    assert encode(Data(stream=3, data=b"hi")) == b"\x04\x02\x00\x00\x00\x06\x00\x00\x00\x03hi"
    assert encode(ShareIndexUpdate(seq=0, reset=True, put=((SHA, "f", 1),), drop=()))[6:] == (
        b'{"type":"share_index","seq":0,"reset":true,"put":[["'
        + SHA.encode()
        + b'","f",1]],"drop":[]}'
    )
    assert (
        encode(Credit(stream=5, credit=4096))[6:] == b'{"type":"credit","stream":5,"credit":4096}'
    )


def test_pinned_placement_bytes() -> None:
    info = (
        b'{"node_id":"0123456789ab","node_type":"leaf","name":"n","description":"d",'
        b'"owner":"o","owner_email":"e@x","listen_url":"http://x:1","public_key":"PEM",'
        b'"scientific_research":"yes","confirm_share":"yes"}'
    )
    placement = (
        b'{"info":' + info + b',"parent":"0123456789ab","nonce":"' + b"cd" * 32 + b'",'
        b'"stamp":1700000000000,"scheme":"ed25519","signature":"00ff"}'
    )
    assert encode(SAMPLES[1])[6:] == (
        b'{"type":"register","placement":' + placement + b',"passcode":"p",'
        b'"max_streams":1,"max_lookups":2,"heartbeat_timeout_ms":30000}'
    )
    assert encode(
        HubIndexUpdate(
            seq=1,
            reset=False,
            content_put=(),
            content_drop=(),
            nodes_put=(PLACEMENT,),
            nodes_drop=(NODE,),
        )
    )[6:] == (
        b'{"type":"hub_index","seq":1,"reset":false,"content_put":[],"content_drop":[],'
        b'"nodes_put":[' + placement + b'],"nodes_drop":["0123456789ab"]}'
    )


@given(st.binary(min_size=0, max_size=200), st.lists(st.integers(1, 50), max_size=30))
@settings(max_examples=200, deadline=None)
def test_any_chunking_gives_the_same_frames(noise: bytes, cuts: list[int]) -> None:
    stream = b"".join(encode(m) for m in SAMPLES) + noise
    whole = FrameBuffer()
    whole.feed(stream)
    expected: list[object] = []
    try:
        while (frame := whole.next_frame()) is not None:
            expected.append(frame)
    except ProtocolError as exc:
        expected.append(type(exc))
    pieces = FrameBuffer()
    got: list[object] = []
    pos = 0
    failed = False
    for cut in [*cuts, len(stream)]:
        if failed:
            break
        pieces.feed(stream[pos : pos + cut])
        pos += cut
        try:
            while (frame := pieces.next_frame()) is not None:
                got.append(frame)
        except ProtocolError as exc:
            got.append(type(exc))
            failed = True
    if not failed and pos < len(stream):
        pieces.feed(stream[pos:])
        try:
            while (frame := pieces.next_frame()) is not None:
                got.append(frame)
        except ProtocolError as exc:
            got.append(type(exc))
    assert got == expected


@given(st.binary(max_size=300))
@settings(max_examples=150, deadline=None)
def test_arbitrary_bytes_decode_or_raise_protocol_error(data: bytes) -> None:
    for kind in (KIND_CONTROL, KIND_DATA):
        with contextlib.suppress(ProtocolError):
            decode(kind, data)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=4),
        max_leaves=12,
    ),
    st.sampled_from([cls.TYPE for cls in {type(m) for m in SAMPLES} if cls is not Data]),
)
@settings(max_examples=150, deadline=None)
def test_arbitrary_json_shapes_are_rejected_cleanly(value: object, kind: str) -> None:
    body = value if isinstance(value, dict) else {"x": value}
    body = {"type": kind, **body}
    with contextlib.suppress(ProtocolError):
        decode(KIND_CONTROL, json.dumps(body).encode())


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        (b"[]", "not a JSON object"),
        (b"\xff", "not JSON"),
        (b'{"type":"ping","type":"ping"}', "duplicate key"),
        (b'{"type":"index_ack","seq":1.5}', "non-integer"),
        (b'{"type":"index_ack","seq":NaN}', "non-integer"),
        (b'{"type":"nope"}', "unknown message type"),
        (b'{"type":"index_ack"}', "missing fields ['seq']"),
        (b'{"type":"index_ack","seq":1,"x":2}', "unknown fields ['x']"),
        (b'{"type":"index_ack","seq":-1}', "seq must be in"),
        (b'{"type":"index_ack","seq":true}', "seq must be an integer"),
        (b'{"type":"error","code":"x","reason":"\\ud800"}', "lone surrogate"),
        (b'{"type":"welcome","info":[]}', "info must be an object"),
        (b'{"type":"find_reply","query":1,"results":{}}', "results must be an array"),
        (b'{"type":"find_reply","query":1,"results":[1]}', "each item of results must be"),
        (
            b'{"type":"register","placement":1,"passcode":"","max_streams":1,'
            b'"max_lookups":1,"heartbeat_timeout_ms":1}',
            "placement must be an object",
        ),
        (b'{"type":"resync","expected":{}}', "must not be an object"),
        (b"[" * 100000 + b"]" * 100000, "not JSON"),
        (b'{"type":"index_ack","seq":' + b"9" * 5000 + b"}", "not JSON"),
    ],
)
def test_malformed_control_payloads(payload: bytes, needle: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode(KIND_CONTROL, payload)
    assert needle in str(info.value)


def test_short_data_frame() -> None:
    with pytest.raises(RemoteProtocolError, match="shorter than 5"):
        decode(KIND_DATA, b"\x00\x00\x00\x01")


def test_frame_buffer_errors_are_sticky() -> None:
    buffer = FrameBuffer()
    buffer.feed(b"\x03\x01\x00\x00\x00\x00")  # version 3: bare node ids in hub_index
    with pytest.raises(RemoteProtocolError, match="unsupported protocol version 3"):
        buffer.next_frame()
    with pytest.raises(RemoteProtocolError, match="already failed"):
        buffer.next_frame()
    other = FrameBuffer()
    other.feed(b"\x04\x09\x00\x00\x00\x00")
    with pytest.raises(RemoteProtocolError, match="unknown frame kind 9"):
        other.next_frame()
    data = FrameBuffer()
    data.feed(b"\x04\x02\x00\x11\x00\x05")
    with pytest.raises(LimitExceeded) as info:
        data.next_frame()
    assert info.value.limit == "max_frame_size"


def test_frame_buffer_is_linear_for_byte_at_a_time_input() -> None:
    frame = encode(Data(stream=1, data=b"x" * 60000))
    buffer = FrameBuffer()
    for i in range(len(frame)):
        buffer.feed(frame[i : i + 1])
        if i < len(frame) - 1:
            assert buffer.next_frame() is None
    assert len(buffer) == len(frame)
    assert buffer.next_frame() == (KIND_DATA, frame[6:])
    assert len(buffer) == 0


def _placement(**changes: object) -> Placement:
    values: dict[str, object] = {
        "info": INFO,
        "parent": NODE,
        "nonce": "cd" * 32,
        "stamp": 1,
        "scheme": "ed25519",
        "signature": "00ff",
    }
    values.update(changes)
    return _M.Placement(**values)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("build", "needle"),
    [
        (
            lambda: _M.Challenge(
                nonce="zz", node_id=NODE, max_streams=1, max_lookups=1, heartbeat_timeout_ms=1
            ),
            "64 lowercase hex",
        ),
        (
            lambda: _M.Challenge(
                nonce="ab" * 32, node_id=NODE, max_streams=1, max_lookups=1, heartbeat_timeout_ms=0
            ),
            "heartbeat_timeout_ms",
        ),
        (
            lambda: _M.Register(
                placement=INFO,
                passcode="",
                max_streams=1,
                max_lookups=1,
                heartbeat_timeout_ms=1,
            ),
            "Placement",
        ),
        (lambda: _placement(info=1), "NodeInfo"),
        (lambda: _placement(signature="zz"), "hex"),
        (lambda: _placement(signature="ABCD"), "lowercase hex"),
        (lambda: _placement(signature="abc"), "lowercase hex"),
        (lambda: _placement(signature=""), "must not be empty"),
        (lambda: _placement(nonce="ab"), "64 lowercase hex"),
        (lambda: _placement(stamp=-1), "stamp must be in"),
        (lambda: _placement(stamp=2**53), "stamp must be in"),
        (lambda: _placement(scheme=""), "must not be empty"),
        (lambda: _placement(parent="x"), "12 lowercase"),
        (lambda: _M.Welcome(info=1), "NodeInfo"),
        (lambda: _M.ShareIndexUpdate(seq=0, reset=1, put=(), drop=()), "boolean"),
        (
            lambda: _M.ShareIndexUpdate(seq=0, reset=True, put=((SHA, "p"),), drop=()),
            "(sha1, path, size)",
        ),
        (lambda: _M.ShareIndexUpdate(seq=0, reset=True, put=((SHA, "a\x00", 1),), drop=()), "NUL"),
        (lambda: _M.ShareIndexUpdate(seq=0, reset=True, put=(), drop=(SHA,) * 4097), "more than"),
        (
            lambda: _M.ShareIndexUpdate(
                seq=0, reset=True, put=((SHA, "p", 1),) * 2048, drop=(SHA,) * 2049
            ),
            "at most",
        ),
        (
            lambda: _M.HubIndexUpdate(
                seq=0, reset=1, content_put=(), content_drop=(), nodes_put=(), nodes_drop=()
            ),
            "boolean",
        ),
        (
            lambda: _M.HubIndexUpdate(
                seq=0,
                reset=True,
                content_put=(SHA,) * 2048,
                content_drop=(SHA,) * 2049,
                nodes_put=(),
                nodes_drop=(),
            ),
            "at most",
        ),
        (
            lambda: _M.HubIndexUpdate(
                seq=0, reset=True, content_put=(), content_drop=(), nodes_put=(), nodes_drop=("x",)
            ),
            "malformed id",
        ),
        (
            lambda: _M.HubIndexUpdate(
                seq=0, reset=True, content_put=(), content_drop=(), nodes_put=(NODE,), nodes_drop=()
            ),
            "Placement objects",
        ),
        (
            lambda: _M.HubIndexUpdate(
                seq=0,
                reset=True,
                content_put=(SHA,) * 4096,
                content_drop=(),
                nodes_put=(PLACEMENT,),
                nodes_drop=(),
            ),
            "at most",
        ),
        (lambda: _M.Find(query=0, sha1=SHA, share_id=None, up=1, ttl_ms=0), "boolean"),
        (lambda: _M.FindReply(query=0, results=(1,)), "FindResult"),
        (
            lambda: _M.FindResult(kbshare_id=NODE, share_url="", path="p", size=1, hops=((NODE,),)),
            "pair",
        ),
        (
            lambda: _M.Open(stream=1, target=NODE, method="get", path="/", headers=(), credit=0),
            "upper-case",
        ),
        (
            lambda: _M.Open(stream=1, target=NODE, method="GET", path="x", headers=(), credit=0),
            "start with /",
        ),
        (
            lambda: _M.Open(
                stream=1, target=NODE, method="GET", path="/", headers=(("a",),), credit=0
            ),
            "pair",
        ),
        (
            lambda: _M.Open(
                stream=1, target=NODE, method="GET", path="/", headers=(("a", "b\r\n"),), credit=0
            ),
            "CR",
        ),
        (lambda: _M.Data(stream=1, data="x"), "bytes"),
        (lambda: _M.Data(stream=1, data=b""), "1 to"),
        (
            lambda: _M.NodeInfo(
                node_id=NODE,
                node_type="x",
                name="",
                description="",
                owner="",
                owner_email="",
                listen_url="",
                public_key="P",
                scientific_research="",
                confirm_share="",
            ),
            "node_type",
        ),
        (lambda: _M.Error(code="", reason=""), "must not be empty"),
        (lambda: _M.Error(code=1, reason=""), "must be a string"),
        (lambda: _M.Error(code="x", reason="r" * 5000), "longer than"),
        (lambda: _M.ShareIndexUpdate(seq=0, reset=True, put=[], drop=()), "tuple"),
        (lambda: _M.Find(query=0, sha1="x", share_id=None, up=True, ttl_ms=0), "40 lowercase"),
        (lambda: _M.Find(query=0, sha1=SHA, share_id="x", up=True, ttl_ms=0), "12 lowercase"),
        (
            lambda: _M.FindResult(kbshare_id=NODE, share_url="", path="a\x00", size=1, hops=()),
            "NUL",
        ),
        (
            lambda: _M.ShareIndexUpdate(seq=0, reset=True, put=(("x", "p", 1),), drop=()),
            "40 lowercase",
        ),
        (
            lambda: _M.ShareIndexUpdate(seq=0, reset=True, put=((SHA, "", 1),), drop=()),
            "without NUL",
        ),
        (
            lambda: _M.ShareIndexUpdate(seq=0, reset=True, put=((SHA, "p", -1),), drop=()),
            "size must",
        ),
        (lambda: _M.ShareIndexUpdate(seq=0, reset=True, put=(), drop=("x",)), "40 lowercase"),
    ],
)
def test_invalid_messages_cannot_exist(build: object, needle: str) -> None:
    with pytest.raises((TypeError, ValueError)) as info:
        build()  # type: ignore[operator]
    assert needle in str(info.value)


def test_encode_frame_header() -> None:
    assert encode_frame(KIND_CONTROL, b"{}") == b"\x04\x01\x00\x00\x00\x02{}"


def test_frame_buffer_fed_in_tiny_pieces_holds_about_the_bytes_it_was_given() -> None:
    # A peer trickling a 100 kB control frame 2 bytes at a time must not make us keep
    # one Python object per piece (that was ~20x the bytes).
    import tracemalloc

    frame = encode_frame(KIND_CONTROL, b'{"type":"ping"' + b" " * 100_000 + b"}")
    buffer = FrameBuffer()
    tracemalloc.start()
    try:
        for i in range(0, len(frame) - 2, 2):
            buffer.feed(frame[i : i + 2])
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 2 * len(frame)
    buffer.feed(frame[len(frame) - 2 + len(frame) % 2 :])
    assert buffer.next_frame() == (KIND_CONTROL, frame[6:])
    assert len(buffer) == 0


@settings(max_examples=200)
@given(
    stream=st.integers(min_value=1, max_value=2**32 - 1),
    data=st.binary(min_size=1, max_size=5000),
    chunk=st.integers(min_value=1, max_value=1200),
)
def test_encode_data_frames_is_consecutive_data_frames(
    stream: int, data: bytes, chunk: int
) -> None:
    buffer = FrameBuffer()
    buffer.feed(encode_data_frames(stream, data, chunk))
    payloads: list[bytes] = []
    while (frame := buffer.next_frame()) is not None:
        kind, payload = frame
        assert kind == KIND_DATA
        message = decode(kind, payload)
        assert isinstance(message, Data)
        assert message.stream == stream
        assert 1 <= len(message.data) <= chunk
        payloads.append(message.data)
    # Every frame but the last is full; together they are the data, in order.
    assert all(len(p) == chunk for p in payloads[:-1])
    assert b"".join(payloads) == data
    assert len(payloads) == -(-len(data) // chunk)


def _messages(buffer: FrameBuffer, split: bool) -> list[object]:
    """Every message ``buffer`` yields (by either path), then the error type if any."""
    out: list[object] = []
    try:
        if split:
            while (parts := buffer.next_split()) is not None:
                out.append(decode_split(*parts))
        else:
            while (frame := buffer.next_frame()) is not None:
                out.append(decode(*frame))
    except ProtocolError as exc:
        out.append(type(exc))
    return out


@given(
    st.binary(min_size=0, max_size=64),
    st.lists(st.integers(1, 5000), max_size=20),
    st.binary(min_size=1, max_size=3000),
)
@settings(max_examples=200, deadline=None)
def test_next_split_yields_what_next_frame_and_decode_yield(
    noise: bytes, cuts: list[int], body: bytes
) -> None:
    wire = (
        b"".join(encode(m) for m in SAMPLES)
        + encode_data_frames(9, body, 1000)
        + encode(Data(stream=2**32 - 1, data=body[:1]))
        + noise
    )
    for chunking in ([len(wire)], [*cuts, len(wire)]):
        by_frame, by_split = FrameBuffer(), FrameBuffer()
        got_frame: list[object] = []
        got_split: list[object] = []
        pos = 0
        for cut in chunking:
            by_frame.feed(wire[pos : pos + cut])
            by_split.feed(wire[pos : pos + cut])
            pos += cut
            # Once a buffer raised it stays broken: stop reading it.
            if not (got_frame and isinstance(got_frame[-1], type)):
                got_frame += _messages(by_frame, split=False)
            if not (got_split and isinstance(got_split[-1], type)):
                got_split += _messages(by_split, split=True)
        assert got_split == got_frame


def test_next_split_refuses_a_data_frame_without_body() -> None:
    buffer = FrameBuffer()
    buffer.feed(encode_frame(KIND_DATA, b"\x00\x00\x00\x01"))
    with pytest.raises(RemoteProtocolError, match="shorter than 5"):
        buffer.next_split()
    with pytest.raises(RemoteProtocolError, match="already failed"):
        buffer.next_split()


def test_an_incomplete_frame_does_not_keep_a_large_read_alive() -> None:
    first = encode(Data(stream=3, data=b"x" * 100_000))
    second = encode(Data(stream=4, data=b"y" * 100))
    buffer = FrameBuffer()
    buffer.feed(first + second[:8])  # one read: a whole frame, then 8 bytes of the next
    assert buffer.next_split() == (KIND_DATA, 3, b"x" * 100_000)
    assert buffer.next_split() is None
    # Only the 8 unread bytes are held, not the 100 KB read they arrived in.
    assert sum(len(chunk) for chunk in buffer._chunks) == 8
    buffer.feed(second[8:])
    assert buffer.next_split() == (KIND_DATA, 4, b"y" * 100)
    assert len(buffer) == 0


def _frames_of(reads: list[bytes]) -> list[tuple[int, int, bytes]]:
    """Every ``next_split`` result of ``reads`` fed one after the other."""
    buffer = FrameBuffer()
    frames = []
    for read in reads:
        buffer.feed(read)
        while (frame := buffer.next_split()) is not None:
            frames.append(frame)
    assert len(buffer) == 0
    return frames


def test_frames_split_at_every_byte_near_their_edges_between_large_reads() -> None:
    # Reads of 4 KiB and more are kept as they came (smaller ones are gathered), so
    # only large reads put a frame's header or payload across two or three chunks.
    body = bytes(range(256)) * 20
    wire = b"".join(
        [
            encode_frame(KIND_DATA, (7).to_bytes(4, "big") + body),
            encode_frame(KIND_CONTROL, b""),  # an empty payload is a frame too
            encode_frame(KIND_CONTROL, body),
        ]
    )
    expected = [(KIND_DATA, 7, body), (KIND_CONTROL, 0, b""), (KIND_CONTROL, 0, body)]
    assert _frames_of([wire]) == expected
    edges = [0, 6 + 4 + len(body), 6 + 4 + len(body) + 6, len(wire)]
    for edge in edges:
        for cut in range(max(0, edge - 12), min(len(wire), edge + 12)):
            assert _frames_of([wire[:cut], wire[cut:]]) == expected, cut
            middle = cut + 5000
            assert _frames_of([wire[:cut], wire[cut:middle], wire[middle:]]) == expected, cut
