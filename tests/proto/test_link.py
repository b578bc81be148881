"""Joining, refusals, heartbeats and per-link error isolation, with real cores."""

from __future__ import annotations

import dataclasses

import pytest

from kbproto import (
    Dial,
    Hangup,
    LinkId,
    LocalProtocolError,
    SeededIdSource,
    ShareConfig,
    ShareCore,
    Timeouts,
)
from kbproto.codec import decode, encode
from kbproto.events import ChildJoined, JoinRefused, LinkClosed, ParentConnected
from kbproto.framing import KIND_CONTROL, FrameBuffer, encode_frame
from kbproto.ids import NodeId
from kbproto.messages import Error, Ping, Welcome
from tests.helpers import FAST, Ed25519Signer, Net, RsaSigner


def test_share_joins_and_parent_info_is_recorded() -> None:
    net = Net()
    hub = net.add_hub("H")
    share = net.add_share("S", parent="H")
    (joined,) = net.of("H", ChildJoined)
    assert joined.info.node_id == share.node_id
    assert joined.info.node_type == "leaf"
    (connected,) = net.of("S", ParentConnected)
    assert connected.info == hub.info
    assert share.parent_info == hub.info
    assert share.parent_link is not None
    assert [info.name for _, info in hub.children()] == ["S"]
    assert hub.knows_node(share.node_id)


def test_legacy_rsa_key_joins() -> None:
    net = Net()
    net.add_hub("H")
    share = net.add_share("S", parent="H", signer=RsaSigner(1))
    assert net.of("S", ParentConnected)
    assert share.info.public_key.startswith("-----BEGIN RSA PUBLIC KEY-----")


def test_wrong_passcode_is_refused_with_one_clear_reason() -> None:
    net = Net()
    net.add_hub("H", passcode="secret")
    net.add_share("S", parent="H", parent_passcode="wrong")
    (refused,) = net.of("S", JoinRefused)
    assert refused.reason == "incorrect passcode for node S"
    closed = net.of("S", LinkClosed)
    assert closed[0].role == "parent"
    hub_closed = net.of("H", LinkClosed)
    assert hub_closed[0].role == "pending"
    assert hub_closed[0].reason == "incorrect passcode for node S"


def test_right_passcode_joins() -> None:
    net = Net()
    net.add_hub("H", passcode="secret")
    net.add_share("S", parent="H", parent_passcode="secret")
    assert net.of("S", ParentConnected)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"scientific_research": "no"}, "scientific_research must be 'yes'"),
        ({"confirm_share": "no"}, "confirm_share must be 'yes' for a share"),
        ({"node_id": NodeId("0123456789ab")}, "does not match its public key"),
    ],
)
def test_registration_checks(changes: dict[str, str], reason: str) -> None:
    net = Net()
    net.add_hub("H")
    peer = net.connect_raw("H")
    peer.join(info=peer.info(**changes))
    (error,) = peer.of(Error)
    assert error.code == "refused"
    assert reason in error.reason
    assert peer.closed
    assert reason in net.of("H", LinkClosed)[0].reason


def test_hub_child_needs_no_share_confirmation() -> None:
    net = Net()
    net.add_hub("H")
    peer = net.connect_raw("H")
    peer.join(info=peer.info(node_type="hub", confirm_share=""))
    assert peer.of(Welcome)


def test_bad_signature_is_refused() -> None:
    net = Net()
    net.add_hub("H")
    peer = net.connect_raw("H")
    peer.join(signer=Ed25519Signer(999))  # signed with another key than the one claimed
    assert "bad signature" in peer.of(Error)[0].reason


def test_unknown_scheme_is_refused() -> None:
    net = Net()
    net.add_hub("H")
    peer = net.connect_raw("H")
    message = peer.register_message()
    forged = dataclasses.replace(
        message, placement=dataclasses.replace(message.placement, scheme="dsa")
    )
    peer.send(forged)
    assert "unknown signature scheme" in peer.of(Error)[0].reason


