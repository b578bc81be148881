"""SHA-1 of files, on all cores, remembered in a SQLite hash cache.

Strategy
--------
Every file is read once: each chunk feeds the whole-file SHA-1, and the first 1000
bytes also feed the ``original_fcs`` SHA-1 (SPEC §2.1). The numbers behind the choices
are in ``/shared/reference/perf-baselines.md`` and ``docs/benchmarks.md``:

* **64 KiB reads into one reused buffer.** hashlib on this machine reaches ~1.3 GB/s
  with 64 KiB ``readinto`` but only ~0.9 GB/s with 1 MiB or larger buffers: once the
  buffer leaves the 1 MiB L2 cache, the kernel's copy out of the page cache gets three
  times dearer. One buffer per worker, reused, so no allocation per chunk.
* **Small files: processes, not threads.** For files of a few KiB the per-file work
  (stat, open, fstat, read, close, Python) dominates and holds the GIL, so two threads
  run 2x *slower* than one. Instead we ``fork`` worker processes (cheap: nothing is
  re-imported). The items are cut into chunks whose numbers go into a pipe; every
  process, the parent included, claims the next chunk by reading 4 bytes from it, so
  the load balances itself. A worker ``stat``-s the files whose key it was not given
  (so the walk's dominant cost is spread too), looks the chunk up in the cache with
  one query, hashes the misses, stores them through its own SQLite connection and
  streams its results back over a pipe.
* **Big files: threads.** Workers hand files of ``BIG_FILE_BYTES`` or more back to the
  parent, which hashes them with threads (hashlib releases the GIL for large updates,
  so two threads hash two big files at nearly twice the speed of one) and reports
  their bytes as they stream, so a progress bar moves during a 10 GiB file.
* **The cache.** A SQLite table maps ``(device, inode)`` to ``(size, mtime_ns, sha1,
  head_sha1)`` (SPEC §3.3). A lookup hits only if size and mtime also match, so an
  edited file is re-hashed; keying rows by ``(device, inode)`` means a file rewritten
  many times keeps one row. A file modified less than ``RACY_WINDOW_NS`` before we read
  it is hashed but not cached: a second write within the same mtime tick (1-2 s on
  some file systems) could otherwise leave a stale digest under an unchanged key.
  When the cache holds no digest at all when a run starts (a first run), workers skip
  the lookups and the ``stat`` taken for the lookup key: the ``fstat`` of the open
  file gives the key. Beside the database, one checksummed file per scanned tree
  holds ``kbapps.prvbuild``'s per-directory ``.prvdir`` fragments, with the keys and
  digests of that tree's small files (``load_fragments``/``store_fragments``): for
  those, ``kb-prv-create`` writes no SQLite row (a row costs ~3-5 us, a fifth of
  hashing a 4 KiB file). ``HashCache(lazy=True)`` opens the database only when used.

The share indexer reuses this module: ``hash_file`` for one path; ``hash_files`` for a
batch of ``(path, FileKey or None)`` items with progress and warning callbacks, or
``hash_records`` for the same as batches of plain tuples (cheaper per file); and
``HashCache`` with a database path of its own inside ``.kbucket/``.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import select
import stat
import struct
import time
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple


class _LazyModule:
    """Stands for a module until one of its attributes is first used, then imports it
    and puts it in the importing module's globals in its place.

    For start-up time: ``sqlite3`` (with ``datetime``) and ``hashlib`` (with
    OpenSSL) cost ~8 ms to import, and a cached ``kb-prv-create`` of a tree needs
    neither (its fragment file answers).
    """

    def __init__(self, name: str, namespace: dict[str, Any]) -> None:
        self._name = name
        self._namespace = namespace

    def __getattr__(self, attribute: str) -> Any:
        module = __import__(self._name)
        self._namespace[self._name] = module
        return getattr(module, attribute)


if TYPE_CHECKING:
    import hashlib
    import sqlite3
    import threading

    from kbproto.ids import Sha1
else:
    hashlib = _LazyModule("hashlib", globals())
    sqlite3 = _LazyModule("sqlite3", globals())
    # Only for big files: ~1 ms of start-up saved for the rest.
    threading = _LazyModule("threading", globals())
    # kbproto.ids.Sha1 is a NewType of str (the identity when called): importing it
    # would import kbproto.ids, and with it random, on every start-up (~2 ms).
    Sha1 = str

#: Bytes, or a read-only view of some (what ``load_fragments`` returns).
_Buffer = bytes | memoryview

__all__ = (
    "BIG_FILE_BYTES",
    "BUFFER_SIZE",
    "FCS_HEAD_BYTES",
    "HASH_CACHE_FILENAME",
    "PARALLEL_MIN_FILES",
    "RACY_WINDOW_NS",
    "FileChangedError",
    "FileDigest",
    "FileKey",
    "FragmentWriter",
    "HashCache",
    "HashResult",
    "RawResult",
    "default_workers",
    "hash_file",
    "hash_files",
    "hash_records",
)

#: ``kbproto.prv.FCS_HEAD_BYTES`` (a test checks it): ``original_fcs`` covers this many
#: leading bytes. Repeated so that hashing never imports kbproto.prv (see prvbuild).
FCS_HEAD_BYTES = 1000
#: Read size, chosen by measurement: 64 KiB stays in L2 next to the page being copied
#: (1.3 GB/s); 128 KiB and up fall to 0.8-0.95 GB/s (perf-baselines §1).
BUFFER_SIZE = 64 * 1024
#: Files at least this big are hashed by threads (hashlib releases the GIL on big
#: updates) with byte-level progress; smaller ones are batched to processes.
BIG_FILE_BYTES = 4 * 1024 * 1024
#: Below this many files, forking is not worth it: 500 files of 4 KiB take ~10 ms in
#: one process (big files among them still get threads).
PARALLEL_MIN_FILES = 500
#: A file whose mtime is this close to the time we hashed it is not cached (see above).
RACY_WINDOW_NS = 2_000_000_000
#: Name of the per-user cache database inside ``kbapps.cachedir.user_cache_dir()``.
HASH_CACHE_FILENAME = "hashes.sqlite3"

#: Results a child sends per pipe message: small enough to keep progress flowing,
#: big enough that framing costs nothing.
_RESULTS_PER_MESSAGE = 128
#: Progress is reported every this many bytes while hashing one big file.
_PROGRESS_BYTES = 16 * 1024 * 1024
_FRAME = struct.Struct("!I")


# The three record types below are NamedTuples rather than frozen dataclasses: one of
# each is made per file (100,000s per run), and tuple construction and hashing are
# several times cheaper. They are just as immutable.


class FileKey(NamedTuple):
    """What identifies one version of a file for the hash cache (SPEC §3.3).

    Attributes:
        device: ``st_dev``.
        inode: ``st_ino``.
        size: ``st_size`` in bytes.
        mtime_ns: ``st_mtime_ns``.
    """

    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def from_stat(cls, st: os.stat_result) -> FileKey:
        """Return the key of a ``stat`` result."""
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class FileDigest(NamedTuple):
    """The digests of one file's content.

    Attributes:
        sha1: SHA-1 of all bytes (the content id).
        head_sha1: SHA-1 of the first ``FCS_HEAD_BYTES`` bytes (all, if fewer).
        size: the number of bytes hashed.
    """

    sha1: Sha1
    head_sha1: Sha1
    size: int


class FileChangedError(OSError):
    """The file changed (size or mtime) while it was being read."""


class HashResult(NamedTuple):
    """The outcome for one item given to ``hash_files``.

    Attributes:
        path: the path, as given.
        key: the key of the content that was hashed (taken with ``fstat`` on the open
            file, so it may differ from the key given if the file changed since), or
            the key given when the result came from the cache or on error.
        digest: the digests, or None on error.
        error: on failure, a short reason (``Permission denied``, ``changed while
            being read``...); None on success.
        cached: True if the digest came from the cache and no byte was read.
    """

    path: str
    key: FileKey
    digest: FileDigest | None
    error: str | None = None
    cached: bool = False


def default_workers() -> int:
    """Return the number of CPUs this process may run on (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


# --- one file --------------------------------------------------------------------------


def _hash_fd(
    fd: int,
    buffer: bytearray,
    view: memoryview,
    on_bytes: Callable[[int], None] | None,
    before: os.stat_result | None = None,
) -> tuple[str, str, int, int, int, int, int]:
    # Returns (sha1, head_sha1, bytes hashed, dev, ino, size, mtime_ns) as plain values:
    # this runs once per file, and for 4 KiB files Python overhead is half the cost.
    # ``before``: the caller's fstat of fd, if it took one.
    if before is None:
        before = os.fstat(fd)
    if not stat.S_ISREG(before.st_mode):
        raise OSError(f"not a regular file (mode {stat.filemode(before.st_mode)})")
    size = before.st_size
    full = len(buffer)
    n = os.readv(fd, (buffer,))
    if n == size and n < full:
        # The whole file came in one read (most small files): no second read for EOF.
        # Growth after the fstat would have made n differ; growth or a rewrite after
        # the read shows in the second fstat below.
        if n <= FCS_HEAD_BYTES:
            whole_hex = head_hex = hashlib.sha1(view[:n]).hexdigest()
        else:
            # One object: the head's state is the prefix of the whole's.
            digest = hashlib.sha1(view[:FCS_HEAD_BYTES])
            head_hex = digest.hexdigest()
            digest.update(view[FCS_HEAD_BYTES:n])
            whole_hex = digest.hexdigest()
        total = n
    else:
        whole = hashlib.sha1()
        head = hashlib.sha1()
        total = 0
        reported = 0
        while n:
            if total < FCS_HEAD_BYTES:
                head.update(view[: min(n, FCS_HEAD_BYTES - total)])
            whole.update(buffer if n == full else view[:n])
            total += n
            if on_bytes is not None and total - reported >= _PROGRESS_BYTES:
                on_bytes(total - reported)
                reported = total
            n = os.readv(fd, (buffer,))
        if on_bytes is not None and total > reported:
            on_bytes(total - reported)
        whole_hex = whole.hexdigest()
        head_hex = head.hexdigest()
    after = os.fstat(fd)
    if total != size or after.st_size != size or after.st_mtime_ns != before.st_mtime_ns:
        raise FileChangedError("changed while being read")
    return whole_hex, head_hex, total, before.st_dev, before.st_ino, size, before.st_mtime_ns


#: O_NONBLOCK: if a FIFO was swapped in for a file, opening it must not hang; the
#: fstat in _hash_fd then refuses anything that is not a regular file.
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC


def _open_for_hashing(path: str | os.PathLike[str]) -> int:
    return os.open(path, _OPEN_FLAGS)


def hash_file(
    path: str | os.PathLike[str],
    *,
    buffer: bytearray | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> tuple[FileKey, FileDigest]:
    """Hash one file in a single pass (whole-file and first-1000-byte SHA-1).

    Args:
        path: the file; symlinks are followed.
        buffer: a reusable read buffer (``BUFFER_SIZE`` is the measured best); a new
            one is made if omitted.
        on_bytes: called with the number of bytes read since the last call, about
            every 16 MiB and at the end (for progress bars).

    Returns:
        ``(key, digest)``: the key from ``fstat`` of the open file, and the digests.

    Raises:
        FileChangedError: if the size or mtime changed while reading.
        OSError: if the file cannot be opened or read, or is not a regular file.
    """
    if buffer is None:
        buffer = bytearray(BUFFER_SIZE)
    fd = _open_for_hashing(path)
    try:
        sha1, head, total, dev, ino, size, mtime_ns = _hash_fd(
            fd, buffer, memoryview(buffer), on_bytes
        )
    finally:
        os.close(fd)
    return FileKey(dev, ino, size, mtime_ns), FileDigest(Sha1(sha1), Sha1(head), total)


def _error_text(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


# --- the cache -------------------------------------------------------------------------

#: 2 added a ``dir_files`` table; 3 moved those fragments out to files (see
#: ``HashCache.store_fragments``).
_SCHEMA_VERSION = 3
#: Directory, beside the database, of the per-tree fragment files.
_FRAGMENT_DIR = "prvdir-fragments"
#: First bytes of a fragment file.
_FRAGMENT_MAGIC = b"kbucket-fragments-5\n"
#: A fragment file: the magic, the CRC-32 of everything after this head, the size of
#: the index (a marshal dump of ``(scope, [(relpath, (len keys, len fragment, len
#: digests))])``), then every directory's three parts in index order, then the index
#: (last, so that the parts can be written as they are made: ``FragmentWriter``).
_FRAGMENT_HEAD = struct.Struct(f"!{len(_FRAGMENT_MAGIC)}sII")
#: SQLite allows 32766 host parameters; 500 keeps each statement small.
_LOOKUP_CHUNK = 500


def _i64(value: int) -> int:
    # st_dev and st_ino are unsigned 64-bit; SQLite integers are signed 64-bit.
    return value - (1 << 64) if value >= (1 << 63) else value


class FragmentWriter:
    """Writes one tree's fragment file a directory at a time (see
    ``HashCache.store_fragments``): beside the target, renamed over it by ``commit``;
    ``abort`` (or a failed ``add``) leaves the old file as it was.

    Raises:
        OSError: from the constructor, ``add`` or ``commit``, if the file cannot be
            written.
    """

    def __init__(self, scope: str, target: str) -> None:
        self._scope = scope
        self._target = target
        self._tmp: str | None = f"{target}.{os.getpid()}.tmp"
        self._index: list[tuple[str, tuple[int, int, int]]] = []
        self._crc = 0
        # The head is written last, over this placeholder (its CRC covers the rest).
        self._handle: Any = open(self._tmp, "wb")  # noqa: SIM115 - closed by commit/abort
        try:
            self._handle.write(bytes(_FRAGMENT_HEAD.size))
        except OSError:
            self.abort()
            raise

    def identity(self) -> tuple[int, int]:
        """``(st_dev, st_ino)`` of the file being written."""
        st = os.fstat(self._handle.fileno())
        return st.st_dev, st.st_ino

    def add(self, relpath: str, keys: _Buffer, fragment: _Buffer, digests: _Buffer) -> None:
        """Append one directory's parts (opaque to this class)."""
        if self._tmp is None:
            raise OSError("fragment file already committed or aborted")
        try:
            self._handle.writelines((keys, fragment, digests))
        except OSError:
            self.abort()
            raise
        for piece in (keys, fragment, digests):
            self._crc = zlib.crc32(piece, self._crc)
        self._index.append((relpath, (len(keys), len(fragment), len(digests))))

    def commit(self) -> int:
        """Write the index and the head and put the file in place; return the
        number of directories."""
        if self._tmp is None:
            raise OSError("fragment file already committed or aborted")
        try:
            index_blob = marshal.dumps((self._scope, self._index))
            crc = zlib.crc32(index_blob, self._crc)
            self._handle.write(index_blob)
            self._handle.seek(0)
            self._handle.write(_FRAGMENT_HEAD.pack(_FRAGMENT_MAGIC, crc, len(index_blob)))
            self._handle.close()
            os.replace(self._tmp, self._target)
        except OSError:
            self.abort()
            raise
        self._tmp = None
        return len(self._index)

    def abort(self) -> None:
        """Drop what was written (no effect after ``commit``)."""
        if self._tmp is None:
            return
        tmp, self._tmp = self._tmp, None
        with contextlib.suppress(OSError):
            self._handle.close()
        with contextlib.suppress(OSError):
            os.unlink(tmp)


class HashCache:
    """A SQLite table of known digests keyed by ``FileKey`` (SPEC §3.3).

    Safe for several processes at once (WAL journal, busy timeout). Use one instance
    per thread. Entries are replaced per ``(device, inode)``, so the table holds at
    most one row per file ever hashed.

    Args:
        path: the database file; created with its parent directory if missing.
        racy_window_ns: entries whose mtime is closer than this to the time they are
            stored are not stored (see the module notes).
        lazy: open the database only when first needed (then the errors below come
            from that first call instead).

    Raises:
        sqlite3.Error: if the database cannot be opened or is not a database.
        OSError: if its directory cannot be created.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        racy_window_ns: int = RACY_WINDOW_NS,
        lazy: bool = False,
    ) -> None:
        # A string, not a Path: pathlib costs a few ms of kb-prv-create's start-up.
        self.path = os.fspath(path)
        self.racy_window_ns = racy_window_ns
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        if not lazy:
            self._connect()

    def _connect(self) -> sqlite3.Connection:
        # With lazy=True the database is opened (or created, ~10 ms with its schema)
        # only when first used: a kb-prv-create of a tree of small files may need it
        # for nothing (their digests go to the fragment file).
        if self._conn is None:
            if self._closed:
                raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
            db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
            try:
                self._setup(db)
            except BaseException:
                db.close()
                raise
            self._conn = db
        return self._conn

    def _absent(self) -> bool:
        # Lazy, and the database was never created: nothing stored, and reading must
        # not create it.
        return self._conn is None and not self._closed and not os.path.exists(self.path)

    @property
    def _db(self) -> sqlite3.Connection:
        return self._connect()

    def _setup(self, db: sqlite3.Connection) -> None:
        # WAL: readers never block the writer; NORMAL sync: a crash may lose the last
        # entries (they are re-hashed), never corrupt the file.
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version == _SCHEMA_VERSION:
            return
        db.execute("BEGIN IMMEDIATE")
        # 2 -> 3 only moved the directory fragments out to files: keep the digests.
        if version != 2:
            db.execute("DROP TABLE IF EXISTS file_sha1")
        db.execute("DROP TABLE IF EXISTS dir_files")
        db.execute(
            "CREATE TABLE IF NOT EXISTS file_sha1 (dev INTEGER NOT NULL,"
            " ino INTEGER NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,"
            " sha1 BLOB NOT NULL, head_sha1 BLOB NOT NULL,"
            " PRIMARY KEY (dev, ino)) WITHOUT ROWID"
        )
        db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        db.execute("COMMIT")

    def close(self) -> None:
        """Close the database; later calls raise ``sqlite3.ProgrammingError``."""
        self._closed = True
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> HashCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def has_files(self) -> bool:
        """Return whether any file digest is stored (a fresh cache has none, and
        then lookups can be skipped altogether)."""
        if self._absent():
            return False
        return self._db.execute("SELECT 1 FROM file_sha1 LIMIT 1").fetchone() is not None

    def _fragment_file(self, scope: str) -> str:
        # 64 bits of checksums name the file (no hashlib to import); the file holds
        # its scope, so two trees whose names collide only evict each other.
        text = scope.encode("utf-8", "surrogatepass")
        name = f"{zlib.crc32(text):08x}{zlib.adler32(text):08x}.bin"
        return os.path.join(os.path.dirname(self.path), _FRAGMENT_DIR, name)

    def load_fragments(self, scope: str) -> dict[str, tuple[_Buffer, _Buffer, _Buffer]]:
        """Return the directory fragments stored for ``scope`` (a tree's real path):
        ``relpath -> (keys, fragment, digests)`` as given to ``store_fragments`` (as
        read-only buffers over the file, which compare equal to the bytes), or an
        empty dict if there are none or the file is damaged (its checksum is checked,
        so a torn write reads as none)."""
        # One read into one buffer, and views into it: a cached run pastes these bytes
        # into its output without another copy. (Not mmap: a file truncated by
        # someone else while mapped would kill the process with SIGBUS.)
        try:
            with open(self._fragment_file(scope), "rb", buffering=0) as handle:
                data = memoryview(handle.read())
        except OSError:
            return {}
        head = _FRAGMENT_HEAD.size
        if len(data) < head or data[: len(_FRAGMENT_MAGIC)] != _FRAGMENT_MAGIC:
            return {}
        _, crc, index_size = _FRAGMENT_HEAD.unpack_from(data)
        end = len(data) - index_size
        if end < head or zlib.crc32(data[head:]) != crc:
            return {}
        try:
            stored_scope, index = marshal.loads(data[end:])
            if stored_scope != scope:
                return {}
            table: dict[str, tuple[_Buffer, _Buffer, _Buffer]] = {}
            at = head
            for relpath, sizes in index:
                parts = []
                for size in sizes:
                    parts.append(data[at : at + size])
                    at += size
                table[relpath] = (parts[0], parts[1], parts[2])
        except (EOFError, ValueError, TypeError):  # not what we write
            return {}
        return table if at == end else {}

    def store_fragments(
        self, scope: str, rows: Iterable[tuple[str, _Buffer, _Buffer, _Buffer]]
    ) -> int:
        """Replace the directory fragments of ``scope`` with ``rows`` (``(relpath,
        keys, fragment, digests)``, opaque to this class); return how many. The caller
        keeps out what must not be trusted later (files inside the racy window).

        The fragments (the finished ``.prvdir`` text, ~350 bytes per file) live in one
        file per tree beside the database, not in it: SQLite took ~0.1 s to store the
        7 MB of a 20,000-file tree, one write of a file takes a few ms. A checksum
        (CRC-32: it guards against torn writes, not attacks; the directory is the
        user's own, mode 0700) makes a damaged file read as absent, and a lost one
        costs a re-hash of that tree at worst, never a wrong digest; so no fsync.

        Raises:
            OSError: if the file cannot be written.
        """
        writer = self.fragment_writer(scope)
        try:
            for row in rows:
                writer.add(*row)
            return writer.commit()
        finally:
            writer.abort()  # (after a commit: nothing left to do)

    def fragment_writer(self, scope: str) -> FragmentWriter:
        """Return a ``FragmentWriter`` that replaces the fragments of ``scope`` once
        committed (``store_fragments`` a directory at a time, as they are made).

        Raises:
            OSError: if the file cannot be created.
        """
        target = self._fragment_file(scope)
        with contextlib.suppress(FileExistsError):
            os.mkdir(os.path.dirname(target), mode=0o700)
        return FragmentWriter(scope, target)

    def lookup(self, key: FileKey) -> FileDigest | None:
        """Return the cached digest for ``key``, or None if absent or stale."""
        return self.lookup_many([key]).get(key)

    def lookup_many(self, keys: Iterable[FileKey]) -> dict[FileKey, FileDigest]:
        """Return the cached digests of those ``keys`` that are present and fresh.

        Batched: one query per device and 500 inodes.
        """
        wanted = list(keys)
        raw = self.lookup_raw(wanted)
        return {
            key: FileDigest(Sha1(raw[key][0]), Sha1(raw[key][1]), key.size)
            for key in wanted
            if key in raw
        }

    def lookup_raw(
        self, keys: Iterable[tuple[int, int, int, int]]
    ) -> dict[tuple[int, int, int, int], tuple[str, str]]:
        """Like ``lookup_many`` with plain tuples: ``(dev, ino, size, mtime_ns)`` ->
        ``(sha1, head_sha1)``. For hot loops, where building ``FileKey`` and
        ``FileDigest`` objects costs more than the lookup itself."""
        by_device: dict[int, dict[int, tuple[int, int, int, int]]] = {}
        for key in keys:
            inode = key[1]
            wanted = by_device.get(key[0])
            if wanted is None:
                wanted = by_device[key[0]] = {}
            # st_ino is unsigned 64-bit; SQLite integers are signed.
            wanted[inode if inode < 1 << 63 else inode - (1 << 64)] = key
        found: dict[tuple[int, int, int, int], tuple[str, str]] = {}
        if not by_device or self._absent():
            return found
        execute = self._db.execute
        for device, wanted in by_device.items():
            inodes = list(wanted)
            for start in range(0, len(inodes), _LOOKUP_CHUNK):
                chunk = inodes[start : start + _LOOKUP_CHUNK]
                rows = execute(
                    "SELECT ino, size, mtime_ns, sha1, head_sha1 FROM file_sha1"
                    f" WHERE dev = ? AND ino IN ({','.join('?' * len(chunk))})",
                    (_i64(device), *chunk),
                )
                for ino, size, mtime_ns, sha1, head in rows:
                    key = wanted[ino]
                    if key[2] == size and key[3] == mtime_ns:
                        found[key] = (sha1.hex(), head.hex())
        return found

    def store_many(
        self, entries: Iterable[tuple[FileKey, FileDigest]], *, now_ns: int | None = None
    ) -> int:
        """Remember digests, in one transaction; return how many were stored.

        Entries modified within ``racy_window_ns`` of ``now_ns`` (default: the wall
        clock now) are skipped, as are entries whose digest size differs from the key.
        """
        return self.store_raw(
            [(*key, digest.sha1, digest.head_sha1, digest.size) for key, digest in entries],
            now_ns=now_ns,
        )

    def store_raw(
        self,
        entries: Iterable[tuple[int, int, int, int, str, str, int]],
        *,
        now_ns: int | None = None,
    ) -> int:
        """``store_many`` with plain tuples ``(dev, ino, size, mtime_ns, sha1,
        head_sha1, bytes hashed)``, for hot loops."""
        limit = (time.time_ns() if now_ns is None else now_ns) - self.racy_window_ns
        rows = [
            (_i64(dev), _i64(ino), size, mtime, bytes.fromhex(sha1), bytes.fromhex(head))
            for dev, ino, size, mtime, sha1, head, hashed in entries
            if mtime <= limit and hashed == size
        ]
        if rows:
            with self._transaction():
                self._db.executemany(
                    "INSERT OR REPLACE INTO file_sha1 VALUES (?, ?, ?, ?, ?, ?)", rows
                )
        return len(rows)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")


# --- many files ------------------------------------------------------------------------
#
# The work is cut into chunks of consecutive items (files of one directory stay
# together). With several workers, the chunk numbers are written into a pipe up front
# and every process (the parent and its forked children) claims the next chunk by
# reading 4 bytes from it: reads of at most PIPE_BUF bytes are atomic, so this is a
# lock-free work queue that balances itself (the parent, busy with results, simply
# claims fewer chunks). A chunk is: stat the files whose key is unknown, one batched
# cache lookup, hash the misses, store them in the cache (each process has its own
# connection), and report one record per file.

_Item = tuple[str, "FileKey | None"] | tuple[str, "FileKey | None", Any, Any]
#: Records, plain tuples so they marshal fast:
#: ``(index, "ok", sha1, head, size, dev, ino, key size, mtime_ns, cached)``,
#: ``(index, "err", reason)``, ``(index, "big", dev, ino, size, mtime_ns)`` for a big file
#: left to the parent (threads, byte progress), and ``(-1, "warn", message)``.
_Record = tuple[Any, ...]
_CHUNK = struct.Struct("!I")
#: Chunk size bounds: small enough for smooth progress and balance, and few enough
#: chunk numbers to fit in a pipe's buffer (64 KiB = 16384 numbers) without blocking.
_MIN_CHUNK_FILES = 64
#: Digests are stored in transactions of this many rows: one per chunk would make
#: hundreds of small transactions (and lock hand-offs between workers).
_STORE_BATCH = 4096
_MAX_CHUNKS = 8192


class _ChunkWorker:
    """Processes chunks in one process, with its own buffer and cache connection."""

    def __init__(
        self,
        items: Sequence[_Item],
        cache: HashCache | None,
        defer_big: bool,
        lookups: bool = True,
    ) -> None:
        self.items = items
        self.cache = cache
        #: False when the cache held no digest when the run began: nothing to find.
        self.lookups = lookups
        self.defer_big = defer_big
        self.buffer = bytearray(BUFFER_SIZE)
        self.view = memoryview(self.buffer)
        #: (dev, ino, size, mtime_ns, sha1, head_sha1, bytes hashed) not yet stored.
        self.fresh: list[tuple[int, int, int, int, str, str, int]] = []

    def _cache_failed(self, exc: sqlite3.Error, out: list[_Record]) -> None:
        out.append((-1, "warn", f"hash cache unusable, continuing without it: {exc}"))
        self.cache = None

    def _process_unkeyed(self, indices: Iterable[int]) -> list[_Record]:
        # Nothing to look up (the cache was empty, or there is none): skip the stat
        # taken for the lookup key and let the fstat of the open file give the key.
        # This loop is the whole cost of a first run over many small files.
        out: list[_Record] = []
        append = out.append
        items, buffer, view, fresh = self.items, self.buffer, self.view, self.fresh
        store = self.cache is not None
        defer_big = self.defer_big
        for index in indices:
            path = items[index][0]
            try:
                fd = _open_for_hashing(path)
            except OSError as exc:
                append((index, "err", _error_text(exc)))
                continue
            try:
                before = os.fstat(fd)
                if defer_big and before.st_size >= BIG_FILE_BYTES and stat.S_ISREG(before.st_mode):
                    append(
                        (index, "big", before.st_dev, before.st_ino, before.st_size,
                         before.st_mtime_ns)
                    )  # fmt: skip
                    continue
                sha1, head, total, dev, ino, size, mtime_ns = _hash_fd(
                    fd, buffer, view, None, before
                )
            except OSError as exc:
                append((index, "err", _error_text(exc)))
                continue
            finally:
                os.close(fd)
            append((index, "ok", sha1, head, total, dev, ino, size, mtime_ns, False))
            if store:
                fresh.append((dev, ino, size, mtime_ns, sha1, head, total))
        if len(fresh) >= _STORE_BATCH:
            self.flush(out)
        return out

    def process(self, indices: Sequence[int]) -> list[_Record]:
        """Return the records of the items at ``indices``."""
        if not self.lookups or self.cache is None:
            # Items whose key was given keep the path below (it hashes hard links once).
            items = self.items
            unkeyed = [index for index in indices if items[index][1] is None]
            out = self._process_unkeyed(unkeyed)
            if len(unkeyed) == len(indices):
                return out
            unkeyed_set = set(unkeyed)
            return out + self._process_keyed(i for i in indices if i not in unkeyed_set)
        return self._process_keyed(indices)

    def _process_keyed(self, indices: Iterable[int]) -> list[_Record]:
        # Plain tuples throughout: this loop runs once per file, and a NamedTuple costs
        # ten times a tuple to build. FileKey compares and hashes like its tuple.
        out: list[_Record] = []
        keyed: list[tuple[int, str, tuple[int, int, int, int]]] = []
        items = self.items
        for index in indices:
            item = items[index]  # (path, key, ...): longer tuples are fine
            path, given = item[0], item[1]
            if given is None:
                try:
                    st = os.stat(path)
                except OSError as exc:
                    out.append((index, "err", _error_text(exc)))
                    continue
                keyed.append((index, path, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)))
            else:
                keyed.append((index, path, given))
        found: dict[tuple[int, int, int, int], tuple[str, str]] = {}
        if self.cache is not None and self.lookups:
            try:
                found = self.cache.lookup_raw([key for _, _, key in keyed])
            except sqlite3.Error as exc:
                self._cache_failed(exc, out)
        fresh = self.fresh
        done: dict[tuple[int, int, int, int], _Record] = {}  # hard links: hash once
        for index, path, key in keyed:
            hit = found.get(key)
            if hit is not None:
                out.append((index, "ok", hit[0], hit[1], key[2], *key, True))
                continue
            if self.defer_big and key[2] >= BIG_FILE_BYTES:
                out.append((index, "big", *key))
                continue
            same = done.get(key)
            if same is not None:
                out.append((index, *same[1:]))
                continue
            try:
                fd = _open_for_hashing(path)
                try:
                    sha1, head, total, dev, ino, size, mtime_ns = _hash_fd(
                        fd, self.buffer, self.view, None
                    )
                finally:
                    os.close(fd)
            except OSError as exc:
                out.append((index, "err", _error_text(exc)))
                continue
            record = (index, "ok", sha1, head, total, dev, ino, size, mtime_ns, False)
            done[key] = record
            out.append(record)
            fresh.append((dev, ino, size, mtime_ns, sha1, head, total))
        if len(fresh) >= _STORE_BATCH:
            self.flush(out)
        return out

    def flush(self, out: list[_Record]) -> None:
        """Store the digests computed so far in the cache, in one transaction."""
        if self.fresh and self.cache is not None:
            try:
                self.cache.store_raw(self.fresh)
            except sqlite3.Error as exc:
                self._cache_failed(exc, out)
        self.fresh.clear()


def _claim(queue_fd: int) -> int | None:
    data = os.read(queue_fd, _CHUNK.size)
    if len(data) < _CHUNK.size:
        return None  # the queue is empty (its writer is closed)
    return int(_CHUNK.unpack(data)[0])


def _send_frame(pipe: Any, records: list[_Record]) -> None:
    # One frame per message: its length, then a marshal dump (fast for plain tuples).
    blob = marshal.dumps(records)
    pipe.write(_FRAME.pack(len(blob)) + blob)


def _child_main(
    queue_fd: int, result_fd: int, worker: _ChunkWorker, chunks: Sequence[range]
) -> None:
    with os.fdopen(result_fd, "wb", buffering=0) as pipe:

        def send(records: list[_Record]) -> None:
            _send_frame(pipe, records)

        while (chunk := _claim(queue_fd)) is not None:
            send(worker.process(chunks[chunk]))
        last: list[_Record] = []
        worker.flush(last)
        if last:
            send(last)


class _Child:
    """One forked worker process and the read end of its result pipe.

    Args:
        body: run in the child with the write end of the result pipe, to which it
            sends frames (``_FRAME`` length, then a marshal dump of a list); the child
            exits when it returns (status 1 if it raised).
    """

    def __init__(self, body: Callable[[int], None]) -> None:
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child; coverage does not follow
            code = 0
            try:
                os.close(rfd)
                body(wfd)
            except BaseException:
                code = 1
            # _exit: never run the parent's atexit handlers or flush its stdio twice.
            os._exit(code)
        os.close(wfd)
        os.set_blocking(rfd, False)
        self.pid = pid
        self.rfd = rfd
        self.pending = bytearray()
        self.eof = False

    def drain(self, block: bool) -> list[_Record]:
        """Return the records that have arrived; with ``block``, wait for at least one
        message or EOF."""
        records: list[_Record] = []
        while not self.eof:
            try:
                chunk = os.read(self.rfd, 1 << 20)
            except BlockingIOError:
                if records or not block:
                    break
                select.select([self.rfd], [], [])
                continue
            if not chunk:
                self.eof = True
                break
            pending = self.pending
            pending += chunk
            # Frames are read in place (a 20,000-file tree sends ~7 MB of text this
            # way): no copy per frame, one move of what is left at the end.
            at = 0
            while len(pending) - at >= _FRAME.size:
                (length,) = _FRAME.unpack_from(pending, at)
                end = at + _FRAME.size + length
                if len(pending) < end:
                    break
                with memoryview(pending) as view:
                    records.extend(marshal.loads(view[at + _FRAME.size : end]))
                at = end
            if at:
                del pending[:at]
        return records

    def close(self, kill: bool) -> None:
        """Reap the child (terminating it first if ``kill``)."""
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, 15)
        os.close(self.rfd)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


def _chunks(count: int) -> list[range]:
    size = max(_MIN_CHUNK_FILES, -(-count // _MAX_CHUNKS))
    return [range(start, min(start + size, count)) for start in range(0, count, size)]


def _run_chunks(
    items: Sequence[_Item], cache: HashCache | None, workers: int
) -> Iterator[list[_Record]]:
    """Yield batches of records for every item, using ``workers`` processes."""
    chunks = _chunks(len(items))
    lookups = True
    if cache is not None:
        with contextlib.suppress(sqlite3.Error):  # the lookups will fail and say so
            lookups = cache.has_files()
    parent = _ChunkWorker(items, cache, defer_big=True, lookups=lookups)
    if workers <= 1 or len(chunks) < 2 or not hasattr(os, "fork"):
        try:
            for indices in chunks:
                yield parent.process(indices)
            last: list[_Record] = []
            parent.flush(last)
            if last:
                yield last
        finally:
            parent.flush([])  # after an early close: keep what was hashed
        return
    queue_r, queue_w = os.pipe()
    children: list[_Child] = []
    ok = False
    try:
        payload = b"".join(_CHUNK.pack(n) for n in range(len(chunks)))
        view = memoryview(payload)
        while view:  # fits in the pipe buffer (<= 32 KiB), so this never blocks
            view = view[os.write(queue_w, view) :]
        os.close(queue_w)
        queue_w = -1
        cache_path = cache.path if cache is not None else None
        racy = cache.racy_window_ns if cache is not None else RACY_WINDOW_NS

        def body(result_fd: int) -> None:  # pragma: no cover - runs in the child
            cache = None
            if cache_path is not None:
                # Never use the parent's connection across fork: open our own.
                try:
                    cache = HashCache(cache_path, racy_window_ns=racy)
                except (OSError, sqlite3.Error):
                    cache = None
            worker = _ChunkWorker(items, cache, defer_big=True, lookups=lookups)
            _child_main(queue_r, result_fd, worker, chunks)

        for _ in range(min(workers, len(chunks)) - 1):
            children.append(_Child(body))
        seen = bytearray(len(items))  # which items got a record, for crash recovery
        while (chunk := _claim(queue_r)) is not None:
            records = parent.process(chunks[chunk])
            for child in children:
                records += child.drain(block=False)
            for record in records:
                if record[0] >= 0:
                    seen[record[0]] = 1
            yield records
        for child in children:
            while not child.eof:
                records = child.drain(block=True)
                for record in records:
                    if record[0] >= 0:
                        seen[record[0]] = 1
                yield records
        # A child that died (killed, out of memory) leaves items without a record:
        # do them here rather than fail.
        missing = [index for index, flag in enumerate(seen) if not flag]
        if missing:
            yield parent.process(missing)
        last = []
        parent.flush(last)
        if last:
            yield last
        ok = True
    finally:
        parent.flush([])
        if queue_w >= 0:
            os.close(queue_w)
        os.close(queue_r)
        for child in children:
            child.close(kill=not ok)


def _hash_big_threaded(
    order: Sequence[tuple[str, FileKey]],
    workers: int,
    on_bytes: Callable[[int], None],
) -> Iterator[tuple[HashResult, int]]:
    # Threads pull items from a shared iterator; the generator's own thread reports
    # progress (callbacks never run on worker threads) and yields finished results
    # with the number of bytes already reported for each.
    lock = threading.Lock()
    pending = iter(order)
    finished: list[tuple[HashResult, int]] = []
    progress = [0]
    stop = threading.Event()
    wake = threading.Event()

    def work() -> None:
        buffer = bytearray(BUFFER_SIZE)
        streamed = [0]

        def count(n: int) -> None:
            streamed[0] += n
            with lock:
                progress[0] += n
            wake.set()

        while not stop.is_set():
            with lock:
                item = next(pending, None)
            if item is None:
                return
            path, given = item
            streamed[0] = 0
            try:
                key, digest = hash_file(path, buffer=buffer, on_bytes=count)
                result = HashResult(path, key, digest)
            except OSError as exc:
                result = HashResult(path, given, None, _error_text(exc))
            with lock:
                finished.append((result, streamed[0]))
            wake.set()

    threads = [threading.Thread(target=work, daemon=True) for _ in range(workers)]
    for thread in threads:
        thread.start()
    try:
        while True:
            alive = any(thread.is_alive() for thread in threads)
            wake.wait(0.1)
            wake.clear()
            with lock:
                done, finished[:] = finished[:], []
                moved, progress[0] = progress[0], 0
            if moved:
                on_bytes(moved)
            yield from done
            if not alive and not done:
                break
    finally:
        stop.set()
        for thread in threads:
            thread.join()


_NO_KEY = (0, 0, 0, 0)

#: One result of ``hash_records``, a plain tuple: ``(index, sha1, head_sha1, size,
#: key, cached, error)``. On success ``error`` is None; on failure ``sha1`` and
#: ``head_sha1`` are None and ``error`` says why. ``key`` is a ``(dev, ino, size,
#: mtime_ns)`` tuple (equal to the ``FileKey`` of the same values).
RawResult = tuple[int, Sha1 | None, Sha1 | None, int, tuple[int, int, int, int], bool, str | None]


def hash_records(
    items: Sequence[_Item],
    *,
    cache: HashCache | None = None,
    workers: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> Generator[list[RawResult], None, None]:
    """``hash_files`` for bulk callers: yield batches of ``RawResult`` tuples.

    Same arguments and behaviour as ``hash_files``, except that ``items`` must be a
    sequence (results name items by index), whose tuples may carry two more fields of
    the caller's (so a scanner's own records can be passed as they are), and results
    come as plain tuples in batches, which saves building three objects per file.
    """
    nworkers = default_workers() if workers is None else max(1, workers)
    # Forking pays off only for many files; threads for big files need no minimum.
    processes = nworkers if len(items) >= PARALLEL_MIN_FILES else 1
    report = on_progress or (lambda files, nbytes: None)
    warn = on_warning or (lambda message: None)
    warned = False
    big: list[tuple[int, FileKey]] = []

    for records in _run_chunks(items, cache, processes):
        batch: list[RawResult] = []
        nbytes = 0
        for record in records:
            kind = record[1]
            if kind == "ok":
                index, _, sha1, head, size, dev, ino, ksize, mtime, cached = record
                batch.append((index, sha1, head, size, (dev, ino, ksize, mtime), cached, None))
                nbytes += size
            elif kind == "err":
                index = record[0]
                given = items[index][1]
                batch.append((index, None, None, 0, given or _NO_KEY, False, record[2]))
            elif kind == "big":
                big.append((record[0], FileKey(*record[2:])))
            elif not warned:  # "warn": report the first cache failure only
                warned = True
                warn(str(record[2]))
        if batch:
            report(len(batch), nbytes)
            yield batch

    if not big:
        return
    fresh: list[tuple[FileKey, FileDigest]] = []
    index_of = {items[index][0]: index for index, _ in big}

    def finish(result: HashResult, moved: int) -> list[RawResult]:
        index = index_of[result.path]
        digest = result.digest
        report(1, (digest.size if digest else 0) - moved)
        if digest is None:
            return [(index, None, None, 0, result.key, False, result.error)]
        fresh.append((result.key, digest))
        return [(index, digest.sha1, digest.head_sha1, digest.size, result.key, False, None)]

    try:
        # Bytes are reported as they stream (a 10 GiB file must move the bar), and
        # the rest of each file's size when it is done.
        if len(big) == 1 or nworkers == 1:
            buffer = bytearray(BUFFER_SIZE)
            for index, given in big:
                path = items[index][0]
                moved = [0]

                def count(n: int, moved: list[int] = moved) -> None:
                    moved[0] += n
                    report(0, n)

                try:
                    key, digest = hash_file(path, buffer=buffer, on_bytes=count)
                    result = HashResult(path, key, digest)
                except OSError as exc:
                    result = HashResult(path, given, None, _error_text(exc))
                yield finish(result, moved[0])
        else:
            order = [(items[index][0], given) for index, given in big]
            threads = min(nworkers, len(big))
            for result, moved_bytes in _hash_big_threaded(order, threads, lambda n: report(0, n)):
                yield finish(result, moved_bytes)
    finally:
        if fresh and cache is not None:
            try:
                cache.store_many(fresh)
            except sqlite3.Error as exc:
                warn(f"hash cache unusable, continuing without it: {exc}")


def hash_files(
    items: Iterable[tuple[str, FileKey | None]],
    *,
    cache: HashCache | None = None,
    workers: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> Generator[HashResult, None, None]:
    """Hash many files, using the cache and every core; yield one result per item.

    Args:
        items: ``(path, key)`` pairs. ``key`` is the caller's ``stat`` of the path
            (``FileKey.from_stat``), or None to let the workers ``stat`` it, which
            spreads that cost over all cores too.
        cache: where to look digests up first and store new ones (each worker process
            opens its own connection to ``cache.path``); None for no cache.
        workers: processes to use (and threads for big files); default
            ``default_workers()``. Fewer than ``PARALLEL_MIN_FILES`` items are done in
            this process.
        on_progress: called from the iterating thread with ``(files, bytes)`` done
            since the previous call, cached files included.
        on_warning: called with a message if the cache fails (it is then ignored).

    Yields:
        One ``HashResult`` per item, in no particular order. A file that cannot be
        read gives a result with ``error`` set (and, if it could not even be
        ``stat``-ed and no key was given, a key of zeros); iteration goes on, so the
        caller decides whether that is fatal. Closing the generator early stops the
        workers; digests computed so far are still stored in the cache.
    """
    listed = list(items)
    batches = hash_records(
        listed, cache=cache, workers=workers, on_progress=on_progress, on_warning=on_warning
    )
    try:
        for batch in batches:
            for index, sha1, head, size, key, cached, error in batch:
                digest = None if sha1 is None or head is None else FileDigest(sha1, head, size)
                yield HashResult(listed[index][0], FileKey(*key), digest, error, cached)
    finally:
        batches.close()
