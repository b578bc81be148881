"""A hub's content ids: one open-addressing table of 20-byte keys, and per child a
packed log of what it holds.

Strategy
--------
A hub near the top of a tree holds the union of its subtree: millions of content ids.
A ``dict`` costs ~130 bytes per 20-byte key (the key object, the slot, the hash), so
the ids live in flat arrays instead (docs/protocol.md §5, "How a hub holds its
index"; issue 17):

One ``bytearray`` of ``capacity`` 28-byte slots, so that a lookup touches one cache
line of a table of hundreds of MB (at ten million ids, a find at a big hub is as fast
as at a small one: docs/benchmarks.md):

* bytes 0-19, the key. Linear probing from ``hash(key) % capacity`` (``hash`` of
  ``bytes`` is CPython's keyed SipHash, the one its dicts rely on: a child cannot
  pick ids that collide).
* the 6th 32-bit word (``_who``, a ``memoryview`` cast to ``i``): ``0`` empty, ``-2``
  a tombstone, ``-1`` held by several children (their records are in ``_multi``),
  else the *number* of the one child holding it (almost every id has one holder).
* the 7th (``_pos``, cast to ``I``): where that holder's record of the id is in its
  log.

Each child has a *log*: a ``bytearray`` of records, appended as it reports ids. A
record is the slot (4 bytes, little-endian), and for a child with tails (a share:
``kbproto.packedpaths`` packs its path and size) a varint length and the tail. A
dropped or replaced record is marked dead (slot ``0xFFFFFFFF``); a log whose dead
bytes outweigh its live ones is compacted. So a child's departure walks only its own
log, a drop is a lookup and a mark, and a hub child's id costs the table slot (~28
bytes over the load factor) plus 4 bytes of log.

The table grows (doubling) when its used slots (live and tombstones) would pass 3/4
of its capacity, is rebuilt in place when tombstones alone would, and shrinks when
fewer than 1/8 of its slots are live. A rebuild moves slots, so it rewrites the slot
field of every live record through an old-to-new map (an ``array``, freed after).

Iteration order (``keys``) is slot order: it depends on the process's hash seed, as a
``set`` of ``bytes`` does; nothing a peer sees depends on it beyond the order of
ids within a full sync.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Iterator

from kbproto.errors import LimitExceeded

__all__ = ("KEY_BYTES", "MAX_LOG", "SLOT_BYTES", "ContentTable", "read_varint", "varint")

#: Bytes of one content id.
KEY_BYTES = 20
#: Bytes one table slot takes (key, holder, position).
SLOT_BYTES = KEY_BYTES + 4 + 4
#: A slot's 32-bit words: the holder is its 6th, the position its 7th.
_INTS = SLOT_BYTES // 4
_WHO = 5
_POS = 6
#: A record's slot field: native byte order (``_remap`` rewrites a log's records as an
#: array of native words); logs never leave the process.
_U32 = struct.Struct("=I")
#: One-byte varints, ready-made.
_unpack_from = _U32.unpack_from
_pack = _U32.pack
_BYTE = [bytes((value,)) for value in range(0x80)]
_EMPTY = 0
_MULTI = -1
_TOMB = -2
_DEAD = 0xFFFFFFFF
_MIN_CAPACITY = 64
#: A log's offsets are 32-bit (``_pos``): no child may hold more (its budget is far less).
MAX_LOG = 0xFFFFFFFF - 8192
#: Slots rehashed, or records of a hub child's log remapped, at once (``_rebuild``).
_REMAP_BLOCK = 4096
#: Logs with fewer dead bytes than this are never compacted.
_MIN_GARBAGE = 4096


def varint(value: int) -> bytes:
    """``value`` (>= 0) as a little-endian base-128 varint (what ``read_varint`` reads)."""
    if value < 0x80:
        return _BYTE[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_varint(data: bytes | bytearray, offset: int) -> tuple[int, int]:
    """The varint at ``offset`` in ``data`` and the offset after it."""
    # One and two bytes unrolled: a find decodes a few varints (a size, a directory).
    value = data[offset]
    if value < 0x80:
        return value, offset + 1
    byte = data[offset + 1]
    if byte < 0x80:
        return (value & 0x7F) | (byte << 7), offset + 2
    value = (value & 0x7F) | ((byte & 0x7F) << 7)
    offset += 2
    shift = 14
    while True:
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, offset
        shift += 7


def _slots(cap: int) -> tuple[bytearray, memoryview, memoryview]:
    """``cap`` empty slots, and views of their holder and position words."""
    table = bytearray(SLOT_BYTES * cap)
    return table, memoryview(table).cast("i"), memoryview(table).cast("I")


class _Log:
    """One child's records (see the module docstring)."""

    __slots__ = ("data", "dead", "link", "live", "number", "tails")

    def __init__(self, link: int, number: int, tails: bool) -> None:
        self.link = link
        self.number = number
        self.tails = tails
        self.data = bytearray()
        #: Live records, and bytes of dead ones.
        self.live = 0
        self.dead = 0

    def records(self) -> Iterator[tuple[int, int, int]]:
        """``(offset, slot, end)`` of every record, dead ones included (slot ``_DEAD``)."""
        data = self.data
        offset = 0
        end = len(data)
        tails = self.tails
        while offset < end:
            (slot,) = _unpack_from(data, offset)
            after = offset + 4
            if tails:
                length, after = read_varint(data, after)
                after += length
            yield offset, slot, after
            offset = after


