"""Global invariants of a simulated kbucket network.

Strategy
--------
Two kinds of checks, both using only the cores' public API and the network's own
link table:

* *per step* (``install``), on the nodes the step touched, so a run with hundreds of
  nodes stays cheap: no relay buffers more body bytes for one stream than the
  window it announced; open streams and pending finds stay under their limits and,
  when there are any, the core has a deadline armed (nothing can wait forever); the
  core's open links are exactly the links the driver holds for it (no link leaked or
  forgotten without a ``Hangup``); a node has at most one parent link. On the wire
  (``frame_observers``): stream numbers opened on a link only ever increase (a
  number is never reused on a link), and every ``Data`` frame fits the configured
  chunk.
* *at quiescence*: no stream, find or half-served response is left anywhere, every
  ``get_timer()`` is None or not in the past, and the parent links form a tree.

Each check raises ``AssertionError`` with a plain message; the network turns it into
a ``SimFailure`` carrying the seed and the trace tail.
"""

from __future__ import annotations

from kbproto.config import Limits
from kbproto.hub import HubCore
from kbproto.messages import Data, Message, Open
from kbproto.share import ShareCore
from kbproto.sim.apps import SimApp
from kbproto.sim.network import SimLink, SimNetwork, SimNode

__all__ = (
    "StepCheck",
    "check_all_nodes",
    "check_no_leaks",
    "check_timers_not_past",
    "check_tree",
    "install",
)


#: A tuple, not ``HubCore | ShareCore``: that builds a new union on every step.
_CORES = (HubCore, ShareCore)


def _check_node(node: SimNode, limits: Limits) -> int:
    core = node.core
    if not node.alive or not isinstance(core, _CORES):
        return 0
    streams = core.open_streams()
    lookups = core.pending_lookups()
    # No open stream buffers nothing: skip the walk over streams (the common case).
    buffered = core.max_buffered_bytes() if streams else 0
    assert buffered <= limits.stream_window, (
        f"{node.name} buffers {buffered} bytes for one stream (window {limits.stream_window})"
    )
    assert streams <= limits.max_open_streams + 1, f"{node.name}: {streams} open streams"
    assert lookups <= limits.max_pending_lookups, f"{node.name}: {lookups} pending finds"
    if streams or lookups:
        assert core.get_timer() is not None, (
            f"{node.name} has {streams} streams and {lookups} finds but no deadline"
        )
    core_links = core.link_ids()
    sim_links = node.links
    # One set comparison in C; the message (two sorts) only when it fails.
    assert sim_links.keys() == set(core_links), (
        f"{node.name}: core holds links {sorted(core_links)}, driver {sorted(sim_links)}"
    )
    # ``dialed_links`` counts the dialed ends in ``links`` (kept by the network as it
    # adds and removes them), so the common case costs no walk over the links.
    assert node.dialed_links <= 1, (
        f"{node.name} has {node.dialed_links} parent links:"
        f" {[end.link_id for end in node.links.values() if end.dialed]}"
    )
    return buffered


class StepCheck:
    """The per-step checks, on every node the last step touched.

    Args:
        limits: the ``Limits`` every core of the network was built with.
    """

    __name__ = "check_step"

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        #: The most body bytes any node was seen buffering for one stream (so a test
        #: can show the bound was actually approached, not vacuously true).
        self.max_buffered_seen = 0

    def __call__(self, network: SimNetwork) -> None:
        for node in network.touched:
            buffered = _check_node(node, self.limits)
            if buffered > self.max_buffered_seen:
                self.max_buffered_seen = buffered


def check_all_nodes(network: SimNetwork, limits: Limits) -> None:
    """The per-step checks on every node (not only the ones the last step touched)."""
    for node in network.nodes.values():
        _check_node(node, limits)


class _WireCheck:
    """Stream numbers only increase per link end; data frames fit the chunk limit."""

    def __init__(self, limits: Limits) -> None:
        self._chunk = limits.data_chunk
        self._last_open: dict[int, int] = {}

    def __call__(self, end: SimLink, message: Message) -> None:
        if isinstance(message, Open):
            last = self._last_open.get(end.serial, -1)
            assert message.stream > last, (
                f"stream number {message.stream} reused or going back (last {last})"
            )
            self._last_open[end.serial] = message.stream
        elif isinstance(message, Data):
            assert len(message.data) <= self._chunk, (
                f"data frame of {len(message.data)} bytes > {self._chunk}"
            )


def check_no_leaks(network: SimNetwork) -> None:
    """At quiescence: no open stream, pending find or half-served response anywhere."""
    for node in network.nodes.values():
        core = node.core
        if not node.alive or not isinstance(core, _CORES):
            continue
        assert core.open_streams() == 0, f"{node.name} still has {core.open_streams()} streams"
        assert core.pending_lookups() == 0, (
            f"{node.name} still has {core.pending_lookups()} pending finds"
        )
        app = node.app
        if isinstance(app, SimApp):
            assert not app.serving, f"{node.name}'s app is still serving {len(app.serving)}"


def check_timers_not_past(network: SimNetwork) -> None:
    """At quiescence: every ``get_timer()`` is None or not before the node's ``now``."""
    for node in network.nodes.values():
        core = node.core
        if node.alive and core is not None:
            timer = core.get_timer()
            # A slow node handles its timers ``slow`` seconds late, by design.
            assert timer is None or timer + node.slow >= node.now, (
                f"{node.name}'s timer {timer} is in the past (now {node.now})"
            )


def check_tree(network: SimNetwork) -> None:
    """The parent links form a forest: following parents never loops."""
    parent_of: dict[str, str] = {}
    for node in network.nodes.values():
        for end in node.links.values():
            if end.dialed and end.peer.open:
                parent_of[node.name] = end.peer.node
    for start in parent_of:
        seen = {start}
        current = start
        while current in parent_of:
            current = parent_of[current]
            assert current not in seen, f"parent links loop through {current}"
            seen.add(current)


def install(network: SimNetwork, limits: Limits, *, quiescent: bool = True) -> StepCheck:
    """Register the per-step, wire and (if ``quiescent``) quiescence checks.

    Args:
        network: the network to check.
        limits: the ``Limits`` every core was built with.
        quiescent: also register the checks ``run_until_quiescent`` runs.
    """
    step = StepCheck(limits)
    network.add_invariant(step)
    network.frame_observers.append(_WireCheck(limits))
    if quiescent:
        network.add_quiescent_check(check_no_leaks)
        network.add_quiescent_check(check_timers_not_past)
        network.add_quiescent_check(check_tree)
    return step
