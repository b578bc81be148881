"""Index bookkeeping: a share's files, a hub's subtree aggregate, and upward sync.

Strategy
--------
Three pure data structures, no links and no timers (the node wires them up):

``ShareIndex``
    A share's files as ``path -> (sha1, size)``, plus one *representative* path per
    content id (the smallest path holding it). Only representatives are reported: a
    hub needs one place per content id per share, as the original did
    (``files_by_sha1``). Every change to a representative is reported to a callback.

``HubIndex``
    A hub's view of its subtree. For every content id, the child links through which
    it is reachable (``int`` for one link, a list for several: almost every id has one,
    and this keeps the table at one dict slot per id, SPEC §5 and the 1,000,000-id
    memory benchmark). For each direct share child, its ``sha1 -> (path, size)`` map
    (so finds for direct shares are answered locally); for each child hub, the set of
    content ids it reported. Node ids, for routing requests and share-limited finds,
    are in a ``kbproto.nodetable.NodeTable``: each rests on its owner's signed
    placement, never on a child's word. What every child reports is charged to the
    hub's ``kbproto.budget.IndexBudget``. Dropping a child drops all it brought.
    Every change to the *set* of reachable content ids or node ids is reported to a
    callback, which feeds the hub's own upward sync.

``UplinkSync``
    What a child still has to tell its parent: a full-sync cursor over a snapshot of
    keys, plus a coalescing set of keys changed since. Messages are built on demand up
    to a byte budget and sent only while fewer than ``window`` are unacknowledged, so a
    million-entry index never floods the outbox and churn is coalesced (a file that
    changes ten times while the link is busy is reported once).

Content ids are kept as 20 raw bytes (not 40-char strings): half the memory per key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from kbproto.budget import IndexBudget
from kbproto.errors import LocalProtocolError, RemoteProtocolError
from kbproto.ids import LinkId, is_sha1
from kbproto.messages import (
    MAX_BATCH_ENTRIES,
    MAX_PATH,
    MAX_SIZE,
    HubIndexUpdate,
    Placement,
    ShareIndexUpdate,
)
from kbproto.nodetable import NodeTable

__all__ = ("HubIndex", "ShareIndex", "UplinkSync")


def _raw(sha1: str) -> bytes:
    """A content id as its 20 raw bytes."""
    return bytes.fromhex(sha1)


class ShareIndex:
    """A share's files. ``on_change(raw_sha1)`` hears every representative change."""

    def __init__(self, on_change: Callable[[bytes], None]) -> None:
        self._by_path: dict[str, tuple[bytes, int]] = {}
        # Paths per content id: a str for the usual single path, a set for duplicates
        # (a set per entry would triple the memory of a million-file share).
        self._paths: dict[bytes, str | set[str]] = {}
        self._rep: dict[bytes, tuple[str, int]] = {}
        self._on_change = on_change

    def __len__(self) -> int:
        """Number of files (paths)."""
        return len(self._by_path)

    @property
    def content_count(self) -> int:
        """Number of distinct content ids."""
        return len(self._rep)

    def keys(self) -> list[bytes]:
        """A snapshot of the content ids (raw), in insertion order."""
        return list(self._rep)

    def representative(self, raw: bytes) -> tuple[str, int] | None:
        """The ``(path, size)`` reported for content ``raw``, or None."""
        return self._rep.get(raw)

    def put(self, sha1: str, path: str, size: int) -> None:
        """Add or replace the file at ``path``.

        Raises:
            LocalProtocolError: malformed sha1, path or size.
        """
        if not is_sha1(sha1):
            raise LocalProtocolError(f"not a sha1: {sha1!r}")
        if type(path) is not str or not path or len(path) > MAX_PATH or "\x00" in path:
            raise LocalProtocolError(f"bad share path {path!r}")
        if type(size) is not int or not 0 <= size <= MAX_SIZE:
            raise LocalProtocolError(f"bad file size {size!r}")
        raw = bytes.fromhex(sha1)
        old = self._by_path.get(path)
        if old is not None:
            if old == (raw, size):
                return
            self.remove(path)
        self._by_path[path] = (raw, size)
        current = self._paths.get(raw)
        if current is None:
            self._paths[raw] = path
        elif isinstance(current, str):
            self._paths[raw] = {current, path}
        else:
            current.add(path)
        self._refresh(raw)

    def remove(self, path: str) -> None:
        """Forget the file at ``path`` (a no-op if unknown)."""
        old = self._by_path.pop(path, None)
        if old is None:
            return
        raw = old[0]
        current = self._paths[raw]
        if isinstance(current, str):
            del self._paths[raw]
        else:
            current.discard(path)
            if len(current) == 1:
                self._paths[raw] = next(iter(current))
        self._refresh(raw)

    def paths(self) -> list[str]:
        """Every indexed path (snapshot)."""
        return list(self._by_path)

    def _refresh(self, raw: bytes) -> None:
        """Recompute the representative of ``raw`` and report it if it changed."""
        paths = self._paths.get(raw)
        if paths is None:
            new = None
        else:
            path = paths if isinstance(paths, str) else min(paths)
            new = (path, self._by_path[path][1])
        if self._rep.get(raw) == new:
            return
        if new is None:
            del self._rep[raw]
        else:
            self._rep[raw] = new
        self._on_change(raw)


