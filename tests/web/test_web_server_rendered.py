"""The pages without their script: ``curl``, ``chromium --dump-dom``, JavaScript disabled.

Issue 16 item 8: every page's essential content (node details, a hub's children, a
share's folders with links, where content is) comes as HTML from the node, for any node
of the network reached through the tree; the script only enhances it. Against the
``web_network`` fixture's real processes, plus one HTTPS hub for the find page's order.
"""

from __future__ import annotations

import hashlib
import json
import re
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
import trustme
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.e2e.procs import LINE_TIMEOUT, Procs, sha1_of, wait_for, write_pattern
from tests.web.conftest import (
    CHROMIUM,
    CHROMIUM_ARGS,
    ELSEWHERE,
    EVIL_FLAT_NAME,
    EVIL_SHARE_NAME,
    MANY,
    TIMEOUT_MS,
    WebNetwork,
    expected_prv,
)
from tests.web.html_audit import audit

#: Seconds ``chromium --dump-dom`` may take (it loads one page, no time budget given).
DUMP_DOM_TIMEOUT = 90


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8")


class _Text(HTMLParser):
    """The text a text browser would show (script and style skipped), and the links."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.links: dict[str, str] = {}  # link text -> href
        self._href: str | None = None
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        if tag == "a":
            self._href = dict(attrs).get("href")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip -= 1
        if tag == "a":
            self._href = None

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        self.parts.append(data)
        if self._href is not None and data.strip():
            self.links.setdefault(data.strip(), self._href)

    @property
    def text(self) -> str:
        return re.sub(r"\s+", " ", " ".join(self.parts))


def _page(url: str, status: int = 200) -> _Text:
    got, body = _get(url)
    assert got == status, (url, got, body[-2000:])
    audit(body.encode())
    parsed = _Text()
    parsed.feed(body)
    assert "Loading" not in parsed.text
    return parsed


def test_curl_sees_the_hub_and_its_children(web_network: WebNetwork) -> None:
    page = _page(web_network.hub_url + "/")
    for text in (
        "KBucket demo hub",
        web_network.hub_id,
        "Top hub of the demo network: finds content and proxies downloads.",
        "Data Services Team",
        "Lab hub (electrophysiology)",
        "Hub for the lab's recording machines.",
        "Spike sorting examples",
        "Ada Lovelace",
        "Uptime",
    ):
        assert text in page.text, text
    assert page.links["Spike sorting examples"] == f"/?node={web_network.share_id}"
    assert page.links["Lab hub (electrophysiology)"] == f"/?node={web_network.subhub_id}"


def test_node_page_shows_metrics_that_grow(web_network: WebNetwork) -> None:
    url = f"{web_network.hub_url}/?node={web_network.share_id}&path=recordings"

    def through_network() -> int:
        text = _page(url).text
        assert re.search(r"Uptime \d+ (s|min)", text), text[:2000]
        assert "of its files directly" in text
        match = re.search(r"Requests [\d,]+ requests? over HTTP, ([\d,]+) requests? through", text)
        assert match, text[:2000]
        return int(match.group(1).replace(",", ""))

    # Each page of the share asks it (nodeinfo, readdir) through the hub.
    first = through_network()
    assert through_network() >= first + 2


def test_curl_browses_a_share_through_the_hub(web_network: WebNetwork) -> None:
    sid = web_network.share_id
    top = _page(f"{web_network.hub_url}/?node={sid}")
    assert "Spike sorting examples" in top.text
    assert "Raw recordings and ground-truth firings" in top.text
    assert top.links["recordings"] == f"/?node={sid}&path=recordings"
    assert top.links["README.txt"] == f"/{sid}/download/README.txt"
    session = _page(f"{web_network.hub_url}/?node={sid}&path=recordings/session_01")
    raw = web_network.share_dir / "recordings" / "session_01" / "raw.mda"
    sha1 = hashlib.sha1(raw.read_bytes()).hexdigest()
    assert "raw.mda 1.3 MB .prv " + sha1 in session.text
    assert session.links["raw.mda"] == f"/{sid}/download/recordings/session_01/raw.mda"
    assert session.links[".prv"] == f"/{sid}/prv/recordings/session_01/geom.csv"
    assert session.links[sha1] == f"/?find={sha1}&name=raw.mda"
    # The links work without the page's script (plain GETs through the hub).
    with urllib.request.urlopen(web_network.hub_url + session.links["raw.mda"]) as response:
        assert response.read() == raw.read_bytes()
    prv_url = f"{web_network.hub_url}/{sid}/prv/recordings/session_01/raw.mda"
    with urllib.request.urlopen(prv_url) as response:
        assert response.read() == expected_prv(raw, "raw.mda")


def test_curl_pages_through_a_long_folder(web_network: WebNetwork) -> None:
    sid = web_network.share_id
    first = _page(f"{web_network.hub_url}/?node={sid}&path=many")
    assert f"0 folders, {MANY:,} files" in first.text
    assert "Showing 1–250 of 10,000" in first.text
    assert "f00249.dat" in first.text
    assert "f00250.dat" not in first.text
    assert first.links["Next"] == f"/?node={sid}&path=many&start=250"
    second = _page(web_network.hub_url + first.links["Next"])
    assert "Showing 251–500 of 10,000" in second.text
    assert "f00250.dat" in second.text
    assert second.links["Previous"] == f"/?node={sid}&path=many"


def test_curl_sees_a_standin_like_a_file(web_network: WebNetwork) -> None:
    sid = web_network.share_id
    page = _page(f"{web_network.hub_url}/?node={sid}&path=pointers")
    assert f"elsewhere.dat 7 B .prv {sha1_of(ELSEWHERE)}" in page.text
    assert "elsewhere.dat.prv" not in page.text
    # Its bytes live on the evil share, two hubs away, behind an unreachable URL.
    with urllib.request.urlopen(web_network.hub_url + page.links["elsewhere.dat"]) as response:
        assert response.read() == ELSEWHERE


def test_curl_finds_content(web_network: WebNetwork) -> None:
    target = web_network.share_dir / "recordings" / "session_02" / "raw.mda"
    sha1 = hashlib.sha1(target.read_bytes()).hexdigest()
    page = _page(f"{web_network.hub_url}/?find={sha1}&name=raw.mda")
    assert "Find “raw.mda”" in page.text
    assert "734 KB (734,002 bytes) · 1 copy in the network" in page.text
    assert page.links["Spike sorting examples"] == (
        f"/?node={web_network.share_id}&path=recordings/session_02"
    )
    tail = f"/{web_network.share_id}/download/recordings/session_02/raw.mda"
    assert page.links["Download"] == tail
    assert f"{web_network.hub_url}{tail} — this node" in page.text
    missing = _page(f"{web_network.hub_url}/?find={'0' * 40}")
    assert "Not found: no node reachable from here has this content." in missing.text


def test_curl_gets_errors_with_their_status(web_network: WebNetwork) -> None:
    unknown = _page(f"{web_network.hub_url}/?node=000000000000", status=404)
    assert "Could not load this page:" in unknown.text
    assert "(HTTP 404)" in unknown.text
    bad = _page(f"{web_network.hub_url}/?node=%3Cb%3Ebad%3C/b%3E", status=400)
    assert '"<b>bad</b>" is not a node id (12 hex digits)' in bad.text
    folder = _page(f"{web_network.hub_url}/?node={web_network.share_id}&path=no/such", 404)
    assert "Could not list “no/such”:" in folder.text


def test_hostile_names_are_escaped_in_the_html(web_network: WebNetwork) -> None:
    _, sub = _get(f"{web_network.hub_url}/?node={web_network.subhub_id}")
    _, evil = _get(f"{web_network.hub_url}/?node={web_network.evil_share_id}")
    _, inner = _get(f"{web_network.hub_url}/?node={web_network.evil_share_id}&path=%3Cb%3Ex%3C")
    for body in (sub, evil, inner):
        for raw in ("<img src=x", "<img src=y", "<script>alert", "<svg onload", "<b>x<"):
            assert raw not in body
    assert "&lt;img src=x onerror=alert(1)&gt;" in sub
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in evil
    assert '"&gt;&lt;svg onload=alert(3)&gt;' in evil
    listing = _Text()
    listing.feed(evil)
    assert EVIL_SHARE_NAME in listing.text
    assert EVIL_FLAT_NAME in listing.links
    folder = _Text()
    folder.feed(inner)
    assert "b>.dat" in folder.links


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium for this module (contexts with and without JavaScript)."""
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: run scripts/setup-tests.sh"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        expect.set_options(timeout=TIMEOUT_MS)
        try:
            yield launched
        finally:
            launched.close()


