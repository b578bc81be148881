"""Proxied requests this node sends through the tree, and their streamed answers.

``ProxyStreams.open`` (``Node.open_request``) sends an HTTP-like request to any node id
through the tree and returns a ``ProxyResponse`` once the head arrived; iterating its
body returns credit to the core as the consumer comes back for more, so at most one
stream window per stream is ever buffered here. Closing it early resets the stream at
every hop. The stream budgets (``kbtransport.stream_budget``, ``docs/security.md``)
count these streams per HTTP client. The requests this node serves are
in ``kbtransport.served_streams``.

``on_event`` runs in the driver task and never blocks: it wakes whoever waits on a
stream. Everything asked of the core goes through ``driver.call``/``driver.post``
(STYLE rule 11).
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncGenerator

from kbproto.events import (
    Event,
    ResponseData,
    ResponseEnded,
    ResponseStarted,
    StreamReset,
)
from kbproto.hub import HubCore
from kbproto.ids import LinkId, StreamId
from kbproto.share import ShareCore
from kbtransport._signal import Signal
from kbtransport.clients import client_key
from kbtransport.driver import NodeDriver
from kbtransport.errors import ReadError
from kbtransport.stream_budget import StreamBudget, StreamLedger, StreamTicket

__all__ = ("ProxyResponse", "ProxyStreams", "StreamResetError")

#: Received body bytes joined into one piece for the consumer: fewer, larger writes.
#: A hub reads its children 1 MiB at a time (``kbtransport._accel``); joining as much
#: cut its CPU per proxied GiB by ~10 % against 256 KiB (A/B, 6 and 8 downloads).
_JOIN_LIMIT = 1024 * 1024

#: The cores a node runs.
_Core = HubCore | ShareCore


class StreamResetError(ReadError):
    """A proxied request was reset (before or after its head).

    Attributes:
        status: the HTTP status that fits (404 unknown node, 499, 502, 503, 504).
        reason: one line.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"request reset ({status}): {reason}")
        self.status = status
        self.reason = reason


# --- per-stream state (touched by the driver task and one app task) -------------------


class _Origin:
    __slots__ = ("abandoned", "chunks", "ended", "head", "reset", "sid", "signal", "ticket")

    def __init__(self) -> None:
        self.sid: StreamId | None = None
        self.head: ResponseStarted | None = None
        self.chunks: deque[bytes] = deque()
        self.ended = False
        self.reset: StreamReset | None = None
        self.abandoned = False
        self.signal = Signal()
        #: The client's count in the stream ledger, released when the stream ends.
        self.ticket: StreamTicket | None = None


