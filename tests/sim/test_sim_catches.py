"""The simulator catches a misbehaving core or app, and says which seed and what broke.

A simulator that cannot catch a broken core is worthless, so each test here runs a
deliberately broken node and expects ``SimFailure`` naming the seed and the problem:
a core that hangs up a link it does not hold, dials twice at once, sends a malformed
frame, reuses a stream number or sends an oversized data frame; a core that keeps
re-arming a timer in the past; a real ``HubCore`` whose output is corrupted on the
way out; a run whose streams are left open at quiescence. ``FakeCore`` is the broken
core: a ``NodeCore`` that does nothing on its own, so each test queues exactly the
misbehaviour it wants. (Transmitting on a link a core does not hold is pinned in
``test_network.py``.)
The last tests pin the other side of the same code: apps that crash nodes from an
event handler, and nodes that die with a dial or a credit in flight, never get a
call into a dead core.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import pytest

from kbproto.actions import Action, Dial, Hangup, Transmit
from kbproto.codec import encode
from kbproto.config import Limits
from kbproto.core import NodeCore
from kbproto.events import Event, JoinRefused, ParentConnected
from kbproto.framing import KIND_CONTROL, encode_frame
from kbproto.hub import HubCore
from kbproto.ids import LinkId
from kbproto.messages import Data, Open
from kbproto.sim import (
    FaultPlan,
    NodeApp,
    NullApp,
    SimFailure,
    SimLink,
    SimNetwork,
    SimNode,
    chain,
    invariants,
    network,
    sim_node_id,
    star,
)
from tests.sim.scenarios import make_world, settle

SEED = 4242


class FakeCore:
    """A ``NodeCore`` that only does what the test queues (and dials ``parent``).

    Attributes:
        calls: every input call, as ``(method, link_id or reason)``.
        links: the links it was told about, in order.
    """

    def __init__(self, parent: str | None = None, *, on_open: Event | None = None) -> None:
        self.parent = parent
        self.on_open = on_open
        self.events: deque[Event] = deque()
        self.actions: deque[Action] = deque()
        self.timer: float | None = None
        self.calls: list[tuple[str, object]] = []
        self.links: list[LinkId] = []

    def start(self, now: float, *, wall_ms: int | None = None) -> None:
        self.calls.append(("start", None))
        if self.parent is not None:
            self.actions.append(Dial(address=self.parent))

    def link_opened(self, link_id: LinkId, now: float, *, dialed: bool = False) -> None:
        self.calls.append(("link_opened", link_id))
        self.links.append(link_id)
        if self.on_open is not None:
            self.events.append(self.on_open)

    def dial_failed(self, now: float, reason: str) -> None:
        self.calls.append(("dial_failed", reason))

    def receive_data(self, link_id: LinkId, data: bytes, now: float) -> None:
        self.calls.append(("receive_data", link_id))

    def receive_eof(self, link_id: LinkId, now: float) -> None:
        self.calls.append(("receive_eof", link_id))

    def get_timer(self) -> float | None:
        return self.timer

    def handle_timer(self, now: float) -> None:
        self.calls.append(("handle_timer", now))

    def next_event(self) -> Event | None:
        return self.events.popleft() if self.events else None

    def next_action(self) -> Action | None:
        return self.actions.popleft() if self.actions else None


def _pair(*, trace_frames: bool = False) -> tuple[SimNetwork, dict[str, FakeCore]]:
    """``client`` dials ``server``; both run a ``FakeCore``; run until the link is up."""
    net = SimNetwork(SEED, trace_frames=trace_frames, keep_trace=True)
    cores: dict[str, FakeCore] = {}

    def factory(parent: str | None) -> Callable[[SimNode], FakeCore]:
        def make(node: SimNode) -> FakeCore:
            cores[node.name] = FakeCore(parent)
            return cores[node.name]

        return make

    net.add_node("server", factory(None))
    net.add_node("client", factory("sim://server"), start_at=0.1)
    net.run_until(lambda: "client" in cores and bool(cores["client"].links), timeout=5)
    return net, cores


def _act(net: SimNetwork, name: str, cores: dict[str, FakeCore], *actions: Action) -> None:
    """Make ``name``'s core emit ``actions`` (drained by the command, as a driver would)."""
    cores[name].actions.extend(actions)
    net.node(name).command(lambda core, now: None)


def _expect(info: pytest.ExceptionInfo[SimFailure], problem: str) -> None:
    text = str(info.value)
    assert problem in text
    assert f"seed={SEED}" in text
    assert "trace tail:" in text
    assert info.value.seed == SEED


# --- a core that misbehaves toward the driver --------------------------------------


