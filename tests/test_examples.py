"""The embedding example really runs: kbproto driven from a plain ``selectors`` loop.

``examples/selectors_hub_and_share.py`` starts a hub on 127.0.0.1 (port 0), joins a
share to it over loopback TCP with real Ed25519 signatures, indexes three in-memory
files and answers a find at the hub. It runs as a subprocess with a timeout; the
process stops on its own (it exits after printing the answer).
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "selectors_hub_and_share.py"


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
    sha1 = hashlib.sha1(b"kbucket: share large scientific data where it lives\n").hexdigest()
    assert re.search(r"^hub [0-9a-f]{12} listening on http://127\.0\.0\.1:\d+$", out, re.M)
    assert "share: connected to parent hub: demo hub" in out
    assert "hub: index holds 3 content ids" in out
    assert f"find {sha1} -> 1 result(s)" in out
    match = re.search(r"share ([0-9a-f]{12}) path data/readme\.txt size 52 url (\S+)", out)
    assert match is not None, out
    share_id, url = match.groups()
    assert re.fullmatch(rf"http://127\.0\.0\.1:\d+/{share_id}/download/data/readme\.txt", url), url
    assert f"hub: share {share_id} (demo share) joined" in out
