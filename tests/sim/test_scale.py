"""The scale network (``kbproto.sim.scale``) and the bookkeeping that makes it cheap.

* A small scale network (depth 4) joins, converges, and answers finds and downloads
  at random hubs exactly as the oracle says, with every invariant on; behind the
  ``slow`` marker, the issue 17 network: 10,000 shares, 1,000,000 ids, depth 4.
* ``SimWorld.indexes_converged`` (cached expected counts) agrees with the plain
  per-hub oracle through crashes, restarts and new files.
* The network's count of dialed links always equals a walk over the links.
* Decoded frames are cached for the trace: a tiny cache (emptied again and again)
  gives the same trace as the normal one.
* ``TraceLog`` hashes lines in batches: the digest is still the SHA-256 of every
  line, and the tail is the newest lines, across batch boundaries.
"""

from __future__ import annotations

import hashlib
import random

import pytest

from kbproto.sim import SimWorld, TraceLog, invariants, network
from kbproto.sim.scale import ScaleSpec, check_finds, join, scale_world


def _converged_by_oracle(world: SimWorld) -> bool:
    # ``indexes_converged`` as it was first written: every live hub against
    # ``expected_content_count``, no caching.
    for spec in world.topology.nodes:
        if not world.live(spec.name):
            continue
        if spec.parent is not None and not world.apps[spec.name].synced:
            return False
        if spec.kind == "hub":
            hub = world.hub(spec.name)
            if hub.content_count() != world.expected_content_count(spec.name):
                return False
            subtree = world.topology.subtree(spec.name)
            if not all(hub.knows_node(world.ids[n]) for n in subtree if world.live(n)):
                return False
    return True


def _dialed_links_consistent(world: SimWorld) -> None:
    for node in world.network.nodes.values():
        walked = sum(end.dialed for end in node.links.values())
        assert node.dialed_links == walked, (node.name, node.dialed_links, walked)


def test_small_scale_network_converges_and_answers_right() -> None:
    spec = ScaleSpec(shares=60, ids=610, depth=4, fanout=2, seed=3)
    world = scale_world(spec)
    assert len(world.topology.hubs) == spec.hubs == 31
    assert world.topology.depth() == 4
    join(world)
    assert world.hub("h0").content_count() == 610
    for hub in world.topology.hubs:
        assert world.hub(hub).content_count() == world.expected_content_count(hub)
    checked = check_finds(world, spec, finds=40, downloads=4)
    assert (checked.finds_right, checked.downloads_right) == (40, 4)
    world.network.run_until_quiescent()
    _dialed_links_consistent(world)


def test_step_checks_catch_a_forgotten_link_and_two_parent_links() -> None:
    spec = ScaleSpec(shares=4, ids=8, depth=1, fanout=2)
    world = scale_world(spec)
    join(world)
    node = world.nodes["s0"]
    invariants.check_all_nodes(world.network, world.limits)
    link_id, end = next(iter(node.links.items()))
    del node.links[link_id]
    with pytest.raises(AssertionError, match="core holds links"):
        invariants.check_all_nodes(world.network, world.limits)
    node.links[link_id] = end
    node.dialed_links = 2
    with pytest.raises(AssertionError, match="s0 has 2 parent links"):
        invariants.check_all_nodes(world.network, world.limits)


def test_scale_spec_rejects_impossible_sizes() -> None:
    with pytest.raises(ValueError, match="ids"):
        ScaleSpec(shares=10, ids=9)
    with pytest.raises(ValueError, match="shares >= 1"):
        ScaleSpec(shares=0, ids=9)
    # The ids left over go one each to the first shares.
    spec = ScaleSpec(shares=3, ids=8)
    assert [len(spec.files(f"s{i}")) for i in range(3)] == [3, 3, 2]


@pytest.mark.parametrize("seed", range(3))
def test_cached_convergence_agrees_with_the_oracle_through_faults(seed: int) -> None:
    rng = random.Random(seed)
    spec = ScaleSpec(shares=24, ids=120, depth=2, fanout=3, seed=seed)
    world = scale_world(spec)
    net = world.network
    agreed = set()
    for round_ in range(6):
        for _ in range(40):
            net.run_for(rng.uniform(0.001, 0.05))
            fast = world.indexes_converged()
            assert fast == _converged_by_oracle(world), (seed, round_, net.now)
            agreed.add(fast)
        _dialed_links_consistent(world)
        victim = rng.choice(world.topology.nodes[1:]).name
        if round_ == 1:
            net.crash(victim)
        elif round_ == 2:
            net.restart(victim)
        elif round_ == 3:
            share = rng.choice(world.topology.shares)
            world.apps[share].set_files(world.nodes[share], {"new.bin": b"fresh %d" % seed})
    net.run_until(world.indexes_converged, 600)
    assert _converged_by_oracle(world)
    assert agreed == {True, False}  # both answers were seen and checked


def test_a_tiny_frame_cache_gives_the_same_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    def run() -> tuple[str, int]:
        spec = ScaleSpec(shares=6, ids=30, depth=1, fanout=2)
        world = scale_world(spec)
        world.network.trace_frames = True
        join(world)
        check_finds(world, spec, finds=3, downloads=1)
        return world.network.trace.digest(), len(world.network._frame_cache)

    normal, cached = run()
    monkeypatch.setattr(network, "_FRAME_CACHE_SIZE", 3)
    tiny, cached_tiny = run()
    assert tiny == normal
    assert cached_tiny <= 3 < cached


def test_trace_digest_is_the_hash_of_every_line_across_batches() -> None:
    trace = TraceLog(keep=True, tail_size=5)
    for i in range(3 * TraceLog.BATCH + 7):
        trace.add(i / 3, f"n{i % 4}", "tx", i % 2 or None, f"line {i} \udcff")
        if i in (3, TraceLog.BATCH + 1):
            assert trace.tail(2) == trace.lines[-2:]
    whole = "".join(line + "\n" for line in trace.lines)
    assert trace.digest() == hashlib.sha256(whole.encode("utf-8", "backslashreplace")).hexdigest()
    assert trace.tail() == trace.lines[-5:]
    assert trace.tail(3) == trace.lines[-3:]
    assert trace.count == len(trace.lines)
    assert trace.digest() == trace.digest()  # asking twice hashes nothing twice
    assert TraceLog(tail_size=0).tail() == []


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_ten_thousand_shares_a_million_ids_depth_four() -> None:
    spec = ScaleSpec()
    assert (spec.shares, spec.ids, spec.depth) == (10_000, 1_000_000, 4)
    world = scale_world(spec)
    join(world)
    assert world.hub("h0").content_count() == 1_000_000
    for hub in world.topology.hubs[:5]:
        assert world.hub(hub).content_count() == world.expected_content_count(hub)
    checked = check_finds(world, spec, finds=100, downloads=5)
    assert (checked.finds_right, checked.downloads_right) == (100, 5)
