"""Regenerate the committed seed corpora in ``fuzz/corpus/`` (deterministic).

Seeds are real traffic: every distinct message kind a small simulated network sends
(joins, index sync, finds, a proxied download with credits), as single frames for
the codec, as concatenated streams for the framing harness; hand-written scripts for
the hub harness that join valid children and then talk; and a few fault scripts for
the simulator harness. Run from the repository root: ``python fuzz/make_corpus.py``.
"""

from __future__ import annotations

import random
from pathlib import Path

from kbproto.codec import encode
from kbproto.config import Limits
from kbproto.framing import HEADER_SIZE
from kbproto.messages import PROTOCOL_VERSION, Message
from kbproto.sim import FaultPlan, SimLink, SimNetwork, build_world, chain

CORPUS = Path(__file__).resolve().parent / "corpus"


def _traffic() -> list[bytes]:
    net = SimNetwork(1, FaultPlan(whole_chance=1.0))
    world = build_world(
        net,
        chain(2, shares=2),
        {"s0": {"a.bin": bytes(range(256)) * 20}, "s1": {"b.txt": b"hello"}},
        limits=Limits(stream_window=1024, data_chunk=256),
    )
    frames: dict[str, bytes] = {}

    def keep(end: SimLink, message: Message) -> None:
        frames.setdefault(type(message).__name__, encode(message))

    net.frame_observers.append(keep)
    net.run_until(world.all_joined, timeout=10)
    s0 = world.ids["s0"]
    world.apps["h0"].find(world.nodes["h0"], "0" * 40)
    record = world.apps["h0"].download(world.nodes["h0"], s0, f"/{s0}/download/a.bin")
    net.run_until(lambda: record.done, timeout=30)
    net.run_for(25)
    return [frames[name] for name in sorted(frames)]


def main() -> None:
    """Write every corpus file (overwriting)."""
    frames = _traffic()
    for sub in ("codec", "framing", "hub", "sim"):
        (CORPUS / sub).mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        (CORPUS / "codec" / f"frame-{i:02d}").write_bytes(bytes([frame[1]]) + frame[HEADER_SIZE:])
    stream = b"".join(frames)
    (CORPUS / "framing" / "all-frames").write_bytes(b"\x03\x00" + stream)
    (CORPUS / "framing" / "all-frames-split").write_bytes(b"\x00\x04\x00\x05\x0f\x3f" + stream)
    (CORPUS / "framing" / "bad-version").write_bytes(b"\x00\x00\x09\x01\x00\x00\x00\x01x")
    (CORPUS / "framing" / "oversized").write_bytes(
        b"\x00\x00" + bytes([PROTOCOL_VERSION]) + b"\x01\xff\xff\xff\xff"
    )
    # Hub scripts: 0 = open link, 4 = valid join, 5 = message, 3 = time, 6 = command.
    # A join: link, child, hub?, stamp, max_streams, max_lookups, heartbeat (s).
    join_share = b"\x00" + b"\x04\x00\x01\x00\x07\x03\x03\x1e"
    join_hub = b"\x00" + b"\x04\x01\x02\x01\x09\x03\x03\x1e"
    index = b"\x05\x00\x01\x00\x40\x03\x01\x10\x02\x20\x00"
    find = b"\x05\x00\x01\x02\x03\x05"
    open_stream = b"\x05\x00\x01\x04\x01\x01\x10"
    # The child hub (child2) reports n0 under itself and n1 under n0 (each placement:
    # node, parent index, own key?, hub?, stamp), then n2 with a forged signature.
    placements = (
        b"\x05\x01\x01\x01\x40\x02"
        + b"\x00\x02\x01\x00\x02"
        + b"\x01\x04\x01\x01\x03"
        + b"\x00\x01\x05"
        + b"\x05\x01\x01\x01\x01\x01"
        + b"\x02\x02\x00\x00\x01"
        + b"\x00\x00"
    )
    scripts = {
        "join-share-index": join_share + index + b"\x03\x28",
        "join-two-find": join_share + join_hub + find + b"\x06\x00\x05" + b"\x03\xff",
        "join-open-stream": join_share + open_stream + b"\x06\x01\x01\x06\x02\x00\x03\xff",
        "garbage-after-join": join_share + b"\x01\x00\x10" + bytes(range(16)),
        "join-hub-placements": join_share + join_hub + placements + b"\x03\x28",
    }
    for name, script in scripts.items():
        (CORPUS / "hub" / name).write_bytes(script)
    rng = random.Random(5)
    for i in range(4):
        (CORPUS / "sim" / f"script-{i}").write_bytes(rng.randbytes(40 + 20 * i))
    (CORPUS / "sim" / "crash-and-partition").write_bytes(
        b"\x05\x03\x04\x02"
        + b"\x00\x01\x00\x00"
        + b"\x04\x02\x00"
        + b"\x0a\x00\x00\x3f"
        + b"\x01\x01\x00"
        + b"\x05\x00\x00"
        + b"\x09\x00\x07\x02"
    )


if __name__ == "__main__":
    main()
