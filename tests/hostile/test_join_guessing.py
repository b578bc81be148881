"""Passcode guessing against a real hub (issue 11, class 9; ``docs/security.md`` §2
"Failed joins").

The attacker is our own kbproto ``ShareCore`` with a fresh wrong passcode per try,
dialing from 127.0.0.2 with several workers at once, as fast as the hub answers.
Before the fix it got 200-400 tries a second with nothing on the hub's console. Now:
after a few free failures its tries are spaced by a doubling delay (early tries get a
429 without any check), the real share with the right passcode still joins from
127.0.0.1 meanwhile, and the hub's console shows a few lines, not one per try.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest

from kbtransport.errors import ConnectError
from tests.e2e.procs import Node, Procs
from tests.helpers import Ed25519Signer
from tests.hostile.helpers import run_share_core

#: How long the guesser runs (seconds).
GUESSING = 6.0
#: Concurrent guessing workers (parallel attempts must be spaced like sequential ones).
WORKERS = 4


@dataclass
class Guesses:
    """What the guesser got: each try's time, by outcome."""

    checked: list[float] = field(default_factory=list)  # the hub checked the passcode
    throttled: list[float] = field(default_factory=list)  # refused before any check
    joined: int = 0

    def rate(self, since: float, until: float) -> float:
        """Passcodes checked per second between ``since`` and ``until``."""
        return sum(1 for t in self.checked if since <= t < until) / (until - since)


async def _guess(hub: Node, source: str, seconds: float) -> Guesses:
    guesses = Guesses()
    start = time.monotonic()

    async def worker(n: int) -> None:
        signer = Ed25519Signer(900 + n)
        attempt = 0
        while time.monotonic() - start < seconds:
            attempt += 1
            try:
                run = await run_share_core(
                    hub.url, signer, passcode=f"guess-{n}-{attempt}", source=source, seconds=5
                )
            except ConnectError as exc:
                if "429" not in str(exc):
                    raise
                guesses.throttled.append(time.monotonic() - start)
                await anyio.sleep(0.02)  # as fast as a client could usefully retry
                continue
            if run.refused is not None and "incorrect passcode" in run.refused:
                guesses.checked.append(time.monotonic() - start)
            elif run.joined:
                guesses.joined += 1
            else:
                guesses.throttled.append(time.monotonic() - start)  # closed unchecked

    async with anyio.create_task_group() as tg:
        for n in range(WORKERS):
            tg.start_soon(worker, n)
    return guesses


@pytest.fixture
def guarded_hub(procs: Procs, tmp_path: Path) -> Node:
    return procs.node("kbucket-hub", tmp_path / "hub", "--passcode", "sesame", name="guarded")


def test_a_passcode_guesser_is_slowed_down_and_the_right_passcode_still_joins(
    guarded_hub: Node, procs: Procs, tmp_path: Path
) -> None:
    hub = guarded_hub
    (tmp_path / "share").mkdir()
    (tmp_path / "share" / "a.txt").write_bytes(b"a\n")
    ready = procs.launch(
        "kbucket-host",
        tmp_path / "share",
        "--parent-hub-passcode",
        "sesame",
        name="rightful",
        parent=hub,
    )
    guesses = anyio.run(_guess, hub, "127.0.0.2", GUESSING)
    total = len(guesses.checked)
    print(
        f"\npasscodes checked: {total} in {GUESSING:g} s ({total / GUESSING:.1f}/s overall, "
        f"{guesses.rate(GUESSING / 2, GUESSING):.2f}/s in the second half); "
        f"{len(guesses.throttled)} tries refused unchecked"
    )
    assert guesses.joined == 0
    # A few free failures, then one try per doubling delay (1 s, 2 s, 4 s...): the
    # workers' parallel tries do not multiply that. Before: hundreds.
    assert total <= WORKERS + 4, guesses.checked
    assert guesses.rate(GUESSING / 2, GUESSING) <= 1.0, guesses.checked
    assert guesses.throttled, "no try was refused before its check"
    # The rightful share, from another address, joined meanwhile.
    share = ready()
    share.proc.wait_line(r"Connected to parent hub: guarded")
    hub.proc.wait_line(r"Child share joined: rightful ")
    # The hub's console: refused joins are there, a few lines, not one per try.
    failed = [line for line in hub.proc.lines if line.startswith("Join from ")]
    assert failed, hub.proc.lines
    assert all(line.startswith("Join from 127.0.0.2 failed: ") for line in failed), failed
    assert any("incorrect passcode" in line for line in failed), failed
    assert len(failed) <= 5, failed
    assert len(hub.proc.lines) < 20, hub.proc.lines
    assert "Traceback" not in hub.proc.stderr()
