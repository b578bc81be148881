"""The committed state diagrams and tables are what the transition tables render to.

docs/state-diagrams/ is written by scripts/make_state_diagrams.py from
``kbproto.state.MACHINES``; this test fails when a table changed and the script was
not run again (or a file there was edited by hand, or is left over from a table that
is gone), so the documents cannot drift from the code.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import cast

ROOT = Path(__file__).resolve().parents[2]
DIAGRAMS = ROOT / "docs" / "state-diagrams"


def _render_files() -> dict[str, str]:
    """``render_files()`` of the script (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "make_state_diagrams", ROOT / "scripts" / "make_state_diagrams.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return cast(Callable[[], dict[str, str]], module.render_files)()


def test_committed_diagrams_match_the_tables() -> None:
    expected = _render_files()
    committed = {
        path.name: path.read_text(encoding="utf-8")
        for path in DIAGRAMS.iterdir()
        if path.suffix in {".dot", ".md"}
    }
    stale = sorted(set(committed) - set(expected))
    missing = sorted(set(expected) - set(committed))
    assert not stale, f"not rendered from any table (delete them): {stale}"
    assert not missing, f"run scripts/make_state_diagrams.py: {missing} missing"
    differ = sorted(name for name, text in expected.items() if committed[name] != text)
    assert not differ, f"run scripts/make_state_diagrams.py: {differ} out of date"
