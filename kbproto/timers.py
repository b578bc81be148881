"""Deadlines: the one registry of every timer in a core (STYLE rule 2).

Strategy
--------
A core never sleeps and never reads a clock. Each thing that can time out (a link's
heartbeat, a handshake, a lookup, a stream, a redial) registers an absolute deadline
under a key. The driver asks ``earliest()`` (the core's ``get_timer()``) and calls the
core back at that time; the core pops the due keys and acts on them.

A binary heap with lazy deletion keeps ``set``/``cancel`` O(log n): a cancelled or
re-armed key leaves a stale heap entry that ``pop_next_due``/``earliest`` skip. Ties are
broken by insertion order, so runs are deterministic. Stale entries are bounded: the
heap is rebuilt when it holds more than twice the live keys.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable

__all__ = ("Deadlines",)


class Deadlines:
    """Keyed absolute deadlines; never reads a clock."""

    def __init__(self) -> None:
        self._when: dict[Hashable, float] = {}
        self._heap: list[tuple[float, int, Hashable]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        """Number of live deadlines."""
        return len(self._when)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._when

    def set(self, key: Hashable, when: float) -> None:
        """Arm (or re-arm) ``key`` to fire at absolute time ``when``."""
        if self._when.get(key) == when:
            return
        self._when[key] = when
        heapq.heappush(self._heap, (when, next(self._seq), key))
        if len(self._heap) > 2 * len(self._when) + 64:
            self._heap = [(w, s, k) for (w, s, k) in self._heap if self._when.get(k) == w]
            heapq.heapify(self._heap)

    def cancel(self, key: Hashable) -> None:
        """Disarm ``key``; a no-op if it is not armed."""
        self._when.pop(key, None)

    def get(self, key: Hashable) -> float | None:
        """The deadline of ``key``, or None."""
        return self._when.get(key)

    def earliest(self) -> float | None:
        """The earliest live deadline, or None when nothing is armed."""
        heap = self._heap
        while heap:
            when, _, key = heap[0]
            if self._when.get(key) == when:
                return when
            heapq.heappop(heap)
        return None

    def pop_next_due(self, now: float) -> Hashable | None:
        """Disarm and return the earliest key due at or before ``now``, or None.

        One key at a time, not a batch: acting on one key may cancel another that is
        also due (a link timeout closes that link's streams), and a cancelled key must
        not fire.
        """
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, _, key = heapq.heappop(heap)
            if self._when.get(key) == when:
                del self._when[key]
                return key
        return None