class ProxyResponse:
    """The answer to ``Node.open_request``: head now, body as it arrives.

    Attributes:
        status: the HTTP status.
        headers: ``(name, value)`` pairs as the target sent them.
    """

    def __init__(self, streams: ProxyStreams, state: _Origin, head: ResponseStarted) -> None:
        self._streams = streams
        self._st = state
        self.status = head.status
        self.headers = head.headers

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        lname = name.lower()
        for hname, value in self.headers:
            if hname.lower() == lname:
                return value
        return None

    @property
    def content_length(self) -> int | None:
        """The ``Content-Length`` the target announced, if valid."""
        value = self.header("content-length")
        if value is None or not value.isdigit():
            return None
        return int(value)

    @property
    def finished(self) -> bool:
        """True once the body ended or the stream was reset."""
        return self._st.ended or self._st.reset is not None

    async def iter_chunks(self) -> AsyncGenerator[bytes, None]:
        """Yield the body as it arrives; return credit as the consumer asks for more.

        Raises:
            StreamResetError: the stream was reset mid-body (the body is incomplete).
        """
        st = self._st
        streams = self._streams
        # Credit goes back in quarter-window batches: while fewer bytes are owed, the
        # sender still holds three quarters of the window, so it never stalls, and
        # a fast consumer costs one Credit frame per quarter window, not one per chunk.
        batch = max(1, streams.window // 4)
        owed = 0
        try:
            while True:
                if st.chunks:
                    data = st.chunks.popleft()
                    if st.chunks and len(data) < _JOIN_LIMIT:
                        parts = [data]
                        size = len(data)
                        while st.chunks and size + len(st.chunks[0]) <= _JOIN_LIMIT:
                            part = st.chunks.popleft()
                            parts.append(part)
                            size += len(part)
                        data = b"".join(parts)
                    yield data
                    # The consumer came back: those bytes are consumed.
                    owed += len(data)
                    if owed >= batch:
                        streams.grant(st, owed)
                        owed = 0
                    continue
                if st.reset is not None:
                    raise StreamResetError(st.reset.status, st.reset.reason)
                if st.ended:
                    return
                await st.signal.wait()
        finally:
            if not self.finished:
                streams.abandon(st)

    async def read(self, max_bytes: int = 16 * 1024 * 1024) -> bytes:
        """Read the whole body (at most ``max_bytes``).

        Raises:
            StreamResetError: reset mid-body.
            ValueError: the body is larger than ``max_bytes`` (the stream is reset).
        """
        parts: list[bytes] = []
        size = 0
        async for chunk in self.iter_chunks():
            size += len(chunk)
            if size > max_bytes:
                await self.aclose()
                raise ValueError(f"response body larger than {max_bytes} bytes")
            parts.append(chunk)
        return b"".join(parts)

    async def aclose(self) -> None:
        """Stop reading: a stream not yet finished is reset at every hop."""
        if not self.finished:
            self._streams.abandon(self._st)

    async def __aenter__(self) -> ProxyResponse:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class ProxyStreams:
    """The streams a node opens (see the module docstring).

    Args:
        core: the node's core (only ever touched in the driver task).
        driver: the node's driver.
        budget: how streams are shared among HTTP clients (the defaults if None).
    """

    def __init__(self, core: _Core, driver: NodeDriver, budget: StreamBudget | None = None) -> None:
        self._core = core
        self._driver = driver
        self._streams: dict[StreamId, _Origin] = {}
        self._ledger = StreamLedger(budget if budget is not None else StreamBudget())

    @property
    def window(self) -> int:
        """Credit this node grants each stream it opens (its core's ``stream_window``)."""
        return self._core.limits.stream_window

    def stop(self) -> None:
        """The node stopped: every stream fails (502), nobody waits on one for ever."""
        for sid, st in self._streams.items():
            st.reset = StreamReset(stream_id=sid, status=502, reason="node stopped")
            st.signal.set()
        self._streams.clear()
        self._ledger = StreamLedger(self._ledger.budget)

    # --- origin streams -------------------------------------------------------------

    async def open(
        self,
        node_id: str,
        method: str,
        path: str,
        headers: tuple[tuple[str, str], ...],
        client: str | None,
    ) -> ProxyResponse:
        """``Node.open_request`` (see there)."""
        st = _Origin()
        key = client_key(client) if client is not None else None
        refused: list[str] = []

        def start(now: float) -> None:
            # The budget check reads the link's open streams in the core and records
            # the new one in the same driver step, so concurrent requests cannot both
            # take the last slot of a client's share.
            counted: tuple[str, LinkId] | None = None
            if key is not None and (hop := self._core.next_hop(node_id)) is not None:
                reason = self._ledger.refusal(key, hop)
                if reason is not None:
                    refused.append(reason)
                    return
                counted = (key, hop.link_id)
            sid = self._core.open_request(node_id, method, path, headers, now=now)
            st.sid = sid
            if st.abandoned:  # the caller was cancelled before this ran
                self._core.reset_stream(sid, now, "cancelled")
                return
            self._streams[sid] = st
            if counted is not None:
                st.ticket = self._ledger.record(*counted)

        try:
            await self._driver.call(start)
            if refused:
                raise StreamResetError(429, refused[0])
            while st.head is None:
                if st.reset is not None:
                    raise StreamResetError(st.reset.status, st.reset.reason)
                await st.signal.wait()
        except BaseException:
            self.abandon(st)
            raise
        return ProxyResponse(self, st, st.head)

    def grant(self, st: _Origin, amount: int) -> None:
        """The consumer of ``st`` took ``amount`` bytes: give that credit back."""
        sid = st.sid
        if sid is not None and not st.ended and st.reset is None:
            self._driver.post(lambda now: self._core.grant_credit(sid, amount, now))

    def abandon(self, st: _Origin) -> None:
        """The consumer went away: reset the stream (at every hop) if still open."""
        st.abandoned = True
        sid = st.sid
        if sid is None or st.ended or st.reset is not None:
            return
        self._streams.pop(sid, None)
        st.reset = StreamReset(stream_id=sid, status=499, reason="requester went away")

        def reset(now: float) -> None:
            self._core.reset_stream(sid, now, "requester went away")
            self._release(st)

        self._driver.post(reset)

    def _release(self, st: _Origin) -> None:
        """Give the stream's count back to its client's share (once)."""
        ticket = st.ticket
        if ticket is not None:
            st.ticket = None
            self._ledger.release(ticket)

    # --- events (driver task; never block) ------------------------------------------

    def on_event(self, event: Event) -> None:
        """Handle a ``ResponseStarted``, ``ResponseData``, ``ResponseEnded`` or
        ``StreamReset`` event of the core (driver task; never blocks); others are not
        ours."""
        if isinstance(event, ResponseData):
            st = self._streams.get(event.stream_id)
            if st is not None:
                st.chunks.append(event.data)
                st.signal.set()
        elif isinstance(event, ResponseStarted):
            st = self._streams.get(event.stream_id)
            if st is not None:
                st.head = event
                st.signal.set()
        elif isinstance(event, ResponseEnded):
            st = self._streams.pop(event.stream_id, None)
            if st is not None:
                st.ended = True
                self._release(st)
                st.signal.set()
        elif isinstance(event, StreamReset):
            st = self._streams.pop(event.stream_id, None)
            if st is not None:
                st.reset = event
                self._release(st)
                st.signal.set()
