"""Serving a page: what its URL asks for, the answers it needs, the finished HTML.

A page URL is ``/`` (or ``/web/``) with a query, as the page's links write it:

* ``?node=ID`` a node (the serving node when absent); ``&path=DIR`` a share's folder,
  ``&start=N`` its rows from N on (``views.PAGE_ROWS`` per page);
* ``?find=SHA1`` where content is, ``&name=NAME`` the name the user knows it by;
* ``?q=TEXT`` the search box sent without the script: a SHA-1 or a node id is
  redirected (303) to its page, anything else is an error page.

The data comes from the serving node's own HTTP API (``Fetch``): ``/ID/api/nodeinfo``,
``/ID/api/readdir/PATH`` and ``/find/SHA1``, which reach any node of the network through
the tree, exactly as the browser's script would have asked them. The page's HTTP status
is the answer's: 404 for an unknown node or folder, 502/504 when a node on the way
failed or timed out, 400 for a malformed URL.

Budgets: one page waits at most ``PAGE_TIMEOUT`` seconds in all, and reads at most
``MAX_ANSWER_BYTES`` of any one answer (a larger folder listing is shown by the
script alone, which reads it itself).
"""

from __future__ import annotations

import html
import json
import re
import string
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import quote

import anyio

from kbapps.nodeapp import NodeApp
from kbapps.web import views
from kbapps.web._html import Child, serialize
from kbapps.web.reach import Origin, origin_of
from kbtransport.errors import TransportError
from kbtransport.http import FileBody, StreamBody
from kbtransport.served_streams import discard_response

__all__ = (
    "MAX_ANSWER_BYTES",
    "NAME_LOOKUPS",
    "PAGE_TIMEOUT",
    "Answer",
    "Fetch",
    "Page",
    "Site",
    "is_page_path",
    "node_fetch",
    "render_page",
)

#: Seconds one page may wait for all the answers it needs. Above the hubs' own request
#: timeout (30 s, ``kbproto.config.Timeouts``), so their 504 is what a slow node shows.
PAGE_TIMEOUT = 60.0
#: Bytes read of one answer: a listing of ~50,000 files. A larger folder is listed by
#: the page's script, which reads the listing itself.
MAX_ANSWER_BYTES = 16 * 1024 * 1024
#: Shares whose names a find page looks up (the others show their id), and how long
#: those lookups may take together.
NAME_LOOKUPS = 16
_NAME_TIMEOUT = 5.0
#: Largest ``start`` accepted in a page URL (no folder has more entries).
_MAX_START = 10**9

#: Failure statuses a page passes on as they are (see ``Answer.failed_status``).
_PASSED_STATUSES = frozenset({400, 404, 503, 504})
_TEMPLATE_NAME = "index.html"
_PAGE_PATH = re.compile(r"/|/web/?|/web/index\.html")


@dataclass(frozen=True, slots=True, kw_only=True)
class Site:
    """The node serving the pages.

    Attributes:
        node_id: its id (the page shown when the URL names no node).
        node_type: ``"hub"`` or ``"leaf"``.
        scheme: how browsers reach it, ``http`` or ``https`` (with the ``Host`` header,
            the page's origin, for ``kbapps.web.reach``).
    """

    node_id: str
    node_type: str
    scheme: str = "http"


@dataclass(frozen=True, slots=True)
class Answer:
    """A node's answer to one API request.

    Attributes:
        status: the HTTP status.
        value: the JSON object of the body; None if it was not one, or too large.
        too_large: the body was over the fetch's size budget (not read).
    """

    status: int
    value: Mapping[str, Any] | None
    too_large: bool = False

    @property
    def ok(self) -> bool:
        """A 2xx JSON object that does not say ``"success": false``."""
        return (
            200 <= self.status < 300
            and self.value is not None
            and self.value.get("success") is not False
        )

    def problem(self) -> str:
        """What went wrong, in the node's words when it gave some, and the status."""
        detail = self.value.get("error") if self.value is not None else None
        if self.too_large:
            detail = f"the answer is larger than {MAX_ANSWER_BYTES // (1024 * 1024)} MiB"
        if not isinstance(detail, str) or not detail:
            detail = "the answer was not the expected JSON" if self.status < 300 else "failed"
        return f"{detail} (HTTP {self.status})"

    @property
    def failed_status(self) -> int:
        """The status a page showing this failure answers with: the node's own 400,
        404, 503 or 504; 502 for anything else (the node on the way failed)."""
        return self.status if self.status in _PASSED_STATUSES else 502


