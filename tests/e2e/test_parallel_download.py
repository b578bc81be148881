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
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.procs import (
    Node,
    Procs,
    command,
    default_sigint,
    sha1_of,
    wait_for,
    write_pattern,
)
from tests.hostile.helpers import find_json

MIB = 1 << 20
RATE = "4M"


def _found_at(hub: Node, sha1: str, holders: int) -> None:
    def found() -> bool:
        results = find_json(hub, sha1).get("results")
        return isinstance(results, list) and len(results) >= holders

    wait_for(found, 60.0, f"{holders} holders of {sha1} at the hub")


@dataclass
class TwoShares:
    """A hub and two rate-limited shares holding the same file, and its ``.prv``."""

    hub: Node
    nodes: list[Node]
    prv: Path
    sha1: str
    env: dict[str, str]


def _two_shares(procs: Procs, tmp_path: Path, size: int) -> TwoShares:
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
    return TwoShares(hub, nodes, tmp_path / "big.prv", sha1, env)


def _download_argv(net: TwoShares, out: Path) -> list[str]:
    return command(
        "kb-prv-download",
        "--json",
        "--hub",
        net.hub.url,
        "--cache-size",
        "0",
        str(net.prv),
        str(out),
    )


def _by_node(net: TwoShares, per_source: dict[str, int]) -> dict[str, int]:
    by_node: dict[str, int] = {}
    for url, nbytes in per_source.items():
        node = next(n.node_id for n in net.nodes if f"/{n.node_id}/" in url)
        by_node[node] = by_node.get(node, 0) + nbytes
    return by_node


def _two_sources(procs: Procs, tmp_path: Path, size: int, *, timeout: float) -> None:
    net = _two_shares(procs, tmp_path, size)
    nodes, sha1, env = net.nodes, net.sha1, net.env
    started = time.monotonic()
    done = subprocess.run(
        _download_argv(net, tmp_path / "out.bin"),
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
    by_node = _by_node(net, per_source)
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


def test_an_interrupted_download_from_two_shares_resumes_with_what_it_kept(
    procs: Procs, tmp_path: Path
) -> None:
    size = 24 * MIB
    net = _two_shares(procs, tmp_path, size)
    out = tmp_path / "out.bin"
    sidecar = tmp_path / "out.bin.part.json"

    def kept_a_third() -> bool:
        try:
            record = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            return False
        pieces: list[list[int]] = record.get("pieces", [])
        return sum(b - a for a, b in pieces) * MIB >= size // 3

    proc = subprocess.Popen(
        _download_argv(net, out),
        env=net.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    try:
        wait_for(lambda: kept_a_third() or proc.poll() is not None, 60, "a third on disk")
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)  # Ctrl+C, both shares sending
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 130, stderr
    events = [json.loads(line) for line in stdout.splitlines()]
    (kept,) = [e for e in events if e["event"] == "kept"]
    assert events[-1] == {"event": "interrupted", "exit_code": 130, "kept": kept["bytes"]}
    assert kept["bytes"] >= size // 3
    assert "Interrupted: kept" in stderr
    assert len({e["url"] for e in events if e["event"] == "source"}) == 2

    again = subprocess.run(
        _download_argv(net, out), env=net.env, capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0, again.stderr
    assert sha1_of(out.read_bytes()) == net.sha1
    events = [json.loads(line) for line in again.stdout.splitlines()]
    (resume,) = [e for e in events if e["event"] == "resume"]
    assert resume["offset"] == kept["bytes"]
    (finished,) = [e for e in events if e["event"] == "done"]
    # Only the chunks not kept were fetched again (and the last chunk of a piece, which
    # the end game may fetch twice: a couple at most).
    assert sum(finished["sources"].values()) == size - kept["bytes"]
    assert finished["transferred"] <= size - kept["bytes"] + 2 * MIB


@pytest.mark.slow
def test_two_rate_limited_shares_200_mib(procs: Procs, tmp_path: Path) -> None:
    _two_sources(procs, tmp_path, 200 * MIB, timeout=300)
