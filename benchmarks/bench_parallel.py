"""Parallel downloads benchmark (issue 13): two rate-limited sources against one.

Not part of the test run. Everything runs on 127.0.0.1 with real processes: one
``kbucket-hub``, two ``kbucket-host`` shares holding the same file, each started with
``--max-upload-rate RATE``, and ``kb-prv-download`` asking the hub. Every process
started here is stopped at the end (SIGTERM, bounded wait, SIGKILL).

In ONE run, interleaved (one of each variant per round, after a warm-up round),
median [min-max] and ratios computed from the same round:

(a) ``kb-prv-download`` of the file from both shares at once (the default,
    ``--max-sources 4``) next to ``--max-sources 1`` (one source, as before issue 13).
    Two times each: the whole process (Python start-up, find, digest list, final
    SHA-1) and the transfer alone (from the first ``source`` event to ``done``, read
    from ``--json`` as it prints). Target: >= 1.8x (transfer).
(b) with ``--also-code DIR``: a single-source download of a file from an unlimited
    share (``--max-sources 1`` is not given: one share holds it, so the one-request
    path runs), by this code and by the code in DIR (e.g. a checkout of main before
    the parallel engine), in the same rounds: the one-source path must not be slower.

Usage: python benchmarks/bench_parallel.py [--rounds 3] [--size-mib 64] [--rate 8M]
       [--fast-mib 512] [--also-code DIR]
Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _peers import fmt, free_port, wait_port

ROOT = Path(__file__).resolve().parent.parent


def node(
    code: Path,
    kind: str,
    directory: Path,
    name: str,
    port: int,
    parent: str,
    logs: Path,
    *extra: str,
) -> subprocess.Popen[bytes]:
    """Start a node of the code in ``code`` on 127.0.0.1:``port``."""
    argv = [
        sys.executable,
        "-m",
        f"kbapps.cli.{kind}",
        str(directory),
        "--auto",
        *("--name", name, "--scientific-research", "yes", "--port", str(port)),
        *("--host", "127.0.0.1", "--parent-hub", parent),
        *extra,
    ]
    if kind == "host":
        argv += ["--confirm-share", "yes"]
    env = dict(os.environ, PYTHONPATH=str(code))
    env.pop("KBUCKET_URL", None)
    out = (logs / f"{name}.out").open("wb")
    return subprocess.Popen(
        argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=code
    )


def holders(hub: str, sha1: str) -> int:
    """How many shares the hub's find lists for ``sha1``."""
    try:
        with urllib.request.urlopen(f"{hub}/find/{sha1}", timeout=10) as response:
            answer = json.loads(response.read())
    except OSError:
        return 0
    results = answer.get("results")
    return len(results) if isinstance(results, list) else 0


