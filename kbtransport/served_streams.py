"""Requests addressed to this node that reach it through the tree, served as streams.

A ``RequestReceived`` event (this node is the target of a proxied stream) is served by
running ``app`` (the node's own routes) on a synthetic ``Request`` and streaming the
``Response`` back under the stream's credit, in pieces of at most ``_SEND_CHUNK`` bytes
(files are read piece by piece, so memory stays bounded whatever the file size), each
piece waiting for room in its link's writer queue (``NodeDriver.reserve``,
``docs/security.md``) and, on a node with an upload rate limit, for its tokens
(``kbtransport.ratelimit``: pieces of the limiter's size, so what a hub proxies from a
share shares the share's one limit with its direct downloads). A failure after the
head resets the stream at every hop.
``on_event`` runs in the driver task and never blocks; everything asked of the core
goes through ``driver.call``/``driver.post`` (STYLE rule 11).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from urllib.parse import parse_qsl, unquote

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from kbproto.errors import LocalProtocolError
from kbproto.events import Event, RequestReceived, StreamReset, StreamWritable
from kbproto.hub import HubCore
from kbproto.ids import LinkId, StreamId
from kbproto.share import ShareCore
from kbtransport._signal import Signal
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
from kbtransport.ratelimit import UploadLimiter

__all__ = ("ServedStreams", "discard_response", "request_from_target")

_log = logging.getLogger("kbtransport.served_streams")

#: Largest body piece handed to the core at once when serving; the core cuts it into
#: data frames. Big pieces mean few driver round trips (each costs several task
#: switches); the credit window bounds it. 1 MiB against 256 KiB: a third less user
#: CPU per proxied GiB at the sending share (A/B, 8 downloads each).
_SEND_CHUNK = 1024 * 1024

#: The cores a node runs.
_Core = HubCore | ShareCore


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


class _Target:
    __slots__ = ("capacity", "finished", "inflight", "link", "reset", "sid", "signal")

    def __init__(self, sid: StreamId, capacity: int, link: LinkId | None) -> None:
        self.sid = sid
        self.capacity = capacity
        self.inflight = 0
        self.reset: StreamReset | None = None
        self.finished = False
        self.signal = Signal()
        #: The link the response leaves on: body bytes wait for room in its queue.
        self.link = link


class _TargetClosed(Exception):
    """The stream we serve was reset (the requester went away, a hop failed...)."""


async def _not_found_app(request: Request) -> Response:
    return error_response(404, "No such route")


class ServedStreams:
    """The streams a node serves (see the module docstring).

    Args:
        core: the node's core (only ever touched in the driver task).
        driver: the node's driver.
        metrics: where served requests and bytes are counted.
        upload_limit: the node's upload rate limit (shared with its HTTP server);
            None sends at full speed.

    Attributes:
        app: serves the requests addressed to this node (its own routes; a 404
            answer until the node's routes are set).
    """

    def __init__(
        self,
        core: _Core,
        driver: NodeDriver,
        metrics: NodeMetrics,
        upload_limit: UploadLimiter | None = None,
    ) -> None:
        self._core = core
        self._driver = driver
        self._metrics = metrics
        self._limit = upload_limit
        self._piece = _SEND_CHUNK if upload_limit is None else upload_limit.piece_size
        self._streams: dict[StreamId, _Target] = {}
        self._tg: TaskGroup | None = None
        self.app: App = _not_found_app

    def start(self, tg: TaskGroup) -> None:
        """Serve requests in tasks of ``tg`` from now on (the node's task group)."""
        self._tg = tg

    def stop(self) -> None:
        """The node stopped: every stream being served ends."""
        for sid, st in self._streams.items():
            st.reset = StreamReset(stream_id=sid, status=502, reason="node stopped")
            st.signal.set()
        self._streams.clear()

    def on_event(self, event: Event) -> None:
        """Handle a ``RequestReceived``, ``StreamWritable`` or ``StreamReset`` event of
        the core (driver task; never blocks); others are not ours."""
        if isinstance(event, StreamWritable):
            tgt = self._streams.get(event.stream_id)
            if tgt is not None:
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
        elif isinstance(event, StreamReset):
            st = self._streams.pop(event.stream_id, None)
            if st is not None:
                st.reset = event
                st.signal.set()

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
            take = min(available, self._piece, len(view))
            if self._limit is not None:
                await self._limit.acquire(take)
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
            size = min(available, self._piece, remaining)
            if self._limit is not None:
                await self._limit.acquire(size)
            await self._reserve(st, size)  # before reading: no piece held while waiting
            chunk = body.file.read(size)
            if not chunk:
                if st.link is not None:
                    self._driver.unreserve(st.link, size)
                raise ReadError(f"file shrank while being sent ({remaining} bytes short)")
            remaining -= len(chunk)
            await self._send(st, chunk, size)
            self._metrics.tree_file_bytes += len(chunk)
