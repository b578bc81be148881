"""``proxy.Streams`` alone, on a fake node (``tests/proto/fakes.py``).

Each test walks one path of ``STREAM_TRANSITIONS`` for one role and checks the
frames the part queued, the events it emitted, its timers and the per-link counts.
"""

from __future__ import annotations

import pytest

from kbproto.config import Limits, Timeouts
from kbproto.errors import LimitExceeded, LocalProtocolError, RemoteProtocolError
from kbproto.events import (
    RequestReceived,
    ResponseData,
    ResponseEnded,
    ResponseStarted,
    StreamReset,
    StreamWritable,
)
from kbproto.ids import NodeId, StreamId
from kbproto.link import Link
from kbproto.messages import Credit, Data, End, Open, Reset, Response
from kbproto.proxy import Streams
from kbproto.state import StreamRole, StreamState
from kbproto.timers import TimerKey, TimerKind
from tests.proto.fakes import NODE_ID, FakePort, make_link

TARGET = NodeId("bbbbbbbbbbbb")
WINDOW = 64


def _port(**limits: int) -> FakePort:
    return FakePort(limits=Limits(stream_window=WINDOW, data_chunk=16, **limits))


def _open(stream: int, credit: int = WINDOW, target: NodeId = TARGET) -> Open:
    return Open(stream=stream, target=target, method="GET", path="/f", headers=(), credit=credit)


def _timer(sid: int) -> TimerKey:
    return TimerKey(TimerKind.STREAM, sid)


def test_origin_opens_receives_and_ends() -> None:
    port = _port()
    up = make_link(1, dialed=True)
    port.routes[TARGET] = up
    streams = Streams(port)
    sid = streams.open_request(TARGET, "GET", "/f", (), 0.0)
    assert port.sent_on(up) == [_open(1)]
    assert (up.our_streams, up.next_stream) == (1, 3)
    assert port.timers[_timer(sid)] == port.timeouts.request_timeout
    assert streams.state(sid) is StreamState.AWAITING_HEAD
    streams.grant_credit(sid, 10, 0.5)  # credit before the head is fine
    assert port.sent_on(up) == [Credit(stream=1, credit=10)]
    streams.on_message(up, Response(stream=1, status=200, headers=()), 1.0)
    streams.on_message(up, Data(stream=1, data=b"x" * 70), 1.0)
    streams.on_message(up, End(stream=1), 1.0)
    assert port.events == [
        ResponseStarted(stream_id=sid, status=200, headers=()),
        ResponseData(stream_id=sid, data=b"x" * 70),
        ResponseEnded(stream_id=sid),
    ]
    assert streams.state(sid) is StreamState.CLOSED
    assert len(streams) == 0
    assert up.our_streams == 0
    assert _timer(sid) not in port.timers
    streams.on_message(up, Data(stream=1, data=b"late"), 2.0)  # raced the close: dropped
    assert port.events[-1] == ResponseEnded(stream_id=sid)


def test_origin_is_refused_without_a_route_or_room() -> None:
    port = _port(max_open_streams=1)
    streams = Streams(port)
    lost = streams.open_request(TARGET, "GET", "/f", (), 0.0)
    assert port.of(StreamReset) == [
        StreamReset(stream_id=lost, status=404, reason=f"unknown node {TARGET}")
    ]
    busy = make_link(1, dialed=True, max_streams=0)
    port.routes[TARGET] = busy
    streams.open_request(TARGET, "GET", "/f", (), 0.0)
    assert port.of(StreamReset)[-1].reason == "the next hop has too many open streams"
    port.routes[TARGET] = make_link(2, dialed=True)
    streams.open_request(TARGET, "GET", "/f", (), 0.0)
    streams.open_request(TARGET, "GET", "/f", (), 0.0)
    assert port.of(StreamReset)[-1] == StreamReset(
        stream_id=StreamId(4), status=503, reason="too many open streams"
    )
    assert len(streams) == 1
    assert busy.our_streams == 0
    with pytest.raises(LocalProtocolError, match="bad request"):
        streams.open_request(TARGET, "get", "/f", (), 0.0)
    port.routes[TARGET] = "self"
    with pytest.raises(LocalProtocolError, match="serve the request locally"):
        streams.open_request(TARGET, "GET", "/f", (), 0.0)


