"""One peer connection as seen by a core: state, framing, outbox, liveness, counters.

Strategy
--------
A ``Link`` is bookkeeping, not policy: the node decides what to send and how to react;
the link keeps the per-connection facts the node needs (STYLE rule 10).

The outbox has two lanes so control messages are never stuck behind bulk data
(docs/protocol.md "One large download never delays index messages or finds"): *control*
(handshake, pings, index, finds, stream heads, credit, resets) and *bulk* (data frames
and ``End``, which must stay behind the data of its stream). ``take()`` always empties
the control lane first. Bulk bytes are bounded by flow control (each stream's credit),
so the whole outbox is bounded too; ``pending_bytes()`` reports it for the driver's
back-pressure (STYLE rule 9).
"""

from __future__ import annotations

from collections import deque

from kbproto.framing import FrameBuffer
from kbproto.ids import LinkId, NodeId
from kbproto.messages import NodeInfo
from kbproto.state import LinkState, LinkStateMachine

__all__ = ("Link",)


class Link:
    """The per-link state a node keeps.

    Args:
        link_id: the driver's handle.
        dialed: True if we opened it (toward our parent).
        now: when it opened.
        max_control: the control frame cap for the receive side.
        ping_interval: seconds between our pings until the peer announces its timeout.
    """

    def __init__(
        self,
        link_id: LinkId,
        *,
        dialed: bool,
        now: float,
        max_control: int,
        ping_interval: float,
    ) -> None:
        self.link_id = link_id
        self.dialed = dialed
        self.machine = LinkStateMachine(LinkState.DIALED if dialed else LinkState.ACCEPTED)
        self.frames = FrameBuffer(max_control)
        #: The peer's info once it identified itself (Register or Welcome).
        self.peer: NodeInfo | None = None
        #: The nonce we sent (parent side) or received (child side).
        self.nonce = ""
        self.opened_at = now
        self.last_rx = now
        #: Limits the peer announced for what we may open toward it.
        self.peer_max_streams = 1
        self.peer_max_lookups = 1
        #: Seconds between our pings: ours, or a third of the peer's heartbeat timeout.
        self.ping_interval = ping_interval
        #: Streams: the dialer uses odd numbers, the acceptor even (no collisions).
        self.next_stream = 1 if dialed else 2
        self.highest_peer_stream = 0
        #: Streams the peer opened toward us that are still open / that we opened.
        self.peer_streams = 0
        self.our_streams = 0
        #: Finds: ids we allocate for our queries; count of the peer's pending ones.
        self.next_query = 0
        self.peer_lookups = 0
        self.our_lookups = 0
        self._control: deque[bytes] = deque()
        self._bulk: deque[bytes] = deque()
        self._pending = 0

    @property
    def state(self) -> LinkState:
        """The link's state (see ``kbproto.state``)."""
        return self.machine.state

    @property
    def peer_id(self) -> NodeId | None:
        """The peer's node id once known."""
        return self.peer.node_id if self.peer is not None else None

    @property
    def is_up(self) -> bool:
        """True once the handshake finished and until the link closes."""
        return self.machine.state in (LinkState.PARENT_UP, LinkState.CHILD_UP)

    @property
    def closed(self) -> bool:
        """True once the link is CLOSED."""
        return self.machine.state is LinkState.CLOSED

    def queue_control(self, frame: bytes) -> None:
        """Queue an encoded control frame (sent before any bulk frame)."""
        self._control.append(frame)
        self._pending += len(frame)

    def queue_bulk(self, frame: bytes) -> None:
        """Queue encoded data or ``End`` frames, whole (sent in order, after control)."""
        self._bulk.append(frame)
        self._pending += len(frame)

    def pending_bytes(self) -> int:
        """Bytes queued in the outbox and not yet handed to the driver."""
        return self._pending

    def has_output(self) -> bool:
        """True if the outbox holds anything."""
        return self._pending > 0

    def take(self, limit: int) -> bytes:
        """Remove and return up to about ``limit`` bytes of whole entries, control first.

        Always returns at least one entry (one or more whole frames) when not empty.
        """
        control = self._control
        if len(control) == 1 and not self._bulk:
            # The common case (a ping, an ack, one index batch): no join, no copy.
            frame = control.popleft()
            self._pending -= len(frame)
            return frame
        parts: list[bytes] = []
        size = 0
        for lane in (self._control, self._bulk):
            while lane and (not parts or size + len(lane[0]) <= limit):
                frame = lane.popleft()
                parts.append(frame)
                size += len(frame)
            if lane:
                break
        self._pending -= size
        return b"".join(parts)
