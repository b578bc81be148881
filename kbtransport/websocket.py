"""Websocket links over any byte stream: the server side after an h11 upgrade, and a dialer.

Strategy
--------
A ``WebSocketLink`` owns one ``anyio.abc.ByteStream`` and one post-handshake wsproto
``Connection`` (wsproto ``advanced-usage.rst``, "Post handshake connection"; STYLE rule
10). ``receive()`` returns whole binary messages (fragments are joined, bounded by
``max_message_bytes``); pings are answered inside ``receive()``; a close from the peer
is answered and then raised as ``WebSocketClosed``. ``send()`` may run in another task
than ``receive()``: writes are serialised by a lock so control replies never interleave
with a data frame.

Performance note (docs/benchmarks.md, ceilings §5): wsproto masks client frames in pure Python, so
a client sending to a server tops out near 190 MB/s; server-to-client is unmasked
(~500 MB/s). Large messages are fine (fewer per-frame costs); bulk bytes are better
carried on a plain HTTP connection than client->server over a websocket.
"""

from __future__ import annotations

import contextlib
import ssl
from collections import deque
from collections.abc import Sequence

import anyio
import h11
from anyio.abc import ByteStream
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError as WsLocalProtocolError
from wsproto.utilities import RemoteProtocolError as WsRemoteProtocolError

from kbtransport.errors import (
    CONNECT_ERRORS,
    READ_ERRORS,
    WRITE_ERRORS,
    ConnectError,
    PeerProtocolError,
    ReadError,
    TransportTimeout,
    WriteError,
    map_exceptions,
)
from kbtransport.net import Url, open_stream, parse_url

__all__ = (
    "WebSocketClosed",
    "WebSocketLink",
    "connect_websocket",
    "websocket_url",
)

#: How much to ask the stream for at once; anyio returns what is there, up to this.
_READ_SIZE = 256 * 1024
#: Default cap on one incoming message; kbproto frames are far smaller, file chunks too.
DEFAULT_MAX_MESSAGE = 16 * 1024 * 1024
#: How long aclose() waits for the close frame to be written before giving up.
_CLOSE_TIMEOUT = 5.0
#: Cap on the handshake response (status line + headers) from a server.
_MAX_HANDSHAKE_BYTES = 64 * 1024


