"""Topology builders (star, chain, tree) and ``SimWorld``: a network of real cores.

Strategy
--------
A ``Topology`` is plain data: which nodes exist, which are hubs or shares, who is whose
parent, and when each starts (joins are staggered, hubs before their children, as
they would be brought up by hand). ``build_world`` turns one into running nodes on a
``SimNetwork``: each node gets a ``HubCore`` or ``ShareCore`` with a ``SimSigner`` of
its name (so node ids are stable across runs and restarts), a per-node seeded
``IdSource``, and a ``SimApp``. ``SimWorld`` then answers the questions scenario
tests ask: node ids, the subtree of a hub, which shares hold a content id, and the
*oracle* for what a find at a given hub must return.

The find oracle follows docs/protocol.md and ``kbproto.routing``: a node answers from its own
subtree when any share there holds the content, and only otherwise asks its parent,
which answers from *its* subtree. So a find at hub H returns exactly the live, joined
holders in the subtree of the lowest ancestor-or-self of H whose subtree holds the
content (for the root: every holder in the network).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from kbproto.config import HubConfig, Limits, ShareConfig, Timeouts
from kbproto.hub import HubCore
from kbproto.ids import NodeId
from kbproto.share import ShareCore
from kbproto.sim import invariants
from kbproto.sim.apps import FileStore, SimApp
from kbproto.sim.identity import SimSigner, SimVerifier, sim_node_id
from kbproto.sim.invariants import StepCheck
from kbproto.sim.network import SimNetwork, SimNode

__all__ = ("NodeSpec", "SimWorld", "Topology", "build_world", "chain", "star", "tree")


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeSpec:
    """One node of a topology."""

    name: str
    kind: str
    parent: str | None
    start_at: float

    def __post_init__(self) -> None:
        if self.kind not in ("hub", "share"):
            raise ValueError(f"node kind must be 'hub' or 'share', not {self.kind!r}")
        if self.kind == "share" and self.parent is None:
            raise ValueError(f"share {self.name} needs a parent hub")


@dataclass(frozen=True)
class Topology:
    """Nodes in start order; every parent appears before its children."""

    nodes: tuple[NodeSpec, ...]

    def __post_init__(self) -> None:
        seen: dict[str, NodeSpec] = {}
        for spec in self.nodes:
            if spec.name in seen:
                raise ValueError(f"duplicate node {spec.name}")
            if spec.parent is not None:
                parent = seen.get(spec.parent)
                if parent is None or parent.kind != "hub":
                    raise ValueError(f"{spec.name}: parent {spec.parent} is not an earlier hub")
            seen[spec.name] = spec

    def spec(self, name: str) -> NodeSpec:
        """The spec of node ``name`` (KeyError if there is none)."""
        return self._index()[0][name]

    def _index(self) -> tuple[dict[str, NodeSpec], dict[str, list[str]]]:
        # Built once, lazily: the dataclass is frozen, so cache through object.__setattr__.
        cached: tuple[dict[str, NodeSpec], dict[str, list[str]]] | None = getattr(
            self, "_cache", None
        )
        if cached is None:
            specs = {s.name: s for s in self.nodes}
            children: dict[str, list[str]] = {s.name: [] for s in self.nodes}
            for s in self.nodes:
                if s.parent is not None:
                    children[s.parent].append(s.name)
            cached = (specs, children)
            object.__setattr__(self, "_cache", cached)
        return cached

    @property
    def hubs(self) -> list[str]:
        """Hub names in start order."""
        return [s.name for s in self.nodes if s.kind == "hub"]

    @property
    def shares(self) -> list[str]:
        """Share names in start order."""
        return [s.name for s in self.nodes if s.kind == "share"]

    def children(self, name: str) -> list[str]:
        """Direct children of ``name``."""
        return list(self._index()[1][name])

    def subtree(self, name: str) -> list[str]:
        """``name`` and everything below it, parents first."""
        children = self._index()[1]
        out = [name]
        for node in out:
            out.extend(children[node])
        return out

    def ancestors(self, name: str) -> list[str]:
        """``name``'s parent, grandparent... up to the root."""
        specs = self._index()[0]
        out: list[str] = []
        parent = specs[name].parent
        while parent is not None:
            out.append(parent)
            parent = specs[parent].parent
        return out

    def depth(self) -> int:
        """Hub-to-hub edges on the longest root-to-leaf hub path."""
        return max((len(self.ancestors(h)) for h in self.hubs), default=0)


