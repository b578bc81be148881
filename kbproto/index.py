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
    A hub's view of its subtree, and of the content it holds itself (its relay
    cache, docs/protocol.md §13: ``put_own``; reported upward like its subtree's, and
    answered for by the hub as a source). Content ids, and which direct children hold
    them, in a ``kbproto.contenttable.ContentTable`` (20-byte records in flat arrays, a
    packed log per child; docs/protocol.md §5 "How a hub holds its index"): about 50
    bytes per id at ten million, where a dict took ~130 (docs/benchmarks.md). For each
    direct share child, the ``(path, size)`` it reported per id, packed by
    ``kbproto.packedpaths.PackedPaths`` into its records (so finds for direct shares
    are answered locally). Node ids, for routing requests and share-limited finds,
    are in a ``kbproto.nodetable.NodeTable``: each rests on its owner's signed
    placement, never on a child's word. What every child reports is charged to the
    hub's ``kbproto.budget.IndexBudget``. Dropping a child drops all it brought.
    Every change to the *set* of reachable content ids or node ids is reported to a
    callback, which feeds the hub's own upward sync.

``UplinkSync``
    What a child still has to tell its parent: a full-sync cursor over the keys (a
    snapshot list, or an iterator a store yields a page at a time:
    ``kbproto.sharestore``), plus a coalescing set of keys changed since. Messages
    are built on demand up to a byte budget and sent only while fewer than ``window``
    are unacknowledged, so a million-entry index never floods the outbox and churn
    is coalesced (a file that changes ten times while the link is busy is reported
    once).

The two ends of index sync are state machines in ``kbproto.state``:
``INDEX_SEND_TRANSITIONS`` drives ``UplinkSync`` (stopped, a reset due, sending,
synced) and ``INDEX_RECEIVE_TRANSITIONS`` drives ``HubIndex.apply`` for each child
(in step, or waiting for the reset a gap asked for). docs/protocol.md §5 is the
protocol; §4.4 draws the machines.

Content ids are kept as 20 raw bytes (not 40-char strings): half the memory per key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, overload

from kbproto.budget import ID_BYTES as _ID_BYTES
from kbproto.budget import IndexBudget, entry_cost
from kbproto.codec import encoded_size
from kbproto.contenttable import KEY_BYTES, ContentTable
from kbproto.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from kbproto.ids import LinkId, NodeId, is_sha1
from kbproto.messages import (
    MAX_BATCH_ENTRIES,
    MAX_PATH,
    MAX_SIZE,
    HubIndexUpdate,
    Placement,
    ShareIndexUpdate,
)
from kbproto.nodetable import NodeTable
from kbproto.packedpaths import PackedPaths
from kbproto.state import (
    INDEX_RECEIVE_TRANSITIONS,
    INDEX_SEND_TRANSITIONS,
    IndexReceiveEffect,
    IndexReceiveInput,
    IndexReceiveState,
    IndexSendEffect,
    IndexSendInput,
    IndexSendState,
    StateMachine,
)

__all__ = ("HubIndex", "PackedKeys", "ShareIndex", "UplinkSync")


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

    # --- reporting upward (``UplinkSync``'s keys, cost and build) ---------------------

    def report_cost(self, raw: bytes) -> int:
        """The worst-case encoded size of content ``raw``'s entry in a report."""
        rep = self._rep.get(raw)
        # Worst case: every path character escaped as \u00XX by the JSON encoder.
        return 64 + (6 * len(rep[0]) if rep is not None else 0)

    def report(self, reset: bool, seq: int, keys: list[bytes]) -> ShareIndexUpdate:
        """One index message for content ids ``keys``, from their state *now*."""
        put: list[tuple[str, str, int]] = []
        drop: list[str] = []
        for key in keys:
            rep = self._rep.get(key)
            # A key removed since it was queued is dropped, even in a reset batch
            # (the parent ignores drops of entries it does not hold).
            if rep is None:
                drop.append(key.hex())
            else:
                put.append((key.hex(), rep[0], rep[1]))
        return ShareIndexUpdate(seq=seq, reset=reset, put=tuple(put), drop=tuple(drop))

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


