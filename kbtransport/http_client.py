"""An HTTP/1.1 client over h11 and anyio: GET/HEAD (and small POSTs), streamed bodies.

Strategy
--------
Used by ``kb-prv-download`` (which streams a body to disk while hashing it) and by
nodes calling each other. Redirects are *not* followed: the caller sees the 3xx.

Speed (``docs/benchmarks.md``): an h11+anyio receiver gets ~0.28 GB/s on asyncio because
anyio's asyncio stream returns one transport chunk (~95 KB) per ``receive`` and
toggles epoll around each one. Two things here help: bodies with a ``Content-Length``
bypass h11's receive buffer once the head is parsed (we count the bytes ourselves;
h11 only copies), and connections use ``kbtransport._accel.RawSocketStream`` where the
event loop allows it, a byte stream over a non-blocking socket that reads up to 1 MiB
per ``recv`` and waits for readability only when the socket is empty
(``docs/benchmarks.md``).

Keep-alive: a response read to its end on a connection that may be reused goes back to
a small per-origin idle pool; a request on a pooled connection that fails before any
response byte is retried once on a fresh connection (the server may have closed it).
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import cast

import anyio
import h11
from anyio.abc import ByteStream
from anyio.streams.tls import TLSStream

from kbtransport._accel import open_tcp
from kbtransport.errors import (
    CONNECT_ERRORS,
    READ_ERRORS,
    WRITE_ERRORS,
    ConnectError,
    PeerProtocolError,
    ReadError,
    TransportError,
    TransportTimeout,
    map_exceptions,
)
from kbtransport.http import Headers
from kbtransport.net import Url, default_ssl_context, parse_url

__all__ = ("ClientConfig", "HttpClient", "HttpResponse")

_Origin = tuple[str, str, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientConfig:
    """Client limits and options (sizes in bytes, times in seconds).

    Attributes:
        connect_timeout: TCP connect plus TLS handshake.
        read_timeout: the longest wait for any single read (head or body).
        write_timeout: the longest wait for a single write.
        max_head_bytes: status line plus response headers.
        read_size: the largest read asked of the socket for bodies (1 MiB: fewer, larger
            reads are what lifts a Python receiver's throughput).
        ssl_context: TLS client context; the system store (``SSL_CERT_FILE``) if None.
        max_idle_per_origin: keep-alive connections kept per (scheme, host, port).
        raw_sockets: use ``kbtransport._accel.RawSocketStream`` where the event loop
            allows it (faster receive); ``anyio.connect_tcp`` otherwise.
        user_agent: the ``User-Agent`` header.
    """

    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    write_timeout: float = 30.0
    max_head_bytes: int = 64 * 1024
    read_size: int = 1024 * 1024
    ssl_context: ssl.SSLContext | None = None
    max_idle_per_origin: int = 4
    raw_sockets: bool = True
    user_agent: str = "kbucket"


class _NoResponse(Exception):
    """The exchange failed before any response arrived (carries the error to raise)."""

    def __init__(self, error: TransportError) -> None:
        super().__init__(str(error))
        self.error = error


class _Conn:
    """One client connection: the stream and the h11 state for the current exchange."""

    def __init__(self, stream: ByteStream, origin: _Origin, config: ClientConfig) -> None:
        self.stream = stream
        self.origin = origin
        self.config = config
        self.h11 = self._new_h11()
        self.reused = False

    def _new_h11(self) -> h11.Connection:
        return h11.Connection(h11.CLIENT, max_incomplete_event_size=self.config.max_head_bytes)

    def reset(self) -> None:
        # Bodies may bypass h11 (see module docstring); the byte stream is then at a
        # message boundary, so a fresh h11 connection object continues correctly.
        self.h11 = self._new_h11()

    async def send(self, data: bytes) -> None:
        with map_exceptions(WRITE_ERRORS), anyio.fail_after(self.config.write_timeout):
            await self.stream.send(data)

    async def receive(self, max_bytes: int) -> bytes:
        try:
            with map_exceptions(READ_ERRORS), anyio.fail_after(self.config.read_timeout):
                return await self.stream.receive(max_bytes)
        except TransportTimeout as exc:
            raise TransportTimeout(
                f"no data from {self.origin[1]}:{self.origin[2]} for {self.config.read_timeout:g} s"
            ) from exc

    async def next_event(self) -> h11.Event:
        eof = False
        try:
            with map_exceptions(READ_ERRORS):
                while True:
                    event = self.h11.next_event()
                    if event is h11.NEED_DATA:
                        try:
                            data = await self.receive(64 * 1024)
                        except ReadError as exc:
                            if not isinstance(exc.__cause__, anyio.EndOfStream):
                                raise
                            data, eof = b"", True
                        self.h11.receive_data(data)
                        continue
                    return cast(h11.Event, event)
        except PeerProtocolError as exc:
            if eof:
                # h11 reports a message cut short by EOF as a protocol error; for the
                # caller it is a connection that closed early.
                raise ReadError(f"connection closed early: {exc}") from exc
            raise

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            await self.stream.aclose()


@dataclass(eq=False)
class HttpResponse:
    """A response whose body has not been read yet.

    Attributes:
        url: the URL requested.
        status: the status code.
        reason: the reason phrase.
        headers: ``(lowercase name, value)`` byte pairs.
        http_version: ``"1.1"`` or ``"1.0"``.
    """

    url: str
    status: int
    reason: str
    headers: Headers
    http_version: str
    _client: HttpClient = field(repr=False)
    _conn: _Conn | None = field(repr=False)
    _method: str = field(repr=False)
    _done: bool = field(default=False, repr=False)

    def header(self, name: str) -> str | None:
        """Return the first value of header ``name`` (case-insensitive), or None."""
        key = name.lower().encode("ascii")
        for hname, value in self.headers:
            if hname == key:
                return value.decode("latin-1")
        return None

    @property
    def content_length(self) -> int | None:
        """The ``Content-Length`` as an int, or None when absent or chunked."""
        if self.header("transfer-encoding") is not None:
            return None
        value = self.header("content-length")
        return int(value) if value is not None and value.isdigit() else None

    def _keep_alive(self) -> bool:
        connection = (self.header("connection") or "").lower()
        if self.http_version != "1.1" or "close" in connection:
            return False
        # RFC 9112 §6.3: a message with both framings may be a smuggling or response
        # splitting attempt; Transfer-Encoding wins (h11 reads it chunked), and the
        # connection is not trusted with another exchange.
        return self.header("transfer-encoding") is None or self.header("content-length") is None

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        """Yield the body in pieces of at most ``ClientConfig.read_size`` bytes.

        Raises:
            ReadError: the connection closed before the body was complete.
            TransportTimeout: a read waited longer than ``read_timeout``.
            PeerProtocolError: the body's framing was broken.
        """
        conn = self._conn
        if self._done or conn is None:
            return
        length = self.content_length
        no_body = self._method == "HEAD" or self.status in (204, 304)
        try:
            if no_body:
                pass
            elif length is not None:
                async for chunk in self._iter_counted(conn, length):
                    yield chunk
            else:
                while True:
                    event = await conn.next_event()
                    if isinstance(event, h11.Data):
                        yield bytes(event.data)
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    else:
                        raise ReadError("connection closed before the response body ended")
        except BaseException:
            self._release(reuse=False)
            raise
        complete = no_body or length is not None or self._h11_reusable()
        self._release(reuse=self._keep_alive() and complete)

    def _h11_reusable(self) -> bool:
        conn = self._conn
        return (
            conn is not None and conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE
        )

    async def _iter_counted(self, conn: _Conn, length: int) -> AsyncIterator[bytes]:
        # First what h11 already holds (it arrived with the head), then straight from
        # the stream, never asking for more than the body's remaining bytes.
        remaining = length
        buffered, _ = conn.h11.trailing_data
        if buffered:
            piece = buffered[:remaining]
            remaining -= len(piece)
            yield piece
        read_size = conn.config.read_size
        while remaining:
            try:
                chunk = await conn.receive(min(read_size, remaining))
            except ReadError as exc:
                raise ReadError(
                    f"connection closed with {remaining} of {length} body bytes missing"
                ) from exc
            remaining -= len(chunk)
            yield chunk
        if len(buffered) > length:
            raise PeerProtocolError("server sent more bytes than its Content-Length")
        conn.reset()

    async def read(self, max_bytes: int = 16 * 1024 * 1024) -> bytes:
        """Return the whole body; raise ``PeerProtocolError`` if it exceeds ``max_bytes``."""
        parts: list[bytes] = []
        size = 0
        async for chunk in self.iter_bytes():
            size += len(chunk)
            if size > max_bytes:
                self._release(reuse=False)
                raise PeerProtocolError(f"response body larger than {max_bytes} bytes")
            parts.append(chunk)
        return b"".join(parts)

    def _release(self, *, reuse: bool) -> None:
        if self._done:
            return
        self._done = True
        conn, self._conn = self._conn, None
        if conn is not None:
            self._client._release(conn, reuse=reuse)

    async def aclose(self) -> None:
        """Drop the connection unless the body was read to its end (then it is pooled)."""
        if not self._done:
            conn = self._conn
            self._release(reuse=False)
            if conn is not None:
                await conn.aclose()
        await self._client._close_pending()


class HttpClient:
    """A small HTTP/1.1 client with a keep-alive pool; use it as an async context manager.

    Example::

        async with HttpClient() as client:
            async with client.stream("GET", url, headers=[("Range", "bytes=0-99")]) as r:
                async for chunk in r.iter_bytes():
                    ...
    """

    def __init__(self, config: ClientConfig | None = None) -> None:
        self.config = config if config is not None else ClientConfig()
        self._idle: dict[_Origin, list[_Conn]] = {}
        self._to_close: list[_Conn] = []
        self._ssl_context: ssl.SSLContext | None = self.config.ssl_context

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every pooled connection."""
        conns = [c for idle in self._idle.values() for c in idle] + self._to_close
        self._idle.clear()
        self._to_close.clear()
        for conn in conns:
            await conn.aclose()

    def _release(self, conn: _Conn, *, reuse: bool) -> None:
        idle = self._idle.setdefault(conn.origin, [])
        if reuse and len(idle) < self.config.max_idle_per_origin:
            conn.reused = True
            idle.append(conn)
        else:
            self._to_close.append(conn)

    async def _close_pending(self) -> None:
        pending, self._to_close = self._to_close, []
        for conn in pending:
            await conn.aclose()

    async def _connect(self, url: Url) -> _Conn:
        origin = (url.scheme, url.host, url.port)
        idle = self._idle.get(origin)
        if idle:
            conn = idle.pop()
            conn.reset()
            return conn
        timeout = self.config.connect_timeout
        stream: ByteStream
        try:
            with map_exceptions(CONNECT_ERRORS), anyio.fail_after(timeout):
                if url.secure:
                    if self._ssl_context is None:
                        self._ssl_context = default_ssl_context()
                    transport = await open_tcp(url.host, url.port, raw=self.config.raw_sockets)
                    try:
                        stream = await TLSStream.wrap(
                            transport,
                            hostname=url.host,
                            ssl_context=self._ssl_context,
                            standard_compatible=False,
                        )
                    except BaseException:
                        with anyio.CancelScope(shield=True):
                            await transport.aclose()
                        raise
                else:
                    stream = await open_tcp(url.host, url.port, raw=self.config.raw_sockets)
        except TransportTimeout as exc:
            raise TransportTimeout(
                f"connecting to {url.host}:{url.port} timed out after {timeout:g} s"
            ) from exc
        except ConnectError as exc:
            raise ConnectError(f"cannot connect to {url.host}:{url.port}: {exc}") from exc
        return _Conn(stream, origin, self.config)

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> AsyncIterator[HttpResponse]:
        """Send a request and yield the response with its body unread.

        Args:
            method: ``GET``, ``HEAD``, ``POST``...
            url: an ``http://`` or ``https://`` URL.
            headers: extra request headers (``Range``, ``If-Range``...).
            body: the request body (sent with ``Content-Length``; kbucket's requests
                carry small JSON commands at most).

        Raises:
            ConnectError, TransportTimeout, ReadError, WriteError, PeerProtocolError.
        """
        response = await self.open(method, url, headers=headers, body=body)
        try:
            yield response
        finally:
            await response.aclose()

    async def open(
        self,
        method: str,
        url: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> HttpResponse:
        """Like ``stream``, but returns the response; the caller must ``aclose()`` it.

        For relaying a body beyond the current scope, e.g. a proxy answering with
        ``StreamBody(chunks=upstream.iter_bytes(), length=upstream.content_length,
        on_close=upstream.aclose)``.
        """
        parsed = parse_url(url)
        if parsed.scheme not in ("http", "https"):
            raise ConnectError(f"not an http(s) URL: {url}")
        return await self._send_request(method.upper(), parsed, url, headers, body)

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        max_body_bytes: int = 16 * 1024 * 1024,
    ) -> tuple[HttpResponse, bytes]:
        """Send a request and read the whole (bounded) response body: ``(response, body)``.

        Arguments as for ``stream``; ``max_body_bytes`` bounds the response body
        (``PeerProtocolError`` beyond it).
        """
        async with self.stream(method, url, headers=headers, body=body) as response:
            data = await response.read(max_body_bytes)
        return response, data

    async def _send_request(
        self,
        method: str,
        url: Url,
        raw_url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
    ) -> HttpResponse:
        request_headers = [
            ("Host", url.host_header),
            ("User-Agent", self.config.user_agent),
            *headers,
        ]
        if body or method in ("POST", "PUT"):
            request_headers.append(("Content-Length", str(len(body))))
        for attempt in range(2):
            conn = await self._connect(url)
            reused = conn.reused
            try:
                return await self._exchange(conn, method, url, raw_url, request_headers, body)
            except _NoResponse as exc:
                await conn.aclose()
                if not (reused and attempt == 0):
                    raise exc.error from exc.error.__cause__
            except BaseException:
                await conn.aclose()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _exchange(
        self,
        conn: _Conn,
        method: str,
        url: Url,
        raw_url: str,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> HttpResponse:
        try:
            request = h11.Request(method=method, target=url.target, headers=headers)
            data = conn.h11.send(request) or b""
            if body:
                data += conn.h11.send(h11.Data(data=body)) or b""
            data += conn.h11.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError as exc:
            raise ConnectError(f"invalid request header: {exc}") from exc
        try:
            await conn.send(data)
            event = await conn.next_event()
            while isinstance(event, h11.InformationalResponse):
                event = await conn.next_event()
        except TransportError as exc:
            # Nothing of a response arrived: on a pooled connection this is most likely
            # a server that closed it while idle, and the request may be retried.
            raise _NoResponse(exc) from exc
        if not isinstance(event, h11.Response):
            raise _NoResponse(
                ReadError(f"connection to {url.host}:{url.port} closed before a response")
            )
        if event.http_version == b"1.0" and any(
            name == b"transfer-encoding" for name, _ in event.headers
        ):
            # RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty
            # framing (whatever its Content-Length says): its body cannot be delimited.
            raise PeerProtocolError(
                f"{url.host}:{url.port} sent an HTTP/1.0 response with Transfer-Encoding"
            )
        return HttpResponse(
            url=raw_url,
            status=event.status_code,
            reason=event.reason.decode("latin-1"),
            headers=tuple((bytes(k), bytes(v)) for k, v in event.headers),
            http_version=event.http_version.decode("ascii"),
            _client=self,
            _conn=conn,
            _method=method,
        )
