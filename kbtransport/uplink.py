"""A child's link bytes sent upward in a streamed HTTP POST instead of websocket frames.

Why: a websocket client must mask every frame it sends, and wsproto masks in pure
Python, so child-to-parent bytes cost about 4 ms of CPU per MiB on *both* ends
(perf-baselines §5: ~190 MB/s at best). Proxied downloads flow exactly that way (share
to hub). So a child that can offers the ``kbucket.uplink`` websocket subprotocol with
a fresh random token (header ``X-Kbucket-Uplink``); a parent that supports it selects
the subprotocol, and the child then opens ``POST /_kblink/<token>`` to the same origin
and writes *all* its link bytes there, as one chunked request body that lasts as long
as the link. Parent-to-child bytes stay on the websocket (servers do not mask).

Ordering is preserved because every child-to-parent byte takes the one POST stream;
the websocket carries nothing upward but its own control frames. The token is 128
random bits, known only to the two ends (inside TLS for ``wss``), and is valid for one
pending link; the link's own kbproto handshake still authenticates the child. A parent
without uplink support ignores the offer, and the link stays a plain websocket.

Measured (256 MiB through one hub, separate processes, curl client, busy 2-core box):
the hub spent about 1.4x the CPU of a plain websocket link (the server reads a POST
body 64 KiB at a time, each read a trip through h11 and the driver inbox) while the
share saved only ~10%, so children do not offer it by default (``serve_node(...,
uplink=True)`` turns it on). Every parent accepts it.
"""

from __future__ import annotations

import contextlib
import re
import ssl
from collections.abc import AsyncIterator

import anyio
import h11
from anyio.abc import ByteStream

from kbtransport.env import SystemIdSource
from kbtransport.errors import (
    WRITE_ERRORS,
    ReadError,
    TransportError,
    WriteError,
    map_exceptions,
)
from kbtransport.net import open_stream, parse_url
from kbtransport.websocket import WebSocketLink

