"""Simulator throughput, a network at scale, and hub index memory (not part of the test run).

Part 1, simulator throughput: a large network of real cores (``kbproto.sim.tree``:
hubs 3 levels deep, many shares) joins, syncs its indexes, answers a batch of finds
and proxied downloads, then idles on heartbeats. We report simulated steps, core
events and delivered pieces per wall-clock second, with the per-step invariants on
(what the tests run) and off, and the trace digest so runs can be compared. Each run
is a child process; with ``--also-code DIR`` the same scenario also runs on the
kbproto in DIR (e.g. ``git archive main | tar -x -C DIR``), interleaved with this
code's runs (``--rounds``), and the steps/s ratios are printed. Equal digests mean
both codes took exactly the same steps.

Part 2, the scale network (``--parts scale``; ``kbproto.sim.scale``): by default
10,000 shares holding 1,000,000 distinct content ids under a full hub tree 4 levels
deep (fanout 4, 341 hubs) joins until every index has converged, then answers finds
and downloads at random hubs, each checked against the oracle; invariants on. We
report wall time and steps/s per phase and the process's peak RSS.

Part 3, hub index memory: one ``HubCore`` is fed a joined child's index of N content
ids (``ShareIndexUpdate`` batches from a share child: sha1 + path + size; or
``HubIndexUpdate`` batches from a child hub: sha1 only), straight through
``receive_data`` as a real parent would get it. Memory is the ``tracemalloc`` growth
across the feed (after a GC), divided by N; the RSS growth is printed beside it.

Usage: python benchmarks/bench_sim.py [--hubs 85] [--shares 2000] [--ids 1000000]
       [--rounds 1] [--also-code DIR] [--parts sim,memory]
       [--scale-shares 10000] [--scale-ids 1000000] [--scale-depth 4]
Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

from kbproto.codec import decode, encode
from kbproto.config import HubConfig, Limits
from kbproto.framing import FrameBuffer
from kbproto.hub import HubCore
from kbproto.ids import LinkId, SeededIdSource
from kbproto.messages import (
    Challenge,
    HubIndexUpdate,
    NodeInfo,
    Register,
    ShareIndexUpdate,
)
from kbproto.placement import sign_placement
from kbproto.pump import drain
from kbproto.sim import FaultPlan, SimNetwork, build_world, sha1_hex, tree
from kbproto.sim.identity import SimSigner, SimVerifier, sim_node_id


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def simulate(hubs: int, shares: int, *, invariants: bool, seed: int = 1) -> dict[str, float]:
    """Run the big network once; return counters and wall time per phase."""
    rng = random.Random(seed)
    topology = tree(3, 4, hubs=hubs, shares=shares, stagger=0.002)
    pool = [f"content {i}".encode() for i in range(500)]
    files = {
        s: {f"{s}/{j}.bin": rng.choice(pool) for j in range(3)} | {f"{s}/own": s.encode()}
        for s in topology.shares
    }
    files[topology.shares[-1]]["big.bin"] = rng.randbytes(256 * 1024)
    net = SimNetwork(seed, FaultPlan(max_pieces=4), trace_frames=False, check_every_step=invariants)
    world = build_world(net, topology, files, limits=Limits(stream_window=65536))
    if invariants:
        world.install_invariants()
    t0, cpu0 = time.perf_counter(), time.process_time()
    net.run_until(lambda: world.all_joined() and world.indexes_converged(), 600, poll=256)
    t1 = time.perf_counter()
    steps_join, events_join = net.steps, net.events
    records = []
    for hub in topology.hubs:
        app, node = world.apps[hub], world.nodes[hub]
        records += [app.find(node, sha1_hex(rng.choice(pool))) for _ in range(5)]
    last = topology.shares[-1]
    target = world.ids[last]
    downloads = [
        world.apps[h].download(world.nodes[h], target, f"/{target}/download/big.bin")
        for h in topology.hubs[:10]
    ]
    net.run_until(lambda: all(r.done for r in records) and all(d.done for d in downloads), 120)
    assert all(len(d.body) == 256 * 1024 for d in downloads)
    t2 = time.perf_counter()
    steps_work = net.steps
    net.run_for(120)
    t3, cpu3 = time.perf_counter(), time.process_time()
    return {
        "nodes": len(topology.nodes),
        "steps": net.steps,
        "events": net.events,
        "deliveries": net.deliveries,
        "wall": t3 - t0,
        "cpu": cpu3 - cpu0,
        "join_wall": t1 - t0,
        "join_steps": steps_join,
        "join_events": events_join,
        "work_wall": t2 - t1,
        "work_steps": steps_work - steps_join,
        "idle_wall": t3 - t2,
        "idle_steps": net.steps - steps_work,
        "sim_seconds": net.now,
        "digest": int(net.trace.digest()[:8], 16),
    }


def _joined_hub(child_is_hub: bool) -> HubCore:
    limits = Limits(
        index_budget=50_000_000, open_child_quota=50_000_000, index_batch_bytes=256 * 1024
    )
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


def index_memory(n: int, *, child_is_hub: bool, batch: int = 2000) -> dict[str, float]:
    """Feed ``n`` content ids from one child; return bytes per id and timings."""
    hub = _joined_hub(child_is_hub)
    gc.collect()
    rss0 = _rss_mib()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    for seq, start in enumerate(range(0, n, batch)):
        ids = [
            hashlib.sha1(i.to_bytes(8, "big")).hexdigest()
            for i in range(start, min(n, start + batch))
        ]
        message: ShareIndexUpdate | HubIndexUpdate
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
            put = tuple(
                (sha1, f"data/run{i // 1000}/file{i}.dat", 1000 + i)
                for i, sha1 in enumerate(ids, start)
            )
            message = ShareIndexUpdate(seq=seq, reset=seq == 0, put=put, drop=())
        hub.receive_data(LinkId(1), encode(message), 1.0)
        drain(hub)
    elapsed = time.perf_counter() - t0
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert hub.content_count() == n, hub.content_count()
    return {
        "n": n,
        "bytes_per_id": grown / n,
        "rss_growth_mib": _rss_mib() - rss0,
        "ids_per_s": n / elapsed,
    }


ROOT = Path(__file__).resolve().parent.parent


def _child_simulate(code: Path, hubs: int, shares: int, *, invariants: bool) -> dict[str, float]:
    """``simulate`` in a child process whose ``kbproto`` is the one in ``code``."""
    env = dict(os.environ, PYTHONPATH=str(code))
    argv = [sys.executable, __file__, "--child", "on" if invariants else "off"]
    argv += ["--hubs", str(hubs), "--shares", str(shares)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=3600, check=False)
    if done.returncode != 0:
        sys.exit(f"bench_sim: the run on the code in {code} failed:\n{done.stderr.strip()}")
    result: dict[str, float] = json.loads(done.stdout)
    return result


def simulator_part(args: argparse.Namespace) -> None:
    """Part 1: each code, invariants on and off, ``--rounds`` interleaved rounds."""
    codes = {"this code": ROOT}
    for other in args.also_code:
        codes[f"code in {other}"] = other.resolve()
    runs: dict[tuple[str, bool], list[dict[str, float]]] = {}
    for _round in range(args.rounds):
        for invariants in (True, False):
            for label, code in codes.items():
                result = _child_simulate(code, args.hubs, args.shares, invariants=invariants)
                runs.setdefault((label, invariants), []).append(result)
    print("## Simulator throughput\n")
    print(
        "| code | per-step invariants | nodes | scheduler events (steps) | app events |"
        " pieces delivered | wall s | steps/s | CPU s | steps per CPU s | join: steps/s |"
        " finds+downloads: steps/s | heartbeats: steps/s | digest |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    rates: dict[tuple[str, bool], float] = {}
    cpu_rates: dict[tuple[str, bool], float] = {}
    for (label, invariants), results in runs.items():
        # The median round by wall time (each round is one whole run).
        r = sorted(results, key=lambda one: one["wall"])[len(results) // 2]
        rates[label, invariants] = statistics.median(one["steps"] / one["wall"] for one in results)
        cpu_rates[label, invariants] = statistics.median(
            one["steps"] / one["cpu"] for one in results
        )
        print(
            f"| {label} | {'on' if invariants else 'off'} | {r['nodes']:.0f} | {r['steps']:.0f} |"
            f" {r['events']:.0f} | {r['deliveries']:.0f} | {r['wall']:.1f} |"
            f" {rates[label, invariants]:,.0f} | {r['cpu']:.1f} |"
            f" {cpu_rates[label, invariants]:,.0f} |"
            f" {r['join_steps'] / r['join_wall']:,.0f} | {r['work_steps'] / r['work_wall']:,.0f} |"
            f" {r['idle_steps'] / r['idle_wall']:,.0f} | {r['digest']:08x} |"
        )
    print(f"\n(simulated time per run: {r['sim_seconds']:.0f} s; {args.rounds} round(s), median)\n")
    for label in list(codes)[1:]:
        for invariants in (True, False):
            same = {one["digest"] for one in runs[label, invariants]} == {
                one["digest"] for one in runs["this code", invariants]
            }
            print(
                f"- steps/s ratio this code / {label}, invariants {'on' if invariants else 'off'}:"
                f" {rates['this code', invariants] / rates[label, invariants]:.2f}x by wall time,"
                f" {cpu_rates['this code', invariants] / cpu_rates[label, invariants]:.2f}x"
                f" by CPU time ({'same' if same else 'DIFFERENT'} trace digest)"
            )
    if len(codes) > 1:
        print()


def scale_part(args: argparse.Namespace) -> None:
    """Part 2: the scale network (``kbproto.sim.scale``), invariants on."""
    from kbproto.sim.scale import ScaleSpec, check_finds, join, scale_world

    spec = ScaleSpec(
        shares=args.scale_shares,
        ids=args.scale_ids,
        depth=args.scale_depth,
        fanout=args.scale_fanout,
    )
    # Wall and CPU time per phase (CPU time is the figure to trust on a shared machine).
    t0, c0 = time.perf_counter(), time.process_time()
    world = scale_world(spec)
    t1, c1 = time.perf_counter(), time.process_time()
    join(world)
    t2, c2 = time.perf_counter(), time.process_time()
    join_steps = world.network.steps
    checked = check_finds(world, spec)
    t3, c3 = time.perf_counter(), time.process_time()
    net = world.network
    assert checked.finds_right == checked.finds, checked
    assert checked.downloads_right == checked.downloads, checked
    assert world.hub("h0").content_count() == spec.ids
    print("## Simulator at scale\n")
    print(
        "| shares | content ids | hubs (depth, fanout) | build: wall s, CPU s |"
        " join + converge: wall s, CPU s | steps | steps per CPU s |"
        " finds + downloads: wall s, CPU s | steps | right | peak RSS MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {spec.shares:,} | {spec.ids:,} | {spec.hubs} ({spec.depth}, {spec.fanout}) |"
        f" {t1 - t0:.1f}, {c1 - c0:.1f} | {t2 - t1:.1f}, {c2 - c1:.1f} | {join_steps:,} |"
        f" {join_steps / (c2 - c1):,.0f} | {t3 - t2:.1f}, {c3 - c2:.1f} |"
        f" {net.steps - join_steps:,} |"
        f" {checked.finds_right}/{checked.finds} finds,"
        f" {checked.downloads_right}/{checked.downloads} downloads | {_rss_mib():.0f} |"
    )
    print(f"\n(simulated time: {net.now:.0f} s; trace digest {net.trace.digest()[:8]})\n")


def memory_part(args: argparse.Namespace) -> None:
    """Part 3: hub index memory per content id, fed by a share child and a hub child."""
    print("## Hub index memory\n")
    print("| child | content ids | bytes per id (tracemalloc) | RSS growth MiB | ids/s fed |")
    print("|---|---|---|---|---|")
    for child_is_hub in (False, True):
        m = index_memory(args.ids, child_is_hub=child_is_hub)
        print(
            f"| {'hub (sha1 only)' if child_is_hub else 'share (sha1, path, size)'} |"
            f" {m['n']:,.0f} | {m['bytes_per_id']:.0f} | {m['rss_growth_mib']:.0f} |"
            f" {m['ids_per_s']:,.0f} |"
        )


PARTS = {"sim": simulator_part, "scale": scale_part, "memory": memory_part}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hubs", type=int, default=85, help="part 1: hubs (22 to 85)")
    parser.add_argument("--shares", type=int, default=2000, help="part 1: shares")
    parser.add_argument("--rounds", type=int, default=1, help="part 1: runs per code")
    parser.add_argument(
        "--also-code",
        type=Path,
        action="append",
        default=[],
        help="part 1: also run the scenario on the kbproto in this directory"
        " (repeatable; e.g. a git archive of main)",
    )
    parser.add_argument("--scale-shares", type=int, default=10_000)
    parser.add_argument("--scale-ids", type=int, default=1_000_000)
    parser.add_argument("--scale-depth", type=int, default=4)
    parser.add_argument("--scale-fanout", type=int, default=4)
    parser.add_argument("--ids", type=int, default=1_000_000, help="part 3: content ids fed")
    parser.add_argument(
        "--parts", default="sim,memory", help=f"comma-separated, from {','.join(PARTS)}"
    )
    parser.add_argument("--child", choices=["on", "off"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 22 <= args.hubs <= 85:
        parser.error("--hubs must be 22 to 85: the network is a tree 3 levels deep, fanout 4")
    for name in ("shares", "rounds", "ids", "scale_shares", "scale_fanout"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.scale_depth < 0 or args.scale_ids < args.scale_shares:
        parser.error("--scale-depth must be >= 0 and --scale-ids at least --scale-shares")
    if args.child is not None:
        # A child run of part 1: one ``simulate``, as JSON on stdout.
        result = simulate(args.hubs, args.shares, invariants=args.child == "on")
        print(json.dumps(result))
        return
    parts = args.parts.split(",")
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown --parts {','.join(sorted(unknown))} (from {','.join(PARTS)})")
    for part in parts:
        PARTS[part](args)


if __name__ == "__main__":
    main()
