"""The narrow ports between a node and its lookup and stream parts (STYLE rule 10).

Strategy
--------
A node (``kbproto._node``) owns the links, the timers, the outbox and the index;
``routing.Lookups`` and ``proxy.Streams`` own pending finds and open streams. The
parts reach the node only through these protocols, never through the concrete node,
so each part can be built and tested alone on a small fake (``tests/proto/fakes.py``)
and the node's other machinery stays out of their reach.

What crosses the port is deliberately small: the configured limits and timeouts,
queuing a message on a link, emitting an app event, a trace record, arming and
cancelling one of the node's timers, and a few questions only the node can answer
(where a request goes next, what the node's own index holds, whether its parent link
is up). Links cross as ``kbproto.link.Link`` objects: per-link bookkeeping (counters,
stream and query numbers) that a part may update, not behaviour.
"""

from __future__ import annotations

from typing import Literal, Protocol

from kbproto.config import Limits, Timeouts
from kbproto.events import Event
from kbproto.ids import NodeId
from kbproto.link import Link
from kbproto.messages import FindResult, Message, NodeInfo
from kbproto.timers import TimerKey

__all__ = ("LookupPort", "NodePort", "StreamPort")


class NodePort(Protocol):
    """What both parts use of their node."""

    @property
    def limits(self) -> Limits:
        """The node's size limits."""
        ...

    @property
    def timeouts(self) -> Timeouts:
        """The node's timeouts."""
        ...

    def send(self, link: Link, message: Message) -> None:
        """Queue a control message on ``link`` (an open link)."""
        ...

    def emit(self, event: Event) -> None:
        """Queue an app-facing event."""
        ...

    def trace(self, now: float, category: str, link: Link | None, detail: str) -> None:
        """Hand one record to the node's trace sink."""
        ...

    def set_timer(self, key: TimerKey, when: float) -> None:
        """Arm (or re-arm) the node's timer ``key`` for absolute time ``when``; the
        node calls the part's ``on_timer`` when it fires."""
        ...

    def cancel_timer(self, key: TimerKey) -> None:
        """Disarm the timer ``key`` (a no-op if it is not armed)."""
        ...


class StreamPort(NodePort, Protocol):
    """What ``proxy.Streams`` uses of its node."""

    @property
    def takes_content(self) -> bool:
        """True if requests naming content (``GET``/``HEAD /ID/sha1/SHA1``) that would
        be relayed are served here instead (a hub with a relay cache, §13)."""
        ...

    def send_bulk(self, link: Link, frame: bytes) -> None:
        """Queue encoded data or ``End`` frames on ``link``, behind its control frames."""
        ...

    def route(self, target: str, came_from: Link | None) -> Link | Literal["self"] | None:
        """Where a request for node ``target`` goes next (docs/protocol.md §7
        "Routing"): ``"self"``, the next link, or None (no route; never back to
        ``came_from``)."""
        ...


class LookupPort(NodePort, Protocol):
    """What ``routing.Lookups`` uses of its node."""

    @property
    def info(self) -> NodeInfo:
        """The node's own info (a relayed reply appends its id and listen URL)."""
        ...

    def parent_link(self) -> Link | None:
        """The link to the parent while joined, else None."""
        ...

    def in_subtree(self, node_id: NodeId) -> bool:
        """True if ``node_id`` is the node itself or routed below it."""
        ...

    def local_answer(
        self, raw: bytes, share_id: NodeId | None, came_from: Link | None
    ) -> tuple[list[FindResult], list[Link]]:
        """What the node answers for content ``raw`` from its own index, and which
        child hubs' subtrees hold it (docs/protocol.md §6 step 1). No side effects."""
        ...
