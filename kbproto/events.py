"""What a core tells its application: the app-facing vocabulary (STYLE rules 5 and 8).

Strategy
--------
Events are frozen facts, drained one at a time with ``core.next_event()`` after every
call into the core. Expected network outcomes are events, never exceptions: a peer
that broke the protocol, a heartbeat timeout, a find that found nothing, a stream
that a hop reset. Each handle in an event (``LinkId``, ``LookupId``, ``StreamId``) is
node-local and was either given to the driver (links) or returned by a command
(lookups, streams opened by the app) or is new in the event (``RequestReceived``).

Roles of a stream at a node: the *origin* (the app called ``open_request`` and
consumes ``Response*`` events, returning credit with ``grant_credit``), the *target*
(the app got ``RequestReceived`` and answers with ``respond``/``send_data``/
``end_stream``, sending at most ``send_capacity`` bytes, told of more by
``StreamWritable``), or a *relay* (hubs in between; the app never sees those).
"""

from __future__ import annotations

from dataclasses import dataclass

from kbproto.ids import LinkId, LookupId, NodeId, StreamId
from kbproto.messages import FindResult, NodeInfo

__all__ = (
    "ChildJoined",
    "Event",
    "IndexSynced",
    "JoinRefused",
    "LinkClosed",
    "LookupFailed",
    "LookupResolved",
    "ParentConnected",
    "PlacementRefused",
    "RequestReceived",
    "ResponseData",
    "ResponseEnded",
    "ResponseStarted",
    "StreamReset",
    "StreamWritable",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ParentConnected:
    """This node joined its parent hub (print ``Connected to parent hub: <name>``).

    ``info`` is the parent's own description: the ``parent_hub_info`` of nodeinfo.
    """

    link_id: LinkId
    info: NodeInfo


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinRefused:
    """The parent refused this node's registration; ``reason`` is one line for users.

    A ``LinkClosed`` for the same link follows, and the core schedules a redial.
    """

    link_id: LinkId
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildJoined:
    """A child registered with this hub (a hub prints one line per join)."""

    link_id: LinkId
    info: NodeInfo


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkClosed:
    """A link ended; every stream and lookup that depended on it has failed.

    Attributes:
        link_id: the link.
        peer_id: the peer's node id if it had identified itself, else None.
        role: ``"parent"`` (the link to our parent), ``"child"``, or ``"pending"``
            (closed before the handshake finished).
        reason: one line: the peer's error text, our protocol error, ``"closed by
            peer"``, or the heartbeat timeout.
        timed_out: True if the peer fell silent past the heartbeat or handshake timeout
            (a half-open link).
    """

    link_id: LinkId
    peer_id: NodeId | None
    role: str
    reason: str
    timed_out: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class PlacementRefused:
    """(Hubs) a child reported a node id without a valid placement; it was dropped.

    Emitted for the first such id per link (the core counts the rest and closes the
    link past ``kbproto.nodetable.MAX_UNPROVEN_CLAIMS``). A hub prints one line: a
    child hub claiming nodes it cannot prove is worth an operator's look.

    Attributes:
        link_id: the child's link.
        peer_id: the child's own node id.
        node_id: the id it claimed.
        reason: why the placement proves nothing (forged id, bad signature...).
    """

    link_id: LinkId
    peer_id: NodeId | None
    node_id: NodeId
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class IndexSynced:
    """(Shares and child hubs) the parent has acknowledged everything reported so far."""

    link_id: LinkId
    entries: int


@dataclass(frozen=True, slots=True, kw_only=True)
class LookupResolved:
    """The find ``lookup_id`` found the content in at least one place.

    ``results[i].hops`` lists the hubs between the share and this node, nearest the
    share first; the app builds docs/http.md ``urls`` as the share's URL, each hop's URL,
    then this node's own URL.
    """

    lookup_id: LookupId
    sha1: str
    share_id: NodeId | None
    results: tuple[FindResult, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class LookupFailed:
    """The find ``lookup_id`` found nothing (``timed_out`` says if time ran out)."""

    lookup_id: LookupId
    sha1: str
    share_id: NodeId | None
    reason: str
    timed_out: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestReceived:
    """Target role: serve this request (answer with ``respond`` then ``send_data``...).

    ``capacity`` is how many body bytes may be sent right now (``send_capacity``).
    """

    stream_id: StreamId
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    capacity: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamWritable:
    """Target role: the requester granted credit; ``capacity`` bytes may be sent now."""

    stream_id: StreamId
    capacity: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseStarted:
    """Origin role: the response head arrived."""

    stream_id: StreamId
    status: int
    headers: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseData:
    """Origin role: body bytes; return credit with ``grant_credit`` once consumed."""

    stream_id: StreamId
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseEnded:
    """Origin role: the body is complete; the stream is closed."""

    stream_id: StreamId


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamReset:
    """Origin or target role: the stream was aborted; it is closed.

    ``status`` fits an HTTP error: 404 unknown node, 499 requester gone, 502 a node
    on the way failed, 503 too busy, 504 timed out.
    """

    stream_id: StreamId
    status: int
    reason: str


#: Every event a core can emit.
Event = (
    ParentConnected
    | JoinRefused
    | ChildJoined
    | LinkClosed
    | PlacementRefused
    | IndexSynced
    | LookupResolved
    | LookupFailed
    | RequestReceived
    | StreamWritable
    | ResponseStarted
    | ResponseData
    | ResponseEnded
    | StreamReset
)
