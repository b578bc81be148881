"""Fixtures for the browser tests: headless Chromium, and a network serving the web UI.

The network (``web_network``) is real ``kbucket-hub`` and ``kbucket-host`` processes on
127.0.0.1, started once per session with ``tests/e2e/procs.py``.

The browser is Debian's ``/usr/bin/chromium`` (``scripts/setup-tests.sh`` installs it),
driven by Playwright for Python, launched once per test module with an empty profile.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import (
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Page,
    expect,
    sync_playwright,
)

from tests.e2e.procs import LINE_TIMEOUT, UNREACHABLE, Procs, wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: Milliseconds Playwright waits for any one expectation. Generous on purpose: a slow CI
#: machine must never turn into a flaky test; a real hang still fails.
TIMEOUT_MS = 30_000
#: Entries in the big directory (issue 5: 10,000 in one directory must stay usable).
MANY = 10_000
ROOT = Path(__file__).resolve().parents[2]

EVIL_SHARE_NAME = "<img src=x onerror=alert(1)>"
#: POSIX file names cannot hold "/", so the issue's "<b>x</b>.dat" is a path here: the
#: folder "<b>x<" holding the file "b>.dat". Both halves must show as literal text.
EVIL_FILE_PATH = "<b>x</b>.dat"
EVIL_FLAT_NAME = "<img src=y onerror=alert(4)>.dat"
#: The bytes of the evil share's EVIL_FLAT_NAME, which the main share also lists as the
#: stand-in ``pointers/elsewhere.dat`` (a ``.prv`` pointing at them).
ELSEWHERE = b"image?\n"


@dataclass(frozen=True)
class WebNetwork:
    """What the browser tests know of the running network.

    A top hub with a child hub and a share; an "evil" share (injection payloads in every
    text it reports) below the child hub, so its pages are reached through two hubs. The
    evil share advertises an unreachable listen URL (``procs.UNREACHABLE``), so its
    content only comes through the hubs; the main share's ``pointers/elsewhere.dat`` is
    a stand-in for one of its files.
    """

    hub_url: str
    hub_id: str
    subhub_id: str
    share_id: str
    share_url: str
    share_dir: Path
    evil_share_id: str
    evil_share_dir: Path


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def build_share_dir(root: Path) -> None:
    """The main share's files: nested folders, awkward names, 10,000 files in ``many/``."""
    rng = random.Random(5)
    _write(root / "README.txt", b"Spike sorting example recordings, shared with kbucket.\n")
    _write(root / "params.json", b'{"samplerate": 30000, "detect_sign": -1}\n')
    _write(root / "recordings" / "firings_true.mda", rng.randbytes(48_213))
    _write(root / "recordings" / "session_01" / "raw.mda", rng.randbytes(1_250_000))
    _write(root / "recordings" / "session_01" / "geom.csv", b"0,0\n0,20\n0,40\n0,60\n")
    _write(root / "recordings" / "session_02" / "raw.mda", rng.randbytes(734_002))
    _write(root / "recordings" / "session_02" / "notes.txt", "Électrode 7 bruitée.\n".encode())
    # Integer-like and non-ASCII names: the .prvdir key order must still be docs/formats.md §2's.
    _write(root / "recordings" / "2024", b"numbered\n")
    _write(root / "recordings" / "10", b"ten\n")
    _write(root / "recordings" / "données.csv", b"a,b\n1,2\n")
    _write(root / "recordings" / ".hidden", b"never listed\n")
    _write(root / "pointers" / "elsewhere.dat.prv", expected_prv_bytes(ELSEWHERE, "elsewhere.dat"))
    many = root / "many"
    many.mkdir()
    for i in range(MANY):
        (many / f"f{i:05d}.dat").write_bytes(b"file %d\n" % i)


def build_evil_dir(root: Path) -> None:
    """The evil share's files: names that are HTML."""
    _write(root / EVIL_FILE_PATH, b"bold?\n")
    _write(root / EVIL_FLAT_NAME, ELSEWHERE)


def expected_prv(path: Path, name: str) -> bytes:
    """The docs/formats.md §1 ``.prv`` bytes of ``path`` with ``original_path`` = ``name``."""
    return expected_prv_bytes(path.read_bytes(), name)