def _context_page(browser: Browser, *, javascript: bool) -> Iterator[Page]:
    context = browser.new_context(
        java_script_enabled=javascript,
        accept_downloads=True,
        ignore_https_errors=True,
        viewport={"width": 1280, "height": 860},
        locale="en-US",
    )
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def nojs(browser: Browser) -> Iterator[Page]:
    """A page in a context with JavaScript disabled."""
    yield from _context_page(browser, javascript=False)


@pytest.fixture
def withjs(browser: Browser) -> Iterator[Page]:
    """A page in a context with JavaScript (and the HTTPS hub's test certificate)."""
    yield from _context_page(browser, javascript=True)


def test_chromium_without_javascript_browses_and_downloads(
    nojs: Page, web_network: WebNetwork
) -> None:
    page = nojs
    page.goto(web_network.hub_url + "/")
    expect(page.locator("h1 .node-name")).to_have_text("KBucket demo hub")
    expect(page.locator("table.children")).to_contain_text(["Ada Lovelace"])
    # Controls that need the script are not offered.
    expect(page.get_by_text("Open .prv…")).to_be_hidden()
    page.get_by_role("link", name="Spike sorting examples").click()
    expect(page.locator("h1 .node-name")).to_have_text("Spike sorting examples")
    expect(page.get_by_placeholder("Filter names")).to_be_hidden()
    page.locator("td.name a", has_text="recordings").click()
    page.locator("td.name a", has_text="session_01").click()
    expect(page.locator(".breadcrumb .current")).to_have_text("session_01")
    raw = web_network.share_dir / "recordings" / "session_01" / "raw.mda"
    row = page.locator("table.files tr.row", has_text="raw.mda")
    with page.expect_download() as info:
        row.locator("td.name a").click()
    assert Path(info.value.path()).read_bytes() == raw.read_bytes()
    with page.expect_download() as info:
        row.get_by_role("link", name=".prv").click()
    assert info.value.suggested_filename == "raw.mda.prv"
    assert Path(info.value.path()).read_bytes() == expected_prv(raw, "raw.mda")
    # The search box works as a plain form.
    sha1 = hashlib.sha1(raw.read_bytes()).hexdigest()
    page.get_by_label("SHA-1 to find, or drop a .prv file").fill(sha1.upper())
    page.get_by_role("button", name="Find", exact=True).click()
    expect(page).to_have_url(f"{web_network.hub_url}/?find={sha1}")
    card = page.locator("section.card", has=page.locator("h2", has_text="Found"))
    expect(card).to_contain_text("recordings/session_01/raw.mda")
    with page.expect_download() as info:
        card.get_by_role("link", name="Download", exact=True).click()
    assert Path(info.value.path()).read_bytes() == raw.read_bytes()


