"""The simulator's machinery, driven by a tiny echo core written here.

These tests pin what ``SimNetwork`` promises independently of the real cores: bytes
arrive whole and in order under any chunking, faults reach the cores the way real
networks deliver them (EOF after a delay, silence for half-open links, held bytes
during a partition), timers fire at their deadlines, runs are bounded and
reproducible. The protocol scenarios with the real ``HubCore``/``ShareCore`` live in
the other ``tests/sim`` modules.
"""

from __future__ import annotations

import random
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kbproto.actions import Action, Dial, Hangup, Transmit
from kbproto.events import Event, LinkClosed
from kbproto.ids import LinkId
from kbproto.sim import (
    Crash,
    FaultPlan,
    HalfOpen,
    Heal,
    KillLink,
    Partition,
    Restart,
    SimFailure,
    SimNetwork,
    SimNode,
    Slow,
)
from tests.sim.scenarios import SEED_PARAMS


class EchoCore:
    """A minimal NodeCore: a client dials ``parent`` and talks; a server echoes.

    Every link pings every ``interval`` and is closed (``timed_out``) after
    ``timeout`` seconds of silence, which is what lets half-open links be found.
    """

    def __init__(self, parent: str | None, *, interval: float = 1.0, timeout: float = 3.5):
        self.parent = parent
        self.interval = interval
        self.timeout = timeout
        self.events: deque[Event] = deque()
        self.actions: deque[Action] = deque()
        self.last_rx: dict[LinkId, float] = {}
        self.next_ping: dict[LinkId, float] = {}
        self.received: dict[LinkId, bytearray] = {}
        self.closed: list[LinkClosed] = []
        self.dial_failures: list[str] = []
        self.redial_at: float | None = None
        self.uplink: LinkId | None = None
        self.to_send: list[bytes] = []

    def start(self, now: float, *, wall_ms: int | None = None) -> None:
        if self.parent is not None:
            self.actions.append(Dial(address=self.parent))

    def link_opened(self, link_id: LinkId, now: float, *, dialed: bool = False) -> None:
        self.last_rx[link_id] = now
        self.next_ping[link_id] = now + self.interval
        self.received[link_id] = bytearray()
        if dialed:
            self.uplink = link_id
            for data in self.to_send:
                self.actions.append(Transmit(link_id=link_id, data=data))

    def dial_failed(self, now: float, reason: str) -> None:
        self.dial_failures.append(reason)
        self.redial_at = now + 1.0

    def receive_data(self, link_id: LinkId, data: bytes, now: float) -> None:
        if link_id not in self.last_rx:
            return
        self.last_rx[link_id] = now
        self.received[link_id] += data
        if self.parent is None:
            self.actions.append(Transmit(link_id=link_id, data=data))

    def _close(self, link_id: LinkId, reason: str, *, timed_out: bool) -> None:
        del self.last_rx[link_id]
        del self.next_ping[link_id]
        self.actions.append(Hangup(link_id=link_id, reason=reason))
        event = LinkClosed(
            link_id=link_id, peer_id=None, role="child", reason=reason, timed_out=timed_out
        )
        self.closed.append(event)
        self.events.append(event)
        if link_id == self.uplink:
            self.uplink = None

    def receive_eof(self, link_id: LinkId, now: float) -> None:
        if link_id in self.last_rx:
            self._close(link_id, "closed by peer", timed_out=False)

    def get_timer(self) -> float | None:
        times = list(self.next_ping.values())
        if self.redial_at is not None:
            times.append(self.redial_at)
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        if self.redial_at is not None and now >= self.redial_at:
            self.redial_at = None
            assert self.parent is not None
            self.actions.append(Dial(address=self.parent))
        for link_id in list(self.next_ping):
            if now - self.last_rx[link_id] >= self.timeout:
                self._close(link_id, "silent", timed_out=True)
            elif now >= self.next_ping[link_id]:
                self.actions.append(Transmit(link_id=link_id, data=b"."))
                self.next_ping[link_id] = now + self.interval

    def next_event(self) -> Event | None:
        return self.events.popleft() if self.events else None

    def next_action(self) -> Action | None:
        return self.actions.popleft() if self.actions else None


