"""The download client: find content by SHA-1, fetch it verified, resume, cache (SPEC §3.4/§3.5).

Strategy
--------
A ``.prv`` names bytes by SHA-1 and size; nothing a source says is trusted until every
byte has been hashed. The rules, in the order a download applies them:

* **Local first.** A file of size 0 needs no network; an OUT that already holds the
  content (size, then SHA-1 through the per-user hash cache) is kept as it is. Then
  the per-user content cache
  (``<cache dir>/content/ab/<sha1>``), copied out *with* hashing, so a corrupted cache
  entry is dropped rather than installed. Then an existing ``OUT.part`` whose sidecar
  (``OUT.part.json``: expected SHA-1 and size) matches is resumed: its prefix is
  re-hashed from disk (64 KiB reads, bounded memory) so the final check covers every
  byte. A ``.part`` without a matching sidecar belongs to other content and is
  discarded, never resumed.
* **Find, then sources in order.** ``GET <hub>/find/<sha1>`` gives ``urls`` best first
  (SPEC §4: the share's own URL, then the hubs nearest the share, then the queried
  node); the client adds ``<hub>/sha1/<sha1>`` last, the one address it knows it can
  reach. Each source is asked with ``Range: bytes=<offset>-`` when bytes are already
  on disk, so a later source continues where an earlier one stopped.
* **A source is dropped, with its reason, when it** fails to connect, answers other than
  200/206, ignores a Range (200 to a ranged request), announces the wrong length or
  range, names other content in its ``ETag``, sends bytes whose first 1000 do not match
  ``original_fcs`` (caught after 1000 bytes, not after the whole file), cuts the body
  short, stalls past the read timeout, or delivers a whole file whose SHA-1 differs.
  When a mismatch is found at the end of a download that was *resumed*, the prefix may
  be the culprit, so the same source is tried once more from byte 0 before it is blamed.
* **Nothing wrong is ever at OUT.** Bytes go to ``OUT.part``; ``OUT`` appears only by an
  atomic rename after the SHA-1 and size matched. On failure OUT is untouched. The
  installed file then enters the content cache by a hard link (a copy across file
  systems); the cache has no size limit yet.
* **Speed** (perf-baselines §3; ``docs/benchmarks.md``). ``HttpClient`` reads up to
  1 MiB per ``recv`` from a raw socket; the event loop only receives and queues each
  chunk, and one dedicated writer thread hashes it and appends it with ``os.writev``
  while the next chunk arrives. hashlib and ``writev`` release the GIL, so receiving
  and hashing+writing overlap on two cores. At most 16 chunks wait (bounded memory).
  Small bodies (up to 256 KiB) skip the thread: starting one would cost more.
* **Directories.** A ``.prvdir`` is fanned out over a few concurrent workers sharing one
  HTTP client; files already present with the right content are skipped (the per-user
  hash cache of ``kbapps.hashing`` makes that check cheap), identical contents are
  fetched once, and partial files live in ``OUT/.kbucket-partial/`` (a dot-name, so
  never a ``.prvdir`` entry) to be resumed by the next run.

Events (``on_event``) are plain JSON-ready dicts, one per happening, with an ``"event"``
key: ``source`` (a URL is tried), ``progress`` (rate-limited), ``done`` (a file is in
place), ``error`` (a source failed, or with ``"fatal": true`` a file failed),
``warning`` (the hub's size disagrees with the ``.prv``) and, for a ``.prvdir``,
``finished``. ``kb-prv-download --json`` prints them as JSON Lines.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import queue
import re
import sqlite3
import ssl
import stat
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from kbapps.cachedir import user_cache_dir
from kbapps.hashing import HASH_CACHE_FILENAME, FileKey, HashCache, hash_files
from kbproto.prv import (
    FCS_HEAD_BYTES,
    Prv,
    PrvDir,
    PrvFormatError,
    PrvLimits,
    is_valid_entry_name,
    parse_document,
)
from kbtransport.errors import ConnectError, TransportError
from kbtransport.http_client import ClientConfig, HttpClient, HttpResponse
from kbtransport.net import parse_url

__all__ = (
    "CONTENT_CACHE_DIRNAME",
    "DEFAULT_HUB_URL",
    "EMPTY_SHA1",
    "EXIT_BAD_INPUT",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "HUB_URL_ENV",
    "PARTIAL_DIRNAME",
    "BadInputError",
    "ClientError",
    "ClientOptions",
    "ContentCache",
    "DownloadFailedError",
    "DownloadResult",
    "EventSink",
    "FindResult",
    "HubUnreachableError",
    "NotFoundError",
    "PrvDirResult",
    "SourceFailure",
    "default_options",
    "download_prv",
    "download_prvdir",
    "download_sources",
    "find_content",
    "load_prv_file",
    "make_http_client",
    "resolve_hub_url",
    "safe_target",
)

#: SPEC §3.4: the hub when neither ``--hub`` nor ``$KBUCKET_URL`` is given.
DEFAULT_HUB_URL = "http://localhost:3240"
#: Environment variable naming the hub (the original tool used the same).
HUB_URL_ENV = "KBUCKET_URL"
#: Sub-directory of the per-user cache directory holding downloaded content by SHA-1.
CONTENT_CACHE_DIRNAME = "content"
#: Where a ``.prvdir`` download keeps its partial files, inside OUT. A dot-name: never
#: a ``.prvdir`` entry, and skipped by ``kb-prv-create``.
PARTIAL_DIRNAME = ".kbucket-partial"
#: SHA-1 of zero bytes: a file of size 0 needs no network.
EMPTY_SHA1 = hashlib.sha1(b"").hexdigest()

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_BAD_INPUT = 2
EXIT_UNREACHABLE = 3

#: The find answer is a small JSON object; a hub holding a file in many shares lists
#: a few URLs each. 4 MiB is far above anything real.
MAX_FIND_BYTES = 4 * 1024 * 1024
#: Sources tried per file, at most (each may cost a connect timeout).
MAX_SOURCES = 32
#: Bytes of an error response body read to quote its message.
_MAX_ERROR_BODY = 4096
#: Sidecar files are tiny JSON objects; anything bigger is not ours.
_MAX_SIDECAR_BYTES = 4096
#: Received chunks (each at most ``ClientConfig.read_size``, 1 MiB) queued for the
#: writer thread: bounds the memory a fast source can fill while the disk is slow.
_QUEUED_CHUNKS = 16
#: Bodies up to this size are hashed and written on the event loop (no thread).
_INLINE_BYTES = 256 * 1024
#: Read size when hashing a file from disk: the measured best for SHA-1 (perf-baselines §1).
_DISK_READ = 64 * 1024
_SHA1_RE = re.compile(r"[0-9a-f]{40}")
_CONTENT_RANGE_RE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


# --- errors --------------------------------------------------------------------------


class ClientError(Exception):
    """A download or find that cannot succeed; ``exit_code`` is the command's exit code.

    Attributes:
        message: one line saying what went wrong.
        exit_code: 1 not found, 2 bad input, 3 unreachable / no source worked.
    """

    exit_code = EXIT_UNREACHABLE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadInputError(ClientError):
    """The arguments are unusable: a bad hub URL, an OUT that cannot be written."""

    exit_code = EXIT_BAD_INPUT


class NotFoundError(ClientError):
    """The hub answered that no node of the network holds the content."""

    exit_code = EXIT_NOT_FOUND


class HubUnreachableError(ClientError):
    """The hub could not be asked (connect, timeout, error status, unusable answer)."""

    exit_code = EXIT_UNREACHABLE


@dataclass(frozen=True, slots=True)
class SourceFailure:
    """One source that did not deliver, and why (one line)."""

    url: str
    error: str


class DownloadFailedError(ClientError):
    """Every source failed; ``failures`` lists each source and its error, in order."""

    exit_code = EXIT_UNREACHABLE

    def __init__(self, message: str, failures: Sequence[SourceFailure]) -> None:
        super().__init__(message)
        self.failures = tuple(failures)


class _SourceError(Exception):
    """This source failed; try the next one (internal)."""


class _WrongBytes(_SourceError):
    """The bytes on disk do not hash to what the ``.prv`` says (internal)."""


class _Unreachable(_SourceError):
    """No response at all: connect refused or timed out, or no answer (internal)."""


#: Origins (scheme, host, port) that gave no response during this run. A share
#: behind a firewall advertises a URL nobody can reach; once it failed, the other
#: files of a ``.prvdir`` try it last instead of waiting out a connect timeout each.
_DeadOrigins = set[tuple[str, str, int]]


def _origin(url: str) -> tuple[str, str, int]:
    try:
        parsed = parse_url(url)
    except ConnectError:
        return ("", url, 0)
    return (parsed.scheme, parsed.host, parsed.port)


# --- options and results ---------------------------------------------------------------


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
        concurrency: files downloaded at once for a ``.prvdir``.
        progress_bytes: progress is reported every this many bytes written.
        progress_interval: the least time between two ``progress`` events.
        ssl_context: TLS context for https hubs and sources (system store if None).
    """

    hub_url: str = DEFAULT_HUB_URL
    cache_dir: Path | None = None
    hash_cache_path: Path | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    concurrency: int = 4
    progress_bytes: int = 4 * 1024 * 1024
    progress_interval: float = 0.5
    ssl_context: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("ClientOptions.concurrency must be at least 1")
        if self.progress_bytes < 1 or self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ValueError("ClientOptions sizes and timeouts must be positive")


