"""A child's link bytes sent upward on a raw upgraded connection instead of websocket frames.

Why: a websocket client must mask every frame it sends, and wsproto masks and parses in
pure Python, so child-to-parent bytes cost several CPU seconds per GiB on *both* ends
(docs/benchmarks.md, ceilings §5: ~190 MB/s at best). Proxied downloads flow exactly that way (share
to hub). So a child offers the ``kbucket.uplink`` websocket subprotocol with a fresh
random token (header ``X-Kbucket-Uplink``); a parent that supports it selects the
subprotocol, and the child then opens a second connection to the same origin,
``GET /_kblink/<token>`` with ``Connection: Upgrade`` and ``Upgrade: kbucket-uplink``.
The parent answers ``101 Switching Protocols`` and from then on that connection carries
*all* the child's link bytes, raw: the same kbproto frames a websocket message would
hold, with no HTTP or websocket framing around them. Parent-to-child bytes stay on the
websocket (servers do not mask).

Ordering is preserved because every child-to-parent byte takes the one upgraded
connection; the websocket carries nothing upward but its own control frames. The token
is 128 random bits, known only to the two ends (inside TLS for ``wss``/``https``), and
is valid for one pending link; the link's own kbproto handshake still authenticates
the child. A parent without uplink support ignores the offer, and the link stays a
plain websocket. Either connection ending ends the link.

Measured (256 MiB proxied through one hub, curl client, 2 cores): the share's CPU per
GiB fell from ~5.6 s (websocket, wsproto masking) to ~2.5 s, the hub's from ~5.5 s to
~3.5 s (``docs/benchmarks.md``). Children offer it by default.
"""

from __future__ import annotations

import contextlib
import re
import ssl

import anyio
import h11
from anyio.abc import ByteStream

from kbtransport._accel import set_read_size
from kbtransport.env import SystemIdSource
from kbtransport.errors import (
    READ_ERRORS,
    WRITE_ERRORS,
    ConnectError,
    ReadError,
    TransportError,
    WriteError,
    map_exceptions,
)
from kbtransport.net import Url, open_stream, parse_url
from kbtransport.websocket import WebSocketLink

__all__ = (
    "UPLINK_HEADER",
    "UPLINK_PREFIX",
    "UPLINK_PROTOCOL",
    "UPLINK_SUBPROTOCOL",
    "UplinkClientLink",
    "UplinkRegistry",
    "UplinkServerLink",
    "new_token",
    "uplink_url",
)

#: The websocket subprotocol a child offers (and a parent selects) for uplink mode.
UPLINK_SUBPROTOCOL = "kbucket.uplink"
#: The request header carrying the child's token on the websocket upgrade.
UPLINK_HEADER = "X-Kbucket-Uplink"
#: Path prefix of the upgrade request that opens the child's upward connection.
UPLINK_PREFIX = "/_kblink/"
#: The ``Upgrade`` token of that request.
UPLINK_PROTOCOL = "kbucket-uplink"
#: One read at the parent, and the socket read size under it (``kbtransport._accel``).
_READ_SIZE = 1024 * 1024
#: How long a parent waits for the upward connection of a link upgraded with a token.
_ATTACH_TIMEOUT = 10.0
#: Pending tokens a parent remembers at most (a peer cannot grow the table unbounded).
MAX_PENDING = 4096

_TOKEN_RE = re.compile(r"[0-9a-f]{32}")


def new_token() -> str:
    """128 random bits as 32 hex digits."""
    return SystemIdSource().nonce(16).hex()


def uplink_url(parent_url: str, token: str) -> str:
    """The upgrade URL for ``token`` at the parent (``ws(s)`` becomes ``http(s)``)."""
    url = parent_url
    if url.startswith("ws://"):
        url = "http://" + url[5:]
    elif url.startswith("wss://"):
        url = "https://" + url[6:]
    parsed = parse_url(url)
    host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
    scheme = "https" if parsed.secure else "http"
    return f"{scheme}://{host}:{parsed.port}{UPLINK_PREFIX}{token}"


async def _upgrade(stream: ByteStream, url: Url) -> None:
    """Ask for ``Upgrade: kbucket-uplink`` on ``stream`` and read the parent's 101."""
    conn = h11.Connection(h11.CLIENT)
    request = h11.Request(
        method="GET",
        target=url.target,
        headers=[
            ("Host", url.host_header),
            ("User-Agent", "kbucket"),
            ("Connection", "Upgrade"),
            ("Upgrade", UPLINK_PROTOCOL),
        ],
    )
    with map_exceptions(WRITE_ERRORS):
        await stream.send((conn.send(request) or b"") + (conn.send(h11.EndOfMessage()) or b""))
    while True:
        with map_exceptions(READ_ERRORS):
            event = conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    conn.receive_data(await stream.receive())
                except anyio.EndOfStream:
                    conn.receive_data(b"")
                continue
        if isinstance(event, h11.InformationalResponse):
            if event.status_code == 101:
                return
            continue
        if isinstance(event, h11.Response):
            raise ConnectError(f"the parent refused the uplink (HTTP {event.status_code})")
        raise ConnectError("the parent closed the uplink connection during its upgrade")