class _Child:
    """What one direct child brought to a hub's content index (its content ids are in
    the hub's ``ContentTable``, under its link)."""

    __slots__ = ("cost", "expected_seq", "is_hub", "paths", "reports")

    def __init__(self, is_hub: bool) -> None:
        self.is_hub = is_hub
        #: A share's paths and sizes, packed (a child hub reports none).
        self.paths = PackedPaths()
        #: Bytes of budget its content costs (``kbproto.budget.entry_cost`` each, and
        #: its paths' directories).
        self.cost = 0
        #: The ``seq`` of the next index message, while in step.
        self.expected_seq = 0
        #: Where we are in following its reports (``INDEX_RECEIVE_TRANSITIONS``).
        self.reports: StateMachine[IndexReceiveState, IndexReceiveInput, IndexReceiveEffect] = (
            StateMachine("index receive", INDEX_RECEIVE_TRANSITIONS, IndexReceiveState.IN_STEP)
        )


class PackedKeys(Sequence[bytes]):
    """A snapshot of keys: a list of node ids, then content ids packed 20 bytes each
    (one ``bytes`` object instead of millions, for a full sync of a big hub)."""

    __slots__ = ("_content", "_nodes")

    def __init__(self, nodes: list[bytes], content: bytes) -> None:
        self._nodes = nodes
        self._content = content

    def __len__(self) -> int:
        return len(self._nodes) + len(self._content) // KEY_BYTES

    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[bytes]: ...
    def __getitem__(self, index: int | slice) -> bytes | Sequence[bytes]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        nodes = len(self._nodes)
        if index < nodes:
            return self._nodes[index]
        start = (index - nodes) * KEY_BYTES
        return self._content[start : start + KEY_BYTES]