@dataclass(frozen=True, slots=True, kw_only=True)
class FindResult:
    """A hub's answer to ``/find/SHA1`` (SPEC §4).

    Attributes:
        found: whether any node holds the content.
        size: the size the hub reported, if any.
        urls: the download URLs, best first, as the hub gave them (http/https only).
        response: the JSON object exactly as received.
    """

    found: bool
    size: int | None
    urls: tuple[str, ...]
    response: Mapping[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class DownloadResult:
    """One file in place.

    Attributes:
        path: where it is (OUT, or the file inside the OUT directory).
        sha1: its content id.
        size: its size.
        origin: ``network``, ``cache`` (the content cache), ``part`` (a complete
            ``.part`` found on disk), ``present`` (already there, skipped), ``copy``
            (copied from an identical file of the same ``.prvdir``) or ``empty``.
        url: the source that delivered the last bytes (network only).
        resumed_from: bytes already on disk when the successful source started.
        transferred: bytes received from the network for this file.
        failures: sources that failed before one worked.
    """

    path: Path
    sha1: str
    size: int
    origin: str
    url: str | None = None
    resumed_from: int = 0
    transferred: int = 0
    failures: tuple[SourceFailure, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class PrvDirResult:
    """The outcome of a ``.prvdir`` download.

    Attributes:
        done: files in place (downloaded, copied or skipped).
        failed: ``(relative path, error)`` for every file that could not be fetched.
    """

    done: tuple[DownloadResult, ...]
    failed: tuple[tuple[str, ClientError], ...]

    @property
    def exit_code(self) -> int:
        """0 if every file is in place, else the worst exit code among the failures."""
        return max((err.exit_code for _, err in self.failed), default=EXIT_OK)


#: Receives events (JSON-ready dicts with an ``"event"`` key).
EventSink = Callable[[dict[str, Any]], None]


def _no_events(event: dict[str, Any]) -> None:
    del event


# --- inputs --------------------------------------------------------------------------


def load_prv_file(path: str | os.PathLike[str]) -> Prv | PrvDir:
    """Read and parse a ``.prv`` or ``.prvdir`` file (told apart by its fields).

    Raises:
        BadInputError: the file cannot be read or is malformed; the message names the
            file and, for a malformed one, the field (SPEC §2.1).
    """
    name = os.fspath(path)
    limit = PrvLimits().max_bytes
    try:
        with open(name, "rb") as handle:
            data = handle.read(limit + 1)
    except FileNotFoundError:
        raise BadInputError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise BadInputError(f"{name}: is a directory, not a .prv or .prvdir file") from None
    except OSError as exc:
        raise BadInputError(f"cannot read {name}: {exc.strerror or exc}") from None
    try:
        return parse_document(data)
    except PrvFormatError as exc:
        raise BadInputError(f"{name}: invalid .prv/.prvdir: {exc}") from None


# --- hub URL and options ---------------------------------------------------------------


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
    hub: str | None = None, env: Mapping[str, str] | None = None, **overrides: Any
) -> ClientOptions:
    """Options for the commands: the hub from ``hub``/environment, the per-user caches.

    Raises:
        BadInputError: the hub URL is unusable.
    """
    base = user_cache_dir(env)
    values: dict[str, Any] = {
        "hub_url": resolve_hub_url(hub, env),
        "cache_dir": base / CONTENT_CACHE_DIRNAME,
        "hash_cache_path": base / HASH_CACHE_FILENAME,
    }
    values.update(overrides)
    return ClientOptions(**values)


def make_http_client(options: ClientOptions) -> HttpClient:
    """An ``HttpClient`` with the options' timeouts, TLS context and pool size."""
    return HttpClient(
        ClientConfig(
            connect_timeout=options.connect_timeout,
            read_timeout=options.read_timeout,
            ssl_context=options.ssl_context,
            max_idle_per_origin=max(4, options.concurrency),
            user_agent="kb-prv-download",
        )
    )


# --- find ----------------------------------------------------------------------------


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


async def _error_text(response: HttpResponse) -> str:
    # Quote the node's {"error": ...} when it sent one; never read much of a body.
    try:
        body = await response.read(_MAX_ERROR_BODY)
        obj = json.loads(body)
        if isinstance(obj, dict) and isinstance(obj.get("error"), str):
            return f"HTTP {response.status}: {_short(obj['error'])}"
    except (TransportError, ValueError, RecursionError):
        pass
    return f"HTTP {response.status} {response.reason}".rstrip()


async def find_content(client: HttpClient, hub_url: str, sha1: str) -> FindResult:
    """Ask ``hub_url`` where the content ``sha1`` is (``GET /find/SHA1``).

    Raises:
        HubUnreachableError: no usable answer (connect failure, timeout, an error
            status, a body that is not SPEC §4's JSON).
    """
    url = f"{hub_url}/find/{sha1}"
    try:
        async with client.stream("GET", url) as response:
            if response.status != 200:
                raise HubUnreachableError(f"hub {hub_url} answered {await _error_text(response)}")
            body = await response.read(MAX_FIND_BYTES)
    except TransportError as exc:
        raise HubUnreachableError(f"cannot reach hub {hub_url}: {exc}") from None
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: JSON nested too deep
        raise HubUnreachableError(f"hub {hub_url} sent a find answer that is not JSON") from None
    if not isinstance(obj, dict) or obj.get("success") is not True:
        error = obj.get("error") if isinstance(obj, dict) else None
        detail = f": {_short(error)}" if isinstance(error, str) else ""
        raise HubUnreachableError(f"hub {hub_url} could not answer the find{detail}")
    found = obj.get("found") is True
    size = obj.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        size = None
    urls: list[str] = []
    raw_urls = obj.get("urls")
    if found and isinstance(raw_urls, list):
        for item in raw_urls:
            if (
                isinstance(item, str)
                and item.startswith(("http://", "https://"))
                and item not in urls
                and len(item) <= 8192
            ):
                urls.append(item)
            if len(urls) >= MAX_SOURCES:
                break
    return FindResult(found=found, size=size, urls=tuple(urls), response=obj)


def download_sources(found: FindResult, hub_url: str, sha1: str) -> tuple[str, ...]:
    """Return the URLs to try, best first.

    The hub's ``urls`` in its order (SPEC §4: direct from the share, then the hubs
    nearest the share, then the queried node), then ``<hub_url>/sha1/<sha1>``: the hub
    the user named is reachable (it just answered), even when the listen URLs the
    nodes advertise are not (a hub configured as ``localhost`` seen from elsewhere).
    """
    urls = list(found.urls[:MAX_SOURCES])
    last = f"{hub_url}/sha1/{sha1}"
    if last not in urls:
        urls.append(last)
    return tuple(urls)


# --- writing a .part -------------------------------------------------------------------


def _write_all(fd: int, chunks: Sequence[bytes | memoryview]) -> None:
    views = [memoryview(c) for c in chunks if len(c)]
    while views:
        # writev: one system call per batch (IOV_MAX is 1024 on Linux).
        written = os.writev(fd, views[:1024])
        while written and views:
            first = views[0]
            if written >= len(first):
                written -= len(first)
                views.pop(0)
            else:
                views[0] = first[written:]
                written = 0


class _PartFile:
    """``OUT.part`` and its sidecar: bytes appended in order, hashed as they are written.

    Thread use: ``write_batch``/``rehash``/``copy_from`` run in a worker thread, one
    call at a time; everything else on the event loop between those calls.
    """

    def __init__(self, part: Path, prv: Prv) -> None:
        self.path = part
        self.sidecar = part.with_name(part.name + ".json")
        self.prv = prv
        self.fd = -1
        self.offset = 0
        self._whole = hashlib.sha1()
        self._head = hashlib.sha1()
        self._head_len = min(FCS_HEAD_BYTES, prv.size)

    # -- opening ---------------------------------------------------------------------

    def _sidecar_matches(self) -> bool:
        try:
            with open(self.sidecar, "rb") as handle:
                data = handle.read(_MAX_SIDECAR_BYTES + 1)
            obj = json.loads(data)
        except (OSError, ValueError, RecursionError):
            return False
        return (
            isinstance(obj, dict)
            and obj.get("sha1") == self.prv.sha1
            and obj.get("size") == self.prv.size
        )

    def open(self) -> bool:
        """Open (creating) the part; return True if its existing prefix may be resumed.

        A part is resumable only when its sidecar names this content and it is not
        longer than the content; anything else is truncated and the sidecar rewritten.
        """
        matches = self._sidecar_matches()
        if not matches:
            # The sidecar first: a .part never exists without saying what it holds.
            self._write_sidecar()
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        st = os.fstat(self.fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(self.path))
        if matches and 0 < st.st_size <= self.prv.size:
            return True
        self.reset()
        return False

    def _write_sidecar(self) -> None:
        data = json.dumps({"sha1": self.prv.sha1, "size": self.prv.size}).encode()
        tmp = self.sidecar.with_name(self.sidecar.name + ".tmp")
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, self.sidecar)

    def rehash(self) -> int:
        """Hash the bytes already in the part (bounded memory); return how many.

        Raises:
            _WrongBytes: the first 1000 bytes contradict ``original_fcs``.
        """
        size = os.fstat(self.fd).st_size
        buffer = bytearray(_DISK_READ)
        view = memoryview(buffer)
        os.lseek(self.fd, 0, os.SEEK_SET)
        done = 0
        while done < size:
            n = os.readv(self.fd, (buffer,))
            if not n:
                break
            n = min(n, size - done)
            self._hash(view[:n])
            done += n
        # Anything past what we hashed (a file that grew meanwhile) is dropped.
        os.ftruncate(self.fd, done)
        os.lseek(self.fd, done, os.SEEK_SET)
        return done

    def reset(self) -> None:
        """Forget every byte: truncate the part and restart the hashes."""
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)
        self.offset = 0
        self._whole = hashlib.sha1()
        self._head = hashlib.sha1()

    # -- appending -------------------------------------------------------------------

    def _hash(self, chunk: bytes | memoryview) -> None:
        if self.offset < self._head_len:
            take = min(len(chunk), self._head_len - self.offset)
            self._head.update(chunk[:take])
            if (
                self.offset + take == self._head_len
                and self._head.hexdigest() != self.prv.head_sha1
            ):
                raise _WrongBytes(
                    f"the first {self._head_len} bytes do not match the .prv's original_fcs"
                )
        self._whole.update(chunk)
        self.offset += len(chunk)

    def write_batch(self, chunks: Sequence[bytes | memoryview]) -> int:
        """Hash and append ``chunks``; return their total length.

        Raises:
            _WrongBytes: a byte past the expected size, or a wrong first 1000 bytes.
            OSError: the write failed (disk full...).
        """
        total = sum(len(c) for c in chunks)
        if self.offset + total > self.prv.size:
            raise _SourceError(f"sent more than the {self.prv.size} bytes expected")
        for chunk in chunks:
            self._hash(chunk)
        _write_all(self.fd, chunks)
        return total

    def copy_from(self, source: Path) -> bool:
        """Replace the part with ``source``'s bytes, hashing them; True if they verify."""
        self.reset()
        try:
            fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            return False
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return False
            buffer = bytearray(1024 * 1024)
            view = memoryview(buffer)
            while True:
                n = os.readv(fd, (buffer,))
                if not n:
                    break
                self.write_batch([view[:n]])
        except (_SourceError, OSError):
            self.reset()
            return False
        finally:
            os.close(fd)
        if self.verified():
            return True
        self.reset()
        return False

    # -- finishing -------------------------------------------------------------------

    def verified(self) -> bool:
        """True when exactly ``size`` bytes hashing to ``sha1`` are in the part."""
        return self.offset == self.prv.size and self._whole.hexdigest() == self.prv.sha1

    def digest(self) -> str:
        """The SHA-1 of the bytes so far."""
        return self._whole.hexdigest()

    def install(self, out: Path) -> None:
        """Move the verified part to ``out`` (atomic rename) and drop the sidecar."""
        self.close()
        os.replace(self.path, out)
        with contextlib.suppress(OSError):
            os.unlink(self.sidecar)

    def close(self) -> None:
        """Close the file descriptor (the part and sidecar stay for a later resume)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def discard(self) -> None:
        """Close and delete the part and its sidecar."""
        self.close()
        for path in (self.path, self.sidecar):
            with contextlib.suppress(OSError):
                os.unlink(path)


# --- the content cache -----------------------------------------------------------------


class ContentCache:
    """Downloaded content by SHA-1 under ``root`` (``ab/<sha1>``), verified on every use.

    Entries are added by hard-linking the installed file (no copy, no extra space) or,
    across file systems, by copying it. Since OUT may later be edited in place, an
    entry is re-hashed each time it is used and removed if it no longer matches.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, sha1: str) -> Path:
        """Where the content ``sha1`` is kept."""
        return self.root / sha1[:2] / sha1

    def has(self, sha1: str, size: int) -> bool:
        """True if an entry of the right size exists (its bytes are checked on use)."""
        try:
            st = os.stat(self.path_for(sha1))
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode) and st.st_size == size

    def remove(self, sha1: str) -> None:
        """Drop an entry (it did not verify)."""
        with contextlib.suppress(OSError):
            os.unlink(self.path_for(sha1))

    def add(self, sha1: str, source: Path) -> None:
        """Keep ``source`` (verified content ``sha1``) in the cache; failures are ignored.

        The cache is an optimisation: a full disk or a read-only cache directory must
        not fail a download that succeeded.
        """
        target = self.path_for(sha1)
        if target.exists():
            return
        tmp = target.with_name(f"{sha1}.tmp{os.getpid()}")
        try:
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            try:
                os.link(source, tmp)
            except OSError:
                import shutil

                shutil.copyfile(source, tmp)
            os.replace(tmp, target)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


