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
    (so finds for direct shares are answered locally); for each child hub, the sets of
    content ids and node ids it reported. Node ids are aggregated the same way, for
    routing requests and share-limited finds. Dropping a child drops all it brought.
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

from kbproto.errors import LimitExceeded, LocalProtocolError, RemoteProtocolError
from kbproto.ids import LinkId, NodeId, is_sha1
from kbproto.messages import (
    MAX_BATCH_ENTRIES,
    MAX_PATH,
    MAX_SIZE,
    HubIndexUpdate,
    ShareIndexUpdate,
)

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
    """What one direct child brought to a hub's index."""

    __slots__ = ("content", "expected_seq", "files", "is_hub", "node_id", "nodes", "resyncing")

    def __init__(self, node_id: NodeId, is_hub: bool) -> None:
        self.node_id = node_id
        self.is_hub = is_hub
        self.files: dict[bytes, tuple[str, int]] = {}
        self.content: set[bytes] = set()
        self.nodes: set[bytes] = set()
        self.expected_seq = 0
        self.resyncing = False


class HubIndex:
    """A hub's aggregate of its subtree (see the module docstring).

    Args:
        on_content: called with a raw content id whose reachability changed.
        on_node: called with a node id (as ASCII bytes) whose reachability changed.
        max_entries: content ids one child may report.
        max_nodes: node ids one child hub may report.
    """

    def __init__(
        self,
        on_content: Callable[[bytes], None],
        on_node: Callable[[bytes], None],
        *,
        max_entries: int,
        max_nodes: int,
    ) -> None:
        self._where: dict[bytes, int | list[int]] = {}
        self._node_where: dict[bytes, int | list[int]] = {}
        self._children: dict[int, _Child] = {}
        self._on_content = on_content
        self._on_node = on_node
        self._max_entries = max_entries
        self._max_nodes = max_nodes

    @property
    def content_count(self) -> int:
        """Distinct content ids reachable in the subtree."""
        return len(self._where)

    def content_keys(self) -> list[bytes]:
        """Snapshot of reachable content ids (raw)."""
        return list(self._where)

    def node_keys(self) -> list[bytes]:
        """Snapshot of reachable node ids (ASCII bytes)."""
        return list(self._node_where)

    def has_content(self, raw: bytes) -> bool:
        """True if ``raw`` is reachable in the subtree."""
        return raw in self._where

    def has_node(self, node_id: str) -> bool:
        """True if ``node_id`` is in the subtree (a child or below)."""
        return node_id.encode() in self._node_where

    def route(self, node_id: str) -> LinkId | None:
        """The child link toward ``node_id`` (the first one if several), or None."""
        links = _links(self._node_where, node_id.encode())
        return LinkId(links[0]) if links else None

    def holders(self, raw: bytes) -> list[LinkId]:
        """The child links through which content ``raw`` is reachable."""
        return [LinkId(link) for link in _links(self._where, raw)]

    def share_entry(self, link: int, raw: bytes) -> tuple[str, int] | None:
        """``(path, size)`` of ``raw`` at the direct share child on ``link``."""
        return self._children[link].files.get(raw)

    def child_reaches(self, link: int, node_id: str) -> bool:
        """True if the child on ``link`` is ``node_id`` or has it below."""
        child = self._children[link]
        return child.node_id == node_id or node_id.encode() in child.nodes

    def add_child(self, link: int, node_id: NodeId, *, is_hub: bool) -> None:
        """A child joined on ``link``: its own id becomes reachable."""
        self._children[link] = _Child(node_id, is_hub)
        if _add(self._node_where, node_id.encode(), link):
            self._on_node(node_id.encode())

    def drop_child(self, link: int) -> None:
        """The child on ``link`` left: drop everything it brought."""
        child = self._children.pop(link)
        self._clear(link, child)
        if _discard(self._node_where, child.node_id.encode(), link):
            self._on_node(child.node_id.encode())

    def _clear(self, link: int, child: _Child) -> None:
        """Drop everything the child on ``link`` reported."""
        for raw in child.files if not child.is_hub else child.content:
            if _discard(self._where, raw, link):
                self._on_content(raw)
        for node in child.nodes:
            if _discard(self._node_where, node, link):
                self._on_node(node)
        child.files = {}
        child.content = set()
        child.nodes = set()

    def apply(self, link: int, message: ShareIndexUpdate | HubIndexUpdate) -> int | None:
        """Apply one index message from the child on ``link``.

        Returns:
            None if applied (or ignored while waiting for a reset), else the sequence
            number expected: the caller sends ``Resync`` (a gap was seen).

        Raises:
            RemoteProtocolError: wrong message kind for the child, or a cycle.
            LimitExceeded: the child reported too many entries.
        """
        child = self._children[link]
        if isinstance(message, ShareIndexUpdate) == child.is_hub:
            kind = "hub" if child.is_hub else "share"
            raise RemoteProtocolError(f"a {kind} sent the wrong kind of index message")
        if message.reset:
            self._clear(link, child)
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
        return None

    def _apply_share(self, link: int, child: _Child, message: ShareIndexUpdate) -> None:
        """Apply a share child's puts and drops."""
        files = child.files
        for sha1, path, size in message.put:
            raw = _raw(sha1)
            if raw not in files and len(files) >= self._max_entries:
                raise LimitExceeded(
                    f"share reported more than {self._max_entries} entries", "max_index_entries"
                )
            files[raw] = (path, size)
            if _add(self._where, raw, link):
                self._on_content(raw)
        for sha1 in message.drop:
            raw = _raw(sha1)
            if files.pop(raw, None) is not None and _discard(self._where, raw, link):
                self._on_content(raw)

    def _apply_hub(self, link: int, child: _Child, message: HubIndexUpdate) -> None:
        """Apply a child hub's content and node changes."""
        content = child.content
        for sha1 in message.content_put:
            raw = _raw(sha1)
            if raw in content:
                continue
            if len(content) >= self._max_entries:
                raise LimitExceeded(
                    f"hub reported more than {self._max_entries} content ids", "max_index_entries"
                )
            content.add(raw)
            if _add(self._where, raw, link):
                self._on_content(raw)
        for sha1 in message.content_drop:
            raw = _raw(sha1)
            if raw in content:
                content.discard(raw)
                if _discard(self._where, raw, link):
                    self._on_content(raw)
        nodes = child.nodes
        for node_id in message.nodes_put:
            key = node_id.encode()
            if key in nodes or key == child.node_id.encode():
                continue
            if len(nodes) >= self._max_nodes:
                raise LimitExceeded(
                    f"hub reported more than {self._max_nodes} node ids", "max_nodes_per_child"
                )
            nodes.add(key)
            if _add(self._node_where, key, link):
                self._on_node(key)
        for node_id in message.nodes_drop:
            key = node_id.encode()
            if key in nodes:
                nodes.discard(key)
                if _discard(self._node_where, key, link):
                    self._on_node(key)


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
