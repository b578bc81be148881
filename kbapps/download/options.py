"""How the client finds and downloads: ``ClientOptions``, the hub URL, the HTTP client."""

from __future__ import annotations

import math
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kbapps.cachedir import user_cache_dir
from kbapps.download.cache import CACHE_SIZE_ENV, DEFAULT_CACHE_SIZE
from kbapps.download.deadline import DEFAULT_MIN_SPEED, DEFAULT_SPEED_WINDOW
from kbapps.download.errors import BadInputError
from kbapps.hashing import HASH_CACHE_FILENAME
from kbapps.sizes import size_in_bytes
from kbtransport.errors import ConnectError
from kbtransport.http_client import ClientConfig, HttpClient
from kbtransport.net import parse_url

__all__ = (
    "CONTENT_CACHE_DIRNAME",
    "DEFAULT_HUB_URL",
    "DEFAULT_MAX_SOURCES",
    "HUB_URL_ENV",
    "MIN_SPEED_ENV",
    "PARALLEL_MIN_SIZE",
    "SPEED_WINDOW_ENV",
    "ClientOptions",
    "default_options",
    "make_http_client",
    "parse_seconds",
    "parse_size",
    "resolve_hub_url",
    "resolve_size",
)

#: docs/commands.md, kb-prv-find: the hub when neither ``--hub`` nor ``$KBUCKET_URL`` is given.
DEFAULT_HUB_URL = "http://localhost:3240"
#: Environment variable naming the hub (the original tool used the same).
HUB_URL_ENV = "KBUCKET_URL"
#: Sub-directory of the per-user cache directory holding downloaded content by SHA-1.
CONTENT_CACHE_DIRNAME = "content"
#: Environment variables for ``--min-speed`` and ``--speed-window``.
MIN_SPEED_ENV = "KBUCKET_MIN_SPEED"
SPEED_WINDOW_ENV = "KBUCKET_SPEED_WINDOW"
#: ``--max-sources``: distinct nodes a large file is read from at once. Four keeps a
#: few connections per download (a .prvdir runs ``concurrency`` files at once).
DEFAULT_MAX_SOURCES = 4
#: The smallest file fetched from several sources at once: 16 MiB, 16 chunks. Below it
#: one request costs less than the extra requests, connections and the second pass
#: that hashes the file once it is whole.
PARALLEL_MIN_SIZE = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientOptions:
    """How the client finds and downloads (sizes in bytes, times in seconds).

    Attributes:
        hub_url: the hub to ask, without a trailing ``/`` (see ``resolve_hub_url``).
        cache_dir: the content cache root (``<user cache>/content``); None disables it.
        hash_cache_path: the per-user hash cache database used to check files already
            present cheaply; None hashes them every time.
        connect_timeout: per source; a firewalled share should not cost long before
            the client falls back to a hub.
        read_timeout: the longest silence tolerated from a source or the hub.
        min_speed: bytes per second a source must average over every ``speed_window``
            seconds, or it is dropped for the next (0: no minimum); the hub's find
            answer must be complete within one window (``kbapps.download.deadline``).
        speed_window: seconds.
        concurrency: files downloaded at once for a ``.prvdir``.
        progress_bytes: progress is reported every this many bytes written.
        progress_interval: the least time between two ``progress`` events.
        ssl_context: TLS context for https hubs and sources (system store if None).
        cache_size: the content cache's bound in bytes (0: no cache).
        cache_in_background: copy downloads into the content cache in a process of
            its own, started once the download is done, so the command does not wait
            for the copy (``kb-prv-download`` does; the library copies before it
            returns by default).
        force: replace files at OUT that hold other content (``--force``); without
            it such a file stops the download before anything changes.
        max_sources: distinct sources (nodes) a large file is fetched from at once
            (``--max-sources``; 1: one source at a time, as before issue 13).
        parallel_min_size: files this large or larger, found on at least two distinct
            nodes, are fetched in pieces from several at once
            (``kbapps.download.parallel``); smaller ones with one request.
        one_source_first: start such a file from one source and engage the others
            only when ``kbapps.download.ramp`` says they are likely to help (the
            default); False: from every source at once from the start.
    """

    hub_url: str = DEFAULT_HUB_URL
    cache_dir: Path | None = None
    hash_cache_path: Path | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    min_speed: int = DEFAULT_MIN_SPEED
    speed_window: float = DEFAULT_SPEED_WINDOW
    concurrency: int = 4
    progress_bytes: int = 4 * 1024 * 1024
    progress_interval: float = 0.5
    ssl_context: ssl.SSLContext | None = None
    cache_size: int = DEFAULT_CACHE_SIZE
    cache_in_background: bool = False
    force: bool = False
    max_sources: int = DEFAULT_MAX_SOURCES
    parallel_min_size: int = PARALLEL_MIN_SIZE
    one_source_first: bool = True

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.max_sources < 1:
            raise ValueError("ClientOptions.concurrency and max_sources must be at least 1")
        if self.parallel_min_size < 1:
            raise ValueError("ClientOptions.parallel_min_size must be positive")
        if self.progress_bytes < 1 or self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ValueError("ClientOptions sizes and timeouts must be positive")
        if self.cache_size < 0 or self.min_speed < 0:
            raise ValueError("ClientOptions.cache_size and min_speed must not be negative")
        if not 0 < self.speed_window < math.inf:
            raise ValueError("ClientOptions.speed_window must be a positive number of seconds")


