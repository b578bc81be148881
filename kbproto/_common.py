"""The commands and queries ``HubCore`` and ``ShareCore`` share (internal).

Both public cores hold one ``_Node`` engine and forward to it; this base only
forwards, it holds no state of its own. Every method that can queue output says
"Drain events and actions after calling" (STYLE rule 4).
"""

from __future__ import annotations

from kbproto._node import _Node
from kbproto.actions import Action
from kbproto.config import Limits
from kbproto.events import Event
from kbproto.ids import LinkId, LookupId, NodeId, StreamId
from kbproto.messages import FindResult, NodeInfo
from kbproto.proxy import HopStreams
from kbproto.state import StreamRole


class _CoreCommon:
    _node: _Node

    # --- NodeCore ---------------------------------------------------------------------

    def start(self, now: float, *, wall_ms: int | None = None) -> None:
        """Begin. With a parent configured, queues ``Dial(parent_url)``.

        Args:
            now: the driver's monotonic time.
            wall_ms: the wall clock at ``now`` in Unix milliseconds. It stamps this
                node's placements (docs/protocol.md §3.2), so a join made later, even
                by a restarted process, is newer wherever two placements of this node
                meet. None: ``now`` in milliseconds, for simulations and tests whose
                nodes share one clock.

        Drain events and actions after calling.

        Raises:
            LocalProtocolError: called twice.
        """
        self._node.start(now, wall_ms)

    def link_opened(self, link_id: LinkId, now: float, *, dialed: bool = False) -> None:
        """A link is up: accepted from a child, or (``dialed``) our ``Dial`` connected.

        A hub answers an accepted link with ``Challenge``; a share refuses it (error
        frame, ``Hangup``). Drain events and actions after calling.

        Raises:
            LocalProtocolError: ``link_id`` is already open, or ``dialed`` without a
                pending ``Dial``.
        """
        self._node.link_opened(link_id, now, dialed=dialed)

    def dial_failed(self, now: float, reason: str) -> None:
        """The pending ``Dial`` did not connect: a redial is scheduled (capped backoff).

        Raises:
            LocalProtocolError: no ``Dial`` was pending.
        """
        self._node.dial_failed(now, reason)

    def receive_data(self, link_id: LinkId, data: bytes, now: float) -> None:
        """Feed bytes received on ``link_id`` (any chunking). Never raises for bad input:
        a peer that breaks the protocol loses its link (``LinkClosed``). Bytes for a
        link already closed are ignored. Drain events and actions after calling.
        """
        self._node.receive_data(link_id, data, now)

    def receive_eof(self, link_id: LinkId, now: float) -> None:
        """The peer closed ``link_id`` (or the driver saw it fail, or a write failed).

        Emits ``LinkClosed`` and fails every stream and find that used the link;
        queues a ``Hangup`` so the driver releases it. Drain events and actions after.
        """
        self._node.receive_eof(link_id, now)

    def get_timer(self) -> float | None:
        """The earliest deadline at which ``handle_timer`` must be called, or None."""
        return self._node.get_timer()

    def handle_timer(self, now: float) -> None:
        """Fire every deadline due at ``now`` (pings, heartbeat and handshake timeouts,
        find and stream deadlines, redials); a no-op if none is due.
        Drain events and actions after calling."""
        self._node.handle_timer(now)

    def next_event(self) -> Event | None:
        """Pop the next app-facing event (``kbproto.events``), or None."""
        return self._node.next_event()

    def next_action(self) -> Action | None:
        """Pop the next ``Transmit``/``Dial``/``Hangup``, or None. Perform them in order."""
        return self._node.next_action()

    # --- links and identity -----------------------------------------------------------

    @property
    def info(self) -> NodeInfo:
        """This node's own info (the ``info`` of nodeinfo)."""
        return self._node.info

    @property
    def limits(self) -> Limits:
        """The size limits this core was configured with (``stream_window`` etc.)."""
        return self._node.limits

    @property
    def node_id(self) -> NodeId:
        """This node's id."""
        return self._node.node_id

    @property
    def parent_info(self) -> NodeInfo | None:
        """The parent's info once joined (``parent_hub_info`` of nodeinfo), else None."""
        return self._node.parent_info

    @property
    def parent_link(self) -> LinkId | None:
        """The link to the parent once joined, else None."""
        parent = self._node.parent
        return parent.link_id if parent is not None and parent.is_up else None

    def pending_bytes(self, link_id: LinkId) -> int:
        """Bytes queued for ``link_id`` not yet handed out as ``Transmit`` (0 if unknown)."""
        return self._node.pending_bytes(link_id)

    def close_link(self, link_id: LinkId, now: float, reason: str) -> None:
        """Close ``link_id`` ourselves (error frame ``shutdown``, then ``Hangup``).

        Drain events and actions after calling.

        Raises:
            LocalProtocolError: ``link_id`` is not open.
        """
        self._node.close_link(link_id, now, reason)

    def can_route(self, node_id: str) -> bool:
        """True if a request for ``node_id`` has somewhere to go (self, below, or up)."""
        return self._node.route(node_id, None) is not None

    def next_hop(self, node_id: str) -> HopStreams | None:
        """The link a request for ``node_id`` opened here would leave on, with how many
        streams we may have and have open on it; None for this node itself or when
        there is no route. A pure query (drivers share a link's streams among their
        clients with it)."""
        dest = self._node.route(node_id, None)
        if dest is None or dest == "self":
            return None
        return HopStreams(link_id=dest.link_id, limit=dest.peer_max_streams, open=dest.our_streams)

    # --- finds ------------------------------------------------------------------------

    def find(self, sha1: str, now: float, *, share_id: str | None = None) -> LookupId:
        """Find ``sha1`` in the whole network (or only on share ``share_id``).

        The answer comes later as ``LookupResolved`` or ``LookupFailed`` carrying the
        returned id (possibly during this call). Drain events and actions after.

        Raises:
            LocalProtocolError: malformed ``sha1`` or ``share_id``.
        """
        return self._node.lookups.find(sha1, now, share_id)

    def answer_now(
        self, sha1: str, *, share_id: str | None = None
    ) -> tuple[FindResult, ...] | None:
        """The answer ``find`` would give at once, without starting a find; else None.

        A pure query (no state change, no event, no action, no trace): the results
        ``find`` would resolve with, in the same order, when it would finish without
        sending any message (a share's own file; a hub's direct share children, with
        no child hub to ask and no need to ask up); ``()`` when ``find`` would fail at
        once ("not found"); None when ``find`` would ask a peer, or refuse because too
        many finds are pending. On None, call ``find``.

        Raises:
            LocalProtocolError: malformed ``sha1`` or ``share_id``.
        """
        return self._node.lookups.answer_now(sha1, share_id)

    # --- streams ----------------------------------------------------------------------

    def open_request(
        self,
        target: str,
        method: str,
        path: str,
        headers: tuple[tuple[str, str], ...] = (),
        *,
        now: float,
    ) -> StreamId:
        """Origin role: send an HTTP-like request to node ``target`` through the tree.

        ``path`` is the URL path the target serves (e.g. ``/ID/download/f.dat``).
        Events follow: ``ResponseStarted``, ``ResponseData``... then ``ResponseEnded``,
        or ``StreamReset`` (404 unknown node, 502, 503, 504). The first
        ``stream_window`` body bytes need no credit; return credit with
        ``grant_credit`` as you consume. Drain events and actions after calling.

        Raises:
            LocalProtocolError: ``target`` is this node (serve it locally) or the
                request is malformed.
        """
        return self._node.streams.open_request(target, method, path, headers, now)

    def grant_credit(self, stream_id: StreamId, amount: int, now: float) -> None:
        """Origin role: ``amount`` more body bytes may come (you consumed that many).

        A no-op if the stream already closed. Drain actions after calling.
        """
        self._node.streams.grant_credit(stream_id, amount, now)

    def respond(
        self,
        stream_id: StreamId,
        status: int,
        headers: tuple[tuple[str, str], ...] = (),
        *,
        now: float,
    ) -> None:
        """Target role: send the response head. A no-op if the stream already closed.

        Raises:
            LocalProtocolError: called twice, or a malformed head.
        """
        self._node.streams.respond(stream_id, status, headers, now)

    def send_data(self, stream_id: StreamId, data: bytes, now: float) -> None:
        """Target role: send body bytes (at most ``send_capacity``). A no-op if closed.

        Raises:
            LocalProtocolError: more than ``send_capacity`` bytes, or before ``respond``.
        """
        self._node.streams.send_data(stream_id, data, now)

    def end_stream(self, stream_id: StreamId, now: float) -> None:
        """Target role: the body is complete; the stream closes. A no-op if closed.

        Raises:
            LocalProtocolError: before ``respond``.
        """
        self._node.streams.end_stream(stream_id, now)

    def reset_stream(self, stream_id: StreamId, now: float, reason: str = "cancelled") -> None:
        """Either role: abort the stream at every hop (the client went away, a read
        failed...). A no-op if it already closed. Drain actions after calling."""
        self._node.streams.reset_stream(stream_id, now, reason)

    def send_capacity(self, stream_id: StreamId) -> int:
        """Target role: how many body bytes ``send_data`` accepts now (0 if closed)."""
        return self._node.streams.send_capacity(stream_id)

    def stream_role(self, stream_id: StreamId) -> StreamRole | None:
        """The role of an open stream, or None once it is closed."""
        return self._node.streams.role(stream_id)

    def response_link(self, stream_id: StreamId) -> LinkId | None:
        """Target role: the link the response of ``stream_id`` leaves on (None if it
        is not an open target stream). A pure query: a driver paces what it hands
        ``send_data`` by how much that link already has waiting to be written."""
        return self._node.streams.response_link(stream_id)

    # --- introspection for invariants and benchmarks ----------------------------------

    def open_streams(self) -> int:
        """Streams open at this node, all roles (0 when idle: nothing leaked)."""
        return len(self._node.streams)

    def pending_lookups(self) -> int:
        """Finds pending at this node (0 when idle)."""
        return len(self._node.lookups)

    def max_buffered_bytes(self) -> int:
        """The most body bytes this node buffers for any one relayed stream."""
        return self._node.streams.max_buffered()

    def link_ids(self) -> tuple[LinkId, ...]:
        """Every open link (any state)."""
        return tuple(self._node.links)
