"""The HTTP/1.1 server side of one connection: h11 driven over an ``anyio.abc.ByteStream``.

Theory of operation
-------------------
``serve_http_connection`` runs one request at a time (h11 pauses on pipelined input
until the current response is done, so pipelining is safe by construction): it reads a
bounded request head and body, builds a frozen ``Request``, calls the app, and writes
the app's ``Response`` (bytes, stream, file or websocket upgrade). Then it starts the
next cycle or closes, as h11's keep-alive rules say.

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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import NoReturn, cast
from urllib.parse import parse_qsl, unquote

import anyio
import anyio.lowlevel
import h11
from anyio.abc import ByteStream, SocketAttribute
from wsproto import ConnectionType
from wsproto.connection import Connection as WsConnection

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
    RawUpgrade,
    Request,
    Response,
    StreamBody,
    WebSocketAccept,
    error_response,
)
from kbtransport.metrics import ServerCounters
from kbtransport.tcp import asyncio_transport
from kbtransport.websocket import WebSocketLink, accept_key

__all__ = ("ServerConfig", "serve_http_connection")

_log = logging.getLogger("kbtransport.http")

#: Bytes asked of the stream per receive while reading requests.
_READ_SIZE = 64 * 1024
#: Methods answered by the OPTIONS preflight; the app decides which it really serves.
_ALLOW_METHODS = "GET, HEAD, POST, OPTIONS"
_ALLOW_HEADERS = "Range, If-Range, If-None-Match, Content-Type, Authorization"


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
        cors: add SPEC §4's CORS headers and answer OPTIONS preflights.
        server_name: the ``Server`` header.
        counters: where the server counts requests and the file and streamed body
            bytes it sent (a node's ``metrics``); None counts nothing. Not a limit:
            a shared, mutable object.
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

    def __post_init__(self) -> None:
        for name in ("max_head_bytes", "max_body_bytes", "file_chunk_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ServerConfig.{name} must be positive")
        for name in ("header_timeout", "idle_timeout", "body_timeout", "write_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ServerConfig.{name} must be positive")


class _HttpError(Exception):
    """An answer-and-close decided while reading a request."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


#: Writes up to this size skip the write deadline when nothing is buffered (``send``).
_SMALL_WRITE = 16384


class _FileLength:
    """Stands in for a file body inside h11: h11 only needs ``len()`` to frame it."""

    def __init__(self, length: int) -> None:
        self._length = length

    def __len__(self) -> int:
        return self._length