# --- one download ----------------------------------------------------------------------


class _Reporter:
    """Counts bytes for the progress bar and rate-limits ``progress`` events."""

    def __init__(
        self,
        emit: EventSink,
        progress: Callable[[int, int], None] | None,
        interval: float,
        total_bytes: int,
        total_files: int,
    ) -> None:
        self.emit = emit
        self.progress = progress
        self.interval = interval
        self.total_bytes = total_bytes
        self.total_files = total_files
        self.bytes = 0
        self.files = 0
        self._last = 0.0

    def add(self, files: int = 0, nbytes: int = 0) -> None:
        self.bytes += nbytes
        self.files += files
        if self.progress is not None:
            self.progress(files, nbytes)
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self.emit(
                {
                    "event": "progress",
                    "bytes": self.bytes,
                    "total_bytes": self.total_bytes,
                    "files": self.files,
                    "total_files": self.total_files,
                }
            )

    def undo(self, nbytes: int) -> None:
        # Bytes thrown away (a restart from 0) come off the bar again.
        if nbytes:
            self.bytes -= nbytes
            if self.progress is not None:
                self.progress(0, -nbytes)


def _check_response(response: HttpResponse, offset: int, prv: Prv) -> None:
    etag = response.header("etag")
    if etag is not None:
        tag = etag.strip()
        quoted = tag.startswith('"') and tag.endswith('"')
        if quoted and _SHA1_RE.fullmatch(tag[1:-1].lower()) and tag[1:-1].lower() != prv.sha1:
            raise _SourceError(f"serves other content (ETag {_short(tag, 60)})")
    length = response.content_length
    if response.status == 200:
        if offset:
            raise _SourceError("ignored the Range request (200 instead of 206)")
        if length is not None and length != prv.size:
            raise _SourceError(f"announced {length} bytes, expected {prv.size}")
        return
    if response.status != 206:
        raise _SourceError(f"unexpected HTTP {response.status} {response.reason}".rstrip())
    match = _CONTENT_RANGE_RE.fullmatch((response.header("content-range") or "").strip())
    if match is None:
        raise _SourceError("206 without a valid Content-Range")
    start, end, total = int(match.group(1)), int(match.group(2)), match.group(3)
    if start != offset or end != prv.size - 1 or (total != "*" and int(total) != prv.size):
        raise _SourceError(
            f"sent range {start}-{end}/{total}, asked for {offset}-{prv.size - 1}/{prv.size}"
        )
    if length is not None and length != prv.size - offset:
        raise _SourceError(f"announced {length} bytes, expected {prv.size - offset}")


