"""Node ids below a hub: which child link leads to each, and on what proof.

Strategy
--------
A hub routes a request for a node id down the one child link whose subtree holds it.
A child hub can *say* anything, so an id is routable only when it rests on its owner's
signed ``Placement`` (``kbproto.placement``; docs/protocol.md §5, docs/security.md
§2), checked here with the hub's own ``Verifier``, never on a child's word:

* A direct child's own id rests on its join (its placement answered our challenge):
  it is routable through its link at once, whatever else claims it.
* Any other id a child reports comes with the node's placement, which names the hub
  the node joined. It is routable through that child's link only when its parent is
  itself routable through the *same* link: each id hangs on a chain of placements
  down to the direct child. A placement whose parent is not there (yet) waits,
  unrouted, in the child's *claims* and is routed the moment its parent is; when a
  parent stops being routable through the link, its waiting descendants stop too.
  So the order in which a child reports its subtree does not matter, and a genuine
  old placement replayed without its chain proves nothing.
* One link per id. Two placements of one node meet when it moved (or when a former
  parent replays an old one): the larger ``stamp`` wins, an equal or smaller one
  never displaces the one routed, and the loser is forgotten. A node that stopped
  being routable leaves its stamp in a bounded memory (``GONE_MEMORY``), so an older
  placement replayed while the node is away is still refused.
* A placement that fails its check (forged id, bad signature) is dropped and counted;
  past ``MAX_UNPROVEN_CLAIMS`` from one child, its link is closed.

Every id whose routing or placement changed is reported to ``on_node`` (the hub's own
upward sync then sends the new placement, or a drop); every claim costs index budget
bytes (``kbproto.budget.placement_cost``), released when it is forgotten.

Cascades walk explicit stacks, not recursion: a hostile child could chain 100,000
placements one below the other.
"""

from __future__ import annotations

from collections.abc import Callable

from kbproto.budget import IndexBudget, placement_cost
from kbproto.errors import LimitExceeded
from kbproto.messages import Placement

__all__ = ("GONE_MEMORY", "MAX_UNPROVEN_CLAIMS", "NodeTable")

#: Placements from one child that may fail their check before its link is closed. A
#: hub forwards only placements it checked itself, so a few failures mean two hubs
#: disagree about a key (one accepts an RSA size the other does not); a stream of them
#: is an attack, each costing us a signature check.
MAX_UNPROVEN_CLAIMS = 64
#: Node ids whose newest stamp is remembered once they are no longer routable (~150
#: bytes each), oldest forgotten first: for as long as it is remembered, an older
#: placement replayed by a former parent while the node is away is refused.
GONE_MEMORY = 65_536


class _Branch:
    """The node ids one direct child brought."""

    __slots__ = ("claims", "kids", "root", "root_placement", "routed", "unproven")

    def __init__(self, placement: Placement) -> None:
        #: The direct child's own id and the placement of its join.
        self.root = placement.node_id.encode()
        self.root_placement = placement
        #: Placements the child reported for its subtree, routed or waiting.
        self.claims: dict[bytes, Placement] = {}
        #: Parent id -> the ids in ``claims`` naming it (dicts as ordered sets).
        self.kids: dict[bytes, dict[bytes, None]] = {}
        #: Ids routed through this link, the child's own included.
        self.routed = 0
        #: Placements dropped for failing their check.
        self.unproven = 0

    def placement(self, key: bytes) -> Placement:
        """The placement this branch holds for ``key`` (its root or a claim)."""
        return self.root_placement if key == self.root else self.claims[key]


