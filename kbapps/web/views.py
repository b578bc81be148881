"""The pages' content, drawn on the server from the nodes' JSON answers.

Pure functions: parsed JSON in (``/ID/api/nodeinfo``, ``/ID/api/readdir/PATH``,
``/find/SHA1``, exactly as a node answered them), element trees out (``kbapps.web.
_html``). Every value is treated as hostile: a field of the wrong type is as if
absent, names that could not be a path segment are skipped, and only ``http``/``https``
URLs become links. Nothing here does I/O; ``kbapps.web.pages`` fetches and serves.

The markup is the contract with ``app.js``, which enhances it (``data-*`` attributes
say what it needs: the share and folder of a listing, the ``.prvdir`` buttons, the
URLs to try from the browser) and draws a long listing's rows itself with the same
classes.

Why one module of some 730 lines: the views share the small element helpers and the
hostile-value readers above, and the markup of every page is one contract with
``app.js`` and ``style.css``, best read in one place.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from kbapps.uris import sha1_uri
from kbapps.web._format import duration, exact_bytes, human_size, natural_key, plural
from kbapps.web._html import Child, h
from kbapps.web.reach import Origin, origin_of, rank_sources

__all__ = (
    "PAGE_ROWS",
    "Entry",
    "browser_error",
    "browser_view",
    "error_box",
    "find_results",
    "find_view",
    "footer",
    "is_node_id",
    "is_sha1",
    "node_title",
    "node_view",
    "page_href",
    "read_entries",
)

#: Rows of a folder listing drawn per page on the server; the rest are one "Next" link
#: away (and the page's script shows them all, in a virtualized table).
PAGE_ROWS = 250
#: Longest name the pages show as an entry (a share's own names are at most 255 bytes).
_MAX_NAME_CHARS = 4096

#: Sizes and counts above this are not believed (and could not be formatted as floats).
_MAX_COUNT = 2**63 - 1

_NODE_ID = re.compile(r"[0-9a-f]{12}")
_SHA1 = re.compile(r"[0-9a-f]{40}")


# --- reading untrusted JSON ---------------------------------------------------------------


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _obj(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _count(value: object) -> int | None:
    """A size or count: an integer from 0 to 2**63 - 1 (a file offset's range)."""
    if type(value) is int and 0 <= value <= _MAX_COUNT:
        return value
    return None


def is_node_id(value: str) -> bool:
    """12 lowercase hex digits."""
    return _NODE_ID.fullmatch(value) is not None


def is_sha1(value: str) -> bool:
    """40 lowercase hex digits."""
    return _SHA1.fullmatch(value) is not None


def _encodable(value: str) -> bool:
    """True unless ``value`` holds a lone surrogate (JSON allows ``"\ud800"``), which no
    URL can carry."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _safe_name(value: object) -> str | None:
    """A readdir name usable as one path segment (as ``app.js``'s ``isSafeName``)."""
    if not isinstance(value, str) or not value or value.startswith("."):
        return None
    if "/" in value or len(value) > _MAX_NAME_CHARS or not _encodable(value):
        return None
    return value


# --- links ----------------------------------------------------------------------------------


def page_href(**params: str) -> str:
    """A page URL: ``/?node=ID&path=a/b`` (``/`` left readable, as ``app.js`` writes)."""
    parts = [
        f"{key}={quote(value, safe='/', errors='replace')}"
        for key, value in params.items()
        if value
    ]
    return "/?" + "&".join(parts) if parts else "/"


def _route(node_id: str, kind: str, path: str) -> str:
    """``/ID/download/PATH`` or ``/ID/prv/PATH``, each segment percent-encoded."""
    return f"/{node_id}/{kind}/" + "/".join(quote(s, safe="") for s in path.split("/"))


def _node_link(node_id: str, text: str, cls: str | None = None, path: str = "") -> ET.Element:
    return h("a", {"href": page_href(node=node_id, path=path), "class": cls}, text)


def _external(url: str) -> ET.Element:
    """A link for an ``http(s)`` URL a node sent, plain text for anything else."""
    if origin_of(url) is None:
        return h("span", {"class": "mono"}, url)
    return h("a", {"href": url, "class": "mono", "rel": "noopener noreferrer"}, url)


def _muted(text: str) -> ET.Element:
    return h("span", {"class": "muted"}, text)


def _code(text: str) -> ET.Element:
    return h("code", {"class": "id"}, text)


# --- chrome ---------------------------------------------------------------------------------


def error_box(title: str, message: str) -> ET.Element:
    """An error notice (``role=alert``): ``title`` in bold, then ``message``."""
    return h(
        "div",
        {"class": "notice error", "role": "alert"},
        h("strong", {}, title),
        " ",
        h("span", {}, message),
    )


def footer(node_id: str, node_type: str) -> list[Child]:
    """The footer's content: which node served the page."""
    kind = "hub " if node_type == "hub" else "share "
    return [
        "Served by ",
        kind,
        _node_link(node_id, node_id, "mono"),
        " · requests for other nodes are routed through the KBucket network.",
    ]


def node_title(nodeinfo: Mapping[str, Any], node_id: str) -> str:
    """The name a node page is titled with (the node id when it gives none)."""
    return _str(_obj(nodeinfo.get("info")).get("name")) or node_id


# --- node pages -----------------------------------------------------------------------------


def _info_table(rows: Sequence[tuple[str, Child]]) -> ET.Element:
    dl = h("dl", {"class": "info"})
    for label, value in rows:
        if value is None or value == "":
            continue
        dl.append(h("dt", {}, label))
        dl.append(h("dd", {}, value))
    return dl


def _metrics_rows(metrics: Mapping[str, Any], is_hub: bool) -> list[tuple[str, Child]]:
    """Uptime, requests and bytes of nodeinfo's ``metrics`` (fields it lacks are left
    out, and a hub's own files, which it has none of)."""
    rows: list[tuple[str, Child]] = []
    uptime = _count(metrics.get("uptime_seconds"))
    if uptime is not None:
        rows.append(("Uptime", duration(uptime)))
    requests = [
        f"{plural(n, word)}{suffix}"
        for key, word, suffix in (
            ("http_requests", "request", " over HTTP"),
            ("network_requests", "request", " through the network"),
            ("finds", "find", ""),
        )
        if (n := _count(metrics.get(key))) is not None
    ]
    if requests:
        rows.append(("Requests", ", ".join(requests)))
    sent = [
        f"{human_size(n)} {what}"
        for key, what in (
            ("bytes_served_direct", "of its files directly"),
            ("bytes_served_to_network", "of its files through the network"),
            ("bytes_proxied", "proxied for other nodes"),
        )
        if (n := _count(metrics.get(key))) is not None and not (is_hub and key != "bytes_proxied")
    ]
    if sent:
        rows.append(("Sent", ", ".join(sent)))
    return rows


def _cache_rows(cache: Mapping[str, Any]) -> list[tuple[str, Child]]:
    """A hub's relay cache from nodeinfo's ``cache`` (docs/http.md): what it holds and
    what it answered (nothing when the hub reports no cache)."""
    entries, size, bound = (_count(cache.get(k)) for k in ("entries", "bytes", "bound"))
    if entries is None or size is None or bound is None:
        return []
    hits, misses, served = (_count(cache.get(k)) for k in ("hits", "misses", "bytes_served"))
    rows: list[tuple[str, Child]] = [
        (
            "Relay cache",
            f"{plural(entries, 'file')}, {human_size(size)} of {human_size(bound)}",
        )
    ]
    if hits is not None and misses is not None and served is not None:
        rows.append(
            (
                "Cache use",
                f"{plural(hits, 'hit')}, {misses:,} miss{'' if misses == 1 else 'es'}, "
                f"{human_size(served)} sent from the cache",
            )
        )
    return rows


def node_view(nodeinfo: Mapping[str, Any], node_id: str) -> tuple[bool, list[ET.Element]]:
    """The header and details of a node page, and a hub's child lists.

    Args:
        nodeinfo: the node's ``/ID/api/nodeinfo`` answer.
        node_id: the id the page asked for.

    Returns:
        ``(is_hub, elements)``; a share's page continues with ``browser_view``.
    """
    info = _obj(nodeinfo.get("info"))
    is_hub = info.get("node_type") == "hub"
    name = node_title(nodeinfo, node_id)
    parent = _obj(nodeinfo.get("parent_hub_info"))
    parent_id = _str(parent.get("node_id"))
    parent_cell: Child
    if is_node_id(parent_id):
        parent_cell = h(
            "span",
            {},
            _node_link(parent_id, _str(parent.get("name")) or parent_id),
            " ",
            _code(parent_id),
        )
    else:
        parent_cell = _muted("none (top of its network)")
    owner, email = _str(info.get("owner")), _str(info.get("owner_email"))
    owner_cell: Child = _muted("unknown")
    if owner or email:
        owner_cell = h(
            "span", {}, owner, _muted(f" {'· ' if owner else ''}{email}") if email else None
        )
    description = _str(info.get("description"))
    listen = _str(info.get("listen_url"))
    header = h(
        "div",
        {"class": "node-header"},
        h(
            "h1",
            {},
            h("span", {"class": "node-name"}, name),
            h(
                "span",
                {"class": f"badge {'hub' if is_hub else 'share'}"},
                "Hub" if is_hub else "Share",
            ),
        ),
    )
    card = h(
        "section",
        {"class": "card"},
        _info_table(
            [
                ("Node id", _code(node_id)),
                ("Type", "Hub" if is_hub else "Share"),
                (
                    "Description",
                    h("span", {}, description) if description else _muted("no description"),
                ),
                ("Owner", owner_cell),
                ("Listen URL", _external(listen) if listen else None),
                ("Parent hub", parent_cell),
                *_metrics_rows(_obj(nodeinfo.get("metrics")), is_hub),
                *_cache_rows(_obj(nodeinfo.get("cache"))),
            ]
        ),
    )
    elements = [header, card]
    if is_hub:
        elements.append(
            _children_card("Child hubs", nodeinfo.get("child_hubs"), "No child hubs are connected.")
        )
        elements.append(
            _children_card(
                "Child shares", nodeinfo.get("child_leaf_nodes"), "No shares are connected."
            )
        )
    return is_hub, elements


def _children_card(title: str, children: object, empty: str) -> ET.Element:
    rows = sorted(
        (
            (_str(_obj(child).get("name")) or child_id, child_id, _obj(child))
            for child_id, child in _obj(children).items()
            if is_node_id(child_id)
        ),
        key=lambda row: (natural_key(row[0]), row[1]),
    )
    card = h(
        "section",
        {"class": "card"},
        h("h2", {}, title, h("span", {"class": "count"}, f"{len(rows):,}")),
    )
    if not rows:
        card.append(h("p", {"class": "empty"}, empty))
        return card
    tbody = h("tbody")
    for name, child_id, child in rows:
        description = _str(child.get("description"))
        tbody.append(
            h(
                "tr",
                {},
                h("td", {"class": "name"}, _node_link(child_id, name)),
                h("td", {}, _code(child_id)),
                h("td", {"class": "desc", "title": description or None}, description),
                h("td", {"class": "owner"}, _str(child.get("owner"))),
            )
        )
    head = h("tr", {}, *(h("th", {}, text) for text in ("Name", "Node id", "Description", "Owner")))
    table = h(
        "table",
        {"class": "grid children"},
        h(
            "colgroup",
            {},
            *(h("col", {"class": c}) for c in ("c-name", "c-id", "c-desc", "c-owner")),
        ),
        h("thead", {}, head),
        tbody,
    )
    card.append(h("div", {"class": "table-wrap"}, table))
    return card


# --- a share's folder -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """One row of a listing: a folder, or a file with its size and SHA-1 if indexed."""

    name: str
    is_dir: bool
    size: int | None = None
    sha1: str | None = None


def read_entries(listing: Mapping[str, Any]) -> list[Entry]:
    """A readdir answer's usable entries: folders first, each group in natural order."""
    dirs: list[Entry] = []
    files: list[Entry] = []
    raw_dirs = listing.get("dirs")
    raw_files = listing.get("files")
    for item in raw_dirs if isinstance(raw_dirs, list) else ():
        name = _safe_name(_obj(item).get("name"))
        if name is not None:
            dirs.append(Entry(name, True))
    for item in raw_files if isinstance(raw_files, list) else ():
        entry = _obj(item)
        name = _safe_name(entry.get("name"))
        if name is None:
            continue
        checksum = _str(_obj(entry.get("prv")).get("original_checksum")).lower()
        files.append(
            Entry(name, False, _count(entry.get("size")), checksum if is_sha1(checksum) else None)
        )
    dirs.sort(key=lambda e: natural_key(e.name))
    files.sort(key=lambda e: natural_key(e.name))
    return dirs + files


def _join(path: str, name: str) -> str:
    return f"{path}/{name}" if path else name


def _breadcrumb(node_id: str, path: str) -> ET.Element:
    nav = h("nav", {"class": "breadcrumb", "aria-label": "Folder"})
    nav.append(_node_link(node_id, f"kbucket://{node_id}", "crumb root"))
    parts = path.split("/") if path else []
    so_far = ""
    for index, part in enumerate(parts):
        so_far = _join(so_far, part)
        nav.append(h("span", {"class": "sep", "aria-hidden": "true"}, "/"))
        if index == len(parts) - 1:
            nav.append(h("span", {"class": "crumb current", "aria-current": "page"}, part))
        else:
            nav.append(_node_link(node_id, part, "crumb", so_far))
    return nav


def _prvdir_button(path: str, name: str, label: str, cls: str) -> ET.Element:
    # Only the script can build a .prvdir (it lists every sub-folder); hidden without it.
    return h(
        "button",
        {
            "type": "button",
            "class": f"{cls} js-only",
            "data-prvdir": path,
            "data-name": name,
            "title": f"Download {name}.prvdir (all its files, recursively)",
        },
        label,
    )


def _row(node_id: str, path: str, entry: Entry) -> ET.Element:
    full = _join(path, entry.name)
    if entry.is_dir:
        return h(
            "tr",
            {"class": "row dir"},
            h(
                "td",
                {"class": "name"},
                h(
                    "a",
                    {
                        "href": page_href(node=node_id, path=full),
                        "class": "entry dir",
                        "title": entry.name,
                    },
                    entry.name,
                ),
            ),
            h("td", {"class": "size"}, _muted("—")),
            h("td", {"class": "prv"}, _prvdir_button(full, entry.name, ".prvdir", "linkish")),
            h("td", {"class": "sha1"}),
        )
    name = h(
        "a",
        {
            "href": _route(node_id, "download", full),
            "download": entry.name,
            "class": "entry file",
            "title": f"Download {entry.name}",
        },
        entry.name,
    )
    size = h(
        "td",
        {"class": "size", "title": exact_bytes(entry.size) if entry.size is not None else None},
        human_size(entry.size) if entry.size is not None else "",
    )
    if entry.sha1 is None:
        prv: Child = _muted("—")
        sha1: Child = h("span", {"class": "muted pending"}, "not yet indexed")
    else:
        prv = h(
            "a",
            {
                "href": _route(node_id, "prv", full),
                "download": f"{entry.name}.prv",
                "class": "prv-link",
                "title": f"Download {entry.name}.prv",
            },
            ".prv",
        )
        sha1 = h(
            "a",
            {
                "href": page_href(find=entry.sha1, name=entry.name),
                "class": "mono sha",
                "title": f"{entry.sha1} — find every copy",
            },
            entry.sha1,
        )
    copy: Child = (
        None
        if entry.sha1 is None
        else h(
            "button",
            {
                "type": "button",
                "class": "linkish js-only copy-uri",
                "data-uri": sha1_uri(entry.sha1, entry.name),
                "title": "Copy its sha1:// URI (kb-prv-download, Python's kbapps.api, fsspec)",
            },
            "copy URI",
        )
    )
    return h(
        "tr",
        {"class": "row file"},
        h("td", {"class": "name"}, name),
        size,
        h("td", {"class": "prv"}, prv),
        h("td", {"class": "sha1"}, sha1, copy),
    )


def _browser_card(node_id: str, path: str, share_name: str, summary: str) -> ET.Element:
    folder = path.rsplit("/", 1)[-1] if path else share_name
    tools = h(
        "div",
        {"class": "tools"},
        h("span", {"class": "summary muted"}, summary),
        h(
            "input",
            {
                "type": "search",
                "class": "filter js-only",
                "placeholder": "Filter names",
                "aria-label": "Filter names",
                "disabled": "",
            },
        ),
        _prvdir_button(path, folder or "share", "Download .prvdir", "button secondary small"),
    )
    return h(
        "section",
        {"class": "card browser", "data-node": node_id, "data-path": path, "data-name": folder},
        h("div", {"class": "browser-head"}, _breadcrumb(node_id, path), tools),
        h("div", {"class": "progress"}),
    )


def browser_error(node_id: str, path: str, share_name: str, message: str) -> ET.Element:
    """A share's folder that could not be listed: where, and why."""
    card = _browser_card(node_id, path, share_name, "")
    where = f"“{path}”" if path else "this share"
    card.append(error_box(f"Could not list {where}:", message))
    return card


def browser_view(
    node_id: str, path: str, share_name: str, entries: Sequence[Entry], start: int
) -> ET.Element:
    """A share's folder: breadcrumb, tools, and rows ``start`` to ``start + PAGE_ROWS``.

    Args:
        node_id: the share.
        path: the folder, ``/``-separated, ``""`` for the share's top.
        share_name: the share's name (names the top folder's ``.prvdir``).
        entries: ``read_entries`` of the folder's listing.
        start: the first row shown (clipped to the listing).
    """
    folders = sum(1 for e in entries if e.is_dir)
    summary = f"{plural(folders, 'folder')}, {plural(len(entries) - folders, 'file')}"
    card = _browser_card(node_id, path, share_name, summary)
    if not entries:
        card.append(h("p", {"class": "empty"}, "This folder is empty."))
        return card
    start = max(0, min(start, (len(entries) - 1) // PAGE_ROWS * PAGE_ROWS))
    shown = entries[start : start + PAGE_ROWS]
    head = h(
        "tr",
        {},
        *(
            h("th", {"class": c}, t)
            for c, t in (("name", "Name"), ("size", "Size"), ("prv", "PRV"), ("sha1", "SHA-1"))
        ),
    )
    table = h(
        "table",
        {"class": "grid files"},
        h(
            "colgroup",
            {},
            *(h("col", {"class": c}) for c in ("c-name", "c-size", "c-prv", "c-sha1")),
        ),
        h("thead", {}, head),
        h("tbody", {}, *(_row(node_id, path, entry) for entry in shown)),
    )
    card.append(h("div", {"class": "scroller", "tabindex": "0"}, table))
    if len(entries) > PAGE_ROWS:
        card.append(_pager(node_id, path, start, len(shown), len(entries)))
    return card


def _pager(node_id: str, path: str, start: int, shown: int, total: int) -> ET.Element:
    def link(first: int, text: str, rel: str) -> ET.Element:
        href = page_href(node=node_id, path=path, start=str(first) if first else "")
        return h("a", {"href": href, "rel": rel, "class": "button secondary small"}, text)

    nav = h(
        "nav",
        {"class": "pager", "aria-label": "Pages of this folder"},
        h("span", {"class": "muted"}, f"Showing {start + 1:,}–{start + shown:,} of {total:,}"),
    )
    if start > 0:
        nav.append(link(max(0, start - PAGE_ROWS), "Previous", "prev"))
    if start + shown < total:
        nav.append(link(start + PAGE_ROWS, "Next", "next"))
    return nav


# --- find -------------------------------------------------------------------------------------


def _share_link(share_id: str, name: str, folder: str) -> ET.Element:
    if not name:
        return _node_link(share_id, share_id, "mono", folder)
    link = _node_link(share_id, name, None, folder)
    link.set("title", share_id)
    return link


def find_results(answer: Mapping[str, Any]) -> list[tuple[str, str, int | None]]:
    """A find answer's usable results: ``(share id, path, size)``."""
    results = []
    raw = answer.get("results")
    for item in raw if isinstance(raw, list) else ():
        result = _obj(item)
        share_id = _str(result.get("kbshare_id"))
        path = "/".join(
            s for s in _str(result.get("path")).split("/") if s and s not in (".", "..")
        )
        if is_node_id(share_id) and path and _encodable(path):
            results.append((share_id, path, _count(result.get("size"))))
    return results


def find_view(
    sha1: str,
    name: str,
    answer: Mapping[str, Any],
    page: Origin | None,
    share_names: Mapping[str, str],
) -> list[ET.Element]:
    """Where content ``sha1`` is: the copies, and every URL with the reachable first.

    Args:
        sha1: the content id asked for.
        name: the file name the user knows it by (from a ``.prv``), or ``""``.
        answer: the node's ``/find/SHA1`` answer.
        page: the origin the browser loaded the page from, if known.
        share_names: names of the shares holding copies, where known (by id).
    """
    shown_name = name.replace("\\", "/").rsplit("/", 1)[-1]
    header = h(
        "div",
        {"class": "node-header"},
        h(
            "h1",
            {},
            h(
                "span",
                {"class": "node-name"},
                f"Find “{shown_name}”" if shown_name else "Find content",
            ),
        ),
        h("div", {"class": "node-sub"}, "SHA-1 ", _code(sha1)),
    )
    if answer.get("found") is not True:
        empty = "Not found: no node reachable from here has this content."
        return [header, h("section", {"class": "card"}, h("p", {"class": "empty"}, empty))]
    results = find_results(answer)
    size = _count(answer.get("size"))
    if size is None and results:
        size = results[0][2]
    about = f"{human_size(size)} ({exact_bytes(size)}) · " if size is not None else ""
    card = h(
        "section",
        {"class": "card found"},
        h("h2", {}, "Found", h("span", {"class": "count"}, f"{len(results):,}")),
        h("p", {"class": "muted"}, f"{about}{plural(len(results), 'copy')} in the network"),
    )
    if results:
        tbody = h("tbody")
        # A hub's cached copy has the content id as its path (docs/protocol.md §13):
        # it is saved under a share's name for the same content when there is one.
        named = next((p.rsplit("/", 1)[-1] for _, p, _ in results if p != sha1), sha1)
        for share_id, path, result_size in results:
            filename = shown_name or (named if path == sha1 else path.rsplit("/", 1)[-1])
            folder = path.rsplit("/", 1)[0] if "/" in path else ""
            tbody.append(
                h(
                    "tr",
                    {},
                    h("td", {}, _share_link(share_id, share_names.get(share_id, ""), folder)),
                    h("td", {"class": "path", "title": path}, path),
                    h(
                        "td",
                        {"class": "size"},
                        human_size(result_size) if result_size is not None else "",
                    ),
                    h(
                        "td",
                        {},
                        h(
                            "a",
                            {
                                "href": _route(share_id, "download", path),
                                "download": filename,
                                "class": "button small",
                                "title": "Download through this node",
                            },
                            "Download",
                        ),
                    ),
                )
            )
        head = h("tr", {}, *(h("th", {}, t) for t in ("Share", "Path", "Size", "")))
        card.append(
            h(
                "div",
                {"class": "table-wrap"},
                h("table", {"class": "grid results"}, h("thead", {}, head), tbody),
            )
        )
    raw_urls = answer.get("urls")
    urls = [u for u in raw_urls if isinstance(u, str)] if isinstance(raw_urls, list) else []
    if page is not None:
        # Each copy through this node, as the browser reached it: it surely works.
        here = [f"{page}{_route(share_id, 'download', path)}" for share_id, path, _ in results]
        urls = list(dict.fromkeys([*here, *urls]))
    sources = rank_sources(urls, page)
    if sources:
        items = []
        for source in sources:
            note = h("span", {"class": "muted note"}, f" — {source.note}") if source.note else None
            items.append(
                h(
                    "li",
                    {"data-url": source.url, "class": f"rank-{source.rank}"},
                    _external(source.url),
                    note,
                )
            )
        card.append(h("h3", {}, "Direct URLs, reachable first"))
        card.append(h("ol", {"class": "urls"}, *items))
    return [header, card]
