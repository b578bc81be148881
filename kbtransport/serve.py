"""Putting a node on the network: ``serve_node`` and the ``NodeHandle`` it yields.

``serve_node`` wires the parts: an HTTP listener (``kbtransport.listener``) whose app is
the node's routes (``kbtransport.httpapi.build_node_app``; websocket upgrades become
child links), the ``Node`` with its driver and the dialer for the parent (``http`` ->
``ws``, ``https`` -> ``wss``). It is the one module that knows both the node and its
HTTP routes, so neither imports the other. Example (what ``kbucket-host`` does, in
short)::

    def make_core(bound: BoundAddress) -> ShareCore:
        # The listen URL depends on the port actually bound (``--port 0``).
        return ShareCore(setup.core_config(bound.port), signer=signer,
                         ids=SystemIdSource())

    hooks = NodeHooks(
        on_listening=lambda b: print(f"kbucket-share is running http on port {b.port}"),
        on_dial=lambda url: print(f"Connecting to parent hub: {url}"),
        on_parent_connected=lambda info: print(f"Connected to parent hub: {info.name}"),
        on_join_refused=lambda reason: print(f"Parent hub refused to register: {reason}"),
    )
    async with serve_node(make_core, share_router, ListenConfig(port=0),
                          hooks=hooks) as handle:
        print(handle.port, handle.node.node_id)
        await handle.set_files([(sha1, "data/a.dat", 1234)])   # a core with its own copy
        await handle.put_file(sha1b, "data/b.dat", 99)
        # (a core reading a store, ShareCore(files=...), hears content_changed instead)
        await handle.wait()        # until handle.stop() or cancellation (Ctrl+C)
"""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager

import anyio

from kbproto.hub import HubCore
from kbproto.share import ShareCore
from kbtransport.driver import LinkTransport
from kbtransport.env import Clock
from kbtransport.http import App, Request, Response, error_response
from kbtransport.http_server import ServerConfig
from kbtransport.httpapi import (
    NodeAppConfig,
    build_node_app,
    own_node_app,
    served_request_app,
)
from kbtransport.join_guard import JoinBudget
from kbtransport.listener import BoundAddress, ListenConfig, serve_http
from kbtransport.metrics import ServerCounters
from kbtransport.node import Node, NodeCoreType, NodeHooks
from kbtransport.routing import Router
from kbtransport.stream_budget import StreamBudget

__all__ = ("CoreFactory", "NodeHandle", "serve_node")

#: Builds the core once the listener is bound (its listen URL needs the real port).
CoreFactory = Callable[[BoundAddress], NodeCoreType]
#: How long a request that arrives between the bind and the core's start waits for it.
_START_WAIT = 10.0


class NodeHandle:
    """A node serving on the network (from ``serve_node``).

    Attributes:
        node: the ``Node`` (finds, requests, snapshots).
        address: where the listener is bound (``port`` is the real one).
    """

    def __init__(self, node: Node, address: BoundAddress, scope: anyio.CancelScope) -> None:
        self.node = node
        self.address = address
        self._scope = scope
        self._stopped = anyio.Event()

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked for)."""
        return self.address.port

    @property
    def scheme(self) -> str:
        """``https`` when serving TLS, else ``http``."""
        return "https" if self.address.secure else "http"

    @property
    def local_url(self) -> str:
        """A URL reaching this node from this machine (wildcard binds become 127.0.0.1)."""
        host = self.address.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"{self.scheme}://{host}:{self.port}"

    async def set_files(self, entries: Iterable[tuple[str, str, int]]) -> None:
        """Share only: replace the whole index (see ``Node.set_files``)."""
        await self.node.set_files(entries)

    async def put_file(self, sha1: str, path: str, size: int) -> None:
        """Share only: add or replace one file in the index."""
        await self.node.put_file(sha1, path, size)

    async def remove_file(self, path: str) -> None:
        """Share only: remove one file from the index."""
        await self.node.remove_file(path)

    async def update_files(
        self, puts: Iterable[tuple[str, str, int]], removes: Iterable[str] = ()
    ) -> list[tuple[str, str]]:
        """Share only: many removes and puts at once (see ``Node.update_files``)."""
        return await self.node.update_files(puts, removes)

    async def content_changed(self, sha1s: Iterable[str]) -> None:
        """Share only: the files holding these SHA-1s changed, for a core reading its
        files from a store (see ``Node.content_changed``)."""
        await self.node.content_changed(sha1s)

    def stop(self) -> None:
        """Stop serving: the listener, every link and the driver are cancelled."""
        self._stopped.set()
        self._scope.cancel()

    async def wait(self) -> None:
        """Wait until ``stop`` is called (or the surrounding task is cancelled)."""
        await self._stopped.wait()


class _LateApp:
    """The listener's app, bound before the node exists: requests that arrive between
    the bind and the node's start wait for it (at most ``_START_WAIT`` seconds)."""

    def __init__(self) -> None:
        self._ready = anyio.Event()
        self._app: App | None = None

    def set(self, app: App) -> None:
        self._app = app
        self._ready.set()

    def __call__(self, request: Request) -> Awaitable[Response]:
        # Once the node runs, its app's own coroutine (no extra one per request).
        if self._app is not None:
            return self._app(request)
        return self._starting(request)

    async def _starting(self, request: Request) -> Response:
        with anyio.move_on_after(_START_WAIT):
            await self._ready.wait()
        if self._app is None:
            return error_response(503, "Node is starting")
        return await self._app(request)


