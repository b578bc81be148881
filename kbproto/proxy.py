"""Proxy streams: HTTP-like requests to any node id, with credit flow control.

Strategy
--------
A request for node X becomes a *stream* (docs/protocol.md §7). At the node where it
starts (the *origin*, e.g. the hub whose HTTP server got ``GET /X/download/f``) the
app calls ``open_request``; the core sends ``Open`` toward X along the node's route
(down to the child whose subtree holds X, else up). Every hub on the way is a
*relay*: it opens a new stream on the next link and pairs the two. At X (the
*target*) the app gets ``RequestReceived`` and answers with a response head, body
data and an end. A hub whose node ``takes_content`` (a relay cache,
``HubCore.take_content_requests``) is the target of ``GET``/``HEAD /X/sha1/SHA1``
instead of a relay: its app answers the content itself (docs/protocol.md §13).
Either end, or any relay, may ``Reset``; a reset travels hop by hop to both ends, and
so does the loss of any link on the way (502), a requester going away (499) or a
timeout (504).

A stream's life is ``kbproto.state.STREAM_TRANSITIONS``, one table per role: every
frame, app command and verdict of the node (deadline, lost link, no route) is an
input; ``_step`` looks it up, moves the stream's state and runs the effect bound in
``_EFFECTS`` below. Nothing here decides by hand whether a frame fits the stream's
state or role: a pair missing from the table is the error.

Flow control is per stream and per hop, like HTTP/2's but simpler (only responses
carry bodies): the requester side of each hop announces a window in ``Open`` and
returns ``Credit`` as it consumes. A relay grants its upstream hop only what it has
forwarded downstream, so the bytes a relay buffers for one stream never exceed the
window it announced (``Limits.stream_window``), whatever the file size and however
slow the client. Credit is returned in batches of a quarter window, to keep ``Credit``
frames rare. The origin's app returns credit explicitly (``grant_credit``) as its
client drains; the target's app may send ``send_capacity`` bytes and hears of more
through ``StreamWritable``.

Wire stream numbers are per link (odd from the dialer, even from the acceptor, always
increasing), so a number below the highest seen that is not open belongs to a stream
that just closed: frames for it are dropped (they raced the close). A number never
used is a protocol error. The app only sees node-local ``StreamId`` handles.

Deadlines: a stream must see its response head within ``request_timeout`` and then
some frame at least every ``stream_idle_timeout``; activity only updates a timestamp,
and the single deadline per stream is re-armed lazily when it fires.

``Streams`` reaches its node only through ``kbproto.port.StreamPort``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kbproto.codec import DATA_FRAME_OVERHEAD, encode, encode_data_frames
from kbproto.errors import LimitExceeded, LocalProtocolError, ProtocolError, RemoteProtocolError
from kbproto.events import (
    RequestReceived,
    ResponseData,
    ResponseEnded,
    ResponseStarted,
    StreamReset,
    StreamWritable,
)
from kbproto.ids import LinkId, StreamId, is_node_id, is_sha1
from kbproto.link import Link
from kbproto.messages import MAX_CREDIT, MAX_ID, Credit, Data, End, Open, Reset, Response
from kbproto.port import StreamPort
from kbproto.state import (
    STREAM_TRANSITIONS,
    StreamEffect,
    StreamInput,
    StreamRole,
    StreamState,
    Transition,
    transition,
)
from kbproto.timers import TimerKey, TimerKind

__all__ = ("HopStreams", "Streams")

#: A received frame's stream input, by the side it came from.
_FROM_RESPONDER: dict[type, StreamInput] = {
    Response: StreamInput.RESPONSE,
    Data: StreamInput.DATA,
    End: StreamInput.END,
    Reset: StreamInput.RESPONDER_RESET,
    Credit: StreamInput.RESPONDER_CREDIT,
}
_FROM_REQUESTER: dict[type, StreamInput] = {
    Credit: StreamInput.CREDIT,
    Reset: StreamInput.REQUESTER_RESET,
    Response: StreamInput.REQUESTER_RESPONSE,
    Data: StreamInput.REQUESTER_DATA,
    End: StreamInput.REQUESTER_END,
}
#: The machine's name in errors, per role.
_MACHINE = {role: f"{role.value} stream" for role in StreamRole}


def _names_content(message: Open) -> bool:
    """True for ``GET`` or ``HEAD /TARGET/sha1/SHA1``: a request whose answer is the
    content ``SHA1`` whoever serves it (the target's path, not a query or a suffix)."""
    if message.method not in ("GET", "HEAD"):
        return False
    parts = message.path.split("/")
    return len(parts) == 4 and parts[1:3] == [message.target, "sha1"] and is_sha1(parts[3])


@dataclass(frozen=True, slots=True, kw_only=True)
class HopStreams:
    """The link a new request would leave on, and its streams (``next_hop``).

    Attributes:
        link_id: the next hop's link.
        limit: streams we may have open on it (what the peer announced in the
            handshake; past it a new request is refused with 503).
        open: streams we have open on it now (requests of every origin and relay).
    """

    link_id: LinkId
    limit: int
    open: int


class _Stream:
    __slots__ = (
        "buffer",
        "buffered",
        "head_due",
        "in_link",
        "in_wire",
        "last",
        "out_link",
        "out_wire",
        "pending_grant",
        "recv_window",
        "role",
        "send_credit",
        "sid",
        "state",
        "table",
    )

    # Field meanings: ``in_*`` is the hop toward the requester (TARGET, RELAY);
    # ``out_*`` the hop toward the responder (ORIGIN, RELAY); a link is None once it
    # is lost (or for the side a role does not have). ``send_credit`` is what we may
    # still send toward the requester; ``recv_window`` what the responder may still
    # send us. A relay holds ``buffered`` bytes in ``buffer`` and owes
    # ``pending_grant`` bytes of credit upstream (returned in batches).
    # Invariant for a streaming relay: recv_window + buffered + pending_grant == window.

    def __init__(self, sid: StreamId, role: StreamRole, now: float, head_due: float) -> None:
        self.sid = sid
        self.role = role
        self.state = StreamState.AWAITING_HEAD
        self.table = STREAM_TRANSITIONS[role]
        self.in_link: Link | None = None
        self.in_wire = 0
        self.out_link: Link | None = None
        self.out_wire = 0
        self.send_credit = 0
        self.recv_window = 0
        self.buffer: deque[bytes | memoryview] = deque()
        self.buffered = 0
        self.pending_grant = 0
        self.last = now
        self.head_due = head_due


class Streams:
    """Every open stream at one node (see the module docstring).

    Args:
        port: what the streams may use of their node.
    """

    def __init__(self, port: StreamPort) -> None:
        self._port = port
        self._streams: dict[StreamId, _Stream] = {}
        self._wire: dict[tuple[LinkId, int], _Stream] = {}
        self._next_sid = 1

    def __len__(self) -> int:
        """Number of open streams (all roles)."""
        return len(self._streams)

    def max_buffered(self) -> int:
        """The most body bytes buffered for any one stream right now."""
        return max((s.buffered for s in self._streams.values()), default=0)

    def role(self, sid: StreamId) -> StreamRole | None:
        """The role of open stream ``sid``, or None if it is not open."""
        stream = self._streams.get(sid)
        return stream.role if stream is not None else None

    def state(self, sid: StreamId) -> StreamState:
        """Where stream ``sid`` is (``CLOSED`` once it is no longer open)."""
        stream = self._streams.get(sid)
        return stream.state if stream is not None else StreamState.CLOSED

    def response_link(self, sid: StreamId) -> LinkId | None:
        """The link target stream ``sid``'s response leaves on (None if not a target
        or not open)."""
        stream = self._streams.get(sid)
        if stream is None or stream.role is not StreamRole.TARGET:
            return None
        assert stream.in_link is not None  # a target with no requester is closed
        return stream.in_link.link_id

    # --- app commands -----------------------------------------------------------------

    def open_request(
        self,
        target: str,
        method: str,
        path: str,
        headers: tuple[tuple[str, str], ...],
        now: float,
    ) -> StreamId:
        """Origin: open a stream toward ``target`` (see ``_CoreCommon.open_request``).

        Raises:
            LocalProtocolError: ``target`` is not a node id or is this node, or the
                request is malformed.
        """
        port = self._port
        if not is_node_id(target):
            raise LocalProtocolError(f"not a node id: {target!r}")
        dest = port.route(target, None)
        if dest == "self":
            raise LocalProtocolError("the target is this node: serve the request locally")
        try:
            message = Open(
                stream=1,
                target=target,  # type: ignore[arg-type]
                method=method,
                path=path,
                headers=headers,
                credit=port.limits.stream_window,
            )
        except (TypeError, ValueError) as exc:
            raise LocalProtocolError(f"bad request: {exc}") from None
        stream = self._new(StreamRole.ORIGIN, now)
        if dest is None:
            self._refuse(stream, 404, f"unknown node {target}")
        elif len(self._streams) > port.limits.max_open_streams:
            self._refuse(stream, 503, "too many open streams")
        elif not self._open_out(stream, dest, message):
            self._refuse(stream, 503, "the next hop has too many open streams")
        return stream.sid

    def grant_credit(self, sid: StreamId, amount: int, now: float) -> None:
        """Origin: the app consumed ``amount`` bytes; let the responder send as many more.

        Raises:
            LocalProtocolError: not an origin stream, or a bad ``amount``.
        """
        stream = self._app_stream(sid)
        if stream is not None:
            self._step(stream, StreamInput.GRANT_CREDIT, amount, LocalProtocolError)
            stream.last = now

    def respond(
        self, sid: StreamId, status: int, headers: tuple[tuple[str, str], ...], now: float
    ) -> None:
        """Target: send the response head.

        Raises:
            LocalProtocolError: not a target stream waiting for its head, or a bad head.
        """
        stream = self._app_stream(sid)
        if stream is None:
            return
        # Whether a head may be sent is the table's to say first; a malformed head is
        # refused before the stream moves, so the app may try again.
        step = self._lookup(stream, StreamInput.RESPOND, LocalProtocolError)
        try:
            head = Response(stream=stream.in_wire, status=status, headers=headers)
        except (TypeError, ValueError) as exc:
            raise LocalProtocolError(f"bad response: {exc}") from None
        self._apply(stream, step, head)
        stream.last = now

    def send_data(self, sid: StreamId, data: bytes, now: float) -> None:
        """Target: send body bytes within the credit the requester granted.

        Raises:
            LocalProtocolError: not a target stream past its head, or more bytes
                than ``send_capacity``.
        """
        stream = self._app_stream(sid)
        if stream is not None:
            self._step(stream, StreamInput.SEND_DATA, data, LocalProtocolError)
            stream.last = now

    def end_stream(self, sid: StreamId, now: float) -> None:
        """Target: the body is complete; ``End`` goes behind the queued data.

        Raises:
            LocalProtocolError: not a target stream past its head.
        """
        stream = self._app_stream(sid)
        if stream is not None:
            self._step(stream, StreamInput.END_STREAM, None, LocalProtocolError)

    def reset_stream(self, sid: StreamId, now: float, reason: str = "cancelled") -> None:
        """Origin or target: abort the stream; the reset travels every hop.

        Raises:
            LocalProtocolError: a stream the app does not hold.
        """
        stream = self._app_stream(sid)
        if stream is not None:
            self._step(stream, StreamInput.RESET_STREAM, reason, LocalProtocolError)

    def send_capacity(self, sid: StreamId) -> int:
        """Target: bytes ``send_data`` accepts now (0 once closed)."""
        stream = self._streams.get(sid)
        if stream is None or stream.role is not StreamRole.TARGET:
            return 0
        return stream.send_credit

    # --- receive path -----------------------------------------------------------------

    def on_message(
        self, link: Link, message: Open | Response | Data | End | Credit | Reset, now: float
    ) -> None:
        """Route one stream message from ``link`` to the stream it belongs to.

        Raises:
            RemoteProtocolError: the frame does not fit the stream (its state, its
                role, the side it came from), or breaks a limit.
        """
        if isinstance(message, Open):
            self._on_open(link, message, now)
            return
        stream = self._wire.get((link.link_id, message.stream))
        if stream is None:
            self._check_stale(link, message.stream)
            return
        stream.last = now
        from_responder = stream.out_link is link and stream.out_wire == message.stream
        side = _FROM_RESPONDER if from_responder else _FROM_REQUESTER
        self._step(stream, side[type(message)], message, RemoteProtocolError)

    def _on_open(self, link: Link, message: Open, now: float) -> None:
        """A peer opens a stream: serve it here, relay it on, or refuse it."""
        port = self._port
        limits = port.limits
        if message.stream % 2 != (0 if link.dialed else 1):
            raise RemoteProtocolError(f"stream {message.stream} has the wrong parity")
        if message.stream <= link.highest_peer_stream:
            raise RemoteProtocolError(f"stream {message.stream} reuses a number")
        link.highest_peer_stream = message.stream
        if link.peer_streams >= limits.max_streams_per_link:
            raise LimitExceeded(
                f"more than {limits.max_streams_per_link} open streams on one link",
                "max_streams_per_link",
            )
        # Refusing one stream (404 or 503) is not the peer's fault: the link stays.
        dest = port.route(message.target, link)
        if dest is None or len(self._streams) >= limits.max_open_streams:
            status, reason = (
                (404, f"unknown node {message.target}")
                if dest is None
                else (503, "too many open streams")
            )
            port.send(link, Reset(stream=message.stream, status=status, reason=reason))
            return
        if dest != "self" and port.takes_content and _names_content(message):
            # A hub with a relay cache answers content itself (from its cache, or by
            # fetching it and filling the cache on the way): docs/protocol.md §13.
            dest = "self"
        role = StreamRole.TARGET if dest == "self" else StreamRole.RELAY
        stream = self._new(role, now)
        stream.in_link = link
        stream.in_wire = message.stream
        stream.send_credit = message.credit
        self._wire[(link.link_id, message.stream)] = stream
        link.peer_streams += 1
        if dest == "self":
            port.emit(
                RequestReceived(
                    stream_id=stream.sid,
                    method=message.method,
                    path=message.path,
                    headers=message.headers,
                    capacity=stream.send_credit,
                )
            )
            return
        port.trace(
            now, "stream", link, f"relay {message.method} {message.path} to {message.target}"
        )
        if not self._open_out(stream, dest, message):
            self._refuse(stream, 503, "next hop busy")

    def _check_stale(self, link: Link, wire: int) -> None:
        """A frame for a closed stream is dropped; for a never-used number it is an error."""
        ours = wire % 2 == (1 if link.dialed else 0)
        if ours and wire < link.next_stream:
            return
        if not ours and wire <= link.highest_peer_stream:
            return
        raise RemoteProtocolError(f"frame for stream {wire}, which was never opened")

    # --- timers and link loss ---------------------------------------------------------

    def on_timer(self, sid: StreamId, now: float) -> None:
        """A stream deadline fired: re-arm if there was activity, else fail it with 504."""
        stream = self._streams[sid]  # closing a stream cancels its deadline
        # Before the head, the request deadline; after it, the idle deadline.
        waiting = stream.state is StreamState.AWAITING_HEAD
        due = stream.head_due if waiting else stream.last + self._port.timeouts.stream_idle_timeout
        if due > now:
            self._port.set_timer(TimerKey(TimerKind.STREAM, sid), due)
            return
        self._port.trace(now, "timer", None, f"stream {sid} timed out")
        reason = "timed out waiting for the response" if waiting else "stream idle too long"
        self._step(stream, StreamInput.TIMEOUT, (504, reason), LocalProtocolError)

    def link_lost(self, link: Link, now: float) -> None:
        """Fail every stream that used ``link``, resetting the other side of relays."""
        peer = link.peer_id or "peer"
        for stream in list(self._streams.values()):
            # Forget the dead side first, so the reset goes only to the live side.
            if stream.out_link is link:
                del self._wire[(link.link_id, stream.out_wire)]
                stream.out_link = None
                abort = (StreamInput.RESPONDER_LOST, (502, f"link to {peer} lost"))
            elif stream.in_link is link:
                del self._wire[(link.link_id, stream.in_wire)]
                stream.in_link = None
                abort = (StreamInput.REQUESTER_LOST, (499, "requester went away"))
            else:
                continue
            self._step(stream, *abort, LocalProtocolError)

    # --- the machine ------------------------------------------------------------------

    def _step(
        self, stream: _Stream, event: StreamInput, arg: object, error: type[ProtocolError]
    ) -> None:
        """Feed ``event`` to ``stream``'s machine (``kbproto.state`` house rules 2, 3)."""
        self._apply(stream, self._lookup(stream, event, error), arg)

    def _lookup(
        self, stream: _Stream, event: StreamInput, error: type[ProtocolError]
    ) -> Transition[StreamState, StreamEffect]:
        """What ``event`` does to ``stream``; ``error`` if the table has no such pair."""
        return transition(stream.table, _MACHINE[stream.role], stream.state, event, error)

    def _apply(
        self, stream: _Stream, step: Transition[StreamState, StreamEffect], arg: object
    ) -> None:
        """Move ``stream``, run the effect with ``arg``, forget the stream once CLOSED."""
        stream.state = step.next
        assert step.effect is not None  # every stream transition has one (test_state)
        _EFFECTS[step.effect](self, stream, arg)
        if step.next is StreamState.CLOSED:
            self._release(stream)

    def _refuse(self, stream: _Stream, status: int, reason: str) -> None:
        """A stream born without a way on: no route, or no room (404 or 503)."""
        self._step(stream, StreamInput.REFUSED, (status, reason), LocalProtocolError)

    # --- effects: origin --------------------------------------------------------------

    def _emit_head(self, stream: _Stream, message: Response) -> None:
        self._port.emit(
            ResponseStarted(stream_id=stream.sid, status=message.status, headers=message.headers)
        )

    def _emit_data(self, stream: _Stream, message: Data) -> None:
        self._take_window(stream, len(message.data))
        self._port.emit(ResponseData(stream_id=stream.sid, data=message.data))

    def _emit_end(self, stream: _Stream, message: End) -> None:
        self._port.emit(ResponseEnded(stream_id=stream.sid))

    def _emit_reset(self, stream: _Stream, message: Reset) -> None:
        self._port.emit(
            StreamReset(stream_id=stream.sid, status=message.status, reason=message.reason)
        )

    def _grant(self, stream: _Stream, amount: int) -> None:
        if not isinstance(amount, int) or amount < 1:
            raise LocalProtocolError("credit must be a positive integer")
        if stream.recv_window + amount > MAX_CREDIT:
            raise LocalProtocolError("credit window would exceed 2**31 - 1 bytes")
        stream.recv_window += amount
        self._send_out(stream, Credit(stream=stream.out_wire, credit=amount))

    def _cancel(self, stream: _Stream, reason: str) -> None:
        self._send_out(stream, Reset(stream=stream.out_wire, status=499, reason=reason))

    # --- effects: target --------------------------------------------------------------

    def _send_head(self, stream: _Stream, head: Response) -> None:
        self._send_in(stream, head)

    def _send_body(self, stream: _Stream, data: bytes) -> None:
        if len(data) > stream.send_credit:
            raise LocalProtocolError(
                f"send_data() of {len(data)} bytes with only {stream.send_credit} of credit"
            )
        stream.send_credit -= len(data)
        self._forward(stream, data)

    def _send_end(self, stream: _Stream, arg: None) -> None:
        assert stream.in_link is not None  # a link's loss closes its streams first
        self._port.send_bulk(stream.in_link, encode(End(stream=stream.in_wire)))

    def _emit_writable(self, stream: _Stream, message: Credit) -> None:
        self._add_credit(stream, message.credit)
        self._port.emit(StreamWritable(stream_id=stream.sid, capacity=stream.send_credit))

    def _abandon(self, stream: _Stream, reason: str) -> None:
        self._send_in(stream, Reset(stream=stream.in_wire, status=502, reason=reason))

    # --- effects: relay ---------------------------------------------------------------

    def _forward_head(self, stream: _Stream, message: Response) -> None:
        self._send_in(
            stream, Response(stream=stream.in_wire, status=message.status, headers=message.headers)
        )

    def _buffer(self, stream: _Stream, message: Data) -> None:
        self._take_window(stream, len(message.data))
        stream.buffer.append(message.data)
        stream.buffered += len(message.data)
        stream.pending_grant += self._move(stream)
        self._return_credit(stream)

    def _pump(self, stream: _Stream, message: Credit) -> None:
        self._add_credit(stream, message.credit)
        stream.pending_grant += self._move(stream)
        self._return_credit(stream)

    def _drain(self, stream: _Stream, message: End) -> None:
        # The responder is done: credit returned upstream now would be for nothing.
        stream.pending_grant = 0
        self._move(stream)
        if not stream.buffer:
            self._step(stream, StreamInput.DRAINED, None, LocalProtocolError)

    def _pump_draining(self, stream: _Stream, message: Credit) -> None:
        self._add_credit(stream, message.credit)
        self._move(stream)
        if not stream.buffer:
            self._step(stream, StreamInput.DRAINED, None, LocalProtocolError)

    def _reset_requester(self, stream: _Stream, message: Reset) -> None:
        self._send_in(
            stream, Reset(stream=stream.in_wire, status=message.status, reason=message.reason)
        )

    def _reset_responder(self, stream: _Stream, message: Reset) -> None:
        self._send_out(
            stream, Reset(stream=stream.out_wire, status=message.status, reason=message.reason)
        )

    # --- effects: aborts --------------------------------------------------------------

    def _abort(self, stream: _Stream, verdict: tuple[int, str]) -> None:
        """Origin or target: tell the app, then reset the hop still there."""
        status, reason = verdict
        self._port.emit(StreamReset(stream_id=stream.sid, status=status, reason=reason))
        self._abort_relay(stream, verdict)

    def _abort_relay(self, stream: _Stream, verdict: tuple[int, str]) -> None:
        """Reset every hop still there (a lost link, or one never opened, has none)."""
        status, reason = verdict
        if stream.in_link is not None:
            self._send_in(stream, Reset(stream=stream.in_wire, status=status, reason=reason))
        if stream.out_link is not None:
            self._send_out(stream, Reset(stream=stream.out_wire, status=status, reason=reason))

    # --- internals --------------------------------------------------------------------

    def _new(self, role: StreamRole, now: float) -> _Stream:
        """Create a stream with a fresh app handle and its response deadline."""
        sid = StreamId(self._next_sid)
        self._next_sid += 1
        head_due = now + self._port.timeouts.request_timeout
        stream = _Stream(sid, role, now, head_due)
        self._streams[sid] = stream
        self._port.set_timer(TimerKey(TimerKind.STREAM, sid), head_due)
        return stream

    def _open_out(self, stream: _Stream, link: Link, message: Open) -> bool:
        """Open the next hop of ``stream`` on ``link``; False if the peer's limit is hit."""
        wire = link.next_stream
        # Past 2**31 streams on one link the numbers run out: refuse like a busy peer.
        if link.our_streams >= link.peer_max_streams or wire > MAX_ID:
            return False
        link.next_stream += 2
        link.our_streams += 1
        stream.out_link = link
        stream.out_wire = wire
        stream.recv_window = self._port.limits.stream_window
        self._wire[(link.link_id, wire)] = stream
        self._port.send(
            link,
            Open(
                stream=wire,
                target=message.target,
                method=message.method,
                path=message.path,
                headers=message.headers,
                credit=stream.recv_window,
            ),
        )
        return True

    def _app_stream(self, sid: StreamId) -> _Stream | None:
        """The open stream ``sid`` for an app command; None if it already closed (the
        app hears why from an event). Whether the command fits the stream's role and
        state is the table's to say."""
        stream = self._streams.get(sid)
        if stream is None and (not isinstance(sid, int) or not 1 <= sid < self._next_sid):
            raise LocalProtocolError(f"no such stream {sid!r}")
        return stream

    # A stream's ``in_link``/``out_link`` are open links or None: ``link_lost`` clears
    # them before the link's streams are failed.

    def _send_in(self, stream: _Stream, message: Response | Reset) -> None:
        """Send toward the requester."""
        assert stream.in_link is not None
        self._port.send(stream.in_link, message)

    def _send_out(self, stream: _Stream, message: Credit | Reset) -> None:
        """Send toward the responder."""
        assert stream.out_link is not None
        self._port.send(stream.out_link, message)

    def _take_window(self, stream: _Stream, size: int) -> None:
        """Body bytes from the responder use the window we granted it."""
        if size > stream.recv_window:
            raise LimitExceeded(
                f"{size} bytes of data with only {stream.recv_window} of credit", "stream_window"
            )
        stream.recv_window -= size

    def _add_credit(self, stream: _Stream, credit: int) -> None:
        """Credit from the requester adds to what we may send it."""
        if stream.send_credit + credit > MAX_CREDIT:
            raise RemoteProtocolError("credit window over 2**31 - 1 bytes")
        stream.send_credit += credit

    def _forward(self, stream: _Stream, data: bytes | memoryview) -> None:
        """Queue ``data`` toward the requester in frames of at most ``data_chunk``.

        The frames stay one outbox entry: the outbox sends them together, in order.
        """
        if not data:
            return
        link = stream.in_link
        assert link is not None
        limits = self._port.limits
        chunk = limits.data_chunk
        # One outbox entry per ``transmit_bytes`` (whole frames; at least one frame),
        # so a caller handing over a large piece never makes one oversized Transmit.
        frame_room = max(1, limits.transmit_bytes // (chunk + DATA_FRAME_OVERHEAD)) * chunk
        view = memoryview(data)
        for start in range(0, len(view), frame_room):
            piece = view[start : start + frame_room]
            self._port.send_bulk(link, encode_data_frames(stream.in_wire, piece, chunk))

    def _move(self, stream: _Stream) -> int:
        """Relay: pass buffered bytes on as the requester's credit allows; return how
        many went."""
        buffer = stream.buffer
        moved = 0
        while buffer and stream.send_credit > 0:
            piece = buffer[0]
            take = min(len(piece), stream.send_credit)
            if take == len(piece):
                buffer.popleft()
            else:
                # Views, not slices: a peer granting a few bytes at a time must not
                # make us copy the rest of a 1 MiB piece for every grant.
                view = memoryview(piece)
                buffer[0] = view[take:]
                piece = view[:take]
            stream.send_credit -= take
            stream.buffered -= take
            moved += take
            self._forward(stream, piece)
        return moved

    def _return_credit(self, stream: _Stream) -> None:
        """Relay: credit goes back upstream only for bytes already sent on: that is
        what bounds the relay's buffer by one window. A quarter-window batch keeps
        ``Credit`` frames rare without stalling the sender (it still has 3/4 left)."""
        if stream.pending_grant >= max(1, self._port.limits.stream_window // 4):
            self._send_out(stream, Credit(stream=stream.out_wire, credit=stream.pending_grant))
            stream.recv_window += stream.pending_grant
            stream.pending_grant = 0

    def _release(self, stream: _Stream) -> None:
        """Forget a closed stream: its handle, its deadline, its wire numbers and its
        share of each link's stream count."""
        del self._streams[stream.sid]
        self._port.cancel_timer(TimerKey(TimerKind.STREAM, stream.sid))
        if stream.in_link is not None:
            del self._wire[(stream.in_link.link_id, stream.in_wire)]
            stream.in_link.peer_streams -= 1
        if stream.out_link is not None:
            del self._wire[(stream.out_link.link_id, stream.out_wire)]
            stream.out_link.our_streams -= 1


#: Each effect of ``STREAM_TRANSITIONS``, bound to what does it. Every effect takes
#: the input's payload: the received frame, the app's argument, or a verdict
#: ``(status, reason)``; the table guarantees which (so the payload is ``Any`` here).
_EFFECTS: dict[StreamEffect, Callable[[Streams, _Stream, Any], None]] = {
    StreamEffect.EMIT_HEAD: Streams._emit_head,
    StreamEffect.EMIT_DATA: Streams._emit_data,
    StreamEffect.EMIT_END: Streams._emit_end,
    StreamEffect.EMIT_RESET: Streams._emit_reset,
    StreamEffect.GRANT: Streams._grant,
    StreamEffect.CANCEL: Streams._cancel,
    StreamEffect.SEND_HEAD: Streams._send_head,
    StreamEffect.SEND_BODY: Streams._send_body,
    StreamEffect.SEND_END: Streams._send_end,
    StreamEffect.EMIT_WRITABLE: Streams._emit_writable,
    StreamEffect.ABANDON: Streams._abandon,
    StreamEffect.FORWARD_HEAD: Streams._forward_head,
    StreamEffect.BUFFER: Streams._buffer,
    StreamEffect.PUMP: Streams._pump,
    StreamEffect.DRAIN: Streams._drain,
    StreamEffect.PUMP_DRAINING: Streams._pump_draining,
    StreamEffect.RESET_REQUESTER: Streams._reset_requester,
    StreamEffect.RESET_RESPONDER: Streams._reset_responder,
    StreamEffect.ABORT: Streams._abort,
    StreamEffect.ABORT_RELAY: Streams._abort_relay,
}
