"""Accepting connections: a TCP listener (optionally TLS) running one task per connection.

``serve_tcp`` reports the address it actually bound through ``task_status`` (so
``--port 0`` works: ``port = (await tg.start(serve_tcp, ...)).port``), then accepts until
cancelled. At most ``max_connections`` connections are served at once: the accept loop
waits for a free slot before accepting more, so the kernel's backlog (not our memory)
holds the surplus. TLS handshakes run in the connection's task, under a deadline, so a
client that never finishes one costs one slot for ``tls_handshake_timeout`` seconds.
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

from kbtransport.errors import CONNECT_ERRORS, ConnectError, map_exceptions
from kbtransport.http import App
from kbtransport.http_server import ServerConfig, serve_http_connection

__all__ = ("BoundAddress", "ListenConfig", "serve_http", "serve_tcp")

_log = logging.getLogger("kbtransport.listener")

Handler = Callable[[ByteStream], Awaitable[None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenConfig:
    """Where and how to listen.

    Attributes:
        host: bind address (SPEC §3.1 default ``0.0.0.0``; tests use ``127.0.0.1``).
        port: TCP port; 0 picks a free one (reported through ``task_status``).
        ssl_context: a server-side context to serve TLS (HTTPS/WSS), or None.
        max_connections: connections served at once; 1024 stays under the usual
            1024-descriptor soft limit together with files being served.
        tls_handshake_timeout: seconds a client gets to finish the TLS handshake.
        backlog: the listen backlog.
    """

    host: str = "0.0.0.0"
    port: int = 0
    ssl_context: ssl.SSLContext | None = None
    max_connections: int = 1024
    tls_handshake_timeout: float = 10.0
    backlog: int = 128

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be within 0-65535, not {self.port}")
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")


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
    Runs until cancelled.

    Raises:
        ConnectError: the address cannot be bound (in use, not local, no permission).
    """
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
    limiter = anyio.Semaphore(config.max_connections)
    async with multi, anyio.create_task_group() as tg:
        for listener in listeners:
            tg.start_soon(_accept_loop, listener, handler, config, limiter, tg)
        task_status.started(bound)


async def _accept_loop(
    listener: SocketListener,
    handler: Handler,
    config: ListenConfig,
    limiter: anyio.Semaphore,
    tg: anyio.abc.TaskGroup,
) -> None:
    while True:
        await limiter.acquire()
        try:
            stream = await listener.accept()
        except OSError as exc:
            # EMFILE and friends: back off briefly instead of spinning.
            limiter.release()
            _log.warning("accept failed: %s", exc)
            await anyio.sleep(0.1)
            continue
        except BaseException:
            limiter.release()
            raise
        tg.start_soon(_run_connection, stream, handler, config, limiter)


async def _run_connection(
    stream: SocketStream, handler: Handler, config: ListenConfig, limiter: anyio.Semaphore
) -> None:
    conn: ByteStream = stream
    try:
        if config.ssl_context is not None:
            try:
                with anyio.fail_after(config.tls_handshake_timeout):
                    conn = await TLSStream.wrap(
                        stream,
                        server_side=True,
                        ssl_context=config.ssl_context,
                        standard_compatible=False,
                    )
            except (TimeoutError, OSError, anyio.BrokenResourceError, anyio.EndOfStream) as exc:
                _log.debug("TLS handshake failed: %r", exc)
                return
        try:
            await handler(conn)
        except Exception:
            _log.exception("connection handler failed")
    finally:
        limiter.release()
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            await conn.aclose()


async def serve_http(
    app: App,
    listen: ListenConfig,
    server: ServerConfig | None = None,
    *,
    task_status: TaskStatus[BoundAddress] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` over HTTP/1.1 (HTTPS when ``listen.ssl_context`` is set) until cancelled.

    Use ``bound = await task_group.start(serve_http, app, listen)`` to learn the port.

    Raises:
        ConnectError: the address cannot be bound.
    """

    async def handle(stream: ByteStream) -> None:
        await serve_http_connection(stream, app, server)

    await serve_tcp(handle, listen, task_status=task_status)