class _Writer:
    """A thread that hashes and appends the chunks handed to it, for one transfer.

    Measured on this machine (1 GiB over loopback, interleaved runs): a dedicated
    thread fed through a ``SimpleQueue`` beat both hashing/writing inline on the event
    loop (~1.2-1.9x) and one ``anyio.to_thread`` hop per batch (~1.5-2x), whose
    per-hop cost dominates at loopback speeds. hashlib and ``writev`` release the GIL,
    so receiving and hashing+writing run on both cores at once.

    Only the loop calls ``put``/``close``; only the thread touches the part until
    ``close`` returns. At most ``max_chunks`` chunks wait (bounded memory).
    """

    def __init__(self, part: _PartFile, max_chunks: int) -> None:
        self._part = part
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()  # None: stop
        self._room = threading.Semaphore(max_chunks)
        #: Bytes hashed and written so far (written by the thread, read by the loop).
        self.written = 0
        #: The first error the thread met; it then discards what it is given.
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="kb-download-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            chunk = self._queue.get()
            if chunk is None:
                return
            try:
                # One chunk at a time, hashed then written at once while it is still
                # in the CPU cache: batching several into one writev measured slower.
                if self.error is None:
                    self.written += self._part.write_batch((chunk,))
            except BaseException as exc:
                self.error = exc
            finally:
                self._room.release()

    async def put(self, chunk: bytes) -> None:
        """Queue ``chunk``; waits (off the loop) only while ``max_chunks`` are queued."""
        if not chunk:
            return
        if not self._room.acquire(blocking=False):
            await anyio.to_thread.run_sync(self._room.acquire)
        self._queue.put(chunk)

    async def close(self) -> None:
        """Let the thread write what is queued, then stop it and wait for it."""
        self._queue.put(None)
        with anyio.CancelScope(shield=True):
            # Shielded: after Ctrl+C the part must not be closed under the thread.
            await anyio.to_thread.run_sync(self._thread.join)


