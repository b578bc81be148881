"""Hub index at scale: memory per content id, and finds at a big hub vs a small one.

Every figure comes from a fresh child process running the real ``HubCore``, fed a
joined child's index through its wire protocol (``receive_data`` of encoded
``share_index`` / ``hub_index`` batches of 2,000 entries, as a real parent gets them):

* **memory**: the process's resident set (``/proc/self/statm``, after a GC) before
  and after feeding N ids, divided by N, and the ids fed per CPU second of the hub;
  for a child hub (sha1 only) and a direct share (sha1, path
  ``data/run<i // 1000>/file<i>.dat``, size). With
  ``--baseline-rev REV`` the same is measured for the code of git revision ``REV``
  (extracted with ``git archive`` to a temporary directory) and the ratio printed.
* **finds**: a hub holding N ids of a direct share answers ``HubCore.find`` for
  random held ids (each one resolved in the same call: the answer is the hub's own);
  finds per second and the median latency, at ``--ids`` and at 1,000 ids, and their
  ratios (target: ≥ 0.9×).

Usage: python benchmarks/bench_hubindex.py [--memory-ids 1000000,10000000]
       [--find-ids 10000000] [--finds 20000] [--baseline-rev c2905b4]
       [--baseline-ids 1000000]
Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BATCH = 2000


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _sha1(i: int) -> str:
    return hashlib.sha1(i.to_bytes(8, "big")).hexdigest()


def _path(i: int) -> str:
    return f"data/run{i // 1000}/file{i}.dat"


def _joined_hub(child_is_hub: bool):  # type: ignore[no-untyped-def]
    """A ``HubCore`` with one joined child on link 1 (imports here: the worker's
    ``PYTHONPATH`` picks the code under test)."""
    from kbproto.codec import decode, encode
    from kbproto.config import HubConfig, Limits
    from kbproto.framing import FrameBuffer
    from kbproto.hub import HubCore
    from kbproto.ids import LinkId, SeededIdSource
    from kbproto.messages import Challenge, NodeInfo, Register
    from kbproto.placement import sign_placement
    from kbproto.pump import drain
    from kbproto.sim.identity import SimSigner, SimVerifier, sim_node_id

    big = 1 << 40  # budgets out of the way: this measures the structure
    limits = Limits(index_budget=big, open_child_quota=big)
    hub = HubCore(
        HubConfig(name="bench hub", listen_url="http://hub.bench", limits=limits),
        signer=SimSigner("bench-hub"),
        verifier=SimVerifier(),
        ids=SeededIdSource(0),
    )
    hub.start(0.0)
    hub.link_opened(LinkId(1), 0.0)
    frames = FrameBuffer()
    for action in drain(hub).actions:
        frames.feed(getattr(action, "data", b""))
    kind_payload = frames.next_frame()
    assert kind_payload is not None
    challenge = decode(*kind_payload)
    assert isinstance(challenge, Challenge)
    signer = SimSigner("bench-child")
    info = NodeInfo(
        node_id=sim_node_id("bench-child"),
        node_type="hub" if child_is_hub else "leaf",
        name="child",
        description="",
        owner="",
        owner_email="",
        listen_url="http://child.bench",
        public_key=signer.public_pem,
        scientific_research="yes",
        confirm_share="" if child_is_hub else "yes",
    )
    placement = sign_placement(
        signer, info, parent=challenge.node_id, nonce=challenge.nonce, stamp=1
    )
    register = Register(
        placement=placement,
        passcode="",
        max_streams=16,
        max_lookups=16,
        heartbeat_timeout_ms=30_000,
    )
    hub.receive_data(LinkId(1), encode(register), 0.0)
    drain(hub)
    assert len(hub.children()) == 1
    return hub


def _feed(hub, n: int, child_is_hub: bool) -> float:  # type: ignore[no-untyped-def]
    """Feed ids 0..n-1 through the wire; the CPU seconds the hub took (this thread's:
    on a loaded machine, wall time mostly measures the other processes)."""
    from kbproto.codec import encode
    from kbproto.ids import LinkId
    from kbproto.messages import HubIndexUpdate, ShareIndexUpdate
    from kbproto.pump import drain

    elapsed = 0.0
    for seq, start in enumerate(range(0, n, BATCH)):
        ids = [_sha1(i) for i in range(start, min(n, start + BATCH))]
        message: object
        if child_is_hub:
            message = HubIndexUpdate(
                seq=seq,
                reset=seq == 0,
                content_put=tuple(ids),
                content_drop=(),
                nodes_put=(),
                nodes_drop=(),
            )
        else:
            put = tuple((sha1, _path(i), 1000 + i) for i, sha1 in enumerate(ids, start))
            message = ShareIndexUpdate(seq=seq, reset=seq == 0, put=put, drop=())
        data = encode(message)
        del message, ids
        t0 = time.thread_time()
        hub.receive_data(LinkId(1), data, 1.0)
        drain(hub)
        elapsed += time.thread_time() - t0
    assert hub.content_count() == n, hub.content_count()
    return elapsed


def worker_memory(n: int, child_is_hub: bool) -> dict[str, float]:
    hub = _joined_hub(child_is_hub)
    gc.collect()
    before = _rss_bytes()
    elapsed = _feed(hub, n, child_is_hub)
    gc.collect()
    after = _rss_bytes()
    return {"n": n, "bytes_per_id": (after - before) / n, "ids_per_s": n / elapsed}


def worker_finds(big: int, small: int, finds: int, seed: int) -> dict[str, float]:
    """Two hubs in one process, ``small`` and ``big`` ids; finds alternate between
    them in blocks of 500, so a change in the machine's load hits both alike."""
    from kbproto.events import LookupResolved
    from kbproto.pump import drain

    out: dict[str, float] = {}
    hubs = {}
    for name, n in (("small", small), ("big", big)):
        hub = hubs[name] = _joined_hub(False)
        gc.collect()
        before = _rss_bytes()
        fed = _feed(hub, n, False)
        gc.collect()
        out[f"{name}_n"] = n
        out[f"{name}_bytes_per_id"] = (_rss_bytes() - before) / n
        out[f"{name}_ids_per_s"] = n / fed
    rng = random.Random(seed)
    latencies: dict[str, list[float]] = {"small": [], "big": []}
    cpu: dict[str, float] = {"small": 0.0, "big": 0.0}
    got: list[LookupResolved] = []
    for block in range(0, finds, 500):
        for name, n in (("small", small), ("big", big)):
            hub = hubs[name]
            wanted = [rng.randrange(n) for _ in range(min(500, finds - block))]
            sha1s = [_sha1(i) for i in wanted]
            c0 = time.thread_time()
            for i, sha1 in zip(wanted, sha1s, strict=True):
                t0 = time.perf_counter()
                hub.find(sha1, 2.0)
                drain(hub, got.append)  # type: ignore[arg-type]
                latencies[name].append(time.perf_counter() - t0)
                result = got.pop().results[0]
                assert (result.path, result.size) == (_path(i), 1000 + i), (result, i)
            # CPU of the block (the checks included, alike for both hubs).
            cpu[name] += time.thread_time() - c0
    for name, times in latencies.items():
        out[f"{name}_finds_per_s"] = len(times) / sum(times)
        out[f"{name}_finds_per_cpu_s"] = len(times) / cpu[name]
        out[f"{name}_p50_us"] = statistics.median(times) * 1e6
    return out