def test_origin_cancel_and_frames_that_do_not_fit() -> None:
    port = _port()
    up = make_link(1, dialed=True)
    port.routes[TARGET] = up
    streams = Streams(port)
    sid = streams.open_request(TARGET, "GET", "/f", (), 0.0)
    port.sent.clear()
    with pytest.raises(RemoteProtocolError, match="unexpected data in origin stream state awa"):
        streams.on_message(up, Data(stream=1, data=b"x"), 1.0)
    with pytest.raises(LocalProtocolError, match=r"respond\(\) in origin stream"):
        streams.respond(sid, 200, (), 1.0)
    streams.on_message(up, Response(stream=1, status=200, headers=()), 1.0)
    with pytest.raises(LimitExceeded, match="65 bytes of data with only 64 of credit"):
        streams.on_message(up, Data(stream=1, data=b"x" * 65), 1.0)
    with pytest.raises(RemoteProtocolError, match="credit from the responder"):
        streams.on_message(up, Credit(stream=1, credit=1), 1.0)
    streams.reset_stream(sid, 2.0, "client left")
    assert port.sent_on(up) == [Reset(stream=1, status=499, reason="client left")]
    assert streams.role(sid) is None
    streams.reset_stream(sid, 2.0)  # closed: a no-op
    with pytest.raises(LocalProtocolError, match="no such stream"):
        streams.reset_stream(StreamId(7), 2.0)


def test_target_serves_within_credit() -> None:
    port = _port()
    down = make_link(2)
    port.routes[NODE_ID] = "self"
    streams = Streams(port)
    streams.on_message(down, _open(1, credit=20, target=NODE_ID), 0.0)
    (request,) = port.of(RequestReceived)
    sid = request.stream_id
    assert request.capacity == 20
    assert (streams.role(sid), down.peer_streams) == (StreamRole.TARGET, 1)
    assert streams.response_link(sid) == down.link_id
    with pytest.raises(LocalProtocolError, match=r"send_data\(\) in target stream state awa"):
        streams.send_data(sid, b"x", 0.0)
    with pytest.raises(LocalProtocolError, match="bad response"):
        streams.respond(sid, 42, (), 0.0)
    streams.respond(sid, 200, (("a", "b"),), 0.0)
    assert port.sent_on(down) == [Response(stream=1, status=200, headers=(("a", "b"),))]
    with pytest.raises(LocalProtocolError, match="only 20 of credit"):
        streams.send_data(sid, b"x" * 21, 0.0)
    streams.send_data(sid, b"y" * 20, 0.0)
    assert streams.send_capacity(sid) == 0
    streams.on_message(down, Credit(stream=1, credit=5), 0.0)
    assert port.of(StreamWritable) == [StreamWritable(stream_id=sid, capacity=5)]
    with pytest.raises(RemoteProtocolError, match="over 2"):
        streams.on_message(down, Credit(stream=1, credit=2**31 - 1), 0.0)
    streams.end_stream(sid, 0.0)
    assert port.bulk_on(down) == [
        Data(stream=1, data=b"y" * 16),
        Data(stream=1, data=b"y" * 4),
        End(stream=1),
    ]
    assert (len(streams), down.peer_streams) == (0, 0)
    assert streams.send_capacity(sid) == 0


def test_target_reset_either_way() -> None:
    port = _port()
    down = make_link(2)
    port.routes[NODE_ID] = "self"
    streams = Streams(port)
    streams.on_message(down, _open(1, target=NODE_ID), 0.0)
    streams.on_message(down, _open(3, target=NODE_ID), 0.0)
    first, second = (event.stream_id for event in port.of(RequestReceived))
    streams.reset_stream(first, 1.0, "disk error")
    assert port.sent_on(down) == [Reset(stream=1, status=502, reason="disk error")]
    streams.on_message(down, Reset(stream=3, status=499, reason="gone"), 1.0)
    assert port.of(StreamReset) == [StreamReset(stream_id=second, status=499, reason="gone")]
    streams.on_message(down, _open(5, target=NODE_ID), 1.0)
    with pytest.raises(RemoteProtocolError, match="response from the requester in target"):
        streams.on_message(down, Response(stream=5, status=200, headers=()), 1.0)


def _relay(window: int = WINDOW) -> tuple[FakePort, Streams, Link, Link]:
    """A relay between a requester below (link 2) and a responder above (link 1)."""
    port = FakePort(limits=Limits(stream_window=window, data_chunk=16))
    up = make_link(1, dialed=True)
    down = make_link(2)
    port.routes[TARGET] = up
    streams = Streams(port)
    streams.on_message(down, _open(1, credit=8), 0.0)
    assert port.sent_on(up) == [_open(1, credit=window)]
    assert port.traces == [f"relay GET /f to {TARGET}"]
    return port, streams, up, down


