"""A small fake node for testing ``proxy.Streams`` and ``routing.Lookups`` alone.

``FakePort`` implements ``kbproto.port.StreamPort`` and ``LookupPort`` with plain
records: what was sent on which link, the events, the armed timers. Its answers
(routes, the local index, the parent) are set by the test. Links are real
``kbproto.link.Link`` objects, the per-link bookkeeping the parts update.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, TypeVar

from kbproto.codec import decode_split
from kbproto.config import Limits, Timeouts
from kbproto.events import Event
from kbproto.framing import FrameBuffer
from kbproto.ids import LinkId, NodeId
from kbproto.link import Link
from kbproto.messages import FindResult, Message, NodeInfo
from kbproto.timers import TimerKey

E = TypeVar("E")

#: The fake node's own id (12 hex digits).
NODE_ID = NodeId("aaaaaaaaaaaa")


def make_link(
    link_id: int, *, dialed: bool = False, max_streams: int = 8, max_lookups: int = 8
) -> Link:
    """An open link with the limits its peer announced."""
    link = Link(LinkId(link_id), dialed=dialed, now=0.0, max_control=1 << 20, ping_interval=10.0)
    link.peer_max_streams = max_streams
    link.peer_max_lookups = max_lookups
    return link


@dataclass
class FakePort:
    """A node reduced to what the parts may use of it (``kbproto.port``)."""

    limits: Limits = field(default_factory=Limits)
    timeouts: Timeouts = field(default_factory=Timeouts)
    info: NodeInfo = field(
        default_factory=lambda: NodeInfo(
            node_id=NODE_ID,
            node_type="hub",
            name="fake",
            description="",
            owner="",
            owner_email="",
            listen_url="http://fake:1",
            public_key="key",
            scientific_research="yes",
            confirm_share="",
        )
    )
    #: Where requests for a node id go (``route``); anything else has no route.
    routes: dict[str, Link | Literal["self"]] = field(default_factory=dict)
    #: Serve requests naming content instead of relaying them (``takes_content``).
    takes_content: bool = False
    #: The parent link while "joined".
    parent: Link | None = None
    #: Node ids "below" the fake node.
    subtree: set[str] = field(default_factory=set)
    #: Content id (raw) -> (results, child hub links) for ``local_answer``.
    answers: dict[bytes, tuple[list[FindResult], list[Link]]] = field(default_factory=dict)
    sent: list[tuple[LinkId, Message]] = field(default_factory=list)
    bulk: list[tuple[LinkId, bytes]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    traces: list[str] = field(default_factory=list)
    timers: dict[TimerKey, float] = field(default_factory=dict)

    def send(self, link: Link, message: Message) -> None:
        self.sent.append((link.link_id, message))

    def send_bulk(self, link: Link, frame: bytes) -> None:
        self.bulk.append((link.link_id, frame))

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def trace(self, now: float, category: str, link: Link | None, detail: str) -> None:
        self.traces.append(detail)

    def set_timer(self, key: TimerKey, when: float) -> None:
        self.timers[key] = when

    def cancel_timer(self, key: TimerKey) -> None:
        self.timers.pop(key, None)

    def route(self, target: str, came_from: Link | None) -> Link | Literal["self"] | None:
        dest = self.routes.get(target)
        return None if dest is not None and dest is came_from else dest

    def parent_link(self) -> Link | None:
        return self.parent

    def in_subtree(self, node_id: NodeId) -> bool:
        return node_id in self.subtree

    def local_answer(
        self, raw: bytes, share_id: NodeId | None, came_from: Link | None
    ) -> tuple[list[FindResult], list[Link]]:
        results, hubs = self.answers.get(raw, ([], []))
        return list(results), [hub for hub in hubs if hub is not came_from]

    # --- reading what happened --------------------------------------------------------

    def sent_on(self, link: Link) -> list[Message]:
        """Control messages sent on ``link``, in order (and forgotten)."""
        mine = [message for link_id, message in self.sent if link_id == link.link_id]
        self.sent = [(link_id, m) for link_id, m in self.sent if link_id != link.link_id]
        return mine

    def bulk_on(self, link: Link) -> list[Message]:
        """Data and ``End`` frames queued on ``link``, decoded (and forgotten)."""
        buffer = FrameBuffer(1 << 20)
        for link_id, data in self.bulk:
            if link_id == link.link_id:
                buffer.feed(data)
        self.bulk = [(link_id, f) for link_id, f in self.bulk if link_id != link.link_id]
        frames = []
        while (frame := buffer.next_split()) is not None:
            frames.append(decode_split(*frame))
        return frames

    def of(self, kind: type[E]) -> list[E]:
        """The events of one kind, in order."""
        return [event for event in self.events if isinstance(event, kind)]
