"""Cross-site websocket joins (issue 11, class 6; docs/security.md "Cross-site joins").

A web page on any origin could open a websocket to a hub its visitor's browser reaches
(a hub on the visitor's own machine or network included) and sign a join: the page
became a child share. Here a page served by an attacker's site, on another 127.0.0.1
port and under ``localhost``, and script on the hub's own web page, each try to join a
real ``kbucket-hub`` through the browser's websocket (kbproto computes the frames; the
browser carries them with its ``Origin``). Every attempt is refused before the
websocket opens, while a real ``kbucket-host`` (whose dialer sends no ``Origin``) joins
as before; an origin listed in ``allowed_origins`` in the hub's ``kbnode.json`` may
join, and no other. The raw uplink upgrade refuses an ``Origin`` too.
"""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext

from kbproto.auth import node_id_from_public_pem
from tests.e2e.procs import Node, Procs
from tests.helpers import Ed25519Signer
from tests.hostile.browser import JOIN_PAGE, JOIN_SCRIPT, PageServer, chromium, join_through_page
from tests.hostile.helpers import CoreRun, status_of


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as context:
        yield context


def _children(hub: Node) -> dict[str, object]:
    with urllib.request.urlopen(f"{hub.url}/{hub.node_id}/api/nodeinfo", timeout=10) as r:
        info = json.loads(r.read())
    leaves = info["child_leaf_nodes"]
    assert isinstance(leaves, dict)
    return leaves


def _join_from(browser: BrowserContext, page_url: str, hub_url: str, seed: int) -> CoreRun:
    page = browser.new_page()
    try:
        page.goto(page_url)
        if not page.evaluate("() => typeof window.kbOpen === 'function'"):
            # A page of the hub itself: its script is the attacker's now.
            page.evaluate(f"() => {{ {JOIN_SCRIPT} }}")
        return join_through_page(page, hub_url, Ed25519Signer(seed))
    finally:
        page.close()


def test_pages_on_any_origin_cannot_join_a_hub(
    procs: Procs, tmp_path: Path, browser: BrowserContext
) -> None:
    hub = procs.node("kbucket-hub", tmp_path / "hub", name="origin-hub")
    with PageServer(files={"/join.html": ("text/html", JOIN_PAGE)}) as site:
        by_name = f"http://localhost:{hub.port}"
        pages = [
            (site.url("/join.html"), hub.url),
            (site.url("/join.html", host="localhost"), hub.url),
            (site.url("/join.html", host="localhost"), by_name),
            # The hub's own web page (its CSP lets it reach its own origin only).
            (f"{by_name}/", by_name),
            (f"{hub.url}/", hub.url),
        ]
        for seed, (page_url, hub_url) in enumerate(pages, start=600):
            run = _join_from(browser, page_url, hub_url, seed)
            assert not run.joined, (page_url, hub_url, run.events)
            assert run.closed, (page_url, hub_url, "the websocket neither opened nor closed")
            assert not run.sent, (page_url, hub_url, "the websocket opened")
    assert _children(hub) == {}
    assert not hub.proc.has_line(r"Child share joined")
    # A node's own dialer sends no Origin: a real share still joins.
    share_dir = tmp_path / "share"
    share_dir.mkdir()
    (share_dir / "a.txt").write_bytes(b"a\n")
    share = procs.node("kbucket-host", share_dir, name="real-share", parent=hub)
    assert share.node_id in _children(hub)


def test_an_allowed_origin_may_join_and_no_other(
    procs: Procs, tmp_path: Path, browser: BrowserContext
) -> None:
    with PageServer(files={"/join.html": ("text/html", JOIN_PAGE)}) as site:
        hub_dir = tmp_path / "hub"
        first = procs.node("kbucket-hub", hub_dir, name="allowing-hub")
        assert first.proc.stop() == 0
        # The operator lists the one site allowed, by hand (any spelling of the origin).
        config_path = hub_dir / ".kbucket" / "kbnode.json"
        config = json.loads(config_path.read_text())
        config["allowed_origins"] = [f"HTTP://127.0.0.1:{site.port}/"]
        config_path.write_text(json.dumps(config, indent=4) + "\n")
        hub = procs.node("kbucket-hub", hub_dir, name="allowing-hub")
        refused = _join_from(browser, site.url("/join.html", host="localhost"), hub.url, 700)
        assert not refused.joined
        assert not refused.sent
        allowed = _join_from(browser, site.url("/join.html"), hub.url, 701)
        assert allowed.joined, allowed.events
        joined_id = node_id_from_public_pem(Ed25519Signer(701).public_pem)
        hub.proc.wait_line(rf"Child share joined: cross-site \({joined_id}\)")
        joins = [line for line in hub.proc.lines if line.startswith("Child share joined")]
        assert joins == [f"Child share joined: cross-site ({joined_id})"]
        saved = json.loads(config_path.read_text())
        assert saved["allowed_origins"] == [f"http://127.0.0.1:{site.port}"]


def test_raw_upgrades_with_an_origin_are_refused(procs: Procs, tmp_path: Path) -> None:
    hub = procs.node("kbucket-hub", tmp_path / "hub", name="origin-hub")
    websocket = (
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    )
    uplink = (
        "GET /_kblink/" + "ab" * 16 + " HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Upgrade: kbucket-uplink\r\nConnection: Upgrade\r\n"
    )
    for head in (websocket, uplink):
        for origin in ("http://evil.example", "null", f"http://127.0.0.1:{hub.port}", "garbage"):
            response = _response_head(hub.port, f"{head}Origin: {origin}\r\n\r\n".encode())
            assert status_of(response) == 403, (head.split("\r\n")[0], origin, response)
    # Without an Origin (a node's dialer) the websocket upgrade is still accepted.
    assert status_of(_response_head(hub.port, f"{websocket}\r\n".encode())) == 101


def _response_head(port: int, request: bytes, timeout: float = 10.0) -> bytes:
    """Send ``request``; return the response up to the end of its head."""
    out = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        while b"\r\n\r\n" not in out and len(out) < 65536:
            chunk = sock.recv(65536)
            if not chunk:
                break
            out += chunk
    return out.partition(b"\r\n\r\n")[0]
