"""Turning h11's request events into our frozen ``Request``, with the checks that go
with it: the head's size, ambiguous body framing, the target's encoding.

Pure functions over h11 events (no I/O): ``kbtransport.http_server`` reads the bytes
and answers the errors raised here (``RequestRefused``) before closing.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote

import h11

from kbtransport.http import Headers, Request

__all__ = (
    "RequestRefused",
    "ambiguous_framing",
    "build_request",
    "content_length",
    "read_head",
)

#: Request headers that mean a body may follow (or a 100 Continue is awaited).
_BODY_HEADERS = frozenset({b"content-length", b"transfer-encoding", b"expect"})


class RequestRefused(Exception):
    """A request answered with ``status`` and ``message``, then the connection closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def read_head(event: h11.Request) -> tuple[Headers, int, bool]:
    """One pass over a request head: its headers as ``(lowercase name, value)`` bytes
    pairs, its size in bytes, and whether it has no body.

    h11 bounds only heads that arrive in pieces; a head that came whole in one read is
    measured here, so the size limit holds however the bytes were chunked. A request
    without ``Content-Length``, ``Transfer-Encoding`` or ``Expect`` has no body (RFC
    9112 §6.3).
    """
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
    return tuple(pairs), size, plain


def ambiguous_framing(headers: Headers, http_version: bytes) -> str | None:
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


def content_length(headers: Headers) -> int | None:
    """The request's ``Content-Length`` (h11 checked it), or None."""
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def build_request(
    head: h11.Request, headers: Headers, body: bytes, client: tuple[str, int] | None
) -> Request:
    """The ``Request`` for ``head`` (its ``headers`` from ``read_head``) and ``body``.

    The path is split on ``/`` before it is percent-decoded, so an encoded ``/`` stays
    inside its segment (``kbtransport.http``).

    Raises:
        RequestRefused: 400, a target that is not ASCII, not an absolute path, or
            badly percent-encoded.
    """
    target = bytes(head.target)
    method = head.method.decode("ascii", "replace").upper()
    try:
        text = target.decode("ascii")
    except UnicodeDecodeError:
        raise RequestRefused(400, "Request target is not ASCII") from None
    path, _, query = text.partition("?")
    segments: tuple[str, ...] = ()
    pairs: list[tuple[str, str]] = []
    if not (path == "*" and method == "OPTIONS"):
        if not path.startswith("/"):
            raise RequestRefused(400, "Request target must be an absolute path")
        try:
            # Without a "%" there is nothing to decode (the usual request).
            if "%" in path:
                segments = tuple(unquote(s, errors="strict") for s in path[1:].split("/"))
            else:
                segments = tuple(path[1:].split("/"))
            if query:
                pairs = parse_qsl(
                    query, keep_blank_values=True, errors="strict", max_num_fields=256
                )
        except (UnicodeDecodeError, ValueError):
            raise RequestRefused(400, "Malformed percent-encoding in request target") from None
    return Request(
        method=method,
        target=target,
        path=path,
        segments=segments,
        query=tuple(pairs),
        headers=headers,
        body=body,
        http_version=head.http_version.decode("ascii"),
        client=client,
    )
