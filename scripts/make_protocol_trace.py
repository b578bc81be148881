"""Render the worked trace of ``docs/protocol.md`` from the pinned simulator scenario.

Usage: ``python scripts/make_protocol_trace.py`` rewrites the part of
``docs/protocol.md`` between its ``worked-trace`` markers; ``--check`` changes nothing
and exits 1 when that part is not what the scenario gives today (the test suite runs
it, so the document cannot drift from the code).

The scenario is ``kbproto.sim.golden`` (two hubs, three shares, one lookup), the same run
as the golden trace in ``tests/sim/golden/``: the simulator runs the real kbproto cores,
so every frame below is what a real node sends, in the order it sends it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from kbproto.framing import HEADER_SIZE, KIND_CONTROL
from kbproto.sim.golden import GoldenRun, golden_run

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "protocol.md"
BEGIN = "<!-- worked-trace: begin (scripts/make_protocol_trace.py writes this part) -->"
END = "<!-- worked-trace: end -->"


def render(run: GoldenRun) -> str:
    """The markdown between the markers: a legend, the node ids, then every step."""
    by_name = sorted((name, node_id) for node_id, name in run.names.items())
    ids = "\n".join(f"| {name} | `{node_id}` |" for name, node_id in by_name)
    by_line = {frame.line: frame for frame in run.frames}
    steps: list[str] = []
    for index, line in enumerate(run.lines):
        time, node, direction, _link, summary = line.split(" ", 4)
        frame = by_line.get(index)
        if frame is None:
            steps.append(f"{time}  {node:<2}       {direction} {summary}")
            continue
        arrow = f"{frame.sender} → {frame.receiver}"
        if frame.frame[1] == KIND_CONTROL:
            body = frame.frame[HEADER_SIZE:].decode("utf-8")
        else:
            body = f"data frame, {len(frame.frame) - HEADER_SIZE} payload bytes"
        steps.append(f"{time}  {arrow}  {body}")
    return "\n".join(
        [
            "Node ids in this run. The simulator's keys are deterministic stand-ins: its",
            "`public_key` texts and `signature`s have the right shape and are checked the same",
            "way, but they are not Ed25519 keys (a real node signs as §3.2 says).",
            "",
            "| node | node id |",
            "|---|---|",
            ids,
            "",
            "Each step is `time  node  what` for a node's own state changes and events, or",
            "`time  sender → receiver  payload` for a control frame, its payload exactly as",
            "sent (the 6-byte frame header of §2 before it is left out).",
            "",
            "```text",
            *steps,
            "```",
        ]
    )


def current_doc(text: str, section: str) -> str:
    """``text`` with the part between the markers replaced by ``section``."""
    start = text.index(BEGIN) + len(BEGIN)
    end = text.index(END, start)
    return f"{text[:start]}\n{section}\n{text[end:]}"


def main(argv: list[str]) -> int:
    text = DOC.read_text(encoding="utf-8")
    wanted = current_doc(text, render(golden_run()))
    if "--check" in argv:
        if wanted != text:
            print(f"{DOC} is out of date: run python scripts/make_protocol_trace.py")
            return 1
        return 0
    DOC.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
