"""Proxy streams: flow control with a small window, resets at every hop, limits."""

from __future__ import annotations

import pytest

from kbproto import Limits, LocalProtocolError, StreamId, Transmit
from kbproto.codec import decode
from kbproto.events import (
    RequestReceived,
    ResponseData,
    ResponseEnded,
    ResponseStarted,
    StreamReset,
    StreamWritable,
)
from kbproto.framing import FrameBuffer
from kbproto.ids import NodeId
from kbproto.messages import Credit, Data, End, Error, Open, Reset, Response
from kbproto.state import StreamRole
from tests.helpers import FAST, SMALL, Net, file_server

DATA = bytes(i % 251 for i in range(50_000))  # larger than the 4096-byte window


def _chain(chunking: bool = True) -> Net:
    """T (origin) -- A -- B -- C -- S (target): three hubs in between."""
    net = Net(chunking=chunking)
    net.add_hub("A")
    net.add_hub("B", parent="A")
    net.add_hub("C", parent="B")
    net.add_share("S", parent="C", files={"f.dat": DATA})
    net.add_share("T", parent="A")
    net.apps["S"] = file_server({"f.dat": DATA})
    return net


def _open(net: Net, origin: str = "T", path: str = "f.dat") -> StreamId:
    target = net.cores["S"].node_id
    sid = net.cores[origin].open_request(target, "GET", f"/{target}/download/{path}", now=net.now)
    net.pump()
    return sid


def _idle(net: Net) -> None:
    for name, core in net.cores.items():
        assert core.open_streams() == 0, name


def test_download_through_three_hubs_with_bounded_buffers() -> None:
    net = _chain()
    got: dict[int, bytearray] = {}
    held: list[int] = []

    def slow_consumer(net: Net, name: str, event: object) -> None:
        if isinstance(event, ResponseData):
            got.setdefault(event.stream_id, bytearray()).extend(event.data)
            held.append(len(event.data))

    net.apps["T"] = slow_consumer
    sid = _open(net)
    # Without credit returns, at most one window reaches the origin, and every relay
    # holds at most one window for the stream.
    assert sum(held) <= SMALL.stream_window
    for hub in ("A", "B", "C"):
        assert net.cores[hub].max_buffered_bytes() <= SMALL.stream_window
    while len(got.get(sid, b"")) < len(DATA) and held:
        amount = sum(held)
        held.clear()
        net.cores["T"].grant_credit(sid, amount, net.now)
        net.pump()
        for hub in ("A", "B", "C"):
            assert net.cores[hub].max_buffered_bytes() <= SMALL.stream_window
    assert bytes(got[sid]) == DATA
    assert net.of("T", ResponseEnded)
    _idle(net)


def test_control_messages_are_not_stuck_behind_data() -> None:
    net = Net()
    net.add_hub("A")
    share = net.add_share("S", parent="A")
    net.cores["A"].open_request(share.node_id, "GET", "/p", now=net.now)
    net.pump()
    (request,) = net.of("S", RequestReceived)
    share.respond(request.stream_id, 200, now=net.now)
    share.send_data(request.stream_id, b"x" * 4096, net.now)  # four bulk frames
    share.find("0" * 40, net.now)  # a control frame queued after them
    first = share.next_action()
    assert isinstance(first, Transmit)
    frames = []
    buffer = FrameBuffer()
    buffer.feed(first.data)
    while (frame := buffer.next_frame()) is not None:
        frames.append(decode(*frame))
    kinds = [type(m).__name__ for m in frames]
    assert kinds[:2] == ["Response", "Find"]
    assert kinds[2:] == ["Data"] * 4


def test_client_cancel_resets_every_hop() -> None:
    net = _chain()
    net.apps["T"] = lambda net, name, event: None  # never returns credit
    sid = _open(net)
    assert net.cores["T"].stream_role(sid) is StreamRole.ORIGIN
    net.cores["T"].reset_stream(sid, net.now, "client went away")
    net.pump()
    assert net.cores["T"].response_link(sid) is None  # closed
    (reset,) = net.of("S", StreamReset)
    assert reset.status == 499
    assert reset.reason == "client went away"
    _idle(net)
    net.cores["T"].grant_credit(sid, 10, net.now)  # closed: a no-op
    net.cores["T"].reset_stream(sid, net.now)


