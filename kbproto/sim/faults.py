"""How the simulated network misbehaves: a seeded ``FaultPlan`` and scheduled faults.

Strategy
--------
The plan has two halves. The *ambient* half is always on: every byte crosses a link
after a latency plus seeded jitter, and every ``Transmit`` is cut into random pieces
(single bytes included), because a byte stream keeps no message boundaries (anyio
``docs/streams.rst``). Bytes are never reordered *within* a link direction (TCP and
WebSocket keep order); reordering happens only *across* links, because each piece
of each link gets its own jitter.

The *scheduled* half is a list of ``(time, fault)`` pairs applied by the network at
those simulated times: link death (both ends see EOF after a detection delay),
half-open links (bytes vanish, no EOF: only heartbeats can tell), partitions (cut
traffic is held, as TCP would keep retransmitting, and released in order on heal),
crash and restart (a fresh core with the same identity), and slow nodes. Tests can
also apply the same faults directly through ``SimNetwork`` methods.

All randomness comes from the ``random.Random`` the network passes in, so a seed fixes
every cut and every delay.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = (
    "Crash",
    "Fault",
    "FaultPlan",
    "HalfOpen",
    "Heal",
    "KillLink",
    "Partition",
    "Restart",
    "Slow",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class KillLink:
    """The link between ``a`` and ``b`` dies: in-flight bytes are lost, both ends see EOF."""

    a: str
    b: str


@dataclass(frozen=True, slots=True, kw_only=True)
class HalfOpen:
    """The link between ``a`` and ``b`` goes silent in both directions with no EOF."""

    a: str
    b: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Partition:
    """Cut ``nodes`` off from every node not in ``nodes`` until ``Heal``."""

    nodes: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.nodes:
            raise ValueError("a partition needs at least one node")


@dataclass(frozen=True, slots=True, kw_only=True)
class Heal:
    """Every partition ends; held bytes are delivered in order."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Crash:
    """``node`` stops. ``silent``: its peers see nothing (a power cut); else EOF (a kill)."""

    node: str
    silent: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Restart:
    """``node`` comes back with a fresh core of the same identity and empty state."""

    node: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Slow:
    """Everything ``node`` processes (deliveries, timers) is late by ``delay`` seconds."""

    node: str
    delay: float

    def __post_init__(self) -> None:
        if self.delay < 0:
            raise ValueError("a slow-node delay cannot be negative")


#: Every fault the network can apply.
Fault = KillLink | HalfOpen | Partition | Heal | Crash | Restart | Slow


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultPlan:
    """A seeded description of the network's misbehaviour.

    Attributes:
        latency: fixed one-way delay of every piece (seconds).
        jitter: extra delay drawn uniformly from ``[0, jitter]`` per piece.
        connect_latency: time for a ``Dial`` to connect (or be refused).
        connect_timeout: time for a ``Dial`` into a partition or a silent node to fail.
        eof_delay: extra time before a hangup or link death reaches the peer (the
            detection delay of a FIN or RST).
        whole_chance: chance that a ``Transmit`` travels as one piece.
        max_pieces: most pieces one ``Transmit`` is cut into.
        single_byte_chance: chance that a cut ``Transmit`` also has a one-byte piece.
        schedule: ``(time, fault)`` pairs applied at those simulated times.
    """

    latency: float = 0.005
    jitter: float = 0.005
    connect_latency: float = 0.01
    connect_timeout: float = 5.0
    eof_delay: float = 0.05
    whole_chance: float = 0.3
    max_pieces: int = 8
    single_byte_chance: float = 0.3
    schedule: tuple[tuple[float, Fault], ...] = field(default=())

    def __post_init__(self) -> None:
        for name in ("latency", "jitter", "connect_latency", "connect_timeout", "eof_delay"):
            if getattr(self, name) < 0:
                raise ValueError(f"FaultPlan.{name} cannot be negative")
        for name in ("whole_chance", "single_byte_chance"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"FaultPlan.{name} must be in [0, 1]")
        if self.max_pieces < 1:
            raise ValueError("FaultPlan.max_pieces must be at least 1")
        for when, _fault in self.schedule:
            if when < 0:
                raise ValueError("scheduled faults need a time >= 0")

    def delay(self, rng: random.Random) -> float:
        """One piece's one-way delay: latency plus seeded jitter."""
        if self.jitter:
            return self.latency + rng.uniform(0.0, self.jitter)
        return self.latency

    def chunk(self, data: bytes, rng: random.Random) -> Sequence[bytes]:
        """Cut ``data`` into the pieces the receiver will see, in order.

        The pieces concatenate to ``data``; there are at most ``max_pieces`` plus two
        (the optional single-byte piece adds up to two cuts).
        """
        n = len(data)
        if n <= 1 or self.max_pieces == 1 or rng.random() < self.whole_chance:
            return (data,)
        k = rng.randint(1, min(self.max_pieces, n))
        cuts = _cut_points(rng, n, k - 1)
        if rng.random() < self.single_byte_chance:
            at = rng.randrange(0, n)
            if at:
                cuts.add(at)
            if at + 1 < n:
                cuts.add(at + 1)
        # Sorted, so set order (stable for ints anyway) never reaches the output.
        points = [0, *sorted(cuts), n]
        return tuple(data[points[i] : points[i + 1]] for i in range(len(points) - 1))


def _cut_points(rng: random.Random, n: int, count: int) -> set[int]:
    """``count`` distinct points in ``[1, n)``: ``set(rng.sample(range(1, n), count))``.

    Zero and one point (half of all cuts) skip ``sample``'s checks (an ABC
    ``isinstance`` per call) with the very same draws: none, and the one
    ``randrange(n - 1)`` that ``sample`` makes for its first item (tests pin this, and
    the golden trace pins the run).
    """
    if count == 0:
        return set()
    if count == 1:
        return {rng.randrange(n - 1) + 1}
    return set(rng.sample(range(1, n), count))
