"""The node driver: the one task that owns a kbproto core (STYLE rule 11).

Theory of operation
-------------------
A ``NodeDriver`` runs one loop, always the same four steps:

(a) an input arrives in the *inbox* (bytes, an open, an EOF or a write failure from a
    link task; a failed dial; a command from the app) or the core's timer expires, and
    the driver calls the core with ``now = clock.now()``;
(b) it drains the core's events to the app's ``on_event`` callback, and
(c) its actions (``kbproto.pump.drain``, the helper the simulator uses too):
    ``Transmit`` goes to the link's writer in order, ``Dial`` starts a dial task,
    ``Hangup`` closes the link once what was queued before it is written;
(d) it re-reads ``get_timer()`` and waits on the inbox inside
    ``anyio.CancelScope(deadline=...)``, calling ``handle_timer`` when the scope expires.

Nothing but the driver task touches the core: link tasks and the app talk to it only
through the inbox (``call``/``post`` run a function against the core *inside* the
driver task). Each link has a reader task (``receive`` -> inbox) and a writer task
(queued ``Transmit`` bytes -> ``send``). A failed or cancelled write is reported back
to the core as the end of that link (``receive_eof``), so its streams and finds fail.

Two deliberate departures from the letter of rule 11, each for a real need:

* The inbox is a small deque plus a wake-up event, not an anyio memory object stream:
  cancelling ``MemoryObjectReceiveStream.receive()`` when the timer scope expires can
  lose an item that was handed over in the same instant (the item is assigned to the
  waiter, then the ``CancelledError`` wins). Waking on an event never loses an input.
  It is bounded like a memory object stream (``inbox_size`` items, and 64 MiB of
  received bytes): link readers wait for room, which is the back-pressure on a busy
  node.
* ``Transmit`` is not awaited in the driver task itself but appended to the link's
  writer queue, which sends in order. Awaiting each send in the one driver task would
  let one slow child stall the whole hub (every other link, every find). Per link, the
  queue is bounded by the protocol's own credit (at most one stream window per stream
  plus control frames), and back-pressure (rule 9) stops *reading* a link whose queued
  output passes ``high_water`` until it drains below ``low_water``: a peer that sends
  requests but does not read the answers stalls itself (then its heartbeat times out).

Links are anything with ``send(bytes)``, ``receive() -> bytes`` and ``aclose()``
(``kbtransport.websocket.WebSocketLink``; an in-memory double in tests). ``receive``
raising a ``TransportError`` (``WebSocketClosed`` included) is the link's end.

Why one module of some 640 lines: the loop, the inbox and the link tasks share each
link's queue, read gate and room (``_Link``); split apart, each part would reach into
the others' state. A third of the lines are this explanation and the docstrings.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup, TaskStatus

from kbproto.actions import Dial, Hangup, Transmit
from kbproto.core import NodeCore
from kbproto.events import Event
from kbproto.ids import LinkId
from kbproto.pump import drain
from kbtransport.env import Clock, wall_clock_ms
from kbtransport.errors import TransportError

__all__ = (
    "DEFAULT_HIGH_WATER",
    "DEFAULT_INBOX_SIZE",
    "DriverCore",
    "DriverStopped",
    "LinkTransport",
    "NodeDriver",
)

_log = logging.getLogger("kbtransport.driver")

#: Queued output (bytes) on one link above which we stop reading it: four default
#: stream windows, so a few busy downloads never pause a healthy link.
DEFAULT_HIGH_WATER = 16 * 1024 * 1024
#: Inputs waiting for the driver before link readers block; each is at most one
#: websocket message (16 MiB cap) or one uplink read (1 MiB).
DEFAULT_INBOX_SIZE = 256
#: Received bytes waiting for the driver before link readers block: with 1 MiB uplink
#: reads the item bound alone would allow 256 MiB. (64 MiB: what 256 items of the
#: earlier 256 KiB reads came to.) One item is always accepted, whatever its size.
_INBOX_BYTES = 64 * 1024 * 1024
#: Largest batch of queued ``Transmit`` bytes the writer joins into one message: fewer
#: websocket frames (each costs a mask pass set-up and a syscall) for one copy.
_WRITE_BATCH = 512 * 1024
#: How long a link whose reader ended waits for its writer to flush the goodbye.
_CLOSE_GRACE = 5.0

T = TypeVar("T")


class DriverStopped(TransportError):
    """The driver is not running (not started yet, or stopped); the command was not run."""


class DriverCore(NodeCore, Protocol):
    """What the driver needs of a core: ``NodeCore`` plus the outbox size per link."""

    def pending_bytes(self, link_id: LinkId) -> int:
        """Bytes queued for ``link_id`` not yet handed out as ``Transmit``."""
        ...


class LinkTransport(Protocol):
    """A message link to a peer: a websocket, or an in-memory double in tests."""

    async def send(self, data: bytes) -> None:
        """Send ``data``; raise ``TransportError`` if the link failed."""
        ...

    async def receive(self) -> bytes:
        """Return the next bytes; raise ``TransportError`` when the link ended."""
        ...

    async def aclose(self) -> None:
        """Close the link (idempotent)."""
        ...


#: Opens a link to a parent URL (``Dial.address``); raises ``TransportError``.
Dialer = Callable[[str], Awaitable[LinkTransport]]


# --- inbox items ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Opened:
    link_id: LinkId
    dialed: bool


@dataclass(frozen=True, slots=True)
class _Received:
    link_id: LinkId
    data: bytes


@dataclass(frozen=True, slots=True)
class _Ended:
    link_id: LinkId
    reason: str


@dataclass(frozen=True, slots=True)
class _DialFailed:
    reason: str


class _Waiter(Generic[T]):
    """A one-shot result slot for ``NodeDriver.call``."""

    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.value: T | None = None
        self.error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class _Command:
    fn: Callable[[float], object]
    waiter: _Waiter[object] | None


_Item = _Opened | _Received | _Ended | _DialFailed | _Command


class _Inbox:
    """A bounded FIFO with a wake-up event (see the module docstring for why)."""

    def __init__(self, capacity: int, max_bytes: int = _INBOX_BYTES) -> None:
        self._items: deque[_Item] = deque()
        self._capacity = capacity
        self._max_bytes = max_bytes
        #: Bytes of the queued ``_Received`` items.
        self._bytes = 0
        self._wakeup = anyio.Event()
        self._room = anyio.Event()
        self.closed = False

    def __len__(self) -> int:
        return len(self._items)

    def _full(self) -> bool:
        return len(self._items) >= self._capacity or (
            self._bytes >= self._max_bytes and bool(self._items)
        )

    async def put(self, item: _Item) -> None:
        while self._full() and not self.closed:
            if self._room.is_set():
                self._room = anyio.Event()
            await self._room.wait()
        self.put_nowait(item)

    def put_nowait(self, item: _Item) -> None:
        """Append ignoring the bound: failure reports and cleanups must never block."""
        if self.closed:
            raise DriverStopped("the node driver is not running")
        self._items.append(item)
        if isinstance(item, _Received):
            self._bytes += len(item.data)
        self._wakeup.set()

    async def wait(self) -> None:
        """Return once an item is queued (cancellable without losing anything)."""
        while not self._items:
            if self._wakeup.is_set():
                self._wakeup = anyio.Event()
            await self._wakeup.wait()

    def pop(self) -> _Item | None:
        if not self._items:
            return None
        item = self._items.popleft()
        if isinstance(item, _Received):
            self._bytes -= len(item.data)
        if not self._full():
            self._room.set()
        return item

    def close(self) -> list[_Item]:
        self.closed = True
        self._room.set()
        left = list(self._items)
        self._items.clear()
        self._bytes = 0
        return left


class _Link:
    """Driver-side state of one link: its transport, writer queue and read gate, and
    the room producers share in its queue (``NodeDriver.reserve``)."""

    def __init__(self, link_id: LinkId, transport: LinkTransport, low_water: int) -> None:
        self.link_id = link_id
        self.transport = transport
        self.queue: deque[bytes] = deque()
        self.queued = 0
        self.low_water = low_water
        self.hangup = False
        self.wake = anyio.Event()
        self.readable = anyio.Event()
        self.readable.set()
        self.writer_done = anyio.Event()
        #: Bytes producers reserved and have not handed to the core yet.
        self.reserved = 0
        #: Set while queued plus reserved bytes are at most ``low_water``.
        self.room = anyio.Event()
        self.room.set()

    def push(self, data: bytes) -> None:
        self.queue.append(data)
        self.queued += len(data)
        self.wake.set()
        self.update_room()

    def close_after_queue(self) -> None:
        self.hangup = True
        self.wake.set()
        self.update_room()

    def pause_reading(self) -> None:
        if self.readable.is_set():
            self.readable = anyio.Event()

    def maybe_resume(self) -> None:
        if self.queued <= self.low_water:
            self.readable.set()
        self.update_room()

    def update_room(self) -> None:
        if self.queued + self.reserved <= self.low_water or self.hangup:
            self.room.set()
        elif self.room.is_set():
            self.room = anyio.Event()


class NodeDriver:
    """Runs one core: the inbox, the four-step loop, link tasks and dials.

    Args:
        core: a ``HubCore`` or ``ShareCore`` (anything satisfying ``DriverCore``), not
            started yet: ``run`` calls ``start``.
        clock: monotonic seconds; deadlines are converted to the event loop's clock, so
            any clock running at the same rate works (``AnyioClock`` in production).
        dialer: opens a link to a parent URL (a ``Dial`` action).
        on_event: the app's handler, called in the driver task for every event; it must
            not block (it may call the core's commands through the core it was given,
            since it runs in the driver task). Exceptions it raises are logged.
        on_dial: called with the address when a dial starts (console lines).
        on_dial_failed: called with the address and the reason when one fails.
        high_water / low_water: per-link queued-output bounds for back-pressure.
        inbox_size: inputs waiting before link readers block.
        wall_clock: Unix milliseconds, read once when the core starts (it stamps the
            node's placements, docs/protocol.md §3.2); ``env.wall_clock_ms`` by default.
    """

    def __init__(
        self,
        core: DriverCore,
        *,
        clock: Clock,
        dialer: Dialer,
        on_event: Callable[[Event], None] | None = None,
        on_dial: Callable[[str], None] | None = None,
        on_dial_failed: Callable[[str, str], None] | None = None,
        high_water: int = DEFAULT_HIGH_WATER,
        low_water: int | None = None,
        inbox_size: int = DEFAULT_INBOX_SIZE,
        wall_clock: Callable[[], int] = wall_clock_ms,
    ) -> None:
        if high_water < 1 or inbox_size < 1:
            raise ValueError("high_water and inbox_size must be positive")
        self._core = core
        self._clock = clock
        self._wall_clock = wall_clock
        self._dialer = dialer
        self._on_event = on_event
        self._on_dial = on_dial
        self._on_dial_failed = on_dial_failed
        self._high_water = high_water
        self._low_water = high_water // 2 if low_water is None else low_water
        self._inbox = _Inbox(inbox_size)
        self._links: dict[LinkId, _Link] = {}
        self._next_link = 1
        self._tg: TaskGroup | None = None
        self._running = False
        self._dial_address = ""
        #: Driver steps taken. The core changes only in a step, so a pure read of it
        #: (``answer_now``) gives the same answer while this count stays the same.
        self.steps = 0

    # --- public surface -----------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True between ``run`` starting and stopping."""
        return self._running

    def link_count(self) -> int:
        """Links the driver is carrying (accepted and dialed, any state)."""
        return len(self._links)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start the core and run the loop until cancelled.

        Use ``await task_group.start(driver.run)``: it returns once the core started.
        On exit every waiting ``call`` fails with ``DriverStopped``.
        """
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                self._running = True
                self._core.start(self._clock.now(), wall_ms=self._wall_clock())
                self._flush()
                task_status.started()
                await self._loop()
        finally:
            self._running = False
            for item in self._inbox.close():
                if isinstance(item, _Command) and item.waiter is not None:
                    item.waiter.error = DriverStopped("the node driver stopped")
                    item.waiter.done.set()

    async def call(self, fn: Callable[[float], T]) -> T:
        """Run ``fn(now)`` in the driver task (the only task touching the core).

        ``fn`` typically calls core commands; the events and actions they queue are
        drained right after it returns, so an ``on_event`` handler sees events caused
        by ``fn`` only after ``fn`` returned (register interest inside ``fn``).

        Returns:
            what ``fn`` returned.

        Raises:
            whatever ``fn`` raised; ``DriverStopped`` if the driver is not running.
        """
        if not self._running:
            raise DriverStopped("the node driver is not running")
        waiter: _Waiter[object] = _Waiter()
        await self._inbox.put(_Command(fn, waiter))
        await waiter.done.wait()
        if waiter.error is not None:
            raise waiter.error
        return waiter.value  # type: ignore[return-value]

    async def reserve(self, link_id: LinkId, nbytes: int) -> None:
        """Wait for room in ``link_id``'s writer queue, then reserve ``nbytes`` of it for
        body bytes about to be handed to the core; ``unreserve`` them when they are.

        Body bytes queue behind one another in a link's writer, and so would the next
        response head or find answer: producers that wait here keep what is queued,
        with what they reserved, near the low-water mark, so one stream with many
        bytes to send (or many such streams) never puts megabytes ahead of the other
        streams' frames, and the link is never paused for reading because of them.
        Returns at once for a link that is gone or closing.
        """
        link = self._links.get(link_id)
        while (
            link is not None and not link.hangup and link.queued + link.reserved > self._low_water
        ):
            await link.room.wait()
            link = self._links.get(link_id)
        if link is not None:
            link.reserved += nbytes
            link.update_room()

    def unreserve(self, link_id: LinkId, nbytes: int) -> None:
        """``nbytes`` reserved with ``reserve`` were handed to the core (or dropped)."""
        link = self._links.get(link_id)
        if link is not None:
            link.reserved = max(0, link.reserved - nbytes)
            link.update_room()

    def post(self, fn: Callable[[float], object]) -> None:
        """Queue ``fn(now)`` to run in the driver task without waiting (never blocks).

        For clean-ups from synchronous code or cancelled tasks (reset a stream whose
        reader went away). Errors ``fn`` raises are logged. Ignored when stopped.
        """
        if self._running:
            self._inbox.put_nowait(_Command(fn, None))

    async def serve_link(
        self,
        transport: LinkTransport,
        *,
        dialed: bool = False,
        opened: Callable[[LinkId], None] | None = None,
    ) -> None:
        """Carry ``transport`` as a new link until it ends (returns then; closes it).

        A server calls this from the task of an accepted websocket; the driver calls it
        for a link it dialed (``dialed=True``). ``opened`` is told the link's id before
        the core hears of the link (so every event about it can be matched to it).

        Raises:
            DriverStopped: the driver is not running (the transport is closed).
        """
        if not self._running:
            await _aclose(transport)
            raise DriverStopped("the node driver is not running")
        link_id = LinkId(self._next_link)
        self._next_link += 1
        if opened is not None:
            opened(link_id)
        link = _Link(link_id, transport, self._low_water)
        self._links[link_id] = link
        try:
            await self._inbox.put(_Opened(link_id, dialed))
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._write_loop, link)
                await self._read_loop(link)
                # The reader reported the end; the core answers with a Hangup, after
                # which the writer flushes and returns. Bounded, whatever happens.
                with anyio.move_on_after(_CLOSE_GRACE):
                    await link.writer_done.wait()
                tg.cancel_scope.cancel()
        finally:
            self._links.pop(link_id, None)
            link.room.set()  # producers waiting for room: the link is gone
            await _aclose(transport)

    # --- the loop ---------------------------------------------------------------------

    async def _loop(self) -> None:
        inbox = self._inbox
        while True:
            # (d) wait for an input or the core's deadline.
            timer = self._core.get_timer()
            if timer is None:
                deadline = math.inf
            else:
                deadline = anyio.current_time() + (timer - self._clock.now())
            if not len(inbox):  # queued inputs need no wait (and no cancel scope)
                with anyio.CancelScope(deadline=deadline):
                    await inbox.wait()
            # (a) call the core: every queued input, then the timer if due.
            self.steps += 1
            now = self._clock.now()
            # Bound one step, so a flood of inputs cannot starve the timer.
            for _ in range(64):
                item = inbox.pop()
                if item is None:
                    break
                self._apply(item, now)
            timer = self._core.get_timer()
            if timer is not None and timer <= self._clock.now():
                self._core.handle_timer(self._clock.now())
            # (b) + (c) drain events and actions.
            self._flush()
            if len(inbox):
                # More inputs queued: yield here so other tasks run between steps (an
                # empty inbox yields in ``inbox.wait`` instead, saving a loop pass).
                await anyio.lowlevel.checkpoint()

    def _apply(self, item: _Item, now: float) -> None:
        core = self._core
        if isinstance(item, _Received):
            core.receive_data(item.link_id, item.data, now)
        elif isinstance(item, _Command):
            try:
                value = item.fn(now)
            except Exception as exc:
                if item.waiter is None:
                    _log.exception("posted command failed")
                else:
                    item.waiter.error = exc
            else:
                if item.waiter is not None:
                    item.waiter.value = value
            if item.waiter is not None:
                item.waiter.done.set()
        elif isinstance(item, _Opened):
            if item.link_id in self._links:
                core.link_opened(item.link_id, now, dialed=item.dialed)
            elif item.dialed:
                # The dialed link died before we processed its opening: a failed dial.
                core.dial_failed(now, "link closed during set-up")
        elif isinstance(item, _Ended):
            core.receive_eof(item.link_id, now)
        else:
            core.dial_failed(now, item.reason)

    def _dispatch(self, event: Event) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:
            # An app bug costs that event, not the node.
            _log.exception("event handler failed on %r", type(event).__name__)

    def _flush(self) -> None:
        drained = drain(self._core, self._dispatch)
        touched: dict[LinkId, _Link] = {}
        for action in drained.actions:
            if isinstance(action, Transmit):
                link = self._links.get(action.link_id)
                if link is not None and not link.hangup:
                    link.push(action.data)
                    touched[link.link_id] = link
            elif isinstance(action, Hangup):
                link = self._links.get(action.link_id)
                if link is not None:
                    link.close_after_queue()
            else:
                assert isinstance(action, Dial)
                assert self._tg is not None
                self._tg.start_soon(self._dial, action.address)
        for link in touched.values():
            if link.queued + self._core.pending_bytes(link.link_id) > self._high_water:
                link.pause_reading()

    # --- link and dial tasks ----------------------------------------------------------

    async def _read_loop(self, link: _Link) -> None:
        reason = "closed by peer"
        try:
            while not link.hangup:
                await link.readable.wait()
                data = await link.transport.receive()
                if data:
                    await self._inbox.put(_Received(link.link_id, data))
        except TransportError as exc:
            reason = str(exc) or type(exc).__name__
        except DriverStopped:
            return
        if self._running:
            self._inbox.put_nowait(_Ended(link.link_id, reason))

    async def _write_loop(self, link: _Link) -> None:
        try:
            while True:
                while not link.queue:
                    if link.hangup:
                        await _aclose(link.transport)
                        return
                    if link.wake.is_set():
                        link.wake = anyio.Event()
                    await link.wake.wait()
                data = link.queue.popleft()
                if link.queue and len(data) < _WRITE_BATCH:
                    parts = [data]
                    size = len(data)
                    while link.queue and size + len(link.queue[0]) <= _WRITE_BATCH:
                        part = link.queue.popleft()
                        parts.append(part)
                        size += len(part)
                    data = b"".join(parts)
                try:
                    await link.transport.send(data)
                except TransportError as exc:
                    # A failed write ends the link for the core (rule 11).
                    if self._running:
                        self._inbox.put_nowait(_Ended(link.link_id, f"write failed: {exc}"))
                    await _aclose(link.transport)
                    return
                link.queued -= len(data)
                link.maybe_resume()
        except anyio.get_cancelled_exc_class():
            # A cancelled write may have left half a message on the wire: the link is
            # unusable, and the core must hear of it if it still runs.
            if self._running and not link.hangup:
                self._inbox.put_nowait(_Ended(link.link_id, "write cancelled"))
            raise
        finally:
            link.writer_done.set()

    async def _dial(self, address: str) -> None:
        if self._on_dial is not None:
            self._on_dial(address)
        try:
            transport = await self._dialer(address)
        except TransportError as exc:
            reason = str(exc) or type(exc).__name__
            if self._on_dial_failed is not None:
                self._on_dial_failed(address, reason)
            if self._running:
                self._inbox.put_nowait(_DialFailed(reason))
            return
        try:
            await self.serve_link(transport, dialed=True)
        except DriverStopped:
            return


async def _aclose(transport: LinkTransport) -> None:
    with anyio.CancelScope(shield=True):
        try:
            await transport.aclose()
        except Exception:  # closing a broken link can fail in many ways; it is gone anyway
            _log.debug("closing a link failed", exc_info=True)