def test_placements_are_stamped_from_the_wall_clock_and_always_grow() -> None:
    net = Net()
    net.add_hub("H")
    share = net.add_share("S", parent="H", start=False)
    net.now = 5.0
    share.start(net.now, wall_ms=1_700_000_000_000)
    net.pump()
    (joined,) = net.of("H", ChildJoined)
    net.now = 7.5
    net.cut("H", "S")
    net.advance(10.0)  # the share redials
    placements = [
        m.placement
        for _, data in net.transmitted["S"]
        for m in _decoded(data)
        if hasattr(m, "placement")
    ]
    assert [p.stamp for p in placements] == [1_700_000_000_000, placements[1].stamp]
    # Wall clock at the first join plus the monotonic time since (2.5 s and more).
    assert placements[1].stamp >= 1_700_000_002_500
    assert joined.info == share.info


def _decoded(data: bytes) -> list[object]:
    frames = FrameBuffer()
    frames.feed(data)
    out: list[object] = []
    while (frame := frames.next_frame()) is not None:
        out.append(decode(*frame))
    return out


def test_a_registration_for_another_hub_is_refused() -> None:
    net = Net()
    net.add_hub("H")
    peer = net.connect_raw("H")
    message = peer.register_message()
    # Signed for the right nonce, but naming another parent (relayed from another hub).
    elsewhere = dataclasses.replace(message.placement, parent=NodeId("0123456789ab"))
    peer.send(dataclasses.replace(message, placement=elsewhere))
    assert "does not answer this hub's challenge" in peer.of(Error)[0].reason


def test_replayed_registration_fails_on_a_new_link() -> None:
    net = Net()
    net.add_hub("H")
    first = net.connect_raw("H")
    recorded = first.register_message()
    first.send(recorded)
    assert first.of(Welcome)
    second = net.connect_raw("H")
    second.send(recorded)  # same bytes, but this link's challenge is different
    assert "does not answer this hub's challenge" in second.of(Error)[0].reason
    assert not first.closed
    # Re-signed by someone else for the new nonce: the signature fails.
    third = net.connect_raw("H")
    third.join(info=first.info(), signer=Ed25519Signer(999))
    assert "bad signature" in third.of(Error)[0].reason


def test_duplicate_live_child_is_refused() -> None:
    net = Net()
    net.add_hub("H")
    first = net.connect_raw("H", seed=5)
    first.join()
    second = net.connect_raw("H", seed=5)
    second.join()
    assert "already connected" in second.of(Error)[0].reason
    assert not first.closed


def test_node_cannot_join_itself() -> None:
    net = Net()
    net.add_hub("H", key=42)
    peer = net.connect_raw("H", seed=42)
    peer.join(info=peer.info(node_type="hub", confirm_share=""))
    assert "cannot join itself" in peer.of(Error)[0].reason


def test_children_limit() -> None:
    from tests.helpers import SMALL

    limits = type(SMALL)(max_children=2, stream_window=4096, data_chunk=1024)
    net = Net()
    net.add_hub("H", limits=limits)
    for seed in (1, 2):  # exactly max_children are admitted
        early = net.connect_raw("H", seed=seed)
        early.join()
        assert early.of(Welcome), seed
    late = net.connect_raw("H", seed=3)
    late.join()
    assert "hub is full" in late.of(Error)[0].reason
    assert not late.of(Welcome)


def test_share_refuses_incoming_links() -> None:
    net = Net()
    net.add_share("S")
    core = net.cores["S"]
    core.link_opened(LinkId(50), net.now)
    actions = []
    while (action := core.next_action()) is not None:
        actions.append(action)
    assert isinstance(actions[-1], Hangup)
    assert "accepts no children" in actions[-1].reason


def test_malformed_frame_closes_only_that_link() -> None:
    net = Net()
    net.add_hub("H")
    good = net.add_share("S", parent="H")
    bad = net.connect_raw("H")
    bad.send_bytes(encode_frame(KIND_CONTROL, b"{not json"))
    assert bad.of(Error)[0].code == "protocol"
    assert bad.closed
    assert net.cores["H"].knows_node(good.node_id)  # type: ignore[union-attr]
    assert len(net.cores["H"].children()) == 1  # type: ignore[union-attr]


def test_oversized_frame_is_a_limit_error() -> None:
    net = Net()
    net.add_hub("H")
    bad = net.connect_raw("H")
    bad.send_bytes(b"\x04\x01\xff\xff\xff\xff")
    (error,) = bad.of(Error)
    assert error.code == "limit"
    assert "cap" in error.reason