def _add(table: dict[bytes, int | list[int]], key: bytes, link: int) -> bool:
    """Record that ``key`` is reachable via ``link``; True if ``key`` is new."""
    current = table.get(key)
    if current is None:
        table[key] = link
        return True
    if isinstance(current, int):
        if current != link:
            table[key] = [current, link]
    elif link not in current:
        current.append(link)
    return False


def _discard(table: dict[bytes, int | list[int]], key: bytes, link: int) -> bool:
    """Forget ``key`` via ``link``; True if ``key`` is no longer reachable at all.

    The caller knows ``key`` was recorded via ``link`` (the per-child sets and maps
    mirror this table), so the entry is there and holds ``link``.
    """
    current = table[key]
    if isinstance(current, int):
        del table[key]
        return True
    current.remove(link)
    if len(current) == 1:
        table[key] = current[0]
    return False


def _links(table: dict[bytes, int | list[int]], key: bytes) -> list[int]:
    """The links ``key`` is reachable through."""
    current = table.get(key)
    if current is None:
        return []
    return [current] if isinstance(current, int) else list(current)


class _Child:
    """What one direct child brought to a hub's content index."""

    __slots__ = ("content", "cost", "expected_seq", "files", "is_hub", "resyncing")

    def __init__(self, is_hub: bool) -> None:
        self.is_hub = is_hub
        self.files: dict[bytes, tuple[str, int]] = {}
        self.content: set[bytes] = set()
        #: Budget entries its content costs (``kbproto.budget.entry_cost`` each).
        self.cost = 0
        self.expected_seq = 0
        self.resyncing = False


#: A table that shrank below this share of its peak is rebuilt: CPython dicts never
#: shrink on delete, so a child that reported ten million ids and left kept the
#: table's ten-million-slot arrays (hundreds of MB) alive (issue 11).
_SHRINK_RATIO = 4
#: Tables smaller than this are not worth rebuilding.
_SHRINK_MIN = 65_536