def star(shares: int, *, stagger: float = 0.01) -> Topology:
    """One hub ``h0`` with ``shares`` shares ``s0``.. under it."""
    nodes = [NodeSpec(name="h0", kind="hub", parent=None, start_at=0.0)]
    nodes += [
        NodeSpec(name=f"s{i}", kind="share", parent="h0", start_at=0.1 + i * stagger)
        for i in range(shares)
    ]
    return Topology(tuple(nodes))


def chain(hubs: int, *, shares: int = 1, stagger: float = 0.05) -> Topology:
    """Hubs ``h0`` <- ``h1`` <- ... (each the child of the previous), shares under the last."""
    if hubs < 1:
        raise ValueError("a chain needs at least one hub")
    nodes = [
        NodeSpec(name=f"h{i}", kind="hub", parent=f"h{i - 1}" if i else None, start_at=i * stagger)
        for i in range(hubs)
    ]
    base = hubs * stagger
    nodes += [
        NodeSpec(name=f"s{i}", kind="share", parent=f"h{hubs - 1}", start_at=base + i * stagger)
        for i in range(shares)
    ]
    return Topology(tuple(nodes))


def tree(
    depth: int,
    fanout: int,
    *,
    hubs: int | None = None,
    shares_per_leaf: int = 0,
    shares: int = 0,
    stagger: float = 0.01,
) -> Topology:
    """A hub tree ``depth`` hub-edges deep, built breadth first, with shares.

    Args:
        depth: hub levels below the root (``depth=0`` is a lone root hub).
        fanout: child hubs per hub.
        hubs: stop adding hubs at this many (breadth first), if given; the tree must
            still reach ``depth``.
        shares_per_leaf: shares under every hub that has no child hub.
        shares: extra shares spread round-robin over *every* hub (so a find also
            meets shares sitting next to child hubs).
        stagger: seconds between consecutive starts.
    """
    if depth < 0 or fanout < 1:
        raise ValueError("depth must be >= 0 and fanout >= 1")
    names: list[tuple[str, str | None, int]] = [("h0", None, 0)]
    level_start = 0
    for level in range(1, depth + 1):
        parents = [n for n in names[level_start:] if n[2] == level - 1]
        level_start = len(names)
        for parent_name, _p, _l in parents:
            for _ in range(fanout):
                if hubs is not None and len(names) >= hubs:
                    break
                names.append((f"h{len(names)}", parent_name, level))
    if hubs is not None and len(names) != hubs:
        raise ValueError(f"depth {depth} and fanout {fanout} cannot hold {hubs} hubs")
    if max(level for _n, _p, level in names) != depth:
        raise ValueError(f"{hubs} hubs do not reach depth {depth}")
    t = 0.0
    nodes: list[NodeSpec] = []
    for name, parent, _level in names:
        nodes.append(NodeSpec(name=name, kind="hub", parent=parent, start_at=t))
        t += stagger
    hub_names = [n for n, _p, _l in names]
    has_child = {p for _n, p, _l in names if p is not None}
    count = 0
    for hub in hub_names:
        if hub not in has_child:
            for _ in range(shares_per_leaf):
                nodes.append(NodeSpec(name=f"s{count}", kind="share", parent=hub, start_at=t))
                count += 1
                t += stagger
    for i in range(shares):
        hub = hub_names[i % len(hub_names)]
        nodes.append(NodeSpec(name=f"s{count}", kind="share", parent=hub, start_at=t))
        count += 1
        t += stagger
    return Topology(tuple(nodes))


#: Stateless, so one verifier serves every hub.
_VERIFIER = SimVerifier()


def _address(name: str) -> str:
    return f"http://{name}.sim:3240"


