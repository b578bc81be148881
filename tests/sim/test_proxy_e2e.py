"""Scenarios (c) and (d): proxied downloads through three hubs, and their failures.

(c) ``h0 <- h1 <- h2 <- s0``: a download asked at ``h0`` crosses three hubs to the
share, with hard random chunking (single bytes included), a stream window smaller
than the file and a client that returns credit late. It must deliver the exact
bytes (and the exact slice for a Range request running at the same time), while no
hop ever buffers more than the window for one stream (checked after every step by
``kbproto.sim.invariants``), no client holds more than the window uncredited, and no
link ever carries more than the windows of its open streams plus control traffic.

(d) Mid-download, a hub crashes (with EOF, or silently), or a link dies: the stream
fails at both ends (the origin sees ``StreamReset``, the share stops serving) and,
once things settle, no node holds any stream or find. A half-open link is caught by
heartbeats within the heartbeat timeout, on both sides, and fails the stream too.
"""

from __future__ import annotations

import random

import pytest

from kbproto.config import Limits
from kbproto.sim import Crash, FaultPlan, Restart, SimWorld, chain
from tests.sim.scenarios import SEED_PARAMS, TIMEOUTS, make_world, settle

TOPOLOGY = chain(3, shares=1)
HARD_CHUNKING = FaultPlan(max_pieces=16, whole_chance=0.1, single_byte_chance=0.5)


