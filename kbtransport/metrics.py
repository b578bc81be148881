"""What a node counts about its own work, reported as ``metrics`` in its nodeinfo.

The original node published request and byte counters in ``nodeinfo``; these are ours
(``docs/protocol.md`` §11, "nodeinfo"). Each counter is a plain integer bumped where the
work is done, once per request or once per body piece (pieces are up to 1 MiB), so
counting costs nothing measurable on finds and downloads. Counters start at zero when
the process starts, as the original's did; nothing is persisted.

What each one counts:

* ``http_requests``: requests the node's HTTP server received from its clients (any
  route, OPTIONS preflights included; not the requests the node's own web pages make
  inside the process to show another node);
* ``network_requests``: requests that reached this node through the tree (a hub
  forwarded them here: a proxied download, readdir, nodeinfo...);
* ``finds``: find requests answered by the find routes (``/find/...`` and
  ``/ID/api/find/...``, also when the node's own find page asks them);
* ``bytes_served_direct``: bytes of this node's own files sent to its HTTP clients;
* ``bytes_served_to_network``: bytes of this node's own files sent into the tree, for
  requests a hub forwarded here;
* ``bytes_proxied``: bytes of other nodes' answers this node passed on, to its HTTP
  clients or into the tree (a hub streaming a share's file to a browser). Bytes a hub
  relays between two of its links inside the core (a request passing through the
  middle of the tree) are not counted.

Only body bytes are counted, and a body counts once it was sent whole (file bodies) or
piece by piece as each piece went out (streamed bodies).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kbtransport.relaycache import RelayCache

__all__ = ("NodeMetrics", "ServerCounters")


@dataclass(slots=True, kw_only=True)
class ServerCounters:
    """What an HTTP server counts (``ServerConfig.counters``).

    Attributes:
        requests: requests read from clients.
        file_bytes: ``FileBody`` bytes sent (the node's own files).
        stream_bytes: ``StreamBody`` bytes sent (answers streamed from another node).
    """

    requests: int = 0
    file_bytes: int = 0
    stream_bytes: int = 0


@dataclass(slots=True, kw_only=True)
class NodeMetrics:
    """A node's counters (see the module docstring); mutated in place, one task at a time.

    Attributes:
        started: the node clock's time when the node started running (for the uptime).
        server: what the node's HTTP server counts (shared with its ``ServerConfig``).
        network_requests, finds: request counts.
        tree_file_bytes: own file bytes sent into the tree.
        tree_stream_bytes: streamed (other nodes') bytes sent into the tree.
        relay_cache: the hub's relay cache, if it has one.
    """

    started: float
    server: ServerCounters = field(default_factory=ServerCounters)
    network_requests: int = 0
    finds: int = 0
    tree_file_bytes: int = 0
    tree_stream_bytes: int = 0
    #: A hub's relay cache, reported as nodeinfo's ``cache`` (None: no cache).
    relay_cache: RelayCache | None = None

    def to_json(self, now: float) -> dict[str, int]:
        """The ``metrics`` object of nodeinfo at time ``now`` (the node clock's)."""
        return {
            "uptime_seconds": max(0, int(now - self.started)),
            "http_requests": self.server.requests,
            "network_requests": self.network_requests,
            "finds": self.finds,
            "bytes_served_direct": self.server.file_bytes,
            "bytes_served_to_network": self.tree_file_bytes,
            "bytes_proxied": self.server.stream_bytes + self.tree_stream_bytes,
        }
