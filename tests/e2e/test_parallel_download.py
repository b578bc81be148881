"""Parallel downloads with real processes on 127.0.0.1 (issue 13, items 2 and 4).

Two shares hold the same file, each limited by ``kbucket-host --max-upload-rate``,
both joined to one hub; ``kb-prv-download --json`` asks the hub. Both nodes must
deliver a large share of the bytes (the ``done`` event's per-source counts), so the
time is clearly below one source's: the bound is on the byte counts (the node that
sent most sent at most 0.8 of the file, so the download took at most 0.8 of the
one-source time at that rate), never on the wall clock of a shared machine. The
default run moves 32 MiB at 4 MiB/s per share; the issue's 200 MiB runs under the
``slow`` marker.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.procs import Node, Procs, command, sha1_of, wait_for, write_pattern
from tests.hostile.helpers import find_json

MIB = 1 << 20
RATE = "4M"


def _found_at(hub: Node, sha1: str, holders: int) -> None:
    def found() -> bool:
        results = find_json(hub, sha1).get("results")
        return isinstance(results, list) and len(results) >= holders

    wait_for(found, 60.0, f"{holders} holders of {sha1} at the hub")


def _two_sources(procs: Procs, tmp_path: Path, size: int, *, timeout: float) -> None:
    data = write_pattern(tmp_path / "A" / "big.bin", size, seed=21)
    (tmp_path / "B").mkdir()
    (tmp_path / "B" / "copy.bin").write_bytes(data)
    hub = procs.node("kbucket-hub", tmp_path / "H", name="hub-H")
    shares = [
        procs.launch(
            "kbucket-host", tmp_path / d, "--max-upload-rate", RATE, name=f"share-{d}", parent=hub
        )
        for d in ("A", "B")
    ]
    nodes = [start() for start in shares]
    sha1 = sha1_of(data)
    _found_at(hub, sha1, 2)
    env = {**procs.env, "KBUCKET_CACHE_DIR": str(tmp_path / "cache")}
    made = subprocess.run(
        command("kb-prv-create", str(tmp_path / "A" / "big.bin"), str(tmp_path / "big.prv")),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    assert "chunks" in (tmp_path / "big.prv").read_text()
    started = time.monotonic()
    done = subprocess.run(
        command(
            "kb-prv-download",
            "--json",
            "--hub",
            hub.url,
            "--cache-size",
            "0",
            str(tmp_path / "big.prv"),
            str(tmp_path / "out.bin"),
        ),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert sha1_of((tmp_path / "out.bin").read_bytes()) == sha1
    events: list[dict[str, Any]] = [json.loads(line) for line in done.stdout.splitlines()]
    (finished,) = [e for e in events if e["event"] == "done"]
    per_source: dict[str, int] = finished["sources"]
    by_node: dict[str, int] = {}
    for url, nbytes in per_source.items():
        node = next(n.node_id for n in nodes if f"/{n.node_id}/" in url)
        by_node[node] = by_node.get(node, 0) + nbytes
    assert sum(by_node.values()) == size
    assert set(by_node) == {n.node_id for n in nodes}, per_source
    # The node that sent most sent at most 0.8 of the file: at the same rate each,
    # the download took at most 0.8 of one source's time.
    assert max(by_node.values()) <= 0.8 * size, by_node
    progress = [e for e in events if e["event"] == "progress" and "active_sources" in e]
    assert max(e["active_sources"] for e in progress) == 2
    assert not [e for e in events if e["event"] == "dropped"]
    one_source = size / (4 * MIB)
    print(f"{size / MIB:.0f} MiB in {elapsed:.1f} s; one source would take {one_source:.1f} s")


def test_two_rate_limited_shares_are_both_used(procs: Procs, tmp_path: Path) -> None:
    _two_sources(procs, tmp_path, 32 * MIB, timeout=120)


@pytest.mark.slow
def test_two_rate_limited_shares_200_mib(procs: Procs, tmp_path: Path) -> None:
    _two_sources(procs, tmp_path, 200 * MIB, timeout=300)
