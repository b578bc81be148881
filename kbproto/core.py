"""The surface every kbucket core shares, so one driver loop can run any of them.

``HubCore`` and ``ShareCore`` both satisfy ``NodeCore``. The simulator
(``kbproto.sim``) and the real driver (``kbtransport``) drive cores only through these
methods, which is what lets a whole network run deterministically with no sockets and
no clock (STYLE rules 2-4 and 11).
"""

from __future__ import annotations

from typing import Protocol

from kbproto.actions import Action
from kbproto.events import Event
from kbproto.ids import LinkId

__all__ = ("NodeCore",)


class NodeCore(Protocol):
    """Inputs are bytes per link and ``now``; outputs are drained events and actions.

    Call ``start(now)`` once before anything else (a node with a parent emits its
    first ``Dial`` then). After every call, drain ``next_event()`` then ``next_action()``
    until both return None (``kbproto.pump.drain`` does exactly that), then re-read
    ``get_timer()``. No method raises for anything a peer sent; only misuse by the
    caller raises ``LocalProtocolError``.
    """

    def start(self, now: float, *, wall_ms: int | None = None) -> None:
        """Begin: a node configured with a parent queues ``Dial`` (drain actions after).

        ``wall_ms`` is the wall clock at ``now`` (Unix milliseconds), which stamps the
        node's placements; None takes ``now`` itself (a simulation's shared clock).
        """
        ...

    def link_opened(self, link_id: LinkId, now: float, *, dialed: bool = False) -> None:
        """A link is up: accepted from a child, or (``dialed``) the parent dial succeeded."""
        ...

    def dial_failed(self, now: float, reason: str) -> None:
        """The pending ``Dial`` could not connect."""
        ...

    def receive_data(self, link_id: LinkId, data: bytes, now: float) -> None:
        """Feed bytes that arrived on ``link_id``, in any chunking."""
        ...

    def receive_eof(self, link_id: LinkId, now: float) -> None:
        """The peer closed ``link_id`` (or the driver saw it fail)."""
        ...

    def get_timer(self) -> float | None:
        """The earliest absolute deadline the core wants ``handle_timer`` at, if any."""
        ...

    def handle_timer(self, now: float) -> None:
        """Fire every deadline due at ``now``; a no-op if called early."""
        ...

    def next_event(self) -> Event | None:
        """Pop the next app-facing event, or None when there is none."""
        ...

    def next_action(self) -> Action | None:
        """Pop the next driver action, or None when there is none."""
        ...
