"""A hostile hub for the simulator: a real ``HubCore`` whose link to its parent lies.

Attacker code of our own (issue 11, class 4). ``HostileHub`` wraps a ``HubCore`` and
satisfies ``NodeCore``, so ``SimNetwork`` runs it like any node. On the link to its
parent it:

* adds ``claims`` (placements: forged, minted, or genuine ones recorded earlier) to
  every ``hub_index`` it sends, and never reports those ids as dropped;
* answers every request addressed to an id in ``impersonate`` itself, with
  ``IMPOSTOR`` bytes, so a test sees at once where a request was routed.

It also records the placement of every child that joins it (``recorded``): a hub
that was once a node's parent holds that node's genuine, signed, old placement, and
can replay it after the node moved away.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import replace

from kbproto.actions import Action, Transmit
from kbproto.codec import decode, encode
from kbproto.events import Event
from kbproto.framing import FrameBuffer
from kbproto.hub import HubCore
from kbproto.ids import LinkId, NodeId
from kbproto.messages import (
    Credit,
    Data,
    End,
    HubIndexUpdate,
    Message,
    Open,
    Placement,
    Register,
    Reset,
    Response,
)

__all__ = ("IMPOSTOR", "HostileHub")

#: The body a hostile hub serves for every id it impersonates.
IMPOSTOR = b"IMPOSTOR: served by the hostile hub"


def _messages(frames: FrameBuffer, data: bytes) -> list[Message]:
    frames.feed(data)
    out: list[Message] = []
    while (frame := frames.next_frame()) is not None:
        out.append(decode(*frame))
    return out


class HostileHub:
    """A ``HubCore`` whose parent link lies (see the module docstring).

    Args:
        core: the real hub core underneath.
        claims: called whenever an index message goes up; returns the placements to add.
        impersonate: node ids whose requests this hub answers itself.
    """

    def __init__(
        self,
        core: HubCore,
        *,
        claims: Callable[[], list[Placement]],
        impersonate: set[str],
    ) -> None:
        self.core = core
        self._claims = claims
        self._impersonate = impersonate
        self.recorded: dict[NodeId, Placement] = {}
        self.served: list[str] = []
        self._parent: LinkId | None = None
        self._in: dict[LinkId, FrameBuffer] = {}
        self._out = FrameBuffer()
        self._own_streams: set[int] = set()
        self._injected: deque[Action] = deque()

    # --- NodeCore -----------------------------------------------------------------------

    def start(self, now: float, *, wall_ms: int | None = None) -> None:
        self.core.start(now, wall_ms=wall_ms)

    def link_opened(self, link_id: LinkId, now: float, *, dialed: bool = False) -> None:
        self._in[link_id] = FrameBuffer()
        if dialed:
            self._parent = link_id
            self._out = FrameBuffer()
        self.core.link_opened(link_id, now, dialed=dialed)

    def dial_failed(self, now: float, reason: str) -> None:
        self.core.dial_failed(now, reason)

    def receive_data(self, link_id: LinkId, data: bytes, now: float) -> None:
        messages = _messages(self._in[link_id], data)
        if link_id != self._parent:
            for message in messages:
                if isinstance(message, Register):
                    self.recorded[message.info.node_id] = message.placement
            self.core.receive_data(link_id, data, now)
            return
        for message in messages:
            if isinstance(message, Open) and message.target in self._impersonate:
                self._serve(link_id, message)
            elif isinstance(message, Credit | Reset) and message.stream in self._own_streams:
                pass  # about a stream we answered ourselves: the core never saw it
            else:
                self.core.receive_data(link_id, encode(message), now)

    def receive_eof(self, link_id: LinkId, now: float) -> None:
        self.core.receive_eof(link_id, now)

    def get_timer(self) -> float | None:
        return self.core.get_timer()

    def handle_timer(self, now: float) -> None:
        self.core.handle_timer(now)

    def next_event(self) -> Event | None:
        return self.core.next_event()

    def next_action(self) -> Action | None:
        if self._injected:
            return self._injected.popleft()
        action = self.core.next_action()
        if isinstance(action, Transmit) and action.link_id == self._parent:
            out = [self._lie(m) for m in _messages(self._out, action.data)]
            return Transmit(link_id=action.link_id, data=b"".join(encode(m) for m in out))
        return action

    # --- the lies -----------------------------------------------------------------------

    def _lie(self, message: Message) -> Message:
        if not isinstance(message, HubIndexUpdate):
            return message
        claims = tuple(self._claims())
        claimed = {placement.node_id for placement in claims}
        return replace(
            message,
            nodes_put=message.nodes_put + claims,
            nodes_drop=tuple(n for n in message.nodes_drop if n not in claimed),
        )

    def _serve(self, link_id: LinkId, request: Open) -> None:
        self.served.append(request.target)
        self._own_streams.add(request.stream)
        head = Response(
            stream=request.stream,
            status=200,
            headers=(("content-length", str(len(IMPOSTOR))),),
        )
        frames = encode(head) + encode(Data(stream=request.stream, data=IMPOSTOR))
        frames += encode(End(stream=request.stream))
        self._injected.append(Transmit(link_id=link_id, data=frames))