def _run_worker(args: list[str], pythonpath: Path) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(pythonpath))
    done = subprocess.run(
        [sys.executable, __file__, "--worker", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=6 * 3600,
    )
    if done.returncode != 0:
        raise SystemExit(f"worker {args} failed:\n{done.stderr}")
    result: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
    return result


def _extract(rev: str, into: Path) -> Path:
    """The ``kbproto`` package of git revision ``rev``, extracted under ``into``."""
    archive = into / "base.tar"
    with open(archive, "wb") as out:
        subprocess.run(["git", "archive", rev, "kbproto"], cwd=ROOT, stdout=out, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory-ids", default="1000000,10000000")
    parser.add_argument("--find-ids", type=int, default=10_000_000)
    parser.add_argument("--small-ids", type=int, default=1000)
    parser.add_argument("--finds", type=int, default=20_000)
    parser.add_argument("--baseline-rev", default=None)
    parser.add_argument("--baseline-ids", type=int, default=1_000_000)
    parser.add_argument("--children", default="hub,share", help="memory part: child kinds")
    parser.add_argument("--parts", default="memory,finds")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, *rest = args.worker
        if kind == "memory":
            result = worker_memory(int(rest[0]), rest[1] == "hub")
        else:
            result = worker_finds(int(rest[0]), int(rest[1]), int(rest[2]), int(rest[3]))
        print(json.dumps(result))
        return

    parts = args.parts.split(",")
    if "memory" in parts:
        _memory(args)
    if "finds" in parts:
        _finds(args)


def _memory(args: argparse.Namespace) -> None:
    print("## Hub index memory per content id (RSS growth of a child process)\n")
    print("| child | content ids | code | bytes per id | ids fed per CPU s |")
    print("|---|---|---|---|---|")
    sizes = [int(x) for x in args.memory_ids.split(",") if x]
    with tempfile.TemporaryDirectory() as scratch:
        base = _extract(args.baseline_rev, Path(scratch)) if args.baseline_rev else None
        for child in args.children.split(","):
            for n in sizes:
                new = _run_worker(["memory", str(n), child], ROOT)
                print(
                    f"| {child} | {n:,} | this tree | {new['bytes_per_id']:.1f} |"
                    f" {new['ids_per_s']:,.0f} |"
                )
                if base is not None and n == args.baseline_ids:
                    old = _run_worker(["memory", str(n), child], base)
                    print(
                        f"| {child} | {n:,} | {args.baseline_rev} | {old['bytes_per_id']:.1f} |"
                        f" {old['ids_per_s']:,.0f} |"
                    )
                    print(
                        f"| {child} | {n:,} | memory ratio new/base |"
                        f" {new['bytes_per_id'] / old['bytes_per_id']:.2f} |"
                        f" feed ratio {new['ids_per_s'] / old['ids_per_s']:.2f} |"
                    )


def _finds(args: argparse.Namespace) -> None:
    print("\n## Finds at a hub holding many ids vs few (ids of a direct share)\n")
    print(
        "| content ids held | finds/s | p50 µs | finds per CPU s (with checks) |"
        " RSS growth per id | ids fed per CPU s |"
    )
    print("|---|---|---|---|---|---|")
    r = _run_worker(["finds", str(args.find_ids), str(args.small_ids), str(args.finds), "1"], ROOT)
    for name in ("small", "big"):
        print(
            f"| {r[name + '_n']:,.0f} | {r[name + '_finds_per_s']:,.0f} |"
            f" {r[name + '_p50_us']:.1f} | {r[name + '_finds_per_cpu_s']:,.0f} |"
            f" {r[name + '_bytes_per_id']:.1f} |"
            f" {r[name + '_ids_per_s']:,.0f} |"
        )
    print(
        f"\nfinds/s ratio {args.find_ids:,} vs {args.small_ids:,}:"
        f" {r['big_finds_per_s'] / r['small_finds_per_s']:.2f};"
        f" p50 ratio (small/big, higher is better): {r['small_p50_us'] / r['big_p50_us']:.2f};"
        f" per CPU s ratio: {r['big_finds_per_cpu_s'] / r['small_finds_per_cpu_s']:.2f}"
    )


if __name__ == "__main__":
    main()
