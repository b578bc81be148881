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
from kbproto.budget import DIR_BYTES, ID_BYTES, IndexBudget, entry_cost, placement_cost
from kbproto.errors import LimitExceeded
from kbproto.events import LinkClosed, LookupResolved
from kbproto.messages import Error, IndexAck, ShareIndexUpdate
from tests.helpers import FAST, Ed25519Signer, Net, hub_update, make_placement, sha1_of

#: What a share's file ``fN`` of one byte costs (its tail: size, directory, 2-letter
#: name); a share's files here share one directory ("").
_FILE = entry_cost(bytes(4))
#: Room for 10 such files over all children, 4 per child without the passcode.
_TINY = Limits(
    stream_window=4096,
    data_chunk=1024,
    index_budget=DIR_BYTES + 10 * _FILE,
    open_child_quota=DIR_BYTES + 4 * _FILE,
)


def _ids(count: int, start: int = 0) -> list[str]:
    return [sha1_of(i.to_bytes(4, "big")) for i in range(start, start + count)]


def test_entry_and_placement_costs_are_bytes_of_index() -> None:
    # A child hub's bare id: its table slot and log record; a share's adds its tail
    # and the tail's length (one byte below 128, two from 128).
    assert entry_cost() == ID_BYTES == 52
    assert entry_cost(bytes(20)) == 52 + 20 + 1
    assert entry_cost(bytes(127)) == 52 + 127 + 1
    assert entry_cost(bytes(128)) == 52 + 128 + 2
    signer = Ed25519Signer(1)
    short = make_placement(signer, "0123456789ab")
    long = make_placement(signer, "0123456789ab", description="d" * 4096)
    assert 1500 <= placement_cost(short) <= 2500  # ~1.5 KB measured
    assert placement_cost(long) == placement_cost(short) + 2 * 4096


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
        "index quota exceeded: this hub holds at most 10 bytes of index for this child"
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
        "index budget exhausted: this hub holds at most 100 bytes of index for all its"
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
    quota = _TINY.open_child_quota
    assert closed.reason.startswith(f"index quota exceeded: this hub holds at most {quota:,} bytes")
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
    budget = _TINY.index_budget
    assert closed.reason.startswith(f"index budget exhausted: this hub holds at most {budget:,}")
    assert hub.content_count() == 8


def test_a_child_hub_s_quota_grows_with_the_nodes_it_proves() -> None:
    net = Net()
    # Every placement here costs ``node`` bytes (same key and text lengths).
    node = placement_cost(make_placement(Ed25519Signer(700), "0123456789ab"))
    ids = 40
    quota = -(-(2 * node + ids * ID_BYTES) // 3)
    hub = net.add_hub("H", limits=Limits(index_budget=10**7, open_child_quota=quota))
    peer = net.connect_raw("H")
    peer.join_as_hub()
    below = [make_placement(Ed25519Signer(700 + i), peer.node_id) for i in range(2)]
    # Two proven nodes below it in the same message as 40 content ids: placements are
    # applied first, so the quota is 3 x ``quota`` >= 2 placements + 40 ids.
    peer.send(hub_update(0, reset=True, content=tuple(_ids(ids)), nodes=tuple(below)))
    assert peer.of(IndexAck)
    assert hub.content_count() == ids
    # Dropping a node shrinks the quota (2 x ``quota`` < 1 placement + 41 ids).
    assert 2 * quota < node + (ids + 1) * ID_BYTES
    dropped = node_id_from_public_pem(Ed25519Signer(701).public_pem)
    peer.send(hub_update(1, nodes_drop=(dropped,)))
    peer.send(hub_update(2, content=tuple(_ids(1, ids))))
    assert peer.of(Error)[0].reason.startswith("index quota exceeded")
    assert hub.content_count() == 0


def test_a_reset_releases_what_the_child_held() -> None:
    net = Net()
    # Files "p" and "q" of one byte (tails of 3 bytes) and one of 256 "x"s, in "".
    short, long = entry_cost(bytes(3)), entry_cost(bytes(2 + 256))
    limits = Limits(open_child_quota=DIR_BYTES + 2 * short + long)
    hub = net.add_hub("H", limits=limits)
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


def test_a_share_pays_for_the_directories_its_paths_intern() -> None:
    net = Net()
    # Three files "dN/f" of one byte (tails of 3 bytes): in one directory they fit,
    # each in a directory of its own (3 bytes of name each) they do not.
    files = 3 * entry_cost(bytes(3))
    hub = net.add_hub("H", limits=Limits(open_child_quota=files + 2 * (DIR_BYTES + 3)))
    together = net.connect_raw("H", seed=1)
    together.join()
    put = tuple((s, "d0/f", 1) for s in _ids(3))
    together.send(ShareIndexUpdate(seq=0, reset=True, put=put, drop=()))
    assert not together.of(Error)
    apart = net.connect_raw("H", seed=2)
    apart.join()
    put = tuple((s, f"d{i}/f", 1) for i, s in enumerate(_ids(3, 3)))
    apart.send(ShareIndexUpdate(seq=0, reset=True, put=put, drop=()))
    assert apart.of(Error)[0].reason.startswith("index quota exceeded")
    # Dropping a directory's last file gives its cost back: d0 and d2 fit after d1.
    apart = net.connect_raw("H", seed=3)
    apart.join()
    apart.send(ShareIndexUpdate(seq=0, reset=True, put=put[:2], drop=()))
    apart.send(ShareIndexUpdate(seq=1, reset=False, put=(), drop=(put[1][0],)))
    apart.send(ShareIndexUpdate(seq=2, reset=False, put=put[2:], drop=()))
    assert not apart.of(Error)
    assert hub.content_count() == 3 + 2


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
