"""A running kbucket node: the async facade over a ``NodeDriver``, and ``serve_node``.

Theory of operation
-------------------
``Node`` wraps one core and its ``NodeDriver``. Its ``_on_event`` handler runs in the
driver task and never blocks: it wakes whoever waits on a find or a stream, starts a
task to serve each ``RequestReceived``, and calls the console hooks. Everything the app
asks of the core goes through ``driver.call``/``driver.post`` (STYLE rule 11).

* ``find`` returns the ``LookupResolved``/``LookupFailed`` event of one find.
* ``open_request`` sends an HTTP-like request to any node id through the tree and
  returns a ``ProxyResponse`` once the head arrived; iterating its body returns credit
  to the core as the consumer comes back for more, so at most one stream window per
  stream is ever buffered here. Closing it early resets the stream at every hop.
* A ``RequestReceived`` (this node is the target) is served by running
  ``Node.request_app`` (the node's own routes: nodeinfo, then the app's local router)
  on a synthetic ``Request`` and streaming the ``Response`` back under the stream's
  credit, in chunks of at most ``_SEND_CHUNK`` bytes (files are read chunk by chunk, so
  memory stays bounded whatever the file size). A failure after the head resets it.

``serve_node`` puts it on the network: an HTTP listener whose app is
``kbtransport.httpapi.build_node_app`` (SPEC §4; websocket upgrades become child
links), the dialer for the parent (``http`` -> ``ws``, ``https`` -> ``wss``), and the
driver. Example (what ``kbucket-host`` does, in short)::

    def make_core(bound: BoundAddress) -> ShareCore:
        # The listen URL depends on the port actually bound (``--port 0``).
        return ShareCore(setup.core_config(bound.port), signer=signer,
                         ids=SystemIdSource())

    hooks = NodeHooks(
        on_listening=lambda b: print(f"kbucket-share is running http on port {b.port}"),
        on_dial=lambda url: print(f"Connecting to parent hub: {url}"),
        on_parent_connected=lambda info: print(f"Connected to parent hub: {info.name}"),
        on_join_refused=lambda reason: print(f"Parent hub refused to register: {reason}"),
    )
    async with serve_node(make_core, share_router, ListenConfig(port=0),
                          hooks=hooks) as handle:
        print(handle.port, handle.node.node_id)
        await handle.set_files([(sha1, "data/a.dat", 1234)])   # from the indexer task
        await handle.put_file(sha1b, "data/b.dat", 99)
        await handle.wait()        # until handle.stop() or cancellation (Ctrl+C)
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import ssl
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, unquote

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup, TaskStatus

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
from kbproto.ids import LinkId, LookupId, NodeId, StreamId
from kbproto.messages import FindResult, NodeInfo
from kbproto.share import ShareCore
from kbtransport.driver import (
    DEFAULT_HIGH_WATER,
    DriverStopped,
    LinkTransport,
    NodeDriver,
    StepMemo,
)
from kbtransport.env import AnyioClock, Clock
from kbtransport.errors import ReadError, TransportError, TransportTimeout
from kbtransport.http import (
    App,
    FileBody,
    RawUpgrade,
    Request,
    Response,
    StreamBody,
    WebSocketAccept,
    error_response,
)
from kbtransport.http_server import ServerConfig
from kbtransport.listener import BoundAddress, ListenConfig, serve_http
from kbtransport.metrics import NodeMetrics, ServerCounters
from kbtransport.routing import Router
from kbtransport.uplink import (
    UPLINK_HEADER,
    UPLINK_PROTOCOL,
    UPLINK_SUBPROTOCOL,
    UplinkClientLink,
    UplinkRegistry,
    new_token,
    uplink_url,
)
from kbtransport.websocket import WebSocketLink, connect_websocket

if TYPE_CHECKING:
    from kbtransport.httpapi import NodeAppConfig  # httpapi imports this module

__all__ = (
    "IMMEDIATE_LOOKUP",
    "CoreFactory",
    "FindAnswer",
    "Node",
    "NodeCoreType",
    "NodeHandle",
    "NodeHooks",
    "NodeSnapshot",
    "ProxyResponse",
    "StreamResetError",
    "discard_response",
    "request_from_target",
    "serve_node",
)

_log = logging.getLogger("kbtransport.node")

#: The cores a node runs.
NodeCoreType = HubCore | ShareCore
#: Builds the core once the listener is bound (its listen URL needs the real port).
CoreFactory = Callable[[BoundAddress], NodeCoreType]
#: What ``Node.find`` returns.
FindAnswer = LookupResolved | LookupFailed
#: The ``lookup_id`` of a ``Node.find`` answer given at once, without a find in the core.
IMMEDIATE_LOOKUP = LookupId(-1)

#: Largest body piece handed to the core at once when serving; the core cuts it into
#: data frames. Big pieces mean few driver round trips (each costs several task
#: switches); the credit window bounds it. 1 MiB against 256 KiB: a third less user
#: CPU per proxied GiB at the sending share (A/B, 8 downloads each).
_SEND_CHUNK = 1024 * 1024
#: Received body bytes joined into one piece for the consumer: fewer, larger writes.
#: A hub reads its children 1 MiB at a time (``kbtransport.tcp``); joining as much
#: cut its CPU per proxied GiB by ~10 % against 256 KiB (A/B, 6 and 8 downloads).
_JOIN_LIMIT = 1024 * 1024
#: Immediate find answers kept for the current driver step, at most.
_ANSWER_CACHE = 4096
#: How long a child offers only plain websockets to a parent whose uplink failed.
_UPLINK_RETRY = 600.0
#: Largest websocket message accepted from a peer; kbproto frames are at most 1 MiB,
#: and a peer's Transmit at most a few hundred KiB.
_MAX_LINK_MESSAGE = 16 * 1024 * 1024


class StreamResetError(ReadError):
    """A proxied request was reset (before or after its head).

    Attributes:
        status: the HTTP status that fits (404 unknown node, 499, 502, 503, 504).
        reason: one line.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"request reset ({status}): {reason}")
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeHooks:
    """Console-line callbacks; each runs in the driver task and must not block.

    Attributes:
        on_listening: the listener is bound (before the core starts).
        on_dial: a dial to the parent URL starts (``Connecting to parent hub: <url>``).
        on_dial_failed: ``(url, reason)``: the dial failed (a redial is scheduled).
        on_parent_connected: joined the parent (``Connected to parent hub: <name>``).
        on_parent_lost: the parent link closed (reason); the core redials.
        on_join_refused: the parent refused us (one line, SPEC §5).
        on_child_joined / on_child_left: hubs print one line per child
            (``info.name``, ``info.node_id``, ``info.node_type``; left: also a reason).
        on_placement_refused: ``(child, node_id, reason)``: a child reported a node id
            without a valid placement (the first per link; it was dropped).
        on_index_synced: the parent acknowledged the index (entry count).
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


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeSnapshot:
    """What nodeinfo shows: this node, its parent (if joined) and its children."""

    info: NodeInfo
    parent_info: NodeInfo | None
    children: tuple[NodeInfo, ...]


def request_from_target(
    method: str,
    target: str,
    headers: Iterable[tuple[str, str]] = (),
    client: tuple[str, int] | None = None,
) -> Request:
    """Build a ``Request`` as the HTTP server would from a request target.

    Splits the path on ``/`` before percent-decoding (so ``%2f`` stays inside its
    segment, as ``kbtransport.http`` promises the share's path checks).

    Raises:
        ValueError: not ASCII, no leading ``/``, or malformed percent-encoding.
    """
    if not target.isascii():
        raise ValueError("request target is not ASCII")
    path, _, query = target.partition("?")
    if not path.startswith("/"):
        raise ValueError("request target must be an absolute path")
    try:
        segments = tuple(unquote(s, errors="strict") for s in path[1:].split("/"))
        pairs = parse_qsl(query, keep_blank_values=True, errors="strict", max_num_fields=256)
    except (UnicodeDecodeError, ValueError):
        raise ValueError("malformed percent-encoding in request target") from None
    return Request(
        method=method.upper(),
        target=target.encode("ascii"),
        path=path,
        segments=segments,
        query=tuple(pairs),
        headers=tuple(
            (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers
        ),
        client=client,
    )


# --- per-stream state (touched by the driver task and one app task) -------------------


class _Signal:
    """A re-armable wake-up: ``set`` wakes the current waiter; ``wait`` re-arms."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = anyio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
        self._event = anyio.Event()


class _Origin:
    __slots__ = ("abandoned", "chunks", "ended", "head", "reset", "sid", "signal")

    def __init__(self) -> None:
        self.sid: StreamId | None = None
        self.head: ResponseStarted | None = None
        self.chunks: deque[bytes] = deque()
        self.ended = False
        self.reset: StreamReset | None = None
        self.abandoned = False
        self.signal = _Signal()


class _Target:
    __slots__ = ("capacity", "finished", "inflight", "reset", "sid", "signal")

    def __init__(self, sid: StreamId, capacity: int) -> None:
        self.sid = sid
        self.capacity = capacity
        self.inflight = 0
        self.reset: StreamReset | None = None
        self.finished = False
        self.signal = _Signal()


class _TargetClosed(Exception):
    """The stream we serve was reset (the requester went away, a hop failed...)."""


class _LookupWait:
    __slots__ = ("answer", "done")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.answer: FindAnswer | None = None


class ProxyResponse:
    """The answer to ``Node.open_request``: head now, body as it arrives.

    Attributes:
        status: the HTTP status.
        headers: ``(name, value)`` pairs as the target sent them.
    """

    def __init__(self, node: Node, state: _Origin, head: ResponseStarted) -> None:
        self._node = node
        self._st = state
        self.status = head.status
        self.headers = head.headers

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        lname = name.lower()
        for hname, value in self.headers:
            if hname.lower() == lname:
                return value
        return None

    @property
    def content_length(self) -> int | None:
        """The ``Content-Length`` the target announced, if valid."""
        value = self.header("content-length")
        if value is None or not value.isdigit():
            return None
        return int(value)

    @property
    def finished(self) -> bool:
        """True once the body ended or the stream was reset."""
        return self._st.ended or self._st.reset is not None

    async def iter_chunks(self) -> AsyncGenerator[bytes, None]:
        """Yield the body as it arrives; return credit as the consumer asks for more.

        Raises:
            StreamResetError: the stream was reset mid-body (the body is incomplete).
        """
        st = self._st
        node = self._node
        # Credit goes back in quarter-window batches: while fewer bytes are owed, the
        # sender still holds three quarters of the window, so it never stalls, and
        # a fast consumer costs one Credit frame per quarter window, not one per chunk.
        batch = max(1, node.stream_window // 4)
        owed = 0
        try:
            while True:
                if st.chunks:
                    data = st.chunks.popleft()
                    if st.chunks and len(data) < _JOIN_LIMIT:
                        parts = [data]
                        size = len(data)
                        while st.chunks and size + len(st.chunks[0]) <= _JOIN_LIMIT:
                            part = st.chunks.popleft()
                            parts.append(part)
                            size += len(part)
                        data = b"".join(parts)
                    yield data
                    # The consumer came back: those bytes are consumed.
                    owed += len(data)
                    if owed >= batch:
                        node._grant(st, owed)
                        owed = 0
                    continue
                if st.reset is not None:
                    raise StreamResetError(st.reset.status, st.reset.reason)
                if st.ended:
                    return
                await st.signal.wait()
        finally:
            if not self.finished:
                node._abandon(st)

    async def read(self, max_bytes: int = 16 * 1024 * 1024) -> bytes:
        """Read the whole body (at most ``max_bytes``).

        Raises:
            StreamResetError: reset mid-body.
            ValueError: the body is larger than ``max_bytes`` (the stream is reset).
        """
        parts: list[bytes] = []
        size = 0
        async for chunk in self.iter_chunks():
            size += len(chunk)
            if size > max_bytes:
                await self.aclose()
                raise ValueError(f"response body larger than {max_bytes} bytes")
            parts.append(chunk)
        return b"".join(parts)

    async def aclose(self) -> None:
        """Stop reading: a stream not yet finished is reset at every hop."""
        if not self.finished:
            self._node._abandon(self._st)

    async def __aenter__(self) -> ProxyResponse:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class Node:
    """A core, its driver, and the app-side glue (see the module docstring).

    Args:
        core: a ``HubCore`` or ``ShareCore``, not started.
        clock: the clock for ``now`` (``AnyioClock`` by default).
        dialer: opens a link to a parent URL (default: websocket dial with
            ``client_ssl``).
        hooks: console callbacks.
        client_ssl: TLS context for ``wss`` parents (system store if None).
        high_water: per-link back-pressure bound (``NodeDriver``).
        uplink: as a child, offer to send link bytes on a raw upgraded connection
            (``kbtransport.uplink``: no websocket masking or framing on the bulk
            direction); the parent may decline. On by default.
        counters: the counters of this node's HTTP server (its ``ServerConfig.
            counters``), reported in ``metrics``.

    Attributes:
        clock: the node's clock.
        metrics: what the node counts (``kbtransport.metrics``; nodeinfo reports it).
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
    ) -> None:
        self._core = core
        self._use_uplink = uplink
        # Parents whose uplink upgrade failed (e.g. a proxy in front of them that
        # passes websockets only), and until when dials there offer a plain websocket.
        self._no_uplink: dict[str, float] = {}
        self._uplinks = UplinkRegistry()
        self.hooks = hooks if hooks is not None else NodeHooks()
        self._client_ssl = client_ssl
        self._dial_timeout = dial_timeout
        self.node_id: NodeId = core.node_id
        self.info: NodeInfo = core.info
        self.is_hub = isinstance(core, HubCore)
        #: Serves requests addressed to this node (set by ``serve_node`` to the node's
        #: own routes; a 404 answer until then).
        self.request_app: App = _not_found_app
        #: The node's whole HTTP app, as its listener serves it (set by ``serve_node``):
        #: for app code that asks the network the way an HTTP client would.
        self.http_app: App = _not_found_app
        self.clock: Clock = clock if clock is not None else AnyioClock()
        # ``started`` is set when the node runs (the clock may need the event loop).
        self.metrics = NodeMetrics(
            started=0.0, server=counters if counters is not None else ServerCounters()
        )
        self.driver = NodeDriver(
            core,
            clock=self.clock,
            dialer=dialer if dialer is not None else self._dial_websocket,
            on_event=self._on_event,
            on_dial=self.hooks.on_dial,
            on_dial_failed=self.hooks.on_dial_failed,
            high_water=high_water if high_water is not None else DEFAULT_HIGH_WATER,
        )
        self._lookups: dict[LookupId, _LookupWait] = {}
        # Immediate find answers, valid for one driver step (see ``find_now``).
        self._answers: StepMemo[tuple[str, str | None], FindAnswer] = StepMemo(
            self.driver, _ANSWER_CACHE
        )
        self._streams: dict[StreamId, _Origin | _Target] = {}
        self._children: dict[LinkId, NodeInfo] = {}
        self._tg: TaskGroup | None = None

    # --- running ----------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the driver (and the tasks serving requests) until cancelled.

        ``await task_group.start(node.run)`` returns once the core has started.
        """
        self.metrics.started = self.clock.now()
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                await tg.start(self.driver.run)
                task_status.started()
        finally:
            # Nobody waits forever on a node that stopped.
            for wait in self._lookups.values():
                wait.done.set()
            self._lookups.clear()
            for sid, st in self._streams.items():
                st.reset = StreamReset(stream_id=sid, status=502, reason="node stopped")
                st.signal.set()
            self._streams.clear()

    async def _dial_websocket(self, address: str) -> LinkTransport:
        if not self._use_uplink or anyio.current_time() < self._no_uplink.get(address, 0.0):
            return await connect_websocket(
                address,
                ssl_context=self._client_ssl,
                timeout=self._dial_timeout,
                max_message_bytes=_MAX_LINK_MESSAGE,
            )
        token = new_token()
        ws = await connect_websocket(
            address,
            headers=[(UPLINK_HEADER, token)],
            subprotocols=[UPLINK_SUBPROTOCOL],
            ssl_context=self._client_ssl,
            timeout=self._dial_timeout,
            max_message_bytes=_MAX_LINK_MESSAGE,
        )
        if ws.subprotocol != UPLINK_SUBPROTOCOL:
            return ws  # the parent declined: a plain websocket link
        try:
            return await UplinkClientLink.open(
                ws,
                uplink_url(address, token),
                ssl_context=self._client_ssl,
                timeout=self._dial_timeout,
            )
        except TransportError:
            # The redial goes without it; a later one tries again (the failure may
            # have been a hub restarting between our two connections).
            self._no_uplink[address] = anyio.current_time() + _UPLINK_RETRY
            await ws.aclose()
            raise
        except BaseException:
            await ws.aclose()
            raise

    async def serve_websocket(self, link: WebSocketLink) -> None:
        """Carry an accepted websocket as a child link until it ends."""
        await self.driver.serve_link(link)

    def websocket_accept(self, request: Request) -> WebSocketAccept:
        """How to accept a child's websocket upgrade ``request`` (uplink if offered)."""
        token = request.header(UPLINK_HEADER)
        offered = [p.strip() for p in (request.header("sec-websocket-protocol") or "").split(",")]
        registry = self._uplinks
        if token is None or UPLINK_SUBPROTOCOL not in offered or not registry.can_expect(token):
            return WebSocketAccept(
                handler=self.serve_websocket, max_message_bytes=_MAX_LINK_MESSAGE
            )

        async def handler(ws: WebSocketLink) -> None:
            # The token is registered only once the upgrade succeeded (the server runs
            # this right after its 101), so a failed upgrade leaves nothing behind. The
            # child's uplink request needs that 101 and a new connection first; were it
            # ever to arrive before this line, it would get a 404 and the child would
            # redial with a plain websocket.
            uplink = registry.expect(token)
            if uplink is None:
                return  # taken meanwhile: the child's uplink gets a 404, it redials plain
            uplink.ws = ws
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(uplink.watch)
                    await self.driver.serve_link(uplink)
                    tg.cancel_scope.cancel()
            finally:
                registry.forget(uplink.token)
                await uplink.aclose()

        return WebSocketAccept(
            handler=handler, subprotocol=UPLINK_SUBPROTOCOL, max_message_bytes=_MAX_LINK_MESSAGE
        )

    def uplink_accept(self, request: Request, token: str) -> Response:
        """Answer ``GET /_kblink/<token>`` (``Upgrade: kbucket-uplink``): from then on the
        connection carries that child's link bytes (``kbtransport.uplink``)."""
        upgrade = (request.header("upgrade") or "").strip().lower()
        if request.method != "GET" or upgrade != UPLINK_PROTOCOL:
            return error_response(400, f"Not an Upgrade to {UPLINK_PROTOCOL}")
        uplink = self._uplinks.take(token)
        if uplink is None:
            return error_response(404, "No websocket link waits for this uplink")
        return Response(status=101, body=RawUpgrade(protocol=UPLINK_PROTOCOL, handler=uplink.run))

    # --- app commands -----------------------------------------------------------------

    def answer_now(self, sha1: str, share_id: str | None = None) -> tuple[FindResult, ...] | None:
        """The results of ``find_now``'s answer, read straight from the core (no cache).

        ``()`` means "not found" at once; None means ``find`` would ask other nodes.
        For callers that only need the results (the /find route builds its JSON from
        them and keeps its own reuse), so no answer event is built.

        Raises:
            LocalProtocolError: malformed ``sha1`` or ``share_id``.
            DriverStopped: the node is not running.
        """
        if not self.driver.running:
            raise DriverStopped("the node driver is not running")
        # A pure read of the core between two driver steps (see find_now).
        return self._core.answer_now(sha1, share_id=share_id)

    def find_now(self, sha1: str, share_id: str | None = None) -> FindAnswer | None:
        """``find``'s answer if this node gives it at once (``IMMEDIATE_LOOKUP``), else None.

        A synchronous read of the core (see ``find``): its own file, its direct
        shares, or "not found" at the top of the tree. None means ``find`` would ask
        other nodes through the driver.

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
        # An immediate answer stays right until the next driver step: repeated finds
        # (a popular file, a find flood) between two steps come from ``_answers``.
        key = (sha1, share_id)
        cached = self._answers.get(key)
        if cached is not None:
            return cached
        results = self._core.answer_now(sha1, share_id=share_id)
        if results is None:
            return None
        sid = NodeId(share_id) if share_id is not None else None
        answer: FindAnswer
        if results:
            answer = LookupResolved(
                lookup_id=IMMEDIATE_LOOKUP, sha1=sha1, share_id=sid, results=results
            )
        else:
            answer = LookupFailed(
                lookup_id=IMMEDIATE_LOOKUP, sha1=sha1, share_id=sid, reason="not found"
            )
        self._answers.put(key, answer)
        return answer

    async def find(self, sha1: str, share_id: str | None = None) -> FindAnswer:
        """Find ``sha1`` in the network (or only on share ``share_id``).

        Returns:
            ``LookupResolved`` (with ``results``) or ``LookupFailed``; the core's
            lookup timeout bounds the wait.

        An answer this node gives at once from its own index (its own file, its direct
        shares, or "not found" at the top of the tree) skips the driver and carries
        ``lookup_id`` ``IMMEDIATE_LOOKUP`` (-1: no find was started in the core).

        Raises:
            LocalProtocolError: malformed ``sha1`` or ``share_id``.
            DriverStopped: the node is not running.
        """
        answer = self.find_now(sha1, share_id)
        if answer is not None:
            return answer
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
    ) -> ProxyResponse:
        """Send ``method path`` to node ``node_id`` through the tree; await the head.

        Use the result as an async context manager (or call ``aclose``) so an unread
        body resets the stream. Timeouts are the core's (``request_timeout`` for the
        head, ``stream_idle_timeout`` for the body: a 504 reset).

        Raises:
            StreamResetError: reset before the head (404 unknown node, 502, 503, 504).
            LocalProtocolError: ``node_id`` is this node or the request is malformed.
            DriverStopped: the node is not running.
        """
        st = _Origin()

        def start(now: float) -> StreamId:
            sid = self._core.open_request(node_id, method, path, headers, now=now)
            st.sid = sid
            if st.abandoned:  # the caller was cancelled before this ran
                self._core.reset_stream(sid, now, "cancelled")
            else:
                self._streams[sid] = st
            return sid

        try:
            await self.driver.call(start)
            while st.head is None:
                if st.reset is not None:
                    raise StreamResetError(st.reset.status, st.reset.reason)
                await st.signal.wait()
        except BaseException:
            self._abandon(st)
            raise
        return ProxyResponse(self, st, st.head)

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

    def uplink_count(self) -> int:
        """Child links sending upward on their own uplink connection (``kbtransport.uplink``)."""
        return len(self._uplinks)

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

    def _share(self) -> ShareCore:
        if not isinstance(self._core, ShareCore):
            raise TypeError("index changes apply to shares only")
        return self._core

    # --- stream helpers (called by ProxyResponse and serving tasks) -------------------

    @property
    def stream_window(self) -> int:
        """Credit this node grants each stream it opens (its core's ``stream_window``)."""
        return self._core.limits.stream_window

    def _grant(self, st: _Origin, amount: int) -> None:
        sid = st.sid
        if sid is not None and not st.ended and st.reset is None:
            self.driver.post(lambda now: self._core.grant_credit(sid, amount, now))

    def _abandon(self, st: _Origin) -> None:
        """The consumer went away: reset the stream (at every hop) if still open."""
        st.abandoned = True
        sid = st.sid
        if sid is None or st.ended or st.reset is not None:
            return
        self._streams.pop(sid, None)
        st.reset = StreamReset(stream_id=sid, status=499, reason="requester went away")
        self.driver.post(lambda now: self._core.reset_stream(sid, now, "requester went away"))

    # --- events (driver task; never block) --------------------------------------------

    def _on_event(self, event: Event) -> None:
        hooks = self.hooks
        if isinstance(event, ResponseData):
            st = self._streams.get(event.stream_id)
            if isinstance(st, _Origin):
                st.chunks.append(event.data)
                st.signal.set()
        elif isinstance(event, StreamWritable):
            tgt = self._streams.get(event.stream_id)
            if isinstance(tgt, _Target):
                # The live value, not ``event.capacity``: events are dispatched after the
                # whole batch of inputs, so sends applied in that batch already used
                # some of the credit the event reports.
                tgt.capacity = self._core.send_capacity(event.stream_id)
                tgt.signal.set()
        elif isinstance(event, RequestReceived):
            target = _Target(event.stream_id, event.capacity)
            self._streams[event.stream_id] = target
            assert self._tg is not None
            self._tg.start_soon(self._serve, event, target)
        elif isinstance(event, ResponseStarted):
            st = self._streams.get(event.stream_id)
            if isinstance(st, _Origin):
                st.head = event
                st.signal.set()
        elif isinstance(event, ResponseEnded):
            st = self._streams.pop(event.stream_id, None)
            if isinstance(st, _Origin):
                st.ended = True
                st.signal.set()
        elif isinstance(event, StreamReset):
            any_st = self._streams.pop(event.stream_id, None)
            if any_st is not None:
                any_st.reset = event
                any_st.signal.set()
        elif isinstance(event, LookupResolved | LookupFailed):
            wait = self._lookups.pop(event.lookup_id, None)
            if wait is not None:
                wait.answer = event
                wait.done.set()
        elif isinstance(event, ChildJoined):
            self._children[event.link_id] = event.info
            if hooks.on_child_joined is not None:
                hooks.on_child_joined(event.info)
        elif isinstance(event, LinkClosed):
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

    # --- serving requests addressed to this node --------------------------------------

    async def _serve(self, event: RequestReceived, st: _Target) -> None:
        sid = st.sid
        self.metrics.network_requests += 1
        response: Response | None = None
        try:
            try:
                request = request_from_target(event.method, event.path, event.headers)
            except ValueError as exc:
                response = error_response(400, str(exc))
            else:
                response = await self._call_app(request)
            await self._send_response(st, request_method=event.method, response=response)
        except _TargetClosed:
            pass
        except TransportError as exc:
            # The body source failed mid-way (e.g. a file shrank, or a proxied source
            # went away): the requester must see an incomplete body, so reset.
            _log.info("serving stream %s failed: %s", sid, exc)
        except LocalProtocolError as exc:
            _log.warning("response to %s %r not sendable: %s", event.method, event.path, exc)
        except Exception:
            _log.exception("serving %s %r failed", event.method, event.path)
        finally:
            if response is not None:
                await discard_response(response)
            self._streams.pop(sid, None)
            if not st.finished and st.reset is None:
                self.driver.post(lambda now: self._core.reset_stream(sid, now, "serving failed"))

    async def _call_app(self, request: Request) -> Response:
        try:
            return await self.request_app(request)
        except TransportTimeout:
            return error_response(504, "Upstream timed out")
        except TransportError:
            return error_response(502, "Upstream failed")
        except Exception:
            _log.exception("app failed on %s %r", request.method, request.target)
            return error_response(500)

    async def _wait_capacity(self, st: _Target) -> int:
        while True:
            if st.reset is not None:
                raise _TargetClosed
            available = st.capacity - st.inflight
            if available > 0:
                return available
            await st.signal.wait()

    async def _send(self, st: _Target, data: bytes) -> None:
        """Hand ``data`` (at most the available credit) to the core, pipelined."""
        sid = st.sid
        st.inflight += len(data)

        def send(now: float) -> None:
            st.inflight -= len(data)
            if st.reset is not None:
                return
            try:
                self._core.send_data(sid, data, now)
            except LocalProtocolError:
                # Our own accounting bug must cost this stream, never a corrupt body.
                _log.exception("send_data refused on stream %s", sid)
                st.reset = StreamReset(stream_id=sid, status=502, reason="internal error")
                st.signal.set()
                self._core.reset_stream(sid, now, "internal error")
                return
            st.capacity = self._core.send_capacity(sid)

        self.driver.post(send)
        # Let the driver run before producing more (a file read never starves it).
        await anyio.lowlevel.checkpoint()

    async def _send_bytes(self, st: _Target, body: bytes) -> None:
        view = memoryview(body)
        while view:
            available = await self._wait_capacity(st)
            take = min(available, _SEND_CHUNK, len(view))
            await self._send(st, bytes(view[:take]))
            view = view[take:]

    async def _send_response(self, st: _Target, *, request_method: str, response: Response) -> None:
        sid = st.sid
        body = response.body
        if isinstance(body, WebSocketAccept | RawUpgrade):
            await discard_response(response)
            response = error_response(400, "upgrades are not proxied")
            body = response.body
        no_body = request_method == "HEAD" or response.status in (204, 304)
        headers = tuple(
            (name, value)
            for name, value in response.headers
            if name.lower() not in ("content-length", "transfer-encoding", "connection")
        )
        length: int | None
        if isinstance(body, bytes):
            length = len(body)
        elif isinstance(body, FileBody):
            length = body.length
        else:
            assert isinstance(body, StreamBody)
            length = body.length
        if length is not None and response.status not in (204, 304):
            headers = (*headers, ("Content-Length", str(length)))
        status = response.status

        def head(now: float) -> None:
            if st.reset is None:
                self._core.respond(sid, status, headers, now=now)

        await self.driver.call(head)
        if not no_body:
            if isinstance(body, bytes):
                await self._send_bytes(st, body)
            elif isinstance(body, FileBody):
                await self._send_file(st, body)
            else:
                assert isinstance(body, StreamBody)
                metrics = self.metrics
                async for chunk in body.chunks:
                    await self._send_bytes(st, chunk)
                    metrics.tree_stream_bytes += len(chunk)

        def end(now: float) -> None:
            if st.reset is None:
                self._core.end_stream(sid, now)
                st.finished = True

        await self.driver.call(end)
        if st.reset is not None:
            raise _TargetClosed

    async def _send_file(self, st: _Target, body: FileBody) -> None:
        # Blocking reads on the loop, like the HTTP server's fallback path: page-cache
        # reads of up to 1 MiB are far cheaper than a worker-thread hop (perf-baselines §3).
        remaining = body.length
        body.file.seek(body.offset)
        while remaining:
            available = await self._wait_capacity(st)
            chunk = body.file.read(min(available, _SEND_CHUNK, remaining))
            if not chunk:
                raise ReadError(f"file shrank while being sent ({remaining} bytes short)")
            remaining -= len(chunk)
            await self._send(st, chunk)
            self.metrics.tree_file_bytes += len(chunk)


async def _not_found_app(request: Request) -> Response:
    return error_response(404, "No such route")


async def discard_response(response: Response) -> None:
    """Release a response that will not be sent: close its file, or close its chunk
    source and await its ``on_close``, as the server would have after sending it."""
    body = response.body
    if isinstance(body, FileBody):
        body.file.close()
    elif isinstance(body, StreamBody):
        with anyio.CancelScope(shield=True):
            aclose = getattr(body.chunks, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
            if body.on_close is not None:
                with contextlib.suppress(Exception):
                    await body.on_close()


# --- serve_node ---------------------------------------------------------------------------


class NodeHandle:
    """A node serving on the network (from ``serve_node``).

    Attributes:
        node: the ``Node`` (finds, requests, snapshots).
        address: where the listener is bound (``port`` is the real one).
    """

    def __init__(self, node: Node, address: BoundAddress, scope: anyio.CancelScope) -> None:
        self.node = node
        self.address = address
        self._scope = scope
        self._stopped = anyio.Event()

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked for)."""
        return self.address.port

    @property
    def scheme(self) -> str:
        """``https`` when serving TLS, else ``http``."""
        return "https" if self.address.secure else "http"

    @property
    def local_url(self) -> str:
        """A URL reaching this node from this machine (wildcard binds become 127.0.0.1)."""
        host = self.address.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"{self.scheme}://{host}:{self.port}"

    async def set_files(self, entries: Iterable[tuple[str, str, int]]) -> None:
        """Share only: replace the whole index (see ``Node.set_files``)."""
        await self.node.set_files(entries)

    async def put_file(self, sha1: str, path: str, size: int) -> None:
        """Share only: add or replace one file in the index."""
        await self.node.put_file(sha1, path, size)

    async def remove_file(self, path: str) -> None:
        """Share only: remove one file from the index."""
        await self.node.remove_file(path)

    async def update_files(
        self, puts: Iterable[tuple[str, str, int]], removes: Iterable[str] = ()
    ) -> list[tuple[str, str]]:
        """Share only: many removes and puts at once (see ``Node.update_files``)."""
        return await self.node.update_files(puts, removes)

    def stop(self) -> None:
        """Stop serving: the listener, every link and the driver are cancelled."""
        self._stopped.set()
        self._scope.cancel()

    async def wait(self) -> None:
        """Wait until ``stop`` is called (or the surrounding task is cancelled)."""
        await self._stopped.wait()


@asynccontextmanager
async def serve_node(
    core: NodeCoreType | CoreFactory,
    local: Router | App,
    listen: ListenConfig,
    *,
    clock: Clock | None = None,
    hooks: NodeHooks | None = None,
    server_config: ServerConfig | None = None,
    client_ssl: ssl.SSLContext | None = None,
    dialer: Callable[[str], Awaitable[LinkTransport]] | None = None,
    dial_timeout: float = 10.0,
    uplink: bool = True,
    app_config: NodeAppConfig | None = None,
) -> AsyncIterator[NodeHandle]:
    """Serve a node: HTTP (SPEC §4) and child websockets on ``listen``, and the parent dial.

    Args:
        core: the core, or a factory called with the bound address (so a ``--port 0``
            node can put its real port in its listen URL). Its config carries the
            parent URL (``Dial``), the passcode and the timeouts.
        local: the app's routes for this node's own id and the web UI (kbapps builds
            it: the share's file routes, the web pages).
        listen: host, port and TLS (``ssl_context`` serves HTTPS and WSS).
        clock: ``AnyioClock`` by default.
        hooks: console-line callbacks (``on_listening`` runs right after the bind).
        server_config: HTTP server limits (defaults are fine).
        client_ssl: TLS context for dialing a ``https`` parent (system store if None).
        dialer: replaces the websocket dialer (tests).
        dial_timeout: seconds for one dial (connect, TLS, handshake).
        uplink: offer the parent the raw uplink (``kbtransport.uplink``); on by default.
        app_config: policies of the HTTP routes (``kbtransport.httpapi.NodeAppConfig``:
            the web origins allowed to open a websocket...); the defaults if None.

    Yields:
        a ``NodeHandle``; leaving the block stops the node.

    Raises:
        ConnectError: the address cannot be bound.
    """
    from kbtransport.httpapi import build_node_app, own_node_app  # httpapi imports us

    local_app: App = local.app if isinstance(local, Router) else local
    hooks = hooks if hooks is not None else NodeHooks()
    ready = anyio.Event()
    holder: list[App] = []
    running: list[App] = []  # holder's app once the node runs

    def app(request: Request) -> Awaitable[Response]:
        # Once the node runs, its app's own coroutine (no extra one per request).
        if running:
            return running[0](request)
        return starting(request)

    async def starting(request: Request) -> Response:
        # Requests that arrive between the bind and the core's start wait for it.
        if not ready.is_set():
            with anyio.move_on_after(10.0):
                await ready.wait()
            if not holder:
                return error_response(503, "Node is starting")
        return await holder[0](request)

    server = server_config if server_config is not None else ServerConfig()
    if server.counters is None:
        server = dataclasses.replace(server, counters=ServerCounters())
    async with anyio.create_task_group() as tg:
        address: BoundAddress = await tg.start(serve_http, app, listen, server)
        if hooks.on_listening is not None:
            hooks.on_listening(address)
        the_core = core if isinstance(core, HubCore | ShareCore) else core(address)
        node = Node(
            the_core,
            clock=clock,
            dialer=dialer,
            hooks=hooks,
            client_ssl=client_ssl,
            dial_timeout=dial_timeout,
            uplink=uplink,
            counters=server.counters,
        )
        node.request_app = own_node_app(node, local_app)
        holder.append(build_node_app(node, local_app, app_config))
        node.http_app = holder[0]
        await tg.start(node.run)
        ready.set()
        running.extend(holder)
        handle = NodeHandle(node, address, tg.cancel_scope)
        try:
            yield handle
        finally:
            tg.cancel_scope.cancel()
