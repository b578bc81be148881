"""Running a node: what ``kbucket-host`` and ``kbucket-hub`` do after their options.

Strategy
--------
``run_node`` is the whole life of a node process, in the order the user sees it:

1. ``kbapps.nodesetup.setup_node``: ``.kbucket/``, keys, the docs/commands.md questions
   (stdin lines), ``kbnode.json``, the port policy and the TLS decision. Its
   ``SetupError`` is a ``UsageError``, so the command prints one line and exits 1 (the
   user declined) or 2 (bad input); a port that cannot be bound exits 3.
2. The app: for a share, the persistent ``FileIndex`` in ``.kbucket/`` (also the
   store its core reads its files from: ``kbproto.sharestore``), the share's
   routes (``kbapps.share.app``) and the ``Indexer`` with its hashing processes
   (``kbapps.hashing.ProcessPool``, forked before the event loop starts any thread);
   for both kinds, the web interface (``kbapps.web``) on the same router. The routes
   that ask the network themselves (web pages, stand-in downloads) get a
   ``kbapps.nodeapp.NodeApp``, attached to the node's whole app once it runs.
3. ``kbtransport.serve.serve_node`` under ``output.run_async`` (``anyio.run``): the
   listener walks the port policy (a share's default is the first free port from 2000
   to 2999: only a real bind can tell, without a race), the core is built for the port
   actually bound (``--port 0``), and ``NodeHooks`` print the console lines of docs/commands.md as
   they happen.
4. SIGINT/SIGTERM cancel everything; the process exits 0 with no traceback.

Console lines go to stdout, one ``output.line`` each (inert: names and reasons come
from the network), flushed (stdout is made line-buffered by the commands), so a parent
process reading a pipe sees every line as it happens.
Warnings (unreadable files, ...) go to stderr.

Why one module of some 640 lines: its one job is the order of a node's life above, and
most of it is the wiring of that order (options into budgets, the console's lines
into hooks, the share's or the hub's parts into one app); the parts it wires each
live in a module of their own (``nodesetup``, ``share``, ``web``, ``kbtransport``).

The console lines (exact prefixes, docs/commands.md)::

    kbucket-share is running http on port <N>      (kbucket-hub ... http|https ...)
    Connecting to parent hub: <url>
    Starting indexing...                            (shares)
    Connected to parent hub: <hub name>
    Web interface: <url>
    Indexed <n> files.                              (shares; ``Indexed 1 file.``)

plus, for a share, ``Hashed <k> files; <u> unchanged since the last run.`` right
after ``Indexed``, and for a hub one line per child joining or leaving, and
``Join from <address> failed: <reason>`` for joins that failed (a wrong passcode...),
a few per minute at most, then ``Join failures: <n> more from <k> addresses in the
last 60 s``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

import anyio

from kbapps import output
from kbapps.config import NodeType
from kbapps.keys import CryptoVerifier
from kbapps.nodeapp import NodeApp
from kbapps.nodesetup import NodeSetup, SetupOptions, setup_node
from kbapps.output import UsageError
from kbproto.config import HubConfig, Limits, ShareConfig, Timeouts
from kbproto.hub import HubCore
from kbproto.messages import NodeInfo
from kbproto.nodetable import MAX_UNPROVEN_CLAIMS
from kbproto.share import ShareCore
from kbproto.sharestore import ShareFiles
from kbtransport.env import SystemIdSource
from kbtransport.errors import ConnectError
from kbtransport.http_server import ServerConfig
from kbtransport.httpapi import NodeAppConfig
from kbtransport.join_guard import RefusalSummary
from kbtransport.listener import BoundAddress, ListenConfig
from kbtransport.node import NodeHooks
from kbtransport.origins import OriginPolicy
from kbtransport.ratelimit import UploadLimiter
from kbtransport.relaycache import CacheDirError, RelayCache
from kbtransport.routing import Router
from kbtransport.serve import NodeHandle, serve_node
from kbtransport.stream_budget import StreamBudget

__all__ = (
    "RunOptions",
    "heartbeat_timeouts",
    "rate_text",
    "run_node",
)

#: The hub's relay cache directory inside ``.kbucket/`` (docs/formats.md).
CACHE_DIR_NAME = "cache"
#: Exit code when no port of the policy could be bound: a network failure.
_EXIT_BIND = output.EXIT_NETWORK


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOptions:
    """Options of the running node that are not set-up answers.

    Attributes:
        heartbeat_timeout: seconds of silence after which a peer (parent or child) is
            declared dead (docs/protocol.md: 30 s by default, "configurable"); None = default.
        max_connections_per_client: connections served at once for one client
            address (``ListenConfig.max_connections_per_client``); None = default.
        max_streams_per_client: proxied requests open at once for one client address
            (``StreamBudget.per_client``); None = default.
    """

    heartbeat_timeout: float | None = None
    max_connections_per_client: int | None = None
    max_streams_per_client: int | None = None


def rate_text(rate: int) -> str:
    """An upload rate for people, in the powers of 1024 ``--max-upload-rate`` takes:
    ``2 MiB/s``, ``500 KiB/s``, ``1.5 GiB/s``, ``100 B/s``."""
    for unit, name in ((1024**4, "TiB"), (1024**3, "GiB"), (1024**2, "MiB"), (1024, "KiB")):
        if rate >= unit:
            return f"{rate / unit:.4g} {name}/s"
    return f"{rate} B/s"


def heartbeat_timeouts(heartbeat_timeout: float | None) -> Timeouts:
    """kbproto ``Timeouts`` with ``heartbeat_timeout`` (pings at a third of it).

    The other timers are scaled down with a short heartbeat, so a test network that
    asks for 2 s also redials and times requests out quickly.

    Raises:
        UsageError: not a positive number.
    """
    if heartbeat_timeout is None:
        return Timeouts()
    if not heartbeat_timeout > 0 or heartbeat_timeout > 3600:
        raise UsageError("--heartbeat-timeout: give a number of seconds from 0 to 3600")
    base = Timeouts()
    scale = min(1.0, heartbeat_timeout / base.heartbeat_timeout)
    return Timeouts(
        heartbeat_interval=heartbeat_timeout / 3,
        heartbeat_timeout=heartbeat_timeout,
        handshake_timeout=max(1.0, base.handshake_timeout * scale),
        lookup_timeout=max(1.0, base.lookup_timeout * scale),
        request_timeout=max(2.0, base.request_timeout * scale),
        stream_idle_timeout=max(4.0, base.stream_idle_timeout * scale),
        reconnect_min=min(base.reconnect_min, max(0.1, heartbeat_timeout / 10)),
        reconnect_max=max(1.0, base.reconnect_max * scale),
        limit_backoff=max(1.0, base.limit_backoff * scale),
    )


class _Console:
    """One flushed line per event on stdout (the console lines of docs/commands.md)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def line(self, text: str) -> None:
        # Names and reasons come from the network: ``output.line`` keeps each one
        # line, with nothing in it a terminal would act on. A console nobody reads
        # any more (a closed pipe) must not stop the node serving.
        with contextlib.suppress(BrokenPipeError, ValueError):
            output.line(text, stream=self._stream)


