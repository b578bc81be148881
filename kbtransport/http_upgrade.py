"""Leaving HTTP on a server connection: websocket upgrades and raw ``Upgrade``s.

An app answers an upgrade request with a ``WebSocketAccept`` or a ``RawUpgrade``
(``kbtransport.http``); the server connection then checks the request, sends ``101
Switching Protocols`` and hands the byte stream, with the bytes the client sent after
its request head, to the app's handler: as a post-handshake wsproto connection
(``WebSocketLink``; wsproto ``advanced-usage.rst``, "Post handshake connection", STYLE
rule 10) or as it is.
"""

from __future__ import annotations

from typing import Protocol

from anyio.abc import ByteStream
from wsproto import ConnectionType
from wsproto.connection import Connection as WsConnection
from wsproto.utilities import generate_accept_token

from kbtransport.http import RawUpgrade, Request, WebSocketAccept
from kbtransport.websocket import WebSocketLink

__all__ = ("UpgradeChannel", "serve_raw_upgrade", "serve_websocket")


class UpgradeChannel(Protocol):
    """What an upgrade needs of the server connection it happens on."""

    @property
    def stream(self) -> ByteStream:
        """The connection's byte stream."""
        ...

    @property
    def base_headers(self) -> list[tuple[bytes, bytes]]:
        """The headers every response of the server carries (``Server``, CORS)."""
        ...

    @property
    def might_switch(self) -> bool:
        """True if the request asked to switch protocols (h11's view)."""
        ...

    async def send_error(self, status: int, message: str) -> None:
        """Answer with a JSON error and close."""
        ...

    async def switch(self, headers: list[tuple[bytes, bytes]]) -> bytes | None:
        """Send the 101 with ``headers``; the bytes after the request head, or None if
        the 101 could not be written."""
        ...


async def serve_websocket(
    channel: UpgradeChannel, request: Request, accept: WebSocketAccept
) -> None:
    """Complete a websocket handshake (RFC 6455 §4.2.2) and run ``accept.handler``;
    a request that is not a valid upgrade gets a 400."""
    key = request.header("sec-websocket-key")
    version = request.header("sec-websocket-version")
    if not request.wants_websocket or key is None or version != "13":
        await channel.send_error(400, "Not a valid websocket upgrade request")
        return
    headers = [
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-accept", generate_accept_token(key.encode("latin-1"))),
        *channel.base_headers,
    ]
    if accept.subprotocol is not None:
        headers.append((b"sec-websocket-protocol", accept.subprotocol.encode("latin-1")))
    trailing = await channel.switch(headers)
    if trailing is None:
        return
    link = WebSocketLink(
        channel.stream,
        WsConnection(ConnectionType.SERVER, trailing_data=trailing),
        max_message_bytes=accept.max_message_bytes,
        subprotocol=accept.subprotocol,
    )
    try:
        await accept.handler(link)
    finally:
        await link.aclose()


async def serve_raw_upgrade(channel: UpgradeChannel, request: Request, accept: RawUpgrade) -> None:
    """Switch to ``accept.protocol`` and run ``accept.handler`` on the bare stream; a
    request that did not ask for that protocol gets a 400."""
    asked = (request.header("upgrade") or "").strip().lower()
    if asked != accept.protocol.lower() or not channel.might_switch:
        await channel.send_error(400, f"Not an Upgrade to {accept.protocol}")
        return
    headers = [
        (b"upgrade", accept.protocol.encode("latin-1")),
        (b"connection", b"Upgrade"),
        *channel.base_headers,
    ]
    trailing = await channel.switch(headers)
    if trailing is not None:
        await accept.handler(channel.stream, trailing)
