"""The engine shared by ``HubCore`` and ``ShareCore``: links, joining, liveness, index.

Strategy
--------
A share is a node with a parent, its own files and no children; a hub is a node with
an optional parent and children. Everything else (joining its parent, heartbeats,
redial, finds, streams) is the same, so both public cores wrap one ``_Node`` and
expose the commands that fit their role (STYLE rule 10: compose, do not inherit).

``_Node`` owns the per-link machinery and the driver-facing queues, and delegates:
lookups to ``routing.Lookups``, streams to ``proxy.Streams``, index data to
``index``. Lookups and streams reach the node only through the narrow ports of
``kbproto.port``, which ``_Node`` implements (``send``, ``send_bulk``, ``emit``,
``trace``, ``set_timer``/``cancel_timer``, ``route``, ``parent_link``,
``in_subtree``, ``local_answer``).

Two of the node's lifecycles are tables in ``kbproto.state``, driven from here:

* each link's (``LINK_TRANSITIONS``): every decoded frame, EOF and link timeout is a
  link input; the effect it names is one of the ``_LINK_EFFECTS`` methods below
  (register, admit, join, apply an index report, hand a find or a stream frame on,
  close);
* the way to the parent (``PARENT_TRANSITIONS``): start, dial, join, and after a
  lost link back off and dial again (``_PARENT_EFFECTS``).

Every timer is a ``timers.TimerKey``; ``handle_timer`` hands each due key to the
handler of its kind (``_TIMER_HANDLERS``).

Receive path (STYLE rule 8): ``receive_data`` feeds the link's ``FrameBuffer``,
decodes each frame and feeds it to the link's machine. Any ``ProtocolError`` raised
on the way is caught right there and ends *that link*: an ``Error`` frame and a
``Hangup`` are queued and ``LinkClosed`` is emitted.

Output ordering: ``_actions`` holds ``Dial``/``Hangup`` and transmits that must come
before a hangup; links with queued frames wait in ``_ready`` (round-robin), and
``next_action`` turns one link's outbox into one ``Transmit`` at a time, control lane
first (see ``link.py``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Literal

from kbproto.actions import Action, Dial, Hangup, Transmit
from kbproto.auth import Signer, Verifier, node_id_from_public_pem
from kbproto.budget import IndexBudget
from kbproto.codec import decode_split, encode
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
from kbproto.ids import IdSource, LinkId, NodeId, StreamId
from kbproto.index import HubIndex, ShareIndex, UplinkSync
from kbproto.link import Link
from kbproto.messages import (
    MAX_RESULTS,
    MAX_SEQ,
    MAX_TIMEOUT_MS,
    Challenge,
    Credit,
    Data,
    End,
    Error,
    Find,
    FindReply,
    FindResult,
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
from kbproto.sharestore import ShareFiles, StoreView
from kbproto.state import (
    PARENT_TRANSITIONS,
    LinkEffect,
    LinkInput,
    LinkState,
    ParentEffect,
    ParentInput,
    ParentState,
    StateMachine,
)
from kbproto.timers import Deadlines, TimerKey, TimerKind
from kbproto.trace import NullTraceSink, TraceRecord, TraceSink

#: The shortest ping interval a peer's announced heartbeat timeout can ask of us (a
#: hostile peer announcing 1 ms must not turn our pings into a busy loop).
_MIN_PING_INTERVAL = 0.5
#: Which link input each received message is.
_INPUT: dict[type[Message], LinkInput] = {
    Challenge: LinkInput.CHALLENGE,
    Register: LinkInput.REGISTER,
    Welcome: LinkInput.WELCOME,
    Error: LinkInput.ERROR,
    Ping: LinkInput.PING,
    ShareIndexUpdate: LinkInput.INDEX_REPORT,
    HubIndexUpdate: LinkInput.INDEX_REPORT,
    IndexAck: LinkInput.INDEX_ACK,
    Resync: LinkInput.RESYNC,
    Find: LinkInput.FIND,
    FindReply: LinkInput.FIND_REPLY,
    Open: LinkInput.STREAM,
    Response: LinkInput.STREAM,
    Data: LinkInput.STREAM,
    End: LinkInput.STREAM,
    Credit: LinkInput.STREAM,
    Reset: LinkInput.STREAM,
}
#: The timers every link has from birth to close.
_LINK_TIMERS = (TimerKind.HANDSHAKE, TimerKind.PING, TimerKind.SILENCE)
_REDIAL = TimerKey(TimerKind.REDIAL)


class _Node:
    """The shared engine (internal; use ``HubCore`` or ``ShareCore``).

    Implements ``kbproto.port.StreamPort`` and ``kbproto.port.LookupPort``.
    """

    def __init__(
        self,
        config: HubConfig | ShareConfig,
        *,
        signer: Signer,
        verifier: Verifier | None,
        ids: IdSource,
        trace: TraceSink | None,
        share_files: ShareFiles | None = None,
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
        # A hub with a relay cache serves the requests naming content it would relay
        # itself (``HubCore.take_content_requests``, docs/protocol.md §13).
        self.takes_content = False
        # Placement stamps (docs/protocol.md §3.2): wall-clock milliseconds derived from
        # ``now`` and the offset ``start`` was given, kept above the last one used.
        self._wall_offset_ms = 0.0
        self._last_stamp = 0
        # Every open link, by the driver's id. A link leaves this table exactly once,
        # in ``_close``; everything keyed by link id elsewhere is cleaned up there.
        self.links: dict[LinkId, Link] = {}
        # The link to our parent from the moment it opens (not only once joined): its
        # loss, in any state, is what the parent cycle backs off from.
        self.parent: Link | None = None
        self.parent_info: NodeInfo | None = None
        # Where we are on the way to our parent (docs/protocol.md §4.3).
        self._parent_cycle: StateMachine[ParentState, ParentInput, ParentEffect] = StateMachine(
            "parent link", PARENT_TRANSITIONS, ParentState.NOT_STARTED
        )
        # Consecutive failed joins: the backoff exponent, reset by Welcome.
        self._attempt = 0
        self.deadlines: Deadlines[TimerKey] = Deadlines()
        self._events: deque[Event] = deque()
        # Dial/Hangup, and the last bytes of a link being closed: these must come
        # out before anything else so a Hangup always follows its link's goodbye.
        self._actions: deque[Action] = deque()
        # Links with queued frames, oldest first (a dict is an ordered set); a link
        # with more output than one Transmit goes to the back: round-robin fairness.
        self._ready: dict[LinkId, None] = {}
        self.hub_index: HubIndex | None = None
        self.share_index: ShareIndex | StoreView | None = None
        self.placements: VerifiedPlacements | None = None
        index: HubIndex | ShareIndex | StoreView
        if self.is_hub:
            assert verifier is not None
            self.placements = VerifiedPlacements(verifier)
            index = self.hub_index = HubIndex(
                self._changed,
                self._changed,
                self._placement_refused,
                check=self.placements.check,
                budget=IndexBudget(
                    total=self.limits.index_budget, open_quota=self.limits.open_child_quota
                ),
                max_nodes=self.limits.max_nodes_per_child,
            )
            keys: Callable[[], Iterable[bytes]] = index.report_keys
        else:
            index = self.share_index = (
                ShareIndex(self._changed) if share_files is None else StoreView(share_files)
            )
            keys = index.keys
        # What we still owe our parent about our index (share files, or the hub's
        # reachable content and node ids); stopped until we join.
        self.uplink = UplinkSync(
            keys,
            index.report,
            index.report_cost,
            self._index_synced,
            window=self.limits.index_window,
            batch_bytes=self.limits.index_batch_bytes,
        )
        self.lookups = Lookups(self)
        self.streams = Streams(self)

    # --- driver-facing ----------------------------------------------------------------

    def start(self, now: float, wall_ms: int | None = None) -> None:
        """Begin: dial the parent if there is one (``_CoreCommon.start``)."""
        alone = self.config.parent_url is None
        self._parent_input(ParentInput.START_ALONE if alone else ParentInput.START, now)
        if wall_ms is not None:
            self._wall_offset_ms = wall_ms - now * 1000

    def link_opened(self, link_id: LinkId, now: float, *, dialed: bool = False) -> None:
        """A link is up; a hub challenges an accepted child, a share refuses it."""
        if link_id in self.links:
            raise LocalProtocolError(f"link {link_id} is already open")
        if dialed:
            self._parent_input(ParentInput.CONNECTED, now)
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
        self.deadlines.set(
            TimerKey(TimerKind.HANDSHAKE, link_id), now + self.timeouts.handshake_timeout
        )
        self.deadlines.set(
            TimerKey(TimerKind.PING, link_id), now + self.timeouts.heartbeat_interval
        )
        self.deadlines.set(
            TimerKey(TimerKind.SILENCE, link_id), now + self.timeouts.heartbeat_timeout
        )

    def dial_failed(self, now: float, reason: str) -> None:
        """The pending dial failed: schedule the next one with backoff."""
        self._parent_input(ParentInput.DIAL_FAILED, now, reason)

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
                message = decode_split(*frame)
                self._link_input(link, _INPUT[type(message)], message, now)
        except ProtocolError as exc:
            # No effect raises after closing its own link, so the link is still open
            # here (its machine may already say CLOSED): say goodbye.
            code = "limit" if isinstance(exc, LimitExceeded) else "protocol"
            self.fail_link(link, now, code, str(exc))

    def receive_eof(self, link_id: LinkId, now: float) -> None:
        """The peer went away: close the link and fail what depended on it."""
        link = self.links.get(link_id)
        if link is not None:
            self._link_input(link, LinkInput.EOF, None, now)

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
        """Fire every due deadline, each by the handler of its kind."""
        # One key at a time: firing one may cancel another due key (see pop_next_due).
        while (key := self.deadlines.pop_next_due(now)) is not None:
            _TIMER_HANDLERS[key.kind](self, key.subject, now)

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

    # --- the ports (kbproto.port) -----------------------------------------------------

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

    def trace(self, now: float, category: str, link: Link | None, detail: str) -> None:
        """Hand one record to the trace sink."""
        self._trace(now, category, link.link_id if link is not None else None, detail)

    def set_timer(self, key: TimerKey, when: float) -> None:
        """Arm (or re-arm) ``key`` for absolute time ``when``."""
        self.deadlines.set(key, when)

    def cancel_timer(self, key: TimerKey) -> None:
        """Disarm ``key`` (a no-op if it is not armed)."""
        self.deadlines.cancel(key)

    def parent_link(self) -> Link | None:
        """The link to our parent while it is up, else None."""
        parent = self.parent
        return parent if parent is not None and parent.is_up else None

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
        parent = self.parent_link()
        if parent is not None and came_from is not parent:
            return parent
        return None

    def in_subtree(self, node_id: str) -> bool:
        """True if ``node_id`` is this node or below it."""
        if node_id == self.node_id:
            return True
        return self.hub_index is not None and self.hub_index.has_node(node_id)

    def local_answer(
        self, raw: bytes, share_id: NodeId | None, came_from: Link | None
    ) -> tuple[list[FindResult], list[Link]]:
        """What this node answers for content ``raw`` from its own index, and which
        child hubs to ask (docs/protocol.md §6 step 1). No side effects.

        A share: its own file (if ``share_id`` is absent or itself), no hubs. A hub, in
        one pass over the index's holders of ``raw`` (skipping ``came_from``): each
        direct share child holding it, without duplicates and at most ``MAX_RESULTS``
        (as ``routing`` keeps a find's results, so ``answer_now`` and ``find``
        agree), and each child hub whose subtree holds it (and ``share_id``, if given).
        A hub holding the content itself (its relay cache, ``HubCore.put_cached``) is
        the first result, with the content id as its path: the nearest copy first.
        """
        results: list[FindResult] = []
        hubs: list[Link] = []
        if self.share_index is not None:
            if share_id is None or share_id == self.node_id:
                entry = self.share_index.representative(raw)
                if entry is not None:
                    results.append(
                        FindResult(
                            kbshare_id=self.node_id,
                            share_url=self.info.listen_url,
                            path=entry[0],
                            size=entry[1],
                            hops=(),
                        )
                    )
            return results, hubs
        hub = self.hub_index
        assert hub is not None
        own = hub.own_size(raw) if share_id is None or share_id == self.node_id else None
        if own is not None:
            results.append(
                FindResult(
                    kbshare_id=self.node_id,
                    share_url=self.info.listen_url,
                    path=raw.hex(),
                    size=own,
                    hops=(),
                )
            )
        seen: set[tuple[str, str]] = set()
        for link_id, entry in hub.holders(raw):
            link = self.links.get(link_id)
            if link is None or link is came_from or link.peer is None:
                continue
            peer = link.peer
            if peer.node_type == "leaf":
                if share_id is None or share_id == peer.node_id:
                    assert entry is not None
                    key = (peer.node_id, entry[0])
                    if key not in seen and len(results) < MAX_RESULTS:
                        seen.add(key)
                        results.append(
                            FindResult(
                                kbshare_id=peer.node_id,
                                share_url=peer.listen_url,
                                path=entry[0],
                                size=entry[1],
                                hops=(),
                            )
                        )
            elif share_id is None or hub.child_reaches(link_id, share_id):
                hubs.append(link)
        return results, hubs

    def fail_link(
        self, link: Link, now: float, code: str, reason: str, *, timed_out: bool = False
    ) -> None:
        """Say goodbye on ``link`` with an ``Error`` frame, then hang up and clean up."""
        self._trace(now, "error", link.link_id, f"{code}: {reason}")
        link.queue_control(encode(Error(code=code, reason=reason[:4096])))
        self._close(link, now, reason, timed_out=timed_out)

    # --- the link machine -------------------------------------------------------------

    def _link_input(self, link: Link, event: LinkInput, payload: Any, now: float) -> None:
        """Feed ``event`` to ``link``'s machine and run the effect its table names."""
        effect = link.machine.process(event)
        if effect is not None:
            _LINK_EFFECTS[effect](self, link, payload, now)

    def _register(self, link: Link, message: Challenge, now: float) -> None:
        """Child side: sign a placement for the challenge and register."""
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
        key = TimerKey(TimerKind.PING, link.link_id)
        due = self.deadlines.get(key)
        if due is None or due > now + interval:
            self.deadlines.set(key, now + interval)

    def _admit(self, link: Link, message: Register, now: float) -> None:
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
        self.deadlines.cancel(TimerKey(TimerKind.HANDSHAKE, link.link_id))
        self.send(link, Welcome(info=self.info))
        self._trace(now, "link", link.link_id, f"child {info.node_id} ({info.name}) joined")
        self.emit(ChildJoined(link_id=link.link_id, info=info))
        self.flush_index()

    def _join(self, link: Link, message: Welcome, now: float) -> None:
        """Child side: the parent welcomed us; the parent cycle takes it from here."""
        link.peer = message.info
        self.deadlines.cancel(TimerKey(TimerKind.HANDSHAKE, link.link_id))
        self._parent_input(ParentInput.WELCOME, now, message)

    def _apply_index(
        self, link: Link, message: ShareIndexUpdate | HubIndexUpdate, now: float
    ) -> None:
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

    def _index_acked(self, link: Link, message: IndexAck, now: float) -> None:
        """Child side: the parent acknowledged one of our index messages."""
        self.uplink.acked(message.seq)
        self.flush_index()

    def _resend_index(self, link: Link, message: Resync, now: float) -> None:
        """Child side: the parent saw a gap and wants our whole index again."""
        self._trace(now, "index", link.link_id, f"parent asked for resync at {message.expected}")
        self.uplink.resync()
        self.flush_index()

    def _find(self, link: Link, message: Find, now: float) -> None:
        self.lookups.on_find(link, message, now)

    def _find_reply(self, link: Link, message: FindReply, now: float) -> None:
        self.lookups.on_reply(link, message, now)

    def _stream(
        self, link: Link, message: Open | Response | Data | End | Credit | Reset, now: float
    ) -> None:
        self.streams.on_message(link, message, now)

    def _parent_closed(self, link: Link, message: Error, now: float) -> None:
        """Our parent said goodbye: tell the parent cycle why, then close."""
        limited = message.code == "limit"
        self._parent_input(ParentInput.LIMIT_ERROR if limited else ParentInput.ERROR, now, message)
        self._close(link, now, f"peer closed the link: {message.reason}")

    def _child_closed(self, link: Link, message: Error, now: float) -> None:
        """A child (or a link not yet registered) said goodbye."""
        self._close(link, now, f"peer closed the link: {message.reason}")

    def _peer_gone(self, link: Link, payload: None, now: float) -> None:
        self._close(link, now, "closed by peer")

    def _time_out(self, link: Link, reason: str, now: float) -> None:
        self.fail_link(link, now, "timeout", reason, timed_out=True)

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
        for kind in _LINK_TIMERS:
            self.deadlines.cancel(TimerKey(kind, link.link_id))
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
            self._parent_input(ParentInput.LINK_LOST, now)
        elif was_child:
            assert self.hub_index is not None
            self.hub_index.drop_child(link.link_id)
            self.flush_index()

    # --- the parent cycle -------------------------------------------------------------

    def _parent_input(self, event: ParentInput, now: float, payload: Any = None) -> None:
        """Feed the parent cycle; run the effect its table names.

        Raises:
            LocalProtocolError: the driver's call does not fit (``dial_failed()`` with
                no dial out, a second ``start()``).
        """
        effect = self._parent_cycle.process(event)
        if effect is not None:
            _PARENT_EFFECTS[effect](self, now, payload)

    def _dial(self, now: float, payload: None) -> None:
        """Ask the driver to dial the parent."""
        url = self.config.parent_url
        assert url is not None
        self._trace(now, "link", None, f"dialing {url}")
        self._actions.append(Dial(address=url))

    def _back_off(self, now: float, payload: None) -> None:
        """Arm the next dial: capped exponential backoff with jitter in [0.5, 1]."""
        delay = min(self.timeouts.reconnect_max, self.timeouts.reconnect_min * 2**self._attempt)
        self._attempt = min(self._attempt + 1, 32)
        self.deadlines.set(_REDIAL, now + delay * self.ids.uniform(0.5, 1.0))

    def _back_off_failed_dial(self, now: float, reason: str) -> None:
        self._trace(now, "link", None, f"dial failed: {reason}")
        self._back_off(now, None)

    def _back_off_long(self, now: float, payload: None) -> None:
        """Rejoining soon would send the same index and be refused again: a full sync
        every few seconds for both sides. The next dial waits ``limit_backoff``."""
        self.deadlines.set(_REDIAL, now + self.timeouts.limit_backoff * self.ids.uniform(0.5, 1.0))

    def _enter_tree(self, now: float, message: Welcome) -> None:
        """Joined: reset the backoff, tell the app, start the full index sync."""
        parent = self.parent
        assert parent is not None  # the link that was welcomed
        self.parent_info = message.info
        self._attempt = 0
        self._trace(now, "link", parent.link_id, f"joined parent {message.info.node_id}")
        self.emit(ParentConnected(link_id=parent.link_id, info=message.info))
        self.uplink.start()
        self.flush_index()

    def _report_refusal(self, now: float, message: Error) -> None:
        parent = self.parent
        assert parent is not None  # the link being refused
        self.emit(JoinRefused(link_id=parent.link_id, reason=message.reason))

    # --- timers -----------------------------------------------------------------------

    def _redial_due(self, subject: int, now: float) -> None:
        self._parent_input(ParentInput.REDIAL_DUE, now)

    def _lookup_due(self, subject: int, now: float) -> None:
        self.lookups.on_timer(subject, now)

    def _stream_due(self, subject: int, now: float) -> None:
        self.streams.on_timer(StreamId(subject), now)

    def _handshake_due(self, subject: int, now: float) -> None:
        # Cancelled when the handshake finishes, or when the link closes.
        self._link_input(self.links[LinkId(subject)], LinkInput.TIMEOUT, "handshake timed out", now)

    def _ping_due(self, subject: int, now: float) -> None:
        link = self.links[LinkId(subject)]
        self.send(link, Ping())
        self.deadlines.set(TimerKey(TimerKind.PING, subject), now + link.ping_interval)

    def _silence_due(self, subject: int, now: float) -> None:
        """Re-arm from the last bytes received, or close a link silent for too long."""
        link = self.links[LinkId(subject)]
        silent = self.timeouts.heartbeat_timeout
        due = link.last_rx + silent
        if due > now:
            self.deadlines.set(TimerKey(TimerKind.SILENCE, subject), due)
        else:
            self._link_input(link, LinkInput.TIMEOUT, f"no frame from peer for {silent:g} s", now)

    # --- index ------------------------------------------------------------------------

    def _changed(self, key: bytes) -> None:
        """An index key changed locally: the uplink reports it at the next flush."""
        self.uplink.changed(key)

    def flush_index(self) -> None:
        """Send whatever index messages the window allows (once joined)."""
        parent = self.parent_link()
        if parent is not None:
            self.uplink.flush(lambda message: self.send(parent, message))

    def _index_synced(self) -> None:
        """Everything we reported was acknowledged: tell the app."""
        parent = self.parent
        assert parent is not None  # the uplink runs only while joined
        index = self.share_index if self.share_index is not None else self.hub_index
        assert index is not None
        self.emit(IndexSynced(link_id=parent.link_id, entries=index.content_count))

    def _trace(self, now: float, category: str, link_id: LinkId | None, detail: str) -> None:
        """Hand one record to the trace sink."""
        self.tracer.record(TraceRecord(now=now, category=category, link_id=link_id, detail=detail))