def _child_word(info: NodeInfo) -> str:
    return "hub" if info.node_type == "hub" else "share"


def _hooks(setup: NodeSetup, console: _Console) -> NodeHooks:
    noun = "share" if setup.kind == "leaf" else "hub"

    def listening(bound: BoundAddress) -> None:
        console.line(f"kbucket-{noun} is running {setup.url_scheme} on port {bound.port}")
        if setup.upload_rate:
            # Saved in kbnode.json, so a limit set once is said at every start.
            console.line(
                f"Upload rate limit: {rate_text(setup.upload_rate)}"
                " (--max-upload-rate; saved in kbnode.json, 0 removes it)"
            )

    def joined(info: NodeInfo) -> None:
        console.line(f"Child {_child_word(info)} joined: {info.name} ({info.node_id})")

    def left(info: NodeInfo, reason: str) -> None:
        console.line(f"Child {_child_word(info)} left: {info.name} ({info.node_id}): {reason}")

    def unproven(info: NodeInfo, node_id: str, reason: str) -> None:
        console.line(
            f"Child {_child_word(info)} {info.name} ({info.node_id}) reported node {node_id}"
            f" without proof: {reason}; not routed (the link closes after"
            f" {MAX_UNPROVEN_CLAIMS} such ids)"
        )

    def join_failed(client: str, reason: str) -> None:
        console.line(f"Join from {client} failed: {reason}")

    def join_failures(summary: RefusalSummary) -> None:
        noun = "address" if summary.addresses == 1 else "addresses"
        console.line(
            f"Join failures: {summary.count} more from {summary.addresses} {noun}"
            f" in the last {summary.seconds:g} s"
        )

    parent = _ParentLines(console)
    return NodeHooks(
        on_listening=listening,
        on_dial=parent.dialing,
        on_dial_failed=parent.dial_failed,
        on_parent_connected=parent.connected,
        on_parent_lost=parent.lost,
        on_join_refused=parent.refused,
        on_child_joined=joined,
        on_child_left=left,
        on_placement_refused=unproven,
        on_join_failed=join_failed,
        on_join_failures_summary=join_failures,
    )