async def _pump(
    response: HttpResponse, part: _PartFile, options: ClientOptions, reporter: _Reporter
) -> int:
    """Stream the body into the part through a ``_Writer`` thread.

    Returns the number of bytes received. Raises what the transfer raised; bytes that
    arrived before a transport failure are still written (and hashed), so the next
    source continues after them with a Range.
    """
    length = response.content_length
    if length is not None and length <= _INLINE_BYTES:
        # A small body: a thread would cost more than it saves (a .prvdir of 100,000
        # small files would start 100,000 threads).
        received = 0
        async for chunk in response.iter_bytes():
            received += len(chunk)
            reporter.add(nbytes=part.write_batch((chunk,)))
        return received
    writer = _Writer(part, _QUEUED_CHUNKS)
    received = 0
    reported = 0
    step = options.progress_bytes
    transport_error: TransportError | None = None
    try:
        async for chunk in response.iter_bytes():
            received += len(chunk)
            await writer.put(chunk)
            if writer.error is not None:
                break  # wrong bytes: stop reading this source now
            if writer.written - reported >= step:
                done = writer.written
                reporter.add(nbytes=done - reported)
                reported = done
    except TransportError as exc:
        transport_error = exc
    finally:
        await writer.close()
    reporter.add(nbytes=writer.written - reported)
    if writer.error is not None:
        raise writer.error  # wrong bytes matter more than a broken connection
    if transport_error is not None:
        raise transport_error
    return received


