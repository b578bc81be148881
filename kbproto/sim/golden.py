"""The pinned scenario: two hubs, three shares and one lookup, every message whole.

Its trace is kept in ``tests/sim/golden/`` (so a protocol change shows up as a readable
diff) and rendered, with each message as the JSON that went on the wire, into the
worked trace of ``docs/protocol.md`` by ``scripts/make_protocol_trace.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kbproto.codec import encode
from kbproto.config import Timeouts
from kbproto.messages import Message
from kbproto.sim.apps import sha1_hex
from kbproto.sim.faults import FaultPlan
from kbproto.sim.network import SimLink, SimNetwork
from kbproto.sim.topology import NodeSpec, Topology, build_world

__all__ = ("GoldenRun", "WireFrame", "golden_run")

#: The tree: h0 is the root hub, h1 a hub below it; s0 and s1 join h1, s2 joins h0.
_TOPOLOGY = Topology(
    (
        NodeSpec(name="h0", kind="hub", parent=None, start_at=0.0),
        NodeSpec(name="h1", kind="hub", parent="h0", start_at=0.05),
        NodeSpec(name="s0", kind="share", parent="h1", start_at=0.1),
        NodeSpec(name="s1", kind="share", parent="h1", start_at=0.15),
        NodeSpec(name="s2", kind="share", parent="h0", start_at=0.2),
    )
)
#: "alpha" is held by s0 (below h1) and s2 (below h0): the root's lookup finds both.
_FILES = {
    "s0": {"data/a.txt": b"alpha", "data/b.txt": b"beta"},
    "s1": {"c.txt": b"gamma"},
    "s2": {"copy-of-a.txt": b"alpha"},
}


@dataclass(frozen=True)
class WireFrame:
    """One frame a node sent, as it went on the wire.

    Attributes:
        line: the index of its ``tx`` line in the trace.
        sender: the sending node's name.
        receiver: the receiving node's name.
        frame: the whole frame, header included.
    """

    line: int
    sender: str
    receiver: str
    frame: bytes


@dataclass(frozen=True)
class GoldenRun:
    """What the pinned scenario did.

    Attributes:
        lines: every trace line.
        frames: every frame sent, in order.
        names: node name by node id.
        found: the names of the shares the root's lookup found.
    """

    lines: list[str]
    frames: list[WireFrame]
    names: dict[str, str]
    found: list[str]


def golden_run() -> GoldenRun:
    """Run the pinned scenario (the same run, byte for byte, every time)."""
    net = SimNetwork(3240, FaultPlan(whole_chance=1.0), keep_trace=True)
    frames: list[WireFrame] = []

    def keep(end: SimLink, message: Message) -> None:
        # Observers run right after the message's ``tx`` line is added.
        frames.append(WireFrame(net.trace.count - 1, end.node, end.peer.node, encode(message)))

    observers: list[Callable[[SimLink, Message], None]] = net.frame_observers
    observers.append(keep)
    world = build_world(net, _TOPOLOGY, _FILES, timeouts=Timeouts())
    world.install_invariants()
    net.run_until(lambda: world.all_joined() and world.indexes_converged(), timeout=5)
    record = world.apps["h0"].find(world.nodes["h0"], sha1_hex(b"alpha"))
    net.run_until(lambda: record.done, timeout=5)
    names = {str(node_id): name for name, node_id in world.ids.items()}
    return GoldenRun(net.trace.lines, frames, names, [names[i] for i in record.share_ids])
