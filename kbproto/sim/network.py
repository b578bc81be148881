"""``SimNetwork``: a seeded scheduler that runs real cores over simulated links.

Strategy
--------
The whole contact of a core with the world is ``start``, ``link_opened``,
``dial_failed``, ``receive_data``, ``receive_eof``, ``handle_timer``, ``get_timer``,
``next_event`` and ``next_action`` (``kbproto.core.NodeCore``). The network plays
the driver for every node at once:

* One heap of ``(due, seq, kind, payload)``: ``seq`` comes from a counter, so ties
  always resolve in the order things were scheduled (STYLE section 2). A step pops
  one item, jumps the clock to it, makes exactly one call into one core, then drains
  that core with ``kbproto.pump.drain`` (the same helper the real driver uses) and
  turns its actions into new heap items.
* Each link direction is a FIFO of ``(due, piece)``; only its head sits in the heap.
  That makes "never reorder within a link" structural, lets a partition *stall* a
  direction (nothing in the heap, bytes kept) and lets ``heal`` restart it, all
  without reordering.
* Core timers are heap items too, tagged with a per-node generation: when a node's
  ``get_timer()`` changes, the old item goes stale and is skipped when popped.
* App scripts (``NodeApp``) see every event a node emits and may call the core's
  commands from inside ``on_event`` (the surrounding drain picks up what they queue),
  or at any time through ``SimNode.command`` (which drains afterwards).

Cost: a step is one call into a core plus its drain, and the simulator's own share of
it is kept small because scenarios run tens of thousands of nodes and millions of
steps (docs/benchmarks.md, "Simulator speed"): heap items are plain tuples pushed
inline, links point at their ``SimNode``, partitions are only looked at while one
exists, and the trace hashes its lines in batches.

Determinism: one ``random.Random(seed)`` for the network, and per-node generators
``Random(f"{seed}/{name}")`` for each node's app and ``IdSource`` (with the node's
incarnation, so a restarted node draws fresh nonces). No set or hash order reaches
any output: nodes and links live in dicts (insertion order).

Nothing here can spin forever: every run method has a bound on steps and on
simulated time, and a bound on steps that do not advance the clock; crossing one
raises ``SimFailure`` with the seed and the tail of the trace (as aioquic's
``roundtrip_until_done`` assertion does).
"""

from __future__ import annotations

import itertools
import random
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import fields, is_dataclass
from heapq import heappop as _heappop
from heapq import heappush as _heappush
from typing import Any, NoReturn, Protocol, TypeVar, cast

from kbproto.actions import Dial, Hangup, Transmit
from kbproto.codec import decode
from kbproto.core import NodeCore
from kbproto.errors import ProtocolError
from kbproto.events import Event
from kbproto.framing import FrameBuffer
from kbproto.ids import LinkId, SeededIdSource
from kbproto.messages import Message
from kbproto.pump import drain
from kbproto.sim.clock import SimClock
from kbproto.sim.faults import (
    Crash,
    Fault,
    FaultPlan,
    HalfOpen,
    Heal,
    KillLink,
    Partition,
    Restart,
    Slow,
)
from kbproto.sim.tracelog import TraceLog
from kbproto.trace import TraceRecord

__all__ = (
    "CoreFactory",
    "NodeApp",
    "NullApp",
    "SimFailure",
    "SimLink",
    "SimNetwork",
    "SimNode",
    "summarize",
)

T = TypeVar("T")

# Heap item kinds. Ints, not an Enum: they are compared and hashed in the hot loop.
_FLOW = 0  # the head piece of one link direction is due
_OPEN = 1  # a dial connects
_DIAL_FAIL = 2  # a dial fails
_TIMER = 3  # a node's get_timer() deadline
_CALL = 4  # a scripted callable (node start, app script, test hook)
_FAULT = 5  # a scheduled fault

#: Steps allowed without the clock moving before the run is declared stuck. A core
#: that keeps re-arming a timer in the past would otherwise spin at one instant.
MAX_STEPS_AT_ONE_TIME = 200_000

#: ``trace_frames`` decodes a frame of at most this many payload bytes only once per
#: ``_FRAME_CACHE_SIZE`` distinct frames.
_CACHED_FRAME_BYTES = 512
_FRAME_CACHE_SIZE = 4096


class SimFailure(AssertionError):
    """A simulated run broke a bound or an invariant.

    The message carries the seed, the simulated time, the step count and the trace
    tail, so a failing seed can be replayed and read without re-running.
    """

    def __init__(self, message: str, *, seed: object, now: float, steps: int, tail: list[str]):
        body = "\n".join(tail)
        super().__init__(
            f"{message}\nseed={seed!r} now={now:.6f} steps={steps}\ntrace tail:\n{body}"
        )
        self.seed = seed
        self.now = now