def test_relay_passes_bytes_on_within_credit_and_drains_after_end() -> None:
    port, streams, up, down = _relay()
    sid = StreamId(1)
    streams.on_message(down, Credit(stream=1, credit=4), 0.1)  # before the head: kept
    streams.on_message(up, Response(stream=1, status=200, headers=()), 0.1)
    assert port.sent_on(down) == [Response(stream=1, status=200, headers=())]
    streams.on_message(up, Data(stream=1, data=b"a" * 30), 0.2)
    # 12 bytes of credit went on; a quarter window (16) was not reached: no credit up.
    assert port.bulk_on(down) == [Data(stream=1, data=b"a" * 12)]
    assert port.sent_on(up) == []
    streams.on_message(down, Credit(stream=1, credit=6), 0.3)
    assert port.bulk_on(down) == [Data(stream=1, data=b"a" * 6)]
    assert port.sent_on(up) == [Credit(stream=1, credit=18)]
    assert streams.max_buffered() == 12
    streams.on_message(up, End(stream=1), 0.4)
    assert streams.state(sid) is StreamState.DRAINING
    with pytest.raises(RemoteProtocolError, match="unexpected data in relay stream state drain"):
        streams.on_message(up, Data(stream=1, data=b"late"), 0.4)
    streams.on_message(down, Credit(stream=1, credit=5), 0.5)
    assert streams.state(sid) is StreamState.DRAINING
    streams.on_message(down, Credit(stream=1, credit=50), 0.6)
    assert port.bulk_on(down) == [
        Data(stream=1, data=b"a" * 5),
        Data(stream=1, data=b"a" * 7),
        End(stream=1),
    ]
    assert streams.state(sid) is StreamState.CLOSED
    assert port.sent_on(up) == []  # no credit for a stream that ended
    assert (up.our_streams, down.peer_streams, len(streams)) == (0, 0, 0)


def test_relay_ends_at_once_with_nothing_buffered() -> None:
    port, streams, up, down = _relay()
    streams.on_message(down, Credit(stream=1, credit=100), 0.0)
    streams.on_message(up, Response(stream=1, status=204, headers=()), 0.0)
    streams.on_message(up, Data(stream=1, data=b"b" * 20), 0.0)
    assert port.sent_on(up) == [Credit(stream=1, credit=20)]
    streams.on_message(up, End(stream=1), 0.0)
    assert port.bulk_on(down) == [
        Data(stream=1, data=b"b" * 16),
        Data(stream=1, data=b"b" * 4),
        End(stream=1),
    ]
    assert len(streams) == 0


@pytest.mark.parametrize("from_responder", [True, False])
def test_relay_passes_resets_on(from_responder: bool) -> None:
    port, streams, up, down = _relay()
    if from_responder:
        streams.on_message(up, Reset(stream=1, status=404, reason="no file"), 0.0)
        assert port.sent_on(down) == [Reset(stream=1, status=404, reason="no file")]
    else:
        streams.on_message(down, Reset(stream=1, status=499, reason="bye"), 0.0)
        assert port.sent_on(up) == [Reset(stream=1, status=499, reason="bye")]
    assert len(streams) == 0


@pytest.mark.parametrize(
    ("lost", "status", "reason"),
    [("up", 502, "link to peer lost"), ("down", 499, "requester went away")],
)
def test_relay_resets_the_live_side_when_a_link_is_lost(
    lost: str, status: int, reason: str
) -> None:
    port, streams, up, down = _relay()
    dead, alive = (up, down) if lost == "up" else (down, up)
    streams.link_lost(make_link(9), 1.0)  # a link the stream does not use
    assert len(streams) == 1
    streams.link_lost(dead, 1.0)
    assert port.sent_on(alive) == [Reset(stream=1, status=status, reason=reason)]
    assert port.sent_on(dead) == []
    assert port.events == []  # a relay has no app to tell


def test_relay_refuses_when_the_next_hop_is_full() -> None:
    port = _port()
    port.routes[TARGET] = make_link(1, dialed=True, max_streams=0)
    down = make_link(2)
    streams = Streams(port)
    streams.on_message(down, _open(1), 0.0)
    assert port.sent_on(down) == [Reset(stream=1, status=503, reason="next hop busy")]
    assert (len(streams), down.peer_streams) == (0, 0)


def test_deadlines_rearm_on_activity_then_time_out() -> None:
    port = FakePort(limits=Limits(stream_window=WINDOW), timeouts=Timeouts(stream_idle_timeout=5))
    up = make_link(1, dialed=True)
    port.routes[TARGET] = up
    streams = Streams(port)
    waiting = streams.open_request(TARGET, "GET", "/f", (), 0.0)
    idle = streams.open_request(TARGET, "GET", "/f", (), 0.0)
    streams.on_message(up, Response(stream=3, status=200, headers=()), 1.0)
    streams.on_timer(idle, 30.0)  # idle since 1.0 for longer than 5 s
    streams.on_timer(waiting, 29.0)  # early: re-armed at its head deadline
    assert port.timers[_timer(waiting)] == 30.0
    streams.on_timer(waiting, 30.0)
    assert port.of(StreamReset) == [
        StreamReset(stream_id=idle, status=504, reason="stream idle too long"),
        StreamReset(stream_id=waiting, status=504, reason="timed out waiting for the response"),
    ]
    assert port.sent_on(up)[-2:] == [
        Reset(stream=3, status=504, reason="stream idle too long"),
        Reset(stream=1, status=504, reason="timed out waiting for the response"),
    ]
    assert port.traces == [f"stream {idle} timed out", f"stream {waiting} timed out"]