def wait_holders(hub: str, sha1: str, count: int, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while holders(hub, sha1) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{sha1} not held by {count} shares at {hub} in {timeout} s")
        time.sleep(0.2)


def download(
    code: Path, prv: Path, out: Path, hub: str, cache: Path, *extra: str
) -> tuple[float, float, int]:
    """Run ``kb-prv-download --json`` of the code in ``code``: (whole s, transfer s,
    sources that delivered bytes)."""
    env = dict(os.environ, PYTHONPATH=str(code), KBUCKET_CACHE_DIR=str(cache))
    env.pop("KBUCKET_URL", None)
    out.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "kbapps.cli.prv_download", "--json", "--hub", hub]
    argv += ["--cache-size", "0", *extra, str(prv), str(out)]
    started = time.perf_counter()
    first = None
    sources = 1
    with subprocess.Popen(argv, stdout=subprocess.PIPE, env=env, cwd=code, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            event = json.loads(line)
            if event["event"] == "source" and first is None:
                first = time.perf_counter()
            elif event["event"] == "done":
                ended = time.perf_counter()
                sources = len(event.get("sources") or {"": 0})
        if proc.wait(600) != 0:
            raise RuntimeError(f"kb-prv-download failed: {argv}")
    whole = time.perf_counter() - started
    assert first is not None
    return whole, ended - first, sources


def make_prv(code: Path, path: Path, prv: Path, cache: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(code), KBUCKET_CACHE_DIR=str(cache))
    subprocess.run(
        [sys.executable, "-m", "kbapps.cli.prv_create", "-q", str(path), str(prv)],
        env=env,
        cwd=code,
        check=True,
        timeout=600,
    )


def write_file(path: Path, mib: int, seed: int) -> None:
    block = bytes((seed * 131 + i) % 251 for i in range(1 << 20))
    with path.open("wb") as handle:
        for i in range(mib):
            handle.write(i.to_bytes(8, "big") + block[8:])


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for popen in procs:
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
    for popen in procs:
        try:
            popen.wait(15)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(10)


def start_network(
    code: Path, work: Path, logs: Path, shares: list[Path], rate: str
) -> tuple[str, list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    hub_port = free_port()
    hub = f"http://127.0.0.1:{hub_port}"
    (work / "hub").mkdir(exist_ok=True)
    procs.append(node(code, "hub", work / "hub", f"hub-{work.name}", hub_port, ".", logs))
    wait_port(hub_port)
    for share in shares:
        port = free_port()
        extra = ("--max-upload-rate", rate) if rate else ()
        procs.append(node(code, "host", share, share.name, port, hub, logs, *extra))
        wait_port(port)
    return hub, procs


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--rate", default="8M", help="--max-upload-rate of each share (0: none)")
    parser.add_argument("--fast-mib", type=int, default=512, help="(b): the file's size")
    parser.add_argument("--also-code", type=Path, default=None)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kbbench-parallel-"))
    logs = work / "logs"
    logs.mkdir()
    cache = work / "user-cache"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        import hashlib

        shares = [work / "share-a", work / "share-b"]
        for share in shares:
            share.mkdir()
            write_file(share / "big.bin", args.size_mib, seed=1)
        sha1 = hashlib.sha1((shares[0] / "big.bin").read_bytes()).hexdigest()
        prv = work / "big.prv"
        make_prv(ROOT, shares[0] / "big.bin", prv, cache)
        hub, started = start_network(ROOT, work, logs, shares, args.rate)
        procs += started
        wait_holders(hub, sha1, 2)

        times: dict[str, list[float]] = {}
        for round_ in range(args.rounds + 1):
            two = download(ROOT, prv, work / "out.bin", hub, cache)
            one = download(ROOT, prv, work / "out.bin", hub, cache, "--max-sources", "1")
            assert two[2] == 2, f"the parallel download used {two[2]} sources"
            if round_ == 0:
                continue  # warm-up
            for key, value in (
                ("two whole", two[0]),
                ("two transfer", two[1]),
                ("one whole", one[0]),
                ("one transfer", one[1]),
            ):
                times.setdefault(key, []).append(value)
        size = args.size_mib
        load = os.getloadavg()
        print(f"Machine: {os.cpu_count()} CPUs; load average {load[0]:.2f}; {args.rounds} rounds\n")
        print(f"## (a) {size} MiB from two shares at --max-upload-rate {args.rate} each (MiB/s)\n")
        print("| variant | whole process | transfer |\n|---|---|---|")
        for label, key in (("two sources (default)", "two"), ("--max-sources 1", "one")):
            whole = [size / t for t in times[f"{key} whole"]]
            transfer = [size / t for t in times[f"{key} transfer"]]
            print(f"| {label} | {fmt(whole, 2)} | {fmt(transfer, 2)} |")
        for what in ("whole", "transfer"):
            ratios = [
                o / t for o, t in zip(times[f"one {what}"], times[f"two {what}"], strict=True)
            ]
            print(
                f"\ntwo sources / one, {what}: {statistics.median(ratios):.2f}x "
                f"[{min(ratios):.2f}-{max(ratios):.2f}]"
                + (" (target >= 1.8x)" if what == "transfer" else "")
            )
        stop(procs)
        procs.clear()

        if args.also_code is not None:
            fast: dict[str, list[float]] = {"this code": [], str(args.also_code): []}
            single = work / "single"
            single.mkdir()
            write_file(single / "fast.bin", args.fast_mib, seed=2)
            fast_sha1 = hashlib.sha1((single / "fast.bin").read_bytes()).hexdigest()
            fast_prv = work / "fast.prv"
            make_prv(ROOT, single / "fast.bin", fast_prv, cache)
            hub, started = start_network(ROOT, work, logs, [single], "")
            procs += started
            wait_holders(hub, fast_sha1, 1)
            for round_ in range(args.rounds + 1):
                for code, key in ((ROOT, "this code"), (args.also_code, str(args.also_code))):
                    whole, _, _ = download(code.resolve(), fast_prv, work / "fast.out", hub, cache)
                    if round_:
                        fast[key].append(args.fast_mib / whole)
            print(f"\n## (b) {args.fast_mib} MiB from one unlimited share, whole process (MiB/s)\n")
            print("| code | MiB/s |\n|---|---|")
            for key, values in fast.items():
                print(f"| {key} | {fmt(values, 1)} |")
            ratios = [a / b for a, b in zip(*fast.values(), strict=True)]
            print(
                f"\nthis code / {args.also_code}: {statistics.median(ratios):.2f}x "
                f"[{min(ratios):.2f}-{max(ratios):.2f}] (target: not slower, ~1.0x)"
            )
    finally:
        stop(procs)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
