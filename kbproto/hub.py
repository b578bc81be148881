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
from kbproto.errors import LocalProtocolError
from kbproto.ids import IdSource, LinkId, is_sha1
from kbproto.messages import MAX_SIZE, NodeInfo
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

    # --- content the hub holds itself (docs/protocol.md §13) ----------------------------

    def take_content_requests(self, enabled: bool) -> None:
        """With ``enabled``, a request naming content (``GET`` or ``HEAD
        /ID/sha1/SHA1``) that this hub would relay to node ID reaches the app as a
        ``RequestReceived`` instead, so a hub with a relay cache answers it from its
        cache or fetches it itself (filling its cache); off by default."""
        self._node.takes_content = enabled

    def put_cached(self, sha1: str, size: int, now: float) -> None:
        """The hub holds verified content ``sha1`` of ``size`` bytes itself (its relay
        cache): it answers finds for it as a source (path: the content id) and reports
        it to its parent like its subtree's content. Drain actions after calling.

        Raises:
            LocalProtocolError: malformed ``sha1`` or ``size``, or the hub already
                holds ``Limits.max_own_content`` ids.
        """
        if not is_sha1(sha1):
            raise LocalProtocolError(f"not a sha1: {sha1!r}")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_SIZE:
            raise LocalProtocolError(f"not a size: {size!r}")
        index = self._node.hub_index
        assert index is not None
        raw = bytes.fromhex(sha1)
        if index.own_size(raw) is None and index.own_count >= self._node.limits.max_own_content:
            raise LocalProtocolError(
                f"the hub holds {index.own_count} content ids itself already (max_own_content)"
            )
        index.put_own(raw, size)
        self._node.flush_index()

    def drop_cached(self, sha1: str, now: float) -> None:
        """The hub no longer holds content ``sha1`` itself (no-op if it did not, or if
        ``sha1`` is malformed). Drain actions after calling."""
        if not is_sha1(sha1):
            return
        index = self._node.hub_index
        assert index is not None
        index.drop_own(bytes.fromhex(sha1))
        self._node.flush_index()

    def cached_count(self) -> int:
        """Content ids the hub holds itself."""
        index = self._node.hub_index
        assert index is not None
        return index.own_count