class HubIndex:
    """A hub's aggregate of its subtree (see the module docstring).

    Args:
        on_content: called with a raw content id whose reachability changed.
        on_node: called with a node id (as ASCII bytes) whose routing changed.
        on_refused: called with ``(link, placement, reason)`` for a node id a child
            reported without a valid placement (dropped).
        check: why a placement proves nothing, or None (``VerifiedPlacements.check``).
        budget: the node-wide budget and per-child quotas, in entries.
        max_nodes: node ids one child hub may report.
    """

    def __init__(
        self,
        on_content: Callable[[bytes], None],
        on_node: Callable[[bytes], None],
        on_refused: Callable[[int, Placement, str], None],
        *,
        check: Callable[[Placement], str | None],
        budget: IndexBudget,
        max_nodes: int,
    ) -> None:
        self._where: dict[bytes, int | list[int]] = {}
        self._where_peak = 0
        self._children: dict[int, _Child] = {}
        self._on_content = on_content
        self._budget = budget
        self.nodes = NodeTable(on_node, on_refused, check, budget, max_claims=max_nodes)

    @property
    def content_count(self) -> int:
        """Distinct content ids reachable in the subtree."""
        return len(self._where)

    def content_keys(self) -> list[bytes]:
        """Snapshot of reachable content ids (raw)."""
        return list(self._where)

    def node_keys(self) -> list[bytes]:
        """Snapshot of routable node ids (ASCII bytes)."""
        return self.nodes.keys()

    def has_content(self, raw: bytes) -> bool:
        """True if ``raw`` is reachable in the subtree."""
        return raw in self._where

    def has_node(self, node_id: str) -> bool:
        """True if ``node_id`` is routable in the subtree (a child or below)."""
        return self.nodes.route(node_id) is not None

    def placement(self, key: bytes) -> Placement | None:
        """The placement node id ``key`` (ASCII bytes) is routed on, if routable."""
        return self.nodes.placement(key)

    def route(self, node_id: str) -> LinkId | None:
        """The child link toward ``node_id``, or None."""
        link = self.nodes.route(node_id)
        return LinkId(link) if link is not None else None

    def holders(self, raw: bytes) -> list[LinkId]:
        """The child links through which content ``raw`` is reachable."""
        return [LinkId(link) for link in _links(self._where, raw)]

    def share_entry(self, link: int, raw: bytes) -> tuple[str, int] | None:
        """``(path, size)`` of ``raw`` at the direct share child on ``link``."""
        return self._children[link].files.get(raw)

    def child_reaches(self, link: int, node_id: str) -> bool:
        """True if ``node_id`` is routed through the child on ``link``."""
        return self.nodes.reaches(link, node_id)

    def add_child(self, link: int, placement: Placement, *, is_hub: bool, trusted: bool) -> None:
        """A child joined on ``link`` with ``placement``: its own id becomes routable.

        ``trusted``: it presented the hub's (non-empty) passcode, so its index quota is
        the whole budget (``kbproto.budget``).
        """
        self._children[link] = _Child(is_hub)
        self._budget.add_child(link, trusted=trusted)
        self.nodes.add_child(link, placement)

    def drop_child(self, link: int) -> None:
        """The child on ``link`` left: drop everything it brought."""
        child = self._children.pop(link)
        self._clear(link, child)
        self.nodes.drop_child(link)
        self._budget.drop_child(link)

    def _clear(self, link: int, child: _Child) -> None:
        """Drop the content the child on ``link`` reported (not its node ids)."""
        for raw in child.files if not child.is_hub else child.content:
            if _discard(self._where, raw, link):
                self._on_content(raw)
        child.files = {}
        child.content = set()
        self._budget.release(link, child.cost)
        child.cost = 0
        if self._where_peak >= _SHRINK_MIN and len(self._where) * _SHRINK_RATIO < self._where_peak:
            self._where = dict(self._where)
            self._where_peak = len(self._where)

    def apply(self, link: int, message: ShareIndexUpdate | HubIndexUpdate) -> int | None:
        """Apply one index message from the child on ``link``.

        Returns:
            None if applied (or ignored while waiting for a reset), else the sequence
            number expected: the caller sends ``Resync`` (a gap was seen).

        Raises:
            RemoteProtocolError: wrong message kind for the child.
            LimitExceeded: the child crossed its index quota, the node's budget, its
                number of node ids, or sent too many node ids without proof.
        """
        child = self._children[link]
        if isinstance(message, ShareIndexUpdate) == child.is_hub:
            kind = "hub" if child.is_hub else "share"
            raise RemoteProtocolError(f"a {kind} sent the wrong kind of index message")
        if message.reset:
            self._clear(link, child)
            self.nodes.clear(link)
            child.resyncing = False
        elif child.resyncing:
            child.expected_seq = message.seq + 1
            return None
        elif message.seq != child.expected_seq:
            child.resyncing = True
            return child.expected_seq
        child.expected_seq = message.seq + 1
        if isinstance(message, ShareIndexUpdate):
            self._apply_share(link, child, message)
        else:
            self._apply_hub(link, child, message)
        self._where_peak = max(self._where_peak, len(self._where))
        return None

    def _apply_share(self, link: int, child: _Child, message: ShareIndexUpdate) -> None:
        """Apply a share child's puts and drops, within its index quota."""
        files = child.files
        where = self._where
        room = self._budget.room(link, 1)
        added = 0
        for sha1, path, size in message.put:
            raw = _raw(sha1)
            old = files.get(raw)
            # ``kbproto.budget.entry_cost``, inlined: this loop sees every file of a share.
            added += 1 + len(path) // 256
            if old is not None:
                added -= 1 + len(old[0]) // 256
            if added > room:
                raise self._budget.exceeded(link, 1)
            files[raw] = (path, size)
            if old is None and _add(where, raw, link):
                self._on_content(raw)
        for sha1 in message.drop:
            raw = _raw(sha1)
            old = files.pop(raw, None)
            if old is not None:
                added -= 1 + len(old[0]) // 256
                if _discard(where, raw, link):
                    self._on_content(raw)
        self._settle_cost(link, child, added, 1)

    def _apply_hub(self, link: int, child: _Child, message: HubIndexUpdate) -> None:
        """Apply a child hub's node and content changes (nodes first: its quota grows
        with the nodes it proves)."""
        nodes = self.nodes
        for placement in message.nodes_put:
            nodes.put(link, placement)
        for node_id in message.nodes_drop:
            nodes.drop(link, node_id)
        proven = nodes.proven(link)
        room = self._budget.room(link, proven)
        content = child.content
        added = 0
        for sha1 in message.content_put:
            raw = _raw(sha1)
            if raw in content:
                continue
            added += 1
            if added > room:
                raise self._budget.exceeded(link, proven)
            content.add(raw)
            if _add(self._where, raw, link):
                self._on_content(raw)
        for sha1 in message.content_drop:
            raw = _raw(sha1)
            if raw in content:
                content.discard(raw)
                added -= 1
                if _discard(self._where, raw, link):
                    self._on_content(raw)
        self._settle_cost(link, child, added, proven)

    def _settle_cost(self, link: int, child: _Child, added: int, proven: int) -> None:
        """Charge (or release) what one message changed in the child's content cost;
        its puts were already checked against the room it had."""
        if added > 0:
            self._budget.charge(link, added, proven=proven)
        elif added < 0:
            self._budget.release(link, -added)
        child.cost += added