#: ``async (target) -> Answer``: GET an API route of the serving node.
Fetch = Callable[[str], Awaitable[Answer]]


@dataclass(frozen=True, slots=True)
class Page:
    """A rendered page: status and HTML, or a redirect to ``location``."""

    status: int
    html: bytes
    location: str | None = None


def node_fetch(network: NodeApp, *, max_bytes: int = MAX_ANSWER_BYTES) -> Fetch:
    """A ``Fetch`` asking the node's own app (``kbapps.nodeapp``), bounded in size."""

    async def fetch(target: str) -> Answer:
        try:
            response = await network.request("GET", target, (("Accept", "application/json"),))
            try:
                body = await _read(response.body, max_bytes)
            finally:
                await discard_response(response)
        except TransportError as exc:
            # The answer was cut short (a node on the way went away mid-body), or the
            # node is stopping: the page says so, like any failed answer.
            return Answer(502, {"success": False, "error": f"the answer was cut short: {exc}"})
        if body is _TOO_LARGE:
            return Answer(response.status, None, too_large=True)
        return Answer(response.status, _json_object(body))

    return fetch


#: What ``_read`` returns for a body over the budget.
_TOO_LARGE = b"<too large>"


async def _read(body: object, max_bytes: int) -> bytes | None:
    """The whole body if it fits in ``max_bytes`` (else ``_TOO_LARGE``); None for a
    body that is not bytes or a stream (a file is never an API answer)."""
    if isinstance(body, bytes):
        return body if len(body) <= max_bytes else _TOO_LARGE
    if isinstance(body, FileBody) or not isinstance(body, StreamBody):
        return None
    parts: list[bytes] = []
    size = 0
    async for chunk in body.chunks:
        size += len(chunk)
        if size > max_bytes:
            return _TOO_LARGE  # the caller's discard resets the stream
        parts.append(chunk)
    return b"".join(parts)


def _json_object(body: bytes | None) -> Mapping[str, Any] | None:
    if body is None:
        return None
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


# --- the page URL ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Query:
    node: str
    path: str
    find: str
    name: str
    start: int
    q: str | None


def _query(pairs: Sequence[tuple[str, str]]) -> _Query:
    first: dict[str, str] = {}
    for key, value in pairs:
        first.setdefault(key, value)
    path = "/".join(s for s in first.get("path", "").split("/") if s not in ("", ".", ".."))
    start = first.get("start", "").strip()
    return _Query(
        node=first.get("node", "").strip().lower(),
        path=path,
        find=first.get("find", "").strip().lower(),
        name=first.get("name", ""),
        start=min(int(start), _MAX_START) if start.isascii() and start.isdigit() else 0,
        q=first.get("q"),
    )


def _page_origin(site: Site, host: str | None) -> Origin | None:
    if not host:
        return None
    return origin_of(f"{site.scheme}://{host}/")


# --- rendering ------------------------------------------------------------------------------


@cache
def _template() -> string.Template:
    text = resources.files("kbapps.web").joinpath("static", _TEMPLATE_NAME).read_text("utf-8")
    return string.Template(text)


def _document(site: Site, title: str, view: Sequence[Child], search: str = "") -> bytes:
    text = _template().substitute(
        title=html.escape(f"{title} · KBucket"),
        search=html.escape(search),
        view=serialize(view),
        footer=serialize(views.footer(site.node_id, site.node_type)),
    )
    # A lone surrogate in a node's text (JSON allows "\ud800") cannot be UTF-8.
    return text.encode("utf-8", "replace")


def _error_page(site: Site, status: int, title: str, message: str, search: str = "") -> Page:
    body = _document(site, "Error", [views.error_box(title, message)], search)
    return Page(status, body)


