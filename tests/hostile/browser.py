"""A real browser for the hostile tests: headless Chromium, pages on an attacker's origin.

``chromium`` launches Debian's Chromium with Playwright as ``tests/web/conftest.py``
does (an empty profile each time). ``PageServer`` is the attacker's web site: a small
HTTP server on 127.0.0.1 serving fixed files and recording every request it gets
(so it is also where stolen data would arrive). ``join_through_page`` makes a page on
any origin join a real hub as a share: kbproto's ``ShareCore`` computes every frame
(its signature is what WebCrypto's Ed25519 would give a page's script) and the page's
own script carries them over the browser's websocket, which names the page's origin
in its ``Origin`` header as every browser does.

Playwright's sync API runs an event loop in the calling thread while it is open, so a
module using ``chromium`` must keep its browser in a module-scoped fixture (as
``tests/web`` does) and must not hold anyio tests.
"""

from __future__ import annotations

import base64
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import BrowserContext, Page, sync_playwright

from kbproto import SeededIdSource, ShareConfig, ShareCore
from kbproto.actions import Dial, Hangup, Transmit
from kbproto.auth import Signer
from kbproto.events import Event, JoinRefused, LinkClosed, ParentConnected
from kbproto.ids import LinkId
from kbproto.pump import drain
from tests.hostile.helpers import CoreRun
from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS

__all__ = ("JOIN_PAGE", "JOIN_SCRIPT", "PageServer", "chromium", "join_through_page")

#: The attacker's script: it opens a websocket to the URL it is given and carries bytes
#: between it and the test (``kbInbox``, exposed by Playwright).
JOIN_SCRIPT = """
let ws = null;
function b64(buffer) {
  let s = ""; const bytes = new Uint8Array(buffer);
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
  return btoa(s);
}
window.kbOpen = (url) => {
  ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => window.kbInbox("open", "");
  ws.onmessage = (e) => window.kbInbox("data", b64(e.data));
  ws.onclose = (e) => window.kbInbox("close", String(e.code));
};
window.kbSend = (data) => {
  const raw = atob(data); const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  ws.send(bytes);
};
"""
#: A page of the attacker's site running ``JOIN_SCRIPT``.
JOIN_PAGE = (
    "<!doctype html><html><head><meta charset='utf-8'><title>join</title>"
    f"<script>{JOIN_SCRIPT}</script></head><body>a page on another origin</body></html>"
).encode()


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator[BrowserContext]:
    """Headless Chromium with an empty profile in ``profile``; closed on exit."""
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: run scripts/setup-tests.sh"
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            accept_downloads=True,
        )
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


@dataclass
class PageServer:
    """An attacker's web site on 127.0.0.1: ``files`` maps a path to (content type,
    body); anything else is 404. Every request's path is recorded in ``requests``."""

    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        """This site's URL for ``path`` (``host`` may be ``localhost``: another origin)."""
        return f"http://{host}:{self.port}{path}"

    def seen(self, prefix: str) -> list[str]:
        """The recorded request paths starting with ``prefix``."""
        with self.lock:
            return [path for path in self.requests if path.startswith(prefix)]

    def __enter__(self) -> PageServer:
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with site.lock:
                    site.requests.append(self.path)
                found = site.files.get(urlsplit(self.path).path)
                body = found[1] if found is not None else b"not here"
                self.send_response(200 if found is not None else 404)
                self.send_header("Content-Type", found[0] if found else "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet test output

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()


def join_through_page(page: Page, hub_url: str, signer: Signer, seconds: float = 10.0) -> CoreRun:
    """Join ``hub_url`` as a share through ``page``'s websocket (``page`` runs
    ``JOIN_SCRIPT``); return what the share core saw once it joined, was refused or
    closed, or after ``seconds``."""
    run = CoreRun()
    inbox: list[tuple[str, str]] = []
    page.expose_function("kbInbox", lambda kind, data: inbox.append((kind, data)))
    config = ShareConfig(name="cross-site", listen_url="http://127.0.0.1:9", parent_url=hub_url)
    core = ShareCore(config, signer=signer, ids=SeededIdSource("cross-site"))
    link = LinkId(1)
    opened = False

    def on_event(event: Event) -> None:
        run.events.append(event)
        if isinstance(event, ParentConnected):
            run.joined = True
        elif isinstance(event, JoinRefused):
            run.refused = event.reason
        elif isinstance(event, LinkClosed):
            run.closed = True

    def act() -> None:
        for action in drain(core, on_event).actions:
            if isinstance(action, Dial) and not opened and not run.closed:
                url = "ws" + action.address.removeprefix("http")
                page.evaluate("url => window.kbOpen(url)", url)
            elif isinstance(action, Transmit):
                data = bytes(action.data)
                run.sent.append(data)
                page.evaluate("d => window.kbSend(d)", base64.b64encode(data).decode())
            elif isinstance(action, Hangup):
                run.closed = True

    core.start(time.monotonic())
    act()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not run.joined and not run.closed:
        page.wait_for_timeout(50)  # lets Playwright deliver the page's kbInbox calls
        while inbox:
            kind, data = inbox.pop(0)
            now = time.monotonic()
            if kind == "open":
                opened = True
                core.link_opened(link, now, dialed=True)
            elif kind == "data":
                core.receive_data(link, base64.b64decode(data), now)
            elif opened:
                core.receive_eof(link, now)
            else:
                run.closed = True  # the upgrade itself was refused
            act()
        timer = core.get_timer()
        if timer is not None and timer <= time.monotonic():
            core.handle_timer(time.monotonic())
            act()
    return run
