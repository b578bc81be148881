"""A node's links to other nodes: dialing its parent, accepting its children.

* ``ParentDialer`` opens the link to the parent hub (a ``Dial`` action of the core):
  a websocket, and by default the child's uplink next to it (``kbtransport.uplink``,
  ``docs/protocol.md`` §1), which carries every child-to-parent byte unmasked. A
  parent whose uplink upgrade fails (a proxy in front of it passing websockets only)
  is dialed with a plain websocket for ``_UPLINK_RETRY`` seconds.
* ``ChildLinks`` answers a child's websocket upgrade with a 101 carrying a link that
  the driver serves, pairs an uplink connection with its websocket, and keeps the
  join budget (``kbtransport.join_guard``, ``docs/security.md``): an address whose
  joins keep failing waits (429) before it may try again, and the console hears of
  failed joins within a budget of lines.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
from anyio.abc import TaskGroup

from kbproto.ids import LinkId
from kbtransport.clients import client_key
from kbtransport.driver import LinkTransport, NodeDriver
from kbtransport.env import Clock
from kbtransport.errors import TransportError
from kbtransport.http import RawUpgrade, Request, Response, WebSocketAccept, error_response
from kbtransport.join_guard import JoinBudget, JoinGuard, RefusalSummary
from kbtransport.uplink import (
    UPLINK_HEADER,
    UPLINK_PROTOCOL,
    UPLINK_SUBPROTOCOL,
    UplinkClientLink,
    UplinkRegistry,
    new_token,
    uplink_url,
)
from kbtransport.websocket import WebSocketLink, connect_websocket

__all__ = ("MAX_LINK_MESSAGE", "ChildLinks", "ParentDialer")

#: How long a child offers only plain websockets to a parent whose uplink failed.
_UPLINK_RETRY = 600.0
#: Largest websocket message accepted from a peer; kbproto frames are at most 1 MiB,
#: and a peer's Transmit at most a few hundred KiB.
MAX_LINK_MESSAGE = 16 * 1024 * 1024


class ParentDialer:
    """Opens the link to a parent URL (the driver's dialer).

    Args:
        ssl_context: TLS context for ``wss`` parents (system store if None).
        timeout: seconds for one dial (connect, TLS, handshake; each connection).
        uplink: offer the parent the uplink (``kbtransport.uplink``); the parent may
            decline.
    """

    def __init__(self, *, ssl_context: ssl.SSLContext | None, timeout: float, uplink: bool) -> None:
        self._ssl = ssl_context
        self._timeout = timeout
        self._uplink = uplink
        # Parents whose uplink upgrade failed, and until when dials there offer a
        # plain websocket.
        self._no_uplink: dict[str, float] = {}

    async def __call__(self, address: str) -> LinkTransport:
        """Dial ``address``: a websocket link, with its uplink when the parent takes it.

        Raises:
            TransportError: the dial failed (the core schedules a redial).
        """
        if not self._uplink or anyio.current_time() < self._no_uplink.get(address, 0.0):
            return await self._websocket(address)
        token = new_token()
        ws = await self._websocket(
            address, headers=[(UPLINK_HEADER, token)], subprotocols=[UPLINK_SUBPROTOCOL]
        )
        if ws.subprotocol != UPLINK_SUBPROTOCOL:
            return ws  # the parent declined: a plain websocket link
        try:
            return await UplinkClientLink.open(
                ws, uplink_url(address, token), ssl_context=self._ssl, timeout=self._timeout
            )
        except TransportError:
            # The redial goes without it; a later one tries again (the failure may
            # have been a hub restarting between our two connections).
            self._no_uplink[address] = anyio.current_time() + _UPLINK_RETRY
            await ws.aclose()
            raise
        except BaseException:
            await ws.aclose()
            raise

    async def _websocket(
        self,
        address: str,
        headers: list[tuple[str, str]] | None = None,
        subprotocols: list[str] | None = None,
    ) -> WebSocketLink:
        return await connect_websocket(
            address,
            headers=headers or (),
            subprotocols=subprotocols or (),
            ssl_context=self._ssl,
            timeout=self._timeout,
            max_message_bytes=MAX_LINK_MESSAGE,
        )


class _JoinAttempt:
    """One child's join attempt, from its websocket's 101 to joined or closed."""

    __slots__ = ("client", "link_id", "links", "settled")

    def __init__(self, links: ChildLinks, client: str) -> None:
        self.links = links
        self.client = client
        self.link_id: LinkId | None = None
        self.settled = False

    def opened(self, link_id: LinkId) -> None:
        """The driver gave the link its id: its events settle the attempt from now on."""
        self.link_id = link_id
        self.links._joining[link_id] = self

    def settle(self, *, joined: bool) -> None:
        if not self.settled:
            self.settled = True
            links = self.links
            links._joins.finished(self.client, joined=joined, now=links._clock.now())


class ChildLinks:
    """Children's links into a node (see the module docstring).

    Args:
        driver: the node's driver (serves each accepted link).
        clock: the node's clock.
        budget: how fast one address may retry after failed joins (defaults if None).
        on_join_failed: ``(client, reason)``, within the console budget.
        on_join_failures_summary: the failed joins of a window past those lines.
    """

    def __init__(
        self,
        driver: NodeDriver,
        clock: Clock,
        budget: JoinBudget | None = None,
        *,
        on_join_failed: Callable[[str, str], None] | None = None,
        on_join_failures_summary: Callable[[RefusalSummary], None] | None = None,
    ) -> None:
        self._driver = driver
        self._clock = clock
        self._joins = JoinGuard(budget if budget is not None else JoinBudget())
        self._uplinks = UplinkRegistry()
        self._on_join_failed = on_join_failed
        self._on_summary = on_join_failures_summary
        # Child links still in their handshake, and the attempt each one is.
        self._joining: dict[LinkId, _JoinAttempt] = {}
        self._summary_scheduled = False
        self._tg: TaskGroup | None = None

    def start(self, tg: TaskGroup) -> None:
        """Run the console's summary timer in ``tg`` (the node's task group)."""
        self._tg = tg

    def uplink_count(self) -> int:
        """Child links sending upward on their own uplink connection."""
        return len(self._uplinks)

    def upgrade(self, request: Request) -> Response:
        """Answer a child's websocket upgrade ``request``: a 101 carrying the link
        (with an uplink if offered), or a 429 while its address must wait after
        failed joins (``kbtransport.join_guard``)."""
        client = client_key(request.client[0] if request.client is not None else None)
        wait = self._joins.retry_after(client, self._clock.now())
        if wait > 0:
            seconds = self._throttled(client, wait)
            return error_response(
                429,
                f"Too many failed joins from your address; try again in {seconds} s",
                (("Retry-After", str(seconds)),),
            )
        return Response(status=101, body=self._accept(request, client))

    def uplink_accept(self, request: Request, token: str) -> Response:
        """Answer ``GET /_kblink/<token>`` (``Upgrade: kbucket-uplink``): from then on the
        connection carries that child's link bytes (``kbtransport.uplink``)."""
        upgrade = (request.header("upgrade") or "").strip().lower()
        if request.method != "GET" or upgrade != UPLINK_PROTOCOL:
            return error_response(400, f"Not an Upgrade to {UPLINK_PROTOCOL}")
        uplink = self._uplinks.take(token)
        if uplink is None:
            return error_response(404, "No websocket link waits for this uplink")
        return Response(status=101, body=RawUpgrade(protocol=UPLINK_PROTOCOL, handler=uplink.run))

    def settled(self, link_id: LinkId, *, joined: bool, reason: str) -> None:
        """The handshake on child link ``link_id`` ended (driver task)."""
        attempt = self._joining.pop(link_id, None)
        if attempt is not None:
            attempt.settle(joined=joined)
            if not joined:
                self._failed(attempt.client, reason)

    def _throttled(self, client: str, wait: float) -> int:
        """A join of ``client`` refused by the rate limit: its console line; returns
        the whole seconds to wait."""
        seconds = max(1, math.ceil(wait))
        self._failed(client, f"too many failed joins from this address (next try in {seconds} s)")
        return seconds

    def _accept(self, request: Request, client: str) -> WebSocketAccept:
        token = request.header(UPLINK_HEADER)
        offered = [p.strip() for p in (request.header("sec-websocket-protocol") or "").split(",")]
        registry = self._uplinks
        if token is None or UPLINK_SUBPROTOCOL not in offered or not registry.can_expect(token):

            async def plain(ws: WebSocketLink) -> None:
                async with self._attempt(client) as attempt:
                    if attempt is not None:
                        await self._driver.serve_link(ws, opened=attempt.opened)

            return WebSocketAccept(handler=plain, max_message_bytes=MAX_LINK_MESSAGE)

        async def handler(ws: WebSocketLink) -> None:
            # The token is registered only once the upgrade succeeded (the server runs
            # this right after its 101), so a failed upgrade leaves nothing behind. The
            # child's uplink request needs that 101 and a new connection first; were it
            # ever to arrive before this line, it would get a 404 and the child would
            # redial with a plain websocket.
            async with self._attempt(client) as attempt:
                if attempt is None:
                    return
                uplink = registry.expect(token)
                if uplink is None:
                    return  # taken meanwhile: the child's uplink gets a 404, it redials plain
                uplink.ws = ws
                try:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(uplink.watch)
                        await self._driver.serve_link(uplink, opened=attempt.opened)
                        tg.cancel_scope.cancel()
                finally:
                    registry.forget(uplink.token)
                    await uplink.aclose()

        return WebSocketAccept(
            handler=handler, subprotocol=UPLINK_SUBPROTOCOL, max_message_bytes=MAX_LINK_MESSAGE
        )

    @asynccontextmanager
    async def _attempt(self, client: str) -> AsyncIterator[_JoinAttempt | None]:
        """One join attempt of ``client`` on a websocket that just got its 101: None
        (close it at once) if attempts made in parallel already used the address's
        turn, else the attempt, settled when its link joins or closes."""
        wait = self._joins.begin(client, self._clock.now())
        if wait > 0:
            self._throttled(client, wait)
            yield None
            return
        attempt = _JoinAttempt(self, client)
        try:
            yield attempt
        finally:
            if attempt.link_id is None:  # never reached the core (the node stopped)
                attempt.settle(joined=False)

    def _failed(self, client: str, reason: str) -> None:
        """Tell the console about a refused join, within the console budget."""
        now = self._clock.now()
        self._print_summary(now)
        if self._joins.should_print(client, now):
            if self._on_join_failed is not None:
                self._on_join_failed(client, reason)
        elif not self._summary_scheduled and self._tg is not None:
            self._summary_scheduled = True
            self._tg.start_soon(self._summary_later)

    def _print_summary(self, now: float) -> None:
        summary = self._joins.take_summary(now)
        if summary is not None and self._on_summary is not None:
            self._on_summary(summary)

    async def _summary_later(self) -> None:
        """Print the console window's summary line when the window ends."""
        try:
            while (due := self._joins.summary_due()) is not None:
                await anyio.sleep(max(0.0, due - self._clock.now()))
                self._print_summary(self._clock.now())
        finally:
            self._summary_scheduled = False