def test_out_of_order_message_is_a_protocol_error() -> None:
    net = Net()
    net.add_hub("H")
    bad = net.connect_raw("H")
    bad.send(Welcome(info=bad.info()))  # only a parent may send Welcome
    assert "unexpected welcome in link state accepted" in bad.of(Error)[0].reason


def test_peer_error_frame_closes_the_link() -> None:
    net = Net()
    net.add_hub("H")
    peer = net.connect_raw("H")
    peer.join()
    peer.send(Error(code="shutdown", reason="bye"))
    closed = net.of("H", LinkClosed)[-1]
    assert closed.reason == "peer closed the link: bye"
    assert closed.role == "child"


def test_heartbeats_keep_a_quiet_link_alive() -> None:
    net = Net()
    net.add_hub("H")
    net.add_share("S", parent="H")
    net.advance(60.0)
    assert not net.of("S", LinkClosed)
    assert not net.of("H", LinkClosed)


def test_nodes_ping_as_often_as_the_peer_s_heartbeat_timeout_needs() -> None:
    # The hub drops a link after 3 s of silence; the share would ping only every 20 s
    # and time out after 60 s. Each side announces its timeout in the handshake and
    # the other pings at least three times within it, so neither drops the link.
    net = Net()
    net.add_hub("H")  # FAST: ping every 1 s, timeout 3 s
    slow = Timeouts(
        heartbeat_interval=20.0,
        heartbeat_timeout=60.0,
        handshake_timeout=2.0,
        lookup_timeout=2.0,
        request_timeout=5.0,
        stream_idle_timeout=10.0,
        reconnect_min=0.5,
        reconnect_max=4.0,
    )
    net.add_share("S", parent="H", timeouts=slow)
    pings_before = _pings_sent(net, "S")
    net.advance(60.0)
    assert not net.of("S", LinkClosed)
    assert not net.of("H", LinkClosed)
    # Every 1 s (a third of the hub's 3 s), not every 20 s.
    assert _pings_sent(net, "S") - pings_before >= 59


def test_a_peer_announcing_a_tiny_heartbeat_timeout_cannot_make_us_ping_in_a_loop() -> None:
    net = Net()
    net.add_hub("H")
    peer = net.connect_raw("H")
    message = peer.register_message()
    peer.send(dataclasses.replace(message, heartbeat_timeout_ms=1))
    pings_before = len(peer.of(Ping))
    net.advance(2.5)  # within the hub's own 3 s heartbeat timeout: still joined
    assert not net.of("H", LinkClosed)
    # At most one ping per 0.5 s (the floor), not one per 0.33 ms.
    assert len(peer.of(Ping)) - pings_before <= 6


def _pings_sent(net: Net, name: str) -> int:
    """Ping frames node ``name`` has transmitted so far."""
    frames = FrameBuffer()
    for _, data in net.transmitted[name]:
        frames.feed(data)
    count = 0
    while (frame := frames.next_frame()) is not None:
        count += isinstance(decode(*frame), Ping)
    return count


def test_half_open_link_is_detected_by_both_sides() -> None:
    net = Net()
    net.add_hub("H")
    share = net.add_share("S", parent="H")
    net.now = 10.0
    net.half_open("H", "S")
    net.advance(FAST.heartbeat_timeout + 0.01)
    (hub_side,) = net.of("H", LinkClosed)
    assert hub_side.timed_out
    assert hub_side.peer_id == share.node_id
    assert "no frame from peer for 3 s" in hub_side.reason
    assert net.of("S", LinkClosed)[0].timed_out
    # The share redials at once (new link, not half-open) and joins again.
    net.advance(FAST.reconnect_min)
    assert len(net.of("S", ParentConnected)) == 2
    assert net.cores["H"].knows_node(share.node_id)  # type: ignore[union-attr]


def test_silent_child_times_out_during_handshake() -> None:
    net = Net()
    net.add_hub("H")
    net.connect_raw("H")
    net.advance(FAST.handshake_timeout + 0.01)
    (closed,) = net.of("H", LinkClosed)
    assert closed.timed_out
    assert closed.reason == "handshake timed out"


