"""Node ids below a hub rest on their owners' placements (docs/protocol.md §5).

``NodeTable`` is driven directly, with real Ed25519 placements and a real verifier:
chains down to the direct child, any arrival order, moves (newer stamps win), stale
and replayed placements, forged ones, and the bounds.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from kbproto.auth import node_id_from_public_pem
from kbproto.budget import IndexBudget, placement_cost
from kbproto.errors import LimitExceeded
from kbproto.ids import NodeId
from kbproto.messages import Placement
from kbproto.nodetable import MAX_UNPROVEN_CLAIMS, NodeTable
from kbproto.placement import VerifiedPlacements
from tests.helpers import CryptoVerifier, Ed25519Signer, make_placement

HUB = "0123456789ab"  # the hub the table belongs to
L1, L2 = 1, 2  # two child links


def _key(seed: int) -> Ed25519Signer:
    return Ed25519Signer(500 + seed)


def _id(seed: int) -> str:
    return node_id_from_public_pem(_key(seed).public_pem)


def _placed(seed: int, parent: str, stamp: int = 1) -> Placement:
    """Node ``seed`` placed under ``parent`` (signed with its own key)."""
    return make_placement(_key(seed), parent, stamp=stamp, node_type="hub", confirm_share="")


@dataclass
class _Table:
    budget: IndexBudget = field(
        default_factory=lambda: IndexBudget(total=10_000_000, open_quota=1_000_000)
    )
    changed: list[str] = field(default_factory=list)
    refused: list[tuple[int, str, str]] = field(default_factory=list)
    max_claims: int = 100
    gone_memory: int = 100

    def __post_init__(self) -> None:
        self.table = NodeTable(
            lambda key: self.changed.append(key.decode()),
            lambda link, placement, reason: self.refused.append((link, placement.node_id, reason)),
            VerifiedPlacements(CryptoVerifier()).check,
            self.budget,
            max_claims=self.max_claims,
            gone_memory=self.gone_memory,
        )

    def join(self, link: int, seed: int, stamp: int = 1) -> None:
        self.budget.add_child(link, trusted=False)
        self.table.add_child(link, _placed(seed, HUB, stamp))

    def routes(self) -> dict[str, int | None]:
        return {_id(seed): self.table.route(_id(seed)) for seed in range(10)}


def test_ids_chained_to_the_direct_child_are_routed_through_it() -> None:
    t = _Table()
    t.join(L1, 0)
    t.table.put(L1, _placed(1, _id(0)))  # under the child
    t.table.put(L1, _placed(2, _id(1)))  # under that one
    assert [t.table.route(_id(s)) for s in (0, 1, 2)] == [L1, L1, L1]
    assert t.table.proven(L1) == 3
    assert t.table.reaches(L1, _id(2))
    assert t.changed == [_id(0), _id(1), _id(2)]
    assert t.table.placement(_id(2).encode()) == _placed(2, _id(1))
    assert t.table.placement(b"ffffffffffff") is None
    assert sorted(t.table.keys()) == sorted(_id(s).encode() for s in (0, 1, 2))
    assert len(t.table) == 3


def test_arrival_order_does_not_matter() -> None:
    t = _Table()
    t.join(L1, 0)
    # Deepest first: each waits for its parent, then one cascade routes them all.
    for seed in (5, 4, 3, 2):
        t.table.put(L1, _placed(seed, _id(seed - 1)))
        assert t.table.route(_id(seed)) is None
    assert t.table.claims(L1) == 4
    t.table.put(L1, _placed(1, _id(0)))
    assert [t.table.route(_id(s)) for s in range(6)] == [L1] * 6


def test_a_long_chain_cascades_without_recursion() -> None:
    budget = IndexBudget(total=10**7, open_quota=10**7)
    table = NodeTable(lambda k: None, lambda *a: None, lambda p: None, budget, max_claims=10**6)
    budget.add_child(L1, trusted=True)
    keys = [Ed25519Signer(9000 + i) for i in range(3001)]
    ids = [node_id_from_public_pem(k.public_pem) for k in keys]
    table.add_child(L1, make_placement(keys[0], HUB))
    for i in range(3000, 1, -1):  # 3,000 deep, reported bottom-up
        table.put(L1, make_placement(keys[i], ids[i - 1]))
    table.put(L1, make_placement(keys[1], ids[0]))
    assert table.proven(L1) == 3001
    table.drop(L1, ids[1])
    assert table.proven(L1) == 1
    assert table.claims(L1) == 2999


def test_an_unchained_placement_is_not_routed() -> None:
    t = _Table()
    t.join(L1, 0)
    t.join(L2, 9)
    # Genuine, but its parent is not proven through this link: it hangs on nothing.
    t.table.put(L1, _placed(1, _id(9)))
    t.table.put(L1, _placed(2, HUB))
    t.table.put(L1, _placed(3, _id(3)))  # its own parent
    assert t.table.route(_id(1)) is None
    assert t.table.route(_id(2)) is None
    assert t.table.route(_id(3)) is None
    assert t.refused == []


def test_losing_a_parent_unroutes_its_subtree_until_it_returns() -> None:
    t = _Table()
    t.join(L1, 0)
    for seed in (1, 2, 3):
        t.table.put(L1, _placed(seed, _id(seed - 1)))
    t.table.drop(L1, _id(1))
    assert [t.table.route(_id(s)) for s in (1, 2, 3)] == [None, None, None]
    assert t.table.claims(L1) == 2  # 2 and 3 wait for 1
    t.table.put(L1, _placed(1, _id(0), stamp=2))
    assert [t.table.route(_id(s)) for s in (1, 2, 3)] == [L1, L1, L1]


def test_a_newer_placement_elsewhere_moves_the_node_and_its_subtree_follows() -> None:
    t = _Table()
    t.join(L1, 0)
    t.join(L2, 9)
    t.table.put(L1, _placed(1, _id(0), stamp=10))
    t.table.put(L1, _placed(2, _id(1), stamp=10))
    # Node 1 moved under node 9 (with node 2 still below it): L2 reports both, the
    # child first this time.
    t.table.put(L2, _placed(2, _id(1), stamp=10))
    assert t.table.route(_id(2)) == L1  # equal stamp, and not chained on L2 yet
    t.table.put(L2, _placed(1, _id(9), stamp=20))
    assert t.table.route(_id(1)) == L2
    assert t.table.route(_id(2)) == L2
    assert t.table.claims(L1) == 1  # L1 lost node 1 for good; node 2 waits there
    # L1 keeps reporting node 1 with its old placement: it never wins it back.
    t.table.put(L1, _placed(1, _id(0), stamp=10))
    assert t.table.route(_id(1)) == L2
    # ...and once L2 loses it, the remembered stamp still refuses the old one.
    t.table.drop(L2, _id(1))
    t.table.put(L1, _placed(1, _id(0), stamp=10))
    assert t.table.route(_id(1)) is None
    assert t.table.route(_id(2)) is None


def test_equal_or_older_placements_never_displace() -> None:
    t = _Table()
    t.join(L1, 0)
    t.join(L2, 9)
    t.table.put(L1, _placed(1, _id(0), stamp=5))
    t.table.put(L2, _placed(1, _id(9), stamp=5))
    t.table.put(L2, _placed(1, _id(9), stamp=4))
    assert t.table.route(_id(1)) == L1
    assert t.table.claims(L2) == 0  # losers are forgotten, not kept in reserve


def test_the_same_placement_after_a_link_flap_is_routed_again() -> None:
    t = _Table()
    t.join(L1, 0)
    t.table.put(L1, _placed(1, _id(0), stamp=5))
    t.table.drop_child(L1)
    t.budget.drop_child(L1)
    assert t.table.route(_id(1)) is None
    t.join(L1, 0, stamp=2)
    t.table.put(L1, _placed(1, _id(0), stamp=5))  # equal to the remembered stamp
    assert t.table.route(_id(1)) == L1


def test_a_direct_join_takes_the_id_and_a_newer_claim_takes_it_back() -> None:
    t = _Table()
    t.join(L1, 0)
    t.table.put(L1, _placed(1, _id(0), stamp=5))
    t.table.put(L1, _placed(2, _id(1), stamp=5))
    t.join(L2, 1, stamp=3)  # node 1 joins directly: a fresh join wins, whatever its stamp
    assert t.table.route(_id(1)) == L2
    assert t.table.route(_id(2)) is None  # it hung on node 1 through L1
    # The direct child's link is stale; node 1 signed a newer placement under node 0.
    t.table.put(L1, _placed(1, _id(0), stamp=8))
    assert t.table.route(_id(1)) == L1
    assert t.table.route(_id(2)) == L1
    assert t.table.proven(L2) == 0
    t.table.drop_child(L2)
    assert t.table.route(_id(1)) == L1


def test_a_newer_placement_on_the_same_link_replaces_the_old_one() -> None:
    t = _Table()
    t.join(L1, 0)
    t.table.put(L1, _placed(1, _id(0), stamp=5))
    t.table.put(L1, _placed(2, _id(0), stamp=5))
    t.table.put(L1, _placed(3, _id(1), stamp=5))
    t.changed.clear()
    # Node 3 moved under node 2 (same branch): still routed, its new placement reported.
    t.table.put(L1, _placed(3, _id(2), stamp=6))
    assert t.table.route(_id(3)) == L1
    assert t.changed == [_id(3)]
    assert t.table.placement(_id(3).encode()) == _placed(3, _id(2), stamp=6)
    # An older one on the same link changes nothing.
    t.table.put(L1, _placed(3, _id(1), stamp=5))
    assert t.table.placement(_id(3).encode()) == _placed(3, _id(2), stamp=6)
    # Moved under a node not proven here: it stops being routed, and waits.
    t.table.put(L1, _placed(3, _id(9), stamp=7))
    assert t.table.route(_id(3)) is None
    # A pending one replaced by a newer pending one stays pending.
    t.table.put(L1, _placed(3, _id(8), stamp=8))
    assert t.table.route(_id(3)) is None
    assert t.table.claims(L1) == 3


def test_the_child_s_own_id_rests_on_its_join_only() -> None:
    t = _Table()
    t.join(L1, 0, stamp=5)
    t.table.put(L1, _placed(0, _id(7), stamp=50))  # about itself: ignored
    assert t.table.placement(_id(0).encode()) == _placed(0, HUB, stamp=5)
    assert t.table.claims(L1) == 0


def test_forged_placements_are_dropped_and_counted_then_cost_the_link() -> None:
    t = _Table()
    t.join(L1, 0)
    t.table.put(L1, _placed(1, _id(0)))
    genuine = _placed(2, _id(0))
    forged = [
        # Node 2's key and id, signed by another key.
        make_placement(Ed25519Signer(999), _id(0), info=genuine.info),
        # Another key's placement claiming node 1's id (newer than the one held).
        replace(
            _placed(3, _id(0), stamp=2),
            info=replace(_placed(3, _id(0)).info, node_id=NodeId(_id(1))),
        ),
        replace(genuine, scheme="dsa"),
        replace(genuine, stamp=2),  # the signature no longer covers it
    ]
    for placement in forged:
        t.table.put(L1, placement)
    assert [reason.split(":")[0] for _, _, reason in t.refused] == [
        f"bad signature on the placement of node {_id(2)}",
        f"node id {_id(1)} does not match its public key",
        "unknown signature scheme 'dsa'",
        f"bad signature on the placement of node {_id(2)}",
    ]
    assert t.table.unproven(L1) == 4
    assert t.table.route(_id(1)) == L1  # the genuine holder keeps it
    assert t.table.route(_id(2)) is None
    for _ in range(MAX_UNPROVEN_CLAIMS - 4):
        t.table.put(L1, forged[0])
    with pytest.raises(LimitExceeded) as info:
        t.table.put(L1, forged[0])
    assert info.value.limit == "unproven_claims"


def test_placements_are_bounded_per_child_and_charged_to_the_budget() -> None:
    t = _Table(max_claims=2)
    t.join(L1, 0)
    t.table.put(L1, _placed(1, _id(0)))
    t.table.put(L1, _placed(2, _id(9)))  # waiting counts too
    cost = placement_cost(_placed(1, _id(0)))
    assert t.budget.used_by(L1) == 2 * cost
    with pytest.raises(LimitExceeded) as info:
        t.table.put(L1, _placed(3, _id(0)))
    assert info.value.limit == "max_nodes_per_child"
    # A newer placement with a longer name costs more; an older-named one less.
    longer = make_placement(_key(1), _id(0), stamp=2, node_type="hub", name="x" * 1000)
    t.table.put(L1, longer)
    assert t.budget.used_by(L1) == cost + placement_cost(longer)
    t.table.put(L1, _placed(1, _id(0), stamp=3))
    assert t.budget.used_by(L1) == 2 * cost
    t.table.clear(L1)
    assert t.budget.used_by(L1) == 0
    assert t.table.route(_id(0)) == L1


def test_placements_cross_the_quota_of_a_child_without_passcode() -> None:
    cost = placement_cost(_placed(1, _id(0)))  # in bytes; every placement here costs it
    budget = IndexBudget(total=10_000_000, open_quota=3 * cost // 2)
    table = NodeTable(
        lambda k: None,
        lambda *a: None,
        VerifiedPlacements(CryptoVerifier()).check,
        budget,
        max_claims=100,
    )
    budget.add_child(L1, trusted=False)
    table.add_child(L1, _placed(0, HUB))
    # In placements (``cost`` bytes each): the quota is 1.5 per proven node.
    table.put(L1, _placed(1, _id(0)))  # 1 of 1.5; proving 2 nodes now: quota 3
    table.put(L1, _placed(2, _id(1)))  # 2 of 4.5
    table.put(L1, _placed(3, _id(5)))  # unchained: proves nothing, 3 of 4.5 ok
    table.put(L1, _placed(4, _id(5)))  # 4 of 4.5
    with pytest.raises(LimitExceeded) as info:
        table.put(L1, _placed(5, _id(5)))  # 5 > 4.5
    assert info.value.limit == "open_child_quota"
    assert "for each of the 3 nodes it proves" in str(info.value)


def test_remembered_stamps_are_bounded() -> None:
    t = _Table(gone_memory=2)
    t.join(L1, 0)
    for seed in (1, 2, 3):
        t.table.put(L1, _placed(seed, _id(0), stamp=5))
    for seed in (1, 2, 3):
        t.table.drop(L1, _id(seed))
    # Node 1's stamp was forgotten (oldest first): its old placement routes again;
    # nodes 2 and 3 are still remembered.
    for seed in (1, 2, 3):
        t.table.put(L1, _placed(seed, _id(0), stamp=4))
    assert [t.table.route(_id(s)) for s in (1, 2, 3)] == [L1, None, None]