class WebSocketClosed(ReadError):
    """The websocket was closed (by the peer, or locally); no more messages will come.

    Attributes:
        code: the close code (1000 normal, 1006 abnormal, 1009 too big...).
        reason: the close reason text.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"websocket closed ({code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


class WebSocketLink:
    """A connected websocket carrying binary messages.

    Build one with ``connect_websocket`` (client) or get one from the server's
    ``WebSocketAccept`` handler. Args (for direct construction, e.g. in tests):
        stream: the byte stream, after the HTTP handshake.
        connection: a post-handshake wsproto ``Connection``; feed it the handshake's
            trailing bytes before handing it over.
        max_message_bytes: the largest message ``receive()`` accepts.
    """

    def __init__(
        self,
        stream: ByteStream,
        connection: Connection,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE,
        subprotocol: str | None = None,
    ) -> None:
        self._stream = stream
        self._conn = connection
        self._max_message = max_message_bytes
        self._send_lock = anyio.Lock()
        self._events: deque[Event] = deque()
        self._parts: list[bytes] = []
        self._size = 0
        self._closed: WebSocketClosed | None = None
        self._stream_closed = False
        self.subprotocol = subprotocol
        # Handshake trailing data may already hold frames.
        self._events.extend(self._conn.events())

    @property
    def is_closed(self) -> bool:
        """True once a close was received, sent, or the stream failed."""
        return self._closed is not None

    async def _transmit(self, event: Event) -> None:
        async with self._send_lock:
            try:
                data = self._conn.send(event)
            except WsLocalProtocolError as exc:
                raise WriteError(f"websocket is closing: {exc}") from exc
            with map_exceptions(WRITE_ERRORS):
                await self._stream.send(data)

    async def send(self, data: bytes) -> None:
        """Send ``data`` as one binary message.

        Raises:
            WebSocketClosed: the link was already closed.
            WriteError: the connection failed while writing.
        """
        if self._closed is not None:
            raise self._closed
        await self._transmit(BytesMessage(data=data))

    async def ping(self, payload: bytes = b"") -> None:
        """Send a ping (at most 125 bytes of payload); the peer's pong is discarded."""
        if self._closed is not None:
            raise self._closed
        await self._transmit(Ping(payload=payload))

    async def _fail(self, code: int, reason: str) -> WebSocketClosed:
        """Close with ``code`` after a peer error, and return the error to raise."""
        closed = WebSocketClosed(code, reason)
        if self._closed is None:
            self._closed = closed
            if self._conn.state is ConnectionState.OPEN:
                with anyio.move_on_after(_CLOSE_TIMEOUT, shield=True):
                    # The peer may be gone already; then there is nothing to tell it.
                    with contextlib.suppress(WriteError):
                        await self._transmit(CloseConnection(code=code, reason=reason))
            await self._close_stream()
        return self._closed

    async def _close_stream(self) -> None:
        if not self._stream_closed:
            self._stream_closed = True
            with anyio.CancelScope(shield=True):
                await self._stream.aclose()

    async def receive(self) -> bytes:
        """Return the next whole message's payload (text messages as UTF-8 bytes).

        Raises:
            WebSocketClosed: the peer closed the link (after we answered its close), or
                it was closed locally; ``code`` says why.
            PeerProtocolError: a message exceeded ``max_message_bytes`` (closed with 1009)
                or the peer broke the websocket protocol (closed with its code).
            ReadError: the connection dropped without a close (code 1006 afterwards).
        """
        while True:
            while self._events:
                event = self._events.popleft()
                message = await self._handle(event)
                if message is not None:
                    return message
            if self._closed is not None:
                raise self._closed
            try:
                with map_exceptions(READ_ERRORS):
                    data = await self._stream.receive(_READ_SIZE)
            except ReadError as exc:
                if self._closed is None:  # keep a local close's code if there was one
                    self._closed = WebSocketClosed(1006, str(exc))
                await self._close_stream()
                raise self._closed from exc
            self._conn.receive_data(data)
            self._events.extend(self._conn.events())

    async def _handle(self, event: Event) -> bytes | None:
        if isinstance(event, BytesMessage | TextMessage):
            payload = event.data.encode("utf-8") if isinstance(event, TextMessage) else event.data
            self._size += len(payload)
            if self._size > self._max_message:
                self._parts.clear()
                closed = await self._fail(1009, "message too big")
                raise PeerProtocolError(
                    f"websocket message larger than {self._max_message} bytes"
                ) from closed
            self._parts.append(bytes(payload))
            if not event.message_finished:
                return None
            message = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
            self._parts.clear()
            self._size = 0
            return message
        if isinstance(event, Ping):
            if self._conn.state is ConnectionState.OPEN:
                # A failed pong write shows up on the read side next.
                with contextlib.suppress(WriteError):
                    await self._transmit(event.response())
            return None
        if isinstance(event, Pong):
            return None
        assert isinstance(event, CloseConnection)
        if self._conn.state is ConnectionState.REMOTE_CLOSING:
            # A normal close from the peer: answer it, then report it.
            self._closed = WebSocketClosed(event.code, event.reason or "")
            with anyio.move_on_after(_CLOSE_TIMEOUT, shield=True):
                with contextlib.suppress(WriteError):
                    await self._transmit(event.response())
            await self._close_stream()
            raise self._closed
        if self._conn.state is ConnectionState.CLOSED:
            # The peer answered our own close.
            await self._close_stream()
            assert self._closed is not None
            raise self._closed
        # wsproto reports a parse failure as a CloseConnection without a state change.
        closed = await self._fail(event.code, event.reason or "protocol error")
        raise PeerProtocolError(f"websocket protocol error: {event.reason}") from closed

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame (best effort, bounded) and close the stream. Idempotent."""
        if self._closed is None:
            self._closed = WebSocketClosed(code, reason or "closed locally")
            if self._conn.state is ConnectionState.OPEN:
                with anyio.move_on_after(_CLOSE_TIMEOUT, shield=True):
                    with contextlib.suppress(WriteError):
                        await self._transmit(CloseConnection(code=code, reason=reason))
        await self._close_stream()


def websocket_url(parent_url: str) -> str:
    """Turn a hub's ``http(s)://`` URL into its ``ws(s)://`` URL (same host, port, path)."""
    if parent_url.startswith("https://"):
        return "wss://" + parent_url[len("https://") :]
    if parent_url.startswith("http://"):
        return "ws://" + parent_url[len("http://") :]
    return parent_url


