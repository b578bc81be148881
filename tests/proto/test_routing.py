"""Finds: local answers, up then down, share-limited, deadlines, limits, bad peers."""

from __future__ import annotations

import pytest

from kbproto import Limits, LocalProtocolError
from kbproto.auth import node_id_from_public_pem
from kbproto.events import LookupFailed, LookupResolved
from kbproto.ids import NodeId
from kbproto.messages import Error, Find, FindReply, FindResult, HubIndexUpdate, Message
from tests.helpers import FAST, Ed25519Signer, Net, hub_update, make_placement, sha1_of

X, Y = b"content x", b"content y"


def _tree() -> Net:
    """A over B1 (shares S1, S2) and B2 (share S3); share T directly under A."""
    net = Net(chunking=True)
    net.add_hub("A")
    net.add_hub("B1", parent="A")
    net.add_hub("B2", parent="A")
    net.add_share("S1", parent="B1", files={"x1": X})
    net.add_share("S2", parent="B1", files={"x2": X, "y": Y})
    net.add_share("S3", parent="B2", files={"x3": X})
    net.add_share("T", parent="A")
    return net


def _results(net: Net, name: str, share_id: str | None = None) -> dict[str, tuple[str, ...]]:
    net.cores[name].find(sha1_of(X), net.now, share_id=share_id)
    net.pump()
    event = net.events[name][-1]
    assert isinstance(event, LookupResolved | LookupFailed)
    if isinstance(event, LookupFailed):
        return {}
    names = {core.node_id: n for n, core in net.cores.items()}
    return {names[r.kbshare_id]: tuple(names[h[0]] for h in r.hops) for r in event.results}


def test_every_node_finds_every_holder_of_the_content() -> None:
    net = _tree()
    assert _results(net, "A") == {"S1": ("B1",), "S2": ("B1",), "S3": ("B2",)}
    assert _results(net, "B1") == {"S1": (), "S2": ()}  # found below: no trip up
    assert _results(net, "B2") == {"S3": ()}
    assert _results(net, "T") == {"S1": ("B1", "A"), "S2": ("B1", "A"), "S3": ("B2", "A")}
    assert _results(net, "S1") == {"S1": ()}  # a share answers for its own files


def test_find_climbs_out_of_a_branch_without_the_content() -> None:
    net = _tree()
    net.cores["S3"].find(sha1_of(Y), net.now)
    net.pump()
    (event,) = net.of("S3", LookupResolved)
    (result,) = event.results
    assert result.path == "y"
    names = {core.node_id: n for n, core in net.cores.items()}
    assert [names[h[0]] for h in result.hops] == ["B1", "A", "B2"]
    assert result.hops[-1][1] == "http://B2:3240"


def test_share_limited_find() -> None:
    net = _tree()
    s2 = net.cores["S2"].node_id
    assert _results(net, "T", share_id=s2) == {"S2": ("B1", "A")}
    assert _results(net, "A", share_id=s2) == {"S2": ("B1",)}
    assert _results(net, "S3", share_id=s2) == {"S2": ("B1", "A", "B2")}
    assert _results(net, "S2", share_id=s2) == {"S2": ()}
    t = net.cores["T"].node_id
    assert _results(net, "A", share_id=t) == {}  # T holds no copy: not found
    assert _results(net, "A", share_id="ffffffffffff") == {}


def test_lookup_failed_when_nothing_anywhere() -> None:
    net = _tree()
    net.cores["S1"].find("0" * 40, net.now)
    net.pump()
    assert net.of("S1", LookupFailed)[0].reason == "not found"
    assert all(core.pending_lookups() == 0 for core in net.cores.values())


def test_find_times_out_with_partial_results() -> None:
    net = _tree()
    net.half_open("A", "B2")
    net.cores["A"].find(sha1_of(X), net.now)
    net.pump()
    assert not net.of("A", LookupResolved)
    net.advance(FAST.lookup_timeout + 0.01)
    (event,) = net.of("A", LookupResolved)
    assert len(event.results) == 2  # B1's answer; B2 never answered


