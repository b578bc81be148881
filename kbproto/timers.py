"""Deadlines: the one registry of every timer in a core (STYLE rule 2).

Strategy
--------
A core never sleeps and never reads a clock. Each thing that can time out (a link's
heartbeat, a handshake, a lookup, a stream, a redial) registers an absolute deadline
under a key. The driver asks ``earliest()`` (the core's ``get_timer()``) and calls the
core back at that time; the core pops the due keys and acts on them.

A core's keys are ``TimerKey``s: a ``TimerKind`` naming what the timer is for, and
the number of the thing it belongs to (a link, a find, a stream). The kind says which
handler runs when the key fires (``_node._TIMER_HANDLERS``); docs/protocol.md §8
lists the timers and their defaults.

A binary heap with lazy deletion keeps ``set``/``cancel`` O(log n): a cancelled or
re-armed key leaves a stale heap entry that ``pop_next_due``/``earliest`` skip. Ties are
broken by insertion order, so runs are deterministic. Stale entries are bounded: the
heap is rebuilt when it holds more than twice the live keys.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections.abc import Hashable
from typing import Generic, NamedTuple, TypeVar

__all__ = ("Deadlines", "TimerKey", "TimerKind")

KeyT = TypeVar("KeyT", bound=Hashable)


class TimerKind(enum.Enum):
    """What a core's timer is for."""

    #: A link must finish its handshake (``Timeouts.handshake_timeout``).
    HANDSHAKE = "handshake"
    #: Send the next ping on a link (the heartbeat interval).
    PING = "ping"
    #: The peer of a link must have been heard from (``Timeouts.heartbeat_timeout``):
    #: what finds half-open links.
    SILENCE = "silence"
    #: Dial the parent again (the reconnect backoff); one per node.
    REDIAL = "redial"
    #: A find must be answered (``Timeouts.lookup_timeout``, or the asker's ttl).
    LOOKUP = "lookup"
    #: A stream must see its head, then some frame, in time (``request_timeout``,
    #: ``stream_idle_timeout``).
    STREAM = "stream"

    # Identity hashing is exact for enum members (singletons): the keys are hashed
    # on every arm and cancel, and this spares Enum.__hash__'s Python-level call.
    __hash__ = object.__hash__


class TimerKey(NamedTuple):
    """One timer of a core: its kind and what it belongs to.

    Attributes:
        kind: what the timer is for.
        subject: the link id (``HANDSHAKE``, ``PING``, ``SILENCE``), the find's key
            (``LOOKUP``) or the stream id (``STREAM``); 0 for the node's ``REDIAL``.
    """

    kind: TimerKind
    subject: int = 0


class Deadlines(Generic[KeyT]):
    """Keyed absolute deadlines; never reads a clock."""

    def __init__(self) -> None:
        self._when: dict[KeyT, float] = {}
        self._heap: list[tuple[float, int, KeyT]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        """Number of live deadlines."""
        return len(self._when)

    def __contains__(self, key: object) -> bool:
        return key in self._when

    def set(self, key: KeyT, when: float) -> None:
        """Arm (or re-arm) ``key`` to fire at absolute time ``when``."""
        if self._when.get(key) == when:
            return
        self._when[key] = when
        heapq.heappush(self._heap, (when, next(self._seq), key))
        if len(self._heap) > 2 * len(self._when) + 64:
            self._heap = [(w, s, k) for (w, s, k) in self._heap if self._when.get(k) == w]
            heapq.heapify(self._heap)

    def cancel(self, key: KeyT) -> None:
        """Disarm ``key``; a no-op if it is not armed."""
        self._when.pop(key, None)

    def get(self, key: KeyT) -> float | None:
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

    def pop_next_due(self, now: float) -> KeyT | None:
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
