"""A response proxied from another node, as our HTTP server sends it on.

``proxied_response`` turns a ``ProxyResponse`` (a stream through the tree,
``kbtransport.proxy_stream``) into a streamed ``Response``: an allowlist of the
target's headers, this node's user-content headers, and a body that is checked
against a content id and written into a relay cache fill as it streams, where the
caller asks for either. ``forwarded_headers`` is the other direction (what of a
request is passed on), ``reset_response`` the answer to a stream reset before its
head.
"""

from __future__ import annotations

from kbtransport.cacheserve import Tee
from kbtransport.contentcheck import ContentCheck
from kbtransport.http import Request, Response, StreamBody, error_response
from kbtransport.proxy_stream import ProxyResponse, StreamResetError
from kbtransport.usercontent import user_content_headers

__all__ = (
    "FORWARDED_HEADERS",
    "PROXIED_RESPONSE_HEADERS",
    "forwarded_headers",
    "proxied_response",
    "reset_response",
)

#: Request headers passed on to the node that serves a proxied request: what download
#: semantics need (Range, conditionals, content negotiation). Anything else stays here.
FORWARDED_HEADERS = frozenset({"range", "if-range", "if-none-match", "if-modified-since", "accept"})
#: Statuses a reset may carry that are also fit for our HTTP answer.
_RESET_STATUSES = frozenset({404, 429, 502, 503, 504})
#: ``Retry-After`` of a 429 for a client whose share of proxied streams is used up: its
#: streams are downloads, which end in seconds or minutes.
_STREAMS_RETRY_AFTER = (("Retry-After", "5"),)
#: Response headers copied from a proxied response: what download semantics need, and
#: nothing else (an allowlist: a share must not set cookies, a service worker's scope,
#: its own Content-Security-Policy, a redirect or a refresh on this node's origin).
#: ``Content-Type`` is copied through ``user_content_headers``, which adds this node's
#: own security headers; framing headers are this node's own.
PROXIED_RESPONSE_HEADERS = frozenset({"content-range", "accept-ranges", "etag", "last-modified"})


def reset_response(exc: StreamResetError) -> Response:
    """The HTTP error for a request reset before its head."""
    status = exc.status if exc.status in _RESET_STATUSES else 502
    headers = _STREAMS_RETRY_AFTER if status == 429 else ()
    return error_response(status, exc.reason, headers)


def forwarded_headers(request: Request) -> tuple[tuple[str, str], ...]:
    """The headers of ``request`` passed on to the node that serves it (``FORWARDED_HEADERS``)."""
    return tuple(
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in request.headers
        if name.decode("latin-1") in FORWARDED_HEADERS
    )


def proxied_response(
    response: ProxyResponse,
    method: str,
    check: ContentCheck | None = None,
    tee: Tee | None = None,
) -> Response:
    """Turn a ``ProxyResponse`` into a streamed ``Response`` for our HTTP server.

    With ``check``, the body is checked against a content id as it streams and its end
    is withheld unless it matches (``kbtransport.contentcheck``). With ``tee``, the
    body sent is also written into a relay cache fill, committed at its (checked) end.

    Only ``PROXIED_RESPONSE_HEADERS`` and the ``Content-Type`` are taken from the
    target's head; the user-content headers (``kbtransport.usercontent``) are this
    node's. The body is streamed as it arrives; if the stream is reset mid-body the iterator
    raises ``StreamResetError`` (a ``ReadError``), so the server cuts the connection
    and the client sees an incomplete body. When the client goes away, the server
    closes the iterator, which resets the stream at every hop.
    """
    passed = tuple((n, v) for n, v in response.headers if n.lower() in PROXIED_RESPONSE_HEADERS)
    headers = (*passed, *user_content_headers(response.header("content-type")))
    status = response.status
    empty = method == "HEAD" or status in (204, 304) or status < 200
    length = None if status in (204, 304) else response.content_length
    return Response(
        status=status,
        headers=headers,
        body=StreamBody(chunks=_ProxyBody(response, empty, check, tee), length=length),
    )


class _ProxyBody:
    """A proxied body for the HTTP server: iterates the stream, and ``aclose`` (which
    the server calls however the response ended) resets the stream if it is not
    finished, even when iteration never started (a client gone before the first byte,
    or a HEAD answered from the head alone)."""

    def __init__(
        self, response: ProxyResponse, empty: bool, check: ContentCheck | None, tee: Tee | None
    ) -> None:
        self._response = response
        self._chunks = None if empty else response.iter_chunks()
        self._check = check
        self._tee = None if empty else tee

    def __aiter__(self) -> _ProxyBody:
        return self

    async def __anext__(self) -> bytes:
        if self._chunks is None:
            raise StopAsyncIteration
        tee = self._tee
        if tee is None:
            if self._check is not None:
                return await self._check.next_chunk(self._chunks)
            return await self._chunks.__anext__()
        try:
            if self._check is not None:
                chunk = await self._check.next_chunk(self._chunks)
            else:
                chunk = await self._chunks.__anext__()
        except StopAsyncIteration:
            self._tee = None
            await tee.end()
            raise
        except BaseException:
            self._tee = None
            tee.abort()
            raise
        await tee.feed(chunk)
        return chunk

    async def aclose(self) -> None:
        if self._tee is not None:
            self._tee.abort()
            self._tee = None
        if self._check is not None:
            self._check.close()
        if self._chunks is not None:
            await self._chunks.aclose()
        await self._response.aclose()
