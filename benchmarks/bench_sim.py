"""Simulator throughput and hub index memory (not part of the test run).

Part 1, simulator throughput: a large network of real cores (``kbproto.sim.tree``:
hubs 3 levels deep, many shares) joins, syncs its indexes, answers a batch of finds
and proxied downloads, then idles on heartbeats. We report simulated steps, core
events and delivered pieces per wall-clock second, with the per-step invariants on
(what the tests run) and off, and the trace digest so runs can be compared.

Part 2, hub index memory: one ``HubCore`` is fed a joined child's index of N content
ids (``ShareIndexUpdate`` batches from a share child: sha1 + path + size; or
``HubIndexUpdate`` batches from a child hub: sha1 only), straight through
``receive_data`` as a real parent would get it. Memory is the ``tracemalloc`` growth
across the feed (after a GC), divided by N; the RSS growth is printed beside it.

Usage: python benchmarks/bench_sim.py [--hubs 85] [--shares 2000] [--ids 1000000]
Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import random
import resource
import time
import tracemalloc

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
    t0 = time.perf_counter()
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
    t3 = time.perf_counter()
    return {
        "nodes": len(topology.nodes),
        "steps": net.steps,
        "events": net.events,
        "deliveries": net.deliveries,
        "wall": t3 - t0,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hubs", type=int, default=85)
    parser.add_argument("--shares", type=int, default=2000)
    parser.add_argument("--ids", type=int, default=1_000_000)
    args = parser.parse_args()
    if args.hubs < 22:
        parser.error("--hubs must be at least 22: the network is a tree 3 levels deep, fanout 4")

    print("## Simulator throughput\n")
    print(
        "| per-step invariants | nodes | scheduler events (steps) | app events |"
        " pieces delivered | wall s | steps/s | join: steps/s | finds+downloads: steps/s |"
        " heartbeats: steps/s | digest |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for invariants in (True, False):
        r = simulate(args.hubs, args.shares, invariants=invariants)
        print(
            f"| {'on' if invariants else 'off'} | {r['nodes']:.0f} | {r['steps']:.0f} |"
            f" {r['events']:.0f} | {r['deliveries']:.0f} | {r['wall']:.1f} |"
            f" {r['steps'] / r['wall']:,.0f} |"
            f" {r['join_steps'] / r['join_wall']:,.0f} | {r['work_steps'] / r['work_wall']:,.0f} |"
            f" {r['idle_steps'] / r['idle_wall']:,.0f} | {r['digest']:08x} |"
        )
    print(f"\n(simulated time per run: {r['sim_seconds']:.0f} s)\n")
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


if __name__ == "__main__":
    main()
