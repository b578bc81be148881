"""Proxied request/response streams between a node's HTTP side and its core.

Theory of operation
-------------------
A node's ``ProxyStreams`` holds every stream the node takes part in at its ends (a hub
relaying a stream between two of its links does that inside the core):

* **origin** streams, opened by ``open`` (``Node.open_request``): an HTTP-like request
  sent to any node id through the tree. ``open`` returns a ``ProxyResponse`` once the
  head arrived; iterating its body returns credit to the core as the consumer comes back
  for more, so at most one stream window per stream is ever buffered here. Closing it
  early resets the stream at every hop.
* **target** streams, announced by a ``RequestReceived`` event (this node is the
  target): ``serve`` runs ``app`` (the node's own routes) on a synthetic ``Request`` and
  streams the ``Response`` back under the stream's credit, in pieces of at most
  ``_SEND_CHUNK`` bytes (files are read piece by piece, so memory stays bounded whatever
  the file size). A failure after the head resets it.

``on_event`` runs in the driver task and never blocks: it wakes whoever waits on a
stream. Everything asked of the core goes through ``driver.call``/``driver.post``
(STYLE rule 11). The stream budgets (``kbtransport.stream_budget``) count origin
streams per HTTP client; see ``docs/security.md``.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import AsyncGenerator, Iterable
from urllib.parse import parse_qsl, unquote

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from kbproto.errors import LocalProtocolError
from kbproto.events import (
    Event,
    RequestReceived,
    ResponseData,
    ResponseEnded,
    ResponseStarted,
    StreamReset,
    StreamWritable,
)
from kbproto.hub import HubCore
from kbproto.ids import LinkId, StreamId
from kbproto.share import ShareCore
from kbtransport.clients import client_key
from kbtransport.driver import NodeDriver
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
from kbtransport.metrics import NodeMetrics
from kbtransport.stream_budget import StreamBudget, StreamLedger, StreamTicket

__all__ = (
    "ProxyResponse",
    "ProxyStreams",
    "StreamResetError",
    "discard_response",
    "request_from_target",
)

_log = logging.getLogger("kbtransport.proxy_stream")

#: Largest body piece handed to the core at once when serving; the core cuts it into
#: data frames. Big pieces mean few driver round trips (each costs several task
#: switches); the credit window bounds it. 1 MiB against 256 KiB: a third less user
#: CPU per proxied GiB at the sending share (A/B, 8 downloads each).
_SEND_CHUNK = 1024 * 1024
#: Received body bytes joined into one piece for the consumer: fewer, larger writes.
#: A hub reads its children 1 MiB at a time (``kbtransport._accel``); joining as much
#: cut its CPU per proxied GiB by ~10 % against 256 KiB (A/B, 6 and 8 downloads).
_JOIN_LIMIT = 1024 * 1024

#: The cores a node runs.
_Core = HubCore | ShareCore


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
    __slots__ = ("abandoned", "chunks", "ended", "head", "reset", "sid", "signal", "ticket")

    def __init__(self) -> None:
        self.sid: StreamId | None = None
        self.head: ResponseStarted | None = None
        self.chunks: deque[bytes] = deque()
        self.ended = False
        self.reset: StreamReset | None = None
        self.abandoned = False
        self.signal = _Signal()
        #: The client's count in the stream ledger, released when the stream ends.
        self.ticket: StreamTicket | None = None


class _Target:
    __slots__ = ("capacity", "finished", "inflight", "link", "reset", "sid", "signal")

    def __init__(self, sid: StreamId, capacity: int, link: LinkId | None) -> None:
        self.sid = sid
        self.capacity = capacity
        self.inflight = 0
        self.reset: StreamReset | None = None
        self.finished = False
        self.signal = _Signal()
        #: The link the response leaves on: body bytes wait for room in its queue.
        self.link = link


class _TargetClosed(Exception):
    """The stream we serve was reset (the requester went away, a hop failed...)."""


class ProxyResponse:
    """The answer to ``Node.open_request``: head now, body as it arrives.

    Attributes:
        status: the HTTP status.
        headers: ``(name, value)`` pairs as the target sent them.
    """

    def __init__(self, streams: ProxyStreams, state: _Origin, head: ResponseStarted) -> None:
        self._streams = streams
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
        streams = self._streams
        # Credit goes back in quarter-window batches: while fewer bytes are owed, the
        # sender still holds three quarters of the window, so it never stalls, and
        # a fast consumer costs one Credit frame per quarter window, not one per chunk.
        batch = max(1, streams.window // 4)
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
                        streams.grant(st, owed)
                        owed = 0
                    continue
                if st.reset is not None:
                    raise StreamResetError(st.reset.status, st.reset.reason)
                if st.ended:
                    return
                await st.signal.wait()
        finally:
            if not self.finished:
                streams.abandon(st)

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
            self._streams.abandon(self._st)

    async def __aenter__(self) -> ProxyResponse:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def _not_found_app(request: Request) -> Response:
    return error_response(404, "No such route")


class ProxyStreams:
    """The streams a node opens and serves (see the module docstring).

    Args:
        core: the node's core (only ever touched in the driver task).
        driver: the node's driver.
        metrics: where served requests and bytes are counted.
        budget: how origin streams are shared among HTTP clients (the defaults if None).

    Attributes:
        app: serves the requests addressed to this node (its own routes; a 404
            answer until the node's routes are set).
    """

    def __init__(
        self,
        core: _Core,
        driver: NodeDriver,
        metrics: NodeMetrics,
        budget: StreamBudget | None = None,
    ) -> None:
        self._core = core
        self._driver = driver
        self._metrics = metrics
        self._streams: dict[StreamId, _Origin | _Target] = {}
        self._ledger = StreamLedger(budget if budget is not None else StreamBudget())
        self._tg: TaskGroup | None = None
        self.app: App = _not_found_app

    @property
    def window(self) -> int:
        """Credit this node grants each stream it opens (its core's ``stream_window``)."""
        return self._core.limits.stream_window

    def start(self, tg: TaskGroup) -> None:
        """Serve requests in tasks of ``tg`` from now on (the node's task group)."""
        self._tg = tg

    def stop(self) -> None:
        """The node stopped: every stream fails (502), nobody waits on one for ever."""
        for sid, st in self._streams.items():
            st.reset = StreamReset(stream_id=sid, status=502, reason="node stopped")
            st.signal.set()
        self._streams.clear()
        self._ledger = StreamLedger(self._ledger.budget)

    # --- origin streams -------------------------------------------------------------

    async def open(
        self,
        node_id: str,
        method: str,
        path: str,
        headers: tuple[tuple[str, str], ...],
        client: str | None,
    ) -> ProxyResponse:
        """``Node.open_request`` (see there)."""
        st = _Origin()
        key = client_key(client) if client is not None else None
        refused: list[str] = []

        def start(now: float) -> None:
            # The budget check reads the link's open streams in the core and records
            # the new one in the same driver step, so concurrent requests cannot both
            # take the last slot of a client's share.
            counted: tuple[str, LinkId] | None = None
            if key is not None and (hop := self._core.next_hop(node_id)) is not None:
                reason = self._ledger.refusal(key, hop)
                if reason is not None:
                    refused.append(reason)
                    return
                counted = (key, hop.link_id)
            sid = self._core.open_request(node_id, method, path, headers, now=now)
            st.sid = sid
            if st.abandoned:  # the caller was cancelled before this ran
                self._core.reset_stream(sid, now, "cancelled")
                return
            self._streams[sid] = st
            if counted is not None:
                st.ticket = self._ledger.record(*counted)

        try:
            await self._driver.call(start)
            if refused:
                raise StreamResetError(429, refused[0])
            while st.head is None:
                if st.reset is not None:
                    raise StreamResetError(st.reset.status, st.reset.reason)
                await st.signal.wait()
        except BaseException:
            self.abandon(st)
            raise
        return ProxyResponse(self, st, st.head)

    def grant(self, st: _Origin, amount: int) -> None:
        """The consumer of ``st`` took ``amount`` bytes: give that credit back."""
        sid = st.sid
        if sid is not None and not st.ended and st.reset is None:
            self._driver.post(lambda now: self._core.grant_credit(sid, amount, now))

    def abandon(self, st: _Origin) -> None:
        """The consumer went away: reset the stream (at every hop) if still open."""
        st.abandoned = True
        sid = st.sid
        if sid is None or st.ended or st.reset is not None:
            return
        self._streams.pop(sid, None)
        st.reset = StreamReset(stream_id=sid, status=499, reason="requester went away")

        def reset(now: float) -> None:
            self._core.reset_stream(sid, now, "requester went away")
            self._release(st)

        self._driver.post(reset)

    def _release(self, st: _Origin) -> None:
        """Give the stream's count back to its client's share (once)."""
        ticket = st.ticket
        if ticket is not None:
            st.ticket = None
            self._ledger.release(ticket)

    # --- events (driver task; never block) ------------------------------------------

    def on_event(self, event: Event) -> bool:
        """Handle a stream event of the core; False if ``event`` is not one."""
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
            sid = event.stream_id
            target = _Target(sid, event.capacity, self._core.response_link(sid))
            self._streams[sid] = target
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
                self._release(st)
                st.signal.set()
        elif isinstance(event, StreamReset):
            any_st = self._streams.pop(event.stream_id, None)
            if any_st is not None:
                any_st.reset = event
                if isinstance(any_st, _Origin):
                    self._release(any_st)
                any_st.signal.set()
        else:
            return False
        return True

    # --- serving requests addressed to this node ------------------------------------

    async def _serve(self, event: RequestReceived, st: _Target) -> None:
        sid = st.sid
        self._metrics.network_requests += 1
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
                self._driver.post(lambda now: self._core.reset_stream(sid, now, "serving failed"))

    async def _call_app(self, request: Request) -> Response:
        try:
            return await self.app(request)
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

    async def _reserve(self, st: _Target, size: int) -> None:
        """Wait for room for ``size`` more body bytes in the response link's queue
        (``NodeDriver.reserve``): many streams sending at once interleave their
        pieces there instead of queueing megabytes ahead of every other frame."""
        if st.link is not None:
            await self._driver.reserve(st.link, size)

    async def _send(self, st: _Target, data: bytes, reserved: int) -> None:
        """Hand ``data`` (at most the available credit, ``reserved`` bytes of room
        reserved for it) to the core, pipelined."""
        sid = st.sid
        link = st.link
        st.inflight += len(data)

        def send(now: float) -> None:
            st.inflight -= len(data)
            if link is not None:
                self._driver.unreserve(link, reserved)
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

        self._driver.post(send)
        # Let the driver run before producing more (a file read never starves it).
        await anyio.lowlevel.checkpoint()

    async def _send_bytes(self, st: _Target, body: bytes) -> None:
        view = memoryview(body)
        while view:
            available = await self._wait_capacity(st)
            take = min(available, _SEND_CHUNK, len(view))
            await self._reserve(st, take)
            await self._send(st, bytes(view[:take]), take)
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

        await self._driver.call(head)
        if not no_body:
            if isinstance(body, bytes):
                await self._send_bytes(st, body)
            elif isinstance(body, FileBody):
                await self._send_file(st, body)
            else:
                assert isinstance(body, StreamBody)
                metrics = self._metrics
                async for chunk in body.chunks:
                    await self._send_bytes(st, chunk)
                    metrics.tree_stream_bytes += len(chunk)

        def end(now: float) -> None:
            if st.reset is None:
                self._core.end_stream(sid, now)
                st.finished = True

        await self._driver.call(end)
        if st.reset is not None:
            raise _TargetClosed

    async def _send_file(self, st: _Target, body: FileBody) -> None:
        # Blocking reads on the loop, like the HTTP server's read-and-send path:
        # page-cache reads of up to 1 MiB are far cheaper than a worker-thread hop
        # (docs/benchmarks.md).
        remaining = body.length
        body.file.seek(body.offset)
        while remaining:
            available = await self._wait_capacity(st)
            size = min(available, _SEND_CHUNK, remaining)
            await self._reserve(st, size)  # before reading: no piece held while waiting
            chunk = body.file.read(size)
            if not chunk:
                if st.link is not None:
                    self._driver.unreserve(st.link, size)
                raise ReadError(f"file shrank while being sent ({remaining} bytes short)")
            remaining -= len(chunk)
            await self._send(st, chunk, size)
            self._metrics.tree_file_bytes += len(chunk)
