"""Lookup routing: answering finds from the subtree, then asking up (docs/protocol.md §6).

Strategy
--------
A find starts at a node (from its app, or from a peer's ``Find``) and becomes one
``_Pending`` record with a deadline. The node answers what it can itself:

* a share: its own file, if it holds the content;
* a hub: every direct share child holding it (path and size are in the hub's index),
  and one ``Find(up=False)`` per child *hub* whose subtree holds it.

Only if that yields nothing, and the find came from below (the app, or a child's
``Find(up=True)``), does the node ask its parent with ``Find(up=True)``; the parent
searches its subtree except the asker's branch, then its own parent. A find that came
down from a parent only ever goes further down. So a find climbs, then descends, and
never revisits a link: loops and duplicates are impossible by construction, with no
need to remember seen query ids.

Each hop gives its sub-queries 80 % of its own remaining time (``ttl_ms``), so replies
from below arrive before the hop's own deadline, which then answers with whatever it
has. Relaying a reply, a node appends itself ``(node_id, listen_url)`` to every
result's ``hops``: at the asking node, ``hops`` lists the hubs between the share and
it, nearest the share first.

Bounds: finds the peer has pending at us per link (``max_lookups_per_link``, a
``LimitExceeded`` on the link), finds pending at this node (``max_pending_lookups``:
over it, a peer gets an empty answer and the app a ``LookupFailed``), our own
sub-queries per link (the peer's announced limit: over it, that branch is skipped),
and results per reply (``MAX_RESULTS``, and the frame cap).

``Lookups`` reaches its node only through ``kbproto.port.LookupPort``: what the node
answers from its own index (``local_answer``), whether an id is below it, its parent
link, and the outbox, events and timers.
"""

from __future__ import annotations

from kbproto.codec import encode
from kbproto.errors import LimitExceeded, LocalProtocolError, RemoteProtocolError
from kbproto.events import LookupFailed, LookupResolved
from kbproto.ids import LinkId, LookupId, NodeId, is_node_id, is_sha1
from kbproto.link import Link
from kbproto.messages import MAX_ID, MAX_RESULTS, Find, FindReply, FindResult
from kbproto.port import LookupPort
from kbproto.timers import TimerKey, TimerKind

__all__ = ("Lookups",)

#: A sub-query gets this share of the time its parent query has left.
_TTL_SHARE = 0.8


class _Pending:
    """One find in progress at this node."""

    __slots__ = (
        "deadline",
        "from_link",
        "key",
        "lookup_id",
        "query",
        "raw",
        "results",
        "seen",
        "sha1",
        "share_id",
        "waiting",
    )

    def __init__(self, key: int, sha1: str, share_id: NodeId | None, deadline: float) -> None:
        self.key = key
        self.sha1 = sha1
        self.raw = bytes.fromhex(sha1)
        self.share_id = share_id
        self.deadline = deadline
        self.results: list[FindResult] = []
        self.seen: set[tuple[str, str]] = set()
        #: Our open sub-queries, as ``(link id, query)`` -> the link they went on.
        self.waiting: dict[tuple[LinkId, int], Link] = {}
        #: Who asked: a peer's link (and its query number), or the app (a lookup id).
        self.from_link: Link | None = None
        self.query = 0
        self.lookup_id: LookupId | None = None

    def add(self, result: FindResult) -> None:
        """Keep ``result`` unless it is a duplicate or the reply is full."""
        key = (result.kbshare_id, result.path)
        if key not in self.seen and len(self.results) < MAX_RESULTS:
            self.seen.add(key)
            self.results.append(result)


