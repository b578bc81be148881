"""Fixtures for the browser tests: headless Chromium, and a network serving the web UI.

The browser is Debian's ``/usr/bin/chromium`` (``scripts/setup-tests.sh`` installs it),
driven by Playwright for Python, launched once per test module with an empty profile.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
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

from tests.web._spec_backend import SpecNetwork, SpecNode

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


def _node_id(label: str) -> str:
    # Fixed ids keep the screenshots identical from run to run.
    return hashlib.sha1(label.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class WebNetwork:
    """What the browser tests know of the running network.

    A top hub with a child hub and a share; an "evil" share (injection payloads in every
    text it reports) below the child hub, so its pages are reached through two hubs.
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
    # Integer-like and non-ASCII names: the .prvdir key order must still be SPEC §2.2's.
    _write(root / "recordings" / "2024", b"numbered\n")
    _write(root / "recordings" / "10", b"ten\n")
    _write(root / "recordings" / "données.csv", b"a,b\n1,2\n")
    _write(root / "recordings" / ".hidden", b"never listed\n")
    _write(root / ".kbucket" / "kbnode.json", b"{}\n")
    many = root / "many"
    many.mkdir()
    for i in range(MANY):
        (many / f"f{i:05d}.dat").write_bytes(b"file %d\n" % i)


def build_evil_dir(root: Path) -> None:
    """The evil share's files: names that are HTML."""
    _write(root / EVIL_FILE_PATH, b"bold?\n")
    _write(root / EVIL_FLAT_NAME, b"image?\n")


def expected_prv(path: Path, name: str) -> bytes:
    """The SPEC §2.1 ``.prv`` bytes of ``path`` with ``original_path`` = ``name``."""
    return (json.dumps(_prv_object(path, name), indent=4, ensure_ascii=False) + "\n").encode()


def _prv_object(path: Path, name: str) -> dict[str, Any]:
    data = path.read_bytes()
    return {
        "original_checksum": hashlib.sha1(data).hexdigest(),
        "original_size": len(data),
        "original_fcs": "head1000-" + hashlib.sha1(data[:1000]).hexdigest(),
        "original_path": name,
        "prv_version": "0.11",
    }


def expected_prvdir(directory: Path) -> bytes:
    """The SPEC §2.2 ``.prvdir`` bytes of ``directory`` (dot-names skipped, names sorted)."""

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
def web_network() -> Iterator[WebNetwork]:
    """A hub, a child hub and two shares on 127.0.0.1, serving the web interface.

    FOR NOW this runs the stand-in of ``tests/web/_spec_backend.py``. Once the commands
    exist it must start real processes instead, keeping this fixture's signature:

    1. ``kbucket-hub HUBDIR --auto --name "KBucket demo hub" --scientific-research yes
       --description ... --owner ... --owner-email ... --port 0 --host 127.0.0.1``;
       read its ``Web interface: <url>`` line for ``hub_url``;
    2. the child hub the same way with ``--parent-hub <hub_url>``;
    3. ``kbucket-host SHAREDIR --auto --name "Spike sorting examples" --confirm-share yes
       --scientific-research yes ... --port 0 --host 127.0.0.1 --parent-hub <hub_url>``
       (the evil share with ``--parent-hub <child hub url>`` and ``--name`` /
       ``--description`` / ``--owner`` set to the HTML payloads);
    4. wait (bounded) for each share's ``Indexed <n> files.`` and for the hub's nodeinfo
       to list both children; take node ids from each ``DIR/.kbucket/kbnode.json``;
    5. at teardown send SIGINT, wait with a timeout, then kill what is left.
    """
    # The 10,000-file folder is made in RAM when the machine has /dev/shm: on a loaded
    # virtual disk, creating it takes 20 s (2 ms per file) instead of under one.
    with tempfile.TemporaryDirectory(
        prefix="kbucket-web-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    ) as scratch:
        yield from _run_network(Path(scratch))


def _run_network(base: Path) -> Iterator[WebNetwork]:
    share_dir = base / "spike-sorting-examples"
    evil_dir = base / "evil"
    build_share_dir(share_dir)
    build_evil_dir(evil_dir)
    hub = SpecNode(
        node_id=_node_id("hub"),
        node_type="hub",
        name="KBucket demo hub",
        description="Top hub of the demo network: finds content and proxies downloads.",
        owner="Data Services Team",
        owner_email="data@example.org",
    )
    subhub = SpecNode(
        node_id=_node_id("subhub"),
        node_type="hub",
        name="Lab hub (electrophysiology)",
        description="Hub for the lab's recording machines.",
        owner="Lab IT",
        parent_id=hub.node_id,
    )
    share = SpecNode(
        node_id=_node_id("share"),
        node_type="leaf",
        name="Spike sorting examples",
        description="Raw recordings and ground-truth firings for spike sorting benchmarks.",
        owner="Ada Lovelace",
        owner_email="ada@example.org",
        parent_id=hub.node_id,
        root=share_dir,
    )
    evil = SpecNode(
        node_id=_node_id("evil"),
        node_type="leaf",
        name=EVIL_SHARE_NAME,
        description="<script>alert(2)</script>",
        owner='"><svg onload=alert(3)>',
        parent_id=subhub.node_id,
        root=evil_dir,
    )
    with SpecNetwork([hub, subhub, share, evil]) as network:
        yield WebNetwork(
            hub_url=network.url(hub.node_id),
            hub_id=hub.node_id,
            subhub_id=subhub.node_id,
            share_id=share.node_id,
            share_url=network.url(share.node_id),
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
