"""A hypothesis state machine over a live simulated network of real cores.

Rules grow the network (``add_hub``, ``add_share``), break it (``kill_node``,
``restart_node``, ``partition``, ``heal``, ``kill_link``), use it (``lookup``,
``download``) and let time pass (``advance``). After every rule, the global
invariants hold on every node (buffers within the window, limits kept, a deadline
armed whenever anything waits, core and driver agree on links, one parent at most);
and nothing a client started may hang: every find and download that began more than
its deadline ago is finished, and every finished download either ended with exactly
the file's bytes or failed with a reset. At teardown, the faults are lifted and the
network must settle: everyone rejoins, indexes converge, finds from every hub agree
with the oracle, and no stream or find is left anywhere.

CI runs it derandomized with a bounded number of examples and steps.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from kbproto.config import Limits
from kbproto.sim import (
    DownloadRecord,
    FaultPlan,
    LookupRecord,
    NodeSpec,
    SimNetwork,
    SimWorld,
    build_world,
    sha1_hex,
    star,
)
from kbproto.sim.invariants import check_all_nodes
from tests.sim.scenarios import TIMEOUTS

LIMITS = Limits(stream_window=4096, data_chunk=1024)
#: A find or download must be finished this long after it started, whatever happened.
NOTHING_HANGS = (
    TIMEOUTS.heartbeat_timeout + TIMEOUTS.heartbeat_interval + 5 + (TIMEOUTS.request_timeout)
)


class NetworkMachine(RuleBasedStateMachine):
    """Random growth, faults and traffic on one network."""

    world: SimWorld
    net: SimNetwork

    @initialize(seed=st.integers(0, 2**16))
    def start(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.pool = [f"pooled content {i}".encode() * (1 + i) for i in range(12)]
        topology = star(2)
        files = {s: self._files(s) for s in topology.shares}
        self.net = SimNetwork(seed, FaultPlan(max_pieces=4), trace_frames=True)
        self.world = build_world(self.net, topology, files, limits=LIMITS, timeouts=TIMEOUTS)
        self.world.install_invariants()
        self.count = 0
        self.lookups: list[LookupRecord] = []
        self.downloads: list[tuple[DownloadRecord, bytes]] = []
        self.net.run_for(1.0)

    def _files(self, name: str) -> dict[str, bytes]:
        chosen = self.rng.sample(self.pool, 2)
        files = {f"{name}/p{i}.bin": data for i, data in enumerate(chosen)}
        files[f"{name}/big.bin"] = self.rng.randbytes(self.rng.randint(5000, 20000))
        return files

    def _running(self, kind: str) -> list[str]:
        return [
            s.name
            for s in self.world.topology.nodes
            if s.kind == kind and self.net.node(s.name).alive
        ]

    # --- growth -------------------------------------------------------------------

    @rule(data=st.data())
    def add_hub(self, data: st.DataObject) -> None:
        parent = data.draw(st.sampled_from(self.world.topology.hubs))
        self.count += 1
        spec = NodeSpec(name=f"x{self.count}", kind="hub", parent=parent, start_at=self.net.now)
        self.world.add_node(spec)

    @rule(data=st.data())
    def add_share(self, data: st.DataObject) -> None:
        parent = data.draw(st.sampled_from(self.world.topology.hubs))
        self.count += 1
        name = f"y{self.count}"
        spec = NodeSpec(name=name, kind="share", parent=parent, start_at=self.net.now)
        self.world.add_node(spec, self._files(name))

    # --- faults -------------------------------------------------------------------

    @precondition(lambda self: any(n.alive for n in self.net.nodes.values()))
    @rule(data=st.data(), silent=st.booleans())
    def kill_node(self, data: st.DataObject, silent: bool) -> None:
        running = self._running("hub") + self._running("share")
        victim = data.draw(st.sampled_from(running))
        self.net.crash(victim, silent=silent)

    @precondition(lambda self: any(not n.alive for n in self.net.nodes.values()))
    @rule(data=st.data())
    def restart_node(self, data: st.DataObject) -> None:
        dead = sorted(name for name, n in self.net.nodes.items() if not n.alive)
        self.net.restart(data.draw(st.sampled_from(dead)))

    @rule(data=st.data())
    def kill_link(self, data: st.DataObject) -> None:
        links = [(e.node, e.peer.node) for e in self.net.iter_links() if e.dialed]
        if links:
            a, b = data.draw(st.sampled_from(links))
            self.net.kill_link(a, b)

    @rule(data=st.data())
    def partition(self, data: st.DataObject) -> None:
        names = [s.name for s in self.world.topology.nodes if s.parent is not None]
        cut = data.draw(st.sampled_from(names))
        self.net.partition(self.world.topology.subtree(cut))

    @rule()
    def heal(self) -> None:
        self.net.heal()

    # --- traffic ------------------------------------------------------------------

    @precondition(lambda self: bool(self._running("hub")))
    @rule(data=st.data())
    def lookup(self, data: st.DataObject) -> None:
        hub = data.draw(st.sampled_from(self._running("hub")))
        content = data.draw(st.sampled_from(self.pool))
        self.lookups.append(self.world.apps[hub].find(self.world.nodes[hub], sha1_hex(content)))

    @precondition(lambda self: bool(self._running("hub")) and bool(self.world.topology.shares))
    @rule(data=st.data())
    def download(self, data: st.DataObject) -> None:
        hub = data.draw(st.sampled_from(self._running("hub")))
        share = data.draw(st.sampled_from(self.world.topology.shares))
        store = self.world.store(share)
        path = data.draw(st.sampled_from(sorted(store.files)))
        target = self.world.ids[share]
        if not self.world.hub(hub).can_route(target):
            return
        record = self.world.apps[hub].download(
            self.world.nodes[hub], target, f"/{target}/download/{path}"
        )
        self.downloads.append((record, store.files[path]))

    @rule(dt=st.floats(0.01, 40.0))
    def advance(self, dt: float) -> None:
        self.net.run_for(dt)

    # --- invariants ---------------------------------------------------------------

    @invariant()
    def every_node_within_bounds(self) -> None:
        if hasattr(self, "world"):
            check_all_nodes(self.net, LIMITS)

    @invariant()
    def nothing_hangs_and_no_bytes_are_wrong(self) -> None:
        if not hasattr(self, "world"):
            return
        now = self.net.now
        for lookup in self.lookups:
            assert lookup.done or now - lookup.started < NOTHING_HANGS, lookup
        for record, content in self.downloads:
            assert record.done or now - record.started < NOTHING_HANGS, record.path
            if record.done and record.ended:
                assert record.status == 200
                assert bytes(record.body) == content
            else:
                assert bytes(record.body) == content[: len(record.body)]

    def teardown(self) -> None:
        if not hasattr(self, "world"):
            return
        net, world = self.net, self.world
        net.heal()
        for name, node in list(net.nodes.items()):
            if not node.alive:
                net.restart(name)
        # Links to silently crashed nodes look healthy until heartbeats give up.
        net.run_for(TIMEOUTS.heartbeat_timeout + TIMEOUTS.heartbeat_interval)
        net.run_until(
            lambda: world.all_joined() and world.indexes_converged(),
            timeout=4 * TIMEOUTS.reconnect_max,
            poll=16,
        )
        for hub in world.topology.hubs:
            content = self.rng.choice(self.pool)
            record = world.apps[hub].find(world.nodes[hub], sha1_hex(content))
            net.run_until(lambda r=record: r.done, timeout=TIMEOUTS.lookup_timeout + 1)  # type: ignore[misc]
            assert record.share_ids == world.expected_find(hub, record.sha1), hub
        net.run_until_quiescent()


NetworkMachine.TestCase.settings = settings(
    max_examples=12,
    stateful_step_count=20,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestNetwork = NetworkMachine.TestCase