class NodeApp(Protocol):
    """The application script of one node: sees its events, may call its core."""

    def on_start(self, node: SimNode) -> None:
        """The node's core was (re)built and started (may call commands)."""
        ...

    def on_event(self, node: SimNode, event: Event) -> None:
        """Handle one event (may call the core's commands with ``node.now``)."""
        ...

    def busy(self) -> bool:
        """True while the app waits for something (keeps ``run_until_quiescent`` going)."""
        ...


class NullApp:
    """An app that ignores every event and never waits for anything."""

    def on_start(self, node: SimNode) -> None:
        """Do nothing."""

    def on_event(self, node: SimNode, event: Event) -> None:
        """Ignore ``event``."""

    def busy(self) -> bool:
        """Never busy."""
        return False


#: Builds a fresh core for ``node`` (called at start and at every restart). Use
#: ``node.id_source()`` for its ``IdSource`` and ``node.trace_sink`` for its trace.
CoreFactory = Callable[["SimNode"], NodeCore]


class SimLink:
    """One end of a simulated link: the node-local id and the FIFO toward the peer.

    Attributes:
        node: the owning node's name.
        host: the owning ``SimNode`` (the same node as ``node``, without a lookup).
        link_id: the ``LinkId`` the owning core knows this link by.
        peer: the other end.
        dialed: True on the dialer's end.
        open: False once the owning core hung up (or the owner crashed).
        sending: False once bytes from this end can no longer reach the peer.
        blackhole: bytes from this end vanish with no EOF (half-open).
        queued_bytes: bytes sent from this end and not yet delivered.
        max_queued_bytes: the most ``queued_bytes`` ever was.
    """

    __slots__ = (
        "_frames",
        "blackhole",
        "dialed",
        "host",
        "incarnation",
        "last_due",
        "link_id",
        "max_queued_bytes",
        "node",
        "open",
        "peer",
        "queue",
        "queued_bytes",
        "scheduled",
        "sending",
        "serial",
        "stalled",
    )

    def __init__(self, host: SimNode, link_id: LinkId, incarnation: int, serial: int, dialed: bool):
        self.host = host
        self.node = host.name
        self.link_id = link_id
        self.incarnation = incarnation
        self.serial = serial
        self.dialed = dialed
        self.peer: SimLink = self
        self.open = True
        self.sending = True
        self.blackhole = False
        self.stalled = False
        self.scheduled = False
        self.queue: deque[tuple[float, bytes | None]] = deque()
        self.queued_bytes = 0
        self.max_queued_bytes = 0
        self.last_due = 0.0
        self._frames: FrameBuffer | None = None


class SimNode:
    """The harness around one node: its current core, its app and its links.

    Attributes:
        name: unique name (used in traces and for per-node random generators).
        address: the URL other nodes ``Dial`` to reach it.
        app: the node's application script.
        core: the current core (replaced on restart).
        alive: False between a crash and a restart.
        incarnation: 0 at first start, +1 per restart.
        links: the node's open link ends by ``LinkId``.
        dialed_links: how many of ``links`` this node dialed (kept by the network as
            it adds and removes links, so the parent-link invariant needs no walk).
        rng: the node's own seeded generator (for its app).
    """

    def __init__(
        self,
        network: SimNetwork,
        name: str,
        address: str,
        factory: CoreFactory,
        app: NodeApp,
    ) -> None:
        self.network = network
        self.name = name
        self.address = address
        self.factory = factory
        self.app = app
        self.core: NodeCore | None = None
        self.alive = False
        self.started = False
        self.incarnation = -1
        self.links: dict[LinkId, SimLink] = {}
        self.dialed_links = 0
        self.dialing = False
        self.timer: float | None = None
        self.timer_gen = 0
        self.slow = 0.0
        self.silent_crash = False
        self.rng = random.Random(f"{network.seed}/{name}")
        self._next_link = 0
        self._draining = False

    @property
    def now(self) -> float:
        """The time this node sees (shared clock plus its skew)."""
        return self.network.clock.local(self.name)

    def id_source(self) -> SeededIdSource:
        """A seeded ``IdSource`` unique to this node and incarnation."""
        return SeededIdSource(f"{self.network.seed}/{self.name}/{self.incarnation}")

    @property
    def trace_sink(self) -> _NodeTraceSink:
        """A ``TraceSink`` that writes the core's records into the run trace."""
        return _NodeTraceSink(self.network, self.name)

    def command(self, fn: Callable[[NodeCore, float], T]) -> T:
        """Call ``fn(core, now)`` and return its result; then drain the core.

        Inside an app's ``on_event`` the drain is left to the surrounding one, so
        actions keep their order.

        Raises:
            SimFailure: the node is not running.
        """
        core = self.core
        if core is None or not self.alive:
            self.network.fail(f"command on {self.name}, which is not running")
        result = fn(core, self.now)
        if not self._draining:
            self.network._drain(self)
        return result

    def link_to(self, other: str) -> SimLink | None:
        """This node's open link end whose peer is ``other``, if any (latest first)."""
        for end in reversed(list(self.links.values())):
            if end.peer.node == other:
                return end
        return None

    def _on_event(self, event: Event) -> None:
        self.network._on_event(self, event)

    def _new_link_id(self) -> LinkId:
        # Never reused across restarts, so a stale delivery can never hit a new link.
        self._next_link += 1
        return LinkId(self._next_link)


