"""The index budget: how many index entries a hub holds for its children.

Strategy
--------
Everything a child reports costs the hub memory until the child leaves: a content id
(with its path, from a share), a node's placement (from a child hub). One child once
reported 10,000,000 made-up content ids and grew a hub from 107 MB to 2.6 GB (issue
11), so a hub counts what it holds in *entries* and bounds them twice
(docs/security.md §3):

* a node-wide budget (``Limits.index_budget``) over all children together;
* a quota per child. A child that joined with the hub's passcode is trusted by the
  operator, so its quota is the whole budget. A child of an open hub proved nothing
  but its key (keys are free), so it gets ``Limits.open_child_quota`` for each node it
  proves: a share proves one (itself), a child hub itself and every node of its
  subtree whose placement this hub routes. A hub's quota thus grows with the shares
  it really carries, and is never more than the budget.

What one entry costs is what it holds in memory, roughly: ``entry_cost`` charges a
content id one entry, plus one per 256 characters of its path (so a short path costs
nothing more and a 4,096-character one costs 17); ``placement_cost`` charges a
placement one entry per 128 characters of its text (a typical Ed25519 placement: 4).
Measured, a share's entry with a short path costs a hub ~75 bytes and a child hub's
bare id ~55 since the compact content table (``kbproto.contenttable``; ~300 before,
docs/benchmarks.md), a placement ~1.5 KB.

A child crossing its quota, or the budget, gets a ``LimitExceeded`` on its link
(``Error(limit)``, the link closes, everything it reported is dropped): a hub never
holds a partial index that its child believes complete.
"""

from __future__ import annotations

from kbproto.errors import LimitExceeded
from kbproto.messages import Placement

__all__ = ("IndexBudget", "entry_cost", "placement_cost")

#: Path characters one entry pays for: most paths are far shorter.
_PATH_CHARS_PER_ENTRY = 256
#: Placement text one entry pays for: a placement is ~5 times a content entry in memory.
_PLACEMENT_CHARS_PER_ENTRY = 128
#: Characters of a placement besides its text fields: nonce, ids, stamp, JSON syntax.
_PLACEMENT_OVERHEAD = 200


def entry_cost(path: str) -> int:
    """Entries one content id with ``path`` costs (``""``: a child hub's bare id)."""
    return 1 + len(path) // _PATH_CHARS_PER_ENTRY


def placement_cost(placement: Placement) -> int:
    """Entries one placement costs (its text, signature and key included)."""
    info = placement.info
    chars = (
        _PLACEMENT_OVERHEAD
        + len(placement.signature)
        + len(info.name)
        + len(info.description)
        + len(info.owner)
        + len(info.owner_email)
        + len(info.listen_url)
        + len(info.public_key)
    )
    return 1 + chars // _PLACEMENT_CHARS_PER_ENTRY


class _Account:
    __slots__ = ("trusted", "used")

    def __init__(self, trusted: bool) -> None:
        self.trusted = trusted
        self.used = 0


class IndexBudget:
    """Entries held per child, within per-child quotas and one node-wide budget.

    Args:
        total: the node-wide budget (``Limits.index_budget``).
        open_quota: entries per proven node of a child that joined without a passcode
            (``Limits.open_child_quota``).
    """

    def __init__(self, *, total: int, open_quota: int) -> None:
        self._total = total
        self._open_quota = open_quota
        self._accounts: dict[int, _Account] = {}
        self._used = 0

    @property
    def used(self) -> int:
        """Entries held for all children together."""
        return self._used

    def used_by(self, link: int) -> int:
        """Entries held for the child on ``link``."""
        return self._accounts[link].used

    def add_child(self, link: int, *, trusted: bool) -> None:
        """Open an account for the child that joined on ``link``."""
        self._accounts[link] = _Account(trusted)

    def drop_child(self, link: int) -> None:
        """Close the child's account; whatever it still held is released."""
        account = self._accounts.pop(link)
        self._used -= account.used

    def quota(self, link: int, proven: int) -> int:
        """The most entries the child on ``link`` may hold, proving ``proven`` nodes."""
        account = self._accounts[link]
        if account.trusted:
            return self._total
        return min(self._total, self._open_quota * max(1, proven))

    def room(self, link: int, proven: int) -> int:
        """Entries the child on ``link`` may still add now (within quota and budget)."""
        account = self._accounts[link]
        return max(0, min(self.quota(link, proven) - account.used, self._total - self._used))

    def charge(self, link: int, entries: int, *, proven: int) -> None:
        """Hold ``entries`` more for the child on ``link``.

        Raises:
            LimitExceeded: that would cross the child's quota or the node's budget;
                nothing is charged.
        """
        if entries > self.room(link, proven):
            raise self.exceeded(link, proven)
        self._accounts[link].used += entries
        self._used += entries

    def release(self, link: int, entries: int) -> None:
        """The child on ``link`` no longer holds ``entries`` of what it was charged."""
        self._accounts[link].used -= entries
        self._used -= entries

    def exceeded(self, link: int, proven: int) -> LimitExceeded:
        """The error for a child that wants more than ``room``: one line, for both
        consoles (the hub's, as the reason the child left; the child's, as the
        reason its parent closed the link)."""
        account = self._accounts[link]
        quota = self.quota(link, proven)
        if not account.trusted and quota - account.used <= self._total - self._used:
            if proven > 1:
                why = f"{self._open_quota:,} for each of the {proven} nodes it proves"
            else:
                why = "a child that joined without the hub's passcode"
            return LimitExceeded(
                f"index quota exceeded: this hub holds at most {quota:,} index entries"
                f" for this child ({why}; kbucket-hub --open-child-quota)",
                "open_child_quota",
            )
        return LimitExceeded(
            f"index budget exhausted: this hub holds at most {self._total:,} index entries"
            f" for all its children (kbucket-hub --index-budget)",
            "index_budget",
        )