def test_find_times_out_with_nothing() -> None:
    net = Net()
    net.add_hub("A")
    peer = net.connect_raw("A")
    peer.join(info=peer.info(node_type="hub", confirm_share=""))
    peer.send(
        HubIndexUpdate(
            seq=0,
            reset=True,
            content_put=(sha1_of(X),),
            content_drop=(),
            nodes_put=(),
            nodes_drop=(),
        )
    )
    net.cores["A"].find(sha1_of(X), net.now)
    net.pump()
    (find,) = peer.of(Find)
    assert not find.up
    assert 0 < find.ttl_ms <= FAST.lookup_timeout * 1000
    net.advance(FAST.lookup_timeout + 0.01)
    (failed,) = net.of("A", LookupFailed)
    assert failed.timed_out
    assert failed.reason == "timed out"
    peer.send(FindReply(query=find.query, results=()))  # late: ignored
    assert peer.of(Error) == []


def test_lost_link_counts_as_an_empty_answer() -> None:
    net = Net()
    net.add_hub("A")
    peer = net.connect_raw("A")
    peer.join(info=peer.info(node_type="hub", confirm_share=""))
    peer.send(
        HubIndexUpdate(
            seq=0,
            reset=True,
            content_put=(sha1_of(X),),
            content_drop=(),
            nodes_put=(),
            nodes_drop=(),
        )
    )
    net.cores["A"].find(sha1_of(X), net.now)
    net.pump()
    net.cores["A"].receive_eof(peer.link, net.now)
    net.pump()
    assert net.of("A", LookupFailed)[0].reason == "not found"


def test_a_child_find_is_answered_with_results_from_other_branches() -> None:
    net = _tree()
    peer = net.connect_raw("A")
    peer.join()
    peer.send(Find(query=0, sha1=sha1_of(X), share_id=None, up=True, ttl_ms=1000))
    (reply,) = peer.of(FindReply)
    assert len(reply.results) == 3
    assert all(r.hops[-1][0] == net.cores["A"].node_id for r in reply.results)
    peer.send(Find(query=1, sha1="0" * 40, share_id=None, up=True, ttl_ms=1000))
    assert peer.of(FindReply)[-1] == FindReply(query=1, results=())  # the root asks no one


def test_long_replies_are_cut_to_fit_one_frame() -> None:
    net = Net()
    net.add_hub("A")
    paths = {f"{'p' * 4000}/{i}": X for i in range(400)}
    net.add_share("S", parent="A", files={"seed": b"s"})
    share = net.cores["S"]
    for path in paths:
        share.put_file(sha1_of(X), path, len(X), net.now)  # type: ignore[union-attr]
    # Only one representative per content id per share: the reply stays small.
    peer = net.connect_raw("A")
    peer.join()
    peer.send(Find(query=0, sha1=sha1_of(X), share_id=None, up=True, ttl_ms=1000))
    assert len(peer.of(FindReply)[0].results) == 1


def test_many_long_results_are_trimmed() -> None:
    net = Net()
    net.add_hub("A", limits=Limits(max_children=2000))
    long = "q" * 4000
    for i in range(300):
        net.add_share(f"S{i}", parent="A", files={f"{long}{i}": X})
    peer = net.connect_raw("A", seed=9999)
    peer.join()
    peer.send(Find(query=0, sha1=sha1_of(X), share_id=None, up=True, ttl_ms=1000))
    (reply,) = peer.of(FindReply)
    assert 0 < len(reply.results) < 256


