"""The index budget: how many bytes of index a hub holds for its children.

Strategy
--------
Everything a child reports costs the hub memory until the child leaves: a content id
(with its path, from a share), a node's placement (from a child hub). One child once
reported 10,000,000 made-up content ids and grew a hub from 107 MB to 2.6 GB (issue
11), so a hub counts what it holds in *bytes of its index* and bounds them twice
(docs/security.md §3):

* a node-wide budget (``Limits.index_budget``) over all children together;
* a quota per child. A child that joined with the hub's passcode is trusted by the
  operator, so its quota is the whole budget. A child of an open hub proved nothing
  but its key (keys are free), so it gets ``Limits.open_child_quota`` for each node it
  proves: a share proves one (itself), a child hub itself and every node of its
  subtree whose placement this hub routes. A hub's quota thus grows with the shares
  it really carries, and is never more than the budget.

What an entry costs is what it takes in the compact content table
(``kbproto.contenttable``, docs/protocol.md §5 "How a hub holds its index"):

* a content id, ``ID_BYTES``: its 28-byte slot over the table's load (the table is
  3/8 to 3/4 full: 48 bytes at ~58 %) and the 4-byte slot field of its log record. A
  child hub's ids cost exactly that (measured: 54 bytes an id at 10,000,000);
* a direct share's entry adds its record's tail (``kbproto.packedpaths``: size, the
  directory's number, the file name) and the tail's length byte: ``entry_cost``;
  each directory a share's paths intern costs ``DIR_BYTES`` plus its name, once,
  until its last file goes (``PackedPaths.held_bytes``);
* a placement, ``placement_cost``: its objects and its text (~1.5 KB measured for a
  typical Ed25519 placement).

Budgets were counted in *entries* before (a content id with a short path: one entry,
~75 bytes then); ``LEGACY_ENTRY_BYTES`` is what kbapps reads an old entry count as.

A child crossing its quota, or the budget, gets a ``LimitExceeded`` on its link
(``Error(limit)``, the link closes, everything it reported is dropped): a hub never
holds a partial index that its child believes complete.
"""

from __future__ import annotations

from kbproto.errors import LimitExceeded
from kbproto.messages import Placement

__all__ = (
    "DIR_BYTES",
    "ID_BYTES",
    "LEGACY_ENTRY_BYTES",
    "IndexBudget",
    "entry_cost",
    "placement_cost",
)

#: Bytes of index one content id costs: its share of the table and of its log record.
ID_BYTES = 52
#: Bytes one interned directory costs besides its name (a ``str``, a dict and two list
#: slots).
DIR_BYTES = 100
#: Bytes an index entry of the old budgets counts as (a short path's entry cost ~75).
LEGACY_ENTRY_BYTES = 80
#: Bytes a placement costs besides twice its text: its objects and routes. A typical
#: Ed25519 placement (~450 characters) comes to ~1.9 KB, above the ~1.5 KB it was
#: measured to take (docs/security.md §3): a bound errs high.
_PLACEMENT_BYTES = 1024
#: Characters of a placement besides its text fields: nonce, ids, stamp, JSON syntax.
_PLACEMENT_OVERHEAD = 200


def entry_cost(tail: bytes = b"") -> int:
    """Bytes one content id costs with a share's record ``tail`` (``b""``: a child
    hub's bare id)."""
    if not tail:
        return ID_BYTES
    return ID_BYTES + len(tail) + (1 if len(tail) < 0x80 else 2)


def placement_cost(placement: Placement) -> int:
    """Bytes one placement costs (its text, signature and key included)."""
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
    return _PLACEMENT_BYTES + 2 * chars


class _Account:
    __slots__ = ("trusted", "used")

    def __init__(self, trusted: bool) -> None:
        self.trusted = trusted
        self.used = 0


class IndexBudget:
    """Bytes of index held per child, within per-child quotas and one node-wide budget.

    Args:
        total: the node-wide budget in bytes (``Limits.index_budget``).
        open_quota: bytes per proven node of a child that joined without a passcode
            (``Limits.open_child_quota``).
    """

    def __init__(self, *, total: int, open_quota: int) -> None:
        self._total = total
        self._open_quota = open_quota
        self._accounts: dict[int, _Account] = {}
        self._used = 0

    @property
    def used(self) -> int:
        """Bytes held for all children together."""
        return self._used

    def used_by(self, link: int) -> int:
        """Bytes held for the child on ``link``."""
        return self._accounts[link].used

    def add_child(self, link: int, *, trusted: bool) -> None:
        """Open an account for the child that joined on ``link``."""
        self._accounts[link] = _Account(trusted)

    def drop_child(self, link: int) -> None:
        """Close the child's account; whatever it still held is released."""
        account = self._accounts.pop(link)
        self._used -= account.used

    def quota(self, link: int, proven: int) -> int:
        """The most bytes the child on ``link`` may hold, proving ``proven`` nodes."""
        account = self._accounts[link]
        if account.trusted:
            return self._total
        return min(self._total, self._open_quota * max(1, proven))

    def room(self, link: int, proven: int) -> int:
        """Bytes the child on ``link`` may still add now (within quota and budget)."""
        account = self._accounts[link]
        return max(0, min(self.quota(link, proven) - account.used, self._total - self._used))

    def charge(self, link: int, size: int, *, proven: int) -> None:
        """Hold ``size`` more bytes for the child on ``link``.

        Raises:
            LimitExceeded: that would cross the child's quota or the node's budget;
                nothing is charged.
        """
        if size > self.room(link, proven):
            raise self.exceeded(link, proven)
        self._accounts[link].used += size
        self._used += size

    def release(self, link: int, size: int) -> None:
        """The child on ``link`` no longer holds ``size`` bytes of what it was charged."""
        self._accounts[link].used -= size
        self._used -= size

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
                f"index quota exceeded: this hub holds at most {quota:,} bytes of index"
                f" for this child ({why}; kbucket-hub --open-child-quota)",
                "open_child_quota",
            )
        return LimitExceeded(
            f"index budget exhausted: this hub holds at most {self._total:,} bytes of index"
            f" for all its children (kbucket-hub --index-budget)",
            "index_budget",
        )