def _pair(
    seed: int, plan: FaultPlan | None = None, **kw: object
) -> tuple[SimNetwork, dict[str, EchoCore]]:
    net = SimNetwork(seed, plan, trace_frames=False, keep_trace=True)
    cores: dict[str, EchoCore] = {}

    def make(name: str, parent: str | None) -> object:
        def factory(node: SimNode) -> EchoCore:
            core = EchoCore(parent, **kw)  # type: ignore[arg-type]
            cores[node.name] = core
            return core

        return factory

    net.add_node("server", make("server", None))  # type: ignore[arg-type]
    net.add_node("client", make("client", "sim://server"), start_at=0.1)  # type: ignore[arg-type]
    return net, cores


def _send(net: SimNetwork, cores: dict[str, EchoCore], *chunks: bytes) -> None:
    net.run_until(lambda: "client" in cores and cores["client"].uplink is not None, timeout=5)
    client = cores["client"]
    uplink = client.uplink
    assert uplink is not None
    for data in chunks:
        client.actions.append(Transmit(link_id=uplink, data=data))
    net.node("client").command(lambda core, now: None)


def _echoed(cores: dict[str, EchoCore]) -> bytes:
    client = cores["client"]
    return bytes(b"".join(bytes(v) for v in client.received.values())).replace(b".", b"")


@pytest.mark.parametrize("seed", SEED_PARAMS)
def test_bytes_arrive_whole_and_in_order_under_chunking(seed: int) -> None:
    net, cores = _pair(seed, FaultPlan(max_pieces=50, single_byte_chance=0.9, whole_chance=0))
    payload = [bytes([65 + i % 26]) * (1 + (i * 37) % 300) for i in range(20)]
    _send(net, cores, *payload)
    net.run_until(lambda: len(_echoed(cores)) == sum(map(len, payload)), timeout=5)
    assert _echoed(cores) == b"".join(payload)
    server_rx = next(iter(cores["server"].received.values()))
    assert bytes(server_rx).replace(b".", b"") == b"".join(payload)


def test_same_seed_same_digest_and_different_seeds_differ() -> None:
    digests = []
    for seed in (7, 7, 8):
        net, cores = _pair(seed)
        _send(net, cores, b"x" * 1000, b"y" * 10)
        net.run_for(10)
        digests.append(net.trace.digest())
    assert digests[0] == digests[1]
    assert digests[0] != digests[2]


@pytest.mark.parametrize("seed", range(10))
def test_half_open_link_is_caught_only_by_heartbeats(seed: int) -> None:
    net, cores = _pair(seed)
    net.run_for(2.0)
    assert net.half_open("client", "server") == 1
    start = net.now
    net.run_until(lambda: bool(cores["client"].closed) and bool(cores["server"].closed), timeout=10)
    for name in ("client", "server"):
        (closed,) = cores[name].closed[:1]
        assert closed.timed_out, name
    # Never before the silence timeout: no EOF reached anyone.
    assert net.now - start >= 3.5 - 1.0
    assert "eof" not in " ".join(line.split()[2] for line in net.trace.lines)


def test_killed_link_gives_eof_to_both_ends_after_the_detection_delay() -> None:
    net, cores = _pair(1, FaultPlan(eof_delay=0.2, jitter=0))
    net.run_for(1.0)
    net.schedule_fault(net.now, KillLink(a="server", b="client"))
    t0 = net.now
    net.run_until(lambda: bool(cores["client"].closed) and bool(cores["server"].closed), 5)
    assert all(not c.closed[0].timed_out for c in cores.values())
    assert net.now - t0 == pytest.approx(0.205)
    # The client redials on its own timer? No: the echo client only redials on failure.
    assert not list(net.iter_links())


def test_partition_holds_bytes_and_heal_releases_them_in_order() -> None:
    net, cores = _pair(3, timeout=100.0)
    net.run_for(0.5)
    net.partition(["client"])
    client = cores["client"]
    _send(net, cores, b"abc")
    net.run_for(5.0)
    assert b"abc" not in bytes(next(iter(cores["server"].received.values())))
    assert net.quiet  # stalled bytes are not activity
    net.heal()
    net.run_for(1.0)
    assert b"abc" in bytes(next(iter(cores["server"].received.values())))
    assert not client.closed