__all__ = (
    "UPLINK_HEADER",
    "UPLINK_PREFIX",
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
#: Path prefix of the POST carrying the child's bytes (streamed by the server).
UPLINK_PREFIX = "/_kblink/"
#: Chunks of the POST body queued at the parent before its reader waits: a few
#: 64 KiB server reads, so back-pressure reaches the child's TCP connection quickly.
_QUEUE = 8
#: Most bytes joined into one ``receive`` from chunks already queued.
_JOIN_LIMIT = 1024 * 1024
#: How long a parent waits for the POST of a link that was upgraded with a token.
_ATTACH_TIMEOUT = 10.0
#: Pending tokens a parent remembers at most (a peer cannot grow the table unbounded).
MAX_PENDING = 4096

_TOKEN_RE = re.compile(r"[0-9a-f]{32}")


def new_token() -> str:
    """128 random bits as 32 hex digits."""
    return SystemIdSource().nonce(16).hex()


def uplink_url(parent_url: str, token: str) -> str:
    """The POST URL for ``token`` at the parent (``ws(s)`` becomes ``http(s)``)."""
    url = parent_url
    if url.startswith("ws://"):
        url = "http://" + url[5:]
    elif url.startswith("wss://"):
        url = "https://" + url[6:]
    parsed = parse_url(url)
    host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
    scheme = "https" if parsed.secure else "http"
    return f"{scheme}://{host}:{parsed.port}{UPLINK_PREFIX}{token}"


class UplinkClientLink:
    """The child's side: receive on the websocket, send as chunks of one POST body."""

    def __init__(self, ws: WebSocketLink, stream: ByteStream) -> None:
        self._ws = ws
        self._stream = stream
        self._lock = anyio.Lock()
        self._closed = False

    @classmethod
    async def open(
        cls,
        ws: WebSocketLink,
        post_url: str,
        *,
        ssl_context: ssl.SSLContext | None,
        timeout: float,
    ) -> UplinkClientLink:
        """Open the POST (head only; the body follows as the link sends).

        Raises:
            ConnectError, TransportTimeout: the POST connection failed.
        """
        url = parse_url(post_url)
        stream = await open_stream(url, timeout=timeout, ssl_context=ssl_context)
        conn = h11.Connection(h11.CLIENT)
        head = conn.send(
            h11.Request(
                method="POST",
                target=url.target,
                headers=[
                    ("Host", url.host_header),
                    ("User-Agent", "kbucket"),
                    ("Content-Type", "application/octet-stream"),
                    ("Transfer-Encoding", "chunked"),
                ],
            )
        )
        try:
            with map_exceptions(WRITE_ERRORS), anyio.fail_after(timeout):
                await stream.send(head or b"")
        except BaseException:
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await stream.aclose()
            raise
        return cls(ws, stream)

    async def send(self, data: bytes) -> None:
        """Send ``data`` as one chunk of the POST body (chunked framing by hand)."""
        if self._closed:
            raise WriteError("uplink closed")
        async with self._lock:
            with map_exceptions(WRITE_ERRORS):
                await self._stream.send(b"%x\r\n" % len(data) + data + b"\r\n")

    async def receive(self) -> bytes:
        """The next message from the parent (on the websocket)."""
        return await self._ws.receive()

    async def aclose(self) -> None:
        """End the POST body (best effort) and close both connections."""
        if not self._closed:
            self._closed = True
            with anyio.move_on_after(2, shield=True), contextlib.suppress(Exception):
                async with self._lock:
                    await self._stream.send(b"0\r\n\r\n")
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await self._stream.aclose()
        await self._ws.aclose()


class UplinkServerLink:
    """The parent's side: send on the websocket, receive the POST body's chunks.

    ``receive`` also ends when the websocket closes (its reader runs in ``watch``).
    """

    def __init__(self, token: str) -> None:
        self.token = token
        self.ws: WebSocketLink | None = None
        send, receive = anyio.create_memory_object_stream[bytes](_QUEUE)
        self._send = send
        self._receive = receive
        self.attached = anyio.Event()
        self._post_scope = anyio.CancelScope()
        self._ended = False

    async def send(self, data: bytes) -> None:
        """Send ``data`` to the child over the websocket."""
        assert self.ws is not None
        await self.ws.send(data)

    async def receive(self) -> bytes:
        """The next chunk the child sent in its POST.

        Raises:
            ReadError: the POST ended, the websocket closed, or no POST came in time.
        """
        try:
            with anyio.fail_after(_ATTACH_TIMEOUT):
                await self.attached.wait()
            data = await self._receive.receive()
        except TimeoutError as exc:
            raise ReadError("the child's uplink POST never came") from exc
        except (anyio.EndOfStream, anyio.ClosedResourceError) as exc:
            raise ReadError("uplink closed") from exc
        if not data:
            raise ReadError("uplink closed")
        # Join what is already queued: one driver step for several server reads.
        parts = [data]
        size = len(data)
        while size < _JOIN_LIMIT:
            try:
                more = self._receive.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
            if not more:
                self._end()
                break
            parts.append(more)
            size += len(more)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def feed(self, body: AsyncIterator[bytes]) -> None:
        """Run the POST: move its body chunks into the link until either ends."""
        self.attached.set()
        with self._post_scope:
            try:
                async for chunk in body:
                    if chunk:
                        await self._send.send(chunk)
            except TransportError:
                pass
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass
        self._end()

    async def watch(self) -> None:
        """Read the websocket (its control frames; nothing else is expected) until it
        closes, then end the link."""
        assert self.ws is not None
        try:
            while True:
                data = await self.ws.receive()
                if data:  # a child mixing channels loses ordering: its own problem
                    await self._send.send(data)
        except (TransportError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        self._end()

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            with contextlib.suppress(anyio.WouldBlock, anyio.BrokenResourceError):
                self._send.send_nowait(b"")
            self._send.close()
        self._post_scope.cancel()

    async def aclose(self) -> None:
        """Close the websocket and stop reading the POST."""
        self._end()
        self._receive.close()
        if self.ws is not None:
            await self.ws.aclose()


class UplinkRegistry:
    """Tokens of upgraded links waiting for (or attached to) their POST."""

    def __init__(self) -> None:
        self._links: dict[str, UplinkServerLink] = {}

    def __len__(self) -> int:
        return len(self._links)

    def expect(self, token: str) -> UplinkServerLink | None:
        """Register ``token`` (at the upgrade); None if malformed, taken or too many."""
        if not _TOKEN_RE.fullmatch(token) or token in self._links:
            return None
        if len(self._links) >= MAX_PENDING:
            return None
        link = UplinkServerLink(token)
        self._links[token] = link
        return link

    def take(self, token: str) -> UplinkServerLink | None:
        """The link waiting for the POST of ``token`` (once only)."""
        link = self._links.get(token)
        if link is None or link.attached.is_set():
            return None
        return link

    def forget(self, token: str) -> None:
        """Drop ``token`` (its link ended)."""
        self._links.pop(token, None)