class Lookups:
    """Every pending find at one node (see the module docstring).

    Args:
        port: what the lookups may use of their node.
    """

    def __init__(self, port: LookupPort) -> None:
        self._port = port
        self._pending: dict[int, _Pending] = {}
        self._out: dict[tuple[LinkId, int], int] = {}
        self._incoming: dict[tuple[LinkId, int], int] = {}
        self._next_key = 0
        self._next_lookup = 0

    def __len__(self) -> int:
        """Number of finds pending at this node."""
        return len(self._pending)

    def find(self, sha1: str, now: float, share_id: str | None = None) -> LookupId:
        """Start a find for the app; the answer is ``LookupResolved`` or ``LookupFailed``.

        Raises:
            LocalProtocolError: malformed ``sha1`` or ``share_id``.
        """
        port = self._port
        if not is_sha1(sha1):
            raise LocalProtocolError(f"not a sha1: {sha1!r}")
        if share_id is not None and not is_node_id(share_id):
            raise LocalProtocolError(f"not a node id: {share_id!r}")
        lookup_id = LookupId(self._next_lookup)
        self._next_lookup += 1
        sid = NodeId(share_id) if share_id is not None else None
        if len(self._pending) >= port.limits.max_pending_lookups:
            port.emit(
                LookupFailed(
                    lookup_id=lookup_id, sha1=sha1, share_id=sid, reason="too many pending finds"
                )
            )
            return lookup_id
        pending = self._new(sha1, sid, now + port.timeouts.lookup_timeout)
        pending.lookup_id = lookup_id
        port.trace(now, "lookup", None, f"find {sha1} share={share_id} as #{lookup_id}")
        self._begin(pending, None, allow_up=True, now=now)
        return lookup_id

    def on_find(self, link: Link, message: Find, now: float) -> None:
        """A peer asks us; see the module docstring for where it goes next.

        Raises:
            RemoteProtocolError: the find came from the wrong side, or reuses an open
                query number; ``LimitExceeded`` past the peer's share of finds.
        """
        port = self._port
        limits = port.limits
        if message.up == link.dialed:
            direction = "up" if message.up else "down"
            raise RemoteProtocolError(f"a find going {direction} arrived from the wrong side")
        key = (link.link_id, message.query)
        if key in self._incoming:
            raise RemoteProtocolError(f"find {message.query} is already pending on this link")
        if link.peer_lookups >= limits.max_lookups_per_link:
            raise LimitExceeded(
                f"more than {limits.max_lookups_per_link} finds pending on one link",
                "max_lookups_per_link",
            )
        if len(self._pending) >= limits.max_pending_lookups:
            port.send(link, FindReply(query=message.query, results=()))
            return
        ttl = min(message.ttl_ms / 1000.0, port.timeouts.lookup_timeout)
        pending = self._new(message.sha1, message.share_id, now + ttl)
        pending.from_link = link
        pending.query = message.query
        self._incoming[key] = pending.key
        link.peer_lookups += 1
        self._begin(pending, link, allow_up=message.up, now=now)

    def on_reply(self, link: Link, message: FindReply, now: float) -> None:
        """An answer to one of our sub-queries.

        Raises:
            RemoteProtocolError: a reply to a query never sent.
        """
        out_key = (link.link_id, message.query)
        key = self._out.pop(out_key, None)
        if key is None:
            if message.query >= link.next_query:
                raise RemoteProtocolError(f"reply to find {message.query} that was never sent")
            return  # a late answer to a find we already finished
        link.our_lookups -= 1
        pending = self._pending[key]  # finishing a find removes its sub-queries from _out
        del pending.waiting[out_key]
        for result in message.results:
            if pending.share_id is None or result.kbshare_id == pending.share_id:
                pending.add(result)
        if not pending.waiting:
            self._finish(pending, now)

    def on_timer(self, key: int, now: float) -> None:
        """A find's deadline passed: answer with what we have."""
        pending = self._pending[key]  # finishing a find cancels its deadline
        self._port.trace(now, "timer", None, f"find {pending.sha1} deadline")
        self._finish(pending, now, timed_out=True)

    def link_lost(self, link: Link, now: float) -> None:
        """``link`` closed: its sub-queries count as empty answers; its finds are dropped."""
        link_id = link.link_id
        # First forget the finds that came in on the link (no one to answer), then
        # count the link's open sub-queries as empty answers.
        for in_key, key in list(self._incoming.items()):
            if in_key[0] == link_id:
                self._drop(self._pending[key])
        for out_key, key in list(self._out.items()):
            if out_key[0] == link_id:
                del self._out[out_key]
                pending = self._pending[key]
                del pending.waiting[out_key]
                if not pending.waiting:
                    self._finish(pending, now)

    def answer_now(self, sha1: str, share_id: str | None = None) -> tuple[FindResult, ...] | None:
        """The whole answer ``find`` would give at once, or None if it would ask a peer.

        Pure query: no state changes, no events, no trace, no id used. Returns the
        results ``find`` would resolve with (same results, same order), ``()`` when
        ``find`` would fail at once with "not found", and None whenever ``find`` would
        send a sub-query (a child hub holds the content, or the parent must be asked) or
        refuse for lack of room (``max_pending_lookups``). A caller falls back to
        ``find`` on None.

        Raises:
            LocalProtocolError: malformed ``sha1`` or ``share_id`` (as ``find``).
        """
        if not is_sha1(sha1):
            raise LocalProtocolError(f"not a sha1: {sha1!r}")
        if share_id is not None and not is_node_id(share_id):
            raise LocalProtocolError(f"not a node id: {share_id!r}")
        if len(self._pending) >= self._port.limits.max_pending_lookups:
            return None  # find answers LookupFailed("too many pending finds") then
        sid = NodeId(share_id) if share_id is not None else None
        results, hubs = self._port.local_answer(bytes.fromhex(sha1), sid, None)
        if hubs or (not results and self._up_link(sid, allow_up=True) is not None):
            return None
        return tuple(results)

    # --- internals --------------------------------------------------------------------

    def _new(self, sha1: str, share_id: NodeId | None, deadline: float) -> _Pending:
        """Register a pending find with its deadline."""
        key = self._next_key
        self._next_key += 1
        pending = _Pending(key, sha1, share_id, deadline)
        self._pending[key] = pending
        self._port.set_timer(TimerKey(TimerKind.LOOKUP, key), deadline)
        return pending

    def _begin(
        self, pending: _Pending, came_from: Link | None, *, allow_up: bool, now: float
    ) -> None:
        """Answer locally, ask child hubs below, or ask the parent (module docstring)."""
        results, hubs = self._port.local_answer(pending.raw, pending.share_id, came_from)
        for result in results:
            pending.add(result)
        for link in hubs:
            self._ask(pending, link, up=False, now=now)
        if not pending.results and not pending.waiting:
            parent = self._up_link(pending.share_id, allow_up)
            if parent is not None:
                self._ask(pending, parent, up=True, now=now)
        if not pending.waiting:
            self._finish(pending, now)

    def _up_link(self, share_id: NodeId | None, allow_up: bool) -> Link | None:
        """The parent link, if a find that found nothing below is asked of it.

        Only for finds that came from below (or our app), and, for a share-limited
        find, only when that share is not in our subtree: it cannot be anywhere else.
        """
        if not allow_up or (share_id is not None and self._port.in_subtree(share_id)):
            return None
        return self._port.parent_link()

    def _ask(self, pending: _Pending, link: Link, *, up: bool, now: float) -> None:
        """Send one sub-query on ``link`` with 80 % of the remaining time."""
        if link.our_lookups >= link.peer_max_lookups:
            self._port.trace(now, "lookup", link, "peer's find limit reached: branch skipped")
            return
        query = link.next_query
        link.next_query = (query + 1) % (MAX_ID + 1)
        link.our_lookups += 1
        ttl_ms = max(0, int((pending.deadline - now) * 1000 * _TTL_SHARE))
        self._port.send(
            link,
            Find(query=query, sha1=pending.sha1, share_id=pending.share_id, up=up, ttl_ms=ttl_ms),
        )
        self._out[(link.link_id, query)] = pending.key
        pending.waiting[(link.link_id, query)] = link

    def _drop(self, pending: _Pending) -> None:
        """Forget ``pending`` and its open sub-queries."""
        del self._pending[pending.key]
        self._port.cancel_timer(TimerKey(TimerKind.LOOKUP, pending.key))
        for out_key, link in pending.waiting.items():
            # ``waiting`` mirrors ``_out``; ``link_lost`` clears a dead link's
            # sub-queries first, so these links are open.
            del self._out[out_key]
            link.our_lookups -= 1
        pending.waiting.clear()
        asker = pending.from_link
        if asker is not None:
            del self._incoming[(asker.link_id, pending.query)]
            # The asker's link may be the one closing: its count no longer matters.
            asker.peer_lookups -= 1

    def _finish(self, pending: _Pending, now: float, *, timed_out: bool = False) -> None:
        """Answer the app or the asking link with what was found, appending our hop."""
        port = self._port
        self._drop(pending)
        if pending.lookup_id is not None:
            if pending.results:
                port.emit(
                    LookupResolved(
                        lookup_id=pending.lookup_id,
                        sha1=pending.sha1,
                        share_id=pending.share_id,
                        results=tuple(pending.results),
                    )
                )
            else:
                port.emit(
                    LookupFailed(
                        lookup_id=pending.lookup_id,
                        sha1=pending.sha1,
                        share_id=pending.share_id,
                        reason="timed out" if timed_out else "not found",
                        timed_out=timed_out,
                    )
                )
            return
        asker = pending.from_link
        assert asker is not None  # a find has either a lookup id or a link that asked
        # Relaying a reply, we become one more hub between the share and the asker.
        hop = ((port.info.node_id, port.info.listen_url),)
        results = [
            FindResult(
                kbshare_id=r.kbshare_id,
                share_url=r.share_url,
                path=r.path,
                size=r.size,
                hops=r.hops + hop,
            )
            for r in pending.results
            if len(r.hops) < 64
        ]
        reply = FindReply(query=pending.query, results=tuple(results))
        # Long paths can push a full reply over the frame cap: halve until it fits.
        while len(encode(reply)) > port.limits.max_control_frame:
            reply = FindReply(query=pending.query, results=reply.results[: len(reply.results) // 2])
        port.send(asker, reply)