def test_dial_into_a_partition_times_out_and_unknown_address_is_refused() -> None:
    plan = FaultPlan(connect_timeout=2.0)
    net, cores = _pair(4, plan)
    net.partition(["server"])
    net.run_until(lambda: "client" in cores and bool(cores["client"].dial_failures), timeout=5)
    assert cores["client"].dial_failures == ["connect timed out"]
    assert net.now == pytest.approx(2.1)
    net.heal()
    net.run_until(lambda: cores["client"].uplink is not None, timeout=5)

    net2 = SimNetwork(0, trace_frames=False)
    lone = EchoCore("sim://nowhere")
    net2.add_node("lone", lambda node: lone)
    net2.run_until(lambda: bool(lone.dial_failures), timeout=1)
    assert lone.dial_failures == ["connection refused"]


def test_crash_gives_peers_eof_and_restart_builds_a_fresh_core() -> None:
    net, cores = _pair(5)
    net.run_for(1.0)
    first = cores["server"]
    net.apply_fault(Crash(node="server"))
    net.run_until(lambda: bool(cores["client"].closed), timeout=2)
    assert not cores["client"].closed[0].timed_out
    net.apply_fault(Restart(node="server"))
    assert cores["server"] is not first
    assert net.node("server").incarnation == 1
    # The echo client never redials after a clean close, so dial by hand.
    client = cores["client"]
    client.actions.append(Dial(address="sim://server"))
    net.node("client").command(lambda core, now: None)
    net.run_until(lambda: client.uplink is not None, timeout=1)


def test_silent_crash_is_half_open_for_the_peers() -> None:
    net, cores = _pair(6)
    net.run_for(1.0)
    net.apply_fault(Crash(node="server", silent=True))
    net.run_until(lambda: bool(cores["client"].closed), timeout=10)
    assert cores["client"].closed[0].timed_out


def test_slow_node_receives_late() -> None:
    plan = FaultPlan(jitter=0.0, latency=0.01, whole_chance=1.0)
    net, cores = _pair(2, plan)
    net.apply_fault(Slow(node="server", delay=0.5))
    net.run_until(lambda: "client" in cores and cores["client"].uplink is not None, timeout=2)
    t0 = net.now
    _send(net, cores, b"q")
    net.run_until(lambda: b"q" in bytes(next(iter(cores["server"].received.values()))), 5)
    assert net.now - t0 == pytest.approx(0.51)


def test_scheduled_faults_from_the_plan_are_applied_and_traced() -> None:
    plan = FaultPlan(schedule=((1.0, HalfOpen(a="client", b="server")), (20.0, Heal())))
    net, cores = _pair(8, plan)
    net.run_for(30.0)
    assert cores["client"].closed[0].timed_out
    text = "\n".join(net.trace.lines)
    assert "fault - HalfOpen(a='client', b='server')" in text
    assert "fault - Heal()" in text
    assert Partition(nodes=("a",)).nodes == ("a",)
    with pytest.raises(ValueError, match="at least one node"):
        Partition(nodes=())


def test_run_until_fails_with_seed_and_trace_tail() -> None:
    net, _cores = _pair(11)
    with pytest.raises(SimFailure) as info:
        net.run_until(lambda: False, timeout=3.0)
    text = str(info.value)
    assert "seed=11" in text
    assert "trace tail:" in text
    assert "predicate still false after 3 s" in text
    assert net.now <= 3.0


def test_run_until_quiescent_is_bounded() -> None:
    class Busy:
        def on_start(self, node: SimNode) -> None:
            pass

        def on_event(self, node: SimNode, event: Event) -> None:
            pass

        def busy(self) -> bool:
            return True

    net = SimNetwork(0, trace_frames=False)
    net.add_node("s", lambda node: EchoCore(None))
    net.add_node("c", lambda node: EchoCore("sim://s"), Busy())
    with pytest.raises(SimFailure, match="not quiescent after 500 steps"):
        net.run_until_quiescent(max_steps=500)
    net2, _ = _pair(0)
    net2.run_for(0.5)
    net2.run_until_quiescent()
    assert net2.quiet


