"""HubCore and ShareCore end to end through the in-memory ``Net``: join, find, download."""

from __future__ import annotations

from kbproto.events import (
    ChildJoined,
    IndexSynced,
    LookupFailed,
    LookupResolved,
    ParentConnected,
    ResponseEnded,
    ResponseStarted,
)
from tests.helpers import Net, consumer, file_server, sha1_of

DATA = bytes(range(256)) * 100


def _two_level(chunking: bool = True) -> Net:
    net = Net(chunking=chunking)
    net.add_hub("A")
    net.add_hub("B", parent="A")
    net.add_share("S", parent="B", files={"f.dat": DATA})
    net.add_share("T", parent="A", files={"g.dat": b"hello"})
    net.advance(0.5)
    return net


def test_join_and_sync_events() -> None:
    net = _two_level()
    assert [type(e) for e in net.of("A", ChildJoined)] == [ChildJoined, ChildJoined]
    assert net.of("S", ParentConnected)[0].info.name == "B"
    assert net.of("S", IndexSynced)[-1].entries == 1
    hub_a = net.cores["A"]
    assert hub_a.content_count() == 2  # type: ignore[union-attr]


def test_find_goes_up_then_down_with_hub_chain() -> None:
    net = _two_level()
    share_t = net.cores["T"]
    share_t.find(sha1_of(DATA), net.now)
    net.pump()
    (resolved,) = net.of("T", LookupResolved)
    (result,) = resolved.results
    assert result.kbshare_id == net.cores["S"].node_id
    assert result.share_url == "http://S:2000"
    assert result.path == "f.dat"
    assert result.size == len(DATA)
    assert result.hops == (
        (net.cores["B"].node_id, "http://B:3240"),
        (net.cores["A"].node_id, "http://A:3240"),
    )


def test_find_not_found_anywhere() -> None:
    net = _two_level()
    net.cores["S"].find("0" * 40, net.now)
    net.pump()
    (failed,) = net.of("S", LookupFailed)
    assert failed.reason == "not found"
    assert not failed.timed_out


def test_download_through_two_hubs_with_small_window() -> None:
    net = _two_level()
    net.apps["S"] = file_server({"f.dat": DATA})
    got: dict[int, bytearray] = {}
    net.apps["T"] = consumer(got)
    share_s = net.cores["S"]
    sid = net.cores["T"].open_request(
        share_s.node_id, "GET", f"/{share_s.node_id}/download/f.dat", now=net.now
    )
    net.pump()
    assert net.of("T", ResponseStarted)[0].status == 200
    assert net.of("T", ResponseEnded)[0].stream_id == sid
    assert bytes(got[sid]) == DATA
    assert all(core.open_streams() == 0 for core in net.cores.values())


def test_next_hop_names_the_link_and_its_streams() -> None:
    net = _two_level()
    hub_a, hub_b, share_s = net.cores["A"], net.cores["B"], net.cores["S"]
    s_id = share_s.node_id
    hop = hub_a.next_hop(s_id)  # A reaches S through its child B
    assert hop is not None
    assert hop.link_id in hub_a.link_ids()
    assert (hop.limit, hop.open) == (hub_a.limits.max_streams_per_link, 0)
    hub_a.open_request(s_id, "GET", f"/{s_id}/download/f.dat", now=net.now)
    opened = hub_a.next_hop(s_id)
    assert opened is not None
    assert (opened.link_id, opened.open) == (hop.link_id, 1)
    up = hub_b.next_hop(net.cores["T"].node_id)  # B reaches T up through A
    assert up is not None
    assert up.link_id == hub_b.parent_link
    assert hub_a.next_hop(hub_a.node_id) is None  # this node itself
    assert hub_a.next_hop("0" * 12) is None  # no route