#: Each effect of ``LINK_TRANSITIONS``, bound to what does it. The payload is the
#: decoded message for a frame, None for EOF, the reason for a timeout: the table's
#: input decides which (so it is ``Any`` here).
_LINK_EFFECTS: dict[LinkEffect, Callable[[_Node, Link, Any, float], None]] = {
    LinkEffect.REGISTER: _Node._register,
    LinkEffect.ADMIT: _Node._admit,
    LinkEffect.JOIN: _Node._join,
    LinkEffect.APPLY_INDEX: _Node._apply_index,
    LinkEffect.INDEX_ACKED: _Node._index_acked,
    LinkEffect.RESEND_INDEX: _Node._resend_index,
    LinkEffect.FIND: _Node._find,
    LinkEffect.FIND_REPLY: _Node._find_reply,
    LinkEffect.STREAM: _Node._stream,
    LinkEffect.PARENT_CLOSED: _Node._parent_closed,
    LinkEffect.CHILD_CLOSED: _Node._child_closed,
    LinkEffect.PEER_GONE: _Node._peer_gone,
    LinkEffect.TIME_OUT: _Node._time_out,
}

#: Each effect of ``PARENT_TRANSITIONS``, bound to what does it (the payload: the
#: parent's ``Welcome`` or ``Error``, the reason a dial failed, or None).
_PARENT_EFFECTS: dict[ParentEffect, Callable[[_Node, float, Any], None]] = {
    ParentEffect.DIAL: _Node._dial,
    ParentEffect.BACK_OFF: _Node._back_off,
    ParentEffect.BACK_OFF_FAILED_DIAL: _Node._back_off_failed_dial,
    ParentEffect.BACK_OFF_LONG: _Node._back_off_long,
    ParentEffect.ENTER_TREE: _Node._enter_tree,
    ParentEffect.REPORT_REFUSAL: _Node._report_refusal,
}

#: What runs when a timer of each kind fires, with the key's subject.
_TIMER_HANDLERS: dict[TimerKind, Callable[[_Node, int, float], None]] = {
    TimerKind.REDIAL: _Node._redial_due,
    TimerKind.LOOKUP: _Node._lookup_due,
    TimerKind.STREAM: _Node._stream_due,
    TimerKind.HANDSHAKE: _Node._handshake_due,
    TimerKind.PING: _Node._ping_due,
    TimerKind.SILENCE: _Node._silence_due,
}
