"""Render kbproto's link state table as a Graphviz diagram (dev-only, not shipped).

Usage: ``python scripts/make_state_diagrams.py [OUT_DIR]`` writes
``OUT_DIR/link-states.dot`` (default ``docs/state-diagrams``), and an ``.svg`` next to it
when the ``dot`` program is installed. The diagram is built from
``kbproto.state.TRANSITIONS`` only, so it can never disagree with the code (after h11's
``docs/source/make-state-diagrams.py`` and h2's ``visualizer``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from kbproto.state import TRANSITIONS, LinkInput, LinkState

#: Inputs that lead every live state to CLOSED: drawn once, as a note, not 15 times.
_ALWAYS_CLOSE = {LinkInput.ERROR, LinkInput.EOF, LinkInput.TIMEOUT}


def render() -> str:
    """Return the DOT text of the link state machine."""
    edges: dict[tuple[LinkState, LinkState], list[str]] = defaultdict(list)
    for (state, event), target in TRANSITIONS.items():
        if event not in _ALWAYS_CLOSE:
            edges[(state, target)].append(event.value)
    lines = [
        "digraph link_states {",
        "  rankdir=LR;",
        '  node [shape=box, style=rounded, fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
        '  label="Every state also goes to CLOSED on error, eof or timeout.";',
    ]
    lines += [f"  {state.name};" for state in LinkState]
    for (source, target), labels in sorted(
        edges.items(), key=lambda item: (item[0][0].name, item[0][1].name)
    ):
        lines.append(f'  {source.name} -> {target.name} [label="{", ".join(sorted(labels))}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    """Write the diagram; return the exit code."""
    out = Path(argv[1]) if len(argv) > 1 else Path("docs/state-diagrams")
    out.mkdir(parents=True, exist_ok=True)
    dot_file = out / "link-states.dot"
    dot_file.write_text(render())
    dot = shutil.which("dot")
    if dot is not None:
        subprocess.run(
            [dot, "-Tsvg", str(dot_file), "-o", str(out / "link-states.svg")], check=True
        )
    print(f"wrote {dot_file}" + (" and link-states.svg" if dot else " (install graphviz for SVG)"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
