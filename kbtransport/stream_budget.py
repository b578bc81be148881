"""Sharing a node's proxied streams among its HTTP clients (``docs/security.md`` §3).

Theory of operation
-------------------
A request a node proxies (``/ID/download/...``, ``/sha1/...`` served from elsewhere,
the web pages of another node) becomes a stream on the link toward that node. A link
carries at most what the next node grants (``Limits.max_streams_per_link``, 256 by
default) and a node at most ``Limits.max_open_streams`` in all; a client that opens
streams and never reads them holds them until their deadlines pass (minutes). Before
this ledger one client could take every slot of the link to a share, and every other
client's request for that share got 503 until then.

``StreamLedger`` counts the streams each client (``kbtransport.clients``) has open
through this node, in all and per next-hop link, and refuses a new one when it would
cross ``StreamBudget``:

* ``per_client`` streams in all;
* ``link_share`` of a link's slots (one client, whatever it does, leaves the rest of
  the link to the others);
* the *reserve*: once fewer than ``link_reserve`` of a link's slots are free, only
  light clients (fewer than ``light_streams`` streams on that link) may open more,
  so heavy clients from many addresses together still leave room for the others.

The node checks and records a stream in the driver task, in the same step in which
the core opens it (so the link's count the check reads is exact), and releases it
when the stream ends, is reset, or its requester goes away.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kbproto.ids import LinkId
from kbproto.proxy import HopStreams

__all__ = ("StreamBudget", "StreamLedger", "StreamTicket")


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamBudget:
    """How a node shares its proxied streams among clients.

    Attributes:
        per_client: proxied streams one client (an address; an IPv6 /64) may have
            open through this node at once. ``kb-prv-download`` fetches 4 files at
            once and a browser a handful, so 64 lets some 16 people behind one NAT
            download through the node at the same instant: an eighth of the node's
            512 open streams.
        link_share: the largest fraction of one link's stream slots a single client
            may hold: 0.25 is 64 of the 256 a share grants.
        link_reserve: the fraction of a link's slots kept for light clients (below).
        light_streams: a client with fewer streams than this on a link is light: it
            may use the reserve. 4 is one ``kb-prv-download`` of a ``.prvdir``.
    """

    per_client: int = 64
    link_share: float = 0.25
    link_reserve: float = 0.25
    light_streams: int = 4

    def __post_init__(self) -> None:
        if self.per_client < 1 or self.light_streams < 1:
            raise ValueError("StreamBudget.per_client and light_streams must be at least 1")
        if not 0 < self.link_share <= 1 or not 0 <= self.link_reserve < 1:
            raise ValueError("StreamBudget.link_share must be in (0, 1], link_reserve in [0, 1)")


@dataclass(frozen=True, slots=True)
class StreamTicket:
    """One recorded stream: released exactly once with ``StreamLedger.release``."""

    client: str
    link_id: LinkId


class StreamLedger:
    """Open proxied streams per client and per (client, link); see the module docstring."""

    def __init__(self, budget: StreamBudget) -> None:
        self.budget = budget
        self._per_client: dict[str, int] = {}
        self._per_link: dict[tuple[str, LinkId], int] = {}

    def held(self, client: str, link_id: LinkId | None = None) -> int:
        """Streams ``client`` has open through this node (on ``link_id`` if given)."""
        if link_id is None:
            return self._per_client.get(client, 0)
        return self._per_link.get((client, link_id), 0)

    def refusal(self, client: str, hop: HopStreams) -> str | None:
        """Why ``client`` may not open one more stream on ``hop``; None if it may."""
        budget = self.budget
        total = self._per_client.get(client, 0)
        if total >= budget.per_client:
            return f"too many proxied requests open from your address ({total})"
        mine = self._per_link.get((client, hop.link_id), 0)
        if mine >= max(1, math.floor(hop.limit * budget.link_share)):
            return f"too many proxied requests open from your address to this node ({mine})"
        free = hop.limit - hop.open
        if mine >= budget.light_streams and free <= math.ceil(hop.limit * budget.link_reserve):
            return "the link to this node is busy; its last slots are kept for light clients"
        return None

    def record(self, client: str, link_id: LinkId) -> StreamTicket:
        """Count a stream ``client`` opened on ``link_id``."""
        self._per_client[client] = self._per_client.get(client, 0) + 1
        key = (client, link_id)
        self._per_link[key] = self._per_link.get(key, 0) + 1
        return StreamTicket(client, link_id)

    def release(self, ticket: StreamTicket) -> None:
        """The stream of ``ticket`` ended: uncount it (call once per ticket)."""
        client = ticket.client
        left = self._per_client[client] - 1
        if left:
            self._per_client[client] = left
        else:
            del self._per_client[client]
        key = (client, ticket.link_id)
        left = self._per_link[key] - 1
        if left:
            self._per_link[key] = left
        else:
            del self._per_link[key]
