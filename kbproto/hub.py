"""``HubCore``: the protocol core of a hub (docs/commands.md, kbucket-hub and §5).

Strategy
--------
A hub accepts children (shares and hubs), challenges them, keeps its subtree's index
(``index.HubIndex``), answers finds from it and asks up when it must
(``routing.Lookups``), relays request streams both ways (``proxy.Streams``), and may
itself be the child of another hub. All of it lives in the shared ``_Node`` engine;
this class is the hub's public surface. The app (kbapps' hub) serves nodeinfo and the
web page from ``children()`` and ``parent_info``, answers its own HTTP routes with
``find`` and ``open_request``, and serves requests addressed to the hub itself
(``RequestReceived``).

Example::

    hub = HubCore(HubConfig(name="lab hub", listen_url="http://h:3240"),
                  signer=signer, verifier=verifier, ids=SeededIdSource(1))
    hub.start(now)
    hub.link_opened(LinkId(1), now)          # a child connected
    hub.receive_data(LinkId(1), data, now)   # its bytes
    drained = kbproto.pump.drain(hub, on_event=app.handle)
    for action in drained.actions: ...       # Transmit / Hangup / Dial
"""

from __future__ import annotations

from kbproto._common import _CoreCommon
from kbproto._node import _Node
from kbproto.auth import Signer, Verifier
from kbproto.config import HubConfig
from kbproto.ids import IdSource, LinkId
from kbproto.messages import NodeInfo
from kbproto.state import LinkState
from kbproto.trace import TraceSink

__all__ = ("HubCore",)


class HubCore(_CoreCommon):
    """The sans-IO hub (satisfies ``kbproto.core.NodeCore``).

    Args:
        config: who the hub is, its passcode, its parent, limits and timeouts.
        signer: signs our own registration with our parent (holds the private key).
        verifier: checks children's signatures.
        ids: fresh nonces and backoff jitter.
        trace: optional sink for trace records.
    """

    def __init__(
        self,
        config: HubConfig,
        *,
        signer: Signer,
        verifier: Verifier,
        ids: IdSource,
        trace: TraceSink | None = None,
    ) -> None:
        if not isinstance(config, HubConfig):
            raise TypeError("HubCore needs a HubConfig")
        self._node = _Node(config, signer=signer, verifier=verifier, ids=ids, trace=trace)

    def children(self) -> tuple[tuple[LinkId, NodeInfo], ...]:
        """Every joined child as ``(link_id, info)``, in join order."""
        return tuple(
            (link.link_id, link.peer)
            for link in self._node.links.values()
            if link.state is LinkState.CHILD_UP and link.peer is not None
        )

    def content_count(self) -> int:
        """Distinct content ids reachable in this hub's subtree."""
        assert self._node.hub_index is not None
        return self._node.hub_index.content_count

    def knows_node(self, node_id: str) -> bool:
        """True if ``node_id`` is this hub or in its subtree."""
        return self._node.in_subtree(node_id)

    def child_toward(self, node_id: str) -> LinkId | None:
        """The child link a request for ``node_id`` goes down, or None (not below us).

        Only ids resting on a proven placement are below us (docs/protocol.md §5).
        """
        assert self._node.hub_index is not None
        return self._node.hub_index.route(node_id)