def test_link_loss_mid_download_fails_both_ends() -> None:
    net = _chain()
    net.apps["T"] = lambda net, name, event: None
    _open(net)
    net.cut("B", "C")
    (origin,) = net.of("T", StreamReset)
    assert origin.status == 502
    assert "lost" in origin.reason
    (target,) = net.of("S", StreamReset)
    assert target.status in (499, 502)
    _idle(net)


def test_origin_link_loss_resets_toward_the_target() -> None:
    net = _chain()
    net.apps["T"] = lambda net, name, event: None
    _open(net)
    net.cut("A", "T")
    assert net.of("S", StreamReset)[0].status == 499
    _idle(net)


def test_unknown_node_and_self_target() -> None:
    net = _chain()
    sid = net.cores["T"].open_request("ffffffffffff", "GET", "/x", now=net.now)
    net.pump()
    (reset,) = net.of("T", StreamReset)
    assert (reset.stream_id, reset.status) == (sid, 404)
    assert reset.reason == "unknown node ffffffffffff"
    with pytest.raises(LocalProtocolError, match="serve the request locally"):
        net.cores["T"].open_request(net.cores["T"].node_id, "GET", "/x", now=net.now)
    with pytest.raises(LocalProtocolError, match="bad request"):
        net.cores["T"].open_request(net.cores["S"].node_id, "get", "/x", now=net.now)
    with pytest.raises(LocalProtocolError, match="not a node id"):
        net.cores["T"].open_request("nope", "GET", "/x", now=net.now)
    assert net.cores["T"].can_route(net.cores["S"].node_id)


def test_unknown_node_below_a_hub_gets_404_from_the_hub() -> None:
    net = Net()
    net.add_hub("A")
    net.add_share("T", parent="A")
    sid = net.cores["T"].open_request("ffffffffffff", "GET", "/x", now=net.now)
    net.pump()
    assert net.of("T", StreamReset)[0] == StreamReset(
        stream_id=sid, status=404, reason="unknown node ffffffffffff"
    )
    assert not net.cores["A"].can_route("ffffffffffff")


def test_request_up_to_a_hub_and_head_only_response() -> None:
    net = Net()
    net.add_hub("A")
    net.add_share("T", parent="A")

    def hub_app(net: Net, name: str, event: object) -> None:
        if isinstance(event, RequestReceived):
            core = net.cores[name]
            assert event.capacity == SMALL.stream_window
            core.respond(event.stream_id, 204, (("x", "y"),), now=net.now)
            core.end_stream(event.stream_id, net.now)

    net.apps["A"] = hub_app
    sid = net.cores["T"].open_request(
        net.cores["A"].node_id, "HEAD", "/a/api/nodeinfo", now=net.now
    )
    net.pump()
    assert net.of("T", ResponseStarted) == [
        ResponseStarted(stream_id=sid, status=204, headers=(("x", "y"),))
    ]
    assert net.of("T", ResponseEnded) == [ResponseEnded(stream_id=sid)]


