"""Accepting connections: a TCP listener (optionally TLS) running one task per connection.

``serve_tcp`` reports the address it actually bound through ``task_status`` (so
``--port 0`` works: ``port = (await tg.start(serve_tcp, ...)).port``), then accepts until
cancelled. Every connection takes a slot of a ``kbtransport.slots.ConnectionSlots``
table: at most ``max_connections`` in all and ``max_connections_per_client`` for one
client (one address; an IPv6 /64). A connection that waits on its client (nothing
sent yet, an idle keep-alive connection, a request head still arriving) yields its slot
to a new connection when a budget is reached. A client at its cap with none of its
connections waiting is refused (HTTP: a one-line 429 answer, then close; TLS and
plain TCP: close). While every slot is busy and none waits, the accept loop waits for
one, so the kernel's backlog (not our memory) holds the surplus. TLS handshakes run
in the connection's task, under a deadline, so a client that never finishes one costs
one slot for at most ``tls_handshake_timeout`` seconds, and yields it sooner when slots
run out.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
from anyio.abc import ByteStream, SocketAttribute, SocketListener, SocketStream, TaskStatus
from anyio.streams.tls import TLSStream

from kbtransport.clients import client_key
from kbtransport.errors import CONNECT_ERRORS, ConnectError, map_exceptions
from kbtransport.http import App
from kbtransport.http_refusal import refuse_http_connection
from kbtransport.http_server import ServerConfig, response_heads, serve_http_connection
from kbtransport.slots import ConnectionSlot, ConnectionSlots

__all__ = ("BoundAddress", "ListenConfig", "serve_http", "serve_tcp")

_log = logging.getLogger("kbtransport.listener")

Handler = Callable[[ByteStream], Awaitable[None]]
#: A handler that is told its connection's slot (the HTTP server keeps ``since``).
_SlotHandler = Callable[[ByteStream, ConnectionSlot], Awaitable[None]]
#: Answers a connection refused by the per-client cap before it is closed (HTTP: 429).
_Refuser = Callable[[ByteStream], Awaitable[None]]

#: Refused connections being answered at once; past it they are closed unanswered
#: (a flood of connections must not turn into a flood of tasks).
_MAX_REFUSING = 64
#: How long answering one refused connection may take.
_REFUSE_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenConfig:
    """Where and how to listen.

    Attributes:
        host: bind address (docs/commands.md default ``0.0.0.0``; tests use ``127.0.0.1``).
        port: TCP port; 0 picks a free one (reported through ``task_status``).
        ssl_context: a server-side context to serve TLS (HTTPS/WSS), or None.
        max_connections: connections served at once; 1024 stays under the usual
            1024-descriptor soft limit together with files being served.
        max_connections_per_client: connections served at once for one client (an
            address; an IPv6 /64). Many people behind one NAT are one client: a
            browser opens up to 6 connections to a host and ``kb-prv-download`` about
            5, so 256 serves some 40 busy users of one lab at once, while one
            address can take at most a quarter of a share's default 1,024 slots.
        tls_handshake_timeout: seconds a client gets to finish the TLS handshake.
        backlog: the listen backlog.
    """

    host: str = "0.0.0.0"
    port: int = 0
    ssl_context: ssl.SSLContext | None = None
    max_connections: int = 1024
    max_connections_per_client: int = 256
    tls_handshake_timeout: float = 10.0
    backlog: int = 128

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be within 0-65535, not {self.port}")
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if self.max_connections_per_client < 1:
            raise ValueError("max_connections_per_client must be at least 1")


@dataclass(frozen=True, slots=True)
class BoundAddress:
    """The address a listener is bound to.

    Attributes:
        host: the bound address.
        port: the bound port (the real one when 0 was asked for).
        secure: True when serving TLS.
    """

    host: str
    port: int
    secure: bool


async def serve_tcp(
    handler: Handler,
    config: ListenConfig,
    *,
    task_status: TaskStatus[BoundAddress] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``config.host:config.port`` and run ``handler(stream)`` per connection.

    The handler owns the stream and should close it; it is closed here afterwards in
    any case. Exceptions from a handler are logged and cost only that connection.
    The handler's connection counts as busy from its start (it is never evicted); a
    connection refused by the budgets is closed. Runs until cancelled.

    Raises:
        ConnectError: the address cannot be bound (in use, not local, no permission).
    """

    async def busy(stream: ByteStream, slot: ConnectionSlot) -> None:
        slot.since = None  # we cannot tell when a plain handler waits on its client
        await handler(stream)

    await _serve(busy, config, None, task_status)