def test_find_limits_and_peer_errors() -> None:
    net = Net()
    net.add_hub("A", limits=Limits(max_lookups_per_link=1, max_pending_lookups=2))
    net.add_hub("B", parent="A")
    peer = net.connect_raw("A")
    peer.join(info=peer.info(node_type="hub", confirm_share=""))
    peer.send(
        HubIndexUpdate(
            seq=0,
            reset=True,
            content_put=(sha1_of(X),),
            content_drop=(),
            nodes_put=(),
            nodes_drop=(),
        )
    )
    hub = net.cores["A"]
    hub.find(sha1_of(X), net.now)
    hub.find(sha1_of(X), net.now)  # raw peer announced max_lookups=8: still fine
    hub.find(sha1_of(X), net.now)  # over max_pending_lookups
    net.pump()
    assert net.of("A", LookupFailed)[0].reason == "too many pending finds"
    with pytest.raises(LocalProtocolError):
        hub.find("xyz", net.now)
    with pytest.raises(LocalProtocolError):
        hub.find(sha1_of(X), net.now, share_id="nope")
    # A child asking while the hub is at its pending limit gets an empty answer.
    child = net.connect_raw("A", seed=11)
    child.join()
    child.send(Find(query=0, sha1=sha1_of(X), share_id=None, up=True, ttl_ms=1000))
    assert child.of(FindReply) == [FindReply(query=0, results=())]


@pytest.mark.parametrize(
    ("messages", "needle"),
    [
        ([Find(query=0, sha1="a" * 40, share_id=None, up=False, ttl_ms=1)], "wrong side"),
        ([FindReply(query=5, results=())], "never sent"),
    ],
)
def test_bad_find_traffic_closes_the_link(messages: list[Message], needle: str) -> None:
    net = Net()
    net.add_hub("A")
    peer = net.connect_raw("A")
    peer.join()
    for message in messages:
        peer.send(message)
    assert needle in peer.of(Error)[0].reason


def test_duplicate_and_excess_finds_close_the_link() -> None:
    net = Net()
    net.add_hub("A", limits=Limits(max_lookups_per_link=1))
    peer = net.connect_raw("A")
    peer.join(info=peer.info(node_type="hub", confirm_share=""))
    peer.send(
        HubIndexUpdate(
            seq=0,
            reset=True,
            content_put=(sha1_of(X),),
            content_drop=(),
            nodes_put=(),
            nodes_drop=(),
        )
    )
    blocker = net.connect_raw("A", seed=12)
    blocker.join(info=blocker.info(node_type="hub", confirm_share=""))
    blocker.send(
        HubIndexUpdate(
            seq=0,
            reset=True,
            content_put=(sha1_of(Y),),
            content_drop=(),
            nodes_put=(),
            nodes_drop=(),
        )
    )
    # peer asks for Y: A must ask blocker, which never answers, so the find stays pending.
    peer.send(Find(query=0, sha1=sha1_of(Y), share_id=None, up=True, ttl_ms=1000))
    peer.send(Find(query=0, sha1=sha1_of(Y), share_id=None, up=True, ttl_ms=1000))
    assert "already pending" in peer.of(Error)[0].reason
    other = net.connect_raw("A", seed=13)
    other.join()
    other.send(Find(query=0, sha1=sha1_of(Y), share_id=None, up=True, ttl_ms=1000))
    other.send(Find(query=1, sha1=sha1_of(Y), share_id=None, up=True, ttl_ms=1000))
    assert other.of(Error)[0].code == "limit"


def test_result_for_another_share_is_filtered() -> None:
    net = Net()
    net.add_hub("A")
    peer = net.connect_raw("A")
    peer.join_as_hub()
    below = Ed25519Signer(4242)
    below_id = node_id_from_public_pem(below.public_pem)
    peer.send(
        hub_update(
            0, reset=True, content=(sha1_of(X),), nodes=(make_placement(below, peer.node_id),)
        )
    )
    net.cores["A"].find(sha1_of(X), net.now, share_id=below_id)
    net.pump()
    (find,) = peer.of(Find)
    wrong = FindResult(kbshare_id=NodeId("bbbbbbbbbbbb"), share_url="", path="p", size=1, hops=())
    right = FindResult(kbshare_id=below_id, share_url="", path="p", size=1, hops=())
    peer.send(FindReply(query=find.query, results=(wrong, right, right)))
    (event,) = net.of("A", LookupResolved)
    assert event.results == (right,)