class _IdleWatch:
    """Closes a connection left idle between requests for ``timeout`` seconds.

    Why not ``move_on_after`` around each wait for a request: a cancel scope with a
    deadline costs ~10-25 µs to enter and leave (a loop timer armed and cancelled),
    as much as h11's parsing of a small request, on every request of every
    keep-alive connection. Here the connection enters one plain scope for its whole
    life, marks ``since`` when it starts waiting for a request (None again once bytes
    arrive: a float store per request), and one loop timer, re-armed lazily, checks:
    when it fires and the connection has been waiting ``timeout`` seconds, it cancels
    the scope; otherwise it re-arms for ``since + timeout`` (or ``now + timeout``
    while a request is being served). A connection still closes exactly
    ``timeout`` after it went idle, with at most one extra timer wake-up per
    ``timeout``. asyncio only (the loop's ``call_at``); elsewhere the caller falls
    back to a scope per wait.
    """

    __slots__ = ("handle", "loop", "scope", "since", "timeout")

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        self.timeout = timeout
        self.scope = anyio.CancelScope()
        #: When the connection started waiting for a request; None while serving one.
        self.since: float | None = None
        self.handle: asyncio.TimerHandle | None = loop.call_at(loop.time() + timeout, self.fire)

    @classmethod
    def start(cls, timeout: float) -> _IdleWatch | None:
        """A watch on the running asyncio loop, or None on another event loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        return cls(loop, timeout)

    def fire(self) -> None:
        since = self.since
        now = self.loop.time()
        if since is not None and now - since >= self.timeout:
            self.handle = None
            self.scope.cancel()
            return
        self.handle = self.loop.call_at((now if since is None else since) + self.timeout, self.fire)

    def stop(self) -> None:
        """Never fire again (the connection ended or left HTTP)."""
        self.since = None
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


class _Connection:
    """State of one server connection (not public: use ``serve_http_connection``)."""

    def __init__(self, stream: ByteStream, app: App, config: ServerConfig) -> None:
        self.stream = stream
        # Plain TCP on asyncio: lets ``send`` see whether a write can block at all.
        self.transport = asyncio_transport(stream)
        self.app = app
        self.config = config
        self.counters = config.counters
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=config.max_head_bytes)
        self.client = _peer_address(stream)
        self.watch: _IdleWatch | None = None
        self.base_headers: list[tuple[bytes, bytes]] = [
            (b"server", config.server_name.encode("latin-1"))
        ]
        if config.cors:
            self.base_headers += [(k.encode(), v.encode()) for k, v in CORS_HEADERS]
        self.base_block = _validated_block(self.base_headers)

    # -- I/O helpers ---------------------------------------------------------------

    def write_now(self, data: bytes) -> bool:
        """Write ``data`` at once if that cannot block; False if ``send`` must do it.

        On plain asyncio TCP a transport write never blocks: what the kernel does not
        take at once waits in the transport's buffer. Writing only into an empty buffer,
        and at most ``_SMALL_WRITE`` bytes, bounds what a client that stops reading can
        make us hold to one small response; with anything buffered, ``send`` waits
        under its deadline. Such a write goes straight to the transport: anyio's
        ``send`` would add a shielded cancel scope and a pass of the event loop (its
        checkpoint) to every response, more Python than the rest of a small response.
        (The connection's task still yields once per request: waiting for it, or
        ``read_request``'s checkpoint for a pipelined one.)
        """
        transport = self.transport
        if (
            transport is None
            or len(data) > _SMALL_WRITE
            or transport.is_closing()
            or transport.get_write_buffer_size()
        ):
            return False
        transport.write(data)
        return True

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
        watch = _IdleWatch.start(self.config.idle_timeout)
        self.watch = watch
        if watch is None:
            await self.cycle()
            return
        # One scope for the whole connection, cancelled only by the idle watch (and
        # only while the connection waits for a request's first byte).
        with watch.scope:
            try:
                await self.cycle()
            finally:
                watch.stop()

    async def cycle(self) -> None:
        # The request loop, with the common case (a small request answered with bytes)
        # inline: every coroutine frame and call here runs once or twice per request,
        # cold between two requests, and that, not any one step, was most of a find's
        # cost at a hub next to a bare h11 loop.
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
            if type(body) is bytes:
                try:
                    out = self.bytes_response(request, response, body)
                except h11.LocalProtocolError as exc:
                    _log.error(
                        "response to %s %r broke HTTP framing: %s",
                        request.method,
                        request.target,
                        exc,
                    )
                    raise WriteError(str(exc)) from exc
                if not self.write_now(out):
                    await self.send(out)
            elif isinstance(body, (WebSocketAccept, RawUpgrade)):
                # The connection is no longer HTTP: its own protocol watches liveness.
                if self.watch is not None:
                    self.watch.stop()
                if isinstance(body, WebSocketAccept):
                    await self.upgrade(request, body)
                else:
                    await self.raw_upgrade(request, body)
                return
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
                    # The head came in pieces: only now is a deadline (a cancel scope,
                    # as costly as h11's parsing) worth opening.
                    with anyio.fail_after(config.header_timeout):
                        event = await self.next_event()
            else:
                # A pipelined request, already buffered: let other tasks run first
                # (responses are written without a checkpoint, see ``write_now``).
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
        # One pass over the headers: bytes pairs for the app, the head's size (h11
        # bounds only heads that arrive in pieces; a head that came whole in one read
        # is measured here, so the limit holds however the bytes were chunked), and
        # whether the request may carry a body.
        size = len(event.target)
        pairs: list[tuple[bytes, bytes]] = []
        plain = True
        for raw_name, raw_value in event.headers.raw_items():
            name = bytes(raw_name).lower()
            value = bytes(raw_value)
            pairs.append((name, value))
            size += len(name) + len(value) + 4
            if name in _BODY_HEADERS:
                plain = False
        headers = tuple(pairs)
        if size > config.max_head_bytes:
            await self.send_error(431, _peer_error_text(431))
            return None
        if not plain:
            ambiguous = _ambiguous_framing(headers, event.http_version)
            if ambiguous is not None:
                await self.send_error(400, ambiguous)
                return None
        try:
            if plain:
                # No Content-Length, Transfer-Encoding or Expect: no body (RFC 9112
                # §6.3), and h11 has the EndOfMessage ready; no body deadline needed.
                try:
                    end = conn.next_event()
                except Exception:
                    _reraise_mapped(READ_ERRORS)
                if type(end) is not h11.EndOfMessage:
                    raise ReadError(f"unexpected event after a request without a body: {end!r}")
                return self.build_request(event, headers, b"")
            body = await self.read_body(headers)
            return self.build_request(event, headers, body)
        except _HttpError as exc:
            await self.send_error(exc.status, exc.message)
            return None
        except PeerProtocolError as exc:
            await self.send_error(exc.status_hint, _peer_error_text(exc.status_hint))
            return None
        except (ReadError, TransportTimeout):
            return None

    async def wait_idle(self) -> bool:
        """Wait for the next request's first bytes; False if the connection ended
        (EOF is handed to h11, which then reports it) or stayed idle too long."""
        watch = self.watch
        if watch is None:
            with anyio.move_on_after(self.config.idle_timeout) as idle:
                try:
                    await self.receive()
                except ReadError:
                    return False
            return not idle.cancelled_caught
        # The watch closes the connection if this wait outlasts idle_timeout.
        watch.since = watch.loop.time()
        try:
            data = await self.stream.receive(_READ_SIZE)
        except anyio.EndOfStream:
            data = b""
        except Exception:
            return False
        finally:
            watch.since = None
        try:
            self.conn.receive_data(data)
        except Exception:
            return False
        return True

    async def read_body(self, headers: tuple[tuple[bytes, bytes], ...]) -> bytes:
        limit = self.config.max_body_bytes
        length = _content_length(headers)
        if length is not None and length > limit:
            raise _HttpError(413, f"Request body larger than {limit} bytes")
        if self.conn.they_are_waiting_for_100_continue:
            await self.send(
                self.conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b""
            )
        if length == 0 or (
            length is None and not any(n == b"transfer-encoding" for n, _ in headers)
        ):
            # No body (a GET): h11 has the EndOfMessage ready, so skip the body
            # deadline's cancel scope; bodies take the bounded path below.
            try:
                event = self.conn.next_event()
            except Exception:
                _reraise_mapped(READ_ERRORS)
            if isinstance(event, h11.EndOfMessage):
                return b""
            raise ReadError(f"unexpected event after a request without a body: {event!r}")
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
                            raise _HttpError(413, f"Request body larger than {limit} bytes")
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

    def build_request(
        self,
        head: h11.Request,
        headers: tuple[tuple[bytes, bytes], ...],
        body: bytes,
    ) -> Request:
        target = bytes(head.target)
        method = head.method.decode("ascii", "replace").upper()
        try:
            text = target.decode("ascii")
        except UnicodeDecodeError:
            raise _HttpError(400, "Request target is not ASCII") from None
        path, _, query = text.partition("?")
        segments: tuple[str, ...] = ()
        pairs: list[tuple[str, str]] = []
        if not (path == "*" and method == "OPTIONS"):
            if not path.startswith("/"):
                raise _HttpError(400, "Request target must be an absolute path")
            try:
                # Split first, decode second: an encoded "/" stays inside its segment.
                # (Without a "%" there is nothing to decode: unquote would return each
                # segment as it is, so skip its call per segment.)
                if "%" in path:
                    segments = tuple(unquote(s, errors="strict") for s in path[1:].split("/"))
                else:
                    segments = tuple(path[1:].split("/"))
                if query:
                    pairs = parse_qsl(
                        query, keep_blank_values=True, errors="strict", max_num_fields=256
                    )
            except (UnicodeDecodeError, ValueError):
                raise _HttpError(400, "Malformed percent-encoding in request target") from None
        return Request(
            method=method,
            target=target,
            path=path,
            segments=segments,
            query=tuple(pairs),
            headers=headers,
            body=body,
            http_version=head.http_version.decode("ascii"),
            client=self.client,
        )

    # -- writing -------------------------------------------------------------------

    async def send_error(self, status: int, message: str) -> None:
        """Answer with a JSON error and ``Connection: close``, if h11 still allows it."""
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        response = error_response(status, message, (("Connection", "close"),))
        with contextlib.suppress(TransportError, h11.LocalProtocolError):
            await self.send_head(response, len(cast(bytes, response.body)))
            await self.send(self.conn.send(h11.Data(data=cast(bytes, response.body))) or b"")
            await self.send(self.conn.send(_END))

    async def send_head(self, response: Response, length: int | None) -> None:
        await self.send(self.head_bytes(response, length))

    def head_bytes(self, response: Response, length: int | None) -> bytes:
        # h11 validates every header of every response (twice: building the event and
        # cleaning it up for sending), the largest cost of a small response. Only the
        # headers that decide framing and keep-alive go through h11 each time; the
        # others (ours, the CORS pair, the app's) are validated by h11 once per
        # distinct set and cached as bytes, then spliced in before the blank line
        # that ends h11's head. The wire bytes differ only in header order.
        # The h11 event itself (status, framing headers, length) is immutable and
        # h11 never changes it when sending (it builds a new one when it must add
        # ``Connection: close``), so one built event serves every response with the
        # same head: building it is most of h11's cost for a small response.
        framing, block = _header_block(response.headers)
        status = response.status
        key = (status, framing, length)
        event = _events.get(key)
        if event is None:
            headers = list(framing)
            if length is not None:
                headers.append((b"content-length", str(length).encode("ascii")))
            event = h11.Response(status_code=status, headers=headers, reason=_reason(status))
            if len(_events) >= _EVENT_CACHE_SIZE:
                _events.clear()
            _events[key] = event
        head = self.conn.send(event)
        # h11 ends a head with an empty line; ours goes right before it.
        assert head.endswith(b"\r\n\r\n"), head
        return b"".join((head[:-2], self.base_block, block, b"\r\n"))

    def bytes_response(self, request: Request, response: Response, body: bytes) -> bytes:
        """Head, body and end of a bytes response as one piece of output (one write)."""
        conn = self.conn
        status = response.status
        if status == 204 or status == 304:
            out = self.head_bytes(response, None)
        else:
            out = self.head_bytes(response, len(body))
            if body and request.method != "HEAD":
                out += conn.send(h11.Data(data=body))
        return out + conn.send(_END)

    async def send_response(self, request: Request, response: Response) -> None:
        body = response.body
        head_only = request.method == "HEAD" or response.status in (204, 304)
        try:
            if isinstance(body, bytes):
                # Head, body and end in one write: one syscall and one write deadline
                # per small response (a find answer) instead of two or three.
                no_length = response.status in (204, 304)
                out = self.head_bytes(response, None if no_length else len(body))
                if not head_only and body:
                    out += self.conn.send(h11.Data(data=body)) or b""
                out += self.conn.send(_END)
                await self.send(out)
            else:
                if isinstance(body, FileBody):
                    await self.send_head(response, body.length)
                    if not head_only:
                        await self.send_file(body)
                        if self.counters is not None:
                            self.counters.file_bytes += body.length
                else:
                    assert isinstance(body, StreamBody)
                    await self.send_head(response, body.length)
                    if not head_only:
                        await self.send_stream(body.chunks)
                await self.send(self.conn.send(_END))
        except h11.LocalProtocolError as exc:
            # The app's stream produced more or fewer bytes than it announced.
            _log.error(
                "response to %s %r broke HTTP framing: %s", request.method, request.target, exc
            )
            raise WriteError(str(exc)) from exc
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
        async for chunk in chunks:
            if chunk:
                await self.send(self.conn.send(h11.Data(data=chunk)) or b"")
                if counters is not None:
                    counters.stream_bytes += len(chunk)

    async def send_file(self, body: FileBody) -> None:
        # h11 frames the body: it is told the length, and the bytes bypass it.
        self.conn.send_with_data_passthrough(h11.Data(data=cast(bytes, _FileLength(body.length))))
        if body.length == 0:
            return
        transport = _sendfile_transport(self.stream) if self.config.use_sendfile else None
        if transport is not None:
            await self._loop_sendfile(transport, body)
        else:
            await self._read_and_send(body)

    async def _loop_sendfile(self, transport: asyncio.Transport, body: FileBody) -> None:
        # perf-baselines §3: sendfile costs ~0.20 s CPU per GiB against 0.35 for
        # read+send. asyncio's loop.sendfile waits for the transport's write buffer to
        # drain first (so the head goes out before the body) and pauses reading.
        loop = asyncio.get_running_loop()
        with map_exceptions(WRITE_ERRORS):
            sent = await loop.sendfile(transport, body.file, body.offset, body.length)
        if sent != body.length:
            raise WriteError(f"file shrank while being sent ({sent} of {body.length} bytes)")

    async def _read_and_send(self, body: FileBody) -> None:
        # Blocking reads on the loop: perf-baselines §3 measured 1 MiB reads at 0.35 s
        # CPU/GiB against 0.50 for a worker-thread hop per read (page cache assumed).
        remaining = body.length
        body.file.seek(body.offset)
        chunk_size = self.config.file_chunk_size
        while remaining:
            chunk = body.file.read(min(chunk_size, remaining))
            if not chunk:
                raise WriteError(f"file shrank while being sent ({remaining} bytes short)")
            remaining -= len(chunk)
            await self.send(chunk)

    async def upgrade(self, request: Request, accept: WebSocketAccept) -> None:
        key = request.header("sec-websocket-key")
        version = request.header("sec-websocket-version")
        if not request.wants_websocket or key is None or version != "13":
            await self.send_error(400, "Not a valid websocket upgrade request")
            return
        headers = [
            (b"upgrade", b"websocket"),
            (b"connection", b"Upgrade"),
            (b"sec-websocket-accept", accept_key(key.encode("latin-1"))),
            *self.base_headers,
        ]
        if accept.subprotocol is not None:
            headers.append((b"sec-websocket-protocol", accept.subprotocol.encode("latin-1")))
        trailing = await self._switch(headers)
        if trailing is None:
            return
        link = WebSocketLink(
            self.stream,
            WsConnection(ConnectionType.SERVER, trailing_data=trailing),
            max_message_bytes=accept.max_message_bytes,
            subprotocol=accept.subprotocol,
        )
        try:
            await accept.handler(link)
        finally:
            await link.aclose()

    async def raw_upgrade(self, request: Request, accept: RawUpgrade) -> None:
        asked = (request.header("upgrade") or "").strip().lower()
        # h11 exports the state but leaves it out of ``__all__``.
        switching = self.conn.their_state is h11.MIGHT_SWITCH_PROTOCOL  # type: ignore[attr-defined]
        if asked != accept.protocol.lower() or not switching:
            await self.send_error(400, f"Not an Upgrade to {accept.protocol}")
            return
        headers = [
            (b"upgrade", accept.protocol.encode("latin-1")),
            (b"connection", b"Upgrade"),
            *self.base_headers,
        ]
        trailing = await self._switch(headers)
        if trailing is not None:
            await accept.handler(self.stream, trailing)

    async def _switch(self, headers: list[tuple[bytes, bytes]]) -> bytes | None:
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


#: Response headers h11 must see to frame the body and decide keep-alive.
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection"})
#: Request headers that mean a body may follow (or a 100 Continue is awaited).
_BODY_HEADERS = frozenset({b"content-length", b"transfer-encoding", b"expect"})
#: h11 events are immutable values: one ``EndOfMessage`` serves every response
#: (building one validates an empty trailer list each time).
_END = h11.EndOfMessage()
#: Most distinct response heads kept as built h11 events (see ``head_bytes``).
_EVENT_CACHE_SIZE = 1024
_events: dict[tuple[int, tuple[tuple[bytes, bytes], ...], int | None], h11.Response] = {}
#: Most distinct header sets cached (apps mostly answer with a few constant sets;
#: per-response values such as Content-Range make new ones: the cache then restarts).
_BLOCK_CACHE_SIZE = 256
_blocks: dict[tuple[tuple[str, str], ...], tuple[tuple[tuple[bytes, bytes], ...], bytes]] = {}


def _validated_block(headers: list[tuple[bytes, bytes]]) -> bytes:
    """``headers`` as header lines, after h11's own validation (LocalProtocolError)."""
    h11.Response(status_code=200, headers=headers)
    return b"".join(b"%s: %s\r\n" % (name, value) for name, value in headers)


def _header_block(
    headers: tuple[tuple[str, str], ...],
) -> tuple[tuple[tuple[bytes, bytes], ...], bytes]:
    """Split an app's response headers into framing ones (for h11) and the rest as
    validated header lines, cached per distinct tuple of headers.

    Raises:
        h11.LocalProtocolError: a malformed header (as h11 would when sending it).
    """
    if type(headers) is not tuple:  # a list from a careless app: make it a key
        headers = tuple((str(n), str(v)) for n, v in headers)
    cached = _blocks.get(headers)
    if cached is not None:
        return cached
    framing: list[tuple[bytes, bytes]] = []
    other: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        pair = (name.encode("latin-1"), value.encode("latin-1"))
        (framing if pair[0].lower() in _FRAMING else other).append(pair)
    result = (tuple(framing), _validated_block(other))
    if len(_blocks) >= _BLOCK_CACHE_SIZE:
        _blocks.clear()
    _blocks[headers] = result
    return result


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
        # answer: that is a gateway timeout (SPEC §4 504).
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


def _ambiguous_framing(headers: tuple[tuple[bytes, bytes], ...], http_version: bytes) -> str | None:
    """Why a request's body framing cannot be trusted, or None if it can.

    h11 already refuses the other malformed framings: Content-Length values that
    differ or are not plain digits (400), a transfer coding other than ``chunked`` or
    ``Transfer-Encoding`` twice (501). It accepts two cases that RFC 9112 says must
    end the connection, because the bytes after such a request may be read as a
    second, smuggled request by a server or proxy that framed the body differently:
    ``Transfer-Encoding`` together with ``Content-Length`` (§6.3: the server must close
    the connection after responding) and ``Transfer-Encoding`` in an HTTP/1.0 request
    (§6.1: the framing is faulty). Both are answered 400 and the connection closed
    (docs/security.md, "Request framing").
    """
    has_te = has_cl = False
    for name, _value in headers:
        if name == b"transfer-encoding":
            has_te = True
        elif name == b"content-length":
            has_cl = True
    if not has_te:
        return None
    if has_cl:
        return "Content-Length together with Transfer-Encoding"
    if http_version == b"1.0":
        return "Transfer-Encoding in an HTTP/1.0 request"
    return None


def _content_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


#: Reason phrases by status (an ``HTTPStatus`` lookup per response costs a few µs).
_REASONS: dict[int, bytes] = {}


def _reason(status: int) -> bytes:
    reason = _REASONS.get(status)
    if reason is None:
        try:
            reason = HTTPStatus(status).phrase.encode("ascii")
        except ValueError:
            reason = b""
        if len(_REASONS) < 1000:  # bounded whatever statuses apps invent
            _REASONS[status] = reason
    return reason


def _peer_error_text(status: int) -> str:
    if status == 431:
        return "Request header fields too large"
    return "Malformed HTTP request"


def _peer_address(stream: ByteStream) -> tuple[str, int] | None:
    address = stream.extra(SocketAttribute.remote_address, None)
    if isinstance(address, tuple) and len(address) >= 2:
        return (str(address[0]), int(address[1]))
    return None


def _sendfile_transport(stream: ByteStream) -> asyncio.Transport | None:
    """The transport ``loop.sendfile`` can use for ``stream``, else None (read+send)."""
    if not hasattr(os, "sendfile"):
        return None
    return asyncio_transport(stream)


async def serve_http_connection(
    stream: ByteStream, app: App, config: ServerConfig | None = None
) -> None:
    """Serve HTTP/1.1 requests on ``stream`` until the client or a limit ends it.

    Args:
        stream: a connected byte stream (TCP, TLS or in-memory); closed on return.
        app: ``async (Request) -> Response``; exceptions it raises become a 500.
        config: limits and options (``ServerConfig()`` if None).

    Never raises except on cancellation: transport errors end the connection.
    """
    cfg = config if config is not None else ServerConfig()
    connection = _Connection(stream, app, cfg)
    try:
        await connection.run()
    except TransportError as exc:
        _log.debug("connection from %s ended: %s", connection.client, exc)
    finally:
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            await stream.aclose()