def test_target_misuse_and_writable_events() -> None:
    net = Net()
    net.add_hub("A")
    share = net.add_share("S", parent="A")
    sid = net.cores["A"].open_request(share.node_id, "GET", "/p", now=net.now)
    net.pump()
    (request,) = net.of("S", RequestReceived)
    served = request.stream_id
    assert share.stream_role(served) is StreamRole.TARGET
    assert share.response_link(served) == share.parent_link  # the response goes back up
    assert net.cores["A"].response_link(sid) is None  # A is the origin, not a target
    with pytest.raises(LocalProtocolError, match=r"send_data\(\) in target stream state awa"):
        share.send_data(served, b"x", net.now)
    with pytest.raises(LocalProtocolError, match=r"end_stream\(\) in target stream state awa"):
        share.end_stream(served, net.now)
    with pytest.raises(LocalProtocolError, match="bad response"):
        share.respond(served, 99, now=net.now)
    share.respond(served, 200, now=net.now)
    with pytest.raises(LocalProtocolError, match=r"respond\(\) in target stream state stream"):
        share.respond(served, 200, now=net.now)
    net.pump()
    share.send_data(served, b"", net.now)  # nothing to send: nothing queued
    assert share.next_action() is None
    assert share.send_capacity(served) == 4096
    with pytest.raises(LocalProtocolError, match="only 4096 of credit"):
        share.send_data(served, b"x" * 5000, net.now)
    with pytest.raises(LocalProtocolError, match=r"grant_credit\(\) in target stream state"):
        share.grant_credit(served, 1, net.now)
    with pytest.raises(LocalProtocolError, match="no such stream"):
        share.send_data(StreamId(999), b"x", net.now)
    share.send_data(served, b"x" * 4096, net.now)
    assert share.send_capacity(served) == 0
    net.pump()
    with pytest.raises(LocalProtocolError, match="positive"):
        net.cores["A"].grant_credit(sid, 0, net.now)
    with pytest.raises(LocalProtocolError, match="exceed"):
        net.cores["A"].grant_credit(sid, 2**31, net.now)
    net.cores["A"].grant_credit(sid, 100, net.now)
    net.pump()
    assert net.of("S", StreamWritable) == [StreamWritable(stream_id=served, capacity=100)]
    share.reset_stream(served, net.now, "disk error")
    net.pump()
    assert net.of("A", StreamReset) == [StreamReset(stream_id=sid, status=502, reason="disk error")]
    assert share.send_capacity(served) == 0
    share.respond(served, 200, now=net.now)  # closed: no-ops
    share.send_data(served, b"", net.now)
    share.end_stream(served, net.now)


def test_response_timeout_and_idle_timeout() -> None:
    net = _chain()
    net.apps["S"] = lambda net, name, event: None  # never answers
    net.apps["T"] = lambda net, name, event: None
    _open(net)
    net.advance(FAST.request_timeout + 0.01)
    assert net.of("T", StreamReset)[0].status == 504
    assert "waiting for the response" in net.of("T", StreamReset)[0].reason
    _idle(net)

    net2 = _chain()
    net2.apps["T"] = lambda net, name, event: None  # takes the first window, then stalls
    _open(net2)
    net2.advance(FAST.stream_idle_timeout + 1)
    assert net2.of("T", StreamReset)[0].reason == "stream idle too long"
    _idle(net2)


def test_open_stream_limits() -> None:
    limits = Limits(stream_window=4096, data_chunk=1024, max_open_streams=1)
    net = Net()
    net.add_hub("A", limits=limits)
    share = net.add_share("S", parent="A")
    net.add_share("T", parent="A", limits=limits)
    net.apps["S"] = lambda net, name, event: None
    net.cores["T"].open_request(share.node_id, "GET", "/1", now=net.now)
    second = net.cores["T"].open_request(share.node_id, "GET", "/2", now=net.now)
    net.pump()
    assert net.of("T", StreamReset)[0] == StreamReset(
        stream_id=second, status=503, reason="too many open streams"
    )
    net.cores["A"].open_request(share.node_id, "GET", "/3", now=net.now)
    net.pump()
    assert net.of("A", StreamReset)[0].status == 503


def test_peer_announced_stream_limit_is_respected() -> None:
    net = Net()
    net.add_hub("A")
    peer = net.connect_raw("A")
    peer.join()  # announces max_streams=8
    hub = net.cores["A"]
    sids = [hub.open_request(peer.info().node_id, "GET", f"/{i}", now=net.now) for i in range(9)]
    net.pump()
    assert len(peer.of(Open)) == 8
    assert net.of("A", StreamReset)[0] == StreamReset(
        stream_id=sids[8], status=503, reason="the next hop has too many open streams"
    )


def _joined_child_with_stream() -> tuple[Net, object, StreamId]:
    net = Net()
    net.add_hub("A")
    peer = net.connect_raw("A")
    peer.join()
    sid = net.cores["A"].open_request(peer.info().node_id, "GET", "/x", now=net.now)
    net.pump()
    return net, peer, sid


