"""The web interface every node serves at ``/`` and ``/web/...`` (SPEC §7).

The interface is a handful of static files (HTML, CSS, plain JavaScript, an icon) shipped
inside this package. The page talks only to the node that served it (same origin) and only
through the SPEC §4 routes, plus one small route the node must add:

``GET /web/config.json`` -> ``{"node_id": "<12 hex>", "node_type": "hub" | "leaf"}``
    Which node served the page, so the page can show that node when the URL names none.
    Build the body with :func:`config_json`. ``?node=ID`` in the page URL shows any other
    node of the network; ``&path=DIR`` opens a directory of a share; ``?find=SHA1`` runs a
    search. All of that is handled in the browser; the node always serves the same
    ``index.html``.

Serving, with kbtransport's route table (what the hub and share apps should do)::

    add_web_routes(router, node_id=my_id, node_type="hub")   # or "leaf"

or by hand, for any other HTTP app::

    reply = web_response(request_path, node_id=my_id, node_type="hub")
    if reply is not None:
        headers = response_headers(reply.content_type)   # plus Content-Length
        ...  # 200 with reply.body (HEAD: headers only)

``web_response`` answers ``/``, ``/web``, ``/web/``, every shipped ``/web/NAME`` and
``/web/config.json``, and returns ``None`` for anything else (the caller's 404). It never
touches the filesystem outside this package: names are looked up in a fixed table.

Every web response should carry :data:`CONTENT_SECURITY_POLICY`; the page has no inline
script, no inline event handler and no inline style attribute, so the policy blocks any
script that a node-provided string could smuggle in.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import NamedTuple

from kbtransport.http import Request, Response, error_response
from kbtransport.routing import Match, Router

__all__ = (
    "CONFIG_ROUTE",
    "CONTENT_SECURITY_POLICY",
    "SHIPPED_FILES",
    "StaticFile",
    "add_web_routes",
    "config_json",
    "response_headers",
    "static_file",
    "web_response",
)

#: The exact header value nodes send with the web interface (``Content-Security-Policy``).
#: ``script-src 'self'`` forbids inline script and event-handler attributes;
#: ``object-src 'none'`` and ``base-uri 'none'`` close the plugin and ``<base>`` tricks;
#: ``frame-ancestors 'none'`` stops click-jacking by framing; ``worker-src 'none'``: the
#: page starts no worker, so a script that got into it cannot register a file served
#: by the node as a service worker over the node's pages (docs/security.md).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; worker-src 'none'"
)

#: The route a node serves with :func:`config_json` (the page asks it who served it).
CONFIG_ROUTE = "/web/config.json"

#: Every file the package ships, with its ``Content-Type``. Only these are ever served.
SHIPPED_FILES: dict[str, str] = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
    "folder.svg": "image/svg+xml",
    "file.svg": "image/svg+xml",
}

_NODE_TYPES = ("hub", "leaf")


class StaticFile(NamedTuple):
    """One response body of the web interface and its ``Content-Type``."""

    body: bytes
    content_type: str


def static_file(name: str) -> StaticFile | None:
    """Return a shipped file by its bare name (``"app.js"``), or ``None``.

    Args:
        name: a key of :data:`SHIPPED_FILES`. Anything else (paths, ``..``, other names)
            gives ``None``; the name is never joined to a filesystem path unchecked.

    Returns:
        The file's bytes and content type, or ``None`` when it is not a shipped file.
    """
    content_type = SHIPPED_FILES.get(name)
    if content_type is None:
        return None
    body = resources.files(__name__).joinpath("static", name).read_bytes()
    return StaticFile(body, content_type)


def config_json(node_id: str, node_type: str) -> bytes:
    """Return the body of ``GET /web/config.json`` for the serving node.

    Args:
        node_id: the node's 12-hex-digit id.
        node_type: ``"hub"`` or ``"leaf"`` (as in ``kbnode.json``).

    Raises:
        ValueError: if either value is malformed (our own bug: the node knows its id).
    """
    if len(node_id) != 12 or any(c not in "0123456789abcdef" for c in node_id):
        raise ValueError(f"node id must be 12 lowercase hex digits, not {node_id!r}")
    if node_type not in _NODE_TYPES:
        raise ValueError(f"node type must be 'hub' or 'leaf', not {node_type!r}")
    return json.dumps({"node_id": node_id, "node_type": node_type}).encode("ascii")


def web_response(path: str, *, node_id: str, node_type: str) -> StaticFile | None:
    """Map a request path to the web interface's response body, or ``None`` (404).

    Args:
        path: the request target's path; a query string or fragment is ignored
            (``/?node=ID`` serves the page like ``/``).
        node_id: the serving node's id, for ``/web/config.json``.
        node_type: the serving node's type, for ``/web/config.json``.

    Returns:
        ``index.html`` for ``/``, ``/web`` and ``/web/``; the named file for a shipped
        ``/web/NAME``; the config JSON for :data:`CONFIG_ROUTE`; else ``None``.
    """
    path = path.split("?", 1)[0].split("#", 1)[0]
    if path in ("/", "/web", "/web/"):
        return static_file("index.html")
    if path == CONFIG_ROUTE:
        return StaticFile(config_json(node_id, node_type), "application/json")
    if path.startswith("/web/"):
        return static_file(path.removeprefix("/web/"))
    return None


def response_headers(content_type: str) -> tuple[tuple[str, str], ...]:
    """Return the headers every web-interface response should carry.

    ``Content-Length`` is not among them (kbtransport's server adds it). ``no-cache``
    makes browsers revalidate, so a node upgrade never mixes an old ``app.js`` with a new
    ``index.html``; ``nosniff`` keeps JSON and text from being run as script;
    ``no-referrer`` keeps page URLs (node ids, paths) out of other sites' logs.
    """
    return (
        ("Content-Type", content_type),
        ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("Cache-Control", "no-cache"),
    )


def add_web_routes(router: Router, *, node_id: str, node_type: str) -> None:
    """Register ``GET``/``HEAD`` ``/``, ``/web`` and ``/web/...`` on a kbtransport router.

    Args:
        router: the node's route table; add these after the SPEC §4 API routes or
            before, they do not overlap (``web`` is never a 12-hex node id).
        node_id: the serving node's id (for ``/web/config.json``).
        node_type: ``"hub"`` or ``"leaf"``.

    Raises:
        ValueError: if ``node_id`` or ``node_type`` is malformed (checked now, not on
            the first request).
    """
    config_json(node_id, node_type)

    async def serve(request: Request, match: Match) -> Response:
        reply = web_response(request.path, node_id=node_id, node_type=node_type)
        if reply is None:
            return error_response(404, "No such page of the web interface")
        return Response(status=200, headers=response_headers(reply.content_type), body=reply.body)

    router.add(("GET", "HEAD"), "/", serve)
    # "/web/{rest*}" also matches "/web" itself (an empty rest).
    router.add(("GET", "HEAD"), "/web/{rest*}", serve)
