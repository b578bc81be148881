"""Configuration validation, the small value types, the drain helper and timers."""

from __future__ import annotations

from typing import Any

import pytest

from kbproto import (
    Dial,
    Hangup,
    HubConfig,
    HubCore,
    Limits,
    LinkId,
    ProtocolError,
    RemoteProtocolError,
    SeededIdSource,
    ShareConfig,
    ShareCore,
    Timeouts,
    Transmit,
    drain,
)
from kbproto.auth import node_id_from_public_pem
from kbproto.events import ChildJoined, LinkClosed
from kbproto.messages import Open
from kbproto.messages import ShareIndexUpdate as ShareUpdate
from kbproto.timers import Deadlines
from kbproto.trace import ListTraceSink
from tests.helpers import CryptoVerifier, Ed25519Signer, Net, hub_update, make_placement, sha1_of


def _wrong(config: object) -> Any:
    """Hide a deliberately wrong config type from mypy."""
    return config


@pytest.mark.parametrize(
    "kwargs",
    [
        {"data_chunk": 0},
        {"data_chunk": True},
        {"max_control_frame": 1000},
        {"max_control_frame": 2 << 20},
        {"data_chunk": 1024 * 1024 + 1},
        {"stream_window": 2**31},
        {"index_batch_bytes": 600_000},
        {"max_streams_per_link": 70000},
    ],
)
def test_limits_validation(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"Limits|must|at most"):
        Limits(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"heartbeat_interval": 0},
        {"heartbeat_interval": "1"},
        {"heartbeat_interval": 40.0},
        {"reconnect_min": 100.0},
    ],
)
def test_timeouts_validation(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"Timeouts|must"):
        Timeouts(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": 1},
        {"name": "n", "listen_url": "u" * 3000},
        {"name": "n", "parent_url": ""},
        {"name": "n", "parent_passcode": 1},
        {"name": "n", "passcode": 1},
    ],
)
def test_hub_config_validation(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must"):
        HubConfig(**kwargs)


def test_share_config_validation_and_core_types() -> None:
    with pytest.raises(ValueError, match="must"):
        ShareConfig(name="n", owner="o" * 5000)
    signer = Ed25519Signer(1)
    with pytest.raises(TypeError):
        HubCore(
            _wrong(ShareConfig(name="x")),
            signer=signer,
            verifier=CryptoVerifier(),
            ids=SeededIdSource(1),
        )
    with pytest.raises(TypeError):
        ShareCore(_wrong(HubConfig(name="x")), signer=signer, ids=SeededIdSource(1))


def test_actions_validate() -> None:
    with pytest.raises(ValueError, match="byte"):
        Transmit(link_id=LinkId(1), data=b"")
    with pytest.raises(ValueError, match="address"):
        Dial(address="")
    assert Hangup(link_id=LinkId(1), reason="r").reason == "r"


def test_protocol_error_is_abstract() -> None:
    with pytest.raises(TypeError, match="abstract"):
        ProtocolError("x")
    assert RemoteProtocolError("x").reply_hint == "x"
    assert RemoteProtocolError("x", "hint").reply_hint == "hint"


def test_deadlines() -> None:
    deadlines: Deadlines[str] = Deadlines()
    deadlines.set("a", 5.0)
    deadlines.set("a", 5.0)  # unchanged: no new heap entry
    deadlines.set("b", 1.0)
    deadlines.set("b", 3.0)  # re-armed later: the old entry goes stale
    assert len(deadlines) == 2
    assert "a" in deadlines
    assert deadlines.get("b") == 3.0
    assert deadlines.earliest() == 3.0
    deadlines.cancel("b")
    deadlines.cancel("nope")
    assert deadlines.earliest() == 5.0
    assert deadlines.pop_next_due(4.9) is None
    assert deadlines.pop_next_due(5.0) == "a"
    assert deadlines.pop_next_due(5.0) is None
    assert deadlines.earliest() is None
    for i in range(200):  # many re-arms: the heap is compacted, order kept
        deadlines.set("c", float(i))
    deadlines.set("d", 999.0)
    deadlines.set("e", 2.0)
    deadlines.cancel("e")  # cancelled while due: never returned
    assert deadlines.pop_next_due(1000.0) == "c"
    assert deadlines.pop_next_due(1000.0) == "d"
    assert deadlines.pop_next_due(1000.0) is None


def test_drain_hands_events_first_and_returns_actions_in_order() -> None:
    trace = ListTraceSink()
    hub = HubCore(
        HubConfig(name="h"),
        signer=Ed25519Signer(1),
        verifier=CryptoVerifier(),
        ids=SeededIdSource(1),
        trace=trace,
    )
    hub.start(0.0)
    hub.link_opened(LinkId(7), 0.0)
    hub.receive_data(LinkId(7), b"\x09", 0.0)
    seen: list[object] = []
    drained = drain(hub, seen.append)
    assert [type(a) for a in drained.actions] == [Transmit]  # the challenge; 1 byte is no frame
    hub.receive_data(LinkId(7), b"\x09\x09\x09\x09\x09", 0.0)
    drained = drain(hub, seen.append)
    assert isinstance(seen[-1], LinkClosed)
    assert [type(a) for a in drained.actions] == [Transmit, Hangup]
    assert drained.timer is None
    assert any(r.category == "error" for r in trace.records)
    assert drain(hub).actions == ()


def test_outbox_splits_large_output_into_several_transmits() -> None:
    limits = Limits(transmit_bytes=1000, index_batch_bytes=500)
    net = Net()
    net.add_hub("H")
    files = {f"file{i}": str(i).encode() for i in range(100)}
    net.add_share("S", parent="H", files=files, limits=limits)
    sizes = [len(data) for _, data in net.transmitted["S"]]
    assert max(sizes) <= 1000 + 600
    assert net.cores["H"].content_count() == 100  # type: ignore[union-attr]


def test_request_back_down_the_branch_it_came_from_is_refused() -> None:
    net = Net()
    hub = net.add_hub("H")
    peer = net.connect_raw("H")
    peer.join_as_hub()
    from kbproto.messages import Reset

    below = Ed25519Signer(4242)
    peer.send(hub_update(0, reset=True, nodes=(make_placement(below, peer.node_id),)))
    below_id = node_id_from_public_pem(below.public_pem)
    assert hub.knows_node(below_id)
    peer.send(Open(stream=1, target=below_id, method="GET", path="/", headers=(), credit=1))
    assert peer.of(Reset) == [Reset(stream=1, status=404, reason=f"unknown node {below_id}")]


def test_find_limited_to_the_hub_itself_does_not_go_up() -> None:
    net = Net()
    net.add_hub("A")
    hub = net.add_hub("B", parent="A")
    hub.find("0" * 40, net.now, share_id=hub.node_id)
    net.pump()
    from kbproto.events import LookupFailed

    assert net.of("B", LookupFailed)[0].reason == "not found"
    assert net.of("A", ChildJoined)
    assert hub.link_ids() != ()


def test_share_index_rejects_bad_entries_and_handles_duplicates() -> None:
    from kbproto import LocalProtocolError

    net = Net()
    net.add_hub("H")
    share = net.add_share("S", parent="H")
    sha = "ab" * 20
    for args in (("zz", "p", 1), (sha, "", 1), (sha, "a\x00", 1), (sha, "p", -1), (sha, "p", True)):
        with pytest.raises(LocalProtocolError):
            share.put_file(*args, net.now)
    for path in ("c", "b", "a"):
        share.put_file(sha, path, 1, net.now)
    share.remove_file("b", net.now)  # three paths -> two: still a set
    share.remove_file("a", net.now)  # two -> one
    net.pump()
    assert share.lookup_local(sha) == ("c", 1)
    share.set_files([("cd" * 20, "d", 2)], net.now)  # drops "c"
    net.pump()
    assert share.lookup_local(sha) is None
    assert net.cores["H"].content_count() == 1  # type: ignore[union-attr]
    assert share.pending_bytes(share.parent_link) == 0  # type: ignore[arg-type]


def test_same_content_and_nodes_under_two_children() -> None:
    net = Net()
    hub = net.add_hub("H")
    sha = "ab" * 20
    below = Ed25519Signer(4242)
    node = node_id_from_public_pem(below.public_pem)
    peers = [net.connect_raw("H", seed=s) for s in (1, 2)]
    for stamp, peer in enumerate(peers, start=1):
        peer.join_as_hub()
        # The node moved from the first child hub to the second: a newer placement.
        placed = make_placement(below, peer.node_id, stamp=stamp)
        peer.send(hub_update(0, reset=True, content=(sha,), nodes=(placed,)))
        peer.send(hub_update(1, content=(sha,), nodes=(placed,)))
    assert hub.content_count() == 1
    assert hub.knows_node(node)
    # The older placement lost and was forgotten: the first child dropping it changes
    # nothing, and re-sending it does not win the node back.
    peers[0].send(hub_update(2, content_drop=(sha,), nodes_drop=(node,)))
    peers[0].send(hub_update(3, nodes=(make_placement(below, peers[0].node_id, stamp=1),)))
    assert hub.content_count() == 1
    assert hub.knows_node(node)
    net.cores["H"].receive_eof(peers[1].link, net.now)
    net.pump()
    assert hub.content_count() == 0
    assert not hub.knows_node(node)


def test_same_content_on_two_shares_survives_a_path_change() -> None:
    net = Net()
    hub = net.add_hub("H")
    one = net.add_share("S1", parent="H", files={"a": b"x"})
    net.add_share("S2", parent="H", files={"b": b"x"})
    one.put_file(sha1_of(b"x"), "a2", 1, net.now)
    one.remove_file("a", net.now)
    net.pump()
    hub.find(sha1_of(b"x"), net.now)
    net.pump()
    from kbproto.events import LookupResolved

    assert sorted(r.path for r in net.of("H", LookupResolved)[0].results) == ["a2", "b"]
    net.crash("S2")
    assert hub.content_count() == 1


def test_frames_after_a_goodbye_in_the_same_chunk_are_ignored() -> None:
    from kbproto.codec import encode
    from kbproto.messages import Error, Ping

    net = Net()
    net.add_hub("H")
    peer = net.connect_raw("H")
    peer.join()
    peer.send_bytes(encode(Error(code="shutdown", reason="bye")) + encode(Ping()))
    assert net.of("H", LinkClosed)[0].reason == "peer closed the link: bye"


def test_drain_without_a_handler_drops_events() -> None:
    hub = HubCore(
        HubConfig(name="h"),
        signer=Ed25519Signer(1),
        verifier=CryptoVerifier(),
        ids=SeededIdSource(1),
    )
    hub.start(0.0)
    hub.link_opened(LinkId(1), 0.0)
    hub.receive_eof(LinkId(1), 0.0)
    drained = drain(hub)
    assert [type(a) for a in drained.actions] == [Transmit, Hangup]
    assert hub.next_event() is None


def test_root_hub_request_to_unknown_node_fails_at_once() -> None:
    from kbproto.events import StreamReset

    net = Net()
    hub = net.add_hub("H")
    sid = hub.open_request("ffffffffffff", "GET", "/x", now=net.now)
    net.pump()
    assert net.of("H", StreamReset) == [
        StreamReset(stream_id=sid, status=404, reason="unknown node ffffffffffff")
    ]


def test_relay_refuses_when_the_next_hop_is_full() -> None:
    from kbproto.events import StreamReset

    net = Net()
    net.add_hub("H")
    origin = net.add_share("T", parent="H")
    peer = net.connect_raw("H")
    peer.join()  # announces max_streams=8
    target = peer.info().node_id
    for i in range(9):
        origin.open_request(target, "GET", f"/{i}", now=net.now)
    net.pump()
    (reset,) = net.of("T", StreamReset)
    assert (reset.status, reset.reason) == (503, "next hop busy")


def test_link_loss_fails_only_its_own_streams_and_finds() -> None:
    from kbproto.events import LookupFailed, StreamReset
    from kbproto.messages import HubIndexUpdate

    net = Net()
    hub = net.add_hub("H")
    peers = [net.connect_raw("H", seed=s) for s in (1, 2)]
    for peer in peers:
        peer.join(info=peer.info(node_type="hub", confirm_share=""))
        peer.send(
            HubIndexUpdate(
                seq=0,
                reset=True,
                content_put=("ab" * 20,),
                content_drop=(),
                nodes_put=(),
                nodes_drop=(),
            )
        )
        hub.open_request(peer.info().node_id, "GET", "/", now=net.now)
    hub.find("ab" * 20, net.now)
    # A find from the first peer that waits on the second.
    from kbproto.messages import Find

    peers[0].send(Find(query=0, sha1="ab" * 20, share_id=None, up=True, ttl_ms=1000))
    net.pump()
    hub.receive_eof(peers[0].link, net.now)
    net.pump()
    assert len(net.of("H", StreamReset)) == 1
    assert hub.open_streams() == 1
    assert not net.of("H", LookupFailed)  # still waiting for the second peer
    hub.receive_eof(peers[1].link, net.now)
    net.pump()
    assert net.of("H", LookupFailed)[0].reason == "not found"
    assert hub.pending_lookups() == 0
    assert hub.open_streams() == 0


def test_peer_find_limit_skips_the_branch() -> None:
    from kbproto.events import LookupFailed
    from kbproto.messages import HubIndexUpdate

    net = Net()
    hub = net.add_hub("H")
    peer = net.connect_raw("H")
    peer.join(info=peer.info(node_type="hub", confirm_share=""))  # max_lookups=8
    peer.send(
        HubIndexUpdate(
            seq=0,
            reset=True,
            content_put=("ab" * 20,),
            content_drop=(),
            nodes_put=(),
            nodes_drop=(),
        )
    )
    for _ in range(9):
        hub.find("ab" * 20, net.now)
    net.pump()
    assert [e.reason for e in net.of("H", LookupFailed)] == ["not found"]


def test_a_direct_join_takes_a_node_from_a_stale_claim_for_good() -> None:
    net = Net()
    hub = net.add_hub("H")
    upper = net.connect_raw("H", seed=1)
    upper.join_as_hub()
    lower = net.connect_raw("H", seed=2)
    lower_id = lower.info().node_id
    # The first child hub still reports the second node below it (a stale view: the
    # node's old placement under it)...
    stale = make_placement(lower.signer, upper.node_id, stamp=1)
    upper.send(hub_update(0, reset=True, nodes=(stale,)))
    assert hub.knows_node(lower_id)
    # ...while the node joins directly (it moved), with a newer placement.
    lower.join(stamp=5)
    lower.send(ShareUpdate(seq=0, reset=True, put=(("ab" * 20, "p", 1),), drop=()))
    upper.send(hub_update(1, content=("ab" * 20,)))
    hub.receive_eof(lower.link, net.now)
    net.pump()
    # The stale claim was forgotten when the node joined, and its stamp is older than
    # the one the hub remembers: sent again, it is refused.
    assert not hub.knows_node(lower_id)
    upper.send(hub_update(2, nodes=(stale,)))
    assert not hub.knows_node(lower_id)
    assert hub.content_count() == 1
    hub.receive_eof(upper.link, net.now)
    net.pump()
    assert hub.content_count() == 0


def test_the_package_lists_its_lazily_loaded_names() -> None:
    import kbproto

    names = dir(kbproto)
    assert {"HubCore", "ShareCore", "Limits"} <= set(names)
    assert names == sorted(names)