class UplinkClientLink:
    """The child's side: receive on the websocket, send raw on the upgraded connection."""

    def __init__(self, ws: WebSocketLink, stream: ByteStream) -> None:
        self._ws = ws
        self._stream = stream
        self._closed = False

    @classmethod
    async def open(
        cls,
        ws: WebSocketLink,
        upgrade_url: str,
        *,
        ssl_context: ssl.SSLContext | None,
        timeout: float,
    ) -> UplinkClientLink:
        """Open the upward connection (``uplink_url``) and upgrade it.

        Raises:
            ConnectError, TransportTimeout, ReadError, WriteError, PeerProtocolError:
                the connection or its upgrade failed.
        """
        url = parse_url(upgrade_url)
        stream = await open_stream(url, timeout=timeout, ssl_context=ssl_context)
        try:
            with map_exceptions(READ_ERRORS), anyio.fail_after(timeout):
                await _upgrade(stream, url)
        except BaseException:
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await stream.aclose()
            raise
        return cls(ws, stream)

    async def send(self, data: bytes) -> None:
        """Send ``data`` upward, as is (kbproto frames carry their own framing)."""
        if self._closed:
            raise WriteError("uplink closed")
        with map_exceptions(WRITE_ERRORS):
            await self._stream.send(data)

    async def receive(self) -> bytes:
        """The next message from the parent (on the websocket)."""
        return await self._ws.receive()

    async def aclose(self) -> None:
        """Close both connections (idempotent)."""
        if not self._closed:
            self._closed = True
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await self._stream.aclose()
        await self._ws.aclose()


class UplinkServerLink:
    """The parent's side: send on the websocket, receive on the upgraded connection.

    ``receive`` also ends when the websocket closes (its reader runs in ``watch``).
    """

    def __init__(self, token: str) -> None:
        self.token = token
        self.ws: WebSocketLink | None = None
        self.claimed = False
        self._stream: ByteStream | None = None
        self._early = b""
        self._attached = anyio.Event()
        self._ended = anyio.Event()

    async def send(self, data: bytes) -> None:
        """Send ``data`` to the child over the websocket."""
        assert self.ws is not None
        await self.ws.send(data)

    async def receive(self) -> bytes:
        """The next bytes the child sent upward.

        Raises:
            ReadError: the upward connection ended, the websocket closed, or the
                upward connection never came.
        """
        if not self._attached.is_set():
            try:
                with anyio.fail_after(_ATTACH_TIMEOUT):
                    await self._attached.wait()
            except TimeoutError as exc:
                raise ReadError("the child's uplink connection never came") from exc
        if self._ended.is_set() or self._stream is None:
            raise ReadError("uplink closed")
        if self._early:
            data, self._early = self._early, b""
            return data
        with map_exceptions(READ_ERRORS):
            return await self._stream.receive(_READ_SIZE)

    async def run(self, stream: ByteStream, early: bytes) -> None:
        """Serve the upgraded connection (``RawUpgrade`` handler) until the link ends.

        ``early``: bytes the child sent right after its request head.
        """
        if self._ended.is_set():
            return
        self._stream = stream
        self._early = early
        set_read_size(stream, _READ_SIZE)
        self._attached.set()
        await self._ended.wait()

    async def watch(self) -> None:
        """Read the websocket (its control frames; nothing else is expected) until it
        closes, then end the link."""
        assert self.ws is not None
        with contextlib.suppress(TransportError):
            while True:
                # Upward bytes belong on the upgraded connection; a child sending
                # messages here breaks ordering, so they are dropped.
                await self.ws.receive()
        self._end()

    def _end(self) -> None:
        self._ended.set()
        self._attached.set()

    async def aclose(self) -> None:
        """End the link: the upgraded connection closes and the websocket too."""
        self._end()
        if self.ws is not None:
            await self.ws.aclose()


class UplinkRegistry:
    """Tokens of upgraded links waiting for (or attached to) their upward connection."""

    def __init__(self) -> None:
        self._links: dict[str, UplinkServerLink] = {}

    def __len__(self) -> int:
        return len(self._links)

    def can_expect(self, token: str) -> bool:
        """True if ``token`` is well formed, free, and there is room for one more."""
        return (
            _TOKEN_RE.fullmatch(token) is not None
            and token not in self._links
            and len(self._links) < MAX_PENDING
        )

    def expect(self, token: str) -> UplinkServerLink | None:
        """Register ``token`` (once its websocket is up); None if ``can_expect`` fails.

        The caller must ``forget`` it when that websocket's link ends.
        """
        if not self.can_expect(token):
            return None
        link = UplinkServerLink(token)
        self._links[token] = link
        return link

    def take(self, token: str) -> UplinkServerLink | None:
        """Claim the link waiting for the upward connection of ``token`` (once only)."""
        link = self._links.get(token)
        if link is None or link.claimed:
            return None
        link.claimed = True
        return link

    def forget(self, token: str) -> None:
        """Drop ``token`` (its link ended)."""
        self._links.pop(token, None)