async def _fetch(
    client: HttpClient,
    url: str,
    part: _PartFile,
    options: ClientOptions,
    reporter: _Reporter,
) -> int:
    offset = part.offset
    headers = [("Range", f"bytes={offset}-")] if offset else []
    answered = False
    try:
        async with client.stream("GET", url, headers=headers) as response:
            answered = True
            if response.status in (200, 206):
                _check_response(response, offset, part.prv)
            else:
                raise _SourceError(await _error_text(response))
            received = await _pump(response, part, options, reporter)
    except TransportError as exc:
        text = _short(str(exc)) or type(exc).__name__
        raise (_SourceError(text) if answered else _Unreachable(text)) from None
    if part.offset != part.prv.size:
        raise _SourceError(f"body ended after {part.offset} of {part.prv.size} bytes")
    return received


async def _download_from_sources(
    client: HttpClient,
    sources: Sequence[str],
    part: _PartFile,
    options: ClientOptions,
    reporter: _Reporter,
    emit: EventSink,
    label: str,
    dead: _DeadOrigins,
) -> tuple[str, int, int, list[SourceFailure]]:
    """Try ``sources`` in order until the part verifies: ``(url, resumed_from, bytes, failures)``.

    Sources on an origin in ``dead`` go last; origins that give no response are added.

    Raises:
        DownloadFailedError: every source failed (the failures are listed).
    """
    failures: list[SourceFailure] = []
    transferred = 0
    prv = part.prv
    ordered = [u for u in sources if _origin(u) not in dead]
    ordered += [u for u in sources if _origin(u) in dead]
    for url in ordered:
        retried = False
        while True:
            start = part.offset
            emit({"event": "source", "path": label, "sha1": prv.sha1, "url": url, "offset": start})
            try:
                transferred += await _fetch(client, url, part, options, reporter)
                if part.verified():
                    return url, start, transferred, failures
                raise _WrongBytes(f"sent bytes whose SHA-1 is {part.digest()}, expected {prv.sha1}")
            except _SourceError as exc:
                message = str(exc)
                wrong = isinstance(exc, _WrongBytes)
                if isinstance(exc, _Unreachable):
                    dead.add(_origin(url))
                if wrong and start > 0 and not retried:
                    # The resumed prefix may be what is wrong: give this source one
                    # more try from byte 0 before blaming it.
                    message += (
                        f"; the first {start} bytes came from an earlier source or run,"
                        " retrying from byte 0"
                    )
                    retried = True
                    again = True
                else:
                    again = False
                failures.append(SourceFailure(url, message))
                emit(
                    {
                        "event": "error",
                        "path": label,
                        "sha1": prv.sha1,
                        "url": url,
                        "message": message,
                    }
                )
                if wrong:
                    reporter.undo(part.offset)
                    await anyio.to_thread.run_sync(part.reset)
                if not again:
                    break
    raise DownloadFailedError(
        f"no source delivered {label} ({len(failures)} attempt"
        f"{'s' if len(failures) != 1 else ''} failed)",
        failures,
    )


@dataclass
class _Job:
    """One content to fetch into one or more targets (internal)."""

    prv: Prv
    label: str
    target: Path
    part: Path
    copies: list[tuple[str, Path]] = field(default_factory=list)


async def _fetch_job(
    job: _Job,
    client: HttpClient,
    options: ClientOptions,
    cache: ContentCache | None,
    reporter: _Reporter,
    emit: EventSink,
    dead: _DeadOrigins,
) -> DownloadResult:
    """Get ``job.prv``'s content to ``job.target``: empty, cache, part, then network."""
    prv = job.prv
    if prv.size == 0:
        if prv.sha1 != EMPTY_SHA1:
            raise BadInputError(
                f"{job.label}: the .prv says size 0 but its SHA-1 is not that of empty content"
            )
        await anyio.to_thread.run_sync(_write_empty, job.target)
        reporter.add(files=1)
        return DownloadResult(path=job.target, sha1=prv.sha1, size=0, origin="empty")

    part = _PartFile(job.part, prv)
    try:
        try:
            resumable = await anyio.to_thread.run_sync(part.open)
        except OSError as exc:
            raise BadInputError(f"cannot write {job.part}: {exc.strerror or exc}") from None

        if cache is not None and cache.has(prv.sha1, prv.size):
            ok = await anyio.to_thread.run_sync(part.copy_from, cache.path_for(prv.sha1))
            if ok:
                await anyio.to_thread.run_sync(part.install, job.target)
                reporter.add(files=1, nbytes=prv.size)
                return DownloadResult(path=job.target, sha1=prv.sha1, size=prv.size, origin="cache")
            cache.remove(prv.sha1)
            resumable = False

        resumed = 0
        if resumable:
            try:
                resumed = await anyio.to_thread.run_sync(part.rehash)
            except _WrongBytes:
                await anyio.to_thread.run_sync(part.reset)
                resumed = 0
            if part.verified():
                await anyio.to_thread.run_sync(part.install, job.target)
                reporter.add(files=1, nbytes=prv.size)
                if cache is not None:
                    await anyio.to_thread.run_sync(cache.add, prv.sha1, job.target)
                return DownloadResult(path=job.target, sha1=prv.sha1, size=prv.size, origin="part")
            if part.offset == prv.size:  # complete but wrong: start over
                await anyio.to_thread.run_sync(part.reset)
                resumed = 0
            reporter.add(nbytes=resumed)

        found = await find_content(client, options.hub_url, prv.sha1)
        if not found.found:
            raise NotFoundError(f"{job.label}: no node of the network has it (sha1 {prv.sha1})")
        if found.size is not None and found.size != prv.size:
            emit(
                {
                    "event": "warning",
                    "path": job.label,
                    "message": f"hub reports size {found.size}, the .prv says {prv.size}",
                }
            )
        sources = download_sources(found, options.hub_url, prv.sha1)
        url, start, transferred, failures = await _download_from_sources(
            client, sources, part, options, reporter, emit, job.label, dead
        )
        try:
            await anyio.to_thread.run_sync(part.install, job.target)
        except OSError as exc:
            raise BadInputError(f"cannot write {job.target}: {exc.strerror or exc}") from None
        reporter.add(files=1)
        if cache is not None:
            await anyio.to_thread.run_sync(cache.add, prv.sha1, job.target)
        return DownloadResult(
            path=job.target,
            sha1=prv.sha1,
            size=prv.size,
            origin="network",
            url=url,
            resumed_from=start,
            transferred=transferred,
            failures=tuple(failures),
        )
    except ClientError:
        if part.offset == 0:
            part.discard()  # nothing worth resuming: leave no empty .part behind
        raise
    except OSError as exc:
        raise BadInputError(f"cannot write {job.part}: {exc.strerror or exc}") from None
    finally:
        part.close()