async def connect_websocket(
    url: str,
    *,
    headers: Sequence[tuple[str, str]] = (),
    subprotocols: Sequence[str] = (),
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 10.0,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE,
) -> WebSocketLink:
    """Dial a websocket server and complete the handshake.

    Args:
        url: ``ws://``, ``wss://``, ``http://`` or ``https://`` (the latter two are
            mapped to ``ws``/``wss``), host, port and path.
        headers: extra request headers (e.g. a passcode).
        subprotocols: offered ``Sec-WebSocket-Protocol`` values.
        ssl_context: TLS client context (system store / ``SSL_CERT_FILE`` if None).
        timeout: seconds for connect + TLS + handshake.
        max_message_bytes: the largest message the link accepts.

    Raises:
        ConnectError: could not connect, TLS failed, or the server refused the upgrade
            (the message holds its status).
        TransportTimeout: ``timeout`` passed.
    """
    parsed: Url = parse_url(websocket_url(url))
    stream = await open_stream(parsed, timeout=timeout, ssl_context=ssl_context)
    try:
        with anyio.fail_after(timeout):
            link = await _client_handshake(stream, parsed, headers, subprotocols, max_message_bytes)
    except TimeoutError as exc:
        await _aclose_quietly(stream)
        raise TransportTimeout(f"websocket handshake with {url} timed out") from exc
    except BaseException:
        await _aclose_quietly(stream)
        raise
    return link


async def _aclose_quietly(stream: ByteStream) -> None:
    with anyio.CancelScope(shield=True):
        with contextlib.suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            await stream.aclose()


async def _client_handshake(
    stream: ByteStream,
    url: Url,
    headers: Sequence[tuple[str, str]],
    subprotocols: Sequence[str],
    max_message_bytes: int,
) -> WebSocketLink:
    ws = WSConnection(ConnectionType.CLIENT)
    request = Request(
        host=url.host_header,
        target=url.target,
        extra_headers=[(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        subprotocols=list(subprotocols),
    )
    with map_exceptions(WRITE_ERRORS):
        await stream.send(ws.send(request))
    received = 0
    while True:
        for event in ws.events():
            if isinstance(event, AcceptConnection):
                assert ws.connection is not None
                return WebSocketLink(
                    stream,
                    ws.connection,
                    max_message_bytes=max_message_bytes,
                    subprotocol=event.subprotocol,
                )
            if isinstance(event, RejectConnection | RejectData):
                status = getattr(event, "status_code", None)
                raise ConnectError(
                    f"websocket upgrade to {url.host}:{url.port}{url.target} refused"
                    + (f" (HTTP {status})" if status else "")
                )
        with map_exceptions(CONNECT_ERRORS):
            data = await stream.receive(_READ_SIZE)
        received += len(data)
        if received > _MAX_HANDSHAKE_BYTES:
            raise ConnectError("websocket handshake response too large")
        try:
            ws.receive_data(data)
        except (WsRemoteProtocolError, h11.RemoteProtocolError) as exc:
            raise ConnectError(f"websocket handshake failed: {exc}") from exc
