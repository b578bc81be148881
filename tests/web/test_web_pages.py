"""``kbapps.web.pages``: pages drawn from the nodes' JSON, whatever a node sends.

A hostile node controls every string and every type in its answers. The pages must
show its strings as text (never as markup: no element, no attribute, no link other than
``http(s)``) and must never fail on a malformed answer. These tests call
``render_page`` with a stand-in ``Fetch`` (the JSON exactly as a node could send it);
``tests/web/test_web_server_rendered.py`` and ``tests/hostile/test_web_pages.py`` do the
same through real processes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kbapps.web import views
from kbapps.web.pages import Answer, Page, Site, render_page
from kbapps.web.reach import Origin, rank_sources
from tests.web.html_audit import audit

HUB = "0123456789ab"
SHARE = "abcdef012345"
SHA1 = "a" * 40
SITE = Site(node_id=HUB, node_type="hub")
#: Strings a hostile node puts everywhere.
PAYLOADS = (
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(2)>',
    "'><svg onload=alert(3)>",
    "</textarea></title><b>bold</b>",
    "javascript:alert(4)",
    "&lt;b&gt;escaped twice&lt;/b&gt;",
    "\ud800 lone surrogate",
    "\x00\x1b[31m control",
)

Routes = Mapping[str, tuple[int, object]]


def fetcher(routes: Routes) -> Callable[[str], Any]:
    async def fetch(target: str) -> Answer:
        status, value = routes.get(target, (404, {"success": False, "error": "no such route"}))
        return Answer(status, value if isinstance(value, dict) else None)

    return fetch


def render(query: dict[str, str], routes: Routes, host: str = "127.0.0.1:3240") -> Page:
    return anyio.run(
        lambda: render_page(list(query.items()), host=host, site=SITE, fetch=fetcher(routes))
    )


def hostile_nodeinfo(node_type: str, text: str) -> dict[str, Any]:
    info = {
        "node_id": SHARE,
        "node_type": node_type,
        "name": text,
        "description": text,
        "owner": text,
        "owner_email": text,
        "listen_url": text,
    }
    return {
        "success": True,
        "info": info,
        "parent_hub_info": {"node_id": HUB, "name": text},
        "child_hubs": {"bbbbbbbbbbbb": {"name": text, "description": text, "owner": text}},
        "child_leaf_nodes": {
            "cccccccccccc": {"name": text, "listen_url": text},
            text: {"name": "not a node id: skipped"},
        },
        "metrics": {"uptime_seconds": text, "finds": -1, "http_requests": 10**30},
    }


def hostile_listing(text: str) -> dict[str, Any]:
    prv = {"original_checksum": SHA1, "original_size": 3}
    return {
        "success": True,
        "dirs": [{"name": text}, {"name": "../up"}, {"name": ".git"}, {"name": 5}, "x"],
        "files": [
            {"name": f"{text}.dat", "size": 12, "prv": prv},
            {"name": "bad-size", "size": "12", "prv": {"original_checksum": text}},
            {"name": "neg", "size": -4},
            {"name": "bool", "size": True},
            {"name": "a/b"},
            None,
        ],
    }


def render_all_pages(text: str = PAYLOADS[1]) -> dict[str, Page]:
    """One of each page, from answers full of ``text`` (used by ``test_web_static``)."""
    find = {
        "success": True,
        "found": True,
        "size": 3,
        "urls": [text, f"http://127.0.0.1:9/{SHARE}/download/{text}", "javascript:alert(5)"],
        "results": [{"kbshare_id": SHARE, "path": f"dir/{text}", "size": 3}],
    }
    routes: dict[str, tuple[int, object]] = {
        f"/{HUB}/api/nodeinfo": (200, hostile_nodeinfo("hub", text)),
        f"/{SHARE}/api/nodeinfo": (200, hostile_nodeinfo("leaf", text)),
        f"/{SHARE}/api/readdir/": (200, hostile_listing(text)),
        f"/find/{SHA1}": (200, find),
        f"/{'b' * 12}/api/nodeinfo": (502, {"success": False, "error": text}),
    }
    return {
        "hub": render({}, routes),
        "share": render({"node": SHARE}, routes),
        "find": render({"find": SHA1, "name": text}, routes),
        "error": render({"node": "b" * 12}, routes),
        "bad id": render({"node": text}, routes),
        "search": render({"q": text}, routes),
    }


@pytest.mark.parametrize("text", PAYLOADS)
def test_node_strings_are_text_on_every_page(text: str) -> None:
    pages = render_all_pages(text)
    shown = text.encode("utf-8", "replace").decode("utf-8")
    for name, page in pages.items():
        parsed = audit(page.html)
        if name in ("hub", "share", "find"):
            assert page.status == 200, (name, page.html[-2000:])
            # The hostile text is on the page, as text.
            assert any(shown.strip() in chunk for chunk in parsed.text), name
    share = audit(pages["share"].html)
    links = [attrs.get("href") for tag, attrs in share.tags if tag == "a"]
    assert f"/{SHARE}/download/{text.replace('/', '%2F')}.dat" not in links  # quoted
    names = [t for t in share.text if t in (f"{shown}.dat", "bad-size", "neg", "bool", "a/b")]
    # A name holding "/" cannot be one path segment, nor one holding a lone surrogate
    # be in a URL: neither is listed.
    listed = [] if "/" in text or shown != text else [f"{shown}.dat"]
    assert sorted(names) == sorted([*listed, "bad-size", "neg", "bool"])


def test_pages_answer_with_the_nodes_status() -> None:
    routes: dict[str, tuple[int, object]] = {
        f"/{HUB}/api/nodeinfo": (200, hostile_nodeinfo("hub", "hub")),
        f"/{SHARE}/api/nodeinfo": (200, hostile_nodeinfo("leaf", "share")),
        f"/{SHARE}/api/readdir/missing": (404, {"success": False, "error": "No such folder"}),
        f"/{'d' * 12}/api/nodeinfo": (504, {"success": False, "error": "Gateway timeout"}),
        f"/{'e' * 12}/api/nodeinfo": (200, ["not", "an", "object"]),
    }
    assert render({}, routes).status == 200
    missing = render({"node": SHARE, "path": "missing"}, routes)
    assert missing.status == 404
    assert b"Could not list \xe2\x80\x9cmissing\xe2\x80\x9d:" in missing.html
    assert b"No such folder (HTTP 404)" in missing.html
    assert render({"node": "0" * 12}, routes).status == 404
    assert render({"node": "d" * 12}, routes).status == 504
    assert render({"node": "e" * 12}, routes).status == 502
    assert render({"node": "nope"}, routes).status == 400
    assert render({"find": "xyz"}, routes).status == 400
    # The search box without the script: a SHA-1 or a node id is a redirect.
    assert render({"q": f" {SHA1.upper()} "}, routes).location == f"/?find={SHA1}"
    assert render({"q": SHARE}, routes).location == f"/?node={SHARE}"
    nothing = render({"q": "not a hash"}, routes)
    assert (nothing.status, nothing.location) == (200, None)
    assert b"Nothing to find:" in nothing.html
    assert b'value="not a hash"' in nothing.html


def test_long_folders_come_in_pages() -> None:
    files = [{"name": f"f{i:05d}.dat", "size": i} for i in range(1000)]
    routes: dict[str, tuple[int, object]] = {
        f"/{SHARE}/api/nodeinfo": (200, hostile_nodeinfo("leaf", "share")),
        f"/{SHARE}/api/readdir/": (200, {"success": True, "files": files, "dirs": []}),
    }

    def rows(page: Page) -> list[str]:
        parsed = audit(page.html)
        return [a["title"] or "" for t, a in parsed.tags if t == "a" and "download" in a]

    first = render({"node": SHARE}, routes)
    assert rows(first)[0] == "Download f00000.dat"
    assert len(rows(first)) == views.PAGE_ROWS
    assert b"Showing 1\xe2\x80\x93250 of 1,000" in first.html
    assert f'href="/?node={SHARE}&amp;start=250" rel="next"'.encode() in first.html
    last = render({"node": SHARE, "start": "999999"}, routes)
    assert rows(last)[-1] == "Download f00999.dat"
    assert b'rel="prev"' in last.html
    assert b'rel="next"' not in last.html


def test_find_lists_what_the_browser_can_reach_first() -> None:
    tail = f"/{SHARE}/download/a%20b.dat"
    find = {
        "success": True,
        "found": True,
        "size": 3,
        "urls": [
            f"http://127.0.0.1:9{tail}",  # the share's own (unreachable) URL
            f"http://hub.example.org{tail}",
            f"https://top.example.org{tail}",
        ],
        "results": [{"kbshare_id": SHARE, "path": "a b.dat", "size": 3}],
    }
    routes: dict[str, tuple[int, object]] = {f"/find/{SHA1}": (200, find)}

    def urls(page: Page) -> list[str]:
        return [
            a["data-url"] or "" for t, a in audit(page.html).tags if t == "li" and "data-url" in a
        ]

    # Seen from an https hub: this node first, the https hub, then loopback, then http.
    page = anyio.run(
        lambda: render_page(
            [("find", SHA1)],
            host="top.example.org",
            site=Site(node_id=HUB, node_type="hub", scheme="https"),
            fetch=fetcher(routes),
        )
    )
    assert urls(page) == [
        f"https://top.example.org{tail}",
        f"http://127.0.0.1:9{tail}",
        f"http://hub.example.org{tail}",
    ]
    assert b"blocked: an https page cannot download over http" in page.html
    # From a page on 127.0.0.1: this node's URL first, then the network's order.
    local = render({"find": SHA1}, routes, host="127.0.0.1:3240")
    assert urls(local)[0] == f"http://127.0.0.1:3240{tail}"
    assert urls(local)[1:] == find["urls"]


def test_rank_sources_rules() -> None:
    page = Origin("http", "kb.example.org", 80)
    ranked = rank_sources(
        [
            "ftp://x/y",
            "http://localhost:2000/a",
            "http://[::1]:2000/a",
            "http://kb.example.org/a",
            "http://other.example.org:8080/a",
            "http://kb.example.org:8080/a",
        ],
        page,
    )
    assert [(s.url, s.rank) for s in ranked] == [
        ("http://kb.example.org/a", 0),
        ("http://other.example.org:8080/a", 1),
        ("http://kb.example.org:8080/a", 1),
        ("http://localhost:2000/a", 2),
        ("http://[::1]:2000/a", 2),
    ]
    assert [s.rank for s in rank_sources(["http://a/b", "https://c/d"], None)] == [1, 1]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=60, deadline=None)
@given(nodeinfo=json_values, listing=json_values, found=json_values)
def test_any_json_renders(nodeinfo: object, listing: object, found: object) -> None:
    # Well-formed envelopes with arbitrary insides, and arbitrary values outright.
    for info in (nodeinfo, {"success": True, "info": nodeinfo, "child_hubs": nodeinfo}):
        routes: dict[str, tuple[int, object]] = {
            f"/{HUB}/api/nodeinfo": (200, info),
            f"/{SHARE}/api/nodeinfo": (200, {"success": True, "info": {"node_type": "leaf"}}),
            f"/{SHARE}/api/readdir/": (200, listing),
            f"/find/{SHA1}": (200, {"success": True, "found": True, "results": found}),
        }
        for query in ({}, {"node": SHARE}, {"find": SHA1}):
            page = render(query, routes)
            audit(page.html)
            json.dumps(page.status)


def test_a_hub_page_shows_its_relay_cache() -> None:
    nodeinfo = hostile_nodeinfo("hub", "hub")
    nodeinfo["cache"] = {
        "entries": 3,
        "bytes": 5 * 1024**2,
        "bound": 1024**3,
        "hits": 7,
        "misses": 1,
        "bytes_served": 2 * 1024**2,
    }
    html = render({}, {f"/{HUB}/api/nodeinfo": (200, nodeinfo)}).html
    assert b"Relay cache" in html
    assert b"3 files, 5.2 MB of 1.1 GB" in html
    assert b"7 hits, 1 miss, 2.1 MB sent from the cache" in html
    nodeinfo["cache"] = {"entries": "x", "bytes": -1}  # malformed: left out
    assert b"Relay cache" not in render({}, {f"/{HUB}/api/nodeinfo": (200, nodeinfo)}).html


def test_a_hubs_cached_copy_is_saved_under_the_shares_name() -> None:
    results = [
        {"kbshare_id": HUB, "path": SHA1, "size": 3},  # the hub's relay cache
        {"kbshare_id": SHARE, "path": "dir/a.dat", "size": 3},
    ]
    find = {"success": True, "found": True, "size": 3, "urls": [], "results": results}
    routes: dict[str, tuple[int, object]] = {f"/find/{SHA1}": (200, find)}
    saved = [
        a.get("download")
        for t, a in audit(render({"find": SHA1}, routes).html).tags
        if t == "a" and "download" in a
    ]
    assert saved == ["a.dat", "a.dat"]
    find["results"] = results[:1]  # the cache alone: named by its content id
    saved = [
        a.get("download")
        for t, a in audit(render({"find": SHA1}, routes).html).tags
        if t == "a" and "download" in a
    ]
    assert saved == [SHA1]