def expected_prv_bytes(data: bytes, name: str) -> bytes:
    """The ``.prv`` bytes (docs/formats.md §1) of ``data`` with ``original_path`` ``name``."""
    return (json.dumps(_prv_of(data, name), indent=4, ensure_ascii=False) + "\n").encode()


def _prv_object(path: Path, name: str) -> dict[str, Any]:
    return _prv_of(path.read_bytes(), name)


def _prv_of(data: bytes, name: str) -> dict[str, Any]:
    # The chunks root computed here with hashlib alone (docs/formats.md, "Chunk digests").
    digests = b"".join(
        hashlib.sha256(data[at : at + (1 << 20)]).digest() for at in range(0, len(data), 1 << 20)
    )
    return {
        "original_checksum": hashlib.sha1(data).hexdigest(),
        "original_size": len(data),
        "original_fcs": "head1000-" + hashlib.sha1(data[:1000]).hexdigest(),
        "original_path": name,
        "prv_version": "0.11",
        "chunks": {
            "algorithm": "sha256",
            "size": 1 << 20,
            "root": hashlib.sha256(digests).hexdigest(),
        },
    }


def expected_prvdir(directory: Path) -> bytes:
    """The ``.prvdir`` bytes (docs/formats.md §2) of ``directory`` (dot-names skipped, sorted)."""

    def tree(current: Path, rel: str) -> dict[str, Any]:
        entries = sorted(p for p in current.iterdir() if not p.name.startswith("."))
        files = {p.name: _prv_object(p, f"{rel}{p.name}") for p in entries if p.is_file()}
        dirs = {p.name: tree(p, f"{rel}{p.name}/") for p in entries if p.is_dir()}
        return {
            "files": dict(sorted(files.items())),
            "dirs": dict(sorted(dirs.items())),
        }

    return (json.dumps(tree(directory, ""), indent=4, ensure_ascii=False) + "\n").encode()


