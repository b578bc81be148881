"""Proxy streams: HTTP-like requests to any node id, with credit flow control (SPEC §5).

Strategy
--------
A request for node X becomes a *stream*. At the node where it starts (the *origin*,
e.g. the hub whose HTTP server got ``GET /X/download/f``) the app calls
``open_request``; the core sends ``Open`` toward X along ``_Node.route`` (down to the
child whose subtree holds X, else up). Every hub on the way is a *relay*: it opens a
new stream on the next link and pairs the two. At X (the *target*) the app gets
``RequestReceived`` and answers with a response head, body data and an end. Either
end, or any relay, may ``Reset``; a reset travels hop by hop to both ends, and so does
the loss of any link on the way (502), a requester going away (499) or a timeout (504).

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
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kbproto.codec import DATA_FRAME_OVERHEAD, encode, encode_data_frames
from kbproto.errors import LimitExceeded, LocalProtocolError, RemoteProtocolError
from kbproto.events import (
    RequestReceived,
    ResponseData,
    ResponseEnded,
    ResponseStarted,
    StreamReset,
    StreamWritable,
)
from kbproto.ids import LinkId, StreamId, is_node_id
from kbproto.messages import MAX_CREDIT, MAX_ID, Credit, Data, End, Open, Reset, Response

if TYPE_CHECKING:
    from kbproto._node import _Node
    from kbproto.link import Link

__all__ = ("HopStreams", "StreamRole", "Streams")


class StreamRole(enum.Enum):
    """What this node is for one stream."""

    #: The app opened it and consumes the response.
    ORIGIN = "origin"
    #: The app serves it.
    TARGET = "target"
    #: A hub in between; invisible to the app.
    RELAY = "relay"


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
        "ended",
        "head",
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
    )

    # Field meanings: ``in_*`` is the hop toward the requester (TARGET, RELAY);
    # ``out_*`` the hop toward the responder (ORIGIN, RELAY). ``send_credit`` is
    # what we may still send toward the requester; ``recv_window`` what the
    # responder may still send us. A relay holds ``buffered`` bytes in ``buffer``
    # and owes ``pending_grant`` bytes of credit upstream (returned in batches).
    # Invariant for a relay: recv_window + buffered + pending_grant == window.

    def __init__(self, sid: StreamId, role: StreamRole, now: float, head_due: float) -> None:
        self.sid = sid
        self.role = role
        self.in_link: LinkId | None = None
        self.in_wire = 0
        self.out_link: LinkId | None = None
        self.out_wire = 0
        self.send_credit = 0
        self.recv_window = 0
        self.buffer: deque[bytes | memoryview] = deque()
        self.buffered = 0
        self.pending_grant = 0
        self.head = False
        self.ended = False
        self.last = now
        self.head_due = head_due


class Streams:
    """Every open stream at one node (see the module docstring)."""

    def __init__(self, node: _Node) -> None:
        self._node = node
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

    def response_link(self, sid: StreamId) -> LinkId | None:
        """The link target stream ``sid``'s response leaves on (None if not a target
        or not open)."""
        stream = self._streams.get(sid)
        if stream is None or stream.role is not StreamRole.TARGET:
            return None
        return stream.in_link

    # --- app commands -----------------------------------------------------------------

    def open_request(
        self,
        target: str,
        method: str,
        path: str,
        headers: tuple[tuple[str, str], ...],
        now: float,
    ) -> StreamId:
        """Origin: open a stream toward ``target`` (see ``_CoreCommon.open_request``)."""
        node = self._node
        if not is_node_id(target):
            raise LocalProtocolError(f"not a node id: {target!r}")
        dest = node.route(target, None)
        if dest == "self":
            raise LocalProtocolError("the target is this node: serve the request locally")
        stream = self._new(StreamRole.ORIGIN, now)
        try:
            message = Open(
                stream=1,
                target=target,  # type: ignore[arg-type]
                method=method,
                path=path,
                headers=headers,
                credit=node.limits.stream_window,
            )
        except (TypeError, ValueError) as exc:
            self._forget(stream)
            raise LocalProtocolError(f"bad request: {exc}") from None
        if dest is None:
            self._fail(stream, 404, f"unknown node {target}")
        elif len(self._streams) > node.limits.max_open_streams:
            self._fail(stream, 503, "too many open streams")
        elif not self._open_out(stream, dest, message):
            self._fail(stream, 503, "the next hop has too many open streams")
        return stream.sid

    def grant_credit(self, sid: StreamId, amount: int, now: float) -> None:
        """Origin: the app consumed ``amount`` bytes; let the responder send as many more."""
        stream = self._app_stream(sid, StreamRole.ORIGIN)
        if stream is None:
            return
        if not isinstance(amount, int) or amount < 1:
            raise LocalProtocolError("credit must be a positive integer")
        if stream.recv_window + amount > MAX_CREDIT:
            raise LocalProtocolError("credit window would exceed 2**31 - 1 bytes")
        stream.recv_window += amount
        stream.last = now
        self._send_out(stream, Credit(stream=stream.out_wire, credit=amount))

    def respond(
        self, sid: StreamId, status: int, headers: tuple[tuple[str, str], ...], now: float
    ) -> None:
        """Target: send the response head."""
        stream = self._app_stream(sid, StreamRole.TARGET)
        if stream is None:
            return
        if stream.head:
            raise LocalProtocolError("respond() was already called for this stream")
        try:
            message = Response(stream=stream.in_wire, status=status, headers=headers)
        except (TypeError, ValueError) as exc:
            raise LocalProtocolError(f"bad response: {exc}") from None
        stream.head = True
        stream.last = now
        self._send_in(stream, message)

    def send_data(self, sid: StreamId, data: bytes, now: float) -> None:
        """Target: send body bytes within the credit the requester granted."""
        stream = self._app_stream(sid, StreamRole.TARGET)
        if stream is None:
            return
        if not stream.head:
            raise LocalProtocolError("send_data() before respond()")
        if len(data) > stream.send_credit:
            raise LocalProtocolError(
                f"send_data() of {len(data)} bytes with only {stream.send_credit} of credit"
            )
        stream.send_credit -= len(data)
        stream.last = now
        self._forward(stream, data)

    def end_stream(self, sid: StreamId, now: float) -> None:
        """Target: the body is complete; ``End`` goes behind the queued data."""
        stream = self._app_stream(sid, StreamRole.TARGET)
        if stream is None:
            return
        if not stream.head:
            raise LocalProtocolError("end_stream() before respond()")
        link = self._node.links[stream.in_link]  # type: ignore[index]
        self._node.send_bulk(link, encode(End(stream=stream.in_wire)))
        self._close(stream)

    def reset_stream(self, sid: StreamId, now: float, reason: str = "cancelled") -> None:
        """Origin or target: abort the stream; the reset travels every hop."""
        stream = self._app_stream(sid, None)
        if stream is None:
            return
        if stream.role is StreamRole.ORIGIN:
            self._send_out(stream, Reset(stream=stream.out_wire, status=499, reason=reason))
        else:
            self._send_in(stream, Reset(stream=stream.in_wire, status=502, reason=reason))
        self._close(stream)

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
        """Route one stream message from ``link`` to the stream it belongs to."""
        if isinstance(message, Open):
            self._on_open(link, message, now)
            return
        stream = self._wire.get((link.link_id, message.stream))
        if stream is None:
            self._check_stale(link, message.stream)
            return
        stream.last = now
        from_responder = stream.out_link == link.link_id and stream.out_wire == message.stream
        if from_responder:
            self._from_responder(stream, message)
        elif isinstance(message, Credit):
            if stream.send_credit + message.credit > MAX_CREDIT:
                raise RemoteProtocolError("credit window over 2**31 - 1 bytes")
            stream.send_credit += message.credit
            if stream.role is StreamRole.TARGET:
                self._node.emit(StreamWritable(stream_id=stream.sid, capacity=stream.send_credit))
            else:
                self._pump(stream)
        elif isinstance(message, Reset):
            if stream.role is StreamRole.TARGET:
                self._node.emit(
                    StreamReset(stream_id=stream.sid, status=message.status, reason=message.reason)
                )
            else:
                self._send_out(
                    stream,
                    Reset(stream=stream.out_wire, status=message.status, reason=message.reason),
                )
            self._close(stream)
        else:
            raise RemoteProtocolError(f"{type(message).__name__} from the requesting side")

    def _from_responder(
        self, stream: _Stream, message: Response | Data | End | Credit | Reset
    ) -> None:
        """Response, data, end or reset from the side that serves the stream."""
        node = self._node
        origin = stream.role is StreamRole.ORIGIN
        if isinstance(message, Response):
            if stream.head:
                raise RemoteProtocolError("second response head on one stream")
            stream.head = True
            if origin:
                node.emit(
                    ResponseStarted(
                        stream_id=stream.sid, status=message.status, headers=message.headers
                    )
                )
            else:
                self._send_in(
                    stream,
                    Response(stream=stream.in_wire, status=message.status, headers=message.headers),
                )
        elif isinstance(message, Data):
            if not stream.head:
                raise RemoteProtocolError("data before the response head")
            size = len(message.data)
            if size > stream.recv_window:
                raise LimitExceeded(
                    f"{size} bytes of data with only {stream.recv_window} of credit",
                    "stream_window",
                )
            stream.recv_window -= size
            if origin:
                node.emit(ResponseData(stream_id=stream.sid, data=message.data))
            else:
                stream.buffer.append(message.data)
                stream.buffered += size
                self._pump(stream)
        elif isinstance(message, End):
            if not stream.head:
                raise RemoteProtocolError("end before the response head")
            if origin:
                node.emit(ResponseEnded(stream_id=stream.sid))
                self._close(stream)
            else:
                stream.ended = True
                self._pump(stream)
        elif isinstance(message, Reset):
            if origin:
                node.emit(
                    StreamReset(stream_id=stream.sid, status=message.status, reason=message.reason)
                )
            else:
                self._send_in(
                    stream,
                    Reset(stream=stream.in_wire, status=message.status, reason=message.reason),
                )
            self._close(stream)
        else:
            raise RemoteProtocolError("credit from the responding side")

    def _on_open(self, link: Link, message: Open, now: float) -> None:
        """A peer opens a stream: serve it here, relay it on, or refuse it."""
        node = self._node
        if message.stream % 2 != (0 if link.dialed else 1):
            raise RemoteProtocolError(f"stream {message.stream} has the wrong parity")
        if message.stream <= link.highest_peer_stream:
            raise RemoteProtocolError(f"stream {message.stream} reuses a number")
        link.highest_peer_stream = message.stream
        if link.peer_streams >= node.limits.max_streams_per_link:
            raise LimitExceeded(
                f"more than {node.limits.max_streams_per_link} open streams on one link",
                "max_streams_per_link",
            )
        # Refusing one stream (404 or 503) is not the peer's fault: the link stays.
        dest = node.route(message.target, link)
        if dest is None or len(self._streams) >= node.limits.max_open_streams:
            status, reason = (
                (404, f"unknown node {message.target}")
                if dest is None
                else (503, "too many open streams")
            )
            node.send(link, Reset(stream=message.stream, status=status, reason=reason))
            return
        role = StreamRole.TARGET if dest == "self" else StreamRole.RELAY
        stream = self._new(role, now)
        stream.in_link = link.link_id
        stream.in_wire = message.stream
        stream.send_credit = message.credit
        self._wire[(link.link_id, message.stream)] = stream
        link.peer_streams += 1
        if dest == "self":
            node.emit(
                RequestReceived(
                    stream_id=stream.sid,
                    method=message.method,
                    path=message.path,
                    headers=message.headers,
                    capacity=stream.send_credit,
                )
            )
            return
        node.trace(
            now, "stream", link, f"relay {message.method} {message.path} to {message.target}"
        )
        if not self._open_out(stream, dest, message):
            self._send_in(stream, Reset(stream=stream.in_wire, status=503, reason="next hop busy"))
            self._close(stream)

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
        idle = self._node.timeouts.stream_idle_timeout
        due = stream.head_due if not stream.head else stream.last + idle
        if due > now:
            self._node.deadlines.set(("stream", sid), due)
            return
        self._node.trace(now, "timer", None, f"stream {sid} timed out")
        reason = "timed out waiting for the response" if not stream.head else "stream idle too long"
        self._fail(stream, 504, reason)

    def link_lost(self, link: Link, now: float) -> None:
        """Fail every stream that used ``link``, resetting the other side of relays."""
        link_id = link.link_id
        peer = link.peer_id or "peer"
        for stream in list(self._streams.values()):
            # Forget the dead side first, so the reset goes only to the live side.
            if stream.out_link == link_id:
                self._wire.pop((link_id, stream.out_wire), None)
                stream.out_link = None
                self._fail(stream, 502, f"link to {peer} lost")
            elif stream.in_link == link_id:
                self._wire.pop((link_id, stream.in_wire), None)
                stream.in_link = None
                self._fail(stream, 499, "requester went away")

    # --- internals --------------------------------------------------------------------

    def _new(self, role: StreamRole, now: float) -> _Stream:
        """Create a stream with a fresh app handle and its response deadline."""
        sid = StreamId(self._next_sid)
        self._next_sid += 1
        head_due = now + self._node.timeouts.request_timeout
        stream = _Stream(sid, role, now, head_due)
        self._streams[sid] = stream
        self._node.deadlines.set(("stream", sid), head_due)
        return stream

    def _open_out(self, stream: _Stream, link: Link, message: Open) -> bool:
        """Open the next hop of ``stream`` on ``link``; False if the peer's limit is hit."""
        wire = link.next_stream
        # Past 2**31 streams on one link the numbers run out: refuse like a busy peer.
        if link.our_streams >= link.peer_max_streams or wire > MAX_ID:
            return False
        link.next_stream += 2
        link.our_streams += 1
        stream.out_link = link.link_id
        stream.out_wire = wire
        stream.recv_window = self._node.limits.stream_window
        self._wire[(link.link_id, wire)] = stream
        self._node.send(
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

    def _app_stream(self, sid: StreamId, role: StreamRole | None) -> _Stream | None:
        """The open stream ``sid`` for an app command; None if it already closed."""
        stream = self._streams.get(sid)
        if stream is None:
            if not isinstance(sid, int) or not 1 <= sid < self._next_sid:
                raise LocalProtocolError(f"no such stream {sid!r}")
            return None  # closed by the peer or a timeout; the app will see the event
        if stream.role is StreamRole.RELAY or (role is not None and stream.role is not role):
            raise LocalProtocolError(
                f"stream {sid} is not a {role.value if role else 'app'} stream"
            )
        return stream

    # A stream's ``in_link``/``out_link`` always name open links: ``link_lost`` clears
    # them before the link's streams are failed.

    def _send_in(self, stream: _Stream, message: Response | Reset) -> None:
        """Send toward the requester."""
        self._node.send(self._node.links[stream.in_link], message)  # type: ignore[index]

    def _send_out(self, stream: _Stream, message: Credit | Reset) -> None:
        """Send toward the responder."""
        self._node.send(self._node.links[stream.out_link], message)  # type: ignore[index]

    def _forward(self, stream: _Stream, data: bytes | memoryview) -> None:
        """Queue ``data`` toward the requester in frames of at most ``data_chunk``.

        The frames stay one outbox entry: the outbox sends them together, in order.
        """
        if not data:
            return
        link = self._node.links[stream.in_link]  # type: ignore[index]
        limits = self._node.limits
        chunk = limits.data_chunk
        # One outbox entry per ``transmit_bytes`` (whole frames; at least one frame),
        # so a caller handing over a large piece never makes one oversized Transmit.
        frame_room = max(1, limits.transmit_bytes // (chunk + DATA_FRAME_OVERHEAD)) * chunk
        view = memoryview(data)
        for start in range(0, len(view), frame_room):
            piece = view[start : start + frame_room]
            self._node.send_bulk(link, encode_data_frames(stream.in_wire, piece, chunk))

    def _pump(self, stream: _Stream) -> None:
        """Relay: move buffered bytes on as credit allows; return credit upstream."""
        buffer = stream.buffer
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
            stream.pending_grant += take
            self._forward(stream, piece)
        # Credit goes back upstream only for bytes already sent on: that is what
        # bounds the relay's buffer by one window. A quarter-window batch keeps
        # Credit frames rare without stalling the sender (it still has 3/4 left).
        window = self._node.limits.stream_window
        if stream.pending_grant and (stream.pending_grant >= window // 4 or stream.ended):
            if not stream.ended:
                self._send_out(stream, Credit(stream=stream.out_wire, credit=stream.pending_grant))
                stream.recv_window += stream.pending_grant
            stream.pending_grant = 0
        if stream.ended and not buffer:
            link = self._node.links[stream.in_link]  # type: ignore[index]
            self._node.send_bulk(link, encode(End(stream=stream.in_wire)))
            self._close(stream)

    def _fail(self, stream: _Stream, status: int, reason: str) -> None:
        """Abort ``stream`` at this node: tell the app and reset every remaining hop."""
        if stream.role is not StreamRole.RELAY:
            self._node.emit(StreamReset(stream_id=stream.sid, status=status, reason=reason))
        # A side whose link is gone (or was never opened) has no one to tell.
        if stream.in_link is not None:
            self._send_in(stream, Reset(stream=stream.in_wire, status=status, reason=reason))
        if stream.out_link is not None:
            self._send_out(stream, Reset(stream=stream.out_wire, status=status, reason=reason))
        self._close(stream)

    def _forget(self, stream: _Stream) -> None:
        """Drop the handle and its deadline."""
        del self._streams[stream.sid]
        self._node.deadlines.cancel(("stream", stream.sid))

    def _close(self, stream: _Stream) -> None:
        """Forget the stream and release its per-link counters and wire numbers."""
        node = self._node
        self._forget(stream)
        if stream.in_link is not None:
            del self._wire[(stream.in_link, stream.in_wire)]
            node.links[stream.in_link].peer_streams -= 1
        if stream.out_link is not None:
            del self._wire[(stream.out_link, stream.out_wire)]
            node.links[stream.out_link].our_streams -= 1
