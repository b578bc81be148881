"""How a node serves bytes it did not write, so that they never run in its origin.

A share serves whatever files its owner put in its directory, and a hub passes on
whatever a share answers. Served as they are, an ``.html`` or ``.svg`` file would run
its script with the node's origin: it could read what the origin's pages store, call
the node's routes as its own page, or register a service worker that takes over the
node's web pages (docs/security.md, "User content"). So every response carrying user
bytes (a share's ``/ID/download/PATH`` and ``/ID/sha1/SHA1``, and everything a hub
proxies: downloads, ``/sha1/SHA1``, a share's JSON) goes out with ``user_content_headers``:

* ``Content-Security-Policy: sandbox; default-src 'none'; ...`` (``USER_CONTENT_POLICY``):
  a sandboxed document has an opaque origin and runs no script, submits no form, opens
  no window; ``default-src 'none'`` lets it load nothing (no beacon out, no other
  route of the node in); inline styles and the node's own media stay allowed so the
  browser's viewers still show a picture, a text or a video; no page may frame it.
* ``X-Content-Type-Options: nosniff``: the type is the one declared, never guessed from
  the bytes (a ``.txt`` holding HTML is shown as text, never loaded as script).
* ``Content-Disposition: attachment`` for every type outside ``INLINE_TYPES`` (passive
  media a browser shows by itself): HTML, SVG, XML, PDF and anything unknown are saved,
  not opened.
* a ``Content-Type`` that is a well-formed media type, else ``application/octet-stream``.

A worker runs with its script's origin whatever policy the script came with, so no
route of a node serves a worker's script (``is_worker_request``: the browser marks
those requests with ``Service-Worker: script`` or ``Sec-Fetch-Dest``); nothing kbucket
ships uses a worker.
"""

from __future__ import annotations

import functools
import re

from kbtransport.http import Request

__all__ = (
    "INLINE_TYPES",
    "USER_CONTENT_POLICY",
    "is_worker_request",
    "user_content_headers",
)

#: The Content-Security-Policy of every response carrying user bytes (see the module
#: docstring for each directive's reason).
USER_CONTENT_POLICY = (
    "sandbox; default-src 'none'; style-src 'unsafe-inline'; media-src 'self'; "
    "frame-ancestors 'none'"
)
#: Media types a browser shows by itself without running anything: served inline.
#: Every other type is served as an attachment. Audio and video (``audio/*``,
#: ``video/*``) are inline too.
INLINE_TYPES = frozenset(
    {
        "text/plain",
        "application/json",
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/avif",
        "image/bmp",
    }
)
_INLINE_PREFIXES = ("audio/", "video/")
#: ``type/subtype`` and ``; name=value`` parameters (RFC 9110 §8.3.1), nothing else.
_TOKEN = r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"
_MEDIA_TYPE_RE = re.compile(
    rf"({_TOKEN}/{_TOKEN})(?:[ \t]*;[ \t]*{_TOKEN}=(?:{_TOKEN}|\"[^\"\\\r\n]*\"))*[ \t]*"
)
_FALLBACK_TYPE = "application/octet-stream"
#: ``Sec-Fetch-Dest`` values of requests for a worker's script.
_WORKER_DESTINATIONS = frozenset({b"serviceworker", b"sharedworker", b"worker"})


@functools.lru_cache(maxsize=256)
def user_content_headers(content_type: str | None) -> tuple[tuple[str, str], ...]:
    """The headers a response carrying user bytes of ``content_type`` goes out with.

    Args:
        content_type: the declared ``Content-Type`` (a share's guess from the file
            name, or what a proxied share sent); None or malformed gives
            ``application/octet-stream``.

    Returns:
        ``Content-Type``, ``Content-Security-Policy``, ``X-Content-Type-Options`` and,
        unless the type is one of ``INLINE_TYPES``, ``Content-Disposition: attachment``.
    """
    match = _MEDIA_TYPE_RE.fullmatch(content_type) if content_type is not None else None
    declared = content_type if match is not None and content_type is not None else _FALLBACK_TYPE
    media = match.group(1).lower() if match is not None else _FALLBACK_TYPE
    headers = [
        ("Content-Type", declared.strip()),
        ("Content-Security-Policy", USER_CONTENT_POLICY),
        ("X-Content-Type-Options", "nosniff"),
    ]
    if media not in INLINE_TYPES and not media.startswith(_INLINE_PREFIXES):
        headers.append(("Content-Disposition", "attachment"))
    return tuple(headers)


def is_worker_request(request: Request) -> bool:
    """True if ``request`` fetches the script of a service, shared or dedicated worker."""
    for name, value in request.headers:
        if name == b"service-worker":
            return True
        if name == b"sec-fetch-dest" and value.strip().lower() in _WORKER_DESTINATIONS:
            return True
    return False
