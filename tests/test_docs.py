"""The documents that are rendered from the code say what the code does today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_worked_trace_in_protocol_md_is_what_the_nodes_send() -> None:
    done = subprocess.run(
        [sys.executable, "scripts/make_protocol_trace.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    text = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    # The lookup at the end of the run is in the rendered part, as sent.
    assert '{"type":"find","query":0,' in text
    assert '{"type":"find_reply","query":0,' in text
