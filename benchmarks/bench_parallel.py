"""Two rate-limited sources against one: what ``kb-prv-download`` gains from a second copy.

Not part of the test run. Everything runs on 127.0.0.1 with real processes: one hub
and two shares (``kbucket-host --max-upload-rate RATE``) holding the same file (random
bytes written once; the second share has a hard link to it, so both read the same page
cache). Every wait is bounded, and every process started here is stopped at the end
(SIGTERM, bounded wait, SIGKILL).

In ONE run, with interleaved repeats (one of each variant per round), the whole
``kb-prv-download`` process is timed:

- one source: the download asks share A itself (``--hub A``): a share's ``/find``
  answers with its own copy only, so A's limit is the only uplink;
- both sources: the download asks the hub, whose find lists A and B (and its proxies
  of them).

It prints median [min-max] seconds and MB/s of each, and the ratio one/both per round
(issue 13's target once parallel downloads land: >= 1.8x; a client that reads one
source at a time gets about 1x). Each download starts with an empty OUT and no
content cache (``--cache-size 0``).

Usage: python benchmarks/bench_parallel.py [--size-mib 128] [--rate 8M] [--rounds 3]
       [--dir DIR]
Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _peers import fmt, free_port
from bench_network import Procs, command, make_big, node_args

ROOT = Path(__file__).resolve().parent.parent
BIG = "big.bin"
#: Bound on one download (a slow machine at the smallest rate included).
DOWNLOAD_TIMEOUT = 1800.0


def start_node(
    procs: Procs,
    kind: str,
    name: str,
    directory: Path,
    parent: str,
    extra: list[str],
    env: dict[str, str],
) -> str:
    """Start a node on a free port; its URL once it runs (a share: once indexed)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    directory.mkdir(parents=True, exist_ok=True)
    argv = node_args(name, port, url, parent) + extra
    if kind == "kbucket-host":
        argv += ["--confirm-share", "yes"]
    procs.start(name, command(kind, str(directory), *argv), env)
    noun = "share" if kind == "kbucket-host" else "hub"
    procs.wait_line(name, rf"kbucket-{noun} is running http on port")
    if kind == "kbucket-host":
        procs.wait_line(name, r"Indexed \d+ files?\.")
        if parent != ".":
            procs.wait_line(name, r"Connected to parent hub: ")
    return url


def node_id(directory: Path) -> str:
    config = json.loads((directory / ".kbucket" / "kbnode.json").read_text())
    return str(config["node_id"])


def wait_found(hub_url: str, sha1: str, holders: int, timeout: float = 60.0) -> None:
    """Wait until the hub's find lists ``holders`` shares holding ``sha1``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{hub_url}/find/{sha1}", timeout=10) as response:
            answer = json.loads(response.read())
        if answer.get("found") and len(answer.get("results", [])) >= holders:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{hub_url}: {sha1} not found at {holders} shares within {timeout} s")


def download(prv: Path, out: Path, hub_url: str, env: dict[str, str], size: int) -> float:
    """Seconds of one whole ``kb-prv-download`` process; checks it wrote ``size`` bytes."""
    out.unlink(missing_ok=True)
    started = time.monotonic()
    done = subprocess.run(
        command("kb-prv-download", str(prv), str(out), "--hub", hub_url, "--cache-size", "0"),
        env=env,
        capture_output=True,
        text=True,
        timeout=DOWNLOAD_TIMEOUT,
    )
    elapsed = time.monotonic() - started
    if done.returncode != 0 or out.stat().st_size != size:
        raise RuntimeError(f"kb-prv-download via {hub_url} failed: {done.stderr[-2000:]}")
    out.unlink()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=128)
    parser.add_argument("--rate", default="8M", help="each share's --max-upload-rate")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()

    work = args.dir or Path(tempfile.mkdtemp(prefix="kbbench-par-"))
    work.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "KBUCKET_URL")
    }
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    env["PYTHONPATH"] = str(ROOT)
    env["KBUCKET_CACHE_DIR"] = str(work / "user-cache")

    load = os.getloadavg()
    print(
        f"Machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; "
        f"load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        flush=True,
    )
    procs = Procs(logs)
    try:
        a_dir, b_dir = work / "share-A", work / "share-B"
        a_dir.mkdir(exist_ok=True)
        b_dir.mkdir(exist_ok=True)
        print("Writing and hashing the file ...", file=sys.stderr, flush=True)
        sha1 = make_big(a_dir / BIG, args.size_mib)
        if not (b_dir / BIG).exists():
            os.link(a_dir / BIG, b_dir / BIG)
        size = args.size_mib << 20
        limit = ["--max-upload-rate", args.rate]
        hub = start_node(procs, "kbucket-hub", "hub", work / "hub", ".", [], env)
        a_url = start_node(procs, "kbucket-host", "share-A", a_dir, hub, limit, env)
        start_node(procs, "kbucket-host", "share-B", b_dir, hub, limit, env)
        wait_found(hub, sha1, holders=2)
        prv = work / "big.prv"
        with urllib.request.urlopen(f"{a_url}/{node_id(a_dir)}/prv/{BIG}", timeout=30) as r:
            prv.write_bytes(r.read())
        out = work / "out.bin"
        one: list[float] = []
        both: list[float] = []
        for round_no in range(args.rounds):
            one.append(download(prv, out, a_url, env, size))
            both.append(download(prv, out, hub, env, size))
            print(
                f"round {round_no + 1}: one source {one[-1]:.2f} s, both {both[-1]:.2f} s",
                file=sys.stderr,
                flush=True,
            )
        ratios = [o / b for o, b in zip(one, both, strict=True)]
        mb = size / 1e6
        print(
            f"\n## Two sources vs one: {args.size_mib} MiB,"
            f" each share --max-upload-rate {args.rate}\n"
        )
        print("| sources | seconds | MB/s |")
        print("|---|---|---|")
        print(f"| one (share A) | {fmt(one, 2)} | {fmt([mb / t for t in one], 1)} |")
        both_mbs = fmt([mb / t for t in both], 1)
        print(f"| both (A and B, through the hub) | {fmt(both, 2)} | {both_mbs} |")
        print(
            f"\nspeed-up both/one, per round: {fmt(ratios, 2)}x"
            f" (median {statistics.median(ratios):.2f}x; target >= 1.8x)"
        )
        load = os.getloadavg()
        print(f"load average at end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    finally:
        procs.close()
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
