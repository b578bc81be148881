"""The engine shared by ``HubCore`` and ``ShareCore``: links, joining, liveness, index.

Strategy
--------
A share is a node with a parent, its own files and no children; a hub is a node with
an optional parent and children. Everything else (joining its parent, heartbeats,
redial, finds, streams) is the same, so both public cores wrap one ``_Node`` and
expose the commands that fit their role (STYLE rule 10: compose, do not inherit).

``_Node`` owns the per-link machinery and the driver-facing queues, and delegates:
lookups to ``routing.Lookups``, streams to ``proxy.Streams``, index data to
``index``. Those parts call back through a small internal surface: ``send``,
``send_bulk``, ``emit``, ``route``, ``fail_link`` and the ``deadlines`` registry.

Receive path (STYLE rule 8): ``receive_data`` feeds the link's ``FrameBuffer``,
decodes each frame, moves the link's state machine and dispatches. Any
``ProtocolError`` raised on the way is caught right there and ends *that link*:
an ``Error`` frame and a ``Hangup`` are queued and ``LinkClosed`` is emitted.

Output ordering: ``_actions`` holds ``Dial``/``Hangup`` and transmits that must come
before a hangup; links with queued frames wait in ``_ready`` (round-robin), and
``next_action`` turns one link's outbox into one ``Transmit`` at a time, control lane
first (see ``link.py``).
"""

from __future__ import annotations

from collections import deque
from typing import Literal

from kbproto.actions import Action, Dial, Hangup, Transmit
from kbproto.auth import Signer, Verifier, node_id_from_public_pem
from kbproto.budget import IndexBudget
from kbproto.codec import decode_split, encode, encoded_size
from kbproto.config import HubConfig, ShareConfig
from kbproto.errors import LimitExceeded, LocalProtocolError, ProtocolError, RemoteProtocolError
from kbproto.events import (
    ChildJoined,
    Event,
    IndexSynced,
    JoinRefused,
    LinkClosed,
    ParentConnected,
    PlacementRefused,
)
from kbproto.handshake import check_registration
from kbproto.ids import IdSource, LinkId, NodeId
from kbproto.index import HubIndex, ShareIndex, UplinkSync
from kbproto.link import Link
from kbproto.messages import (
    MAX_SEQ,
    MAX_TIMEOUT_MS,
    Challenge,
    Credit,
    Data,
    End,
    Error,
    Find,
    FindReply,
    HubIndexUpdate,
    IndexAck,
    Message,
    NodeInfo,
    Open,
    Ping,
    Placement,
    Register,
    Reset,
    Response,
    Resync,
    ShareIndexUpdate,
    Welcome,
)
from kbproto.placement import VerifiedPlacements, sign_placement
from kbproto.proxy import Streams
from kbproto.routing import Lookups
from kbproto.state import LinkInput, LinkState
from kbproto.timers import Deadlines
from kbproto.trace import NullTraceSink, TraceRecord, TraceSink

#: The shortest ping interval a peer's announced heartbeat timeout can ask of us (a
#: hostile peer announcing 1 ms must not turn our pings into a busy loop).
_MIN_PING_INTERVAL = 0.5
#: Which state-machine input each received message is.
_INPUT: dict[type[Message], LinkInput] = {
    Challenge: LinkInput.CHALLENGE,
    Register: LinkInput.REGISTER,
    Welcome: LinkInput.WELCOME,
    Error: LinkInput.ERROR,
    Ping: LinkInput.PING,
    ShareIndexUpdate: LinkInput.INDEX_REPORT,
    HubIndexUpdate: LinkInput.INDEX_REPORT,
    IndexAck: LinkInput.INDEX_CONTROL,
    Resync: LinkInput.INDEX_CONTROL,
    Find: LinkInput.LOOKUP,
    FindReply: LinkInput.LOOKUP,
    Open: LinkInput.STREAM,
    Response: LinkInput.STREAM,
    Data: LinkInput.STREAM,
    End: LinkInput.STREAM,
    Credit: LinkInput.STREAM,
    Reset: LinkInput.STREAM,
}


