"""A network at scale: thousands of shares, a million content ids, a deep hub tree.

Strategy
--------
Issue 17 asks for a 10,000-share, 1,000,000-id, depth-4 network in CI-friendly time.
``scale_world`` builds it from a ``ScaleSpec``: a full ``tree`` of hubs (``fanout``
children per hub, ``depth`` hub levels below the root), shares spread round-robin
over every hub, and ``ids // shares`` files per share (the first ``ids % shares``
shares get one more) whose contents are all distinct, so the root's index ends up
holding exactly ``ids`` content ids and every hub holds the union of its subtree.
Files are a few bytes each: the memory and the time go where the question is, into
the cores' indexes and the messages that fill them. The budgets in ``Limits`` are
raised to fit ``ids``, and chunking is light (``LIGHT_CHUNKING``): what this network
tests is index sync and routing, and every piece is a step.

``join`` runs until every node is joined and every index has converged (checked with
``SimWorld.indexes_converged``, which is cheap to poll at this size), and
``check_finds`` asks finds at random hubs for random ids, and downloads random files
through the whole tree, comparing each answer with the world's oracle. Everything is
seeded by ``ScaleSpec.seed``; nothing here reads a clock, so a caller that wants
rates times the phases itself (``benchmarks/bench_sim.py --scale``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from kbproto.config import Limits
from kbproto.sim.apps import sha1_hex
from kbproto.sim.faults import FaultPlan
from kbproto.sim.network import SimNetwork
from kbproto.sim.topology import SimWorld, Topology, build_world, tree

__all__ = ("LIGHT_CHUNKING", "ScaleChecked", "ScaleSpec", "check_finds", "join", "scale_world")

#: Whole transmits most of the time, at most 3 pieces otherwise.
LIGHT_CHUNKING = FaultPlan(max_pieces=3, whole_chance=0.7, single_byte_chance=0.2)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaleSpec:
    """The size of a scale network.

    Attributes:
        shares: how many shares.
        ids: distinct content ids over all shares (at least one per share).
        depth: hub levels below the root.
        fanout: child hubs per hub (the hub tree is full: ``sum(fanout**k)`` hubs).
        seed: fixes the network's choices and which finds are asked.
    """

    shares: int = 10_000
    ids: int = 1_000_000
    depth: int = 4
    fanout: int = 4
    seed: int = 1

    def __post_init__(self) -> None:
        if self.shares < 1 or self.depth < 0 or self.fanout < 1:
            raise ValueError("a scale network needs shares >= 1, depth >= 0 and fanout >= 1")
        if self.ids < self.shares:
            raise ValueError(f"ids ({self.ids}) must be at least shares ({self.shares})")

    @property
    def hubs(self) -> int:
        """Hubs in the full tree."""
        return sum(self.fanout**level for level in range(self.depth + 1))

    def topology(self) -> Topology:
        """The hub tree with the shares spread over every hub."""
        return tree(self.depth, self.fanout, shares=self.shares, stagger=0.0005)

    def files(self, share: str) -> dict[str, bytes]:
        """The files of share ``share`` (named ``s<n>``): distinct small contents."""
        index = int(share[1:])
        count = self.ids // self.shares + (index < self.ids % self.shares)
        return {f"d/{j}.bin": b"%d/%d" % (index, j) for j in range(count)}

    def limits(self) -> Limits:
        """Default limits with index budgets that fit ``ids`` everywhere (twice their
        cost: an entry here is well under 128 bytes, ``kbproto.budget``)."""
        default = Limits()
        return Limits(
            index_budget=max(default.index_budget, 256 * self.ids),
            open_child_quota=max(default.open_child_quota, 256 * self.ids),
        )


def scale_world(spec: ScaleSpec) -> SimWorld:
    """Build (not run) the network of ``spec`` on a fresh ``SimNetwork``, with the
    per-step invariants (``kbproto.sim.invariants``) installed, as in the tests."""
    network = SimNetwork(spec.seed, LIGHT_CHUNKING, trace_frames=False)
    world = build_world(network, spec.topology(), spec.files, limits=spec.limits())
    world.install_invariants()
    return world


def join(world: SimWorld, *, timeout: float = 3600.0) -> None:
    """Run until every node is joined and every hub's index matches its subtree.

    Raises:
        SimFailure: not converged within ``timeout`` simulated seconds.
    """
    world.network.run_until(
        lambda: world.all_joined() and world.indexes_converged(),
        timeout,
        poll=1024,
        max_steps=100_000_000,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaleChecked:
    """What ``check_finds`` asked and how many answers matched the oracle."""

    finds: int
    finds_right: int
    downloads: int
    downloads_right: int


def check_finds(
    world: SimWorld, spec: ScaleSpec, *, finds: int = 50, downloads: int = 5
) -> ScaleChecked:
    """Ask ``finds`` finds and ``downloads`` downloads at random hubs, all at once.

    Each find is for the content of a random file of a random share; each download
    fetches such a file from a random hub, proxied through the tree.

    Raises:
        SimFailure: they do not all finish within 120 simulated seconds.
    """
    rng = random.Random(f"{spec.seed}/scale-finds")
    topology = world.topology
    hubs, shares = topology.hubs, topology.shares

    def random_file() -> tuple[str, str, bytes]:
        share = rng.choice(shares)
        path, data = rng.choice(list(world.store(share).files.items()))
        return share, path, data

    asked = []
    for _ in range(finds):
        hub = rng.choice(hubs)
        _share, _path, data = random_file()
        asked.append((hub, world.apps[hub].find(world.nodes[hub], sha1_hex(data))))
    fetched = []
    for _ in range(downloads):
        hub = rng.choice(hubs)
        share, path, data = random_file()
        target = world.ids[share]
        url = f"/{target}/download/{path}"
        fetched.append((data, world.apps[hub].download(world.nodes[hub], target, url)))
    world.network.run_until(
        lambda: all(r.done for _h, r in asked) and all(r.done for _d, r in fetched), 120
    )
    finds_right = sum(
        record.share_ids == world.expected_find(hub, record.sha1) for hub, record in asked
    )
    downloads_right = sum(
        record.status == 200 and bytes(record.body) == data for data, record in fetched
    )
    return ScaleChecked(
        finds=finds, finds_right=finds_right, downloads=downloads, downloads_right=downloads_right
    )
