"""The web interface every node serves at ``/`` and ``/web/...`` (docs/http.md, web pages).

Each page is drawn on the server (``kbapps.web.pages``): node details, a hub's
children, a share's folders with links, where content is, all as plain HTML, so
``curl``, text browsers, screen readers and a browser without JavaScript see the whole
page. The shipped script (``static/app.js``) then enhances it: a folder's complete
listing in one scrollable, filterable table, ``.prvdir`` downloads, opening a dropped
``.prv`` file, and trying the find page's URLs from the browser itself.

The data comes from the serving node's own API routes (docs/http.md) through its whole app
(``kbapps.nodeapp.NodeApp``), so any node of the network can be shown, through the
tree, like the script itself asks for it. Serving, on kbtransport's route table::

    network = NodeApp()                 # attached to the node's app once it runs
    add_web_routes(router, node_id=my_id, node_type="hub", network=network)

``static_file`` answers the shipped files (``/web/NAME``) by bare name from a fixed
table; nothing else under this package is ever served.

Every web response carries :data:`CONTENT_SECURITY_POLICY`; the pages hold no inline
script, no inline event handler and no inline style attribute, so the policy blocks any
script that a node-provided string could smuggle in (none can: ``kbapps.web._html``).
"""

from __future__ import annotations

from importlib import resources
from typing import NamedTuple

from kbapps.nodeapp import NodeApp
from kbapps.web.pages import Site, is_page_path, node_fetch, render_page
from kbtransport.http import Request, Response, error_response
from kbtransport.routing import Match, Router

__all__ = (
    "CONTENT_SECURITY_POLICY",
    "HTML_TYPE",
    "SHIPPED_FILES",
    "StaticFile",
    "add_web_routes",
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

#: The ``Content-Type`` of every page.
HTML_TYPE = "text/html; charset=utf-8"

#: Every file the package ships, with its ``Content-Type``. Only these are ever served
#: as they are (``static/index.html`` is the pages' template, never served raw).
SHIPPED_FILES: dict[str, str] = {
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


def web_response(path: str) -> StaticFile | None:
    """Map a ``/web/NAME`` request path to a shipped file, or ``None``.

    Args:
        path: the request target's path; a query string or fragment is ignored.

    Returns:
        The named file for a shipped ``/web/NAME``; ``None`` for anything else
        (pages are drawn by ``kbapps.web.pages``, other paths are the caller's 404).
    """
    path = path.split("?", 1)[0].split("#", 1)[0]
    if path.startswith("/web/"):
        return static_file(path.removeprefix("/web/"))
    return None


def response_headers(content_type: str) -> tuple[tuple[str, str], ...]:
    """Return the headers every web-interface response should carry.

    ``Content-Length`` is not among them (kbtransport's server adds it). ``no-cache``
    makes browsers revalidate, so a node upgrade never mixes an old ``app.js`` with a new
    page, and a page always shows the network as it is now; ``nosniff`` keeps JSON and
    text from being run as script; ``no-referrer`` keeps page URLs (node ids, paths) out
    of other sites' logs.
    """
    return (
        ("Content-Type", content_type),
        ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("Cache-Control", "no-cache"),
    )


def add_web_routes(
    router: Router, *, node_id: str, node_type: str, network: NodeApp, scheme: str = "http"
) -> None:
    """Register ``GET``/``HEAD`` ``/``, ``/web`` and ``/web/...`` on a kbtransport router.

    Args:
        router: the node's route table; add these after the docs/http.md API routes or
            before, they do not overlap (``web`` is never a 12-hex node id).
        node_id: the serving node's id (the page shown when the URL names none).
        node_type: ``"hub"`` or ``"leaf"``.
        network: the node's whole app, which the pages ask for their data (attached
            once the node runs; pages answer 503 until then).
        scheme: ``https`` when the node serves TLS (the pages' origin, for ranking
            download URLs by what the browser can reach).

    Raises:
        ValueError: if ``node_id``, ``node_type`` or ``scheme`` is malformed (checked
            now, not on the first request).
    """
    if len(node_id) != 12 or any(c not in "0123456789abcdef" for c in node_id):
        raise ValueError(f"node id must be 12 lowercase hex digits, not {node_id!r}")
    if node_type not in _NODE_TYPES:
        raise ValueError(f"node type must be 'hub' or 'leaf', not {node_type!r}")
    if scheme not in ("http", "https"):
        raise ValueError(f"scheme must be 'http' or 'https', not {scheme!r}")
    site = Site(node_id=node_id, node_type=node_type, scheme=scheme)
    fetch = node_fetch(network)

    async def serve(request: Request, match: Match) -> Response:
        if is_page_path(request.path):
            page = await render_page(
                request.query, host=request.header("host"), site=site, fetch=fetch
            )
            headers = response_headers(HTML_TYPE)
            if page.location is not None:
                headers = (*headers, ("Location", page.location))
            return Response(status=page.status, headers=headers, body=page.html)
        reply = web_response(request.path)
        if reply is None:
            return error_response(404, "No such page of the web interface")
        return Response(status=200, headers=response_headers(reply.content_type), body=reply.body)

    router.add(("GET", "HEAD"), "/", serve)
    # "/web/{rest*}" also matches "/web" itself (an empty rest).
    router.add(("GET", "HEAD"), "/web/{rest*}", serve)
