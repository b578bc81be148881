"""The one module that reads the clock and draws OS entropy (STYLE rules 1 and 13).

Cores take ``now`` and an ``IdSource``; drivers get both from here, and tests swap in
fakes (``kbproto.ids.SeededIdSource``, a fixed clock) without patching globals.
"""

from __future__ import annotations

import os
import random
import time
from typing import Protocol

import anyio

__all__ = ("AnyioClock", "Clock", "SystemIdSource", "wall_clock_ms")


class Clock(Protocol):
    """Monotonic seconds from an arbitrary origin."""

    def now(self) -> float:
        """Return the current time."""
        ...


class AnyioClock:
    """The event loop's clock (``anyio.current_time``): the same one deadlines use."""

    def now(self) -> float:
        """Return the event loop's monotonic time; call it from inside the loop."""
        return anyio.current_time()


def wall_clock_ms() -> int:
    """The wall clock in Unix milliseconds: what stamps a node's placements (a core
    gets it once, at ``start``, and counts on with its monotonic ``now``)."""
    return time.time_ns() // 1_000_000


class SystemIdSource:
    """An ``IdSource`` (``kbproto.ids.IdSource``) backed by the operating system."""

    def __init__(self) -> None:
        # SystemRandom draws from os.urandom, so jitter is not predictable by peers.
        self._random = random.SystemRandom()

    def nonce(self, nbytes: int) -> bytes:
        """Return ``nbytes`` bytes from ``os.urandom``."""
        return os.urandom(nbytes)

    def uniform(self, low: float, high: float) -> float:
        """Return a number in ``[low, high]`` from the OS generator."""
        return self._random.uniform(low, high)