@pytest.fixture(scope="session")
def web_network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebNetwork]:
    """A hub, a child hub and two shares on 127.0.0.1, serving the web interface.

    Real processes, started once per session (``tests/e2e/procs.py`` starts and stops them):

    1. ``kbucket-hub HUB --auto --name "KBucket demo hub" ... --port 0 --host 127.0.0.1``;
       ``hub_url`` is ``http://127.0.0.1:PORT`` from its ``is running ... on port`` line;
    2. the child hub the same way with ``--parent-hub <hub_url>``;
    3. ``kbucket-host SHAREDIR --auto --name "Spike sorting examples" --confirm-share yes
       ... --parent-hub <hub_url>``, and the evil share with ``--parent-hub <child hub>``
       and ``--name`` / ``--description`` / ``--owner`` set to the HTML payloads;
    4. each start waits (bounded, ``procs.LINE_TIMEOUT`` per line) for ``Connected to
       parent hub`` and a share's ``Indexed <n> files.``; then the hubs' nodeinfo must
       list their children (bounded poll); node ids come from ``DIR/.kbucket/kbnode.json``
       and ``share_url`` is the share's own advertised ``listen_url`` (its nodeinfo);
    5. at teardown every process gets SIGTERM, a bounded wait, then SIGKILL.
    """
    work = tmp_path_factory.mktemp("web-procs")
    # The 10,000-file folder is made in RAM when the machine has /dev/shm: on a loaded
    # virtual disk, creating it takes 20 s (2 ms per file) instead of under one.
    with tempfile.TemporaryDirectory(
        prefix="kbucket-web-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    ) as scratch:
        procs = Procs(work)
        try:
            yield _run_network(procs, Path(scratch))
        finally:
            procs.close()


def _nodeinfo(url: str, node_id: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/{node_id}/api/nodeinfo", timeout=10) as response:
        body = json.loads(response.read(1 << 20))
    assert isinstance(body, dict), body
    assert body.get("success") is True, body
    return body


def _children(url: str, node_id: str) -> set[str]:
    body = _nodeinfo(url, node_id)
    return set(body.get("child_hubs", {})) | set(body.get("child_leaf_nodes", {}))


def _run_network(procs: Procs, base: Path) -> WebNetwork:
    share_dir = base / "spike-sorting-examples"
    evil_dir = base / "evil"
    build_share_dir(share_dir)
    build_evil_dir(evil_dir)
    hub = procs.node(
        "kbucket-hub",
        base / "hub",
        "--description",
        "Top hub of the demo network: finds content and proxies downloads.",
        "--owner",
        "Data Services Team",
        "--owner-email",
        "data@example.org",
        # No relay cache: the session-wide network's finds must not depend on which
        # test downloaded first (a hub lists itself for content it cached; that is
        # tested in tests/e2e/test_relay_cache.py and tests/web/test_web_pages.py).
        "--cache-size",
        "0",
        name="KBucket demo hub",
    )
    subhub = procs.node(
        "kbucket-hub",
        base / "subhub",
        "--description",
        "Hub for the lab's recording machines.",
        "--owner",
        "Lab IT",
        "--cache-size",
        "0",
        name="Lab hub (electrophysiology)",
        parent=hub,
    )
    # Both shares index at once; each waits for its own "Indexed" line (bounded).
    share_ready = procs.launch(
        "kbucket-host",
        share_dir,
        "--description",
        "Raw recordings and ground-truth firings for spike sorting benchmarks.",
        "--owner",
        "Ada Lovelace",
        "--owner-email",
        "ada@example.org",
        name="Spike sorting examples",
        parent=hub,
    )
    evil_ready = procs.launch(
        "kbucket-host",
        evil_dir,
        "--description",
        "<script>alert(2)</script>",
        "--owner",
        '"><svg onload=alert(3)>',
        "--listen-url",
        UNREACHABLE,
        name=EVIL_SHARE_NAME,
        parent=subhub,
    )
    share = share_ready()
    evil = evil_ready()
    wait_for(
        lambda: _children(hub.url, hub.node_id) == {subhub.node_id, share.node_id},
        LINE_TIMEOUT,
        "the hub to list its child hub and share",
    )
    wait_for(
        lambda: _children(subhub.url, subhub.node_id) == {evil.node_id},
        LINE_TIMEOUT,
        "the child hub to list the evil share",
    )
    share_url = _nodeinfo(share.url, share.node_id)["info"]["listen_url"]
    assert isinstance(share_url, str)
    return WebNetwork(
        hub_url=hub.url,
        hub_id=hub.node_id,
        subhub_id=subhub.node_id,
        share_id=share.node_id,
        share_url=share_url,
        share_dir=share_dir,
        evil_share_id=evil.node_id,
        evil_share_dir=evil_dir,
    )


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """One headless Chromium per test module, with a new empty profile.

    Per module, not per session: Playwright's sync API runs an asyncio loop in the main
    thread while it is open, and anyio/asyncio tests collected after a browser module
    would fail with "Cannot run the event loop while another loop is running".
    """
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: run scripts/setup-tests.sh"
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            accept_downloads=True,
            viewport={"width": 1280, "height": 860},
            locale="en-US",
        )
        context.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


@dataclass
class Watched:
    """A page and what it reported: dialogs, console errors, uncaught exceptions."""

    page: Page
    dialogs: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def csp_violations(self) -> list[str]:
        """The ``securitypolicyviolation`` events the page saw (recorded by an init script)."""
        result = self.page.evaluate("() => window.__kbCspViolations || []")
        assert isinstance(result, list)
        return [str(v) for v in result]

    def assert_clean(self) -> None:
        """No dialog, no console error, no uncaught exception, no CSP violation."""
        assert self.dialogs == []
        assert self.page_errors == []
        assert self.console_errors == []
        assert self.csp_violations() == []


# Runs before any page script; records CSP violations so tests can assert there are none
# (Playwright's own scripts are exempt from the page's CSP).
_CSP_RECORDER = """
window.__kbCspViolations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__kbCspViolations.push(e.violatedDirective + ' ' + e.blockedURI);
});
"""


@pytest.fixture
def watched(browser_context: BrowserContext) -> Iterator[Watched]:
    """A fresh page in the shared browser, with its dialogs and errors recorded."""
    page = browser_context.new_page()
    w = Watched(page)

    def on_dialog(dialog: Dialog) -> None:
        w.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            w.console_errors.append(message.text)

    page.on("dialog", on_dialog)
    page.on("console", on_console)
    page.on("pageerror", lambda exc: w.page_errors.append(str(exc)))
    page.add_init_script(_CSP_RECORDER)
    try:
        yield w
    finally:
        page.close()
