"""The NodeDriver's four-step loop over in-memory links (no sockets).

Real cores on both ends; links are pairs of memory object streams. Checks: a share
dials and joins a hub through the driver; the core's timers fire (handshake timeout on
a silent link, redial after a failed dial); a failed write is reported to the core;
reading pauses while a link's output is above the high-water mark; commands run in
the driver task and their errors reach the caller; a stopped driver refuses commands.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import anyio
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from kbproto import HubConfig, HubCore, SeededIdSource, ShareConfig, ShareCore
from kbproto.errors import LocalProtocolError
from kbproto.events import (
    ChildJoined,
    Event,
    IndexSynced,
    LinkClosed,
    LookupResolved,
    ParentConnected,
)
from kbproto.ids import LinkId
from kbtransport.driver import DriverStopped, LinkTransport, NodeDriver, _Inbox, _Received
from kbtransport.env import AnyioClock
from kbtransport.errors import ConnectError, ReadError, WriteError
from tests.helpers import CryptoVerifier, Ed25519Signer, sha1_of
from tests.transport.node_helpers import FAST

pytestmark = pytest.mark.anyio


class MemoryLink:
    """One end of an in-memory message link (a ``LinkTransport``)."""

    def __init__(
        self,
        send: MemoryObjectSendStream[bytes],
        receive: MemoryObjectReceiveStream[bytes],
    ) -> None:
        self._send = send
        self._receive = receive
        self.sent = 0
        self.receives = 0
        self.closed = False
        self.fail_writes = False
        self.block_writes: anyio.Event | None = None

    async def send(self, data: bytes) -> None:
        if self.block_writes is not None:
            await self.block_writes.wait()
        if self.fail_writes or self.closed:
            raise WriteError("broken pipe (test)")
        try:
            await self._send.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise WriteError("peer gone") from exc
        self.sent += len(data)

    async def receive(self) -> bytes:
        self.receives += 1
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError) as exc:
            raise ReadError("closed") from exc

    async def aclose(self) -> None:
        self.closed = True
        await self._send.aclose()
        await self._receive.aclose()


def link_pair() -> tuple[MemoryLink, MemoryLink]:
    a_send, b_receive = anyio.create_memory_object_stream[bytes](math.inf)
    b_send, a_receive = anyio.create_memory_object_stream[bytes](math.inf)
    return MemoryLink(a_send, a_receive), MemoryLink(b_send, b_receive)


def hub_core(name: str = "hub") -> HubCore:
    config = HubConfig(name=name, listen_url="http://hub:3240", timeouts=FAST)
    return HubCore(
        config, signer=Ed25519Signer(1), verifier=CryptoVerifier(), ids=SeededIdSource(name)
    )


def share_core(parent: str | None = "http://hub:3240") -> ShareCore:
    config = ShareConfig(
        name="share", listen_url="http://share:2000", parent_url=parent, timeouts=FAST
    )
    return ShareCore(config, signer=Ed25519Signer(2), ids=SeededIdSource("share"))


class Recorder:
    """Collects events and lets a test wait for one."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._changed = anyio.Event()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()

    async def wait_for(self, kind: type, timeout: float = 5.0) -> Event:
        with anyio.fail_after(timeout):
            while True:
                for event in self.events:
                    if isinstance(event, kind):
                        return event
                self._changed = anyio.Event()
                await self._changed.wait()


async def no_dial(address: str) -> LinkTransport:
    raise ConnectError(f"no dialing in this test ({address})")


def dialer_to(hub: NodeDriver, tg: anyio.abc.TaskGroup) -> Callable[[str], object]:
    """A dialer whose links are accepted by ``hub`` (like a websocket upgrade)."""

    async def dial(address: str) -> LinkTransport:
        ours, theirs = link_pair()
        tg.start_soon(hub.serve_link, theirs)
        return ours

    return dial


