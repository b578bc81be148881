"""Two rate-limited sources against one: what ``kb-prv-download`` gains from a second copy.

Not part of the test run. Everything runs on 127.0.0.1 with real processes: one hub
and two shares (``kbucket-host --max-upload-rate RATE``) holding the same file (random
bytes written once; the second share has a hard link to it, so both read the same page
cache). Every wait is bounded, and every process started here is stopped at the end
(SIGTERM, bounded wait, SIGKILL).

In ONE run, with interleaved repeats (one of each variant per round), each
``kb-prv-download --json`` is timed twice: the whole process (Python start-up, find,
digest list, final check), and its transfer alone (from its first ``source`` event to
its ``done`` event, read as they are printed; the start-up dominates short runs on a
loaded machine):

- one source: the download asks share A itself (``--hub A``): a share's ``/find``
  answers with its own copy only, so A's limit is the only uplink;
- both sources: the download asks the hub, whose find lists A and B (and its proxies
  of them).

It prints median [min-max] seconds and MB/s of each, and the ratio one/both per round
(issue 13's target once parallel downloads land: >= 1.8x; a client that reads one
source at a time gets about 1x), with how many sources delivered bytes (the ``done``
event's ``sources``). Each download starts with an empty OUT and no content cache
(``--cache-size 0``).

With ``--also-code DIR``, also: one more share, unlimited, holding a ``--fast-mib``
file, downloaded from it alone (the one-source path) by this code and by the code in
DIR (e.g. a checkout of the commit before parallel downloads), interleaved: the
one-source path must not get slower.

Usage: python benchmarks/bench_parallel.py [--size-mib 128] [--rate 8M] [--rounds 3]
       [--dir DIR] [--also-code DIR] [--fast-mib 512]
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

from _peers import fmt, free_port, print_machine, process_env
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


def download(
    prv: Path, out: Path, hub_url: str, env: dict[str, str], size: int, code: Path = ROOT
) -> tuple[float, float, int]:
    """One whole ``kb-prv-download --json`` of the code in ``code``: its seconds, the
    seconds of its transfer (first ``source`` event to ``done``) and how many sources
    delivered bytes; checks it wrote ``size`` bytes."""
    out.unlink(missing_ok=True)
    argv = command("kb-prv-download", "--json", str(prv), str(out), "--hub", hub_url)
    # No answer from the content cache: ``--cache-size 0`` where the code has it; an
    # older client (``--also-code``) gets an empty cache directory of its own instead.
    cli = (code / "kbapps" / "cli" / "prv_download.py").read_text()
    fresh_cache = tempfile.TemporaryDirectory(prefix="kbbench-cache-")
    if "--cache-size" in cli:
        argv += ["--cache-size", "0"]
    env = dict(env, PYTHONPATH=str(code), KBUCKET_CACHE_DIR=fresh_cache.name)
    started = time.monotonic()
    first = ended = None
    sources = 0
    with (
        tempfile.TemporaryFile("w+") as errors,
        subprocess.Popen(
            argv, env=env, cwd=code, stdout=subprocess.PIPE, stderr=errors, text=True
        ) as proc,
    ):
        assert proc.stdout is not None
        for line in proc.stdout:
            event = json.loads(line)
            if event["event"] == "source" and first is None:
                first = time.monotonic()
            elif event["event"] == "done":
                ended = time.monotonic()
                sources = len(event.get("sources") or {"one": 0})
        code_ = proc.wait(DOWNLOAD_TIMEOUT)
        errors.seek(0)
        stderr = errors.read()
    elapsed = time.monotonic() - started
    fresh_cache.cleanup()
    if code_ != 0 or out.stat().st_size != size or first is None or ended is None:
        raise RuntimeError(f"kb-prv-download via {hub_url} failed: {stderr[-2000:]}")
    out.unlink()
    return elapsed, ended - first, sources


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=128)
    parser.add_argument("--rate", default="8M", help="each share's --max-upload-rate")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--also-code", type=Path, default=None)
    parser.add_argument("--fast-mib", type=int, default=512)
    args = parser.parse_args()

    work = args.dir or Path(tempfile.mkdtemp(prefix="kbbench-par-"))
    work.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    env = process_env(work, ROOT)
    print_machine()
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
        one: list[tuple[float, float, int]] = []
        both: list[tuple[float, float, int]] = []
        for round_no in range(args.rounds):
            one.append(download(prv, out, a_url, env, size))
            both.append(download(prv, out, hub, env, size))
            print(
                f"round {round_no + 1}: one source {one[-1][0]:.2f} s, both {both[-1][0]:.2f} s"
                f" ({both[-1][2]} sources delivered)",
                file=sys.stderr,
                flush=True,
            )
        mb = size / 1e6
        print(
            f"\n## Two sources vs one: {args.size_mib} MiB,"
            f" each share --max-upload-rate {args.rate}\n"
        )
        print("| sources | seconds | MB/s | transfer seconds | transfer MB/s |")
        print("|---|---|---|---|---|")
        for label, runs in (("one (share A)", one), ("both (A and B, through the hub)", both)):
            whole = [r[0] for r in runs]
            moving = [r[1] for r in runs]
            print(
                f"| {label} | {fmt(whole, 2)} | {fmt([mb / t for t in whole], 1)} |"
                f" {fmt(moving, 2)} | {fmt([mb / t for t in moving], 1)} |"
            )
        for what, index in (("", 0), (", transfer", 1)):
            ratios = [o[index] / b[index] for o, b in zip(one, both, strict=True)]
            print(
                f"\nspeed-up both/one{what}, per round: {fmt(ratios, 2)}x"
                f" (median {statistics.median(ratios):.2f}x; target >= 1.8x)"
            )
        print(f"\nsources that delivered bytes, both: {sorted({r[2] for r in both})}")
        if args.also_code is not None:
            fast_dir = work / "share-F"
            fast_dir.mkdir(exist_ok=True)
            fast_sha1 = make_big(fast_dir / "fast.bin", args.fast_mib)
            f_url = start_node(procs, "kbucket-host", "share-F", fast_dir, hub, [], env)
            wait_found(hub, fast_sha1, holders=1)
            fast_prv = work / "fast.prv"
            with urllib.request.urlopen(f"{f_url}/{node_id(fast_dir)}/prv/fast.bin") as r:
                fast_prv.write_bytes(r.read())
            other = args.also_code.resolve()
            ours: list[float] = []
            theirs: list[float] = []
            fast_size = args.fast_mib << 20
            for _ in range(args.rounds):
                ours.append(download(fast_prv, out, f_url, env, fast_size)[0])
                theirs.append(download(fast_prv, out, f_url, env, fast_size, other)[0])
            fast_mb = fast_size / 1e6
            print(f"\n## One unlimited source, {args.fast_mib} MiB: this code and {other}\n")
            print("| code | seconds | MB/s |\n|---|---|---|")
            print(f"| this code | {fmt(ours, 2)} | {fmt([fast_mb / t for t in ours], 1)} |")
            print(f"| {other} | {fmt(theirs, 2)} | {fmt([fast_mb / t for t in theirs], 1)} |")
            ratios = [t / o for o, t in zip(ours, theirs, strict=True)]
            print(f"\nspeed this code/other, per round: {fmt(ratios, 2)}x (target: ~1.0x)")
        load = os.getloadavg()
        print(f"load average at end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    finally:
        procs.close()
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
