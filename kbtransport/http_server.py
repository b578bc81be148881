"""The HTTP/1.1 server side of one connection: h11 driven over an ``anyio.abc.ByteStream``.

Theory of operation
-------------------
``serve_http_connection`` runs one request at a time (h11 pauses on pipelined input
until the current response is done, so pipelining is safe by construction): it reads a
bounded request head and body, builds a frozen ``Request`` (``kbtransport.http_request``),
calls the app, and writes the app's ``Response`` (bytes, stream, file, or an upgrade:
``kbtransport.http_upgrade``). Then it starts the next cycle or closes, as h11's
keep-alive rules say. It runs on any anyio backend; where the event loop allows, a few
measured speed paths from ``kbtransport._accel`` replace portable steps (sendfile,
direct writes of small responses, one idle timer per connection).

Limits, each one a ``ServerConfig`` field:

- request line + headers: ``max_head_bytes`` (h11 ``max_incomplete_event_size``) → 431;
- request body: ``max_body_bytes`` → 413 and the connection is closed;
- a connection idle between requests longer than ``idle_timeout`` is closed;
- once a request's first byte has arrived, the whole head must arrive within
  ``header_timeout`` (a slowloris client sending a byte a second is dropped) → 408;
- every body read waits at most ``body_timeout``, every write ``write_timeout``.

Nothing escapes from the handler except cancellation: peer errors end the connection
(after a JSON error answer when one can still be sent), and an app that raises gets
its client a 500.

Why one module of some 660 lines: it has one job, the request cycle of one
connection, and every part of it reads or writes through the same h11 connection and
the same deadlines; what stands alone is already elsewhere (parsing:
``http_request``; response heads: ``http_heads``; upgrades: ``http_upgrade``; the
429 of a refused connection: ``http_refusal``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass
from typing import NoReturn, cast

import anyio
import anyio.lowlevel
import h11
from anyio.abc import ByteStream, SocketAttribute

from kbtransport._accel import IdleWatch, direct_writer, sendfile
from kbtransport.errors import (
    READ_ERRORS,
    WRITE_ERRORS,
    ExceptionMapping,
    PeerProtocolError,
    ReadError,
    TransportError,
    TransportTimeout,
    WriteError,
    map_exceptions,
)
from kbtransport.http import (
    CORS_HEADERS,
    App,
    FileBody,
    Headers,
    RawUpgrade,
    Request,
    Response,
    StreamBody,
    WebSocketAccept,
    error_response,
)
from kbtransport.http_heads import ResponseHeads
from kbtransport.http_request import (
    RequestRefused,
    ambiguous_framing,
    build_request,
    content_length,
    read_head,
)
from kbtransport.http_upgrade import serve_raw_upgrade, serve_websocket
from kbtransport.metrics import ServerCounters
from kbtransport.ratelimit import UploadLimiter
from kbtransport.slots import ConnectionSlot

__all__ = ("ServerConfig", "response_heads", "serve_http_connection")

_log = logging.getLogger("kbtransport.http")

#: Bytes asked of the stream per receive while reading requests.
_READ_SIZE = 64 * 1024
#: Methods answered by the OPTIONS preflight; the app decides which it really serves.
_ALLOW_METHODS = "GET, HEAD, POST, OPTIONS"
_ALLOW_HEADERS = "Range, If-Range, If-None-Match, Content-Type, Authorization"
#: Writes up to this size may go out at once when nothing is buffered (``_accel``).
_SMALL_WRITE = 16384
#: h11 events are immutable values: one ``EndOfMessage`` serves every response
#: (building one validates an empty trailer list each time).
_END = h11.EndOfMessage()


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """Bounds and behaviour of the HTTP server (all sizes in bytes, times in seconds).

    Attributes:
        max_head_bytes: request line plus headers; 16 KiB is h11's own default and far
            above what browsers and our clients send.
        max_body_bytes: request bodies (JSON commands); uploads are not a kbucket route.
        header_timeout: a request head must complete this soon after its first byte.
        idle_timeout: keep-alive connections idle this long are closed.
        body_timeout: the longest a whole request body may take to arrive.
        write_timeout: the longest a single write may block (a client that stops
            reading is dropped after it).
        file_chunk_size: read size when a file cannot go out by ``sendfile``.
        use_sendfile: allow ``sendfile`` on plain TCP sockets (asyncio backend).
        cors: add docs/http.md's CORS headers and answer OPTIONS preflights.
        server_name: the ``Server`` header.
        counters: where the server counts requests and the file and streamed body
            bytes it sent (a node's ``metrics``); None counts nothing. Not a limit:
            a shared, mutable object.
        upload_limit: the node's upload rate limit, shared by all its connections
            and its streams served through the tree (``kbtransport.ratelimit``):
            every response body waits for it; None (the default) sends at full speed.
    """

    max_head_bytes: int = 16 * 1024
    max_body_bytes: int = 1024 * 1024
    header_timeout: float = 10.0
    idle_timeout: float = 60.0
    body_timeout: float = 30.0
    write_timeout: float = 60.0
    file_chunk_size: int = 1024 * 1024
    use_sendfile: bool = True
    cors: bool = True
    server_name: str = "kbucket"
    counters: ServerCounters | None = None
    upload_limit: UploadLimiter | None = None

    def __post_init__(self) -> None:
        for name in ("max_head_bytes", "max_body_bytes", "file_chunk_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ServerConfig.{name} must be positive")
        for name in ("header_timeout", "idle_timeout", "body_timeout", "write_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ServerConfig.{name} must be positive")


def response_heads(config: ServerConfig) -> ResponseHeads:
    """The response heads of a server with ``config`` (its ``Server`` and CORS
    headers); one per listener, shared by its connections."""
    base = [(b"server", config.server_name.encode("latin-1"))]
    if config.cors:
        base += [(k.encode(), v.encode()) for k, v in CORS_HEADERS]
    return ResponseHeads(base)


class _FileLength:
    """Stands in for a file body inside h11: h11 only needs ``len()`` to frame it."""

    def __init__(self, length: int) -> None:
        self._length = length

    def __len__(self) -> int:
        return self._length


class _Connection:
    """State of one server connection (not public: use ``serve_http_connection``)."""

    def __init__(
        self,
        stream: ByteStream,
        app: App,
        config: ServerConfig,
        slot: ConnectionSlot,
        heads: ResponseHeads,
    ) -> None:
        self.stream = stream
        self.slot = slot
        self.app = app
        self.config = config
        self.counters = config.counters
        self.heads = heads
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=config.max_head_bytes)
        self.client = _peer_address(stream)
        self.watch: IdleWatch | None = None
        #: Writes a small response at once where that cannot block (``_accel``).
        self.write_now: Callable[[bytes], bool] = direct_writer(stream, _SMALL_WRITE) or _never
        self.base_headers: list[tuple[bytes, bytes]] = [
            (b"server", config.server_name.encode("latin-1"))
        ]
        if config.cors:
            self.base_headers += [(k.encode(), v.encode()) for k, v in CORS_HEADERS]

    # -- I/O helpers ---------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        if not data or self.write_now(data):
            return
        with map_exceptions(WRITE_ERRORS), anyio.fail_after(self.config.write_timeout):
            await self.stream.send(data)

    async def receive(self, size: int = _READ_SIZE) -> None:
        """One read of at most ``size`` bytes into h11 (EOF is handed to h11 as ``b""``)."""
        try:
            data = await self.stream.receive(size)
        except anyio.EndOfStream:
            data = b""
        except Exception:
            _reraise_mapped(READ_ERRORS)
        try:
            self.conn.receive_data(data)
        except Exception:
            _reraise_mapped(READ_ERRORS)

    async def next_event(self) -> h11.Event | type[h11.PAUSED]:
        with map_exceptions(READ_ERRORS):
            while True:
                event = self.conn.next_event()
                if event is h11.NEED_DATA:
                    await self.receive()
                    continue
                return cast("h11.Event | type[h11.PAUSED]", event)

    # -- the request cycle ---------------------------------------------------------

    async def run(self) -> None:
        # The slot's scope (the whole connection) is cancelled by the idle watch, and
        # by the listener when the slot is evicted, only while the connection waits
        # on its client.
        slot = self.slot
        self.watch = IdleWatch.start(self.config.idle_timeout, lambda: slot.since, slot.scope)
        try:
            await self.cycle()
        finally:
            if self.watch is not None:
                self.watch.stop()

    async def cycle(self) -> None:
        # The request loop, with the common case (a small request answered with bytes)
        # inline: every coroutine frame and call here runs once or twice per request.
        conn = self.conn
        app = self.app
        cors = self.config.cors
        counters = self.counters
        while True:
            request = await self.read_request()
            if request is None:
                return
            if counters is not None:
                counters.requests += 1
            if cors and request.method == "OPTIONS":
                response = _preflight(request)
            else:
                try:
                    response = await app(request)
                except Exception as exc:
                    response = _app_failed(request, exc)
            body = response.body
            if isinstance(body, WebSocketAccept | RawUpgrade):
                # The connection is no longer HTTP: its own protocol watches liveness,
                # and it never yields its slot to another connection.
                self.slot.since = None
                if self.watch is not None:
                    self.watch.stop()
                if isinstance(body, WebSocketAccept):
                    await serve_websocket(self, request, body)
                else:
                    await serve_raw_upgrade(self, request, body)
                return
            if isinstance(body, bytes):
                await self.send_bytes(request, response, body)
            else:
                await self.send_response(request, response)
            if conn.their_state is h11.SEND_BODY:
                await self.drain_body()
            if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                conn.start_next_cycle()
            else:
                return

    async def read_request(self) -> Request | None:
        """Read and bound one request; None means close quietly (idle, EOF)."""
        config = self.config
        conn = self.conn
        try:
            try:
                event = conn.next_event()
            except Exception:
                _reraise_mapped(READ_ERRORS)
            if event is h11.NEED_DATA:
                if not conn.trailing_data[0]:
                    # Idle between requests: wait for a first byte (under the idle
                    # watch), then the head deadline runs.
                    if not await self.wait_idle():
                        return None
                    try:
                        event = conn.next_event()
                    except Exception:
                        _reraise_mapped(READ_ERRORS)
                if event is h11.NEED_DATA:
                    # The head came in pieces: only now is a deadline worth opening.
                    # Meanwhile the connection waits on its client, so it may yield
                    # its slot.
                    self.slot.since = anyio.current_time()
                    try:
                        with anyio.fail_after(config.header_timeout):
                            event = await self.next_event()
                    finally:
                        self.slot.since = None
            else:
                # A pipelined request, already buffered: let other tasks run first
                # (small responses may be written without a checkpoint).
                await anyio.lowlevel.checkpoint()
        except TimeoutError:
            await self.send_error(408, "Request head not received in time")
            return None
        except PeerProtocolError as exc:
            await self.send_error(exc.status_hint, _peer_error_text(exc.status_hint))
            return None
        except ReadError:
            return None
        if type(event) is not h11.Request:
            # ConnectionClosed, or PAUSED (h11 waits for a protocol switch).
            return None
        headers, size, plain = read_head(event)
        if size > config.max_head_bytes:
            await self.send_error(431, _peer_error_text(431))
            return None
        if not plain:
            ambiguous = ambiguous_framing(headers, event.http_version)
            if ambiguous is not None:
                await self.send_error(400, ambiguous)
                return None
        try:
            body = b"" if plain else await self.read_body(headers)
            if plain:
                # No body: h11 has the EndOfMessage ready, no body deadline needed.
                self.end_of_bodiless_request()
            return build_request(event, headers, body, self.client)
        except RequestRefused as exc:
            await self.send_error(exc.status, exc.message)
            return None
        except PeerProtocolError as exc:
            await self.send_error(exc.status_hint, _peer_error_text(exc.status_hint))
            return None
        except (ReadError, TransportTimeout):
            return None

    def end_of_bodiless_request(self) -> None:
        """Take the ``EndOfMessage`` h11 has ready after a request without a body."""
        try:
            end = self.conn.next_event()
        except Exception:
            _reraise_mapped(READ_ERRORS)
        if type(end) is not h11.EndOfMessage:
            raise ReadError(f"unexpected event after a request without a body: {end!r}")

    async def wait_idle(self) -> bool:
        """Wait for the next request's first bytes; False if the connection ended
        (EOF is handed to h11, which then reports it) or stayed idle too long."""
        slot = self.slot
        watch = self.watch
        try:
            if watch is not None:
                # The watch closes the connection if this wait outlasts idle_timeout.
                slot.since = watch.now()
                await self.receive()
                return True
            slot.since = anyio.current_time()
            with anyio.move_on_after(self.config.idle_timeout) as idle:
                await self.receive()
            return not idle.cancelled_caught
        except ReadError:
            return False
        finally:
            slot.since = None

    async def read_body(self, headers: Headers) -> bytes:
        limit = self.config.max_body_bytes
        length = content_length(headers)
        if length is not None and length > limit:
            raise RequestRefused(413, f"Request body larger than {limit} bytes")
        if self.conn.they_are_waiting_for_100_continue:
            await self.send(
                self.conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b""
            )
        if length == 0 or (
            length is None and not any(n == b"transfer-encoding" for n, _ in headers)
        ):
            self.end_of_bodiless_request()
            return b""
        parts: list[bytes] = []
        size = 0
        try:
            # One deadline for the whole body, so a trickling client cannot hold the
            # connection longer than body_timeout whatever its pace.
            with anyio.fail_after(self.config.body_timeout):
                while True:
                    event = await self.next_event()
                    if isinstance(event, h11.Data):
                        size += len(event.data)
                        if size > limit:
                            raise RequestRefused(413, f"Request body larger than {limit} bytes")
                        parts.append(bytes(event.data))
                    elif isinstance(event, h11.EndOfMessage):
                        return b"".join(parts)
                    else:
                        raise ReadError("connection closed during the request body")
        except TimeoutError as exc:
            raise TransportTimeout("request body not received in time") from exc

    async def drain_body(self) -> None:
        """Discard a streamed body the app left unread, up to ``max_body_bytes``.

        Closing with unread input makes the kernel reset the connection, which can
        destroy the response in flight; a bounded drain (as nginx's lingering close)
        avoids that, and keeps the connection if the body ends within the bound.
        """
        left = self.config.max_body_bytes
        with anyio.move_on_after(self.config.body_timeout):
            while left >= 0:
                try:
                    event = await self.next_event()
                except TransportError:
                    return
                if isinstance(event, h11.Data):
                    left -= len(event.data)
                else:
                    return

    # -- writing -------------------------------------------------------------------

    async def send_error(self, status: int, message: str) -> None:
        """Answer with a JSON error and ``Connection: close``, if h11 still allows it."""
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        response = error_response(status, message, (("Connection", "close"),))
        body = cast(bytes, response.body)
        with contextlib.suppress(TransportError, h11.LocalProtocolError):
            await self.send(
                self.heads.head(self.conn, response, len(body))
                + (self.conn.send(h11.Data(data=body)) or b"")
                + (self.conn.send(_END) or b"")
            )

    async def send_bytes(self, request: Request, response: Response, body: bytes) -> None:
        """Send a response whose body is ``body``: head, body and end in one write (one
        system call and one write deadline per small response, such as a find answer)."""
        conn = self.conn
        status = response.status
        try:
            if status == 204 or status == 304:
                out = self.heads.head(conn, response, None)
            else:
                out = self.heads.head(conn, response, len(body))
                if body and request.method != "HEAD":
                    if self.config.upload_limit is not None:
                        await self.config.upload_limit.acquire(len(body))
                    out += conn.send(h11.Data(data=body)) or b""
            out += conn.send(_END) or b""
        except h11.LocalProtocolError as exc:
            raise _framing_error(request, exc) from exc
        await self.send(out)

    async def send_response(self, request: Request, response: Response) -> None:
        """Send a file or stream response (``send_bytes`` sends bytes bodies)."""
        body = response.body
        head_only = request.method == "HEAD" or response.status in (204, 304)
        heads = self.heads
        conn = self.conn
        try:
            if isinstance(body, FileBody):
                await self.send(heads.head(conn, response, body.length))
                if not head_only:
                    await self.send_file(body)
                    if self.counters is not None:
                        self.counters.file_bytes += body.length
            else:
                assert isinstance(body, StreamBody)
                await self.send(heads.head(conn, response, body.length))
                if not head_only:
                    await self.send_stream(body.chunks)
            await self.send(conn.send(_END) or b"")
        except h11.LocalProtocolError as exc:
            # A malformed header, or the app's stream produced more or fewer bytes
            # than it announced.
            raise _framing_error(request, exc) from exc
        finally:
            if isinstance(body, FileBody):
                body.file.close()
            elif isinstance(body, StreamBody):
                await _aclose_iterable(body.chunks)
                if body.on_close is not None:
                    with anyio.CancelScope(shield=True):
                        try:
                            await body.on_close()
                        except Exception:
                            _log.exception("StreamBody.on_close failed")

    async def send_stream(self, chunks: AsyncIterable[bytes]) -> None:
        counters = self.counters
        limit = self.config.upload_limit
        async for chunk in chunks:
            if chunk:
                if limit is not None:
                    await limit.acquire(len(chunk))
                await self.send(self.conn.send(h11.Data(data=chunk)) or b"")
                if counters is not None:
                    counters.stream_bytes += len(chunk)

    async def send_file(self, body: FileBody) -> None:
        # h11 frames the body: it is told the length, and the bytes bypass it.
        self.conn.send_with_data_passthrough(h11.Data(data=cast(bytes, _FileLength(body.length))))
        if body.length == 0:
            return
        if self.config.upload_limit is not None:
            await self._send_file_limited(body, self.config.upload_limit)
            return
        if self.config.use_sendfile:
            try:
                with map_exceptions(WRITE_ERRORS):
                    if await sendfile(self.stream, body.file, body.offset, body.length):
                        return
            except EOFError as exc:
                raise WriteError(str(exc)) from exc
        await self._read_and_send(body)

    async def _send_file_limited(self, body: FileBody, limit: UploadLimiter) -> None:
        # Under a rate limit the file goes out in pieces of ``limit.piece_size``, each
        # after its tokens: by ``sendfile`` where it works (one call per piece), else
        # read and sent. The unlimited path above keeps its single call.
        offset = body.offset
        end = body.offset + body.length
        kernel = self.config.use_sendfile
        while offset < end:
            size = min(limit.piece_size, end - offset)
            await limit.acquire(size)
            if kernel:
                try:
                    with map_exceptions(WRITE_ERRORS):
                        kernel = await sendfile(self.stream, body.file, offset, size)
                except EOFError as exc:
                    raise WriteError(str(exc)) from exc
            if not kernel:
                await self._read_and_send(FileBody(file=body.file, offset=offset, length=size))
            offset += size

    async def _read_and_send(self, body: FileBody) -> None:
        # Blocking reads on the loop: 1 MiB page-cache reads cost 0.35 s CPU/GiB against
        # 0.50 for a worker-thread hop per read (docs/benchmarks.md).
        remaining = body.length
        body.file.seek(body.offset)
        chunk_size = self.config.file_chunk_size
        while remaining:
            chunk = body.file.read(min(chunk_size, remaining))
            if not chunk:
                raise WriteError(f"file shrank while being sent ({remaining} bytes short)")
            remaining -= len(chunk)
            await self.send(chunk)

    # -- leaving HTTP (``kbtransport.http_upgrade.UpgradeChannel``) -----------------

    @property
    def might_switch(self) -> bool:
        """True if the request asked to switch protocols."""
        # h11 exports the state but leaves it out of ``__all__``.
        return self.conn.their_state is h11.MIGHT_SWITCH_PROTOCOL  # type: ignore[attr-defined]

    async def switch(self, headers: list[tuple[bytes, bytes]]) -> bytes | None:
        """Send ``101 Switching Protocols``; return the bytes the client sent after its
        request head, or None if the 101 could not be written."""
        try:
            await self.send(
                self.conn.send(h11.InformationalResponse(status_code=101, headers=headers)) or b""
            )
        except TransportError:
            return None
        trailing, _closed = self.conn.trailing_data
        return bytes(trailing)


def _never(data: bytes) -> bool:
    """The direct writer where there is none: every write goes through ``send``."""
    return False


def _preflight(request: Request) -> Response:
    """The answer to a CORS preflight (``OPTIONS``), whatever the path."""
    return Response(
        status=204,
        headers=(
            ("Access-Control-Allow-Methods", _ALLOW_METHODS),
            ("Access-Control-Allow-Headers", _ALLOW_HEADERS),
            ("Access-Control-Max-Age", "86400"),
        ),
    )


def _app_failed(request: Request, exc: Exception) -> Response:
    """The answer when the app raised ``exc`` instead of returning a response."""
    if isinstance(exc, TransportTimeout):
        # An upstream the app called timed out and the app did not say what to
        # answer: that is a gateway timeout (docs/http.md, 504).
        _log.info("upstream timeout on %s %r: %s", request.method, request.target, exc)
        return error_response(504, "Upstream timed out")
    if isinstance(exc, TransportError):
        _log.info("upstream failure on %s %r: %s", request.method, request.target, exc)
        return error_response(502, "Upstream failed")
    # An app bug must cost one request, not the server; the traceback goes to the log
    # (never to the client, which could leak paths).
    _log.error("app failed on %s %r", request.method, request.target, exc_info=exc)
    return error_response(500)


def _reraise_mapped(mapping: ExceptionMapping) -> NoReturn:
    """Re-raise the exception being handled as ``map_exceptions(mapping)`` would.

    Called from an ``except`` clause, so the translation costs nothing on the path
    that does not fail (a ``with map_exceptions`` is a generator context manager:
    a few µs on every call, several times per request).
    """
    with map_exceptions(mapping):
        raise  # the exception our caller is handling


async def _aclose_iterable(chunks: AsyncIterable[bytes]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            await aclose()


def _peer_error_text(status: int) -> str:
    if status == 431:
        return "Request header fields too large"
    return "Malformed HTTP request"


def _peer_address(stream: ByteStream) -> tuple[str, int] | None:
    address = stream.extra(SocketAttribute.remote_address, None)
    if isinstance(address, tuple) and len(address) >= 2:
        return (str(address[0]), int(address[1]))
    return None


def _framing_error(request: Request, exc: h11.LocalProtocolError) -> WriteError:
    """Log a response that broke HTTP framing; the ``WriteError`` that ends its connection."""
    _log.error("response to %s %r broke HTTP framing: %s", request.method, request.target, exc)
    return WriteError(str(exc))


async def serve_http_connection(
    stream: ByteStream,
    app: App,
    config: ServerConfig | None = None,
    *,
    slot: ConnectionSlot | None = None,
    heads: ResponseHeads | None = None,
) -> None:
    """Serve HTTP/1.1 requests on ``stream`` until the client or a limit ends it.

    Args:
        stream: a connected byte stream (TCP, TLS or in-memory); closed on return.
        app: ``async (Request) -> Response``; exceptions it raises become a 500.
        config: limits and options (``ServerConfig()`` if None).
        slot: the listener's slot for this connection, whose scope the caller runs
            this in (``kbtransport.slots``); this function keeps its ``since``. None:
            a slot of its own, counted nowhere.
        heads: the listener's ``response_heads(config)``, shared by its connections;
            None: one for this connection.

    Never raises except on cancellation (the slot's scope, cancelled by the idle
    timer or an eviction, ends it quietly): transport errors end the connection.
    """
    cfg = config if config is not None else ServerConfig()
    own_heads = heads if heads is not None else response_heads(cfg)
    if slot is None:
        own = ConnectionSlot("", None)
        with own.scope:
            await _serve_connection(stream, app, cfg, own, own_heads)
    else:
        await _serve_connection(stream, app, cfg, slot, own_heads)


async def _serve_connection(
    stream: ByteStream, app: App, config: ServerConfig, slot: ConnectionSlot, heads: ResponseHeads
) -> None:
    connection = _Connection(stream, app, config, slot, heads)
    try:
        await connection.run()
    except TransportError as exc:
        _log.debug("connection from %s ended: %s", connection.client, exc)
    finally:
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            await stream.aclose()