@dataclass
class SimWorld:
    """A topology running on a network: nodes, apps, ids and the find oracle."""

    network: SimNetwork
    topology: Topology
    limits: Limits
    nodes: dict[str, SimNode] = field(default_factory=dict)
    apps: dict[str, SimApp] = field(default_factory=dict)
    ids: dict[str, NodeId] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    timeouts: Timeouts = field(default_factory=Timeouts)
    credit_delay: float = 0.0
    #: The per-step invariant check, once ``install_invariants`` ran.
    step_check: StepCheck | None = None
    _join_watch: tuple[Topology, tuple[tuple[SimNode, SimApp | None], ...]] | None = field(
        default=None, repr=False
    )
    _counts_cache: tuple[tuple[tuple[str, FileStore | None], ...], dict[str, int]] | None = field(
        default=None, repr=False
    )

    def add_node(self, spec: NodeSpec, files: Mapping[str, bytes] | None = None) -> SimNode:
        """Add one hub or share (its parent must already be in the world).

        Args:
            spec: name, kind, parent and start time (absolute; clamped to now).
            files: the share's files (path -> bytes); ignored for hubs.

        Raises:
            ValueError: a duplicate name, or a parent that is not a hub here.
        """
        self.topology = Topology((*self.topology.nodes, spec))
        return self._add(spec, files)

    def _add(self, spec: NodeSpec, files: Mapping[str, bytes] | None) -> SimNode:
        # The node alone; the caller keeps ``topology`` up to date.
        name = spec.name
        parent_url = _address(spec.parent) if spec.parent is not None else None
        limits, timeouts = self.limits, self.timeouts
        verifier = _VERIFIER
        if spec.kind == "hub":
            hub_config = HubConfig(
                name=name,
                listen_url=_address(name),
                parent_url=parent_url,
                limits=limits,
                timeouts=timeouts,
            )

            def make_hub(node: SimNode, config: HubConfig = hub_config) -> HubCore:
                return HubCore(
                    config,
                    signer=SimSigner(node.name),
                    verifier=verifier,
                    ids=node.id_source(),
                    trace=node.trace_sink,
                )

            app = SimApp(credit_delay=self.credit_delay)
            node = self.network.add_node(
                name, make_hub, app, address=_address(name), start_at=spec.start_at
            )
        else:
            share_config = ShareConfig(
                name=name,
                listen_url=_address(name),
                parent_url=parent_url,
                limits=limits,
                timeouts=timeouts,
            )

            def make_share(node: SimNode, config: ShareConfig = share_config) -> ShareCore:
                return ShareCore(
                    config, signer=SimSigner(node.name), ids=node.id_source(), trace=node.trace_sink
                )

            app = SimApp(FileStore(files or {}), credit_delay=self.credit_delay)
            node = self.network.add_node(
                name, make_share, app, address=_address(name), start_at=spec.start_at
            )
        self.nodes[name] = node
        self.apps[name] = app
        self.ids[name] = sim_node_id(name)
        self.names[self.ids[name]] = name
        return node

    def install_invariants(self) -> StepCheck:
        """Register ``kbproto.sim.invariants`` on the network with this world's limits."""
        self.step_check = invariants.install(self.network, self.limits)
        return self.step_check

    def core(self, name: str) -> HubCore | ShareCore:
        """The current core of ``name`` (AssertionError if it is not running)."""
        core = self.nodes[name].core
        assert isinstance(core, HubCore | ShareCore), f"{name} is not running"
        return core

    def hub(self, name: str) -> HubCore:
        """The current ``HubCore`` of hub ``name``."""
        core = self.core(name)
        assert isinstance(core, HubCore)
        return core

    def store(self, name: str) -> FileStore:
        """The file store of share ``name``."""
        store = self.apps[name].store
        assert store is not None
        return store

    def live(self, name: str) -> bool:
        """True if ``name`` runs and every hub from it to the root runs and is joined."""
        for node in [name, *self.topology.ancestors(name)]:
            sim = self.nodes[node]
            if not sim.alive:
                return False
            if self.topology.spec(node).parent is not None and not self.apps[node].joined:
                return False
        return True

    def all_joined(self) -> bool:
        """Every node with a parent is up and joined."""
        watch = self._join_watch
        if watch is None or watch[0] is not self.topology:
            # Each node with the app that must have joined (None for a root), looked
            # up once per topology: runs poll this between steps.
            pairs = tuple(
                (self.nodes[s.name], None if s.parent is None else self.apps[s.name])
                for s in self.topology.nodes
            )
            watch = self._join_watch = (self.topology, pairs)
        return all(node.alive and (app is None or app.joined) for node, app in watch[1])

    def holders(self, sha1: str, within: str | None = None) -> list[str]:
        """Sorted node ids of live, joined shares (under ``within``, if given) holding it."""
        names = self.topology.subtree(within) if within is not None else self.topology.shares
        return sorted(
            self.ids[n]
            for n in names
            if self.topology.spec(n).kind == "share" and self.live(n) and self.store(n).holds(sha1)
        )

    def expected_find(self, at: str, sha1: str) -> list[str]:
        """What a find for ``sha1`` at hub ``at`` must return (see the module docstring)."""
        for hub in [at, *self.topology.ancestors(at)]:
            found = self.holders(sha1, within=hub)
            if found:
                return found
            if not self.live(hub):
                return []
        return []

    def expected_content_count(self, hub: str) -> int:
        """Distinct content ids the live shares in ``hub``'s subtree hold."""
        ids: set[str] = set()
        for name in self.topology.subtree(hub):
            if self.topology.spec(name).kind == "share" and self.live(name):
                ids.update(self.store(name).sha1s())
        return len(ids)

    def indexes_converged(self) -> bool:
        """Every live node's reports are acknowledged, and every live hub's
        ``content_count`` and known node ids match its live subtree.

        Cheap while the network is still joining (one pass over the nodes); the
        expected counts are computed once per set of live shares and files, so a
        run can poll this on a network of thousands of shares and a million ids.
        """
        # ``live`` of every node in one pass (parents come before their children),
        # leaving at the first live node whose reports are not acknowledged yet.
        live: dict[str, bool] = {}
        nodes, apps = self.nodes, self.apps
        for spec in self.topology.nodes:
            name = spec.name
            if spec.parent is None:
                live[name] = nodes[name].alive
            else:
                live[name] = live[spec.parent] and nodes[name].alive and apps[name].joined
                if live[name] and not apps[name].synced:
                    return False
        counts = self._expected_counts(live)
        for hub_name, expected in counts.items():
            if self.hub(hub_name).content_count() != expected:
                return False
        for hub_name in counts:
            hub = self.hub(hub_name)
            if not all(
                hub.knows_node(self.ids[n]) for n in self.topology.subtree(hub_name) if live[n]
            ):
                return False
        return True

    def _expected_counts(self, live: dict[str, bool]) -> dict[str, int]:
        # ``expected_content_count`` of every live hub, cached on which shares are
        # live and which store each has (a store is never changed in place).
        key = tuple(
            (spec.name, self.apps[spec.name].store)
            for spec in self.topology.nodes
            if live[spec.name] and spec.kind == "share"
        )
        cached = self._counts_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        # Bottom up: a hub's ids are its shares' and its child hubs'. A node's set is
        # merged into its parent's (the smaller into the larger) and then dropped.
        ids: dict[str, set[str]] = {}
        counts: dict[str, int] = {}
        for spec in reversed(self.topology.nodes):
            name = spec.name
            if not live[name]:
                continue
            if spec.kind == "hub":
                mine = ids.pop(name, set())
                counts[name] = len(mine)
            else:
                mine = set(self.store(name).sha1s())
            if spec.parent is not None:
                above = ids.setdefault(spec.parent, mine)
                if above is not mine:
                    if len(above) < len(mine):
                        above, mine = mine, above
                        ids[spec.parent] = above
                    above |= mine
        self._counts_cache = (key, counts)
        return counts


def build_world(
    network: SimNetwork,
    topology: Topology,
    files: Mapping[str, Mapping[str, bytes]] | Callable[[str], Mapping[str, bytes]],
    *,
    limits: Limits | None = None,
    timeouts: Timeouts | None = None,
    credit_delay: float = 0.0,
) -> SimWorld:
    """Add every node of ``topology`` to ``network`` with real cores and ``SimApp``s.

    Args:
        network: the network to populate (nothing starts before the first step).
        topology: which nodes, parents and start times.
        files: each share's files (path -> bytes), by name or from a function.
        limits: limits for every core (default ``Limits()``).
        timeouts: timeouts for every core (default ``Timeouts()``).
        credit_delay: every app's client-side credit delay.
    """
    world = SimWorld(
        network=network,
        topology=Topology(()),
        limits=limits if limits is not None else Limits(),
        timeouts=timeouts if timeouts is not None else Timeouts(),
        credit_delay=credit_delay,
    )
    for spec in topology.nodes:
        share_files = (
            (files(spec.name) if callable(files) else files.get(spec.name, {}))
            if spec.kind == "share"
            else {}
        )
        # ``topology`` is already valid: set it once, not node by node (O(n) each).
        world._add(spec, share_files)
    world.topology = topology
    return world
