"""Connection slots: how many connections a listener serves, per client and in all,
and which connection yields its slot when they run out.

Theory of operation
-------------------
Every accepted connection takes a ``ConnectionSlot`` from the listener's
``ConnectionSlots`` before anything is read from it, and gives it back when it ends.
Two budgets apply (``docs/security.md`` §3): ``limit`` slots in all, and at most
``per_client`` for one client (``kbtransport.clients.client_key``: an IPv4 address or
an IPv6 /64).

A slot records since when its connection has been *waiting on its client*
(``since``): a fresh connection that has sent nothing yet, an idle keep-alive
connection between two requests, or a request head still arriving in pieces. The HTTP
server keeps ``since`` up to date (one float store per request, the same store its
idle timer needs anyway) and sets it to None while a request is being served, or for
good once the connection became a websocket or an uplink. A waiting connection costs
its client nothing to re-open, so when slots run out it yields: a new connection of a
client at its own cap takes the slot of that client's longest-waiting connection, and
a new connection when all slots are taken takes the longest-waiting one of any client.
When nothing can yield, a client at its cap is refused (the listener answers 429),
and a new connection when every slot is busy waits for one (``wait_for_room``; the
listener accepts nothing more meanwhile). Eviction cancels the slot's scope, which ends the
connection's task; the slot is free at once, so memory and descriptors stay bounded
by ``limit`` plus the few connections still closing.

Finding the longest-waiting connection scans the slots (at most ``limit``), which only
happens when a budget is reached; admitting and releasing are a few dictionary
operations.
"""

from __future__ import annotations

from typing import Literal

import anyio

__all__ = ("ConnectionSlot", "ConnectionSlots", "NoSlot")

#: Why ``admit`` gave no slot, as the fitting HTTP status: 429, the client is at its
#: cap and none of its connections waits; 503, every slot is busy and none waits.
NoSlot = Literal[429, 503]


class ConnectionSlot:
    """One served connection's place in its listener's table.

    Attributes:
        client: the client key the slot is counted under.
        scope: the connection runs inside it; cancelling it (eviction, the idle
            timer) ends the connection.
        since: when the connection started waiting on its client (event-loop time),
            or None while it is being served.
    """

    __slots__ = ("client", "scope", "since")

    def __init__(self, client: str, since: float | None) -> None:
        self.client = client
        self.scope = anyio.CancelScope()
        self.since = since


class ConnectionSlots:
    """The slot table of one listener (see the module docstring).

    Args:
        limit: connections served at once, in all.
        per_client: connections served at once for one client.
    """

    def __init__(self, limit: int, per_client: int) -> None:
        if limit < 1 or per_client < 1:
            raise ValueError("connection budgets must be at least 1")
        self.limit = limit
        self.per_client = per_client
        self._slots: dict[ConnectionSlot, None] = {}
        self._by_client: dict[str, dict[ConnectionSlot, None]] = {}
        self._freed = anyio.Event()

    def __len__(self) -> int:
        return len(self._slots)

    def count(self, client: str) -> int:
        """Slots ``client`` holds."""
        held = self._by_client.get(client)
        return len(held) if held is not None else 0

    def admit(self, client: str, now: float) -> ConnectionSlot | NoSlot:
        """A slot for a new connection of ``client``, evicting a waiting one if needed.

        Args:
            client: the new connection's client key.
            now: the event loop's time; the new connection waits on its client from now.

        Returns:
            The slot, or why there is none (``NoSlot``).
        """
        held = self._by_client.get(client)
        if held is not None and len(held) >= self.per_client:
            victim = _longest_waiting(held)
            if victim is None:
                return 429
            self._evict(victim)
        elif len(self._slots) >= self.limit:
            victim = _longest_waiting(self._slots)
            if victim is None:
                return 503
            self._evict(victim)
        slot = ConnectionSlot(client, now)
        self._slots[slot] = None
        self._by_client.setdefault(client, {})[slot] = None
        return slot

    def release(self, slot: ConnectionSlot) -> None:
        """The connection ended: free its slot (a no-op for an evicted slot)."""
        if slot not in self._slots:
            return
        del self._slots[slot]
        held = self._by_client[slot.client]
        del held[slot]
        if not held:
            del self._by_client[slot.client]
        self._freed.set()

    def has_room(self) -> bool:
        """True if a new connection would get a slot (free, or one to evict) unless
        its own client is at its cap."""
        return len(self._slots) < self.limit or _longest_waiting(self._slots) is not None

    async def wait_for_room(self, recheck: float = 0.5) -> None:
        """Return once ``has_room``: woken by a release, and every ``recheck`` seconds
        (a busy connection that starts waiting does not wake anyone)."""
        while not self.has_room():
            with anyio.move_on_after(recheck):
                await self._freed.wait()
            if self._freed.is_set():
                self._freed = anyio.Event()

    def _evict(self, slot: ConnectionSlot) -> None:
        self.release(slot)
        slot.scope.cancel()


def _longest_waiting(slots: dict[ConnectionSlot, None]) -> ConnectionSlot | None:
    best: ConnectionSlot | None = None
    best_since = 0.0
    for slot in slots:
        since = slot.since
        if since is not None and (best is None or since < best_since):
            best = slot
            best_since = since
    return best
