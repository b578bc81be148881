"""The one-line answer to a connection the listener refused (its client is at its
connection cap, ``kbtransport.slots``; ``docs/security.md``)."""

from __future__ import annotations

import json

import anyio
from anyio.abc import ByteStream

from kbtransport.http import CORS_HEADERS

__all__ = ("refuse_http_connection",)

#: What a connection refused by the per-client cap is told.
_REFUSAL = json.dumps(
    {
        "success": False,
        "error": "Too many connections from your address; close some, then try again",
    }
).encode("utf-8")
#: Request bytes read and dropped after a refusal, so closing does not reset the
#: connection (and lose the answer) while the client's request is still unread.
_REFUSAL_DRAIN = 64 * 1024
#: Bytes asked of the stream per receive while draining.
_READ_SIZE = 64 * 1024


async def refuse_http_connection(stream: ByteStream) -> None:
    """Answer a connection the listener refused and return.

    One JSON error (the shape of ``kbtransport.http.error_response``), status 429, with
    ``Retry-After`` and ``Connection: close``, written without reading the request (its
    head may never come); then the request bytes that arrive are read and dropped (at
    most ``_REFUSAL_DRAIN``) until the client closes, so the answer is not lost to a
    reset. The caller bounds the time and closes the stream.
    """
    head = (
        "HTTP/1.1 429 Too Many Requests\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(_REFUSAL)}\r\n"
        "Retry-After: 1\r\n"
        "Connection: close\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in CORS_HEADERS)
        + "\r\n"
    )
    await stream.send(head.encode("ascii") + _REFUSAL)
    await stream.send_eof()
    left = _REFUSAL_DRAIN
    while left > 0:
        try:
            left -= len(await stream.receive(_READ_SIZE))
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            return
