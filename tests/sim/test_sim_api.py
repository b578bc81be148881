"""The simulator's public surface at its edges: bounds, argument checks, faults, oracle.

``test_network.py`` drives the machinery with an echo core; the tests here pin what
is left with the real cores: every run method fails with ``SimFailure`` (seed and
reason) instead of spinning, commands on a stopped node fail, faults applied in odd
orders (a crash during a partition, twice, a slow-down with a timer armed) keep the
run sound, the topology builders refuse shapes they cannot build, and the
``SimWorld`` oracle answers for dead hubs and for a root that has not yet learnt of
a new share.
"""

from __future__ import annotations

import pytest

from kbproto.auth import SignatureScheme
from kbproto.events import Event
from kbproto.sim import (
    Crash,
    NodeSpec,
    Partition,
    SimClock,
    SimFailure,
    SimNetwork,
    SimNode,
    SimSigner,
    SimVerifier,
    SimWorld,
    Slow,
    Topology,
    chain,
    sha1_hex,
    star,
    tree,
)
from kbproto.sim.network import summarize
from tests.sim.scenarios import make_world, settle

SEED = 99


class Busy:
    """An app that always waits for something."""

    def on_start(self, node: SimNode) -> None:
        pass

    def on_event(self, node: SimNode, event: Event) -> None:
        pass

    def busy(self) -> bool:
        return True


def _star(shares: int = 1, **files: dict[str, bytes]) -> SimWorld:
    world = make_world(SEED, star(shares), dict(files), keep_trace=True)
    settle(world)
    return world


# --- every run method is bounded ---------------------------------------------------


def test_an_empty_network_has_nothing_to_step() -> None:
    net = SimNetwork(SEED)
    assert net.step() is False
    assert net.next_due() is None
    with pytest.raises(SimFailure, match="nothing left to happen and the predicate is false"):
        net.run_until(lambda: False, timeout=10)


def test_run_until_and_run_for_fail_past_their_step_bounds() -> None:
    world = make_world(SEED, star(2), {})
    net = world.network
    with pytest.raises(SimFailure, match="predicate still false after 5 steps") as info:
        net.run_until(lambda: False, timeout=100, max_steps=5)
    assert f"seed={SEED}" in str(info.value)
    with pytest.raises(SimFailure, match=r"run_for: more than 5 steps in 100 s"):
        net.run_for(100, max_steps=5)


def test_run_until_quiescent_fails_on_a_busy_app_with_nothing_scheduled() -> None:
    world = make_world(SEED, star(0), {})
    world.nodes["h0"].app = Busy()  # a lone root hub arms no timer
    with pytest.raises(SimFailure, match="an app is busy but nothing is scheduled"):
        world.network.run_until_quiescent()


def test_run_until_quiescent_fails_past_its_time_bound() -> None:
    world = _star()
    world.nodes["h0"].app = Busy()  # heartbeats keep going, the app never rests
    start = world.network.now
    with pytest.raises(SimFailure, match="not quiescent after 60 s"):
        world.network.run_until_quiescent(timeout=60)
    assert world.network.now <= start + 60


def test_a_command_on_a_stopped_node_fails_the_run() -> None:
    world = _star()
    world.network.apply_fault(Crash(node="s0"))
    with pytest.raises(SimFailure, match="command on s0, which is not running"):
        world.apps["s0"].set_files(world.nodes["s0"], {"b.txt": b"beta"})


# --- faults in odd orders ----------------------------------------------------------


def test_a_crash_during_a_partition_reaches_the_peer_only_after_heal() -> None:
    # Heartbeats both ways are held by the cut; the crash drops what s0 held and the
    # hub's held heartbeats; heal releases s0's EOF and nothing else.
    world = _star(s0={"a.txt": b"alpha"})
    net = world.network
    net.apply_fault(Partition(nodes=("s0",)))
    assert not net.connected("s0", "h0")
    net.run_for(15.0)
    assert net.quiet  # held bytes are not activity
    net.crash("s0")
    net.crash("s0")  # a second crash of a stopped node changes nothing
    net.run_for(5.0)
    assert world.hub("h0").content_count() == 1  # nothing got through yet
    net.heal()
    net.run_until(lambda: world.hub("h0").content_count() == 0, timeout=2)
    assert not list(net.iter_links())


def test_slowing_a_node_re_arms_its_pending_timer() -> None:
    world = _star()
    net = world.network
    h0 = net.node("h0")
    armed = h0.timer
    assert armed is not None
    net.apply_fault(Slow(node="h0", delay=2.0))
    assert h0.timer == armed
    net.run_until(lambda: h0.timer != armed, timeout=30)
    fired = [line for line in net.trace.lines if line.split()[1:3] == ["h0", "timer"]][-1]
    assert float(fired.split()[0]) == pytest.approx(armed + 2.0)


# --- small public helpers ----------------------------------------------------------