async def test_share_joins_hub_and_finds_through_the_driver() -> None:
    hub_events, share_events = Recorder(), Recorder()
    share = share_core()
    data = b"hello"
    share.set_files([(sha1_of(data), "a.txt", len(data))], 0.0)
    async with anyio.create_task_group() as tg:
        hcore = hub_core()
        hub = NodeDriver(hcore, clock=AnyioClock(), dialer=no_dial, on_event=hub_events)
        await tg.start(hub.run)
        dialed: list[str] = []
        inner = dialer_to(hub, tg)

        async def dial(address: str) -> LinkTransport:
            dialed.append(address)
            link = await inner(address)  # type: ignore[misc]
            assert isinstance(link, MemoryLink)
            return link

        sharer = NodeDriver(share, clock=AnyioClock(), dialer=dial, on_event=share_events)
        await tg.start(sharer.run)
        joined = await hub_events.wait_for(ChildJoined)
        assert isinstance(joined, ChildJoined)
        assert joined.info.name == "share"
        connected = await share_events.wait_for(ParentConnected)
        assert isinstance(connected, ParentConnected)
        assert connected.info.name == "hub"
        assert dialed == ["http://hub:3240"]
        assert hub.link_count() == 1
        assert sharer.link_count() == 1

        # Once the hub acknowledged the index, a find issued at the hub through
        # call() is answered by an event.
        await share_events.wait_for(IndexSynced)
        sha1 = sha1_of(data)
        lookup = await hub.call(lambda now: hcore.find(sha1, now))
        with anyio.fail_after(5):
            while not any(
                isinstance(e, LookupResolved) and e.lookup_id == lookup for e in hub_events.events
            ):
                await anyio.sleep(0.01)
        resolved = [e for e in hub_events.events if isinstance(e, LookupResolved)]
        assert resolved[0].results[0].path == "a.txt"
        tg.cancel_scope.cancel()


async def test_timer_fires_handshake_timeout_on_a_silent_link() -> None:
    events = Recorder()
    async with anyio.create_task_group() as tg:
        hub = NodeDriver(hub_core(), clock=AnyioClock(), dialer=no_dial, on_event=events)
        await tg.start(hub.run)
        _ours, theirs = link_pair()
        tg.start_soon(hub.serve_link, theirs)
        # Nothing is ever sent on ``ours``: only the core's deadline can end the link.
        start = anyio.current_time()
        closed = await events.wait_for(LinkClosed, timeout=FAST.handshake_timeout + 3)
        assert isinstance(closed, LinkClosed)
        assert closed.timed_out
        # Never before the earliest deadline that can close a silent link.
        earliest = min(FAST.handshake_timeout, FAST.heartbeat_timeout)
        assert anyio.current_time() - start >= earliest * 0.9
        # The hub challenged us first (a Transmit went out through the writer).
        assert theirs.sent > 0
        with anyio.fail_after(5):
            while hub.link_count():
                await anyio.sleep(0.02)
        tg.cancel_scope.cancel()


async def test_failed_dials_are_reported_and_redialed_with_backoff() -> None:
    attempts: list[float] = []
    failures: list[tuple[str, str]] = []

    async def refuse(address: str) -> LinkTransport:
        attempts.append(anyio.current_time())
        raise ConnectError("connection refused (test)")

    async with anyio.create_task_group() as tg:
        driver = NodeDriver(
            share_core(),
            clock=AnyioClock(),
            dialer=refuse,
            on_dial_failed=lambda address, reason: failures.append((address, reason)),
        )
        await tg.start(driver.run)
        with anyio.fail_after(FAST.reconnect_max * 3 + 2):
            while len(attempts) < 3:
                await anyio.sleep(0.02)
        tg.cancel_scope.cancel()
    assert failures[0] == ("http://hub:3240", "connection refused (test)")
    # Redials wait for the core's backoff timer: never immediately.
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert all(gap >= FAST.reconnect_min * 0.5 * 0.9 for gap in gaps)


async def test_failed_write_is_reported_to_the_core() -> None:
    events = Recorder()
    async with anyio.create_task_group() as tg:
        hub = NodeDriver(hub_core(), clock=AnyioClock(), dialer=no_dial, on_event=events)
        await tg.start(hub.run)
        _ours, theirs = link_pair()
        theirs.fail_writes = True
        tg.start_soon(hub.serve_link, theirs)
        closed = await events.wait_for(LinkClosed)
        assert isinstance(closed, LinkClosed)
        # Reported as the link's end at once, not found later by a heartbeat deadline.
        assert not closed.timed_out
        with anyio.fail_after(5):
            while hub.link_count():
                await anyio.sleep(0.02)
        tg.cancel_scope.cancel()