def test_wire_numbers_and_limits_on_open() -> None:
    port = _port(max_streams_per_link=1)
    port.routes[NODE_ID] = "self"
    down = make_link(2)
    streams = Streams(port)
    with pytest.raises(RemoteProtocolError, match="wrong parity"):
        streams.on_message(down, _open(2, target=NODE_ID), 0.0)
    streams.on_message(down, _open(3, target=NODE_ID), 0.0)
    with pytest.raises(RemoteProtocolError, match="reuses a number"):
        streams.on_message(down, _open(1, target=NODE_ID), 0.0)
    with pytest.raises(LimitExceeded, match="more than 1 open streams"):
        streams.on_message(down, _open(5, target=NODE_ID), 0.0)
    with pytest.raises(RemoteProtocolError, match="never opened"):
        streams.on_message(down, Credit(stream=9, credit=1), 0.0)
    streams.on_message(down, Credit(stream=1, credit=1), 0.0)  # an old number: dropped
    port.routes.clear()
    other = make_link(4)
    streams.on_message(other, _open(1), 0.0)
    assert port.sent_on(other) == [Reset(stream=1, status=404, reason=f"unknown node {TARGET}")]


def test_app_commands_on_closed_streams_are_no_ops_and_bad_ones_raise() -> None:
    port = _port()
    up = make_link(1, dialed=True)
    port.routes[TARGET] = up
    streams = Streams(port)
    with pytest.raises(LocalProtocolError, match="not a node id"):
        streams.open_request("nope", "GET", "/f", (), 0.0)
    sid = streams.open_request(TARGET, "GET", "/f", (), 0.0)
    with pytest.raises(LocalProtocolError, match="positive integer"):
        streams.grant_credit(sid, 0, 0.0)
    with pytest.raises(LocalProtocolError, match="exceed"):
        streams.grant_credit(sid, 2**31 - WINDOW, 0.0)
    assert streams.response_link(sid) is None  # an origin's response comes to us
    streams.reset_stream(sid, 0.0)
    assert port.sent_on(up)[-1] == Reset(stream=1, status=499, reason="cancelled")
    streams.grant_credit(sid, 1, 0.0)
    streams.respond(sid, 200, (), 0.0)
    streams.send_data(sid, b"x", 0.0)
    streams.end_stream(sid, 0.0)
    assert (port.sent_on(up), port.bulk, streams.response_link(sid)) == ([], [], None)
    assert streams.state(sid) is StreamState.CLOSED


def test_a_hub_taking_content_requests_serves_them_instead_of_relaying() -> None:
    port = _port()
    port.takes_content = True
    up = make_link(1, dialed=True)
    down = make_link(2)
    port.routes[TARGET] = up
    streams = Streams(port)
    content = f"/{TARGET}/sha1/{'ab' * 20}"
    opened = [
        Open(stream=1, target=TARGET, method="GET", path=content, headers=(), credit=8),
        Open(stream=3, target=TARGET, method="HEAD", path=content, headers=(), credit=8),
    ]
    for message in opened:
        streams.on_message(down, message, 0.0)
    assert [(e.method, e.path) for e in port.of(RequestReceived)] == [
        ("GET", content),
        ("HEAD", content),
    ]
    assert port.sent_on(up) == []
    # Anything else is relayed: other methods, paths, a suffix, another node's path.
    relayed = [
        Open(stream=5, target=TARGET, method="POST", path=content, headers=(), credit=8),
        Open(stream=7, target=TARGET, method="GET", path=f"{content}/chunks", headers=(), credit=8),
        Open(
            stream=9, target=TARGET, method="GET", path=f"/{TARGET}/sha1/xyz", headers=(), credit=8
        ),
        Open(
            stream=11,
            target=TARGET,
            method="GET",
            path=f"/{NODE_ID}/sha1/{'ab' * 20}",
            headers=(),
            credit=8,
        ),
        Open(
            stream=13,
            target=TARGET,
            method="GET",
            path=f"/{TARGET}/download/{'ab' * 20}",
            headers=(),
            credit=8,
        ),
    ]
    for message in relayed:
        streams.on_message(down, message, 0.0)
    assert len(port.sent_on(up)) == len(relayed)
    assert len(port.of(RequestReceived)) == 2