def test_pings_do_not_extend_the_handshake() -> None:
    net = Net()
    net.add_hub("H")
    peer = net.connect_raw("H")
    peer.send(Ping())
    net.advance(FAST.handshake_timeout + 0.01)
    assert net.of("H", LinkClosed)[0].reason == "handshake timed out"


def test_reconnect_with_backoff_after_parent_loss() -> None:
    net = Net()
    net.add_hub("H")
    net.add_share("S", parent="H")
    net.cut("H", "S")
    assert net.of("S", LinkClosed)[0].role == "parent"
    net.advance(FAST.reconnect_min)
    assert len(net.of("S", ParentConnected)) == 2


def test_dial_failures_back_off_up_to_the_cap() -> None:
    net = Net()
    net.add_hub("H")
    net.dial_refused.add("H")
    core = ShareCore(
        ShareConfig(name="S", parent_url="http://H:3240", timeouts=FAST),
        signer=Ed25519Signer(3),
        ids=SeededIdSource(1),
    )
    core.start(0.0)
    assert core.next_action() == Dial(address="http://H:3240")
    times = []
    now = 0.0
    for _ in range(8):
        core.dial_failed(now, "refused")
        timer = core.get_timer()
        assert timer is not None
        times.append(timer - now)
        now = timer
        core.handle_timer(now)
        assert isinstance(core.next_action(), Dial)
    assert all(0.25 <= delay <= FAST.reconnect_max for delay in times)
    assert times[-1] >= FAST.reconnect_max / 2  # reached the cap (jitter is 0.5..1)


def test_misuse_raises_local_errors() -> None:
    core = ShareCore(
        ShareConfig(name="S", parent_url="http://H:3240"),
        signer=Ed25519Signer(3),
        ids=SeededIdSource(1),
    )
    with pytest.raises(LocalProtocolError):
        core.link_opened(LinkId(1), 0.0, dialed=True)  # no Dial pending
    with pytest.raises(LocalProtocolError):
        core.dial_failed(0.0, "x")
    core.start(0.0)
    with pytest.raises(LocalProtocolError):
        core.start(0.0)
    core.link_opened(LinkId(1), 0.0, dialed=True)
    with pytest.raises(LocalProtocolError):
        core.link_opened(LinkId(1), 0.0)
    with pytest.raises(LocalProtocolError):
        core.close_link(LinkId(9), 0.0, "x")
    core.receive_data(LinkId(9), b"ignored", 0.0)  # a link we never had: ignored
    core.receive_eof(LinkId(9), 0.0)
    assert core.pending_bytes(LinkId(9)) == 0


def test_close_link_by_app_sends_shutdown() -> None:
    net = Net()
    net.add_hub("H")
    peer = net.connect_raw("H")
    peer.join()
    hub = net.cores["H"]
    hub.close_link(peer.link, net.now, "maintenance")
    net.pump()
    assert peer.of(Error)[-1] == Error(code="shutdown", reason="maintenance")
    assert peer.closed


def test_ping_frame_bytes_are_pinned() -> None:
    assert encode(Ping()) == b'\x04\x01\x00\x00\x00\x0f{"type":"ping"}'


def test_with_default_timeouts_a_child_redials_within_five_seconds_however_long_the_outage() -> (
    None
):
    # A hub that was down for minutes is rejoined within seconds of its return: the
    # default backoff never waits longer than 5 s between two dials.
    core = ShareCore(
        ShareConfig(name="S", parent_url="http://H:3240"),
        signer=Ed25519Signer(3),
        ids=SeededIdSource(1),
    )
    core.start(0.0)
    assert core.next_action() == Dial(address="http://H:3240")
    now = 0.0
    gaps = []
    while now < 600.0:  # ten minutes of outage
        core.dial_failed(now, "connection refused")
        timer = core.get_timer()
        assert timer is not None
        gaps.append(timer - now)
        now = timer
        core.handle_timer(now)
        assert isinstance(core.next_action(), Dial)
    assert max(gaps) <= 5.0
    assert len(gaps) < 600 / 2.5 + 8  # and not much more often than every 2.5 s