async def _serve(
    handler: _SlotHandler,
    config: ListenConfig,
    refuser: _Refuser | None,
    task_status: TaskStatus[BoundAddress],
) -> None:
    with map_exceptions(CONNECT_ERRORS):
        try:
            multi = await anyio.create_tcp_listener(
                local_host=config.host, local_port=config.port, backlog=config.backlog
            )
        except OSError as exc:
            raise ConnectError(f"cannot listen on {config.host}:{config.port}: {exc}") from exc
    listeners = [lst for lst in multi.listeners if isinstance(lst, SocketListener)]
    address = listeners[0].extra(SocketAttribute.local_address)
    assert isinstance(address, tuple)
    bound = BoundAddress(str(address[0]), int(address[1]), config.ssl_context is not None)
    slots = ConnectionSlots(config.max_connections, config.max_connections_per_client)
    refusals = _Refusals(refuser if config.ssl_context is None else None)
    async with multi, anyio.create_task_group() as tg:
        for listener in listeners:
            tg.start_soon(_accept_loop, listener, handler, config, slots, refusals, tg)
        task_status.started(bound)


class _Refusals:
    """Answers refused connections in tasks of their own, at most ``_MAX_REFUSING`` at
    once, each for at most ``_REFUSE_TIMEOUT`` seconds; the rest are just closed."""

    def __init__(self, refuser: _Refuser | None) -> None:
        self._refuser = refuser
        self._active = 0

    async def refuse(self, stream: SocketStream, tg: anyio.abc.TaskGroup) -> None:
        if self._refuser is None or self._active >= _MAX_REFUSING:
            await _close(stream)
            return
        self._active += 1
        tg.start_soon(self._answer, stream, self._refuser)

    async def _answer(self, stream: SocketStream, refuser: _Refuser) -> None:
        try:
            with anyio.move_on_after(_REFUSE_TIMEOUT):
                await refuser(stream)
        except Exception as exc:  # the client went away first: nothing to tell it
            _log.debug("refusing a connection failed: %r", exc)
        finally:
            self._active -= 1
            await _close(stream)


async def _accept_loop(
    listener: SocketListener,
    handler: _SlotHandler,
    config: ListenConfig,
    slots: ConnectionSlots,
    refusals: _Refusals,
    tg: anyio.abc.TaskGroup,
) -> None:
    while True:
        try:
            stream = await listener.accept()
        except OSError as exc:
            # EMFILE and friends: back off briefly instead of spinning.
            _log.warning("accept failed: %s", exc)
            await anyio.sleep(0.1)
            continue
        peer = stream.extra(SocketAttribute.remote_address, None)
        client = client_key(str(peer[0]) if isinstance(peer, tuple) and peer else None)
        slot = slots.admit(client, anyio.current_time())
        while slot == 503:
            # Every slot busy, none waiting that could yield: this connection waits
            # for one, and the kernel's backlog holds the ones after it.
            await slots.wait_for_room()
            slot = slots.admit(client, anyio.current_time())
        if isinstance(slot, ConnectionSlot):
            tg.start_soon(_run_connection, stream, handler, config, slots, slot)
        else:
            _log.debug("refused a connection from %s: at its connection cap", client)
            await refusals.refuse(stream, tg)


async def _run_connection(
    stream: SocketStream,
    handler: _SlotHandler,
    config: ListenConfig,
    slots: ConnectionSlots,
    slot: ConnectionSlot,
) -> None:
    conn: ByteStream = stream
    try:
        # Cancelled when the slot is evicted (or by the HTTP server's idle timer).
        with slot.scope:
            if config.ssl_context is not None:
                try:
                    with anyio.fail_after(config.tls_handshake_timeout):
                        conn = await TLSStream.wrap(
                            stream,
                            server_side=True,
                            ssl_context=config.ssl_context,
                            standard_compatible=False,
                        )
                except (
                    TimeoutError,
                    OSError,
                    anyio.BrokenResourceError,
                    anyio.EndOfStream,
                ) as exc:
                    _log.debug("TLS handshake failed: %r", exc)
                    return
            try:
                await handler(conn, slot)
            except Exception:
                _log.exception("connection handler failed")
    finally:
        slots.release(slot)
        await _close(conn)


async def _close(stream: ByteStream) -> None:
    with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
        await stream.aclose()


async def serve_http(
    app: App,
    listen: ListenConfig,
    server: ServerConfig | None = None,
    *,
    task_status: TaskStatus[BoundAddress] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` over HTTP/1.1 (HTTPS when ``listen.ssl_context`` is set) until cancelled.

    Use ``bound = await task_group.start(serve_http, app, listen)`` to learn the port.
    Connections refused by the per-client connection cap get a one-line JSON 429
    (plain HTTP; over TLS they are closed).

    Raises:
        ConnectError: the address cannot be bound.
    """

    config = server if server is not None else ServerConfig()
    heads = response_heads(config)  # one per listener: its connections share the heads

    async def handle(stream: ByteStream, slot: ConnectionSlot) -> None:
        await serve_http_connection(stream, app, config, slot=slot, heads=heads)

    await _serve(handle, listen, refuse_http_connection, task_status)
