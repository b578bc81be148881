"""``PieceScheduler``: which bytes each source of a parallel download fetches next.

Pure bookkeeping, no I/O and no clock, so it is tested without sockets
(``tests/apps/test_download_pieces.py``). The file is cut into *units* (its chunks
when the ``.prv`` has chunk digests, so every unit can be checked alone; else 1 MiB).
A source asks for work with ``assign`` and gets a *piece*: a run of at most
``piece_units`` units that nobody holds, the lowest first. It streams the piece and
reports each unit as it lands (``unit_done``); when it is done, or fails, it calls
``release``, and whatever it did not finish goes back to the pool for the next asker.
A faster source therefore asks more often and does more of the file (work stealing).

Near the end, when every missing unit is already held, an idle source *steals* from
the held piece with the most units left (the slowest, most likely): with two units
left or more, it takes the second half of them and the holder's piece ends where
that half starts (the holder stops reading there); with one left, it *duplicates*
it: both fetch that unit, the first to land it wins, and the other is told to stop
(``unit_done`` returns who). A piece is duplicated at most once.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ("Piece", "PieceScheduler")


@dataclass(frozen=True, slots=True)
class Piece:
    """Units ``start`` to ``end`` (exclusive) assigned to one source."""

    start: int
    end: int


@dataclass(slots=True)
class _Assignment:
    piece: Piece  # shortened when another source steals its tail
    next: int  # the next unit its stream delivers
    duplicated: bool = False


class PieceScheduler:
    """Hands out pieces of a file of ``units`` units to named sources.

    Args:
        units: the file's number of units.
        piece_units: the most units one assignment holds (at least 1).
        done: units already on disk and verified (a resumed download).

    Raises:
        ValueError: ``piece_units`` is under 1, or a unit of ``done`` is out of range.
    """

    def __init__(self, units: int, piece_units: int, done: Iterable[int] = ()) -> None:
        if piece_units < 1:
            raise ValueError("PieceScheduler: piece_units must be at least 1")
        self.units = units
        self.piece_units = piece_units
        self._done = bytearray(units)
        self._claims = bytearray(units)  # assignments covering each unfinished unit (0-2)
        for index in done:
            if not 0 <= index < units:
                raise ValueError(f"PieceScheduler: no unit {index} in {units}")
            self._done[index] = 1
        self.done_count = sum(self._done)
        self._cursor = 0  # no unit below it is free, except those in _returned
        self._returned: list[int] = []  # heap of units given back by a release
        self._assigned: dict[str, _Assignment] = {}

    # -- state -------------------------------------------------------------------------

    @property
    def complete(self) -> bool:
        """True once every unit is done."""
        return self.done_count == self.units

    def is_done(self, index: int) -> bool:
        """Whether unit ``index`` is done."""
        return bool(self._done[index])

    def done_ranges(self) -> list[tuple[int, int]]:
        """The done units as sorted ``(start, end)`` runs (end exclusive)."""
        runs: list[tuple[int, int]] = []
        start = None
        for index, flag in enumerate(self._done):
            if flag and start is None:
                start = index
            elif not flag and start is not None:
                runs.append((start, index))
                start = None
        if start is not None:
            runs.append((start, self.units))
        return runs

    def holding(self) -> tuple[str, ...]:
        """The sources that hold a piece now."""
        return tuple(self._assigned)

    def piece_of(self, source: str) -> Piece | None:
        """The piece ``source`` holds, if any."""
        held = self._assigned.get(source)
        return held.piece if held is not None else None

    # -- handing out -------------------------------------------------------------------

    def _free(self, index: int) -> bool:
        return not self._done[index] and not self._claims[index]

    def _first_free(self) -> int | None:
        while self._returned:
            index = self._returned[0]
            if self._free(index):
                return index
            heapq.heappop(self._returned)
        while self._cursor < self.units and not self._free(self._cursor):
            self._cursor += 1
        return self._cursor if self._cursor < self.units else None

    def assign(self, source: str) -> Piece | None:
        """Give ``source`` its next piece, or None when there is nothing it could do
        now (everything missing is held, and duplicated already, or the file is done).

        Raises:
            ValueError: ``source`` still holds a piece (``release`` it first).
        """
        if source in self._assigned:
            raise ValueError(f"PieceScheduler: {source} already holds a piece")
        start = self._first_free()
        if start is not None:
            end = start + 1
            while end < self.units and end - start < self.piece_units and self._free(end):
                end += 1
            return self._hold(source, Piece(start, end))
        return self._duplicate(source)

    def _duplicate(self, source: str) -> Piece | None:
        best: _Assignment | None = None
        for held in self._assigned.values():
            left = self._left(held)
            if held.duplicated or not left:
                continue
            if best is None or left > self._left(best):
                best = held
        if best is None:
            return None
        if self._left(best) >= 2:
            # Split: the holder keeps the first half of what it has left.
            middle = best.next + (best.piece.end - best.next + 1) // 2
            stolen = Piece(middle, best.piece.end)
            best.piece = Piece(best.piece.start, middle)
            self._assigned[source] = _Assignment(stolen, middle)
            return stolen
        best.duplicated = True
        start = best.next
        while self._done[start]:
            start += 1
        piece = self._hold(source, Piece(start, best.piece.end))
        self._assigned[source].duplicated = True
        return piece

    def _left(self, held: _Assignment) -> int:
        return sum(1 for i in range(held.next, held.piece.end) if not self._done[i])

    def _hold(self, source: str, piece: Piece) -> Piece:
        for index in range(piece.start, piece.end):
            self._claims[index] += 1
        self._assigned[source] = _Assignment(piece, piece.start)
        return piece

    # -- progress ----------------------------------------------------------------------

    def unit_done(self, source: str, index: int) -> tuple[bool, frozenset[str]]:
        """``source`` delivered unit ``index`` (verified and on disk), the next of its
        piece.

        Returns:
            ``(new, finished)``: whether the unit was not done before (it counts), and
            the sources, ``source`` among them, whose pieces have nothing left to do:
            each of them should stop and ``release``.

        Raises:
            ValueError: ``index`` is not the next unit of the piece ``source`` holds.
        """
        held = self._assigned.get(source)
        if held is None or index != held.next or index >= held.piece.end:
            raise ValueError(f"PieceScheduler: unit {index} is not next for {source}")
        held.next += 1
        self._claims[index] -= 1
        new = not self._done[index]
        if new:
            self._done[index] = 1
            self.done_count += 1
        finished = frozenset(
            name
            for name, other in self._assigned.items()
            if other.piece.start <= index < other.piece.end and not self._left(other)
        )
        return new, finished

    def release(self, source: str) -> None:
        """``source`` stopped (its piece finished, it failed, or it was told to stop):
        the units of its piece it did not deliver are free again. No-op if it holds none."""
        held = self._assigned.pop(source, None)
        if held is None:
            return
        for index in range(held.next, held.piece.end):
            self._claims[index] -= 1
            if self._free(index):
                heapq.heappush(self._returned, index)
        for other in self._assigned.values():
            if other.duplicated and _overlap(other.piece, held.piece):
                other.duplicated = False  # its twin left: it may be duplicated again


def _overlap(a: Piece, b: Piece) -> bool:
    return a.start < b.end and b.start < a.end