def _write_empty(target: Path) -> None:
    tmp = target.with_name(target.name + ".part")
    with open(tmp, "wb"):
        pass
    os.replace(tmp, target)


def _done_event(result: DownloadResult, label: str) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event": "done",
        "path": label,
        "sha1": result.sha1,
        "size": result.size,
        "from": result.origin,
    }
    if result.url is not None:
        event["url"] = result.url
        event["resumed_from"] = result.resumed_from
        event["transferred"] = result.transferred
    return event


def _error_event(label: str, sha1: str, exc: ClientError) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event": "error",
        "fatal": True,
        "path": label,
        "sha1": sha1,
        "message": exc.message,
        "exit_code": exc.exit_code,
    }
    if isinstance(exc, DownloadFailedError):
        event["sources"] = [{"url": f.url, "error": f.error} for f in exc.failures]
    return event


def _resolve_out(prv: Prv, out: Path) -> Path:
    if out.is_dir():
        name = prv.path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
        if not is_valid_entry_name(name):
            raise BadInputError(f"{out} is a directory and the .prv names no usable file name")
        return out / name
    parent = out.parent
    if not parent.is_dir():
        raise BadInputError(f"cannot write {out}: directory {parent} does not exist")
    if out.name.endswith(".part"):
        raise BadInputError(f"OUT may not end in .part: {out}")
    return out


async def download_prv(
    prv: Prv,
    out: str | os.PathLike[str],
    options: ClientOptions,
    *,
    on_event: EventSink | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    client: HttpClient | None = None,
) -> DownloadResult:
    """Download the content of one ``.prv`` to ``out``, verified (SPEC §3.5).

    Args:
        prv: the parsed ``.prv``.
        out: the file to write; if it is an existing directory, the file is written
            inside it under the ``.prv``'s file name. ``out + ".part"`` (and
            ``out + ".part.json"``) hold an unfinished download for a later resume.
        options: hub, caches, timeouts.
        on_event: receives the events described in the module docstring.
        on_progress: called with ``(files, bytes)`` deltas (for a progress bar).
        client: an ``HttpClient`` to reuse; one is made (and closed) if None.

    Returns:
        Where the file is and how it got there.

    Raises:
        BadInputError: OUT cannot be written (exit 2).
        NotFoundError: the network has no node with the content (exit 1).
        HubUnreachableError: the hub could not be asked (exit 3).
        DownloadFailedError: every source failed; ``failures`` lists them (exit 3).
    """
    emit = on_event or _no_events
    target = _resolve_out(prv, Path(out))
    label = str(target)
    job = _Job(prv=prv, label=label, target=target, part=target.with_name(target.name + ".part"))
    cache = ContentCache(options.cache_dir) if options.cache_dir is not None else None
    reporter = _Reporter(emit, on_progress, options.progress_interval, prv.size, 1)
    present: set[str] = set()
    if prv.size:
        present = await anyio.to_thread.run_sync(
            lambda: _present([(label, target, prv)], options.hash_cache_path)
        )
    if present:
        # OUT already holds this content (re-running a finished command): keep it.
        reporter.add(files=1, nbytes=prv.size)
        result = DownloadResult(path=target, sha1=prv.sha1, size=prv.size, origin="present")
        emit(_done_event(result, label))
        return result
    own = client is None
    http = client if client is not None else make_http_client(options)
    try:
        result = await _fetch_job(job, http, options, cache, reporter, emit, set())
    except ClientError as exc:
        emit(_error_event(label, prv.sha1, exc))
        raise
    finally:
        if own:
            with anyio.CancelScope(shield=True):
                await http.aclose()
    emit(_done_event(result, label))
    return result


# --- a .prvdir -------------------------------------------------------------------------


