"""Every benchmark script runs, on tiny inputs, so none can rot between the sessions that
measure with them (``bench_sim.py`` crashed for weeks before this test existed).

The figures of such a run mean nothing; what is checked is that each script finishes,
prints its tables and ratios, and leaves no process behind. The peers it compares
against (nginx, wrk, openssl, sha1sum) are installed by ``scripts/setup-tests.sh``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: script -> (tiny arguments, text its report must hold)
SMOKE_RUNS = {
    "bench_hashing.py": (
        ["--repeats", "1", "--big-mib", "4", "--files", "50", "--file-size", "1024"],
        ["throughput ratio"],
    ),
    "bench_serving.py": (
        ["--rounds", "1", "--size-mib", "4", "--upload-rate", "1000000000"],
        ["ratio to curl -o", "| ours limited |"],
    ),
    "bench_network.py": (
        [
            "--rounds",
            "1",
            "--size-mib",
            "4",
            "--find-shares",
            "2",
            "--files-per-share",
            "3",
            "--wrk-seconds",
            "1",
            "--wrk-repeats",
            "1",
            # One connection count, not three: each is a wrk run per target and repeat.
            *("--find-conns", "1"),
            *("--also-code", str(ROOT), "--pinned"),
        ],
        ["x curl -o", "x direct", "req/s ratio hub/bare", "finds, pinned"],
    ),
    "bench_startup.py": (
        [
            *("--repeats", "1", "--no-warm-up"),
            *("--files", "50", "--file-size", "1024", "--download-kib", "16"),
        ],
        ["typer / fast path, per pair"],
    ),
    "bench_parallel.py": (
        # 17 MiB: over the 16 MiB from which a file is fetched from several sources;
        # limited, so that one source leaves the client idle and the others are
        # engaged (unlimited, the download stays on one: kbapps/download/ramp.py).
        ["--rounds", "1", "--size-mib", "17", "--rate", "8M"],
        ["## Two sources vs one", "speed-up both/one, transfer", "delivered bytes, both: [2]"],
    ),
    "bench_pyapi.py": (
        ["--rounds", "1", "--size-mib", "4", "--reads", "5"],
        ["throughput ratio", "reads/s ratio"],
    ),
    "bench_share_scale.py": (
        ["--files", "300", "--no-warm-up"],
        ["ratio first index / kb-prv-create", "CPU ratio first index / kb-prv-create"],
    ),
    "bench_relay_cache.py": (
        ["--rounds", "1", "--size-mib", "4"],
        ["x direct", "ratio to the file's size", "x no cache"],
    ),
    "bench_hubindex.py": (
        [
            *("--memory-ids", "3000", "--find-ids", "3000", "--small-ids", "100"),
            *("--finds", "200", "--baseline-rev", "HEAD", "--baseline-ids", "3000"),
        ],
        ["## Hub index memory per content id", "memory ratio new/base", "finds/s ratio"],
    ),
    "bench_sim.py": (
        [
            *("--hubs", "22", "--shares", "30", "--ids", "2000"),
            *("--parts", "sim,scale,memory", "--also-code", str(ROOT)),
            *("--scale-shares", "20", "--scale-ids", "200", "--scale-depth", "2"),
        ],
        [
            "## Simulator throughput",
            "steps/s ratio this code / code in",
            "(same trace digest)",
            "## Simulator at scale",
            "50/50 finds, 5/5 downloads",
            "## Hub index memory",
        ],
    ),
}


def test_every_benchmark_script_has_a_smoke_run() -> None:
    scripts = {p.name for p in (ROOT / "benchmarks").glob("bench_*.py")}
    assert scripts == set(SMOKE_RUNS)


@pytest.mark.parametrize("script", sorted(SMOKE_RUNS))
def test_benchmark_runs_on_tiny_inputs(script: str, tmp_path: Path) -> None:
    # Each script makes (and removes) its own scratch directory under the system temp
    # directory: nginx's unprivileged workers cannot read inside pytest's tmp_path.
    args, expected = SMOKE_RUNS[script]
    env = dict(os.environ, PYTHONPATH=str(ROOT), KBUCKET_CACHE_DIR=str(tmp_path / "cache"))
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "Traceback" not in done.stderr
    for text in expected:
        assert text in done.stdout, done.stdout[-3000:]