class NodeTable:
    """Proven node ids below a hub (see the module docstring).

    Args:
        on_node: called with a node id (ASCII bytes) whose routing or placement changed.
        on_refused: called with ``(link, placement, reason)`` for each dropped claim.
        check: why a placement proves nothing, or None (``VerifiedPlacements.check``).
        budget: charged for every claim held.
        max_claims: placements one child may report (routed and waiting together).
        gone_memory: node ids whose newest stamp is remembered once unroutable.
    """

    def __init__(
        self,
        on_node: Callable[[bytes], None],
        on_refused: Callable[[int, Placement, str], None],
        check: Callable[[Placement], str | None],
        budget: IndexBudget,
        *,
        max_claims: int,
        gone_memory: int = GONE_MEMORY,
    ) -> None:
        self._route: dict[bytes, int] = {}
        self._branches: dict[int, _Branch] = {}
        self._gone: dict[bytes, int] = {}
        self._on_node = on_node
        self._on_refused = on_refused
        self._check = check
        self._budget = budget
        self._max_claims = max_claims
        self._gone_memory = gone_memory

    # --- queries ----------------------------------------------------------------------

    def __len__(self) -> int:
        """Node ids routable below this hub."""
        return len(self._route)

    def keys(self) -> list[bytes]:
        """Snapshot of the routable node ids (ASCII bytes)."""
        return list(self._route)

    def route(self, node_id: str) -> int | None:
        """The child link toward ``node_id``, or None."""
        return self._route.get(node_id.encode())

    def reaches(self, link: int, node_id: str) -> bool:
        """True if ``node_id`` is routed through the child on ``link``."""
        return self._route.get(node_id.encode()) == link

    def placement(self, key: bytes) -> Placement | None:
        """The placement ``key`` is routed on, or None if it is not routable."""
        link = self._route.get(key)
        return self._branches[link].placement(key) if link is not None else None

    def proven(self, link: int) -> int:
        """Node ids routed through the child on ``link`` (itself included)."""
        return self._branches[link].routed

    def claims(self, link: int) -> int:
        """Placements held for the child on ``link``, routed or waiting."""
        return len(self._branches[link].claims)

    def unproven(self, link: int) -> int:
        """Placements from the child on ``link`` dropped for failing their check."""
        return self._branches[link].unproven

    # --- changes ----------------------------------------------------------------------

    def add_child(self, link: int, placement: Placement) -> None:
        """A child joined on ``link`` with ``placement`` (already checked at the join).

        Its id is routed through ``link`` at once: a fresh join outweighs any claim.
        """
        branch = self._branches[link] = _Branch(placement)
        key = branch.root
        holder = self._route.get(key)
        if holder is not None:
            self._displace(holder, key)
        self._gone.pop(key, None)
        self._route[key] = link
        branch.routed = 1
        self._on_node(key)

    def drop_child(self, link: int) -> None:
        """The child on ``link`` left: nothing is routed through it any more."""
        self.clear(link)
        branch = self._branches[link]
        self._unroute(link, branch.root)
        del self._branches[link]

    def clear(self, link: int) -> None:
        """Forget every placement the child on ``link`` reported (not its own)."""
        branch = self._branches[link]
        for key in list(branch.claims):
            self._drop(link, branch, key)

    def drop(self, link: int, node_id: str) -> None:
        """The child on ``link`` no longer reports ``node_id`` (a no-op if unknown)."""
        self._drop(link, self._branches[link], node_id.encode())

    def put(self, link: int, placement: Placement) -> None:
        """The child on ``link`` reports ``placement`` for a node of its subtree.

        Raises:
            LimitExceeded: the child crossed its index quota, the node's budget, its
                number of placements, or ``MAX_UNPROVEN_CLAIMS``.
        """
        branch = self._branches[link]
        key = placement.node_id.encode()
        if key == branch.root:
            return  # the child's own id rests on its join, not on what it reports
        old = branch.claims.get(key)
        if old is not None and old.stamp >= placement.stamp:
            return  # the same placement again, or an older one: the newer one stays
        reason = self._check(placement)
        if reason is not None:
            branch.unproven += 1
            self._on_refused(link, placement, reason)
            if branch.unproven > MAX_UNPROVEN_CLAIMS:
                raise LimitExceeded(
                    f"more than {MAX_UNPROVEN_CLAIMS} node ids reported without a valid placement",
                    "unproven_claims",
                )
            return
        if old is None and len(branch.claims) >= self._max_claims:
            raise LimitExceeded(
                f"a child hub reported more than {self._max_claims} node ids",
                "max_nodes_per_child",
            )
        cost = placement_cost(placement) - (placement_cost(old) if old is not None else 0)
        if cost > 0:
            self._budget.charge(link, cost, proven=branch.routed)
        else:
            self._budget.release(link, -cost)
        was_routed = self._route.get(key) == link
        if old is not None:
            self._unlink(branch, key, old)
        branch.claims[key] = placement
        branch.kids.setdefault(placement.parent.encode(), {})[key] = None
        if not was_routed:
            self._settle(link, key)
        elif self._route.get(placement.parent.encode()) == link:
            self._on_node(key)  # still routed here, on a newer placement: report it up
        else:
            self._unroute(link, key)  # its new parent is not proven through this link

    # --- internals --------------------------------------------------------------------

    def _drop(self, link: int, branch: _Branch, key: bytes) -> None:
        """Forget the claim ``key`` of ``branch`` (and unroute what hangs on it there)."""
        if key in branch.claims:
            self._unroute(link, key)
            self._forget(link, branch, key)

    def _settle(self, link: int, key: bytes) -> None:
        """Route ``key`` through ``link`` if its chain holds, then its waiting kids.

        ``key`` is a claim not routed through ``link``; so are its kids (an id routed
        through a link always has its parent routed there too)."""
        branch = self._branches[link]
        stack = [key]
        while stack:
            current = stack.pop()
            placement = branch.claims[current]
            if self._route.get(placement.parent.encode()) != link:
                continue  # its parent is not proven through this link (yet): it waits
            holder = self._route.get(current)
            if holder is not None:
                if self._branches[holder].placement(current).stamp >= placement.stamp:
                    self._forget(link, branch, current)
                    continue
                self._displace(holder, current)
            elif self._gone.get(current, -1) > placement.stamp:
                self._forget(link, branch, current)
                continue
            self._gone.pop(current, None)
            self._route[current] = link
            branch.routed += 1
            self._on_node(current)
            stack.extend(branch.kids.get(current, ()))

    def _unroute(self, link: int, key: bytes) -> None:
        """Stop routing ``key`` through ``link`` (if it is), and everything that hangs
        on it there; their placements stay, waiting."""
        branch = self._branches[link]
        stack = [key]
        while stack:
            current = stack.pop()
            if self._route.get(current) != link:
                continue
            del self._route[current]
            branch.routed -= 1
            self._remember(current, branch.placement(current).stamp)
            self._on_node(current)
            stack.extend(branch.kids.get(current, ()))

    def _displace(self, link: int, key: bytes) -> None:
        """A newer placement of ``key`` arrived elsewhere: ``link`` loses it."""
        self._unroute(link, key)
        branch = self._branches[link]
        if key != branch.root:
            self._forget(link, branch, key)

    def _forget(self, link: int, branch: _Branch, key: bytes) -> None:
        """Drop the (unrouted) claim ``key`` and release what it cost."""
        placement = branch.claims.pop(key)
        self._unlink(branch, key, placement)
        self._budget.release(link, placement_cost(placement))

    @staticmethod
    def _unlink(branch: _Branch, key: bytes, placement: Placement) -> None:
        """Remove ``key`` from the kids of its placement's parent."""
        parent = placement.parent.encode()
        kids = branch.kids[parent]
        del kids[key]
        if not kids:
            del branch.kids[parent]

    def _remember(self, key: bytes, stamp: int) -> None:
        """Keep the newest stamp seen for ``key``, now that it is not routable."""
        previous = self._gone.pop(key, -1)
        self._gone[key] = max(previous, stamp)
        if len(self._gone) > self._gone_memory:
            del self._gone[next(iter(self._gone))]