class UplinkSync:
    """Paces a child's index reports to its parent (see the module docstring).

    Args:
        keys: returns a snapshot of every key to send in a full sync.
        build: turns ``(reset, seq, keys)`` into one message for those keys, reading
            their *current* state (present: put, absent: drop).
        cost: estimated encoded bytes of one key's entry.
        window: messages that may be unacknowledged.
        batch_bytes: target encoded size of one message.
    """

    def __init__(
        self,
        keys: Callable[[], list[bytes]],
        build: Callable[[bool, int, list[bytes]], ShareIndexUpdate | HubIndexUpdate],
        cost: Callable[[bytes], int],
        *,
        window: int,
        batch_bytes: int,
    ) -> None:
        self._keys = keys
        self._build = build
        self._cost = cost
        self._window = window
        self._batch_bytes = batch_bytes
        self._snapshot: list[bytes] = []
        self._cursor = 0
        self._dirty: dict[bytes, None] = {}
        self._reset_next = False
        self._seq = 0
        self._unacked: list[int] = []
        self.active = False

    @property
    def idle(self) -> bool:
        """True when everything has been sent and acknowledged."""
        return (
            not self._unacked
            and not self._dirty
            and self._cursor >= len(self._snapshot)
            and not self._reset_next
        )

    def start(self) -> None:
        """The link to the parent is up: begin a full sync from sequence 0."""
        self.active = True
        self._seq = 0
        self._unacked = []
        self.resync()

    def stop(self) -> None:
        """The link to the parent is gone: forget everything in flight."""
        self.active = False
        self._snapshot = []
        self._cursor = 0
        self._dirty = {}
        self._unacked = []
        self._reset_next = False

    def resync(self) -> None:
        """Send everything again, starting with a reset message."""
        self._snapshot = self._keys()
        self._cursor = 0
        self._dirty = {}
        self._reset_next = True

    def changed(self, key: bytes) -> None:
        """``key`` changed locally: report its current state soon."""
        if self.active:
            self._dirty[key] = None

    def acked(self, seq: int) -> None:
        """The parent acknowledged ``seq``.

        Raises:
            RemoteProtocolError: ``seq`` is not the oldest unacknowledged message.
        """
        if not self._unacked or self._unacked[0] != seq:
            raise RemoteProtocolError(f"index ack for unexpected seq {seq}")
        self._unacked.pop(0)

    def next_messages(self) -> Iterable[ShareIndexUpdate | HubIndexUpdate]:
        """Yield the messages to send now (within the window)."""
        while self.active and len(self._unacked) < self._window:
            batch: list[bytes] = []
            budget = self._batch_bytes
            while len(batch) < MAX_BATCH_ENTRIES and budget > 0:
                if self._cursor < len(self._snapshot):
                    key = self._snapshot[self._cursor]
                    self._cursor += 1
                    if self._cursor == len(self._snapshot):
                        self._snapshot = []
                        self._cursor = 0
                elif self._dirty:
                    key = next(iter(self._dirty))
                    del self._dirty[key]
                else:
                    break
                batch.append(key)
                budget -= self._cost(key)
            if not batch and not self._reset_next:
                return
            message = self._build(self._reset_next, self._seq, batch)
            self._reset_next = False
            self._unacked.append(self._seq)
            self._seq += 1
            yield message