@pytest.mark.parametrize(
    ("messages", "needle"),
    [
        ([Data(stream=2, data=b"x")], "unexpected data in origin stream state awaiting_head"),
        ([End(stream=2)], "unexpected end in origin stream state awaiting_head"),
        (
            [
                Response(stream=2, status=200, headers=()),
                Response(stream=2, status=200, headers=()),
            ],
            "unexpected response in origin stream state streaming",
        ),
        (
            [Response(stream=2, status=200, headers=()), Data(stream=2, data=b"x" * 5000)],
            "only 4096 of credit",
        ),
        (
            [Credit(stream=2, credit=5)],
            "unexpected credit from the responder in origin stream state awaiting_head",
        ),
        ([Data(stream=4, data=b"x")], "never opened"),
        ([Data(stream=3, data=b"x")], "never opened"),
        (
            [
                Open(
                    stream=2,
                    target=NodeId("0123456789ab"),
                    method="GET",
                    path="/",
                    headers=(),
                    credit=1,
                )
            ],
            "wrong parity",
        ),
        (
            [
                Open(
                    stream=3,
                    target=NodeId("0123456789ab"),
                    method="GET",
                    path="/",
                    headers=(),
                    credit=1,
                ),
                Open(
                    stream=1,
                    target=NodeId("0123456789ab"),
                    method="GET",
                    path="/",
                    headers=(),
                    credit=1,
                ),
            ],
            "reuses a number",
        ),
    ],
)
def test_stream_protocol_errors_close_the_link(messages: list[object], needle: str) -> None:
    net, peer, _sid = _joined_child_with_stream()
    for message in messages:
        peer.send(message)  # type: ignore[attr-defined]
    assert needle in peer.of(Error)[0].reason  # type: ignore[attr-defined]
    assert net.of("A", StreamReset)[0].status == 502
    _idle(net)


def test_stale_frames_after_a_reset_are_ignored() -> None:
    net, peer, sid = _joined_child_with_stream()
    net.cores["A"].reset_stream(sid, net.now)
    net.pump()
    peer.send(Response(stream=2, status=200, headers=()))  # type: ignore[attr-defined]
    peer.send(Open(stream=1, target="ffffffffffff", method="GET", path="/", headers=(), credit=1))  # type: ignore[arg-type, attr-defined]
    peer.send(Credit(stream=1, credit=1))  # type: ignore[attr-defined]
    assert peer.of(Error) == []  # type: ignore[attr-defined]
    assert peer.of(Reset)[-1] == Reset(stream=1, status=404, reason="unknown node ffffffffffff")  # type: ignore[attr-defined]


def test_requester_credit_overflow_and_wrong_frames() -> None:
    net = Net()
    hub = net.add_hub("A")
    peer = net.connect_raw("A")
    peer.join()
    net.apps["A"] = lambda net, name, event: None
    peer.send(
        Open(stream=1, target=hub.node_id, method="GET", path="/", headers=(), credit=2**31 - 1)
    )
    peer.send(Credit(stream=1, credit=1))
    assert "over 2**31" in peer.of(Error)[0].reason
    peer2 = net.connect_raw("A", seed=5)
    peer2.join()
    peer2.send(Open(stream=1, target=hub.node_id, method="GET", path="/", headers=(), credit=10))
    peer2.send(Data(stream=1, data=b"x"))
    assert (
        "unexpected data from the requester in target stream state awaiting_head"
        in peer2.of(Error)[0].reason
    )


def test_requester_reset_reaches_the_target_app() -> None:
    net = Net()
    hub = net.add_hub("A")
    peer = net.connect_raw("A")
    peer.join()
    peer.send(Open(stream=1, target=hub.node_id, method="GET", path="/", headers=(), credit=10))
    (request,) = net.of("A", RequestReceived)
    peer.send(Reset(stream=1, status=499, reason="bye"))
    assert net.of("A", StreamReset) == [
        StreamReset(stream_id=request.stream_id, status=499, reason="bye")
    ]


def test_streams_per_link_limit() -> None:
    net = Net()
    hub = net.add_hub("A", limits=Limits(max_streams_per_link=1))
    peer = net.connect_raw("A")
    peer.join()
    peer.send(Open(stream=1, target=hub.node_id, method="GET", path="/", headers=(), credit=10))
    peer.send(Open(stream=3, target=hub.node_id, method="GET", path="/", headers=(), credit=10))
    assert peer.of(Error)[0].code == "limit"