def test_a_core_hanging_up_a_link_it_does_not_hold_fails_the_run() -> None:
    net, cores = _pair()
    with pytest.raises(SimFailure) as info:
        _act(net, "client", cores, Hangup(link_id=LinkId(77), reason="bye"))
    _expect(info, "client hung up link 77, which it does not hold")


def test_a_core_hanging_up_the_same_link_twice_fails_the_run() -> None:
    net, cores = _pair()
    (link,) = cores["client"].links
    _act(net, "client", cores, Hangup(link_id=link, reason="bye"))
    with pytest.raises(SimFailure) as info:
        _act(net, "client", cores, Hangup(link_id=link, reason="bye again"))
    _expect(info, f"client hung up link {link}, which it does not hold")


def test_a_core_dialing_twice_at_once_fails_the_run() -> None:
    net = SimNetwork(SEED)
    core = FakeCore("sim://nowhere")
    core.actions.append(Dial(address="sim://elsewhere"))
    net.add_node("a", lambda node: core)
    with pytest.raises(SimFailure) as info:
        net.run_for(1.0)
    _expect(info, "a sent a second Dial while one was in flight")


def test_a_core_rearming_a_timer_in_the_past_is_declared_stuck(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The bound is 200,000 steps (seconds of spinning); a smaller one shows the same.
    monkeypatch.setattr(network, "MAX_STEPS_AT_ONE_TIME", 1000)
    net = SimNetwork(SEED, trace_frames=False)
    core = FakeCore()
    core.timer = 0.5  # never cleared by handle_timer: due again at once, forever
    net.add_node("a", lambda node: core)
    with pytest.raises(SimFailure) as info:
        net.run_for(1.0)
    _expect(info, "1000 steps without the clock moving")
    assert info.value.now == 0.5


# --- a core that misbehaves on the wire ----------------------------------------------


def test_a_core_sending_a_malformed_frame_fails_the_run() -> None:
    net, cores = _pair(trace_frames=True)
    (link,) = cores["client"].links
    with pytest.raises(SimFailure) as info:
        _act(net, "client", cores, Transmit(link_id=link, data=encode_frame(KIND_CONTROL, b"{")))
    _expect(info, f"client sent a malformed frame on link {link}")


def test_a_core_sending_a_frame_of_an_unknown_version_fails_the_run() -> None:
    net, cores = _pair(trace_frames=True)
    (link,) = cores["client"].links
    with pytest.raises(SimFailure) as info:
        _act(net, "client", cores, Transmit(link_id=link, data=b"\xff\x01\x00\x00\x00\x02{}"))
    _expect(info, f"client sent a malformed frame on link {link}")


class Corrupting:
    """A real core whose first frame on the wire gets one byte of its JSON clobbered."""

    def __init__(self, core: NodeCore) -> None:
        self.core = core
        self.done = False

    def start(self, now: float, *, wall_ms: int | None = None) -> None:
        self.core.start(now, wall_ms=wall_ms)

    def link_opened(self, link_id: LinkId, now: float, *, dialed: bool = False) -> None:
        self.core.link_opened(link_id, now, dialed=dialed)

    def dial_failed(self, now: float, reason: str) -> None:
        self.core.dial_failed(now, reason)

    def receive_data(self, link_id: LinkId, data: bytes, now: float) -> None:
        self.core.receive_data(link_id, data, now)

    def receive_eof(self, link_id: LinkId, now: float) -> None:
        self.core.receive_eof(link_id, now)

    def get_timer(self) -> float | None:
        return self.core.get_timer()

    def handle_timer(self, now: float) -> None:
        self.core.handle_timer(now)

    def next_event(self) -> Event | None:
        return self.core.next_event()

    def next_action(self) -> Action | None:
        action = self.core.next_action()
        if isinstance(action, Transmit) and not self.done:
            self.done = True
            data = action.data[:6] + b"[" + action.data[7:]  # the JSON's opening brace
            return Transmit(link_id=action.link_id, data=data)
        return action


def test_a_real_core_whose_frame_is_corrupted_fails_the_run() -> None:
    # The hub's first frame is the challenge to s0 (its app cannot drive a wrapped
    # core, so it gets a NullApp).
    world = make_world(SEED, star(1), {"s0": {"a.txt": b"alpha"}})
    h0 = world.nodes["h0"]
    real = h0.factory
    h0.factory = lambda node: Corrupting(real(node))
    h0.app = NullApp()
    with pytest.raises(SimFailure) as info:
        world.network.run_for(5.0)
    _expect(info, "h0 sent a malformed frame on link 1")


def _open(stream: int) -> bytes:
    return encode(
        Open(
            stream=stream,
            target=sim_node_id("server"),
            method="GET",
            path="/",
            headers=(),
            credit=1024,
        )
    )


def test_a_core_reusing_a_stream_number_breaks_the_wire_invariant() -> None:
    net, cores = _pair(trace_frames=True)
    invariants.install(net, Limits(), quiescent=False)
    (link,) = cores["client"].links
    _act(net, "client", cores, Transmit(link_id=link, data=_open(1) + _open(3)))
    with pytest.raises(SimFailure) as info:
        _act(net, "client", cores, Transmit(link_id=link, data=_open(3)))
    _expect(info, f"wire invariant failed on client:{link}: stream number 3 reused or going back")


def test_a_core_sending_a_data_frame_over_the_chunk_limit_breaks_the_wire_invariant() -> None:
    net, cores = _pair(trace_frames=True)
    invariants.install(net, Limits(data_chunk=16))
    (link,) = cores["client"].links
    _act(net, "client", cores, Transmit(link_id=link, data=encode(Data(stream=1, data=b"x" * 16))))
    with pytest.raises(SimFailure) as info:
        _act(
            net,
            "client",
            cores,
            Transmit(link_id=link, data=encode(Data(stream=1, data=b"y" * 17))),
        )
    _expect(info, "data frame of 17 bytes > 16")


def test_a_wire_observer_may_fail_the_run_itself() -> None:
    net, cores = _pair(trace_frames=True)

    def no_opens(end: SimLink, message: object) -> None:
        if isinstance(message, Open):
            net.fail(f"{end.node} opened a stream")

    net.frame_observers.append(no_opens)
    (link,) = cores["client"].links
    with pytest.raises(SimFailure) as info:
        _act(net, "client", cores, Transmit(link_id=link, data=_open(1)))
    _expect(info, "client opened a stream")
    assert "wire invariant" not in str(info.value)  # not wrapped a second time


def test_an_invariant_may_fail_the_run_itself() -> None:
    net, cores = _pair()

    def server_untouched(network: SimNetwork) -> None:
        if any(node.name == "server" for node in network.touched):
            network.fail("the server was touched")

    net.add_invariant(server_untouched)
    (link,) = cores["client"].links
    _act(net, "client", cores, Transmit(link_id=link, data=b"x"))
    with pytest.raises(SimFailure) as info:
        net.run_for(5.0)
    _expect(info, "the server was touched")
    assert "invariant" not in str(info.value)  # not wrapped a second time


# --- leaks at quiescence, with the real cores ----------------------------------------


def test_a_stream_left_open_at_quiescence_is_reported_as_a_leak() -> None:
    # A client that opens a request behind its app's back and never returns credit:
    # the share fills the window and waits, the network goes quiet, and the leak check
    # names the stream still open.
    world = make_world(
        SEED,
        star(1),
        {"s0": {"big.bin": bytes(5000)}},
        limits=Limits(stream_window=1024, data_chunk=512),
    )
    settle(world)
    share = world.ids["s0"]

    def open_behind_the_app(core: NodeCore, now: float) -> None:
        assert isinstance(core, HubCore)
        core.open_request(share, "GET", f"/{share}/download/big.bin", (), now=now)

    world.nodes["h0"].command(open_behind_the_app)
    with pytest.raises(SimFailure) as info:
        world.network.run_until_quiescent()
    _expect(info, "quiescence check check_no_leaks: h0 still has 1 streams")


def test_a_quiescence_check_may_fail_the_run_itself() -> None:
    net, _cores = _pair()
    net.add_quiescent_check(lambda network: network.fail("not today"))
    with pytest.raises(SimFailure) as info:
        net.run_until_quiescent()
    _expect(info, "not today")
    assert "quiescence check" not in str(info.value)


# --- nodes that die in the middle of something --------------------------------------


class CrashOn:
    """A ``NodeApp``: ``inner`` with one change, it crashes node ``victim`` (default:
    its own) the first time it sees an event of type ``kind``."""

    def __init__(self, kind: type, victim: str | None = None, inner: NodeApp | None = None):
        self.kind = kind
        self.victim = victim
        self.inner = inner if inner is not None else NullApp()
        self.fired = False

    def on_start(self, node: SimNode) -> None:
        self.inner.on_start(node)

    def on_event(self, node: SimNode, event: Event) -> None:
        self.inner.on_event(node, event)
        if isinstance(event, self.kind) and not self.fired:
            self.fired = True
            node.network.crash(self.victim or node.name)

    def busy(self) -> bool:
        return self.inner.busy()


def test_an_app_crashing_its_own_node_stops_its_actions() -> None:
    # s0's join confirmation comes with its first index report queued: the app
    # crashes the node on ParentConnected, so the report must never be sent.
    world = make_world(SEED, star(1), {"s0": {"a.txt": b"alpha"}}, keep_trace=True)
    crasher = CrashOn(ParentConnected, inner=world.apps["s0"])
    world.nodes["s0"].app = crasher
    net = world.network
    net.run_until(lambda: crasher.fired, timeout=10)
    assert not net.node("s0").alive
    assert net.node("s0").core is None
    lines = [line.split(maxsplit=4) for line in net.trace.lines if line.split()[1] == "s0"]
    joined = next(i for i, line in enumerate(lines) if "ParentConnected" in line[-1])
    assert [line[2] for line in lines[joined:]] == ["ev", "crash"]
    net.run_for(5.0)
    assert world.hub("h0").content_count() == 0


def test_an_app_crashing_the_dialer_while_its_link_opens_spares_the_dead_core() -> None:
    net = SimNetwork(SEED)
    client = FakeCore("sim://server")
    refused = JoinRefused(link_id=LinkId(1), reason="go away")
    net.add_node("server", lambda node: FakeCore(on_open=refused), CrashOn(JoinRefused, "client"))
    net.add_node("client", lambda node: client, start_at=0.1)
    net.run_for(1.0)
    assert not net.node("client").alive
    assert ("link_opened", LinkId(1)) not in client.calls
    (server_end,) = net.iter_links()  # the server's end; the client's went with it
    assert server_end.node == "server"
    assert not server_end.peer.open


def test_a_dial_failing_after_its_node_crashed_or_restarted_is_dropped() -> None:
    net = SimNetwork(SEED, FaultPlan(connect_timeout=2.0))
    cores: list[FakeCore] = []

    def make(node: SimNode) -> FakeCore:
        cores.append(FakeCore("sim://server"))
        return cores[-1]

    net.add_node("server", lambda node: FakeCore())
    net.add_node("client", make)
    net.partition(["server"])
    net.run_for(0.5)  # the dial is in flight: it times out at 2.0
    net.crash("client")
    net.run_for(0.5)
    net.restart("client")  # the new core dials again, due at 3.0
    net.run_for(1.5)
    assert ("dial_failed", "connect timed out") not in cores[0].calls
    assert ("dial_failed", "connect timed out") not in cores[1].calls
    net.run_for(1.0)
    assert cores[1].calls.count(("dial_failed", "connect timed out")) == 1


def test_a_late_credit_for_a_restarted_node_is_dropped() -> None:
    # The client returns credit 0.5 s after consuming; it restarts before that, so the
    # credit belongs to a stream its new core never had and must not reach it.
    world = make_world(
        SEED,
        chain(1, shares=1),
        {"s0": {"f.bin": bytes(3000)}},
        limits=Limits(stream_window=1024, data_chunk=512),
        credit_delay=0.5,
    )
    settle(world)
    net = world.network
    h0 = world.nodes["h0"]
    record = world.apps["h0"].download(h0, world.ids["s0"], f"/{world.ids['s0']}/download/f.bin")
    net.run_until(lambda: len(record.body) > 0, timeout=10)
    net.restart("h0")
    assert record.done
    assert record.reset_reason == "node restarted"
    net.run_for(1.0)  # the credit falls due here
    net.run_until_quiescent()


def test_a_node_app_calling_commands_from_an_event_handler_keeps_the_drain_order() -> None:
    # SimApp.find from inside on_event: the command does not drain on its own, the
    # surrounding drain sends the find after everything already queued.
    world = make_world(SEED, chain(2, shares=1), {"s0": {"a.txt": b"alpha"}})
    h1 = world.nodes["h1"]
    sim_app = world.apps["h1"]
    records = []

    class FindOnJoin:
        def on_start(self, node: SimNode) -> None:
            sim_app.on_start(node)

        def on_event(self, node: SimNode, event: Event) -> None:
            sim_app.on_event(node, event)
            if isinstance(event, ParentConnected):
                records.append(sim_app.find(node, "0" * 40))

        def busy(self) -> bool:
            return sim_app.busy()

    h1.app = FindOnJoin()
    settle(world)
    world.network.run_until(lambda: bool(records) and records[0].done, timeout=30)
    assert records[0].results == ()


def test_the_leak_check_looks_at_apps_only_when_they_are_sim_apps() -> None:
    world = make_world(SEED, star(0), {})
    world.nodes["h0"].app = NullApp()
    world.network.run_until_quiescent()
    invariants.check_no_leaks(world.network)