class HubIndex:
    """A hub's aggregate of its subtree (see the module docstring).

    Args:
        on_content: called with a raw content id whose reachability changed.
        on_node: called with a node id (as ASCII bytes) whose routing changed.
        on_refused: called with ``(link, placement, reason)`` for a node id a child
            reported without a valid placement (dropped).
        check: why a placement proves nothing, or None (``VerifiedPlacements.check``).
        budget: the node-wide budget and per-child quotas, in bytes of index.
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
        self._table = ContentTable()
        #: Content the hub holds itself: raw id -> size.
        self._own: dict[bytes, int] = {}
        self._children: dict[int, _Child] = {}
        self._on_content = on_content
        self._budget = budget
        self.nodes = NodeTable(on_node, on_refused, check, budget, max_claims=max_nodes)

    @property
    def content_count(self) -> int:
        """Distinct content ids reachable in the subtree (the hub's own included)."""
        return len(self._table) + sum(1 for raw in self._own if raw not in self._table)

    # --- the hub's own content ----------------------------------------------------------

    @property
    def own_count(self) -> int:
        """Content ids the hub holds itself."""
        return len(self._own)

    def own_size(self, raw: bytes) -> int | None:
        """The size of content ``raw`` if the hub holds it itself, else None."""
        return self._own.get(raw)

    def put_own(self, raw: bytes, size: int) -> None:
        """The hub holds content ``raw`` of ``size`` bytes itself (reported upward)."""
        if self._own.get(raw) == size:
            return
        self._own[raw] = size
        self._on_content(raw)

    def drop_own(self, raw: bytes) -> None:
        """The hub no longer holds content ``raw`` itself (no-op if it did not)."""
        if self._own.pop(raw, None) is not None and raw not in self._table:
            self._on_content(raw)

    def node_keys(self) -> list[bytes]:
        """Snapshot of routable node ids (ASCII bytes)."""
        return self.nodes.keys()

    def has_node(self, node_id: str) -> bool:
        """True if ``node_id`` is routable in the subtree (a child or below)."""
        return self.nodes.route(node_id) is not None

    def route(self, node_id: str) -> LinkId | None:
        """The child link toward ``node_id``, or None."""
        link = self.nodes.route(node_id)
        return LinkId(link) if link is not None else None

    def holders(self, raw: bytes) -> list[tuple[LinkId, tuple[str, int] | None]]:
        """The child links through which content ``raw`` is reachable, each with the
        ``(path, size)`` a direct share child reported (None for a child hub)."""
        children = self._children
        out: list[tuple[LinkId, tuple[str, int] | None]] = []
        for link, tail in self._table.found(raw):
            child = children[link]
            out.append((LinkId(link), None if child.is_hub else child.paths.unpack(tail)))
        return out

    def child_reaches(self, link: int, node_id: str) -> bool:
        """True if ``node_id`` is routed through the child on ``link``."""
        return self.nodes.reaches(link, node_id)

    # --- reporting upward (``UplinkSync``'s keys, cost and build) ---------------------

    def report_keys(self) -> PackedKeys:
        """Every key a full sync sends: node ids first (a parent sizes a child hub's
        quota by the nodes it proves), then content ids."""
        own = b"".join(raw for raw in self._own if raw not in self._table)
        return PackedKeys(self.node_keys(), self._table.keys() + own)

    def report_cost(self, key: bytes) -> int:
        """The worst-case encoded size of ``key``'s entry in a report."""
        # Node ids are 12 ASCII bytes, content ids 20 raw bytes: the length tells.
        if len(key) == 12:
            placement = self.nodes.placement(key)
            # A placement, exactly (it can be tens of KiB); a drop is a short id.
            return 32 + (encoded_size(placement) if placement is not None else 0)
        return 48

    def report(self, reset: bool, seq: int, keys: list[bytes]) -> HubIndexUpdate:
        """One index message for ``keys`` (node ids and content ids), from their state
        *now*: put if routable or reachable, else drop."""
        cput: list[str] = []
        cdrop: list[str] = []
        nput: list[Placement] = []
        ndrop: list[NodeId] = []
        for key in keys:
            if len(key) == 12:
                placement = self.nodes.placement(key)
                if placement is not None:
                    nput.append(placement)
                else:
                    ndrop.append(NodeId(key.decode()))
            else:
                (cput if key in self._table or key in self._own else cdrop).append(key.hex())
        return HubIndexUpdate(
            seq=seq,
            reset=reset,
            content_put=tuple(cput),
            content_drop=tuple(cdrop),
            nodes_put=tuple(nput),
            nodes_drop=tuple(ndrop),
        )

    # --- children ---------------------------------------------------------------------

    def add_child(self, link: int, placement: Placement, *, is_hub: bool, trusted: bool) -> None:
        """A child joined on ``link`` with ``placement``: its own id becomes routable.

        ``trusted``: it presented the hub's (non-empty) passcode, so its index quota is
        the whole budget (``kbproto.budget``).
        """
        self._children[link] = _Child(is_hub)
        self._table.add_child(link, tails=not is_hub)
        self._budget.add_child(link, trusted=trusted)
        self.nodes.add_child(link, placement)

    def drop_child(self, link: int) -> None:
        """The child on ``link`` left: drop everything it brought."""
        child = self._children.pop(link)
        self._clear(link, child)
        self._table.drop_child(link)
        self.nodes.drop_child(link)
        self._budget.drop_child(link)

    def _clear(self, link: int, child: _Child) -> None:
        """Drop the content the child on ``link`` reported (not its node ids)."""
        for raw in self._table.clear(link):
            self._on_content(raw)
        child.paths = PackedPaths()
        self._budget.release(link, child.cost)
        child.cost = 0

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
            event = IndexReceiveInput.RESET
        elif message.seq == child.expected_seq:
            event = IndexReceiveInput.NEXT
        else:
            event = IndexReceiveInput.GAP
        effect = child.reports.process(event)
        if effect is None:
            return None  # waiting for a reset: acknowledged, ignored
        return _RECEIVE_EFFECTS[effect](self, link, child, message)

    def _replace(
        self, link: int, child: _Child, message: ShareIndexUpdate | HubIndexUpdate
    ) -> None:
        """A reset: drop everything the child reported, then apply the message."""
        self._clear(link, child)
        self.nodes.clear(link)
        self._apply_next(link, child, message)

    def _apply_next(
        self, link: int, child: _Child, message: ShareIndexUpdate | HubIndexUpdate
    ) -> None:
        """Apply the message in sequence."""
        child.expected_seq = message.seq + 1
        if isinstance(message, ShareIndexUpdate):
            self._apply_share(link, child, message)
        else:
            self._apply_hub(link, child, message)

    def _ask_resync(
        self, link: int, child: _Child, message: ShareIndexUpdate | HubIndexUpdate
    ) -> int:
        """A gap: the seq we wanted, for the ``Resync`` the node sends."""
        return child.expected_seq

    def _apply_share(self, link: int, child: _Child, message: ShareIndexUpdate) -> None:
        """Apply a share child's puts and drops, within its index quota (bytes: each
        entry's ``kbproto.budget.entry_cost``, and the directories its paths intern)."""
        table = self._table
        paths = child.paths
        room = self._budget.room(link, 1)
        dirs = paths.held_bytes
        added = 0
        for sha1, path, size in message.put:
            raw = _raw(sha1)
            tail = paths.pack(path, size)
            # ``kbproto.budget.entry_cost``, inlined: this loop sees every file of a share.
            length = len(tail)
            added += _ID_BYTES + length + (1 if length < 0x80 else 2)
            old = table.put(link, raw, tail)
            if old is True:
                self._on_content(raw)
            elif old is not False:
                added -= entry_cost(old)
                paths.release(old)
            if added + paths.held_bytes - dirs > room:
                raise self._budget.exceeded(link, 1)
        for sha1 in message.drop:
            raw = _raw(sha1)
            gone = table.remove(link, raw)
            if gone is not None:
                added -= entry_cost(gone[0])
                paths.release(gone[0])
                if gone[1]:
                    self._on_content(raw)
        self._settle_cost(link, child, added + paths.held_bytes - dirs, 1)

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
        table = self._table
        added = 0
        for sha1 in message.content_put:
            raw = _raw(sha1)
            old = table.put(link, raw)
            if old is True or old is False:
                added += _ID_BYTES
                if added > room:
                    raise self._budget.exceeded(link, proven)
                if old:
                    self._on_content(raw)
        for sha1 in message.content_drop:
            raw = _raw(sha1)
            gone = table.remove(link, raw)
            if gone is not None:
                added -= _ID_BYTES
                if gone[1]:
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


#: Each effect of ``INDEX_RECEIVE_TRANSITIONS``, bound to what does it; an effect
#: returns the seq for a ``Resync``, or None.
_RECEIVE_EFFECTS: dict[
    IndexReceiveEffect,
    Callable[[HubIndex, int, _Child, ShareIndexUpdate | HubIndexUpdate], int | None],
] = {
    IndexReceiveEffect.REPLACE: HubIndex._replace,
    IndexReceiveEffect.APPLY: HubIndex._apply_next,
    IndexReceiveEffect.ASK_RESYNC: HubIndex._ask_resync,
}


class UplinkSync:
    """Paces a child's index reports to its parent (see the module docstring).

    Its life is ``kbproto.state.INDEX_SEND_TRANSITIONS``: ``start`` when the parent
    welcomes us, ``stop`` when the link is lost, ``resync`` on the parent's request,
    ``acked`` per ``IndexAck``, and ``flush`` whenever there may be something to send.

    Args:
        keys: returns every key to send in a full sync (a snapshot, or an iterator
            read as the sync goes; keys changed meanwhile are reported again anyway).
        build: turns ``(reset, seq, keys)`` into one message for those keys, reading
            their *current* state (present: put, absent: drop).
        cost: estimated encoded bytes of one key's entry.
        on_synced: called each time everything sent has been acknowledged and
            nothing is left to send (the node reports ``IndexSynced``).
        window: messages that may be unacknowledged.
        batch_bytes: target encoded size of one message.
    """

    def __init__(
        self,
        keys: Callable[[], Iterable[bytes]],
        build: Callable[[bool, int, list[bytes]], ShareIndexUpdate | HubIndexUpdate],
        cost: Callable[[bytes], int],
        on_synced: Callable[[], None],
        *,
        window: int,
        batch_bytes: int,
    ) -> None:
        self._keys = keys
        self._build = build
        self._cost = cost
        self._on_synced = on_synced
        self._window = window
        self._batch_bytes = batch_bytes
        self._full: Iterator[bytes] | None = None
        self._dirty: dict[bytes, None] = {}
        self._seq = 0
        self._unacked: list[int] = []
        self._machine: StateMachine[IndexSendState, IndexSendInput, IndexSendEffect] = StateMachine(
            "index send", INDEX_SEND_TRANSITIONS, IndexSendState.STOPPED
        )

    def start(self) -> None:
        """The link to the parent is up: begin a full sync from sequence 0."""
        self._input(IndexSendInput.START)

    def stop(self) -> None:
        """The link to the parent is gone: forget everything in flight."""
        self._input(IndexSendInput.STOP)

    def resync(self) -> None:
        """The parent asked: send everything again, starting with a reset message."""
        self._input(IndexSendInput.RESYNC)

    def changed(self, key: bytes) -> None:
        """``key`` changed locally: report its current state soon (once joined)."""
        if self._machine.state is not IndexSendState.STOPPED:
            self._dirty[key] = None

    def acked(self, seq: int) -> None:
        """The parent acknowledged ``seq``.

        Raises:
            RemoteProtocolError: ``seq`` is not the oldest unacknowledged message.
        """
        self._input(IndexSendInput.ACKED, seq, RemoteProtocolError)

    def flush(self, send: Callable[[ShareIndexUpdate | HubIndexUpdate], None]) -> None:
        """Hand ``send`` the messages the window allows now; report ``on_synced`` when
        nothing is left to send or to be acknowledged. Call only while started."""
        while len(self._unacked) < self._window:
            batch = self._next_batch()
            reset = self._machine.state is IndexSendState.RESET_DUE
            if not batch and not reset:
                break
            message = self._build(reset, self._seq, batch)
            self._input(IndexSendInput.SENT)
            self._unacked.append(self._seq)
            self._seq += 1
            send(message)
        if not self._unacked and not self._dirty and self._full is None:
            self._input(IndexSendInput.SETTLED)

    def _next_batch(self) -> list[bytes]:
        """Keys for one message: the full sync's next ones, then changed ones, up to
        ``batch_bytes`` of estimated size and ``MAX_BATCH_ENTRIES``."""
        batch: list[bytes] = []
        budget = self._batch_bytes
        while len(batch) < MAX_BATCH_ENTRIES and budget > 0:
            key = next(self._full, None) if self._full is not None else None
            if key is None:
                self._full = None  # every key of the full sync was taken
                if not self._dirty:
                    break
                key = next(iter(self._dirty))
                del self._dirty[key]
            batch.append(key)
            budget -= self._cost(key)
        return batch

    def _input(
        self,
        event: IndexSendInput,
        arg: object = None,
        error: type[ProtocolError] = LocalProtocolError,
    ) -> None:
        """Feed the machine; run the effect the table names."""
        effect = self._machine.process(event, error)
        if effect is not None:
            _SEND_EFFECTS[effect](self, arg)

    # --- effects ----------------------------------------------------------------------

    def _begin(self, arg: None) -> None:
        """Numbering restarts at 0 on a new link; the full sync follows."""
        self._seq = 0
        self._unacked = []
        self._snapshot_all(arg)

    def _snapshot_all(self, arg: None) -> None:
        """Every key, for a full sync; changes so far are in it."""
        self._full = iter(self._keys())
        self._dirty = {}

    def _forget(self, arg: None) -> None:
        self._full = None
        self._dirty = {}
        self._unacked = []

    def _pop_ack(self, seq: int) -> None:
        if not self._unacked or self._unacked[0] != seq:
            raise RemoteProtocolError(f"index ack for unexpected seq {seq}")
        self._unacked.pop(0)

    def _report_synced(self, arg: None) -> None:
        self._on_synced()


#: Each effect of ``INDEX_SEND_TRANSITIONS``, bound to what does it (the payload is
#: the acknowledged seq for ``POP_ACK``, else None).
_SEND_EFFECTS: dict[IndexSendEffect, Callable[[UplinkSync, Any], None]] = {
    IndexSendEffect.BEGIN: UplinkSync._begin,
    IndexSendEffect.SNAPSHOT: UplinkSync._snapshot_all,
    IndexSendEffect.FORGET: UplinkSync._forget,
    IndexSendEffect.POP_ACK: UplinkSync._pop_ack,
    IndexSendEffect.REPORT_SYNCED: UplinkSync._report_synced,
}
