"""Scenario (f): the same seed gives the same run, byte for byte.

* In process: a scenario with downloads, a crash, a partition and heal runs twice per
  seed and must give the same trace digest (and different seeds must differ).
* Across processes: the same scenario under two different ``PYTHONHASHSEED`` values
  gives the same digest, which catches any set or hash order leaking into behaviour.
* A small golden trace (2 hubs, 3 shares, one lookup) is pinned in
  ``tests/sim/golden/``, so a protocol change shows up as a readable diff. After an
  intended change, regenerate it with ``KBPROTO_REGEN_GOLDEN=1 pytest
  tests/sim/test_determinism.py`` and review the diff like code.
"""

from __future__ import annotations

import difflib
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from kbproto.config import Limits
from kbproto.sim import FaultPlan, sha1_hex, tree
from kbproto.sim.golden import golden_run
from tests.sim.scenarios import SEED_PARAMS, TIMEOUTS, make_world, settle

GOLDEN = Path(__file__).parent / "golden" / "two_hubs_three_shares_lookup.trace"
ROOT = Path(__file__).resolve().parents[2]


def busy_run(seed: int) -> str:
    """A small run touching every part of the simulator; returns its trace digest."""
    rng = random.Random(seed)
    topology = tree(1, 2, shares=5)
    files = {s: {f"{s}/a.bin": rng.randbytes(rng.randint(1, 9000))} for s in topology.shares}
    files["s0"]["shared.txt"] = files["s1"]["shared.txt"] = b"same bytes"
    world = make_world(
        seed,
        topology,
        files,
        plan=FaultPlan(max_pieces=6),
        limits=Limits(stream_window=2048, data_chunk=512),
        credit_delay=0.01,
    )
    net = world.network
    settle(world)
    app, h1 = world.apps["h1"], world.nodes["h1"]
    far = next(s for s in topology.shares if topology.spec(s).parent != "h1")
    app.find(h1, sha1_hex(b"same bytes"))
    app.download(h1, world.ids[far], f"/{world.ids[far]}/download/{far}/a.bin")
    net.run_for(0.3)
    net.crash(rng.choice(topology.shares))
    net.partition(["h2"])
    net.run_for(TIMEOUTS.heartbeat_timeout + 15)
    net.heal()
    net.run_for(60)
    return net.trace.digest()


@pytest.mark.parametrize("seed", SEED_PARAMS)
def test_same_seed_same_digest(seed: int) -> None:
    assert busy_run(seed) == busy_run(seed)


def test_different_seeds_give_different_runs() -> None:
    assert len({busy_run(seed) for seed in range(5)}) == 5


def test_digest_does_not_depend_on_string_hashing() -> None:
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from tests.sim.test_determinism import busy_run; print(busy_run(7))"
    )
    digests = set()
    for hashseed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        out = subprocess.run(
            [sys.executable, "-c", code, str(ROOT)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=ROOT,
            check=True,
        )
        digests.add(out.stdout.strip())
    assert len(digests) == 1
    assert digests == {busy_run(7)}


def test_golden_trace() -> None:
    run = golden_run()
    assert sorted(run.found) == ["s0", "s2"]
    lines = run.lines
    if os.environ.get("KBPROTO_REGEN_GOLDEN") == "1":
        GOLDEN.write_text("\n".join(lines) + "\n", encoding="utf-8")
    expected = GOLDEN.read_text(encoding="utf-8").splitlines()
    if lines != expected:
        diff = "\n".join(
            list(difflib.unified_diff(expected, lines, "golden", "this run", lineterm=""))[:80]
        )
        pytest.fail(f"the golden trace changed (regenerate if intended):\n{diff}")
