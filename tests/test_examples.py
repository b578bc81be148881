"""The embedding example really runs: kbproto driven from a plain ``selectors`` loop.

``examples/selectors_hub_and_share.py`` starts a hub on 127.0.0.1 (port 0), joins a
share to it over loopback TCP with real Ed25519 signatures, indexes three in-memory
files and answers a find at the hub. It runs as a subprocess with a timeout; the
process stops on its own (it exits after printing the answer).

With ``--hub`` the same example joins only its share to a real ``kbucket-hub`` process
(started here on 127.0.0.1, port 0, and always stopped by the ``procs`` finalizer)
over a WebSocket, and prints the hub's ``/find/SHA1`` JSON answer.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.procs import Procs

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "selectors_hub_and_share.py"
README_SHA1 = hashlib.sha1(b"kbucket: share large scientific data where it lives\n").hexdigest()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    """Real processes for this test; all of them are stopped when it ends."""
    started = Procs(tmp_path)
    try:
        yield started
    finally:
        started.close()


def test_selectors_example_joins_a_share_and_answers_a_find() -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    sha1 = README_SHA1
    assert re.search(r"^hub [0-9a-f]{12} listening on http://127\.0\.0\.1:\d+$", out, re.M)
    assert "share: connected to parent hub: demo hub" in out
    assert "hub: index holds 3 content ids" in out
    assert f"find {sha1} -> 1 result(s)" in out
    match = re.search(r"share ([0-9a-f]{12}) path data/readme\.txt size 52 url (\S+)", out)
    assert match is not None, out
    share_id, url = match.groups()
    assert re.fullmatch(rf"http://127\.0\.0\.1:\d+/{share_id}/download/data/readme\.txt", url), url
    assert f"hub: share {share_id} (demo share) joined" in out


def test_selectors_example_joins_a_real_hub_over_a_websocket(procs: Procs, tmp_path: Path) -> None:
    hub = procs.node("kbucket-hub", tmp_path / "hub", name="real hub")
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--hub", hub.url],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    match = re.search(rf"^share ([0-9a-f]{{12}}) joining {re.escape(hub.url)}$", out, re.M)
    assert match is not None, out
    share_id = match.group(1)
    assert "share: connected to parent hub: real hub" in out
    assert "share: the hub acknowledged 3 index entries" in out
    assert f"GET {hub.url}/find/{README_SHA1} -> 200" in out
    # The JSON the hub answered (the line after the GET) lists this share and its path.
    lines = out.splitlines()
    answer = json.loads(lines[lines.index(f"GET {hub.url}/find/{README_SHA1} -> 200") + 1])
    assert answer["success"] is True
    assert answer["found"] is True
    assert answer["size"] == 52
    assert {"kbshare_id": share_id, "size": 52, "path": "data/readme.txt"} in answer["results"]
    assert any(url.endswith(f"/{share_id}/download/data/readme.txt") for url in answer["urls"])
    # The hub's own console saw the child join (and leave when the example exited).
    hub.proc.wait_line(rf"Child share joined: selectors share \({share_id}\)$")
    hub.proc.wait_line(rf"Child share left: selectors share \({share_id}\)")


def test_selectors_example_refuses_a_malformed_hub_url() -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--hub", "ftp://nowhere"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "--hub wants http://HOST:PORT, not 'ftp://nowhere'"
