"""Scenario (a) and (b): finds over a 20-hub, 200-share tree of real cores.

(a) After the network settles, a find from any hub returns exactly the shares the
routing contract says it must (``SimWorld.expected_find``: the holders in the
subtree of the nearest hub at or above the asker that has any; for the root, every
holder), each with the right path, size and hop chain. Each seed samples hubs so
that the 50 seeds together ask from every hub.

(b) A share's files change: one heartbeat interval later every hub's answers agree
with the new contents (added content found, removed content gone); every hub of a
15-hub tree of the same depth asks, on every seed.
"""

from __future__ import annotations

import random

import pytest

from kbproto.sim import sha1_hex, tree
from tests.sim.scenarios import (
    LIGHT_CHUNKING,
    SEED_PARAMS,
    SEEDS,
    TIMEOUTS,
    TREE_DEPTH,
    TREE_FANOUT,
    TREE_HUBS,
    TREE_SHARES,
    content_pool,
    find_all,
    hub_path,
    make_world,
    missing_sha1,
    settle,
    share_files,
)

TOPOLOGY = tree(TREE_DEPTH, TREE_FANOUT, hubs=TREE_HUBS, shares=TREE_SHARES)
#: Scenario (b) asks from every hub on every seed, so it uses a smaller tree of the
#: same depth (15 hubs, 45 shares).
SMALL_TREE = tree(3, 2, shares=45)
HUBS_PER_SEED = 4


def test_tree_shape() -> None:
    assert len(TOPOLOGY.hubs) == 20
    assert len(TOPOLOGY.shares) == 200
    assert TOPOLOGY.depth() == 3
    # Every hub is asked from by some seed.
    asked = {TOPOLOGY.hubs[(s * HUBS_PER_SEED + i) % 20] for s in SEEDS for i in range(4)}
    assert asked == set(TOPOLOGY.hubs)


@pytest.mark.parametrize("seed", SEED_PARAMS)
def test_find_from_every_hub_returns_exactly_the_holders(seed: int) -> None:
    rng = random.Random(seed)
    pool = content_pool(rng, 80)
    files = share_files(rng, TOPOLOGY.shares, pool)
    world = make_world(seed, TOPOLOGY, files, plan=LIGHT_CHUNKING, trace_frames=False)
    settle(world)
    hubs = [TOPOLOGY.hubs[(seed * HUBS_PER_SEED + i) % 20] for i in range(HUBS_PER_SEED)]
    for hub in hubs:
        own = f"only on {rng.choice(TOPOLOGY.shares)}".encode()
        sha1s = [sha1_hex(d) for d in rng.sample(pool, 4)] + [sha1_hex(own), missing_sha1(rng)]
        for record in find_all(world, hub, sha1s):
            expected = world.expected_find(hub, record.sha1)
            assert record.share_ids == expected, (seed, hub, record.sha1)
            assert len(record.results) == len(expected)
            if not expected:
                assert record.reason
                continue
            for result in record.results:
                share = world.names[result.kbshare_id]
                path, data = world.store(share).by_sha1(record.sha1) or ("", b"")
                assert result.path == path
                assert result.size == len(data)
                assert result.share_url == f"http://{share}.sim:3240"
                hops = [world.names[node_id] for node_id, _url in result.hops]
                assert hops == hub_path(TOPOLOGY, share, hub)
    world.network.run_until_quiescent()


@pytest.mark.parametrize("seed", SEED_PARAMS)
def test_changed_files_are_agreed_on_within_one_heartbeat(seed: int) -> None:
    rng = random.Random(10_000 + seed)
    pool = content_pool(rng, 30)
    files = share_files(rng, SMALL_TREE.shares, pool)
    world = make_world(seed, SMALL_TREE, files, plan=LIGHT_CHUNKING, trace_frames=False)
    settle(world)
    share = rng.choice(SMALL_TREE.shares)
    before = dict(files[share])
    removed_path = sorted(before)[0]
    removed = sha1_hex(before.pop(removed_path))
    fresh = f"new on {share} {seed}".encode()
    before["data/new.bin"] = fresh
    world.apps[share].set_files(world.nodes[share], before)
    world.network.run_for(TIMEOUTS.heartbeat_interval)
    records_by_hub = {
        hub: [world.apps[hub].find(world.nodes[hub], sha1) for sha1 in (sha1_hex(fresh), removed)]
        for hub in SMALL_TREE.hubs
    }
    world.network.run_until(
        lambda: all(r.done for rs in records_by_hub.values() for r in rs),
        TIMEOUTS.lookup_timeout,
    )
    for hub, records in records_by_hub.items():
        for record in records:
            assert record.share_ids == world.expected_find(hub, record.sha1), (seed, hub)
        assert records[0].share_ids == [world.ids[share]]
        assert world.ids[share] not in records[1].share_ids
    assert world.indexes_converged()
