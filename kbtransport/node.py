"""A running kbucket node: the async facade over a core and its ``NodeDriver``.

Theory of operation
-------------------
``Node`` wraps one core and its ``NodeDriver``. Everything the app asks of the core goes
through ``driver.call``/``driver.post`` (STYLE rule 11); ``_on_event`` runs in the
driver task, never blocks, and hands each event to the part it belongs to:

* finds: ``find`` returns the ``LookupResolved``/``LookupFailed`` event of one find
  (answered at once, without the driver, when this node's own index settles it);
* proxied streams: ``open_request`` (``kbtransport.proxy_stream``) and the requests
  this node serves (``kbtransport.served_streams``);
* links: a child's join settles its attempt (``kbtransport.links``), and the console
  hooks hear of parents and children coming and going.

``kbtransport.serve.serve_node`` puts a node on the network (listener, HTTP routes,
parent dial).
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import anyio
from anyio.abc import TaskStatus

from kbproto.errors import LocalProtocolError
from kbproto.events import (
    ChildJoined,
    Event,
    IndexSynced,
    JoinRefused,
    LinkClosed,
    LookupFailed,
    LookupResolved,
    ParentConnected,
    PlacementRefused,
    RequestReceived,
    ResponseData,
    ResponseEnded,
    ResponseStarted,
    StreamReset,
    StreamWritable,
)
from kbproto.hub import HubCore
from kbproto.ids import LinkId, LookupId, NodeId
from kbproto.messages import FindResult, NodeInfo
from kbproto.share import ShareCore
from kbtransport.driver import DEFAULT_HIGH_WATER, DriverStopped, LinkTransport, NodeDriver
from kbtransport.env import AnyioClock, Clock
from kbtransport.http import App, Request, Response, error_response
from kbtransport.join_guard import JoinBudget, RefusalSummary
from kbtransport.links import ChildLinks, ParentDialer
from kbtransport.listener import BoundAddress
from kbtransport.metrics import NodeMetrics, ServerCounters
from kbtransport.proxy_stream import ProxyResponse, ProxyStreams
from kbtransport.ratelimit import UploadLimiter
from kbtransport.served_streams import ServedStreams
from kbtransport.stream_budget import StreamBudget

__all__ = (
    "IMMEDIATE_LOOKUP",
    "FindAnswer",
    "Node",
    "NodeCoreType",
    "NodeHooks",
    "NodeSnapshot",
)

#: The cores a node runs.
NodeCoreType = HubCore | ShareCore
#: What ``Node.find`` returns.
FindAnswer = LookupResolved | LookupFailed
#: The ``lookup_id`` of a ``Node.find`` answer given at once, without a find in the core.
IMMEDIATE_LOOKUP = LookupId(-1)
#: Events of proxied streams (``kbtransport.proxy_stream``, ``kbtransport.served_streams``).
_STREAM_EVENTS = (
    RequestReceived,
    ResponseData,
    ResponseEnded,
    ResponseStarted,
    StreamReset,
    StreamWritable,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeHooks:
    """Console-line callbacks; each runs in one of the node's tasks and must not block.

    Attributes:
        on_listening: the listener is bound (before the core starts).
        on_dial: a dial to the parent URL starts (``Connecting to parent hub: <url>``).
        on_dial_failed: ``(url, reason)``: the dial failed (a redial is scheduled).
        on_parent_connected: joined the parent (``Connected to parent hub: <name>``).
        on_parent_lost: the parent link closed (reason); the core redials.
        on_join_refused: the parent refused us (one line, docs/protocol.md).
        on_child_joined / on_child_left: hubs print one line per child
            (``info.name``, ``info.node_id``, ``info.node_type``; left: also a reason).
        on_placement_refused: ``(child, node_id, reason)``: a child reported a node id
            without a valid placement (the first per link; it was dropped).
        on_index_synced: the parent acknowledged the index (entry count).
        on_join_failed: ``(client, reason)``: a child's join failed (refused by the
            core, timed out, dropped) or was refused by the join rate limit; at most
            ``JoinBudget.log_lines`` calls per ``JoinBudget.log_window``. ``client``
            is the address (an IPv6 /64); ``reason`` comes from the network in part.
        on_join_failures_summary: the failed joins of a window past those lines.
    """

    on_listening: Callable[[BoundAddress], None] | None = None
    on_dial: Callable[[str], None] | None = None
    on_dial_failed: Callable[[str, str], None] | None = None
    on_parent_connected: Callable[[NodeInfo], None] | None = None
    on_parent_lost: Callable[[str], None] | None = None
    on_join_refused: Callable[[str], None] | None = None
    on_child_joined: Callable[[NodeInfo], None] | None = None
    on_child_left: Callable[[NodeInfo, str], None] | None = None
    on_placement_refused: Callable[[NodeInfo, str, str], None] | None = None
    on_index_synced: Callable[[int], None] | None = None
    on_join_failed: Callable[[str, str], None] | None = None
    on_join_failures_summary: Callable[[RefusalSummary], None] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeSnapshot:
    """What nodeinfo shows: this node, its parent (if joined) and its children."""

    info: NodeInfo
    parent_info: NodeInfo | None
    children: tuple[NodeInfo, ...]


class _LookupWait:
    __slots__ = ("answer", "done")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.answer: FindAnswer | None = None


class Node:
    """A core, its driver, and the app-side glue (see the module docstring).

    Args:
        core: a ``HubCore`` or ``ShareCore``, not started.
        clock: the clock for ``now`` (``AnyioClock`` by default).
        dialer: opens a link to a parent URL (default: ``kbtransport.links.ParentDialer``
            with ``client_ssl``, ``dial_timeout`` and ``uplink``).
        hooks: console callbacks.
        client_ssl: TLS context for ``wss`` parents (system store if None).
        dial_timeout: seconds for one dial (connect, TLS, handshake).
        high_water: per-link back-pressure bound (``NodeDriver``).
        uplink: as a child, offer to send link bytes on a raw upgraded connection
            (``kbtransport.uplink``: no websocket masking or framing on the bulk
            direction); the parent may decline. On by default.
        counters: the counters of this node's HTTP server (its ``ServerConfig.
            counters``), reported in ``metrics``.
        stream_budget: how proxied streams are shared among HTTP clients
            (``kbtransport.stream_budget``; the defaults if None).
        join_budget: how fast one address may retry after failed joins
            (``kbtransport.join_guard``; the defaults if None).
        upload_limit: the node's upload rate limit for the bodies it serves through
            the tree (the one its HTTP server uses too: ``ServerConfig.upload_limit``);
            None sends at full speed.

    Attributes:
        clock: the node's clock.
        metrics: what the node counts (``kbtransport.metrics``; nodeinfo reports it).
        http_app: the node's whole HTTP app, as its listener serves it (set by
            ``serve_node``): for app code that asks the network the way an HTTP
            client would.
    """

    def __init__(
        self,
        core: NodeCoreType,
        *,
        clock: Clock | None = None,
        dialer: Callable[[str], Awaitable[LinkTransport]] | None = None,
        hooks: NodeHooks | None = None,
        client_ssl: ssl.SSLContext | None = None,
        dial_timeout: float = 10.0,
        high_water: int | None = None,
        uplink: bool = True,
        counters: ServerCounters | None = None,
        stream_budget: StreamBudget | None = None,
        join_budget: JoinBudget | None = None,
        upload_limit: UploadLimiter | None = None,
    ) -> None:
        self._core = core
        self.hooks = hooks if hooks is not None else NodeHooks()
        self.node_id: NodeId = core.node_id
        self.info: NodeInfo = core.info
        self.is_hub = isinstance(core, HubCore)
        self.http_app: App = _not_found_app
        self.clock: Clock = clock if clock is not None else AnyioClock()
        # ``started`` is set when the node runs (the clock may need the event loop).
        self.metrics = NodeMetrics(
            started=0.0, server=counters if counters is not None else ServerCounters()
        )
        if dialer is None:
            dialer = ParentDialer(ssl_context=client_ssl, timeout=dial_timeout, uplink=uplink)
        self.driver = NodeDriver(
            core,
            clock=self.clock,
            dialer=dialer,
            on_event=self._on_event,
            on_dial=self.hooks.on_dial,
            on_dial_failed=self.hooks.on_dial_failed,
            high_water=high_water if high_water is not None else DEFAULT_HIGH_WATER,
        )
        self._lookups: dict[LookupId, _LookupWait] = {}
        self._streams = ProxyStreams(core, self.driver, stream_budget)
        self._served = ServedStreams(core, self.driver, self.metrics, upload_limit)
        self._children_links = ChildLinks(
            self.driver,
            self.clock,
            join_budget,
            on_join_failed=self.hooks.on_join_failed,
            on_join_failures_summary=self.hooks.on_join_failures_summary,
        )
        self._children: dict[LinkId, NodeInfo] = {}

    @property
    def request_app(self) -> App:
        """Serves requests addressed to this node (set by ``serve_node`` to the node's
        own routes; a 404 answer until then)."""
        return self._served.app

    @request_app.setter
    def request_app(self, app: App) -> None:
        self._served.app = app

    # --- running ----------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the driver (and the tasks serving requests) until cancelled.

        ``await task_group.start(node.run)`` returns once the core has started.
        """
        self.metrics.started = self.clock.now()
        try:
            async with anyio.create_task_group() as tg:
                self._served.start(tg)
                self._children_links.start(tg)
                await tg.start(self.driver.run)
                task_status.started()
        finally:
            # Nobody waits forever on a node that stopped.
            for wait in self._lookups.values():
                wait.done.set()
            self._lookups.clear()
            self._streams.stop()
            self._served.stop()

    # --- links ------------------------------------------------------------------------

    def child_upgrade(self, request: Request) -> Response:
        """Answer a child's websocket upgrade (``kbtransport.links.ChildLinks.upgrade``)."""
        return self._children_links.upgrade(request)

    def uplink_accept(self, request: Request, token: str) -> Response:
        """Answer a child's uplink upgrade (``kbtransport.links.ChildLinks.uplink_accept``)."""
        return self._children_links.uplink_accept(request, token)

    def uplink_count(self) -> int:
        """Child links sending upward on their own uplink connection (``kbtransport.uplink``)."""
        return self._children_links.uplink_count()

    # --- app commands -----------------------------------------------------------------

    def answer_now(self, sha1: str, share_id: str | None = None) -> tuple[FindResult, ...] | None:
        """The results of ``find`` if this node gives them at once, else None.

        A synchronous read of the core: its own file, its direct shares (a non-empty
        tuple), or "not found" at the top of the tree (``()``). None means ``find``
        would ask other nodes through the driver.

        Raises:
            LocalProtocolError: malformed ``sha1`` or ``share_id``.
            DriverStopped: the node is not running.
        """
        if not self.driver.running:
            raise DriverStopped("the node driver is not running")
        # STYLE rule 11 keeps every *mutation* of the core in the driver task. This is a
        # read: ``answer_now`` is pure (no state change, event, action or trace), it
        # runs on the event-loop thread that runs the driver, and nothing awaits
        # between the read and its use, so it sees the core between two driver steps
        # exactly as the driver would. It saves the round trip through the driver (two
        # task switches and an event per find), most of a hub's cost of a find.
        return self._core.answer_now(sha1, share_id=share_id)

    async def find(self, sha1: str, share_id: str | None = None) -> FindAnswer:
        """Find ``sha1`` in the network (or only on share ``share_id``).

        Returns:
            ``LookupResolved`` (with ``results``) or ``LookupFailed``; the core's
            lookup timeout bounds the wait.

        An answer this node gives at once from its own index (``answer_now``) skips
        the driver and carries ``lookup_id`` ``IMMEDIATE_LOOKUP`` (-1: no find was
        started in the core).

        Raises:
            LocalProtocolError: malformed ``sha1`` or ``share_id``.
            DriverStopped: the node is not running.
        """
        results = self.answer_now(sha1, share_id)
        if results is not None:
            sid = NodeId(share_id) if share_id is not None else None
            if results:
                return LookupResolved(
                    lookup_id=IMMEDIATE_LOOKUP, sha1=sha1, share_id=sid, results=results
                )
            return LookupFailed(
                lookup_id=IMMEDIATE_LOOKUP, sha1=sha1, share_id=sid, reason="not found"
            )
        wait = _LookupWait()

        def start(now: float) -> LookupId:
            lookup_id = self._core.find(sha1, now, share_id=share_id)
            self._lookups[lookup_id] = wait
            return lookup_id

        await self.driver.call(start)
        if not wait.done.is_set():  # usually answered in the same driver step
            await wait.done.wait()
        if wait.answer is None:
            raise DriverStopped("the node stopped")
        return wait.answer

    async def open_request(
        self,
        node_id: str,
        method: str,
        path: str,
        headers: tuple[tuple[str, str], ...] = (),
        *,
        client: str | None = None,
    ) -> ProxyResponse:
        """Send ``method path`` to node ``node_id`` through the tree; await the head.

        Use the result as an async context manager (or call ``aclose``) so an unread
        body resets the stream. Timeouts are the core's (``request_timeout`` for the
        head, ``stream_idle_timeout`` for the body: a 504 reset).

        Args:
            client: the address of the HTTP client this request is made for: the
                stream counts against that client's share (``StreamBudget``). None
                (this node's own requests) counts against nothing.

        Raises:
            StreamResetError: reset before the head (404 unknown node, 429 the
                client's share of streams is used up, 502, 503, 504).
            LocalProtocolError: ``node_id`` is this node or the request is malformed.
            DriverStopped: the node is not running.
        """
        return await self._streams.open(node_id, method, path, headers, client)

    async def snapshot(self) -> NodeSnapshot:
        """This node's info, its parent's (if joined) and its joined children."""

        def read(now: float) -> NodeSnapshot:
            core = self._core
            children = (
                tuple(info for _, info in core.children()) if isinstance(core, HubCore) else ()
            )
            return NodeSnapshot(info=core.info, parent_info=core.parent_info, children=children)

        return await self.driver.call(read)

    async def can_route(self, node_id: str) -> bool:
        """True if a request for ``node_id`` has somewhere to go (self, below, or up)."""
        return await self.driver.call(lambda now: self._core.can_route(node_id))

    async def open_streams(self) -> int:
        """Streams open in the core, all roles (0 when idle: nothing leaked)."""
        return await self.driver.call(lambda now: self._core.open_streams())

    async def set_files(self, entries: Iterable[tuple[str, str, int]]) -> None:
        """Share only: replace the index with ``(sha1, path, size)`` entries.

        Raises:
            TypeError: this node is a hub.
            LocalProtocolError: a malformed entry.
        """
        share = self._share()
        items = list(entries)
        await self.driver.call(lambda now: share.set_files(items, now))

    async def put_file(self, sha1: str, path: str, size: int) -> None:
        """Share only: add or replace the file at ``path`` (sent to the parent as a delta)."""
        share = self._share()
        await self.driver.call(lambda now: share.put_file(sha1, path, size, now))

    async def remove_file(self, path: str) -> None:
        """Share only: forget the file at ``path``."""
        share = self._share()
        await self.driver.call(lambda now: share.remove_file(path, now))

    async def update_files(
        self, puts: Iterable[tuple[str, str, int]], removes: Iterable[str] = ()
    ) -> list[tuple[str, str]]:
        """Share only: forget ``removes``, then add or replace ``(sha1, path, size)``
        ``puts``, in one driver step (``ShareCore.update_files``).

        Returns:
            The puts refused as ``(path, reason)``; everything else is applied.
        """
        share = self._share()
        put_list = list(puts)
        remove_list = list(removes)
        return await self.driver.call(lambda now: share.update_files(put_list, remove_list, now))

    async def content_changed(self, sha1s: Iterable[str]) -> None:
        """Share only: the files holding these SHA-1s changed; the core reports each
        one's current state to the parent (``ShareCore.content_changed``).

        Raises:
            TypeError: this node is a hub.
            LocalProtocolError: a malformed SHA-1.
        """
        share = self._share()
        items = list(sha1s)
        await self.driver.call(lambda now: share.content_changed(items, now))

    def note_cached(self, sha1: str, size: int | None) -> None:
        """Hub only: its relay cache now holds content ``sha1`` of ``size`` bytes (None:
        no longer). The core then answers finds for it as a source and reports it to
        the parent (``HubCore.put_cached``). Never blocks; ignored on a share."""
        if size is None:
            core = self._core
            if isinstance(core, HubCore):
                self.driver.post(lambda now: core.drop_cached(sha1, now))
            return
        self.note_all_cached([(sha1, size)])

    def note_all_cached(self, entries: list[tuple[str, int]]) -> None:
        """Hub only: ``note_cached`` for each ``(sha1, size)``, in one driver step (the
        entries a restarted hub kept). Never blocks; ignored on a share."""
        core = self._core
        if not isinstance(core, HubCore):
            return

        def put(now: float) -> None:
            for sha1, size in entries:
                # Past Limits.max_own_content an entry is served, just not announced.
                with contextlib.suppress(LocalProtocolError):
                    core.put_cached(sha1, size, now)

        self.driver.post(put)

    def _share(self) -> ShareCore:
        if not isinstance(self._core, ShareCore):
            raise TypeError("index changes apply to shares only")
        return self._core

    # --- events (driver task; never block) --------------------------------------------

    def _on_event(self, event: Event) -> None:
        hooks = self.hooks
        if isinstance(event, _STREAM_EVENTS):
            # A reset may be of a stream this node opened or of one it serves.
            self._streams.on_event(event)
            self._served.on_event(event)
        elif isinstance(event, LookupResolved | LookupFailed):
            wait = self._lookups.pop(event.lookup_id, None)
            if wait is not None:
                wait.answer = event
                wait.done.set()
        elif isinstance(event, ChildJoined):
            self._children[event.link_id] = event.info
            self._children_links.settled(event.link_id, joined=True, reason="")
            if hooks.on_child_joined is not None:
                hooks.on_child_joined(event.info)
        elif isinstance(event, LinkClosed):
            self._children_links.settled(event.link_id, joined=False, reason=event.reason)
            child = self._children.pop(event.link_id, None)
            if child is not None and hooks.on_child_left is not None:
                hooks.on_child_left(child, event.reason)
            if event.role == "parent" and hooks.on_parent_lost is not None:
                hooks.on_parent_lost(event.reason)
        elif isinstance(event, ParentConnected):
            if hooks.on_parent_connected is not None:
                hooks.on_parent_connected(event.info)
        elif isinstance(event, JoinRefused):
            if hooks.on_join_refused is not None:
                hooks.on_join_refused(event.reason)
        elif isinstance(event, PlacementRefused):
            child = self._children.get(event.link_id)
            if child is not None and hooks.on_placement_refused is not None:
                hooks.on_placement_refused(child, event.node_id, event.reason)
        elif isinstance(event, IndexSynced) and hooks.on_index_synced is not None:
            hooks.on_index_synced(event.entries)


async def _not_found_app(request: Request) -> Response:
    return error_response(404, "No such route")