def test_chromium_without_javascript_shows_the_evil_share_as_text(
    nojs: Page, web_network: WebNetwork
) -> None:
    page = nojs
    page.goto(f"{web_network.hub_url}/?node={web_network.subhub_id}")
    page.get_by_role("link", name=EVIL_SHARE_NAME).click()
    expect(page.locator("h1 .node-name")).to_have_text(EVIL_SHARE_NAME)
    expect(page.locator("table.files td.name a")).to_have_text(["<b>x<", EVIL_FLAT_NAME])
    for selector in ("img", "svg", "script", "b", "iframe"):
        expect(page.locator("main").locator(selector)).to_have_count(0)


def test_dump_dom_without_a_time_budget_has_the_content(
    web_network: WebNetwork, tmp_path: Path
) -> None:
    def dump(url: str) -> str:
        result = subprocess.run(
            [
                str(CHROMIUM),
                *CHROMIUM_ARGS,
                "--headless",
                f"--user-data-dir={tmp_path / 'profile'}",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=DUMP_DOM_TIMEOUT,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout

    hub = dump(web_network.hub_url + "/")
    assert "Loading node" not in hub
    assert "Lab hub (electrophysiology)" in hub
    assert "Ada Lovelace" in hub
    share = dump(f"{web_network.hub_url}/?node={web_network.share_id}&path=recordings")
    assert "firings_true.mda" in share
    assert f'href="/{web_network.share_id}/download/recordings/firings_true.mda"' in share


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    """A ``Procs`` whose processes are all stopped when the test ends."""
    started = Procs(tmp_path)
    try:
        yield started
    finally:
        started.close()


def test_https_find_page_lists_reachable_sources_first(
    procs: Procs, tmp_path: Path, nojs: Page, withjs: Page
) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    hub = procs.node(
        "kbucket-hub",
        tmp_path / "hub",
        "--tls-cert",
        str(cert_file),
        "--tls-key",
        str(key_file),
        name="tls-hub",
    )
    assert hub.scheme == "https"
    data = write_pattern(tmp_path / "share" / "data.bin", 4096, seed=9)
    share = procs.node(
        "kbucket-host",
        tmp_path / "share",
        name="http-share",
        parent=hub,
        env=dict(procs.env, SSL_CERT_FILE=str(ca_file)),
    )
    context = ssl.create_default_context(cafile=str(ca_file))
    find = f"{hub.url}/find/{sha1_of(data)}"

    def found() -> bool:
        with urllib.request.urlopen(find, context=context, timeout=10) as response:
            return json.loads(response.read())["found"] is True

    wait_for(found, LINE_TIMEOUT, "the hub to find the share's file")
    tail = f"/{share.node_id}/download/data.bin"
    # The network's order is the share's own (http) URL first; the page, with or
    # without its script, puts this node first (the browser reached it) and the http
    # URL last: an https page cannot download over http.
    for page in (nojs, withjs):
        page.goto(f"{hub.url}/?find={sha1_of(data)}")
        urls = page.locator("ol.urls li")
        expect(urls.first).to_have_text(f"{hub.url}{tail} — this node")
        expect(urls.last).to_contain_text(f"http://localhost:{share.port}{tail}")
        expect(urls.last).to_contain_text("— blocked: an https page cannot download over http")
