"""Relay cache benchmark: a hub answering from its cache, and a share's uplink bytes.

Not part of the test run. Everything runs on 127.0.0.1 with real processes
(``kbucket-host``, ``kbucket-hub``, ``curl``), every wait is bounded, and every process
started here is stopped at the end (SIGTERM, bounded wait, SIGKILL).

In ONE run:

(a) ``curl`` of a file from the hub's relay cache (``<hub>/sha1/SHA1``, the second
    download of it through the hub) next to ``curl`` of the same file straight from a
    reachable share (``<share>/ID/download/PATH``), interleaved rounds after a warm-up
    round (which fills the cache and checks the bytes). Target: cache >= 0.9x direct.
(b) The share's uplink bytes (``bytes_served_to_network`` of its nodeinfo) for ten
    simultaneous ``curl``s of a second file, new to the hub, through the hub with its
    cache on, next to the same through a hub with ``--cache-size 0``. Target: 1x the
    file's size with the cache.
(c) A hub in the middle (top hub <- mid hub <- share): ``curl`` of ``<top>/sha1/SHA1``
    for a file new to the hubs each round, in four networks: both hubs' caches on (the
    default), the mid hub's alone (it takes the stream from its core, checks it, fills
    its cache), the top hub's alone (what a fill cost before mid hubs cached), no cache
    at all; interleaved, with each hub's CPU per GiB. Then the share's uplink bytes for
    one more download of a file downloaded before: 0 where a cache holds it.

Usage: python benchmarks/bench_relay_cache.py [--rounds 3] [--size-mib 1024] [--dir DIR]
       [--parts abc]
Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _peers import cpu_seconds, fmt, free_port
from bench_network import Procs, command, make_big, node_args

ROOT = Path(__file__).resolve().parent.parent
DOWNLOADS = 10


def get_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=30) as response:
        value = json.loads(response.read())
    assert isinstance(value, dict)
    return value


def start_hub(
    procs: Procs,
    work: Path,
    env: dict[str, str],
    name: str,
    cache: str,
    parent: str = ".",
    *,
    wait: bool = True,
) -> str:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    (work / name).mkdir(exist_ok=True)
    argv = node_args(name, port, url, parent)
    procs.start(name, command("kbucket-hub", str(work / name), *argv, "--cache-size", cache), env)
    if wait:
        procs.wait_line(name, r"kbucket-hub is running http on port")
    return url


def start_share(procs: Procs, work: Path, env: dict[str, str], name: str, hub: str) -> str:
    launch_share(procs, work, env, name, hub)
    return wait_share(procs, work, name)


def launch_share(procs: Procs, work: Path, env: dict[str, str], name: str, hub: str) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [*node_args(name, port, url, hub), "--confirm-share", "yes"]
    procs.start(name, command("kbucket-host", str(work / name), *argv), env)


def wait_share(procs: Procs, work: Path, name: str) -> str:
    """Wait until share ``name`` indexed and joined; its node id."""
    procs.wait_line(name, r"^Indexed \d+ files?\.$", timeout=600)
    procs.wait_line(name, r"^Connected to parent hub: ")
    node_id = json.loads((work / name / ".kbucket" / "kbnode.json").read_text())["node_id"]
    assert isinstance(node_id, str)
    return node_id


def wait_found(hub: str, sha1: str) -> None:
    deadline = time.monotonic() + 120
    while not get_json(f"{hub}/find/{sha1}")["found"]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{sha1} not findable at {hub} after 120 s")
        time.sleep(0.2)


def curl(url: str, size: int) -> float:
    start = time.perf_counter()
    got = subprocess.run(
        ["curl", "-sf", "-o", "/dev/null", "-w", "%{size_download}", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    )
    assert int(got.stdout) == size, (url, got.stdout)
    return time.perf_counter() - start


def curl_sha1(url: str) -> str:
    got = subprocess.run(
        ["sh", "-c", f"curl -sf {url} | sha1sum"],
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    )
    return got.stdout.split()[0]


def uplink_bytes(hub: str, share_id: str) -> int:
    metrics = get_json(f"{hub}/{share_id}/api/nodeinfo")["metrics"]
    assert isinstance(metrics, dict)
    sent = metrics["bytes_served_to_network"]
    assert isinstance(sent, int)
    return sent


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument(
        "--parts", choices=["abc", "ab", "c"], default="abc", help="(a) and (b) share a set-up"
    )
    args = parser.parse_args()
    if args.parts == "c":
        return _mid_hub(args)
    size = args.size_mib << 20
    env = {"PATH": "/usr/bin:/bin:/usr/local/bin", "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        work = Path(tmp)
        procs = Procs(work)
        try:
            for name in ("share", "share-nocache"):
                (work / name).mkdir()
            print("Writing and hashing the files ...", file=sys.stderr, flush=True)
            sha1 = make_big(work / "share" / "a.bin", args.size_mib)
            # The second file: other (random) bytes, new to the hubs.
            second = make_big(work / "share" / "b.bin", args.size_mib)
            (work / "share-nocache" / "b.bin").hardlink_to(work / "share" / "b.bin")
            cache_bound = f"{4 * args.size_mib + 8}M"
            hub = start_hub(procs, work, env, "hub", cache_bound)
            hub0 = start_hub(procs, work, env, "hub-nocache", "0")
            share_id = start_share(procs, work, env, "share", hub)
            share0_id = start_share(procs, work, env, "share-nocache", hub0)
            share_url = procs.wait_line("share", r"running http on port (\d+)").group(1)
            for h, s in ((hub, sha1), (hub, second), (hub0, second)):
                wait_found(h, s)

            # (a) from the cache vs direct from the share.
            routes = {
                "hub's relay cache: <hub>/sha1/SHA1": f"{hub}/sha1/{sha1}",
                "direct from the share: <share>/ID/download/PATH": (
                    f"http://127.0.0.1:{share_url}/{share_id}/download/a.bin"
                ),
            }
            pids = {name: popen.pid for name, popen in procs.all}
            servers = dict(zip(routes, ("hub", "share"), strict=True))
            walls: dict[str, list[float]] = {label: [] for label in routes}
            cpus: dict[str, list[float]] = {label: [] for label in routes}
            for round_no in range(args.rounds + 1):
                print(f"round {round_no}", file=sys.stderr, flush=True)
                for label, url in routes.items():
                    if round_no == 0:  # warm-up: fills the cache, checks the bytes
                        assert curl_sha1(url) == sha1, label
                        continue
                    before = cpu_seconds(pids[servers[label]])
                    walls[label].append(curl(url, size))
                    cpus[label].append(cpu_seconds(pids[servers[label]]) - before)
                if round_no == 0:  # the fill commits just after the last byte went out
                    deadline = time.monotonic() + 120
                    cache = _cache(hub, work)
                    while cache["entries"] != 1:
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"the cache did not fill: {cache}")
                        time.sleep(0.1)
                        cache = _cache(hub, work)
            mb = size / 1e6
            direct = list(routes)[1]
            print(f"\n### (a) curl of {args.size_mib} MiB, {args.rounds} interleaved rounds\n")
            print("| route | MB/s | wall s | server CPU s per GiB | throughput ratio |")
            print("|---|---|---|---|---|")
            gib = size / (1 << 30)
            for label in routes:
                ratio = [d / w for d, w in zip(walls[direct], walls[label], strict=True)]
                print(
                    f"| {label} | {fmt([mb / w for w in walls[label]])} "
                    f"| {fmt(walls[label], 3)} | {fmt([c / gib for c in cpus[label]], 2)} "
                    f"| {fmt(ratio, 2)} x direct |"
                )

            # (b) ten simultaneous downloads of a new file: the share's uplink bytes.
            size2 = size
            print(f"\n### (b) share uplink for {DOWNLOADS} simultaneous downloads\n")
            print("| hub | share uplink bytes | ratio to the file's size | wall s |")
            print("|---|---|---|---|")
            for label, h, s in (
                ("relay cache on", hub, share_id),
                ("--cache-size 0", hub0, share0_id),
            ):
                before = uplink_bytes(h, s)
                url = f"{h}/sha1/{second}"
                start = time.perf_counter()
                curls = [
                    subprocess.Popen(
                        [*("curl", "-sf", "-o", "/dev/null", "-w", "%{size_download}"), url],
                        stdout=subprocess.PIPE,
                        text=True,
                    )
                    for _ in range(DOWNLOADS)
                ]
                for popen in curls:
                    out, _ = popen.communicate(timeout=900)
                    assert popen.returncode == 0, label
                    assert int(out) == size2, (label, out)
                wall = time.perf_counter() - start
                sent = uplink_bytes(h, s) - before
                print(f"| {label} | {sent:,} | {sent / size2:.2f} x | {wall:.2f} |")
        finally:
            procs.close()
    return _mid_hub(args) if "c" in args.parts else 0


def _mid_hub(args: argparse.Namespace) -> int:
    """Part (c): see the module docstring."""
    size = args.size_mib << 20
    env = {"PATH": "/usr/bin:/bin:/usr/local/bin", "PYTHONPATH": str(ROOT)}
    bound = f"{(args.rounds + 2) * args.size_mib}M"
    # label -> (network name, top hub's --cache-size, mid hub's --cache-size)
    variants = {
        "both caches on (the default)": ("b", bound, bound),
        "mid hub's cache on": ("m", "0", bound),
        "top hub's cache on": ("t", bound, "0"),
        "no cache": ("n", "0", "0"),
    }
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        work = Path(tmp)
        procs = Procs(work)
        try:
            print("Writing and hashing the files ...", file=sys.stderr, flush=True)
            # One file per round (the warm-up's too), each new to every hub; the shares
            # hold the same files (hard links).
            first = work / "share-b"
            first.mkdir()
            sha1s = [make_big(first / f"{n}.bin", args.size_mib) for n in range(args.rounds + 1)]
            for net, _, _ in variants.values():
                if net != "b":
                    (work / f"share-{net}").mkdir()
                    for n in range(args.rounds + 1):
                        (work / f"share-{net}" / f"{n}.bin").hardlink_to(first / f"{n}.bin")
            # The four networks start side by side, one level of the tree at a time.
            tops = {
                net: start_hub(procs, work, env, f"top-{net}", top, wait=False)
                for net, top, _ in variants.values()
            }
            for net in tops:
                procs.wait_line(f"top-{net}", r"kbucket-hub is running http on port")
            mids = {
                net: start_hub(procs, work, env, f"mid-{net}", mid, tops[net], wait=False)
                for net, _, mid in variants.values()
            }
            for net in mids:
                procs.wait_line(f"mid-{net}", r"kbucket-hub is running http on port")
            for net, mid_url in mids.items():
                launch_share(procs, work, env, f"share-{net}", mid_url)
            shares = {net: wait_share(procs, work, f"share-{net}") for net in mids}
            for net in tops:
                for sha1 in sha1s:
                    wait_found(tops[net], sha1)
            pids = {name: popen.pid for name, popen in procs.all}
            walls: dict[str, list[float]] = {label: [] for label in variants}
            cpus: dict[tuple[str, str], list[float]] = {}
            order = list(variants.items())
            for round_no in range(args.rounds + 1):
                print(f"mid hub round {round_no}", file=sys.stderr, flush=True)
                turn = round_no % len(order)
                for label, (net, _, _) in order[turn:] + order[:turn]:
                    url = f"{tops[net]}/sha1/{sha1s[round_no]}"
                    if round_no == 0:  # warm-up: checks the bytes
                        assert curl_sha1(url) == sha1s[0], label
                        continue
                    hubs = {hub: pids[f"{hub}-{net}"] for hub in ("top", "mid")}
                    before = {hub: cpu_seconds(pid) for hub, pid in hubs.items()}
                    walls[label].append(curl(url, size))
                    for hub, pid in hubs.items():
                        cpus.setdefault((label, hub), []).append(cpu_seconds(pid) - before[hub])
            mb, gib = size / 1e6, size / (1 << 30)
            plain = list(variants)[-1]
            print(
                f"\n### (c) curl <top>/sha1/SHA1 through top hub <- mid hub <- share,"
                f" {args.size_mib} MiB new to the hubs each round, {args.rounds} rounds\n"
            )
            print(
                "| caching | MB/s | wall s | CPU s per GiB: top hub | mid hub | throughput ratio |"
            )
            print("|---|---|---|---|---|---|")
            for label in variants:
                ratio = [p / w for p, w in zip(walls[plain], walls[label], strict=True)]
                top_cpu = [c / gib for c in cpus[(label, "top")]]
                mid_cpu = [c / gib for c in cpus[(label, "mid")]]
                print(
                    f"| {label} | {fmt([mb / w for w in walls[label]])} "
                    f"| {fmt(walls[label], 3)} | {fmt(top_cpu, 2)} | {fmt(mid_cpu, 2)} "
                    f"| {fmt(ratio, 2)} x no cache |"
                )
            # The warm-up's file, cached where a cache is on: downloaded again.
            print("\n| caching | share uplink bytes, a second download | wall s |")
            print("|---|---|---|")
            for label, (net, _, _) in variants.items():
                before_sent = uplink_bytes(tops[net], shares[net])
                wall = curl(f"{tops[net]}/sha1/{sha1s[0]}", size)
                sent = uplink_bytes(tops[net], shares[net]) - before_sent
                print(f"| {label} | {sent:,} | {wall:.2f} |")
        finally:
            procs.close()
    return 0


def _hub_id(work: Path, name: str) -> str:
    node_id = json.loads((work / name / ".kbucket" / "kbnode.json").read_text())["node_id"]
    assert isinstance(node_id, str)
    return node_id


def _cache(hub: str, work: Path) -> dict[str, int]:
    cache = get_json(f"{hub}/{_hub_id(work, 'hub')}/api/nodeinfo")["cache"]
    assert isinstance(cache, dict)
    return cache


if __name__ == "__main__":
    sys.exit(main())