async def test_reading_pauses_above_the_high_water_mark() -> None:
    async with anyio.create_task_group() as tg:
        hub = NodeDriver(hub_core(), clock=AnyioClock(), dialer=no_dial, high_water=1)
        await tg.start(hub.run)
        ours, theirs = link_pair()
        theirs.block_writes = anyio.Event()
        tg.start_soon(hub.serve_link, theirs)
        # The hub's Challenge is queued but cannot be written: output > high water.
        await anyio.sleep(0.1)
        receives = theirs.receives
        await ours.send(b"\x01")  # half a frame header: harmless, just bytes to read
        await anyio.sleep(0.2)
        assert theirs.receives == receives  # the reader did not come back for more
        theirs.block_writes.set()  # the writer drains: reading resumes
        with anyio.fail_after(5):
            while theirs.receives == receives:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()


async def test_call_runs_in_the_driver_and_raises_errors_to_the_caller() -> None:
    core = share_core(parent=None)
    driver = NodeDriver(core, clock=AnyioClock(), dialer=no_dial)
    with pytest.raises(DriverStopped):
        await driver.call(lambda now: None)
    async with anyio.create_task_group() as tg:
        await tg.start(driver.run)
        assert await driver.call(lambda now: core.file_count()) == 0
        with pytest.raises(LocalProtocolError):
            await driver.call(lambda now: core.find("not-a-sha1", now))
        driver.post(lambda now: core.put_file("a" * 40, "x.dat", 3, now))
        assert await driver.call(lambda now: core.file_count()) == 1
        tg.cancel_scope.cancel()
    assert not driver.running
    with pytest.raises(DriverStopped):
        await driver.call(lambda now: None)


async def test_inbox_is_bounded_by_received_bytes_too() -> None:
    inbox = _Inbox(256, max_bytes=3000)
    for _ in range(3):
        await inbox.put(_Received(LinkId(1), b"x" * 1000))
    done: list[bool] = []

    async def put_one_more() -> None:
        await inbox.put(_Received(LinkId(1), b"y" * 5000))
        done.append(True)

    async with anyio.create_task_group() as tg:
        tg.start_soon(put_one_more)
        await anyio.wait_all_tasks_blocked()
        assert not done  # 3,000 bytes queued: the reader waits
        assert inbox.pop() is not None
        await anyio.wait_all_tasks_blocked()
        assert done  # room again; one item is taken whatever its size
    assert len(inbox) == 3
    # Past the byte bound (7,000 queued) only pops make room.
    assert inbox._full()
    while len(inbox) > 1:
        inbox.pop()
    assert inbox._full()  # the 5,000-byte item alone is still over the bound
    inbox.pop()
    assert not inbox._full()


async def test_producers_wait_for_room_in_a_links_queue_and_share_it() -> None:
    async with anyio.create_task_group() as tg:
        core = hub_core()
        hub = NodeDriver(core, clock=AnyioClock(), dialer=no_dial, high_water=64)
        await tg.start(hub.run)
        _ours, theirs = link_pair()
        theirs.block_writes = anyio.Event()
        tg.start_soon(hub.serve_link, theirs)
        await anyio.sleep(0.1)  # the Challenge (more than the low water, 32) is queued
        (link_id,) = await hub.call(lambda now: core.link_ids())
        granted: list[int] = []

        async def producer(n: int) -> None:
            await hub.reserve(link_id, 10)
            granted.append(n)

        for n in range(3):
            tg.start_soon(producer, n)
        await anyio.sleep(0.2)
        assert granted == []  # the queue is past the low-water mark: everyone waits
        theirs.block_writes.set()  # the writer drains the queue
        with anyio.fail_after(5):
            while len(granted) < 3:
                await anyio.sleep(0.01)
                # Each reservation counts until its bytes reach the core: three of 10
                # bytes fit under the low-water mark of 32, one after the other.
        hub.unreserve(link_id, 30)
        await hub.reserve(link_id, 40)  # an empty queue takes a piece of any size
        hub.unreserve(link_id, 40)
        await hub.reserve(LinkId(999), 10)  # no such link: nothing to wait for
        tg.cancel_scope.cancel()