class _NodeTraceSink:
    """Forwards a core's ``TraceRecord``s into the run trace."""

    __slots__ = ("_name", "_network")

    def __init__(self, network: SimNetwork, name: str) -> None:
        self._network = network
        self._name = name

    def record(self, record: TraceRecord) -> None:
        self._network.trace.add(
            self._network.clock.now,
            self._name,
            f"core.{record.category}",
            record.link_id,
            record.detail,
        )


def summarize(obj: object) -> str:
    """A short, stable one-line summary of a message, event or action for traces."""
    name = type(obj).__name__
    if not is_dataclass(obj):
        return name
    parts: list[str] = []
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, bytes):
            parts.append(f"{f.name}=<{len(value)}b>")
        elif isinstance(value, tuple):
            shares = [getattr(item, "kbshare_id", None) for item in value]
            if value and all(isinstance(share, str) for share in shares):
                # Find results: which shares answered matters, so show them.
                parts.append(f"{f.name}=[{','.join(str(s) for s in shares)}]")
            else:
                parts.append(f"{f.name}=#{len(value)}")
        elif is_dataclass(value):
            node_id = getattr(value, "node_id", None)
            parts.append(f"{f.name}={node_id if node_id is not None else type(value).__name__}")
        elif isinstance(value, str):
            parts.append(f"{f.name}={value[:24]!r}")
        elif isinstance(value, float):
            parts.append(f"{f.name}={value:.6f}")
        else:
            parts.append(f"{f.name}={value!r}")
    return f"{name}({', '.join(parts)})"


