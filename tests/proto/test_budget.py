"""The index budget: a node-wide bound on what children report, and per-child quotas.

Unit tests of ``IndexBudget``, then whole hubs: a child over its quota loses its link
with ``limit`` (and its redial waits ``limit_backoff``), a child with the
passcode may use the whole budget, a child hub's quota grows with the nodes it proves,
and a child that reported many ids and left leaves no memory behind.
"""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from kbproto import Limits
from kbproto.auth import node_id_from_public_pem
from kbproto.budget import IndexBudget, entry_cost, placement_cost
from kbproto.errors import LimitExceeded
from kbproto.events import LinkClosed, LookupResolved
from kbproto.messages import Error, IndexAck, ShareIndexUpdate
from tests.helpers import FAST, Ed25519Signer, Net, hub_update, make_placement, sha1_of

_TINY = Limits(stream_window=4096, data_chunk=1024, index_budget=10, open_child_quota=4)


def _ids(count: int, start: int = 0) -> list[str]:
    return [sha1_of(i.to_bytes(4, "big")) for i in range(start, start + count)]


def test_entry_and_placement_costs() -> None:
    assert entry_cost("") == 1
    assert entry_cost("a" * 255) == 1
    assert entry_cost("a" * 256) == 2
    assert entry_cost("a" * 4096) == 17
    signer = Ed25519Signer(1)
    short = make_placement(signer, "0123456789ab")
    long = make_placement(signer, "0123456789ab", description="d" * 4096)
    assert placement_cost(short) == 4
    assert placement_cost(long) == placement_cost(short) + 32


def test_an_open_child_gets_its_quota_per_proven_node() -> None:
    budget = IndexBudget(total=100, open_quota=10)
    budget.add_child(1, trusted=False)
    assert budget.quota(1, proven=1) == 10
    assert budget.quota(1, proven=0) == 10
    assert budget.quota(1, proven=4) == 40
    assert budget.quota(1, proven=50) == 100  # never more than the budget
    budget.charge(1, 10, proven=1)
    assert budget.room(1, proven=1) == 0
    with pytest.raises(LimitExceeded) as info:
        budget.charge(1, 1, proven=1)
    assert info.value.limit == "open_child_quota"
    assert str(info.value) == (
        "index quota exceeded: this hub holds at most 10 index entries for this child"
        " (a child that joined without the hub's passcode; kbucket-hub --open-child-quota)"
    )
    assert budget.used_by(1) == 10  # nothing charged for the refused entry
    budget.charge(1, 5, proven=2)
    with pytest.raises(LimitExceeded, match="10 for each of the 2 nodes it proves"):
        budget.charge(1, 6, proven=2)


def test_a_trusted_child_may_use_the_whole_budget_and_the_budget_binds_all() -> None:
    budget = IndexBudget(total=100, open_quota=10)
    budget.add_child(1, trusted=True)
    budget.add_child(2, trusted=False)
    budget.charge(1, 95, proven=1)
    assert budget.quota(1, proven=1) == 100
    assert budget.room(2, proven=1) == 5  # the budget, not the quota, binds now
    with pytest.raises(LimitExceeded) as info:
        budget.charge(2, 6, proven=1)
    assert info.value.limit == "index_budget"
    assert str(info.value) == (
        "index budget exhausted: this hub holds at most 100 index entries for all its"
        " children (kbucket-hub --index-budget)"
    )
    with pytest.raises(LimitExceeded, match="index budget exhausted"):
        budget.charge(1, 6, proven=1)
    budget.release(1, 45)
    assert budget.used == 50
    budget.drop_child(1)
    assert budget.used == 0
    assert budget.room(2, proven=1) == 10


def test_a_share_over_its_quota_loses_its_link_and_backs_off() -> None:
    net = Net()
    hub = net.add_hub("H", limits=_TINY)
    keeper = net.add_share("K", parent="H", files={"k": b"kept"})
    big = net.add_share("B", parent="H", files={f"f{i}": bytes([i]) for i in range(5)})
    (closed,) = [e for e in net.of("H", LinkClosed) if e.peer_id == big.node_id]
    assert closed.reason.startswith("index quota exceeded: this hub holds at most 4 index")
    (lost,) = net.of("B", LinkClosed)
    assert lost.reason == f"peer closed the link: {closed.reason}"
    # The share does not come straight back with the same index: it waits
    # limit_backoff (with jitter of at least half), far longer than the usual backoff.
    assert FAST.limit_backoff > 2 * FAST.reconnect_max
    timer = big.get_timer()
    assert timer is not None
    assert timer >= net.now + 0.5 * FAST.limit_backoff
    # The other child is untouched: its content is still found.
    hub.find(sha1_of(b"kept"), net.now)
    net.pump()
    (found,) = net.of("H", LookupResolved)
    assert [r.kbshare_id for r in found.results] == [keeper.node_id]