def _setup(
    seed: int,
    rng: random.Random,
    *,
    size: int,
    credit_delay: float,
    windows: tuple[int, ...] = (2048, 4096, 8192),
) -> tuple[SimWorld, bytes, Limits]:
    window = rng.choice(windows)
    limits = Limits(stream_window=window, data_chunk=min(1024, window // 2))
    data = rng.randbytes(size)
    files = {"s0": {"big.bin": data, "small.txt": b"tiny"}}
    world = make_world(
        seed, TOPOLOGY, files, plan=HARD_CHUNKING, limits=limits, credit_delay=credit_delay
    )
    settle(world)
    return world, data, limits


def _url(world: SimWorld, path: str) -> str:
    return f"/{world.ids['s0']}/download/{path}"


@pytest.mark.parametrize("seed", SEED_PARAMS)
def test_download_through_three_hubs_is_exact_and_bounded(seed: int) -> None:
    rng = random.Random(seed)
    size = rng.randint(20_000, 60_000)
    world, data, limits = _setup(seed, rng, size=size, credit_delay=rng.choice([0.0, 0.01, 0.03]))
    window = limits.stream_window
    assert size > 2 * window
    h0 = world.nodes["h0"]
    app = world.apps["h0"]
    whole = app.download(h0, world.ids["s0"], _url(world, "big.bin"))
    start = rng.randrange(0, size // 2)
    end = rng.randrange(start + 1, size)
    part = app.download(
        h0, world.ids["s0"], _url(world, "big.bin"), (("range", f"bytes={start}-{end}"),)
    )
    world.network.run_until(lambda: whole.done and part.done, timeout=120)
    assert whole.ended
    assert whole.status == 200
    assert bytes(whole.body) == data
    assert part.status == 206
    assert dict(part.headers)["content-range"] == f"bytes {start}-{end}/{size}"
    assert bytes(part.body) == data[start : end + 1]
    assert whole.max_uncredited <= window
    # The per-step bound (<= window buffered per stream per hop) was really exercised.
    assert world.step_check is not None
    assert 0 < world.step_check.max_buffered_seen <= window
    assert part.max_uncredited <= window
    # Two streams at most share a link: their windows plus frame headers and control.
    bound = 2 * (window + (window // limits.data_chunk + 1) * 10) + 2048
    for end_ in world.network.iter_links():
        assert end_.max_queued_bytes <= bound, (end_.node, end_.link_id, end_.max_queued_bytes)
    # Nothing left over anywhere (checked by the quiescence invariants).
    world.network.run_until_quiescent()
    assert world.apps["s0"].served == 2


@pytest.mark.parametrize("seed", range(10))
def test_unknown_path_and_missing_node_answer_cleanly(seed: int) -> None:
    rng = random.Random(seed)
    world, _data, _limits = _setup(seed, rng, size=5000, credit_delay=0.0)
    h0 = world.nodes["h0"]
    app = world.apps["h0"]
    missing = app.download(h0, world.ids["s0"], _url(world, "nope.bin"))
    nowhere = app.download(h0, "0123456789ab", "/0123456789ab/download/x")
    world.network.run_until(lambda: missing.done and nowhere.done, timeout=60)
    assert missing.status == 404
    assert missing.ended
    assert nowhere.reset_status == 404
    world.network.run_until_quiescent()


FAULTS = ("crash-h1", "silent-crash-h1", "kill-h1-h2", "kill-h2-s0", "kill-h0-h1")


@pytest.mark.parametrize("seed", SEED_PARAMS)
def test_killing_a_hub_or_link_mid_download_fails_the_stream_at_both_ends(seed: int) -> None:
    rng = random.Random(seed)
    fault = FAULTS[seed % len(FAULTS)]
    # Small windows: the share can be at most 4 windows (16 KiB) ahead of the client,
    # so at the cut it still has bytes to send and must hear of the failure.
    world, data, _limits = _setup(seed, rng, size=40_000, credit_delay=0.05, windows=(2048, 4096))
    net = world.network
    h0 = world.nodes["h0"]
    record = world.apps["h0"].download(h0, world.ids["s0"], _url(world, "big.bin"))
    cut = rng.randint(1, len(data) // 4)
    net.run_until(lambda: len(record.body) >= cut, timeout=60)
    assert not record.done
    share_app = world.apps["s0"]
    assert share_app.serving  # the share is mid-way through serving it
    if fault == "crash-h1":
        net.apply_fault(Crash(node="h1"))
    elif fault == "silent-crash-h1":
        net.apply_fault(Crash(node="h1", silent=True))
    else:
        _kill, a, b = fault.split("-")
        assert net.kill_link(a, b) == 1
    # Both ends learn of it: within the detection delay, or the heartbeat timeout.
    limit = TIMEOUTS.heartbeat_timeout + TIMEOUTS.heartbeat_interval + 5
    net.run_until(lambda: record.done and not share_app.serving, timeout=limit)
    assert not record.ended
    assert record.reset_status in (502, 504), record.reset_reason
    assert bytes(record.body) == data[: len(record.body)]
    assert share_app.stream_resets, "the share was never told its stream failed"
    net.run_until_quiescent()  # check_no_leaks: no stream or find anywhere
    for name in ("h0", "h2", "s0"):
        core = world.core(name)
        assert core.open_streams() == 0
        assert core.pending_lookups() == 0
    if fault.endswith("h1") and "crash" in fault:
        net.apply_fault(Restart(node="h1"))
    # The network heals (redials with backoff) and the same download then succeeds.
    settle(world, timeout=200)
    again = world.apps["h0"].download(h0, world.ids["s0"], _url(world, "big.bin"))
    net.run_until(lambda: again.done, timeout=120)
    assert bytes(again.body) == data
    net.run_until_quiescent()


@pytest.mark.parametrize("seed", SEED_PARAMS)
def test_half_open_link_is_detected_by_heartbeats_and_fails_the_stream(seed: int) -> None:
    rng = random.Random(seed)
    world, data, _limits = _setup(seed, rng, size=40_000, credit_delay=0.05, windows=(2048, 4096))
    net = world.network
    a, b = rng.choice([("h0", "h1"), ("h1", "h2"), ("h2", "s0")])
    record = world.apps["h0"].download(world.nodes["h0"], world.ids["s0"], _url(world, "big.bin"))
    net.run_until(lambda: len(record.body) >= 1000, timeout=60)
    closed_before = {n: len(world.apps[n].closed) for n in (a, b)}
    assert net.half_open(a, b) == 1
    t0 = net.now
    limit = TIMEOUTS.heartbeat_timeout + TIMEOUTS.heartbeat_interval
    net.run_until(
        lambda: all(len(world.apps[n].closed) > closed_before[n] for n in (a, b)), timeout=limit
    )
    for name in (a, b):
        event = world.apps[name].closed[closed_before[name]]
        assert event.timed_out, (name, event)
    assert net.now - t0 >= TIMEOUTS.heartbeat_timeout - TIMEOUTS.heartbeat_interval
    net.run_until(lambda: record.done and not world.apps["s0"].serving, timeout=10)
    assert record.reset_status in (502, 504)
    assert bytes(record.body) == data[: len(record.body)]
    net.run_until_quiescent()