class _ParentLines:
    """The console lines about the parent hub: one line per change of state.

    While the hub is down the core redials every few seconds; printing each attempt
    (two lines a retry) buried everything else. So ``Connecting to parent hub`` is
    printed when a run of attempts starts, a failure or refusal when its reason
    differs from the last one printed, and the next line is the one that says the
    link is up (or was lost).
    """

    def __init__(self, console: _Console) -> None:
        self._console = console
        #: The attempt in progress was announced (reset once connected or lost).
        self._announced = False
        #: The last failure or refusal printed since then.
        self._last_problem = ""
        #: A refusal closes the link: its loss says nothing new.
        self._refused = False

    def dialing(self, url: str) -> None:
        if not self._announced:
            self._announced = True
            self._console.line(f"Connecting to parent hub: {url}")

    def dial_failed(self, url: str, reason: str) -> None:
        self._problem(f"Cannot reach parent hub {url}: {reason} (retrying every few seconds)")

    def refused(self, reason: str) -> None:
        self._refused = True
        self._problem(f"Parent hub refused this node: {reason}")

    def connected(self, info: NodeInfo) -> None:
        self._announced = False
        self._last_problem = ""
        self._console.line(f"Connected to parent hub: {info.name}")

    def lost(self, reason: str) -> None:
        if self._refused:
            self._refused = False
            return
        self._announced = False
        self._last_problem = ""
        self._console.line(f"Lost the parent hub: {reason} (reconnecting)")

    def _problem(self, line: str) -> None:
        if line != self._last_problem:
            self._last_problem = line
            self._console.line(line)


def _make_core(
    setup: NodeSetup, timeouts: Timeouts, files: ShareFiles | None = None
) -> Callable[[BoundAddress], HubCore | ShareCore]:
    def make(bound: BoundAddress) -> HubCore | ShareCore:
        config = setup.core_config(bound.port, timeouts=timeouts)
        if isinstance(config, HubConfig):
            return HubCore(
                config, signer=setup.signer, verifier=CryptoVerifier(), ids=SystemIdSource()
            )
        assert isinstance(config, ShareConfig)
        return ShareCore(config, signer=setup.signer, ids=SystemIdSource(), files=files)

    return make


#: Connections kept for HTTP clients, on top of a hub's child links.
_CLIENT_CONNECTIONS = 1024


