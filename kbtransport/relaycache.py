"""A hub's relay cache: verified content by SHA-1 on disk, bounded, least recently used out.

Strategy
--------
A hub passes on what its shares send. ``RelayCache`` keeps a copy of whole bodies it
proxied, so the next request for that content is answered from the hub's disk
(``docs/protocol.md``, "Relay cache"). The rules:

* **Only verified content enters.** A fill (``CacheFill``) writes into a private
  temporary (``tmp/``, opened ``O_CREAT|O_EXCL|O_NOFOLLOW``, mode 0600). It becomes an
  entry (``objects/<sha1>``, by ``rename``) only in ``CacheFill.commit``, which is
  given the SHA-1 of the bytes that were written (the proxy's content check computed
  it; nothing is hashed twice) and checks it and the size against the id; the file
  is ``fsync``-ed first, so a crash never leaves a named entry with unwritten bytes.
* **Trusted after a restart by its record.** Right after the rename, the entry's
  ``(size, mtime_ns, inode)`` is recorded in ``cache.sqlite``. An entry is served
  only while its open file still has exactly that record (checked on the open
  descriptor, ``fstat``); anything else is dropped, never re-served. This is sound
  because the directory is the hub's own (0700, under the hub's ``.kbucket/``):
  whoever could rewrite a file there keeping its size, inode and nanosecond mtime
  could as well replace the hub's key. Any write through the file system (an edit,
  a truncation, a partial copy) changes the mtime; a deleted or replaced file
  changes the inode or is missing.
* **Bounded.** Entries plus the fills in progress stay within ``bound`` bytes: room
  is made when a fill begins, by dropping least recently used entries; a fill that
  cannot fit (larger than the bound, or the disk would keep less than
  ``_MIN_FREE_FRACTION`` free) does not begin, and the body is proxied uncached. At
  most ``MAX_FILLS`` fills run at once. A write that fails (the disk is full) drops
  the fill; the proxied response goes on.
* **Never through a symlink.** A cache directory (or its ``objects``/``tmp``) that is
  a symlink is refused (``CacheDirError``); files are opened ``O_NOFOLLOW``.

Everything here runs on the event loop (a hub's one thread for its routes) but the
writes of large bodies and the ``fsync`` of a commit. Once a fill gets a chunk of
``_THREAD_MIN_BYTES`` or more, its chunks are written in order by the pool threads
of ``kbtransport._ordered`` (shared with the content check's hashing; several queued
chunks go in one ``writev``), at most ``_MAX_QUEUED`` of them waiting: a write into
the page cache costs ~0.2 CPU s per GiB where the kernel reuses its pages, up to
~2.5 where it takes memory never used before (measured in the benchmark's virtual
machine; ``docs/benchmarks.md``, "Relay cache in hubs"), and on the loop it held up
every other transfer of the hub. ``commit`` waits for those writes first; ``abort``
waits for the one in progress (a lock: the descriptor's number must not be reused
under it) and drops the rest.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import anyio

from kbtransport._ordered import OrderedWork
from kbtransport._signal import Signal

__all__ = (
    "DEFAULT_CACHE_SIZE",
    "MAX_FILLS",
    "CacheDirError",
    "CacheFill",
    "CacheStats",
    "RelayCache",
)

#: The default bound: a few datasets' worth, small next to a hub's disk (kbnode.json's
#: ``cache_size`` or ``--cache-size`` change it; 0 turns caching off).
DEFAULT_CACHE_SIZE = 1024**3
#: Fills in progress at once: each holds a temporary of up to its content's size.
MAX_FILLS = 16
#: Never leave the cache's file system with less than this fraction free.
_MIN_FREE_FRACTION = 0.05
_DB_NAME = "cache.sqlite"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS entries ("
    "sha1 TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,"
    " inode INTEGER NOT NULL, used INTEGER NOT NULL)"
)
_HEX = frozenset("0123456789abcdef")
#: A fill writes on the event loop until a chunk this large arrives (then in a pool
#: thread): a thread hop costs more than writing a small body to the page cache.
_THREAD_MIN_BYTES = 64 * 1024
#: Chunks (each at most 1 MiB from the proxy) of one fill waiting to be written.
_MAX_QUEUED = 4


class CacheDirError(Exception):
    """The cache directory cannot be used (a symlink, not a directory, unreadable)."""


@dataclass(slots=True, kw_only=True)
class CacheStats:
    """What the cache counts since the process started (nodeinfo's ``cache``).

    Attributes:
        hits: requests answered from the cache (or joined to a fill in progress).
        misses: requests for content the cache did not hold.
        bytes_served: body bytes of answers from the cache.
        fills: entries added.
        fills_dropped: fills abandoned (a failed upstream, a wrong hash, a full disk).
    """

    hits: int = 0
    misses: int = 0
    bytes_served: int = 0
    fills: int = 0
    fills_dropped: int = 0


@dataclass(frozen=True, slots=True)
class _Entry:
    size: int
    mtime_ns: int
    inode: int


def _is_sha1(text: str) -> bool:
    return len(text) == 40 and _HEX.issuperset(text)


def _private_dir(path: Path) -> None:
    """Create ``path`` (0700) if missing; refuse it if it is a symlink or not a dir."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise CacheDirError(f"{path}: cannot create the cache directory: {exc.strerror}") from None
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise CacheDirError(f"{path}: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise CacheDirError(f"{path}: the cache directory is a symlink; refusing to use it")
    if not stat.S_ISDIR(st.st_mode):
        raise CacheDirError(f"{path}: the cache path is not a directory")


class RelayCache:
    """Verified content by SHA-1 under ``root``, within ``bound`` bytes (module docstring).

    Use ``RelayCache.open``; ``close`` when the hub stops.

    Attributes:
        root: the cache directory.
        bound: the most bytes entries and fills in progress may hold together.
        stats: the counters (``CacheStats``).
    """

    def __init__(self, root: Path, bound: int, db: sqlite3.Connection) -> None:
        self.root = root
        self.bound = bound
        self.stats = CacheStats()
        #: Called with ``(sha1, size)`` when an entry is added, ``(sha1, None)`` when
        #: it goes (the hub announces what it holds, ``Node.note_cached``).
        self.on_change: Callable[[str, int | None], None] | None = None
        self._db = db
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._fills: dict[str, CacheFill] = {}
        self._claims: dict[str, anyio.Event] = {}
        self._size = 0
        self._used = 0

    @classmethod
    def open(cls, root: Path, bound: int) -> RelayCache:
        """Open (creating) the cache at ``root`` and check its entries.

        Temporaries left by a stopped process are removed; an entry whose file is
        missing or whose ``(size, mtime_ns, inode)`` differs from its record is
        dropped, as is a file with no record; then entries beyond ``bound`` go.

        Raises:
            CacheDirError: ``root`` (or a directory in it) is a symlink or unusable,
                or its database cannot be opened.
        """
        if bound < 0:
            raise ValueError("the cache bound must be >= 0")
        _private_dir(root)
        _private_dir(root / "objects")
        _private_dir(root / "tmp")
        db_path = root / _DB_NAME
        if db_path.is_symlink():
            raise CacheDirError(f"{db_path}: is a symlink; refusing to use it")
        try:
            db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(_SCHEMA)
            rows = db.execute(
                "SELECT sha1, size, mtime_ns, inode, used FROM entries ORDER BY used"
            ).fetchall()
        except sqlite3.Error as exc:
            raise CacheDirError(f"{db_path}: cannot use the cache database: {exc}") from None
        cache = cls(root, bound, db)
        cache._load(rows)
        return cache

    def _load(self, rows: list[tuple[str, int, int, int, int]]) -> None:
        for name in os.listdir(self.root / "tmp"):
            with contextlib.suppress(OSError):
                os.unlink(self.root / "tmp" / name)
        for sha1, size, mtime_ns, inode, used in rows:
            entry = _Entry(size, mtime_ns, inode)
            self._entries[sha1] = entry
            self._size += size
            self._used = max(self._used, used)
            if self._stat_of(sha1) != entry:
                self._drop(sha1)
        for name in os.listdir(self.root / "objects"):
            if name not in self._entries:
                with contextlib.suppress(OSError):
                    os.unlink(self.root / "objects" / name)
        self._make_room(0)

    def close(self) -> None:
        """Abort the fills in progress and close the database (idempotent)."""
        for fill in list(self._fills.values()):
            fill.abort()
        with contextlib.suppress(sqlite3.Error):
            self._db.close()

    # --- what it holds ------------------------------------------------------------------

    @property
    def entries(self) -> int:
        """The number of entries."""
        return len(self._entries)

    @property
    def size(self) -> int:
        """The entries' total size in bytes."""
        return self._size

    @property
    def reserved(self) -> int:
        """Bytes set aside for the fills in progress."""
        return sum(fill.size for fill in self._fills.values())

    def sizes(self) -> list[tuple[str, int]]:
        """Every entry as ``(sha1, size)``, least recently used first."""
        return [(sha1, entry.size) for sha1, entry in self._entries.items()]

    def __contains__(self, sha1: object) -> bool:
        return sha1 in self._entries

    def path_for(self, sha1: str) -> Path:
        """Where the entry of ``sha1`` is (always opened ``O_NOFOLLOW``)."""
        return self.root / "objects" / sha1

    def _stat_of(self, sha1: str) -> _Entry | None:
        try:
            st = os.stat(self.path_for(sha1), follow_symlinks=False)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return _Entry(st.st_size, st.st_mtime_ns, st.st_ino)

    def open_entry(self, sha1: str) -> tuple[BinaryIO, int] | None:
        """The entry of ``sha1`` opened for reading, and its size; None if there is no
        entry, or its file no longer matches its record (the entry is then dropped).

        The caller owns the file. Using an entry makes it the most recently used.
        """
        entry = self._entries.get(sha1)
        if entry is None:
            return None
        try:
            fd = os.open(self.path_for(sha1), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            self._drop(sha1)
            return None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or _Entry(st.st_size, st.st_mtime_ns, st.st_ino) != entry:
            os.close(fd)
            self._drop(sha1)
            return None
        self._touch(sha1)
        return os.fdopen(fd, "rb"), entry.size

    def claim(self, sha1: str) -> bool:
        """Take the right to fetch ``sha1`` upstream (single flight): True if nobody
        holds it and no fill of it runs. ``release`` it once the fetch began its fill
        (``begin``) or turned out not to fill; others ``wait_claim`` meanwhile."""
        if sha1 in self._claims or sha1 in self._fills:
            return False
        self._claims[sha1] = anyio.Event()
        return True

    def release(self, sha1: str) -> None:
        """Give back the claim on ``sha1``, waking those waiting on it (idempotent)."""
        event = self._claims.pop(sha1, None)
        if event is not None:
            event.set()

    async def wait_claim(self, sha1: str, timeout: float) -> None:
        """Wait until the claim on ``sha1`` is released (at most ``timeout`` seconds)."""
        event = self._claims.get(sha1)
        if event is not None:
            with anyio.move_on_after(timeout):
                await event.wait()

    def fill_in_progress(self, sha1: str) -> CacheFill | None:
        """The fill of ``sha1`` in progress, if any (for single-flight joiners)."""
        return self._fills.get(sha1)

    # --- bookkeeping --------------------------------------------------------------------

    def _touch(self, sha1: str) -> None:
        self._entries.move_to_end(sha1)
        self._used += 1
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("UPDATE entries SET used=? WHERE sha1=?", (self._used, sha1))

    def _drop(self, sha1: str) -> None:
        entry = self._entries.pop(sha1, None)
        if entry is not None:
            self._size -= entry.size
            if self.on_change is not None:
                self.on_change(sha1, None)
        with contextlib.suppress(OSError):
            os.unlink(self.path_for(sha1))
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("DELETE FROM entries WHERE sha1=?", (sha1,))

    def _make_room(self, size: int) -> bool:
        """Drop least recently used entries until ``size`` more bytes fit the bound;
        False (nothing dropped) if they cannot fit even with the cache empty."""
        reserved = self.reserved
        if size + reserved > self.bound:
            return False
        while self._entries and self._size + reserved + size > self.bound:
            self._drop(next(iter(self._entries)))
        return True

    def _disk_has_room(self, size: int) -> bool:
        try:
            vfs = os.statvfs(self.root)
        except OSError:
            return False
        free = vfs.f_bavail * vfs.f_frsize
        return free - size >= _MIN_FREE_FRACTION * vfs.f_blocks * vfs.f_frsize

    # --- filling ------------------------------------------------------------------------

    def begin(self, sha1: str, size: int) -> CacheFill | None:
        """Start a fill for content ``sha1`` of ``size`` bytes; None if caching is off,
        the content is held or being filled, it cannot fit, ``MAX_FILLS`` run, or the
        temporary cannot be created."""
        if (
            self.bound == 0
            or not _is_sha1(sha1)
            or size < 0
            or sha1 in self._entries
            or sha1 in self._fills
            or len(self._fills) >= MAX_FILLS
            or not self._disk_has_room(size)
            or not self._make_room(size)
        ):
            return None
        temp = self.root / "tmp" / f"{sha1}.{secrets.token_hex(8)}.part"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(temp, flags, 0o600)
        except OSError:
            return None
        fill = CacheFill(self, sha1, size, temp, fd)
        self._fills[sha1] = fill
        return fill

    def _finished(self, fill: CacheFill) -> None:
        if self._fills.get(fill.sha1) is fill:
            del self._fills[fill.sha1]

    def _record(self, sha1: str, entry: _Entry) -> None:
        self._used += 1
        self._entries[sha1] = entry
        self._size += entry.size
        self._db.execute(
            "INSERT OR REPLACE INTO entries (sha1, size, mtime_ns, inode, used)"
            " VALUES (?, ?, ?, ?, ?)",
            (sha1, entry.size, entry.mtime_ns, entry.inode, self._used),
        )
        if self.on_change is not None:
            self.on_change(sha1, entry.size)


class CacheFill:
    """One content being written into the cache (``RelayCache.begin``).

    The writer calls ``write`` with the body's bytes in order, then ``commit`` with the
    SHA-1 they hashed to, or ``abort``. Joiners (other requests for the same content)
    read the temporary through ``open_reader`` up to ``written`` bytes and wait on
    ``wait`` for more; ``failed`` tells them the fill was dropped.

    Attributes:
        sha1: the content id.
        size: the content's size (the ``Content-Length`` announced).
        written: bytes written so far.
        committed: True once the entry exists.
        failed: True once the fill was dropped.
    """

    def __init__(self, cache: RelayCache, sha1: str, size: int, temp: Path, fd: int) -> None:
        self.sha1 = sha1
        self.size = size
        self.written = 0
        self.committed = False
        self.failed = False
        self._cache = cache
        self._temp = temp
        self._fd: int | None = fd
        self._waiters: list[Signal] = []
        #: Bytes given to ``write`` (``written`` counts those in the file).
        self._put = 0
        self._queue: OrderedWork | None = None
        self._lock = threading.Lock()

    @property
    def done(self) -> bool:
        """True once committed or failed."""
        return self.committed or self.failed

    @property
    def writing(self) -> bool:
        """True while bytes given to ``write`` are not all in the file yet (a pool
        thread writes them), and the fill goes on."""
        queue = self._queue
        return (
            self._fd is not None
            and self._put > self.written
            and queue is not None
            and queue.error is None
        )

    def _wake(self) -> None:
        for signal in self._waiters:
            signal.set()

    async def wait(self, signal: Signal) -> None:
        """Wait (with ``signal``, one per joiner) until more bytes arrive or the fill ends."""
        self._waiters.append(signal)
        try:
            await signal.wait()
        finally:
            self._waiters.remove(signal)

    def open_reader(self) -> int | None:
        """A read-only descriptor of the temporary (the joiner closes it); it stays
        valid after the rename into the cache. None if the fill is over."""
        if self.done:
            return None
        try:
            return os.open(self._temp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None

    async def write(self, data: bytes) -> None:
        """Append ``data``; a failed write (disk full) or more bytes than ``size``
        drops the fill (it never raises). Small bodies are written at once; from the
        first chunk of ``_THREAD_MIN_BYTES`` on, a pool thread writes while the loop
        goes on (``written`` counts what is in the file), and this waits only while
        ``_MAX_QUEUED`` chunks wait to be written."""
        if self._fd is None:
            return
        if self._queue is not None and self._queue.error is not None:
            self.abort()
            return
        if self._put + len(data) > self.size:
            self.abort()
            return
        self._put += len(data)
        if self._queue is None and len(data) < _THREAD_MIN_BYTES:
            try:
                self._write([data])
            except OSError:
                self.abort()
                return
        else:
            if self._queue is None:
                self._queue = OrderedWork(self._write, _MAX_QUEUED)
            await self._queue.put(data)
        self._wake()

    def _write(self, chunks: list[bytes]) -> None:
        """Write ``chunks`` at the end of the temporary (on the loop, or in the one pool
        thread writing for this fill); the lock keeps ``abort`` from closing the
        descriptor under a write (its number could be reused by another file)."""
        with self._lock:
            fd = self._fd
            if fd is None:
                return
            views = [memoryview(chunk) for chunk in chunks if chunk]
            while views:
                done = os.writev(fd, views)
                self.written += done
                while views and done >= len(views[0]):
                    done -= len(views.pop(0))
                if views:
                    views[0] = views[0][done:]

    async def commit(self, digest: str) -> bool:
        """Make the fill an entry if ``digest`` (the SHA-1 of the bytes written) is its
        id and every byte arrived; else drop it. Returns True if the entry exists."""
        fd = self._fd
        if fd is None:
            return False
        cache = self._cache
        try:
            if self._queue is not None:
                await self._queue.finish()
            if self._fd is None:  # aborted meanwhile (the hub stopping)
                return False
            if (
                digest != self.sha1
                or self.written != self.size
                or (self._queue is not None and self._queue.error is not None)
            ):
                self.abort()
                return False
            self._fd = None
            await anyio.to_thread.run_sync(os.fsync, fd)
            os.close(fd)
            fd = -1
            os.rename(self._temp, cache.path_for(self.sha1))
            st = os.stat(cache.path_for(self.sha1), follow_symlinks=False)
            cache._record(self.sha1, _Entry(st.st_size, st.st_mtime_ns, st.st_ino))
        except BaseException as exc:
            # A failed write or database, or the hub stopping during the wait for the
            # writes or the fsync: no entry, no temporary left behind.
            if self._fd is not None:
                self.abort()
                raise
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(self._temp)
            cache._drop(self.sha1)
            self._fail()
            if isinstance(exc, OSError | sqlite3.Error):
                return False
            raise
        self.committed = True
        cache.stats.fills += 1
        cache._finished(self)
        self._wake()
        return True

    def abort(self) -> None:
        """Drop the fill (idempotent; nothing after ``commit`` succeeded). A write in
        progress in a pool thread ends first (the lock); what is queued is dropped."""
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(self._temp)
        self._fail()

    def _fail(self) -> None:
        self.failed = True
        self._cache.stats.fills_dropped += 1
        self._cache._finished(self)
        self._wake()