async def render_page(
    query: Sequence[tuple[str, str]], *, host: str | None, site: Site, fetch: Fetch
) -> Page:
    """The page a page URL asks for (see the module docstring).

    Args:
        query: the URL's decoded query pairs.
        host: the request's ``Host`` header (the page's origin, with ``site.scheme``).
        site: the serving node.
        fetch: how to ask the node's API.

    Returns:
        The page, with its HTTP status; never raises for anything a node or the URL
        holds.
    """
    request = _query(query)
    try:
        with anyio.fail_after(PAGE_TIMEOUT):
            if request.q is not None and not request.find and not request.node:
                return _search(site, request.q)
            if request.find:
                return await _find_page(site, request, _page_origin(site, host), fetch)
            return await _node_page(site, request, fetch)
    except TimeoutError:
        return _error_page(
            site, 504, "Could not load this page:", f"no answer within {PAGE_TIMEOUT:.0f} s"
        )


def _search(site: Site, text: str) -> Page:
    value = text.strip().lower()
    if views.is_sha1(value):
        return Page(303, b"", views.page_href(find=value))
    if views.is_node_id(value):
        return Page(303, b"", views.page_href(node=value))
    # 200: the search box's text is the user's, not a malformed URL of ours.
    return _error_page(
        site,
        200,
        "Nothing to find:",
        "enter a SHA-1 (40 hex digits) or a node id (12 hex digits), or drop a .prv file",
        text,
    )


async def _node_page(site: Site, request: _Query, fetch: Fetch) -> Page:
    node_id = request.node or site.node_id
    if not views.is_node_id(node_id):
        return _error_page(
            site, 400, "Could not load this page:", f'"{node_id}" is not a node id (12 hex digits)'
        )
    info = await fetch(f"/{node_id}/api/nodeinfo")
    if not info.ok or info.value is None:
        return _error_page(site, info.failed_status, "Could not load this page:", info.problem())
    is_hub, elements = views.node_view(info.value, node_id)
    name = views.node_title(info.value, node_id)
    if is_hub:
        return Page(200, _document(site, name, elements))
    listing = await fetch(
        f"/{node_id}/api/readdir/{quote(request.path, safe='/', errors='replace')}"
    )
    if not listing.ok or listing.value is None:
        card = views.browser_error(node_id, request.path, name, listing.problem())
        if listing.too_large:
            card.set("data-load", "script")  # the script reads the listing itself
        elements.append(card)
        status = 200 if listing.too_large else listing.failed_status
        return Page(status, _document(site, name, elements))
    entries = views.read_entries(listing.value)
    elements.append(views.browser_view(node_id, request.path, name, entries, request.start))
    return Page(200, _document(site, name, elements))


async def _find_page(site: Site, request: _Query, page: Origin | None, fetch: Fetch) -> Page:
    sha1 = request.find
    if not views.is_sha1(sha1):
        return _error_page(
            site, 400, "Could not load this page:", f'"{sha1}" is not a SHA-1 (40 hex digits)', sha1
        )
    answer = await fetch(f"/find/{sha1}")
    if not answer.ok or answer.value is None:
        return _error_page(
            site, answer.failed_status, "Could not load this page:", answer.problem(), sha1
        )
    names = await _share_names(answer.value, fetch)
    elements = views.find_view(sha1, request.name, answer.value, page, names)
    return Page(200, _document(site, f"Find {sha1[:12]}…", elements, sha1))


async def _share_names(answer: Mapping[str, Any], fetch: Fetch) -> dict[str, str]:
    """Names of the first ``NAME_LOOKUPS`` shares holding copies (cosmetic: a share
    that does not answer in time keeps its id)."""
    wanted = list(dict.fromkeys(share_id for share_id, _, _ in views.find_results(answer)))
    names: dict[str, str] = {}

    async def look_up(share_id: str) -> None:
        info = await fetch(f"/{share_id}/api/nodeinfo")
        if info.ok and info.value is not None:
            name = views.node_title(info.value, "")
            if name:
                names[share_id] = name

    with anyio.move_on_after(_NAME_TIMEOUT):
        async with anyio.create_task_group() as tg:
            for share_id in wanted[:NAME_LOOKUPS]:
                tg.start_soon(look_up, share_id)
    return names


def is_page_path(path: str) -> bool:
    """True for the paths that serve a page: ``/``, ``/web``, ``/web/``, ``/web/index.html``."""
    return _PAGE_PATH.fullmatch(path) is not None
