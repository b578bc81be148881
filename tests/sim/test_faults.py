"""Scenario (e): partition then heal, and recovery after crashes.

Also: crashed nodes restart with fresh cores and rejoin without leftovers, and a slow
hub plus skewed node clocks change timing only, never results.

A random node (hub or share) and everything under it are cut off from the rest.
Short cuts (under the heartbeat timeout) only delay bytes: nothing is dropped and the
indexes stay right. Long cuts make both sides give up the link; the hubs outside then
drop everything the cut subtree brought (``SimWorld`` oracle: only live, joined nodes
count). Files change on both sides during the cut. After ``heal`` the children
redial with backoff, resync, and every index converges again; finds from every hub
agree with the oracle.
"""

from __future__ import annotations

import random

import pytest

from kbproto.config import Limits
from kbproto.sim import Crash, Restart, SimWorld, Slow, chain, sha1_hex, tree
from tests.sim.scenarios import (
    LIGHT_CHUNKING,
    SEED_PARAMS,
    TIMEOUTS,
    content_pool,
    find_all,
    make_world,
    settle,
    share_files,
)

TOPOLOGY = tree(2, 2, shares=12)


def _finds_agree(hubs: list[str], world: SimWorld, sha1s: list[str]) -> None:
    for hub in hubs:
        for record in find_all(world, hub, sha1s):
            assert record.share_ids == world.expected_find(hub, record.sha1), (hub, record.sha1)


@pytest.mark.parametrize("seed", SEED_PARAMS)
def test_partition_then_heal_converges_again(seed: int) -> None:
    rng = random.Random(seed)
    pool = content_pool(rng, 20)
    files = share_files(rng, TOPOLOGY.shares, pool)
    world = make_world(seed, TOPOLOGY, files, plan=LIGHT_CHUNKING, trace_frames=False)
    net = world.network
    settle(world)
    cut_root = rng.choice([n.name for n in TOPOLOGY.nodes if n.parent is not None])
    inside = TOPOLOGY.subtree(cut_root)
    long_cut = seed % 2 == 0
    net.partition(inside)
    # Files change on both sides while cut off.
    changed = {}
    for side in (
        [n for n in inside if n in TOPOLOGY.shares],
        [n for n in TOPOLOGY.shares if n not in inside],
    ):
        if side:
            share = rng.choice(side)
            new_files = dict(world.store(share).files)
            new_files[f"cut/{seed}.bin"] = f"written during the cut on {share}".encode()
            world.apps[share].set_files(world.nodes[share], new_files)
            changed[share] = sha1_hex(new_files[f"cut/{seed}.bin"])
    if long_cut:
        net.run_for(TIMEOUTS.heartbeat_timeout + 2 * TIMEOUTS.heartbeat_interval)
        # Both sides gave up: the parent of the cut node dropped it and all it brought.
        assert not world.apps[cut_root].joined
        net.run_until(world.indexes_converged, timeout=10, poll=16)
        outside_hubs = [h for h in TOPOLOGY.hubs if h not in inside]
        _finds_agree(
            outside_hubs, world, [sha1_hex(files[s][f"own/{s}.txt"]) for s in inside if s in files]
        )
    else:
        net.run_for(TIMEOUTS.heartbeat_timeout - 2 * TIMEOUTS.heartbeat_interval)
        assert world.apps[cut_root].joined  # only delayed, never dropped
    net.heal()
    settle(world, timeout=3 * TIMEOUTS.reconnect_max)
    sample = [sha1_hex(d) for d in rng.sample(pool, 3)] + sorted(changed.values())
    _finds_agree(TOPOLOGY.hubs, world, sample)
    net.run_until_quiescent()


#: Crash/restart recovery is also exercised by (d), the state machine and fuzz_sim;
#: a smaller seed range keeps the suite fast.
@pytest.mark.parametrize("seed", range(20))
def test_crash_and_restart_rejoins_without_leftovers(seed: int) -> None:
    rng = random.Random(1000 + seed)
    pool = content_pool(rng, 20)
    files = share_files(rng, TOPOLOGY.shares, pool)
    world = make_world(seed, TOPOLOGY, files, plan=LIGHT_CHUNKING, trace_frames=False)
    net = world.network
    settle(world)
    victims = rng.sample([n.name for n in TOPOLOGY.nodes], 2)
    for victim in victims:
        net.apply_fault(Crash(node=victim, silent=rng.random() < 0.5))
    net.run_for(TIMEOUTS.heartbeat_timeout + 2 * TIMEOUTS.heartbeat_interval)
    net.run_until(world.indexes_converged, timeout=10, poll=16)
    for victim in victims:
        net.apply_fault(Restart(node=victim))
        assert net.node(victim).incarnation == 1
    settle(world, timeout=3 * TIMEOUTS.reconnect_max)
    _finds_agree(
        ["h0", rng.choice(TOPOLOGY.hubs)], world, [sha1_hex(d) for d in rng.sample(pool, 3)]
    )
    net.run_until_quiescent()


@pytest.mark.parametrize("seed", range(20))
def test_slow_hub_and_skewed_clocks_change_nothing_but_timing(seed: int) -> None:
    rng = random.Random(2000 + seed)
    topology = chain(3, shares=1)
    data = rng.randbytes(rng.randint(10_000, 30_000))
    net_files = {"s0": {"big.bin": data}}
    world = make_world(
        seed, topology, net_files, limits=Limits(stream_window=4096, data_chunk=1024)
    )
    net = world.network
    # Cores compare only times they were given, so a constant skew must not matter.
    net.clock.set_offset("h2", rng.choice([1000.0, -5.0]))
    net.clock.set_offset("s0", rng.uniform(-50.0, 50.0))
    net.apply_fault(Slow(node="h1", delay=rng.uniform(0.05, 0.5)))
    settle(world)
    s0 = world.ids["s0"]
    record = world.apps["h0"].download(world.nodes["h0"], s0, f"/{s0}/download/big.bin")
    net.run_until(lambda: record.done, timeout=120)
    assert record.ended
    assert bytes(record.body) == data
    lookup = find_all(world, "h0", [sha1_hex(data)])[0]
    assert lookup.share_ids == [s0]
    net.run_for(3 * TIMEOUTS.heartbeat_timeout)  # a slow hub is not a dead hub
    assert all(not app.closed for app in world.apps.values())
    net.run_until_quiescent()