def parse_seconds(text: str, where: str) -> float:
    """Seconds in ``text`` (a positive number).

    Raises:
        BadInputError: ``text`` is not a positive number; the message names ``where``.
    """
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise BadInputError(f"{where}: not a positive number of seconds: {text!r}")
    return value


def parse_size(text: str, where: str) -> int:
    """Bytes in ``text``: a number, optionally with K, M, G or T (powers of 1024).

    Raises:
        BadInputError: ``text`` is not a size; the message names ``where`` it came from.
    """
    size = size_in_bytes(text)
    if size is None:
        raise BadInputError(
            f"{where}: not a size: {text!r} (bytes, or with K, M, G or T: 500M, 20G, 0)"
        )
    return size


def resolve_size(
    option: str | None, env_name: str, default: int, option_name: str, env: Mapping[str, str]
) -> int:
    """A size from ``option``, else from ``$env_name``, else ``default``.

    Raises:
        BadInputError: the option or the variable is not a size (names which).
    """
    if option is not None:
        return parse_size(option, option_name)
    if env.get(env_name):
        return parse_size(env[env_name], f"${env_name}")
    return default


def resolve_hub_url(option: str | None, env: Mapping[str, str] | None = None) -> str:
    """Return the hub URL to use: ``option``, else ``$KBUCKET_URL``, else the default.

    The URL must be ``http://`` or ``https://`` with a host; a trailing ``/`` is dropped.

    Raises:
        BadInputError: the URL is unusable (names where it came from).
    """
    env = os.environ if env is None else env
    if option:
        url, where = option, "--hub"
    elif env.get(HUB_URL_ENV):
        url, where = env[HUB_URL_ENV], f"${HUB_URL_ENV}"
    else:
        url, where = DEFAULT_HUB_URL, "default hub"
    url = url.strip().rstrip("/")
    try:
        parsed = parse_url(url)
    except ConnectError as exc:
        raise BadInputError(f"{where}: {exc}") from None
    if parsed.scheme not in ("http", "https") or "?" in url or "#" in url:
        raise BadInputError(f"{where}: not an http(s) hub URL: {url!r}")
    return url


def default_options(
    hub: str | None = None,
    env: Mapping[str, str] | None = None,
    *,
    cache_size: str | None = None,
    min_speed: str | None = None,
    speed_window: str | None = None,
    **overrides: Any,
) -> ClientOptions:
    """Options for the commands: the hub, the per-user caches, the cache's bound and the
    sources' minimum progress, each from its option (``hub``, ``cache_size``,
    ``min_speed``, ``speed_window``: ``--hub``, ``--cache-size``, ``--min-speed``,
    ``--speed-window``), else from the environment (``$KBUCKET_URL``,
    ``$KBUCKET_CACHE_SIZE``, ``$KBUCKET_MIN_SPEED``, ``$KBUCKET_SPEED_WINDOW``), else
    the default.

    Raises:
        BadInputError: the hub URL or a size is unusable.
    """
    env = os.environ if env is None else env
    base = user_cache_dir(env)
    values: dict[str, Any] = {
        "hub_url": resolve_hub_url(hub, env),
        "cache_dir": base / CONTENT_CACHE_DIRNAME,
        "hash_cache_path": base / HASH_CACHE_FILENAME,
        "cache_size": resolve_size(
            cache_size, CACHE_SIZE_ENV, DEFAULT_CACHE_SIZE, "--cache-size", env
        ),
        "min_speed": resolve_size(min_speed, MIN_SPEED_ENV, DEFAULT_MIN_SPEED, "--min-speed", env),
        "speed_window": DEFAULT_SPEED_WINDOW,
    }
    if speed_window is not None:
        values["speed_window"] = parse_seconds(speed_window, "--speed-window")
    elif env.get(SPEED_WINDOW_ENV):
        values["speed_window"] = parse_seconds(env[SPEED_WINDOW_ENV], f"${SPEED_WINDOW_ENV}")
    values.update(overrides)
    return ClientOptions(**values)


def make_http_client(options: ClientOptions) -> HttpClient:
    """An ``HttpClient`` with the options' timeouts, TLS context and pool size."""
    return HttpClient(
        ClientConfig(
            connect_timeout=options.connect_timeout,
            read_timeout=options.read_timeout,
            ssl_context=options.ssl_context,
            max_idle_per_origin=max(4, options.concurrency, options.max_sources),
            user_agent="kb-prv-download",
        )
    )