class _Node:
    """The shared engine (internal; use ``HubCore`` or ``ShareCore``)."""

    def __init__(
        self,
        config: HubConfig | ShareConfig,
        *,
        signer: Signer,
        verifier: Verifier | None,
        ids: IdSource,
        trace: TraceSink | None,
    ) -> None:
        """Build the engine; see ``HubCore``/``ShareCore`` for the arguments."""
        self.config = config
        self.limits = config.limits
        self.timeouts = config.timeouts
        self.is_hub = isinstance(config, HubConfig)
        self.signer = signer
        self.ids = ids
        self.tracer: TraceSink = trace if trace is not None else NullTraceSink()
        pem = signer.public_pem
        self.info = NodeInfo(
            node_id=node_id_from_public_pem(pem),
            node_type="hub" if self.is_hub else "leaf",
            name=config.name,
            description=config.description,
            owner=config.owner,
            owner_email=config.owner_email,
            listen_url=config.listen_url,
            public_key=pem,
            scientific_research="yes",
            confirm_share="" if self.is_hub else "yes",
        )
        self.node_id: NodeId = self.info.node_id
        # Placement stamps (docs/protocol.md §3.2): wall-clock milliseconds derived from
        # ``now`` and the offset ``start`` was given, kept above the last one used.
        self._wall_offset_ms = 0.0
        self._last_stamp = 0
        # Every open link, by the driver's id. A link leaves this table exactly once,
        # in ``_close``; everything keyed by link id elsewhere is cleaned up there.
        self.links: dict[LinkId, Link] = {}
        # The link to our parent from the moment we dial it (not only once joined):
        # its loss, in any state, is what schedules the next redial.
        self.parent: Link | None = None
        self.parent_info: NodeInfo | None = None
        self.deadlines = Deadlines()
        self._events: deque[Event] = deque()
        # Dial/Hangup, and the last bytes of a link being closed: these must come
        # out before anything else so a Hangup always follows its link's goodbye.
        self._actions: deque[Action] = deque()
        # Links with queued frames, oldest first (a dict is an ordered set); a link
        # with more output than one Transmit goes to the back: round-robin fairness.
        self._ready: dict[LinkId, None] = {}
        self._started = False
        # At most one Dial is in flight; the driver answers it with
        # link_opened(dialed=True) or dial_failed (core.py).
        self._dialing = False
        # Consecutive failed joins: the backoff exponent, reset by Welcome.
        self._attempt = 0
        # Our parent closed the link for a ``limit``: the next dial waits longer.
        self._limited = False
        self.hub_index: HubIndex | None = None
        self.share_index: ShareIndex | None = None
        self.placements: VerifiedPlacements | None = None
        if self.is_hub:
            assert verifier is not None
            self.placements = VerifiedPlacements(verifier)
            self.hub_index = HubIndex(
                self._changed,
                self._changed,
                self._placement_refused,
                check=self.placements.check,
                budget=IndexBudget(
                    total=self.limits.index_budget, open_quota=self.limits.open_child_quota
                ),
                max_nodes=self.limits.max_nodes_per_child,
            )
        else:
            self.share_index = ShareIndex(self._changed)
        # What we still owe our parent about our index (share files, or the hub's
        # reachable content and node ids); idle until we join.
        self.uplink = UplinkSync(
            self._uplink_keys,
            self._uplink_build,
            self._uplink_cost,
            window=self.limits.index_window,
            batch_bytes=self.limits.index_batch_bytes,
        )
        self._synced_reported = False
        self.lookups = Lookups(self)
        self.streams = Streams(self)

    # --- driver-facing ----------------------------------------------------------------

    def start(self, now: float, wall_ms: int | None = None) -> None:
        """Begin: dial the parent if there is one (``_CoreCommon.start``)."""
        if self._started:
            raise LocalProtocolError("start() was already called")
        self._started = True
        if wall_ms is not None:
            self._wall_offset_ms = wall_ms - now * 1000
        if self.config.parent_url is not None:
            self._dial(now)

    def link_opened(self, link_id: LinkId, now: float, *, dialed: bool = False) -> None:
        """A link is up; a hub challenges an accepted child, a share refuses it."""
        if link_id in self.links:
            raise LocalProtocolError(f"link {link_id} is already open")
        if dialed:
            if not self._dialing:
                raise LocalProtocolError("link_opened(dialed=True) without a pending Dial")
            self._dialing = False
        link = Link(
            link_id,
            dialed=dialed,
            now=now,
            max_control=self.limits.max_control_frame,
            ping_interval=self.timeouts.heartbeat_interval,
        )
        # Every link gets the same three timers from birth: the handshake must finish,
        # we ping at every interval, and the peer must be heard from within the
        # heartbeat timeout (which is what finds half-open links).
        self.links[link_id] = link
        self._trace(now, "link", link_id, "dialed parent" if dialed else "accepted")
        if dialed:
            self.parent = link
        elif not self.is_hub:
            self.fail_link(link, now, "refused", "this node is a share: it accepts no children")
            return
        else:
            link.nonce = self.ids.nonce(32).hex()
            self.send(
                link,
                Challenge(
                    nonce=link.nonce,
                    node_id=self.node_id,
                    max_streams=self.limits.max_streams_per_link,
                    max_lookups=self.limits.max_lookups_per_link,
                    heartbeat_timeout_ms=self._heartbeat_timeout_ms,
                ),
            )
        self.deadlines.set(("hs", link_id), now + self.timeouts.handshake_timeout)
        self.deadlines.set(("ping", link_id), now + self.timeouts.heartbeat_interval)
        self.deadlines.set(("rx", link_id), now + self.timeouts.heartbeat_timeout)

    def dial_failed(self, now: float, reason: str) -> None:
        """The pending dial failed: schedule the next one with backoff."""
        if not self._dialing:
            raise LocalProtocolError("dial_failed() without a pending Dial")
        self._dialing = False
        self._trace(now, "link", None, f"dial failed: {reason}")
        self._schedule_redial(now)

    def receive_data(self, link_id: LinkId, data: bytes, now: float) -> None:
        """Parse, decode and dispatch every complete frame; a protocol error ends the link."""
        link = self.links.get(link_id)
        if link is None:
            # Bytes still in flight after we hung up: nothing to do with them.
            return
        # Any bytes at all prove the peer is alive, even half a frame: a slow link
        # carrying one large frame must not look silent.
        link.last_rx = now
        try:
            link.frames.feed(data)
            while not link.closed:
                frame = link.frames.next_split()
                if frame is None:
                    break
                self._dispatch(link, decode_split(*frame), now)
        except ProtocolError as exc:
            # The state machine may already say CLOSED; what matters is whether we
            # have said goodbye yet (the link is still in the table).
            if self.links.get(link_id) is link:
                code = "limit" if isinstance(exc, LimitExceeded) else "protocol"
                self.fail_link(link, now, code, str(exc))

    def receive_eof(self, link_id: LinkId, now: float) -> None:
        """The peer went away: close the link and fail what depended on it."""
        link = self.links.get(link_id)
        if link is None:
            return
        self._close(link, now, "closed by peer")

    def close_link(self, link_id: LinkId, now: float, reason: str) -> None:
        """Close a link on the app's request, with an ``Error(shutdown)`` goodbye."""
        link = self.links.get(link_id)
        if link is None:
            raise LocalProtocolError(f"link {link_id} is not open")
        self.fail_link(link, now, "shutdown", reason)

    def get_timer(self) -> float | None:
        """The earliest armed deadline, or None."""
        return self.deadlines.earliest()

    def handle_timer(self, now: float) -> None:
        """Fire every due deadline by kind (redial, lookup, stream, or a link timer)."""
        # One key at a time: firing one may cancel another due key (see pop_next_due).
        while (key := self.deadlines.pop_next_due(now)) is not None:
            assert isinstance(key, tuple)
            kind = key[0]
            if kind == "redial":
                self._dial(now)
            elif kind == "lookup":
                self.lookups.on_timer(key[1], now)
            elif kind == "stream":
                self.streams.on_timer(key[1], now)
            else:
                link = self.links.get(key[1])
                if link is not None:
                    self._link_timer(kind, link, now)

    def next_event(self) -> Event | None:
        """Pop the next app-facing event."""
        return self._events.popleft() if self._events else None

    def next_action(self) -> Action | None:
        """Pop the next action: queued Dial/Hangup first, then one link's outbox."""
        if self._actions:
            return self._actions.popleft()
        while self._ready:
            link_id = next(iter(self._ready))
            del self._ready[link_id]
            # Closing a link removes it from ``_ready``; only links with output are in it.
            link = self.links[link_id]
            data = link.take(self.limits.transmit_bytes)
            if link.has_output():
                self._ready[link_id] = None
            return Transmit(link_id=link_id, data=data)
        return None

    def pending_bytes(self, link_id: LinkId) -> int:
        """Bytes still queued in ``link_id``'s outbox (0 for unknown links)."""
        link = self.links.get(link_id)
        return link.pending_bytes() if link is not None else 0

    # --- internal surface for routing/proxy -------------------------------------------

    def send(self, link: Link, message: Message) -> None:
        """Queue a control message on ``link``."""
        link.queue_control(encode(message))
        self._ready[link.link_id] = None

    def send_bulk(self, link: Link, frame: bytes) -> None:
        """Queue encoded data or ``End`` frames (one or several whole frames) on ``link``."""
        link.queue_bulk(frame)
        self._ready[link.link_id] = None

    def emit(self, event: Event) -> None:
        """Queue an app-facing event."""
        self._events.append(event)

    def route(self, target: str, came_from: Link | None) -> Link | Literal["self"] | None:
        """Where a request for node ``target`` goes next, loop-free by construction.

        Down to the child whose subtree holds ``target``; up to the parent only if the
        request did not come from the parent and ``target`` is not in our subtree;
        never back to the link it came from. Once a request goes down it never goes
        up again, so no path is longer than twice the tree's depth.
        """
        if target == self.node_id:
            return "self"
        if self.hub_index is not None:
            link_id = self.hub_index.route(target)
            if link_id is not None:
                if came_from is not None and link_id == came_from.link_id:
                    return None
                return self.links[link_id]
        parent = self.parent
        if parent is not None and parent.is_up and came_from is not parent:
            return parent
        return None

    def in_subtree(self, node_id: str) -> bool:
        """True if ``node_id`` is this node or below it."""
        if node_id == self.node_id:
            return True
        return self.hub_index is not None and self.hub_index.has_node(node_id)

    def fail_link(
        self, link: Link, now: float, code: str, reason: str, *, timed_out: bool = False
    ) -> None:
        """Say goodbye on ``link`` with an ``Error`` frame, then hang up and clean up."""
        self._trace(now, "error", link.link_id, f"{code}: {reason}")
        link.queue_control(encode(Error(code=code, reason=reason[:4096])))
        self._close(link, now, reason, timed_out=timed_out)

    def trace(self, now: float, category: str, link: Link | None, detail: str) -> None:
        """Hand one record to the trace sink."""
        self._trace(now, category, link.link_id if link is not None else None, detail)

    # --- index ------------------------------------------------------------------------

    def _changed(self, key: bytes) -> None:
        """An index key changed locally: the uplink reports it at the next flush."""
        self.uplink.changed(key)

    def _uplink_keys(self) -> list[bytes]:
        """Every key a full sync must send (for a hub: node ids first, since a parent
        sizes a child hub's quota by the nodes it proves, then content ids)."""
        if self.share_index is not None:
            return self.share_index.keys()
        assert self.hub_index is not None
        return self.hub_index.node_keys() + self.hub_index.content_keys()

    def _uplink_cost(self, key: bytes) -> int:
        """The worst-case encoded size of one key's index entry."""
        if self.share_index is not None:
            rep = self.share_index.representative(key)
            # Worst case: every path character escaped as \u00XX by the JSON encoder.
            return 64 + (6 * len(rep[0]) if rep is not None else 0)
        if len(key) == 12:
            assert self.hub_index is not None
            placement = self.hub_index.placement(key)
            # A placement, exactly (it can be tens of KiB); a drop is a short id.
            return 32 + (encoded_size(placement) if placement is not None else 0)
        return 48

    def _uplink_build(
        self, reset: bool, seq: int, keys: list[bytes]
    ) -> ShareIndexUpdate | HubIndexUpdate:
        """One index message for ``keys``, from their state *now* (put if present, else drop)."""
        if self.share_index is not None:
            put: list[tuple[str, str, int]] = []
            drop: list[str] = []
            for key in keys:
                rep = self.share_index.representative(key)
                # A key removed since it was queued is dropped, even in a reset batch
                # (the parent ignores drops of entries it does not hold).
                if rep is None:
                    drop.append(key.hex())
                else:
                    put.append((key.hex(), rep[0], rep[1]))
            return ShareIndexUpdate(seq=seq, reset=reset, put=tuple(put), drop=tuple(drop))
        hub = self.hub_index
        assert hub is not None
        cput: list[str] = []
        cdrop: list[str] = []
        nput: list[Placement] = []
        ndrop: list[NodeId] = []
        for key in keys:
            # Node ids are 12 ASCII bytes, content ids 20 raw bytes: the length tells.
            if len(key) == 12:
                placement = hub.placement(key)
                if placement is not None:
                    nput.append(placement)
                else:
                    ndrop.append(NodeId(key.decode()))
            else:
                (cput if hub.has_content(key) else cdrop).append(key.hex())
        return HubIndexUpdate(
            seq=seq,
            reset=reset,
            content_put=tuple(cput),
            content_drop=tuple(cdrop),
            nodes_put=tuple(nput),
            nodes_drop=tuple(ndrop),
        )

    def flush_index(self) -> None:
        """Send whatever index messages the window allows."""
        parent = self.parent
        if parent is None or not parent.is_up:
            return
        for message in self.uplink.next_messages():
            self.send(parent, message)
            self._synced_reported = False
        if self.uplink.idle and not self._synced_reported:
            self._synced_reported = True
            count = (
                self.share_index.content_count
                if self.share_index is not None
                else self.hub_index.content_count  # type: ignore[union-attr]
            )
            self.emit(IndexSynced(link_id=parent.link_id, entries=count))

    # --- receive dispatch -------------------------------------------------------------

    def _dispatch(self, link: Link, message: Message, now: float) -> None:
        """Move the state machine for ``message``, then hand it to the part that owns it."""
        was_registering = link.state in (LinkState.DIALED, LinkState.REGISTERING)
        link.machine.process(_INPUT[type(message)])
        if isinstance(message, Data | Open | Response | End | Credit | Reset):
            self.streams.on_message(link, message, now)
        elif isinstance(message, Ping):
            pass
        elif isinstance(message, Find):
            self.lookups.on_find(link, message, now)
        elif isinstance(message, FindReply):
            self.lookups.on_reply(link, message, now)
        elif isinstance(message, ShareIndexUpdate | HubIndexUpdate):
            self._on_index(link, message, now)
        elif isinstance(message, IndexAck):
            self.uplink.acked(message.seq)
            self.flush_index()
        elif isinstance(message, Resync):
            self._trace(
                now, "index", link.link_id, f"parent asked for resync at {message.expected}"
            )
            self.uplink.resync()
            self.flush_index()
        elif isinstance(message, Challenge):
            self._on_challenge(link, message, now)
        elif isinstance(message, Register):
            self._on_register(link, message, now)
        elif isinstance(message, Welcome):
            self._on_welcome(link, message, now)
        else:
            assert isinstance(message, Error)
            reason = f"peer closed the link: {message.reason}"
            if was_registering and link.dialed:
                self.emit(JoinRefused(link_id=link.link_id, reason=message.reason))
            if link.dialed and message.code == "limit":
                # Rejoining soon would send the same index and be refused again: a
                # full sync every few seconds for both sides. The next dial waits
                # ``limit_backoff`` instead of the usual short backoff.
                self._limited = True
            self._close(link, now, reason)

    def _on_challenge(self, link: Link, message: Challenge, now: float) -> None:
        """Child side: sign the transcript and register."""
        link.nonce = message.nonce
        link.peer_max_streams = message.max_streams
        link.peer_max_lookups = message.max_lookups
        self._pace_pings(link, message.heartbeat_timeout_ms, now)
        placement = sign_placement(
            self.signer,
            self.info,
            parent=message.node_id,
            nonce=message.nonce,
            stamp=self._next_stamp(now),
        )
        self.send(
            link,
            Register(
                placement=placement,
                passcode=self.config.parent_passcode,
                max_streams=self.limits.max_streams_per_link,
                max_lookups=self.limits.max_lookups_per_link,
                heartbeat_timeout_ms=self._heartbeat_timeout_ms,
            ),
        )

    def _next_stamp(self, now: float) -> int:
        """The stamp of our next placement: the wall clock in milliseconds, kept above
        the last one used (a clock stepped back must not make a newer join look older)."""
        wall = int(now * 1000 + self._wall_offset_ms)
        self._last_stamp = min(MAX_SEQ, max(self._last_stamp + 1, wall))
        return self._last_stamp

    @property
    def _heartbeat_timeout_ms(self) -> int:
        """Our heartbeat timeout as announced in the handshake."""
        return min(MAX_TIMEOUT_MS, max(1, round(self.timeouts.heartbeat_timeout * 1000)))

    def _pace_pings(self, link: Link, peer_timeout_ms: int, now: float) -> None:
        """Ping at least three times per the peer's announced heartbeat timeout, so a
        peer configured with a shorter timeout than our ping interval never drops us.
        A peer cannot make us ping more often than every ``_MIN_PING_INTERVAL``."""
        wanted = max(peer_timeout_ms / 3000, _MIN_PING_INTERVAL)
        interval = min(self.timeouts.heartbeat_interval, wanted)
        link.ping_interval = interval
        key = ("ping", link.link_id)
        due = self.deadlines.get(key)
        if due is None or due > now + interval:
            self.deadlines.set(key, now + interval)

    def _on_register(self, link: Link, message: Register, now: float) -> None:
        """Parent side: check the registration, then welcome or refuse the child.

        The checks that need no hub state are in ``handshake.check_registration``;
        the ones here depend on who else is connected. A refused child gets one
        ``Error(refused, reason)`` and the link closes; nothing it sent is kept.
        """
        assert self.hub_index is not None
        assert self.placements is not None
        assert isinstance(self.config, HubConfig)
        info = message.info
        reason = check_registration(
            message,
            nonce=link.nonce,
            parent_id=self.node_id,
            passcode=self.config.passcode,
            check=self.placements.check,
        )
        children = [other for other in self.links.values() if other.state is LinkState.CHILD_UP]
        if reason is None:
            if info.node_id == self.node_id:
                reason = "a node cannot join itself"
            elif any(other.peer_id == info.node_id for other in children if other is not link):
                reason = f"node {info.node_id} is already connected to this hub"
            elif len(children) > self.limits.max_children:
                reason = f"this hub is full ({self.limits.max_children} children)"
        if reason is not None:
            self.fail_link(link, now, "refused", reason)
            return
        link.peer = info
        link.peer_max_streams = message.max_streams
        link.peer_max_lookups = message.max_lookups
        self._pace_pings(link, message.heartbeat_timeout_ms, now)
        # A child that presented the hub's passcode is trusted with the whole index
        # budget; on an open hub every child proved only its key (kbproto.budget).
        self.hub_index.add_child(
            link.link_id,
            message.placement,
            is_hub=info.node_type == "hub",
            trusted=bool(self.config.passcode),
        )
        self.deadlines.cancel(("hs", link.link_id))
        self.send(link, Welcome(info=self.info))
        self._trace(now, "link", link.link_id, f"child {info.node_id} ({info.name}) joined")
        self.emit(ChildJoined(link_id=link.link_id, info=info))
        self.flush_index()

    def _on_welcome(self, link: Link, message: Welcome, now: float) -> None:
        """Child side: joined; start the full index sync."""
        link.peer = message.info
        self.parent_info = message.info
        self._attempt = 0
        self.deadlines.cancel(("hs", link.link_id))
        self._trace(now, "link", link.link_id, f"joined parent {message.info.node_id}")
        self.emit(ParentConnected(link_id=link.link_id, info=message.info))
        self._synced_reported = False
        self.uplink.start()
        self.flush_index()

    def _on_index(self, link: Link, message: ShareIndexUpdate | HubIndexUpdate, now: float) -> None:
        """Parent side: apply an index batch (or ask for a resync), acknowledge it.

        Every batch is acknowledged, even one ignored while waiting for a reset: the
        child's window counts messages, not accepted messages. Applying a batch may
        change what this hub can reach, so our own uplink is flushed too.
        """
        assert self.hub_index is not None
        if isinstance(message, HubIndexUpdate) and any(
            placement.node_id == self.node_id for placement in message.nodes_put
        ):
            raise RemoteProtocolError("cycle: this hub is inside the child's subtree")
        expected = self.hub_index.apply(link.link_id, message)
        if expected is not None:
            self._trace(now, "index", link.link_id, f"gap: got {message.seq}, want {expected}")
            self.send(link, Resync(expected=expected))
        self.send(link, IndexAck(seq=message.seq))
        self.flush_index()

    def _placement_refused(self, link_id: int, placement: Placement, reason: str) -> None:
        """A child reported a node id without a valid placement: it was dropped. The
        app hears of the first one per link (later ones are counted by the table,
        which closes the link past ``MAX_UNPROVEN_CLAIMS``)."""
        link = self.links[LinkId(link_id)]
        detail = f"dropped unproven node id {placement.node_id}: {reason}"
        # Called while the link's index message is applied: ``last_rx`` is that ``now``.
        self._trace(link.last_rx, "index", link.link_id, detail)
        assert self.hub_index is not None
        if self.hub_index.nodes.unproven(link_id) == 1:
            self.emit(
                PlacementRefused(
                    link_id=link.link_id,
                    peer_id=link.peer_id,
                    node_id=placement.node_id,
                    reason=reason,
                )
            )

    # --- timers, closing, redial ------------------------------------------------------

    def _link_timer(self, kind: str, link: Link, now: float) -> None:
        """A per-link deadline fired: send a ping, or close a silent or stuck link."""
        if kind == "ping":
            self.send(link, Ping())
            self.deadlines.set(("ping", link.link_id), now + link.ping_interval)
        elif kind == "rx":
            due = link.last_rx + self.timeouts.heartbeat_timeout
            if due > now:
                self.deadlines.set(("rx", link.link_id), due)
            else:
                silent = self.timeouts.heartbeat_timeout
                self.fail_link(
                    link, now, "timeout", f"no frame from peer for {silent:g} s", timed_out=True
                )
        else:  # "hs": cancelled when the handshake finishes, so it is still pending
            self.fail_link(link, now, "timeout", "handshake timed out", timed_out=True)

    def _close(self, link: Link, now: float, reason: str, *, timed_out: bool = False) -> None:
        """Flush the outbox, hang up, forget the link and fail everything that used it.

        Order matters: the link leaves ``links`` before streams and lookups are told,
        so nothing they do can send on it; ``LinkClosed`` comes before the stream and
        lookup failures it causes, so an app sees the cause first.
        """
        # ``peer`` is set only once a registration was accepted (or Welcome arrived).
        was_child = not link.dialed and link.peer is not None
        role = "parent" if link.dialed else ("child" if was_child else "pending")
        peer_id = link.peer_id
        link.machine.close()
        while link.has_output():
            self._actions.append(
                Transmit(link_id=link.link_id, data=link.take(self.limits.transmit_bytes))
            )
        self._actions.append(Hangup(link_id=link.link_id, reason=reason))
        del self.links[link.link_id]
        self._ready.pop(link.link_id, None)
        for kind in ("hs", "ping", "rx"):
            self.deadlines.cancel((kind, link.link_id))
        self._trace(now, "link", link.link_id, f"closed: {reason}")
        self.emit(
            LinkClosed(
                link_id=link.link_id,
                peer_id=peer_id,
                role=role,
                reason=reason,
                timed_out=timed_out,
            )
        )
        self.streams.link_lost(link, now)
        self.lookups.link_lost(link, now)
        if link is self.parent:
            self.parent = None
            self.parent_info = None
            self.uplink.stop()
            self._schedule_redial(now)
        elif was_child:
            assert self.hub_index is not None
            self.hub_index.drop_child(link.link_id)
            self.flush_index()

    def _dial(self, now: float) -> None:
        """Ask the driver to dial the parent."""
        url = self.config.parent_url
        assert url is not None
        self._dialing = True
        self._trace(now, "link", None, f"dialing {url}")
        self._actions.append(Dial(address=url))

    def _schedule_redial(self, now: float) -> None:
        """Arm the next dial: capped exponential backoff with jitter in [0.5, 1]."""
        if self._limited:
            self._limited = False
            delay = self.timeouts.limit_backoff
        else:
            delay = min(self.timeouts.reconnect_max, self.timeouts.reconnect_min * 2**self._attempt)
            self._attempt = min(self._attempt + 1, 32)
        self.deadlines.set(("redial",), now + delay * self.ids.uniform(0.5, 1.0))

    def _trace(self, now: float, category: str, link_id: LinkId | None, detail: str) -> None:
        """Hand one record to the trace sink."""
        self.tracer.record(TraceRecord(now=now, category=category, link_id=link_id, detail=detail))