def safe_target(out_dir: Path, relpath: str) -> Path:
    """Return ``out_dir/relpath``, creating its directories, refusing any escape.

    Every component must be a valid ``.prvdir`` entry name (no ``..``, no absolute
    path, no separator, no dot-name); an existing component that is a symlink or not
    a directory is refused rather than followed.

    Raises:
        BadInputError: the path is unsafe or a directory cannot be made.
    """
    parts = relpath.split("/")
    if not parts or not all(is_valid_entry_name(p) for p in parts):
        raise BadInputError(f"unsafe path in .prvdir: {relpath!r}")
    current = out_dir
    for name in parts[:-1]:
        current = current / name
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            try:
                os.mkdir(current, 0o755)
            except FileExistsError:
                pass
            except OSError as exc:
                raise BadInputError(f"cannot create {current}: {exc.strerror or exc}") from None
            st = os.lstat(current)
        except OSError as exc:
            raise BadInputError(f"cannot use {current}: {exc.strerror or exc}") from None
        if not stat.S_ISDIR(st.st_mode):
            what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
            raise BadInputError(f"refusing to write {relpath}: {current} is {what}")
    target = current / parts[-1]
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return target
    except OSError as exc:
        raise BadInputError(f"cannot use {target}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise BadInputError(f"cannot write {relpath}: {target} is a directory")
    return target


def _present(candidates: Sequence[tuple[str, Path, Prv]], hash_cache_path: Path | None) -> set[str]:
    """Return the relative paths among ``candidates`` whose file already has the content."""
    items: list[tuple[str, FileKey]] = []
    wanted: dict[str, tuple[str, Prv]] = {}
    for rel, target, prv in candidates:
        try:
            st = os.stat(target)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_size == prv.size:
            items.append((str(target), FileKey.from_stat(st)))
            wanted[str(target)] = (rel, prv)
    if not items:
        return set()
    cache: HashCache | None = None
    if hash_cache_path is not None:
        try:
            cache = HashCache(hash_cache_path)
        except (OSError, sqlite3.Error):
            cache = None
    present: set[str] = set()
    try:
        for result in hash_files(items, cache=cache):
            rel, prv = wanted[result.path]
            if result.digest is not None and result.digest.sha1 == prv.sha1:
                present.add(rel)
    finally:
        if cache is not None:
            cache.close()
    return present


async def download_prvdir(
    prvdir: PrvDir,
    out_dir: str | os.PathLike[str],
    options: ClientOptions,
    *,
    on_event: EventSink | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> PrvDirResult:
    """Download every file of a ``.prvdir`` into the directory ``out_dir`` (SPEC §3.5).

    Files already present with the right content are skipped; identical contents are
    fetched once; up to ``options.concurrency`` files download at once over one
    HTTP client. Partial files wait in ``out_dir/.kbucket-partial/`` for the next run.
    If the hub turns out to be unreachable, the remaining files are not attempted.

    Returns:
        What was done and what failed (``exit_code`` summarises).

    Raises:
        BadInputError: ``out_dir`` exists and is not a directory, or cannot be made.
    """
    emit = on_event or _no_events
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise BadInputError(f"OUT must be a directory for a .prvdir: {root} is a file")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInputError(f"cannot create {root}: {exc.strerror or exc}") from None

    files = list(prvdir.iter_files())
    total_bytes = sum(prv.size for _, prv in files)
    reporter = _Reporter(emit, on_progress, options.progress_interval, total_bytes, len(files))
    done: list[DownloadResult] = []
    failed: list[tuple[str, ClientError]] = []

    def fail(rel: str, sha1: str, exc: ClientError) -> None:
        failed.append((rel, exc))
        emit(_error_event(rel, sha1, exc))

    planned: list[tuple[str, Path, Prv]] = []
    for rel, prv in files:
        try:
            planned.append((rel, safe_target(root, rel), prv))
        except BadInputError as exc:
            fail(rel, prv.sha1, exc)

    # On the event loop's thread, not a worker thread: for many small files
    # hash_files forks worker processes, and forking is only safe from the thread
    # that owns the process (nothing else runs on the loop yet).
    present = _present(planned, options.hash_cache_path)
    partial_dir = root / PARTIAL_DIRNAME
    jobs: dict[str, _Job] = {}
    for rel, target, prv in planned:
        if rel in present:
            result = DownloadResult(path=target, sha1=prv.sha1, size=prv.size, origin="present")
            done.append(result)
            reporter.add(files=1, nbytes=prv.size)
            emit(_done_event(result, rel))
            continue
        job = jobs.get(prv.sha1)
        if job is None:
            part = partial_dir / f"{prv.sha1}.part"
            jobs[prv.sha1] = _Job(prv=prv, label=rel, target=target, part=part)
        else:
            job.copies.append((rel, target))
    if jobs:
        try:
            partial_dir.mkdir(exist_ok=True)
        except OSError as exc:
            raise BadInputError(f"cannot create {partial_dir}: {exc.strerror or exc}") from None

    cache = ContentCache(options.cache_dir) if options.cache_dir is not None else None
    queue = list(jobs.values())
    queue.reverse()  # pop() from the end keeps the .prvdir's order
    stop = anyio.Event()
    dead: _DeadOrigins = set()

    async def worker(http: HttpClient) -> None:
        while queue and not stop.is_set():
            job = queue.pop()
            try:
                result = await _fetch_job(job, http, options, cache, reporter, emit, dead)
            except ClientError as exc:
                fail(job.label, job.prv.sha1, exc)
                for rel, _target in job.copies:
                    fail(rel, job.prv.sha1, exc)
                if isinstance(exc, HubUnreachableError):
                    stop.set()  # every other file would fail the same way
                continue
            done.append(result)
            emit(_done_event(result, job.label))
            for rel, target in job.copies:
                copy = _Job(prv=job.prv, label=rel, target=target, part=job.part)
                ok = await anyio.to_thread.run_sync(_copy_verified, copy, job.target)
                if ok:
                    copied = DownloadResult(
                        path=target, sha1=job.prv.sha1, size=job.prv.size, origin="copy"
                    )
                    done.append(copied)
                    reporter.add(files=1, nbytes=job.prv.size)
                    emit(_done_event(copied, rel))
                else:
                    fail(rel, job.prv.sha1, BadInputError(f"cannot write {target}"))

    async with make_http_client(options) as http, anyio.create_task_group() as tg:
        for _ in range(min(options.concurrency, len(queue))):
            tg.start_soon(worker, http)
    if stop.is_set():
        for job in queue:
            skipped = HubUnreachableError(f"{job.label}: not attempted, the hub is unreachable")
            fail(job.label, job.prv.sha1, skipped)
            for rel, _target in job.copies:
                fail(rel, job.prv.sha1, skipped)
    with contextlib.suppress(OSError):
        partial_dir.rmdir()  # only if empty: partial files stay for the next run
    outcome = PrvDirResult(done=tuple(done), failed=tuple(failed))
    emit(
        {
            "event": "finished",
            "files": len(files),
            "done": len(done),
            "skipped": sum(1 for r in done if r.origin == "present"),
            "failed": len(failed),
            "exit_code": outcome.exit_code,
        }
    )
    return outcome


def _copy_verified(job: _Job, source: Path) -> bool:
    part = _PartFile(job.part.with_name(f"{job.prv.sha1}.copy.part"), job.prv)
    try:
        part.open()
        if part.copy_from(source):
            part.install(job.target)
            return True
        part.discard()
        return False
    except OSError:
        part.discard()
        return False