def _remap(log: _Log, moved: array[int]) -> None:
    """Rewrite the slot field of every live record of ``log`` through ``moved``
    (old slot -> new); a rewrite keeps every record's length."""
    data = log.data
    if not log.tails:
        # Records are bare 4-byte slots: rewrite them a block at a time, in C but
        # for one comparison and one index per record.
        words = memoryview(data).cast("I")
        for first in range(0, len(words), _REMAP_BLOCK):
            block = words[first : first + _REMAP_BLOCK]
            block[:] = array("I", [s if s == _DEAD else moved[s] for s in block])
        words.release()
        return
    pack_into = _U32.pack_into
    offset = 0
    end = len(data)
    while offset < end:
        (slot,) = _unpack_from(data, offset)
        length = data[offset + 4]
        if length < 0x80:
            after = offset + 5 + length
        else:
            length, after = read_varint(data, offset + 4)
            after += length
        if slot != _DEAD:
            pack_into(data, offset, moved[slot])
        offset = after


class ContentTable:
    """Content ids (20 raw bytes each) and which children hold them, with an opaque
    per-child ``tail`` (see the module docstring).

    Args:
        max_log: bytes one child's log may reach (its offsets are 32-bit).
    """

    def __init__(self, *, max_log: int = MAX_LOG) -> None:
        self._max_log = max_log
        self._cap = _MIN_CAPACITY
        self._keys, self._who, self._pos = _slots(self._cap)
        self._live = 0
        self._used = 0
        #: slot -> [number, offset, number, offset, ...] for ids with several holders.
        self._multi: dict[int, list[int]] = {}
        self._logs: dict[int, _Log] = {}
        self._by_number: dict[int, _Log] = {}
        self._free_numbers: list[int] = []
        self._next_number = 1

    # --- queries ----------------------------------------------------------------------

    def __len__(self) -> int:
        """Distinct content ids held by at least one child."""
        return self._live

    def __contains__(self, raw: object) -> bool:
        return isinstance(raw, bytes) and len(raw) == KEY_BYTES and self._find(raw) >= 0

    @property
    def capacity(self) -> int:
        """Slots in the table (for the docs' memory figures and tests)."""
        return self._cap

    def held_by(self, link: int) -> int:
        """Content ids the child on ``link`` holds."""
        return self._logs[link].live

    def keys(self) -> bytes:
        """Every content id, concatenated (20 bytes each): one object, not millions."""
        keys = self._keys
        who = self._who
        out = bytearray()
        for slot in range(self._cap):
            if who[slot * _INTS + _WHO] > 0 or who[slot * _INTS + _WHO] == _MULTI:
                start = slot * SLOT_BYTES
                out += keys[start : start + KEY_BYTES]
        return bytes(out)

    def holders(self, raw: bytes) -> list[int]:
        """The links of the children holding ``raw``, in the order they got it."""
        slot = self._find(raw)
        if slot < 0:
            return []
        who = self._who[slot * _INTS + _WHO]
        numbers = [who] if who > 0 else self._multi[slot][::2]
        by_number = self._by_number
        return [by_number[number].link for number in numbers]

    def found(self, raw: bytes) -> list[tuple[int, bytes]]:
        """``(link, tail)`` of each child holding ``raw``, in the order they got it:
        what a find needs, from one probe (and one read of each holder's log)."""
        slot = self._find(raw)
        if slot < 0:
            return []
        who = self._who[slot * _INTS + _WHO]
        if who > 0:
            log = self._by_number[who]
            return [(log.link, self._tail_at(log, self._pos[slot * _INTS + _POS]))]
        pairs = self._multi[slot]
        by_number = self._by_number
        return [
            (by_number[pairs[i]].link, self._tail_at(by_number[pairs[i]], pairs[i + 1]))
            for i in range(0, len(pairs), 2)
        ]

    def tail(self, link: int, raw: bytes) -> bytes | None:
        """The tail the child on ``link`` recorded with ``raw``, or None."""
        log = self._logs[link]
        offset = self._offset(log, raw)
        return self._tail_at(log, offset) if offset >= 0 else None

    # --- children ---------------------------------------------------------------------

    def add_child(self, link: int, *, tails: bool) -> None:
        """Open a log for the child on ``link`` (``tails``: its records carry one)."""
        if self._free_numbers:
            number = self._free_numbers.pop()
        else:
            number = self._next_number
            self._next_number += 1
        log = _Log(link, number, tails)
        self._logs[link] = log
        self._by_number[number] = log

    def drop_child(self, link: int) -> None:
        """Forget the child on ``link``'s log (``clear`` it first)."""
        log = self._logs.pop(link)
        del self._by_number[log.number]
        self._free_numbers.append(log.number)

    def clear(self, link: int) -> list[bytes]:
        """Drop everything the child on ``link`` holds; returns the ids no child holds
        any more, in the order it reported them."""
        log = self._logs[link]
        gone: list[bytes] = []
        keys = self._keys
        for _offset, slot, _end in log.records():
            if slot != _DEAD and self._unhold(log.number, slot):
                start = slot * SLOT_BYTES
                gone.append(bytes(keys[start : start + KEY_BYTES]))
        log.data = bytearray()
        log.live = 0
        log.dead = 0
        self._shrink()
        return gone

    # --- changes ----------------------------------------------------------------------

    def put(self, link: int, raw: bytes, tail: bytes = b"") -> bytes | bool:
        """Record that the child on ``link`` holds ``raw`` (with ``tail``).

        Returns:
            True if ``raw`` is new to the table, False if new to this child only, else
            the tail it replaced (an equal tail: nothing changes).
        """
        log = self._logs[link]
        # One probe finds ``raw`` or where it goes (the first tombstone on the way, or
        # the empty slot that ends the run); this loop sees every id a child reports.
        cap = self._cap
        who = self._who
        keys = self._keys
        slot = hash(raw) % cap
        free = -1
        while True:
            holder = who[slot * _INTS + _WHO]
            if holder == _EMPTY:
                break
            if holder == _TOMB:
                if free < 0:
                    free = slot
            elif keys.startswith(raw, slot * SLOT_BYTES):
                return self._put_held(log, slot, tail)
            slot += 1
            if slot == cap:
                slot = 0
        if free >= 0:
            slot = free
        elif (self._used + 1) * 4 > cap * 3:
            self._rebuild(cap * 2 if (self._live + 1) * 2 > cap else cap)
            slot = self._insert(raw)
        else:
            self._used += 1
        start = slot * SLOT_BYTES
        self._keys[start : start + KEY_BYTES] = raw
        offset = self._append(log, slot, tail)
        self._who[slot * _INTS + _WHO] = log.number
        self._pos[slot * _INTS + _POS] = offset
        self._live += 1
        return True

    def _put_held(self, log: _Log, slot: int, tail: bytes) -> bytes | bool:
        """``put`` of an id the table holds (in ``slot``)."""
        offset = self._offset_at(log, slot)
        if offset >= 0:
            old = self._tail_at(log, offset)
            if old != tail:
                self._kill(log, offset)
                self._set_offset(log, slot, self._append(log, slot, tail))
                self._maybe_compact(log)
            return old
        offset = self._append(log, slot, tail)
        who = self._who[slot * _INTS + _WHO]
        if who > 0:
            self._multi[slot] = [who, self._pos[slot * _INTS + _POS], log.number, offset]
            self._who[slot * _INTS + _WHO] = _MULTI
        else:
            self._multi[slot].extend((log.number, offset))
        return False

    def remove(self, link: int, raw: bytes) -> tuple[bytes, bool] | None:
        """The child on ``link`` no longer holds ``raw``.

        Returns:
            None if it did not; else its tail, and True if no child holds ``raw`` now.
        """
        log = self._logs[link]
        slot = self._find(raw)
        if slot < 0:
            return None
        offset = self._offset_at(log, slot)
        if offset < 0:
            return None
        tail = self._tail_at(log, offset)
        self._kill(log, offset)
        gone = self._unhold(log.number, slot)
        self._maybe_compact(log)
        self._shrink()
        return tail, gone

    # --- internals: the table ---------------------------------------------------------

    def _find(self, raw: bytes) -> int:
        """The slot of ``raw``, or -1."""
        cap = self._cap
        who = self._who
        keys = self._keys
        slot = hash(raw) % cap
        while True:
            holder = who[slot * _INTS + _WHO]
            if holder == _EMPTY:
                return -1
            if holder != _TOMB and keys.startswith(raw, slot * SLOT_BYTES):
                return slot
            slot += 1
            if slot == cap:
                slot = 0

    def _insert(self, raw: bytes) -> int:
        """A free slot for ``raw`` in a table just rebuilt (no tombstones, ``raw``
        absent), its key written; its ``_who`` is the caller's to set."""
        cap = self._cap
        who = self._who
        slot = hash(raw) % cap
        while who[slot * _INTS + _WHO] != _EMPTY:
            slot += 1
            if slot == cap:
                slot = 0
        self._used += 1
        start = slot * SLOT_BYTES
        self._keys[start : start + KEY_BYTES] = raw
        return slot

    def _unhold(self, number: int, slot: int) -> bool:
        """Child ``number`` no longer holds ``slot``; True if nobody does now."""
        who = self._who
        if who[slot * _INTS + _WHO] == number:
            who[slot * _INTS + _WHO] = _TOMB
            self._live -= 1
            return True
        pairs = self._multi[slot]
        index = 0
        while pairs[index] != number:
            index += 2
        del pairs[index : index + 2]
        if len(pairs) == 2:
            del self._multi[slot]
            who[slot * _INTS + _WHO] = pairs[0]
            self._pos[slot * _INTS + _POS] = pairs[1]
        return False

    def _shrink(self) -> None:
        """Rebuild smaller when fewer than 1/8 of the slots are live."""
        if self._cap > _MIN_CAPACITY and self._live * 8 < self._cap:
            cap = self._cap
            while cap > _MIN_CAPACITY and self._live * 4 < cap:
                cap //= 2
            self._rebuild(cap)

    def _rebuild(self, cap: int) -> None:
        """Rehash every live id into ``cap`` slots; drop the tombstones; rewrite the
        slot field of every live record."""
        # One Python-level step per live id: a block of holder words comes out as a
        # list in C, the keys are sliced out of a bytes copy of the block's slots (one
        # allocation a key), and the probe is inlined. Blocks keep the temporaries
        # small: lists of millions of ints would stay in the allocator's arenas.
        old_cap = self._cap
        old_keys = self._keys
        old_who = self._who
        old_pos = self._pos
        self._cap = cap
        self._keys, self._who, self._pos = keys, who, pos = _slots(cap)
        moved = array("I", bytes(4 * old_cap))
        used = 0
        for first in range(0, old_cap, _REMAP_BLOCK):
            last = min(old_cap, first + _REMAP_BLOCK)
            block = bytes(old_keys[first * SLOT_BYTES : last * SLOT_BYTES])
            holders = old_who[first * _INTS + _WHO : last * _INTS : _INTS].tolist()
            for index, holder in enumerate(holders):
                if holder <= 0 and holder != _MULTI:
                    continue  # empty or a tombstone
                start = index * SLOT_BYTES
                raw = block[start : start + KEY_BYTES]
                new = hash(raw) % cap
                while who[new * _INTS + _WHO] != _EMPTY:
                    new += 1
                    if new == cap:
                        new = 0
                begin = new * SLOT_BYTES
                keys[begin : begin + KEY_BYTES] = raw
                who[new * _INTS + _WHO] = holder
                slot = first + index
                pos[new * _INTS + _POS] = old_pos[slot * _INTS + _POS]
                moved[slot] = new
                used += 1
        del old_keys, old_who, old_pos, block
        self._used = used
        self._multi = {moved[slot]: pairs for slot, pairs in self._multi.items()}
        for log in self._logs.values():
            _remap(log, moved)

    # --- internals: the logs ----------------------------------------------------------

    def _offset(self, log: _Log, raw: bytes) -> int:
        """Where ``log`` records ``raw``, or -1."""
        slot = self._find(raw)
        return self._offset_at(log, slot) if slot >= 0 else -1

    def _offset_at(self, log: _Log, slot: int) -> int:
        """Where ``log`` records the id in ``slot``, or -1."""
        who = self._who[slot * _INTS + _WHO]
        if who == log.number:
            return self._pos[slot * _INTS + _POS]
        if who != _MULTI:
            return -1
        pairs = self._multi[slot]
        for index in range(0, len(pairs), 2):
            if pairs[index] == log.number:
                return pairs[index + 1]
        return -1

    def _set_offset(self, log: _Log, slot: int, offset: int) -> None:
        """``log``'s record of the id in ``slot`` is now at ``offset``."""
        if self._who[slot * _INTS + _WHO] == log.number:
            self._pos[slot * _INTS + _POS] = offset
            return
        pairs = self._multi[slot]
        index = 0
        while pairs[index] != log.number:
            index += 2
        pairs[index + 1] = offset

    def _tail_at(self, log: _Log, offset: int) -> bytes:
        if not log.tails:
            return b""
        data = log.data
        length = data[offset + 4]
        if length < 0x80:  # most tails: a one-byte length
            return bytes(data[offset + 5 : offset + 5 + length])
        length, start = read_varint(data, offset + 4)
        return bytes(data[start : start + length])

    def _append(self, log: _Log, slot: int, tail: bytes) -> int:
        """Append a record; its offset."""
        data = log.data
        offset = len(data)
        if offset > self._max_log:
            self._too_big()
        data += _pack(slot)
        if log.tails:
            length = len(tail)
            data += _BYTE[length] if length < 0x80 else varint(length)
            data += tail
        log.live += 1
        return offset

    def _too_big(self) -> None:
        raise LimitExceeded(f"one child's index passed {self._max_log:,} bytes", "index_budget")

    def _kill(self, log: _Log, offset: int) -> None:
        """Mark the record at ``offset`` dead."""
        data = log.data
        size = 4
        if log.tails:
            length, after = read_varint(data, offset + 4)
            size = after + length - offset
        data[offset : offset + 4] = _U32.pack(_DEAD)
        log.live -= 1
        log.dead += size

    def _maybe_compact(self, log: _Log) -> None:
        """Rewrite ``log`` without its dead records once they outweigh the live ones."""
        if log.dead < _MIN_GARBAGE or log.dead * 2 < len(log.data):
            return
        old = log.data
        new = bytearray()
        for offset, slot, end in log.records():
            if slot != _DEAD:
                self._set_offset(log, slot, len(new))
                new += old[offset:end]
        log.data = new
        log.dead = 0