@asynccontextmanager
async def serve_node(
    core: NodeCoreType | CoreFactory,
    local: Router | App,
    listen: ListenConfig,
    *,
    clock: Clock | None = None,
    hooks: NodeHooks | None = None,
    server_config: ServerConfig | None = None,
    client_ssl: ssl.SSLContext | None = None,
    dialer: Callable[[str], Awaitable[LinkTransport]] | None = None,
    dial_timeout: float = 10.0,
    uplink: bool = True,
    app_config: NodeAppConfig | None = None,
    stream_budget: StreamBudget | None = None,
    join_budget: JoinBudget | None = None,
) -> AsyncIterator[NodeHandle]:
    """Serve a node: HTTP (``docs/http.md``) and child websockets on ``listen``, and the
    parent dial.

    Args:
        core: the core, or a factory called with the bound address (so a ``--port 0``
            node can put its real port in its listen URL). Its config carries the
            parent URL (``Dial``), the passcode and the timeouts.
        local: the app's routes for this node's own id and the web UI (kbapps builds
            it: the share's file routes, the web pages).
        listen: host, port and TLS (``ssl_context`` serves HTTPS and WSS).
        clock: ``AnyioClock`` by default.
        hooks: console-line callbacks (``on_listening`` runs right after the bind).
        server_config: HTTP server limits (defaults are fine); its ``upload_limit``
            also paces the bodies the node serves through the tree.
        client_ssl: TLS context for dialing a ``https`` parent (system store if None).
        dialer: replaces the websocket dialer (tests).
        dial_timeout: seconds for one dial (connect, TLS, handshake).
        uplink: offer the parent the raw uplink (``kbtransport.uplink``); on by default.
        app_config: policies of the HTTP routes (``kbtransport.httpapi.NodeAppConfig``:
            the web origins allowed to open a websocket...); the defaults if None.
        stream_budget: how proxied streams are shared among HTTP clients.
        join_budget: how fast one address may retry after failed joins.

    Yields:
        a ``NodeHandle``; leaving the block stops the node.

    Raises:
        ConnectError: the address cannot be bound.
    """
    local_app: App = local.app if isinstance(local, Router) else local
    hooks = hooks if hooks is not None else NodeHooks()
    app = _LateApp()
    server = server_config if server_config is not None else ServerConfig()
    if server.counters is None:
        server = dataclasses.replace(server, counters=ServerCounters())
    async with anyio.create_task_group() as tg:
        address: BoundAddress = await tg.start(serve_http, app, listen, server)
        if hooks.on_listening is not None:
            hooks.on_listening(address)
        the_core = core if isinstance(core, HubCore | ShareCore) else core(address)
        node = Node(
            the_core,
            clock=clock,
            dialer=dialer,
            hooks=hooks,
            client_ssl=client_ssl,
            dial_timeout=dial_timeout,
            uplink=uplink,
            counters=server.counters,
            stream_budget=stream_budget,
            join_budget=join_budget,
            upload_limit=server.upload_limit,
        )
        cache = app_config.cache if app_config is not None else None
        node.metrics.relay_cache = cache
        own = own_node_app(node, local_app, cache)
        node.request_app = own
        node.http_app = build_node_app(node, local_app, app_config)
        if cache is not None and isinstance(the_core, HubCore):
            # A hub with a cache also caches what it relays by content id: its core
            # hands those requests to the app (docs/protocol.md §13).
            node.request_app = served_request_app(node, own, node.http_app)
            the_core.take_content_requests(True)
        await tg.start(node.run)
        if cache is not None:
            # A hub announces what its relay cache holds, now and as it changes.
            cache.on_change = node.note_cached
            node.note_all_cached(cache.sizes())
        app.set(node.http_app)
        handle = NodeHandle(node, address, tg.cancel_scope)
        try:
            yield handle
        finally:
            tg.cancel_scope.cancel()