class SimNetwork:
    """A deterministic network of nodes driven by one seeded scheduler.

    Args:
        seed: fixes every random choice of the run.
        plan: latency, chunking and scheduled faults.
        keep_trace: keep every trace line (``trace.lines``), not just the tail.
        trace_frames: decode every ``Transmit`` into messages for the trace (slower,
            far more readable; also checks that cores only send well-formed frames).
        check_every_step: run the registered invariants after every step.
    """

    def __init__(
        self,
        seed: int | str,
        plan: FaultPlan | None = None,
        *,
        keep_trace: bool = False,
        trace_frames: bool = True,
        check_every_step: bool = True,
    ) -> None:
        self.seed = seed
        self.plan = plan if plan is not None else FaultPlan()
        self.rng = random.Random(f"{seed}/network")
        self.clock = SimClock()
        self.trace = TraceLog(keep=keep_trace)
        self.trace_frames = trace_frames
        self.check_every_step = check_every_step
        self.nodes: dict[str, SimNode] = {}
        self._by_address: dict[str, SimNode] = {}
        self._heap: list[tuple[float, int, int, object]] = []
        self._seq = itertools.count()
        self._serial = itertools.count()
        self._pending = 0
        self._cuts: list[frozenset[str]] = []
        self._stalled: dict[int, SimLink] = {}
        self._invariants: list[Callable[[SimNetwork], None]] = []
        self._frame_cache: dict[tuple[int, bytes], tuple[Message, str]] = {}
        #: Nodes drained during the current step (per-step invariants check only these).
        self.touched: list[SimNode] = []
        #: Called with ``(link end, message)`` for every message a core sends (only
        #: with ``trace_frames``): wire-level invariants hook in here.
        self.frame_observers: list[Callable[[SimLink, Message], None]] = []
        self._quiescent_checks: list[Callable[[SimNetwork], None]] = []
        #: Steps taken so far (one heap item each).
        self.steps = 0
        #: Pieces delivered (``receive_data`` calls).
        self.deliveries = 0
        #: Events drained from all cores.
        self.events = 0
        self._same_time_steps = 0
        for when, fault in self.plan.schedule:
            self._push(when, _FAULT, fault)

    # --- building -------------------------------------------------------------------

    def add_node(
        self,
        name: str,
        factory: CoreFactory,
        app: NodeApp | None = None,
        *,
        address: str | None = None,
        start_at: float | None = None,
    ) -> SimNode:
        """Register a node; it starts at ``start_at`` (default: now).

        Args:
            name: unique, no spaces (it appears in trace lines).
            factory: builds the node's core, at start and at every restart.
            app: its application script (default ``NullApp``).
            address: the URL others dial (default ``sim://<name>``).
            start_at: absolute simulated time of the node's start.

        Raises:
            ValueError: a duplicate name or address, or a name with whitespace.
        """
        if name in self.nodes or not name or any(ch.isspace() for ch in name):
            raise ValueError(f"bad or duplicate node name {name!r}")
        address = address if address is not None else f"sim://{name}"
        if address in self._by_address:
            raise ValueError(f"duplicate address {address!r}")
        node = SimNode(self, name, address, factory, app if app is not None else NullApp())
        self.nodes[name] = node
        self._by_address[address] = node
        when = self.clock.now if start_at is None else max(start_at, self.clock.now)
        self._push(when, _CALL, ("start", name, self._start_node))
        return node

    def schedule(self, when: float, label: str, fn: Callable[[SimNetwork], None]) -> None:
        """Run ``fn(network)`` at absolute simulated time ``when`` (a scripted step)."""
        self._push(max(when, self.clock.now), _CALL, (label, "-", fn))

    def schedule_fault(self, when: float, fault: Fault) -> None:
        """Apply ``fault`` at absolute simulated time ``when``."""
        self._push(max(when, self.clock.now), _FAULT, fault)

    def add_invariant(self, check: Callable[[SimNetwork], None]) -> None:
        """Run ``check(network)`` after every step; it raises AssertionError to fail."""
        self._invariants.append(check)

    def add_quiescent_check(self, check: Callable[[SimNetwork], None]) -> None:
        """Run ``check(network)`` whenever ``run_until_quiescent`` reaches quiescence."""
        self._quiescent_checks.append(check)

    @property
    def now(self) -> float:
        """The shared simulated time."""
        return self.clock.now

    def node(self, name: str) -> SimNode:
        """The node called ``name`` (KeyError if there is none)."""
        return self.nodes[name]

    def iter_links(self) -> Iterator[SimLink]:
        """Every open link end of every live node, in a stable order."""
        for node in self.nodes.values():
            yield from node.links.values()

    # --- failing --------------------------------------------------------------------

    def fail(self, message: str) -> NoReturn:
        """Raise ``SimFailure`` with the seed, the time and the trace tail."""
        raise SimFailure(
            message, seed=self.seed, now=self.clock.now, steps=self.steps, tail=self.trace.tail()
        )

    def check_invariants(self) -> None:
        """Run every registered per-step invariant now."""
        for check in self._invariants:
            try:
                check(self)
            except SimFailure:
                raise
            except AssertionError as exc:
                self.fail(f"invariant {getattr(check, '__name__', check)!s} failed: {exc}")

    # --- running --------------------------------------------------------------------

    def _push(self, when: float, kind: int, payload: object) -> None:
        # Every kind but timers (``_set_timer`` pushes those itself).
        self._pending += 1
        _heappush(self._heap, (when, next(self._seq), kind, payload))

    def _clean_head(self) -> None:
        # Drop stale timer items at the head so peeking sees a real due time.
        heap = self._heap
        while heap and heap[0][2] == _TIMER:
            node, gen = cast("tuple[SimNode, int]", heap[0][3])
            if node.alive and node.timer_gen == gen:
                return
            _heappop(heap)

    def next_due(self) -> float | None:
        """The time of the next thing that will happen, or None if nothing will."""
        self._clean_head()
        return self._heap[0][0] if self._heap else None

    @property
    def quiet(self) -> bool:
        """True when nothing but core timers is scheduled (no bytes, dials, scripts)."""
        return self._pending == 0

    def step(self) -> bool:
        """Process the next due item (one call into one core, then drain it).

        Returns:
            False if nothing at all is scheduled.
        """
        heap = self._heap
        self._clean_head()
        if not heap:
            return False
        due, _seq, kind, payload = _heappop(heap)
        if due > self.clock.now:
            self.clock.advance_to(due)
            self._same_time_steps = 0
        else:
            self._same_time_steps += 1
            if self._same_time_steps > MAX_STEPS_AT_ONE_TIME:
                self.fail(f"{MAX_STEPS_AT_ONE_TIME} steps without the clock moving")
        self.steps += 1
        self.touched.clear()
        # Most steps are pieces and timers: test for them first.
        if kind == _FLOW:
            self._pending -= 1
            self._flow(cast("SimLink", payload))
        elif kind == _TIMER:
            self._fire_timer(cast("tuple[SimNode, int]", payload)[0])
        else:
            self._pending -= 1
            self._step_other(kind, payload)
        if self.check_every_step and self._invariants:
            self.check_invariants()
        return True

    def _step_other(self, kind: int, payload: object) -> None:
        if kind == _OPEN:
            self._open(*cast("tuple[str, int, str]", payload))
        elif kind == _DIAL_FAIL:
            self._dial_fail(*cast("tuple[str, int, str]", payload))
        elif kind == _CALL:
            label, who, fn = cast("tuple[str, str, Callable[[Any], None]]", payload)
            if who != "-":
                fn(who)
            else:
                self.trace.add(self.clock.now, "-", "call", None, label)
                fn(self)
        else:
            assert kind == _FAULT
            self.apply_fault(cast("Fault", payload))

    def run_until(
        self,
        predicate: Callable[[], bool],
        timeout: float,
        *,
        max_steps: int = 2_000_000,
        poll: int = 1,
    ) -> None:
        """Step until ``predicate()`` holds.

        Args:
            predicate: checked before the first step, then every ``poll`` steps and
                whenever nothing but timers is scheduled (an expensive whole-network
                predicate can be polled less often; the run then stops up to
                ``poll - 1`` steps late, deterministically, and never sleeps through
                an idle stretch with it unchecked).
            timeout: simulated seconds allowed.
            max_steps: steps allowed.
            poll: steps between predicate checks.

        Raises:
            SimFailure: simulated time would pass ``now + timeout``, ``max_steps`` steps
                were taken, or nothing is left to happen.
        """
        deadline = self.clock.now + timeout
        start = self.steps
        while ((self.steps - start) % poll and self._pending) or not predicate():
            due = self.next_due()
            if due is None:
                self.fail("run_until: nothing left to happen and the predicate is false")
            if due > deadline:
                self.fail(f"run_until: predicate still false after {timeout:g} s")
            if self.steps - start >= max_steps:
                self.fail(f"run_until: predicate still false after {max_steps} steps")
            self.step()

    def run_for(self, seconds: float, *, max_steps: int = 2_000_000) -> None:
        """Run everything due in the next ``seconds`` of simulated time, then stop there.

        Raises:
            SimFailure: more than ``max_steps`` steps were needed.
        """
        end = self.clock.now + seconds
        start = self.steps
        while True:
            due = self.next_due()
            if due is None or due > end:
                break
            if self.steps - start >= max_steps:
                self.fail(f"run_for: more than {max_steps} steps in {seconds:g} s")
            self.step()
        self.clock.advance_to(end)

    def run_until_quiescent(self, max_steps: int = 500_000, *, timeout: float = 3600.0) -> None:
        """Run until no bytes, dials or scripts are pending and no app is busy.

        Core timers alone (heartbeats) do not count as activity. Then run the
        registered quiescence checks.

        Raises:
            SimFailure: ``max_steps`` or ``timeout`` was crossed first, or a
                quiescence check failed.
        """
        deadline = self.clock.now + timeout
        start = self.steps
        while True:
            due = self.next_due()
            # Quiescent: nothing but future timers is scheduled and no app waits.
            idle = self._pending == 0 and (due is None or due > self.clock.now)
            if idle and not self._apps_busy():
                break
            if due is None:
                self.fail("run_until_quiescent: an app is busy but nothing is scheduled")
            if due > deadline:
                self.fail(f"run_until_quiescent: not quiescent after {timeout:g} s")
            if self.steps - start >= max_steps:
                self.fail(f"run_until_quiescent: not quiescent after {max_steps} steps")
            self.step()
        for check in self._quiescent_checks:
            try:
                check(self)
            except SimFailure:
                raise
            except AssertionError as exc:
                self.fail(f"quiescence check {getattr(check, '__name__', check)!s}: {exc}")

    def _apps_busy(self) -> bool:
        return any(node.alive and node.app.busy() for node in self.nodes.values())

    # --- calling cores --------------------------------------------------------------

    def _start_node(self, name: str) -> None:
        node = self.nodes[name]
        if node.alive:
            return
        node.incarnation += 1
        node.alive = True
        node.started = True
        node.core = node.factory(node)
        self.trace.add(self.clock.now, name, "start", None, f"incarnation {node.incarnation}")
        node._draining = True
        try:
            node.core.start(node.now)
            node.app.on_start(node)
        finally:
            node._draining = False
        self._drain(node)

    def _on_event(self, node: SimNode, event: Event) -> None:
        self.events += 1
        self.trace.add(self.clock.now, node.name, "ev", None, summarize(event))
        node.app.on_event(node, event)

    def _drain(self, node: SimNode) -> None:
        core = node.core
        assert core is not None
        self.touched.append(node)
        node._draining = True
        try:
            drained = drain(core, node._on_event)
        finally:
            node._draining = False
        for action in drained.actions:
            if not node.alive or node.core is not core:
                break  # an app crashed its own node from an event handler
            # Transmits first: they are most of the actions.
            if isinstance(action, Transmit):
                self._transmit(node, action)
            elif isinstance(action, Dial):
                self._dial(node, action)
            else:
                assert isinstance(action, Hangup)
                self._hangup(node, action)
        if node.alive and node.core is core and drained.timer != node.timer:
            self._set_timer(node, drained.timer)

    def _set_timer(self, node: SimNode, timer: float | None) -> None:
        # Called only with a timer that differs from ``node.timer``.
        node.timer = timer
        node.timer_gen += 1
        if timer is not None:
            when = timer - self.clock.offset(node.name) + node.slow
            now = self.clock.now
            due = when if when > now else now
            _heappush(self._heap, (due, next(self._seq), _TIMER, (node, node.timer_gen)))

    def _fire_timer(self, node: SimNode) -> None:
        core = node.core
        assert core is not None
        assert node.timer is not None
        # A skewed node may see a time a rounding error short of its own deadline.
        now = max(node.now, node.timer)
        self.trace.add(self.clock.now, node.name, "timer", None, f"{node.timer:.6f}")
        node.timer = None  # re-read from the core after the call, re-armed if needed
        node.timer_gen += 1
        core.handle_timer(now)
        self._drain(node)

    # --- links ----------------------------------------------------------------------

    def _dial(self, node: SimNode, action: Dial) -> None:
        if node.dialing:
            self.fail(f"{node.name} sent a second Dial while one was in flight")
        node.dialing = True
        self.trace.add(self.clock.now, node.name, "dial", None, action.address)
        target = self._by_address.get(action.address)
        if target is None or target is node:
            delay, outcome = self.plan.connect_latency, "connection refused"
        elif not self.connected(node.name, target.name) or (
            not target.alive and target.silent_crash
        ):
            delay, outcome = self.plan.connect_timeout, "connect timed out"
        elif not target.alive:
            delay, outcome = self.plan.connect_latency, "connection refused"
        else:
            delay, outcome = self.plan.connect_latency, ""
        when = self.clock.now + delay + node.slow
        if outcome:
            self._push(when, _DIAL_FAIL, (node.name, node.incarnation, outcome))
        else:
            assert target is not None
            self._push(when, _OPEN, (node.name, node.incarnation, target.name))

    def _dial_fail(self, name: str, incarnation: int, reason: str) -> None:
        node = self.nodes[name]
        if not node.alive or node.incarnation != incarnation:
            return
        node.dialing = False
        self.trace.add(self.clock.now, name, "dial-failed", None, reason)
        core = node.core
        assert core is not None
        core.dial_failed(node.now, reason)
        self._drain(node)

    def _open(self, name: str, incarnation: int, target_name: str) -> None:
        node = self.nodes[name]
        if not node.alive or node.incarnation != incarnation:
            return
        target = self.nodes[target_name]
        if not target.alive or not self.connected(name, target_name):
            reason = "connect timed out" if target.alive or target.silent_crash else "refused"
            self._dial_fail(name, incarnation, reason)
            return
        node.dialing = False
        mine = SimLink(node, node._new_link_id(), node.incarnation, next(self._serial), True)
        theirs = SimLink(
            target, target._new_link_id(), target.incarnation, next(self._serial), False
        )
        mine.peer, theirs.peer = theirs, mine
        node.links[mine.link_id] = mine
        node.dialed_links += 1
        target.links[theirs.link_id] = theirs
        self.trace.add(
            self.clock.now, name, "open", mine.link_id, f"to {target_name}:{theirs.link_id}"
        )
        target_core, core = target.core, node.core
        assert target_core is not None
        assert core is not None
        target_core.link_opened(theirs.link_id, target.now)
        self._drain(target)
        if node.alive and node.incarnation == incarnation and mine.open:
            core.link_opened(mine.link_id, node.now, dialed=True)
            self._drain(node)

    def _transmit(self, node: SimNode, action: Transmit) -> None:
        end = node.links.get(action.link_id)
        if end is None:
            self.fail(f"{node.name} transmitted on link {action.link_id}, which it does not hold")
        data = action.data
        now = self.clock.now
        if self.trace_frames:
            self._trace_frames(end, data)
        else:
            self.trace.add(now, node.name, "tx", end.link_id, f"{len(data)}b")
        if not end.sending:
            return
        plan, rng = self.plan, self.rng
        slow = end.peer.host.slow
        for piece in plan.chunk(data, rng):
            self._enqueue(end, piece, now + plan.delay(rng) + slow)

    def _trace_frames(self, end: SimLink, data: bytes) -> None:
        frames = end._frames
        if frames is None:
            frames = end._frames = FrameBuffer()
        try:
            frames.feed(data)
            while (frame := frames.next_frame()) is not None:
                message, summary = self._decoded(frame)
                self.trace.add(self.clock.now, end.node, "tx", end.link_id, summary)
                for observe in self.frame_observers:
                    try:
                        observe(end, message)
                    except SimFailure:
                        raise
                    except AssertionError as exc:
                        self.fail(f"wire invariant failed on {end.node}:{end.link_id}: {exc}")
        except ProtocolError as exc:
            self.fail(f"{end.node} sent a malformed frame on link {end.link_id}: {exc}")

    def _decoded(self, frame: tuple[int, bytes]) -> tuple[Message, str]:
        # Most frames repeat byte for byte (pings, acks, credits): decode and
        # summarize each small one once. Messages are frozen, so sharing is safe; the
        # cache is emptied when full, so it stays small and the run stays the same.
        cached = self._frame_cache.get(frame)
        if cached is None:
            message = decode(*frame)
            cached = (message, summarize(message))
            if len(frame[1]) <= _CACHED_FRAME_BYTES:
                if len(self._frame_cache) >= _FRAME_CACHE_SIZE:
                    self._frame_cache.clear()
                self._frame_cache[frame] = cached
        return cached

    def _enqueue(self, end: SimLink, piece: bytes | None, due: float) -> None:
        if due < end.last_due:
            due = end.last_due
        end.last_due = due
        end.queue.append((due, piece))
        if piece is not None:
            queued = end.queued_bytes = end.queued_bytes + len(piece)
            if queued > end.max_queued_bytes:
                end.max_queued_bytes = queued
        if not end.scheduled and not end.stalled:
            end.scheduled = True
            self._pending += 1
            _heappush(self._heap, (end.queue[0][0], next(self._seq), _FLOW, end))

    def _drop_queue(self, end: SimLink) -> None:
        end.queue.clear()
        end.queued_bytes = 0

    def _flow(self, end: SimLink) -> None:
        end.scheduled = False
        # A half-open end (``blackhole``) dropped its queue and, no longer ``sending``,
        # never queues again: the empty queue is all that stops it.
        if not end.queue:
            return
        peer = end.peer
        if self._cuts and not self.connected(end.node, peer.node):
            # A partition: TCP keeps the bytes and retries; ``heal`` restarts the flow.
            end.stalled = True
            self._stalled[end.serial] = end
            return
        queue = end.queue
        piece = queue.popleft()[1]
        if piece is not None:
            end.queued_bytes -= len(piece)
        if queue:
            end.scheduled = True
            due = queue[0][0]
            now = self.clock.now
            self._pending += 1
            _heappush(self._heap, (due if due > now else now, next(self._seq), _FLOW, end))
        target = peer.host
        if not (target.alive and target.incarnation == peer.incarnation and peer.open):
            return  # the receiving end is gone: the bytes fall on the floor (an RST)
        core = target.core
        assert core is not None
        if piece is None:
            self.trace.add(self.clock.now, peer.node, "eof", peer.link_id, "")
            core.receive_eof(peer.link_id, target.now)
        else:
            self.deliveries += 1
            core.receive_data(peer.link_id, piece, target.now)
        self._drain(target)

    def _hangup(self, node: SimNode, action: Hangup) -> None:
        end = node.links.pop(action.link_id, None)
        if end is None:
            self.fail(f"{node.name} hung up link {action.link_id}, which it does not hold")
        if end.dialed:
            node.dialed_links -= 1
        self.trace.add(self.clock.now, node.name, "hangup", end.link_id, action.reason[:60])
        end.open = False
        if end.sending:
            end.sending = False
            self._enqueue(
                end, None, self.clock.now + self.plan.delay(self.rng) + self.plan.eof_delay
            )

    def _pairs_between(self, a: str, b: str) -> list[SimLink]:
        node = self.nodes[a]
        return [end for end in node.links.values() if end.peer.node == b]

    def connected(self, a: str, b: str) -> bool:
        """True unless a partition separates ``a`` and ``b``."""
        return all((a in cut) == (b in cut) for cut in self._cuts)

    # --- faults ---------------------------------------------------------------------

    def apply_fault(self, fault: Fault) -> None:
        """Apply ``fault`` now (also used for the plan's schedule)."""
        self.trace.add(self.clock.now, "-", "fault", None, summarize(fault))
        if isinstance(fault, KillLink):
            self.kill_link(fault.a, fault.b)
        elif isinstance(fault, HalfOpen):
            self.half_open(fault.a, fault.b)
        elif isinstance(fault, Partition):
            self.partition(fault.nodes)
        elif isinstance(fault, Heal):
            self.heal()
        elif isinstance(fault, Crash):
            self.crash(fault.node, silent=fault.silent)
        elif isinstance(fault, Restart):
            self.restart(fault.node)
        else:
            assert isinstance(fault, Slow)
            self.set_slow(fault.node, fault.delay)

    def _kill_end(self, end: SimLink) -> None:
        # Bytes in flight are lost; the peer learns of it after the detection delay.
        self._drop_queue(end)
        self._stalled.pop(end.serial, None)
        end.stalled = False
        if end.sending:
            end.sending = False
            self._enqueue(
                end, None, self.clock.now + self.plan.delay(self.rng) + self.plan.eof_delay
            )

    def kill_link(self, a: str, b: str) -> int:
        """Kill every link between ``a`` and ``b``: both ends get EOF. Returns how many."""
        ends = self._pairs_between(a, b)
        for end in ends:
            self._kill_end(end)
            self._kill_end(end.peer)
        return len(ends)

    def half_open(self, a: str, b: str) -> int:
        """Make every link between ``a`` and ``b`` silent both ways. Returns how many."""
        ends = self._pairs_between(a, b)
        for end in ends:
            for side in (end, end.peer):
                side.blackhole = True
                side.sending = False
                self._drop_queue(side)
        return len(ends)

    def partition(self, nodes: tuple[str, ...] | list[str]) -> None:
        """Cut ``nodes`` off from all others until ``heal`` (bytes are held, not lost)."""
        self._cuts.append(frozenset(nodes))

    def heal(self) -> None:
        """End every partition and restart every stalled link direction, in order."""
        self._cuts.clear()
        stalled = list(self._stalled.values())
        self._stalled.clear()
        for end in stalled:
            end.stalled = False
            if end.queue and not end.scheduled:
                end.scheduled = True
                self._push(self.clock.now + self.plan.delay(self.rng), _FLOW, end)

    def crash(self, name: str, *, silent: bool = False) -> None:
        """Stop ``name``: drop its core; peers see EOF (or, if ``silent``, nothing)."""
        node = self.nodes[name]
        if not node.alive:
            return
        self.trace.add(self.clock.now, name, "crash", None, "silent" if silent else "eof")
        node.alive = False
        node.silent_crash = silent
        node.dialing = False
        node.timer = None
        node.timer_gen += 1
        for end in list(node.links.values()):
            end.open = False
            if silent:
                for side in (end, end.peer):
                    side.blackhole = True
                    side.sending = False
                    self._drop_queue(side)
            else:
                self._kill_end(end)
                self._drop_queue(end.peer)
                end.peer.sending = False
        node.links.clear()
        node.dialed_links = 0
        node.core = None

    def restart(self, name: str) -> None:
        """Start ``name`` again with a fresh core of the same identity (crash it first)."""
        node = self.nodes[name]
        if node.alive:
            self.crash(name)
        node.silent_crash = False
        self._start_node(name)

    def set_slow(self, name: str, delay: float) -> None:
        """Delay everything ``name`` processes from now on by ``delay`` seconds."""
        node = self.nodes[name]
        node.slow = delay
        if node.alive and node.timer is not None:
            # Re-arm the pending timer with the new delay.
            timer, node.timer = node.timer, None
            self._set_timer(node, timer)