def _connection_capacity(setup: NodeSetup) -> int:
    """How many connections the listener serves at once, and the descriptors for them.

    A child's websocket holds a listener slot for as long as it is joined, so a hub
    with ``max_children`` children (1000 by default) and the listener's default of
    1024 slots had room for only 24 HTTP clients at once: the rest waited in the
    kernel's backlog (found by the issue 6 load test). A child holds two connections
    (its websocket and its uplink, ``kbtransport.uplink``), so a hub gets room for
    twice its children plus ``_CLIENT_CONNECTIONS``; the soft descriptor limit is
    raised toward the hard one to match (each connection is one descriptor, plus files
    being served).
    """
    import resource

    wanted = _CLIENT_CONNECTIONS
    if setup.kind == "hub":
        wanted += 2 * Limits().max_children
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + _CLIENT_CONNECTIONS // 2  # files served and everything else
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # keep the old limit; serve fewer at once rather than fail
    if soft != resource.RLIM_INFINITY:
        wanted = max(64, min(wanted, soft - _CLIENT_CONNECTIONS // 2))
    return wanted


def _local_web_url(handle: NodeHandle) -> str:
    """Where this node's web page opens from this machine: the bound address, with
    ``localhost`` for a wildcard bind."""
    host = handle.address.host
    if host in ("0.0.0.0", "::", ""):
        host = "localhost"
    elif ":" in host:
        host = f"[{host}]"
    return f"{handle.scheme}://{host}:{handle.port}/"


def _announce_web(setup: NodeSetup, handle: NodeHandle, console: _Console) -> None:
    """Print where the web page opens; note it in the directory lock so that a second
    node started on this directory can say where the running one is.

    With the default listen URL (``.``) that is ``http://localhost:PORT/``. A node that
    advertises another URL (a share behind a firewall gives one nobody can reach; a
    hub behind a reverse proxy gives its public name) prints the local address, where
    the page surely opens, and the advertised URL on a line of its own.
    """
    advertised = setup.listen_url_for(handle.port) + "/"
    url = advertised if setup.config.listen_url in ("", ".") else _local_web_url(handle)
    setup.lock.note(web=url)
    console.line(f"Web interface: {url}")
    if url != advertised:
        console.line(f"Advertised URL: {advertised} (given to other nodes and in finds)")


def _budgets(run: RunOptions) -> tuple[dict[str, int], StreamBudget]:
    """The listener's per-client option and the stream budget of ``run``.

    Raises:
        UsageError: a budget below 1.
    """
    for option, value in (
        ("--max-connections-per-client", run.max_connections_per_client),
        ("--max-streams-per-client", run.max_streams_per_client),
    ):
        if value is not None and value < 1:
            raise UsageError(f"{option}: give a number of at least 1")
    listen: dict[str, int] = {}
    if run.max_connections_per_client is not None:
        listen["max_connections_per_client"] = run.max_connections_per_client
    streams = StreamBudget()
    if run.max_streams_per_client is not None:
        streams = dataclasses.replace(streams, per_client=run.max_streams_per_client)
    return listen, streams


async def _serve(
    setup: NodeSetup,
    router: Router,
    run: RunOptions,
    console: _Console,
    started: Callable[[NodeHandle], object],
    files: ShareFiles | None = None,
    cache: RelayCache | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM; walk the port policy on "address in use"; a share's
    core reads its files from ``files`` (its ``FileIndex``); a hub serves and fills
    its relay ``cache``."""
    timeouts = heartbeat_timeouts(run.heartbeat_timeout)
    per_client, streams = _budgets(run)
    ssl_context = setup.tls.server_context() if setup.tls is not None else None
    hooks = _hooks(setup, console)
    bound = False

    def on_listening(address: BoundAddress) -> None:
        nonlocal bound
        bound = True
        assert hooks.on_listening is not None
        hooks.on_listening(address)

    live_hooks = dataclasses.replace(hooks, on_listening=on_listening)
    last_error = ""
    max_connections = _connection_capacity(setup)
    for port in setup.port.candidates():
        listen = ListenConfig(
            host=setup.host,
            port=port,
            ssl_context=ssl_context,
            max_connections=max_connections,
            **per_client,
        )
        failed = False
        try:
            await _serve_once(
                setup, router, timeouts, streams, listen, live_hooks, started, files, cache
            )
        except* ConnectError as group:
            if bound:
                raise
            failed = True
            last_error = str(group.exceptions[0])
        if not failed:
            return
    if setup.port.first == setup.port.last:
        raise UsageError(last_error or "cannot listen", _EXIT_BIND)
    raise UsageError(
        f"no free port from {setup.port.first} to {setup.port.last} on {setup.host}"
        " (pass --port N, or --port 0 for any free port)",
        _EXIT_BIND,
    )


def _app_config(setup: NodeSetup, cache: RelayCache | None = None) -> NodeAppConfig:
    """The HTTP routes' policies from ``kbnode.json`` (``allowed_origins``), and a
    hub's relay cache."""
    return NodeAppConfig(origins=OriginPolicy.of(setup.config.allowed_origins), cache=cache)


def _open_cache(setup: NodeSetup) -> RelayCache | None:
    """A hub's relay cache in ``.kbucket/cache`` (None when ``cache_size`` is 0).

    Raises:
        UsageError: the cache directory is unusable (a symlink...): exit 2.
    """
    size = setup.config.cache_size
    if setup.kind != "hub" or not size:
        return None
    try:
        return RelayCache.open(setup.kbucket_dir / CACHE_DIR_NAME, size)
    except CacheDirError as exc:
        raise UsageError(str(exc), output.EXIT_BAD_INPUT) from None


def _server_config(setup: NodeSetup) -> ServerConfig:
    """The HTTP server's settings: a share's upload rate limit (``--max-upload-rate``),
    one token bucket for all its connections and the streams its hub proxies."""
    if setup.upload_rate == 0:
        return ServerConfig()
    return ServerConfig(upload_limit=UploadLimiter(setup.upload_rate))


async def _serve_once(
    setup: NodeSetup,
    router: Router,
    timeouts: Timeouts,
    streams: StreamBudget,
    listen: ListenConfig,
    hooks: NodeHooks,
    started: Callable[[NodeHandle], object],
    files: ShareFiles | None,
    cache: RelayCache | None,
) -> None:
    core = _make_core(setup, timeouts, files)
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with (
            serve_node(
                core,
                router,
                listen,
                hooks=hooks,
                app_config=_app_config(setup, cache),
                stream_budget=streams,
                server_config=_server_config(setup),
            ) as handle,
            anyio.create_task_group() as tg,
        ):

            async def stop_on_signal() -> None:
                async for _ in signals:
                    handle.stop()
                    tg.cancel_scope.cancel()
                    return

            tg.start_soon(stop_on_signal)
            result = started(handle)
            if result is not None:
                assert callable(result)
                tg.start_soon(result)
            await handle.wait()
            tg.cancel_scope.cancel()


def _run_share(setup: NodeSetup, run: RunOptions, console: _Console) -> None:
    from kbapps.hashing import ProcessPool
    from kbapps.share.app import build_share_app
    from kbapps.share.index import FileIndex
    from kbapps.share.indexer import Indexer, IndexerHooks, default_hasher
    from kbapps.share.paths import ShareDir
    from kbapps.web import add_web_routes

    pool = ProcessPool()  # started below, before anyio.run starts any thread
    index = FileIndex.for_share(setup.kbucket_dir, on_warning=output.warning)
    hashed = 0
    hashed_initial: list[int] = []

    bar: list[output.Progress] = []

    def hash_start(files: int, nbytes: int) -> None:
        nonlocal hashed
        hashed += files
        # A bar on a terminal, milestone lines otherwise (docs/commands.md), on stderr.
        bar.append(output.Progress("Hashing", total_files=files, total_bytes=nbytes))
        if not hashed_initial and hashed == files:  # the first stretch of the first scan
            console.line(
                f"Hashing {files} {output.noun(files, 'file')} ({output.format_bytes(nbytes)})..."
            )

    def initial_done(count: int) -> None:
        hashed_initial.append(hashed)
        console.line(f"Indexed {count} {output.noun(count, 'file')}.")
        unchanged = max(0, count - hashed)
        console.line(
            f"Hashed {hashed} {output.noun(hashed, 'file')}; {unchanged} unchanged since"
            " the last run."
        )

    indexer = Indexer(
        setup.directory,
        index,
        hooks=IndexerHooks(
            on_hash_start=hash_start,
            on_hash_progress=lambda files, nbytes: bar[-1].update(files, nbytes) if bar else None,
            on_hash_end=lambda: bar.pop().close() if bar else None,
            on_initial_done=initial_done,
            on_warning=output.warning,
        ),
        hasher=default_hasher(pool=pool),
    )
    network = NodeApp()
    app = build_share_app(
        ShareDir(setup.directory),
        index,
        setup.node_id,
        on_stale=indexer.request_rescan,
        network=network,
    )
    add_web_routes(
        app.router,
        node_id=setup.node_id,
        node_type="leaf",
        network=network,
        scheme=setup.url_scheme,
    )

    def started(handle: NodeHandle) -> Callable[[], object]:
        network.attach(handle.node.http_app)
        console.line("Starting indexing...")
        _announce_web(setup, handle, console)

        async def index_forever() -> None:
            await indexer.run(handle)

        return index_forever

    # The hashing processes are forked now, while this process runs one thread:
    # anyio.run starts worker threads, and a child forked beside them could inherit a
    # lock another thread holds. The indexer's worker threads send their hashing to
    # these processes (kbapps.hashing.pool).
    pool.start()
    try:
        output.run_async(_serve, setup, app.router, run, console, started, index)
    finally:
        index.close()
        pool.close()


def _run_hub(setup: NodeSetup, run: RunOptions, console: _Console) -> None:
    from kbapps.web import add_web_routes

    router = Router()
    network = NodeApp()
    add_web_routes(
        router, node_id=setup.node_id, node_type="hub", network=network, scheme=setup.url_scheme
    )

    def started(handle: NodeHandle) -> None:
        network.attach(handle.node.http_app)
        _announce_web(setup, handle, console)

    cache = _open_cache(setup)
    try:
        output.run_async(_serve, setup, router, run, console, started, None, cache)
    finally:
        if cache is not None:
            cache.close()


def run_node(
    kind: NodeType,
    directory: str,
    options: SetupOptions,
    run: RunOptions | None = None,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> int:
    """Set up and run the node in ``directory`` until SIGINT/SIGTERM; return 0.

    Args:
        kind: ``"leaf"`` (kbucket-host) or ``"hub"`` (kbucket-hub).
        directory: the node directory.
        options: the set-up answers given as options.
        run: options of the running node.
        stdin: where prompts read answers (``sys.stdin``).
        stdout: prompts and console lines (``sys.stdout``).

    Raises:
        UsageError: set-up failed (exit 1 for a "no", 2 for bad input), or no port
            could be bound (exit 1).
    """
    run = run if run is not None else RunOptions()
    heartbeat_timeouts(run.heartbeat_timeout)  # bad options fail before any set-up
    _budgets(run)
    out = stdout if stdout is not None else sys.stdout
    setup = setup_node(
        directory, kind, options, stdin=stdin if stdin is not None else sys.stdin, stdout=out
    )
    console = _Console(out)
    if kind == "leaf":
        _run_share(setup, run, console)
    else:
        _run_hub(setup, run, console)
    return 0