def test_clock_offsets_can_be_set_back_to_none() -> None:
    clock = SimClock(5.0)
    clock.set_offset("a", 2.5)
    assert clock.local("a") == 7.5
    clock.set_offset("a", 0)
    assert clock.offset("a") == 0.0
    assert clock.local("a") == 5.0


def test_sim_verifier_accepts_only_the_ed25519_scheme() -> None:
    signer = SimSigner("n")
    signature = signer.sign(b"challenge")
    verifier = SimVerifier()
    assert verifier.verify(signer.public_pem, SignatureScheme.ED25519, signature, b"challenge")
    assert not verifier.verify(
        signer.public_pem, SignatureScheme.RSA_PKCS1V15_SHA256, signature, b"challenge"
    )


def test_summarize_names_what_is_not_a_dataclass() -> None:
    assert summarize(object()) == "object"
    assert summarize(Partition(nodes=("a", "b"))) == "Partition(nodes=#2)"


# --- topology builders refuse what they cannot build --------------------------------


def test_node_specs_and_topologies_are_validated() -> None:
    with pytest.raises(ValueError, match="kind must be 'hub' or 'share'"):
        NodeSpec(name="r", kind="router", parent=None, start_at=0)
    with pytest.raises(ValueError, match="share s needs a parent hub"):
        NodeSpec(name="s", kind="share", parent=None, start_at=0)
    hub = NodeSpec(name="h", kind="hub", parent=None, start_at=0)
    share = NodeSpec(name="s", kind="share", parent="h", start_at=0)
    with pytest.raises(ValueError, match="duplicate node h"):
        Topology((hub, hub))
    with pytest.raises(ValueError, match="x: parent s is not an earlier hub"):
        Topology((hub, share, NodeSpec(name="x", kind="share", parent="s", start_at=0)))
    with pytest.raises(ValueError, match="s: parent h is not an earlier hub"):
        Topology((share, hub))
    assert Topology((hub, share)).children("h") == ["s"]


def test_chain_and_tree_refuse_impossible_shapes() -> None:
    with pytest.raises(ValueError, match="at least one hub"):
        chain(0)
    with pytest.raises(ValueError, match="depth must be >= 0 and fanout >= 1"):
        tree(-1, 2)
    with pytest.raises(ValueError, match="depth must be >= 0 and fanout >= 1"):
        tree(1, 0)
    with pytest.raises(ValueError, match="depth 1 and fanout 2 cannot hold 5 hubs"):
        tree(1, 2, hubs=5)
    with pytest.raises(ValueError, match="3 hubs do not reach depth 2"):
        tree(2, 2, hubs=3)


def test_tree_puts_shares_per_leaf_under_every_leaf_hub() -> None:
    topology = tree(1, 2, shares_per_leaf=2)
    assert topology.hubs == ["h0", "h1", "h2"]
    assert topology.children("h0") == ["h1", "h2"]
    assert topology.children("h1") == ["s0", "s1"]
    assert topology.children("h2") == ["s2", "s3"]


# --- the SimWorld oracle -----------------------------------------------------------


def test_expected_find_at_a_dead_hub_is_empty() -> None:
    alpha = b"alpha"
    topology = Topology(
        (
            NodeSpec(name="h0", kind="hub", parent=None, start_at=0.0),
            NodeSpec(name="h1", kind="hub", parent="h0", start_at=0.05),
            NodeSpec(name="s0", kind="share", parent="h0", start_at=0.1),
            NodeSpec(name="s1", kind="share", parent="h1", start_at=0.1),
        )
    )
    world = make_world(SEED, topology, {"s0": {"a.txt": alpha}, "s1": {"b.txt": b"beta"}})
    settle(world)
    assert world.expected_find("h1", sha1_hex(alpha)) == [world.ids["s0"]]
    world.network.crash("h1")
    assert world.expected_find("h1", sha1_hex(alpha)) == []
    assert world.expected_find("h0", sha1_hex(alpha)) == [world.ids["s0"]]


def test_indexes_are_not_converged_until_the_root_knows_a_new_empty_share() -> None:
    # An empty share adds no content, so only the root's list of known nodes tells
    # that its join has not gone up yet (the cut holds h1's report).
    world = make_world(SEED, chain(2, shares=1), {"s0": {"a.txt": b"alpha"}})
    settle(world)
    net = world.network
    net.partition(["h0"])
    world.add_node(NodeSpec(name="s9", kind="share", parent="h1", start_at=net.now))
    net.run_until(lambda: world.apps["s9"].synced, timeout=5)
    assert world.hub("h0").content_count() == world.expected_content_count("h0")
    assert not world.hub("h0").knows_node(world.ids["s9"])
    assert not world.indexes_converged()
    net.heal()
    settle(world, timeout=10)
    assert world.hub("h0").knows_node(world.ids["s9"])
