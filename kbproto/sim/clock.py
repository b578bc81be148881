"""Simulated time for ``kbproto.sim``.

Strategy
--------
Nothing in a simulation ever sleeps. The scheduler jumps the clock straight to the
next due item, so a minute of heartbeats costs a handful of steps. Time never goes
backwards: ``advance_to`` refuses an earlier time, which catches a scheduler bug at
the step that made it instead of as a confusing reordering later. A node can see a
fixed offset from the shared clock (clock skew); cores only ever compare times they
were given themselves, so a constant offset must not change their behaviour.
"""

from __future__ import annotations

__all__ = ("SimClock",)


class SimClock:
    """A float ``now`` starting at ``start``, advanced only by the scheduler.

    Args:
        start: the initial time (seconds, any origin).
    """

    __slots__ = ("_now", "_offsets")

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._offsets: dict[str, float] = {}

    @property
    def now(self) -> float:
        """The shared simulated time."""
        return self._now

    def advance_to(self, when: float) -> None:
        """Move the clock to ``when``.

        Raises:
            ValueError: if ``when`` is earlier than ``now`` (time never goes back).
        """
        if when < self._now:
            raise ValueError(f"clock cannot go back from {self._now!r} to {when!r}")
        self._now = when

    def set_offset(self, node: str, offset: float) -> None:
        """Give ``node`` a fixed skew: it sees ``now + offset``."""
        if offset:
            self._offsets[node] = float(offset)
        else:
            self._offsets.pop(node, None)

    def offset(self, node: str) -> float:
        """The skew of ``node`` (0.0 unless set)."""
        return self._offsets.get(node, 0.0)

    def local(self, node: str) -> float:
        """The time ``node`` sees now."""
        return self._now + self._offsets.get(node, 0.0)