def test_invariant_failures_carry_context() -> None:
    net, _ = _pair(12)

    def never_three_steps(network: SimNetwork) -> None:
        assert network.steps < 3, "too many steps"

    net.add_invariant(never_three_steps)
    with pytest.raises(SimFailure, match="invariant never_three_steps failed: too many steps"):
        net.run_for(5)


def test_a_core_transmitting_on_a_link_it_does_not_hold_fails_the_run() -> None:
    net, cores = _pair(13)
    net.run_for(0.5)
    cores["client"].actions.append(Transmit(link_id=LinkId(999), data=b"x"))
    with pytest.raises(SimFailure, match="does not hold"):
        net.node("client").command(lambda core, now: None)


def test_clock_skew_is_seen_by_the_node_only() -> None:
    net, cores = _pair(14)
    net.clock.set_offset("client", 1000.0)
    net.run_for(10.0)
    assert net.node("client").now == pytest.approx(net.now + 1000.0)
    assert not cores["client"].closed
    assert not cores["server"].closed
    with pytest.raises(ValueError, match="cannot go back"):
        net.clock.advance_to(0.0)


@settings(derandomize=True, max_examples=200)
@given(
    data=st.binary(max_size=300),
    seed=st.integers(0, 2**32),
    pieces=st.integers(1, 40),
    whole=st.floats(0, 1),
)
def test_chunking_concatenates_to_the_input(
    data: bytes, seed: int, pieces: int, whole: float
) -> None:
    import random

    plan = FaultPlan(max_pieces=pieces, whole_chance=whole)
    out = plan.chunk(data, random.Random(seed))
    assert b"".join(out) == data
    assert all(out) or data == b""
    assert len(out) <= pieces + 2


def _reference_chunk(plan: FaultPlan, data: bytes, rng: random.Random) -> tuple[bytes, ...]:
    """``FaultPlan.chunk`` as first written, with ``rng.sample`` for every cut count."""
    n = len(data)
    if n <= 1 or plan.max_pieces == 1 or rng.random() < plan.whole_chance:
        return (data,)
    k = rng.randint(1, min(plan.max_pieces, n))
    cuts = set(rng.sample(range(1, n), k - 1))
    if rng.random() < plan.single_byte_chance:
        at = rng.randrange(0, n)
        if at:
            cuts.add(at)
        if at + 1 < n:
            cuts.add(at + 1)
    points = [0, *sorted(cuts), n]
    return tuple(data[points[i] : points[i + 1]] for i in range(len(points) - 1))


@settings(derandomize=True, max_examples=300)
@given(size=st.integers(0, 600), seed=st.integers(0, 2**32), pieces=st.integers(1, 6))
def test_chunking_draws_what_sample_draws(size: int, seed: int, pieces: int) -> None:
    # The one-cut shortcut must cut where ``sample`` would and leave the generator in
    # the same state: every recorded trace digest depends on it.
    plan = FaultPlan(max_pieces=pieces)
    data = bytes(range(256)) * 3
    ours, theirs = random.Random(seed), random.Random(seed)
    for _ in range(4):
        assert plan.chunk(data[:size], ours) == _reference_chunk(plan, data[:size], theirs)
    assert ours.getstate() == theirs.getstate()


def test_fault_plan_validation() -> None:
    with pytest.raises(ValueError, match="latency"):
        FaultPlan(latency=-1)
    with pytest.raises(ValueError, match="whole_chance"):
        FaultPlan(whole_chance=2)
    with pytest.raises(ValueError, match="max_pieces"):
        FaultPlan(max_pieces=0)
    with pytest.raises(ValueError, match="time"):
        FaultPlan(schedule=((-1.0, Heal()),))
    with pytest.raises(ValueError, match="negative"):
        Slow(node="a", delay=-1)


def test_node_names_and_addresses_are_unique() -> None:
    net = SimNetwork(0)
    net.add_node("a", lambda node: EchoCore(None))
    with pytest.raises(ValueError, match="duplicate"):
        net.add_node("a", lambda node: EchoCore(None))
    with pytest.raises(ValueError, match="bad"):
        net.add_node("b c", lambda node: EchoCore(None))
    with pytest.raises(ValueError, match="duplicate address"):
        net.add_node("b", lambda node: EchoCore(None), address="sim://a")
