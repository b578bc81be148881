"""HTTP messages as the server hands them to an app, and what an app answers.

An app is ``async (Request) -> Response``. A ``Request`` is parsed once, bounded and
frozen. A ``Response`` carries one of six bodies: bytes (small, JSON...), a
``StreamBody`` (an async iterator of chunks, length known or chunked), a ``FileBody``
(an open file, an offset and a length; sent with ``sendfile`` when the connection is a
plain TCP socket), a ``WebSocketAccept`` (the app accepts a websocket upgrade and
gets a ``WebSocketLink``), or a ``RawUpgrade`` (the app accepts an ``Upgrade`` to its
own protocol and gets the bare byte stream).

Paths: the server splits the raw target's path on ``/`` *before* percent-decoding, so
``%2f`` inside a segment stays inside that segment (as a literal ``/``) and can never
create a new path component; callers that map segments to files (``kbapps.share``)
refuse segments holding ``/``, ``\\``, NUL or a leading dot.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from anyio.abc import ByteStream

    from kbtransport.websocket import WebSocketLink

__all__ = (
    "CORS_HEADERS",
    "ERROR_REASONS",
    "App",
    "FileBody",
    "Headers",
    "RawUpgrade",
    "Request",
    "Response",
    "StreamBody",
    "WebSocketAccept",
    "error_response",
    "json_response",
)

#: Header pairs as h11 gives them: lowercase names, raw bytes values.
Headers = tuple[tuple[bytes, bytes], ...]

#: docs/http.md: every response allows any origin and exposes the download headers.
CORS_HEADERS: tuple[tuple[str, str], ...] = (
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Expose-Headers", "Content-Range, Content-Length, Accept-Ranges, ETag"),
)

#: Short default texts for the error statuses the server and apps produce.
ERROR_REASONS: dict[int, str] = {
    400: "Bad request",
    404: "Not found",
    405: "Method not allowed",
    408: "Request timeout",
    413: "Request body too large",
    416: "Range not satisfiable",
    431: "Request header fields too large",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Server busy",
    504: "Gateway timeout",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """One parsed HTTP request.

    Attributes:
        method: upper-case method, e.g. ``"GET"``.
        target: the raw request target, exactly as received.
        path: the target's path part, still percent-encoded (ASCII).
        segments: ``path`` split on ``/`` (leading slash dropped), then each segment
            percent-decoded as UTF-8. ``/a/b%2Fc/`` gives ``("a", "b/c", "")``.
        query: decoded ``(name, value)`` pairs of the query string, in order.
        headers: ``(lowercase name, value)`` byte pairs, in order.
        body: the whole request body (bounded by the server's ``max_body_bytes``).
        http_version: ``"1.1"`` or ``"1.0"``.
        client: ``(host, port)`` of the peer when known.
    """

    method: str
    target: bytes
    path: str
    segments: tuple[str, ...]
    query: tuple[tuple[str, str], ...] = ()
    headers: Headers = ()
    body: bytes = b""
    http_version: str = "1.1"
    client: tuple[str, int] | None = None

    def header(self, name: str) -> str | None:
        """Return the first value of header ``name`` (case-insensitive), decoded as latin-1."""
        key = name.lower().encode("ascii")
        for hname, value in self.headers:
            if hname == key:
                return value.decode("latin-1")
        return None

    def query_value(self, name: str) -> str | None:
        """Return the first value of query parameter ``name``, or None."""
        for qname, value in self.query:
            if qname == name:
                return value
        return None

    @property
    def wants_websocket(self) -> bool:
        """True when this is a websocket upgrade request (RFC 6455 §4.2.1)."""
        upgrade = (self.header("upgrade") or "").lower()
        return self.method == "GET" and upgrade == "websocket"


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamBody:
    """A body produced piece by piece.

    Attributes:
        chunks: async iterable of non-empty ``bytes``; the server pulls one chunk at a
            time, so memory stays bounded by the producer.
        length: the exact total length (sent as ``Content-Length``), or None for
            chunked transfer coding.
        on_close: awaited exactly once when the server is done with the body: sent,
            not sent (HEAD, 304) or cut short. Use it to release what feeds the
            chunks (an upstream response): an async generator that was never started
            does not run its ``finally`` when closed.
    """

    chunks: AsyncIterable[bytes]
    length: int | None = None
    on_close: Callable[[], Awaitable[None]] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FileBody:
    """``length`` bytes of an open binary file, from ``offset``.

    The server owns ``file`` from the moment the response is returned and closes it
    when done (also for HEAD and on errors). The file must be a regular file opened
    for reading in binary mode.
    """

    file: BinaryIO
    offset: int
    length: int

    def __post_init__(self) -> None:
        if self.offset < 0 or self.length < 0:
            raise ValueError("FileBody offset and length must be non-negative")


@dataclass(frozen=True, slots=True, kw_only=True)
class WebSocketAccept:
    """Accept a websocket upgrade; the server answers 101 and runs ``handler``.

    Attributes:
        handler: called with the connected ``WebSocketLink``; the connection ends when
            it returns (the link is closed for it if it has not done so).
        subprotocol: the ``Sec-WebSocket-Protocol`` to select, if any.
        max_message_bytes: the largest message the link accepts from the peer.
    """

    handler: Callable[[WebSocketLink], Awaitable[None]]
    subprotocol: str | None = None
    max_message_bytes: int = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class RawUpgrade:
    """Accept ``Upgrade: <protocol>``; the server answers 101 and runs ``handler``.

    Attributes:
        protocol: the token the request's ``Upgrade`` header must name (else 400).
        handler: called with the connection's byte stream and the bytes the client
            sent after its request head; the connection is closed when it returns.
    """

    protocol: str
    handler: Callable[[ByteStream, bytes], Awaitable[None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Response:
    """What an app returns.

    Attributes:
        status: the HTTP status code.
        headers: extra ``(name, value)`` pairs. The server adds ``Content-Length`` for
            bytes and file bodies (and for streams of known length), the CORS headers,
            ``Date`` and ``Server``; do not set those.
        body: bytes, a ``StreamBody``, a ``FileBody``, a ``WebSocketAccept`` or a
            ``RawUpgrade``.
    """

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | StreamBody | FileBody | WebSocketAccept | RawUpgrade = field(default=b"")

    def header(self, name: str) -> str | None:
        """Return the first value of header ``name`` (case-insensitive), or None."""
        lname = name.lower()
        for hname, value in self.headers:
            if hname.lower() == lname:
                return value
        return None


#: The server's view of an application.
App = Callable[[Request], Awaitable[Response]]


def json_response(
    status: int, payload: object, headers: tuple[tuple[str, str], ...] = ()
) -> Response:
    """Return a JSON response (``application/json``, compact UTF-8)."""
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return Response(
        status=status,
        headers=(("Content-Type", "application/json; charset=utf-8"), *headers),
        body=body,
    )


def error_response(
    status: int, message: str | None = None, headers: tuple[tuple[str, str], ...] = ()
) -> Response:
    """Return docs/http.md's error shape ``{"success": false, "error": message}``.

    Args:
        status: 400, 404, 413, 416, 431, 502, 504...
        message: the text; defaults to a short reason for ``status``.
        headers: extra headers (e.g. ``Content-Range: bytes */N`` with a 416).
    """
    text = message if message is not None else ERROR_REASONS.get(status, "Error")
    return json_response(status, {"success": False, "error": text}, headers)