def test_a_child_with_the_passcode_may_use_the_whole_budget() -> None:
    net = Net()
    hub = net.add_hub("H", limits=_TINY, passcode="lab")
    net.add_share(
        "B", parent="H", files={f"f{i}": bytes([i]) for i in range(8)}, parent_passcode="lab"
    )
    assert hub.content_count() == 8
    assert not net.of("H", LinkClosed)
    net.add_share(
        "C", parent="H", files={f"g{i}": bytes([50 + i]) for i in range(3)}, parent_passcode="lab"
    )
    (closed,) = net.of("H", LinkClosed)
    assert closed.reason.startswith("index budget exhausted: this hub holds at most 10")
    assert hub.content_count() == 8


def test_a_child_hub_s_quota_grows_with_the_nodes_it_proves() -> None:
    net = Net()
    hub = net.add_hub("H", limits=Limits(index_budget=1000, open_child_quota=8))
    peer = net.connect_raw("H")
    peer.join_as_hub()
    below = [make_placement(Ed25519Signer(700 + i), peer.node_id) for i in range(2)]
    # Two proven nodes below it (4 entries each) in the same message as 14 content ids:
    # placements are applied first, so the quota is 3 x 8 = 24 >= 8 + 14.
    peer.send(hub_update(0, reset=True, content=tuple(_ids(14)), nodes=tuple(below)))
    assert peer.of(IndexAck)
    assert hub.content_count() == 14
    # Dropping a node shrinks the quota (2 x 8 = 16 < 4 + 14 + 1).
    dropped = node_id_from_public_pem(Ed25519Signer(701).public_pem)
    peer.send(hub_update(1, nodes_drop=(dropped,)))
    peer.send(hub_update(2, content=tuple(_ids(1, 14))))
    assert peer.of(Error)[0].reason.startswith("index quota exceeded")
    assert hub.content_count() == 0


def test_a_reset_releases_what_the_child_held() -> None:
    net = Net()
    hub = net.add_hub("H", limits=_TINY)
    peer = net.connect_raw("H")
    peer.join()
    peer.send(ShareIndexUpdate(seq=0, reset=True, put=tuple((s, "p", 1) for s in _ids(4)), drop=()))
    peer.send(
        ShareIndexUpdate(seq=1, reset=True, put=tuple((s, "q", 1) for s in _ids(4, 4)), drop=())
    )
    # Replacing a path with a longer one costs more; dropping releases.
    peer.send(ShareIndexUpdate(seq=2, reset=False, put=(), drop=tuple(_ids(1, 4))))
    peer.send(ShareIndexUpdate(seq=3, reset=False, put=((_ids(1, 5)[0], "x" * 256, 1),), drop=()))
    assert not peer.of(Error)
    assert hub.content_count() == 3
    peer.send(ShareIndexUpdate(seq=4, reset=False, put=((_ids(1, 9)[0], "y", 1),), drop=()))
    assert peer.of(Error)[0].code == "limit"


def test_a_child_that_reported_many_ids_and_left_leaves_no_memory_behind() -> None:
    net = Net()
    hub = net.add_hub("H", limits=Limits(stream_window=4096, data_chunk=1024))
    peer = net.connect_raw("H")
    peer.join()
    # 20,000 ids: their arrays (~1.2 MB) clearly outweigh what a shrunk table keeps
    # (~0.3 MB), at a quarter of the time of 80,000 under tracemalloc and coverage.
    ids = _ids(20_000)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for seq, start in enumerate(range(0, len(ids), 4000)):
            put = tuple((sha1, "p", 1) for sha1 in ids[start : start + 4000])
            peer.send(ShareIndexUpdate(seq=seq, reset=seq == 0, put=put, drop=()))
        assert hub.content_count() == 20_000
        held = tracemalloc.get_traced_memory()[0] - before
        hub.receive_eof(peer.link, net.now)
        net.pump()
        gc.collect()
        left = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert hub.content_count() == 0
    assert held > 1_000_000
    # The hub's content table shrinks when its ids leave: without that, its arrays
    # for 20,000 ids (~1.2 MB measured) would outlive the child.
    assert left < 500_000, left
