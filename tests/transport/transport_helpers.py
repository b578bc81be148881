"""Helpers shared by the transport tests: servers in memory and on 127.0.0.1."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from anyio.abc import ByteStream

from kbtransport.http import App
from kbtransport.http_server import ServerConfig, serve_http_connection
from kbtransport.listener import BoundAddress, ListenConfig, serve_http
from kbtransport.testing import memory_stream_pair


@asynccontextmanager
async def memory_server(app: App, config: ServerConfig | None = None) -> AsyncIterator[ByteStream]:
    """Run ``serve_http_connection`` on one end of an in-memory pair; yield the other."""
    client, server = memory_stream_pair()
    async with anyio.create_task_group() as tg:
        tg.start_soon(serve_http_connection, server, app, config)
        try:
            yield client
        finally:
            tg.cancel_scope.cancel()


@asynccontextmanager
async def loopback_server(
    app: App,
    config: ServerConfig | None = None,
    ssl_context: ssl.SSLContext | None = None,
    max_connections: int = 64,
    max_connections_per_client: int = 256,
) -> AsyncIterator[BoundAddress]:
    """Serve ``app`` on 127.0.0.1 at a free port until the block ends."""
    listen = ListenConfig(
        host="127.0.0.1",
        port=0,
        ssl_context=ssl_context,
        max_connections=max_connections,
        max_connections_per_client=max_connections_per_client,
    )
    async with anyio.create_task_group() as tg:
        bound: BoundAddress = await tg.start(serve_http, app, listen, config)
        try:
            yield bound
        finally:
            tg.cancel_scope.cancel()
