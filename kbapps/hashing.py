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
  (open, fstat, read, close, Python) dominates and holds the GIL, so two threads run 2x
  *slower* than one. Instead we ``fork`` worker processes (cheap: nothing is re-imported)
  and the parent hashes a share itself; each child streams its results back over a pipe
  in batches. The split is static and interleaved, so similar files spread evenly.
* **Big files: threads.** hashlib releases the GIL for large updates, so two threads
  hash two big files at nearly twice the speed of one, and report progress as they go.
* **The cache.** A SQLite table maps ``(device, inode)`` to ``(size, mtime_ns, sha1,
  head_sha1)`` (SPEC §3.3). A lookup hits only if size and mtime also match, so an
  edited file is re-hashed; keying rows by ``(device, inode)`` means a file rewritten
  many times keeps one row. A file modified less than ``RACY_WINDOW_NS`` before we read
  it is hashed but not cached: a second write within the same mtime tick (1-2 s on
  some file systems) could otherwise leave a stale digest under an unchanged key.

The share indexer reuses this module: ``hash_file`` for one path, ``hash_files`` for a
batch of ``(path, FileKey)`` items with a progress callback, and ``HashCache`` with a
database path of its own inside ``.kbucket/``.
"""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import os
import select
import sqlite3
import stat
import struct
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

from kbproto.ids import Sha1
from kbproto.prv import FCS_HEAD_BYTES

__all__ = (
    "BIG_FILE_BYTES",
    "BUFFER_SIZE",
    "HASH_CACHE_FILENAME",
    "PARALLEL_MIN_BYTES",
    "PARALLEL_MIN_FILES",
    "RACY_WINDOW_NS",
    "FileChangedError",
    "FileDigest",
    "FileKey",
    "HashCache",
    "HashResult",
    "default_workers",
    "hash_file",
    "hash_files",
)

#: Read size, chosen by measurement: 64 KiB stays in L2 next to the page being copied
#: (1.3 GB/s); 128 KiB and up fall to 0.8-0.95 GB/s (perf-baselines §1).
BUFFER_SIZE = 64 * 1024
#: Files at least this big are hashed by threads (hashlib releases the GIL on big
#: updates) with byte-level progress; smaller ones are batched to processes.
BIG_FILE_BYTES = 4 * 1024 * 1024
#: Below this many small files (and ``PARALLEL_MIN_BYTES``), forking is not worth it:
#: 500 files of 4 KiB take ~10 ms in one process.
PARALLEL_MIN_FILES = 500
#: ... unless they add up to this many bytes (~50 ms of hashing).
PARALLEL_MIN_BYTES = 64 * 1024 * 1024
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
    fd: int, buffer: bytearray, on_bytes: Callable[[int], None] | None
) -> tuple[FileKey, FileDigest]:
    before = os.fstat(fd)
    if not stat.S_ISREG(before.st_mode):
        raise OSError(f"not a regular file (mode {stat.filemode(before.st_mode)})")
    whole = hashlib.sha1()
    head = hashlib.sha1()
    view = memoryview(buffer)
    full = len(buffer)
    total = 0
    reported = 0
    while True:
        n = os.readv(fd, (buffer,))
        if not n:
            break
        if total < FCS_HEAD_BYTES:
            head.update(view[: min(n, FCS_HEAD_BYTES - total)])
        whole.update(buffer if n == full else view[:n])
        total += n
        if on_bytes is not None and total - reported >= _PROGRESS_BYTES:
            on_bytes(total - reported)
            reported = total
    after = os.fstat(fd)
    if (
        total != before.st_size
        or after.st_size != before.st_size
        or after.st_mtime_ns != before.st_mtime_ns
    ):
        raise FileChangedError("changed while being read")
    if on_bytes is not None and total > reported:
        on_bytes(total - reported)
    return FileKey.from_stat(before), FileDigest(
        Sha1(whole.hexdigest()), Sha1(head.hexdigest()), total
    )


def _open_for_hashing(path: str | os.PathLike[str]) -> int:
    # O_NONBLOCK: if a FIFO was swapped in for a file, opening it must not hang; the
    # fstat in _hash_fd then refuses anything that is not a regular file.
    return os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)


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
    fd = _open_for_hashing(path)
    try:
        return _hash_fd(fd, buffer if buffer is not None else bytearray(BUFFER_SIZE), on_bytes)
    finally:
        os.close(fd)


def _error_text(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


# --- the cache -------------------------------------------------------------------------

_SCHEMA_VERSION = 1
#: SQLite allows 32766 host parameters; 500 keeps each statement small.
_LOOKUP_CHUNK = 500


def _i64(value: int) -> int:
    # st_dev and st_ino are unsigned 64-bit; SQLite integers are signed 64-bit.
    return value - (1 << 64) if value >= (1 << 63) else value


class HashCache:
    """A SQLite table of known digests keyed by ``FileKey`` (SPEC §3.3).

    Safe for several processes at once (WAL journal, busy timeout). Use one instance
    per thread. Entries are replaced per ``(device, inode)``, so the table holds at
    most one row per file ever hashed.

    Args:
        path: the database file; created with its parent directory if missing.
        racy_window_ns: entries whose mtime is closer than this to the time they are
            stored are not stored (see the module notes).

    Raises:
        sqlite3.Error: if the database cannot be opened or is not a database.
        OSError: if its directory cannot be created.
    """

    def __init__(self, path: str | Path, *, racy_window_ns: int = RACY_WINDOW_NS) -> None:
        self.path = Path(path)
        self.racy_window_ns = racy_window_ns
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        try:
            self._setup()
        except BaseException:
            self._db.close()
            raise

    def _setup(self) -> None:
        db = self._db
        # WAL: readers never block the writer; NORMAL sync: a crash may lose the last
        # entries (they are re-hashed), never corrupt the file.
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version != _SCHEMA_VERSION:
            db.execute("BEGIN IMMEDIATE")
            db.execute("DROP TABLE IF EXISTS file_sha1")
            db.execute(
                "CREATE TABLE file_sha1 (dev INTEGER NOT NULL, ino INTEGER NOT NULL,"
                " size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,"
                " sha1 BLOB NOT NULL, head_sha1 BLOB NOT NULL,"
                " PRIMARY KEY (dev, ino)) WITHOUT ROWID"
            )
            db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
            db.execute("COMMIT")

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def __enter__(self) -> HashCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def lookup(self, key: FileKey) -> FileDigest | None:
        """Return the cached digest for ``key``, or None if absent or stale."""
        return self.lookup_many([key]).get(key)

    def lookup_many(self, keys: Iterable[FileKey]) -> dict[FileKey, FileDigest]:
        """Return the cached digests of those ``keys`` that are present and fresh.

        Batched: one query per device and 500 inodes, ~1 µs per key.
        """
        by_device: dict[int, dict[int, FileKey]] = {}
        for key in keys:
            by_device.setdefault(key.device, {})[_i64(key.inode)] = key
        found: dict[FileKey, FileDigest] = {}
        for device, wanted in by_device.items():
            inodes = list(wanted)
            for start in range(0, len(inodes), _LOOKUP_CHUNK):
                chunk = inodes[start : start + _LOOKUP_CHUNK]
                rows = self._db.execute(
                    "SELECT ino, size, mtime_ns, sha1, head_sha1 FROM file_sha1"
                    f" WHERE dev = ? AND ino IN ({','.join('?' * len(chunk))})",
                    (_i64(device), *chunk),
                )
                for ino, size, mtime_ns, sha1, head in rows:
                    key = wanted[ino]
                    if key.size == size and key.mtime_ns == mtime_ns:
                        found[key] = FileDigest(Sha1(sha1.hex()), Sha1(head.hex()), size)
        return found

    def store_many(
        self, entries: Iterable[tuple[FileKey, FileDigest]], *, now_ns: int | None = None
    ) -> int:
        """Remember digests, in one transaction; return how many were stored.

        Entries modified within ``racy_window_ns`` of ``now_ns`` (default: the wall
        clock now) are skipped, as are entries whose digest size differs from the key.
        """
        limit = (time.time_ns() if now_ns is None else now_ns) - self.racy_window_ns
        rows = [
            (
                _i64(key.device),
                _i64(key.inode),
                key.size,
                key.mtime_ns,
                bytes.fromhex(digest.sha1),
                bytes.fromhex(digest.head_sha1),
            )
            for key, digest in entries
            if key.mtime_ns <= limit and digest.size == key.size
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

_Item = tuple[str, FileKey]
#: What a child sends per file: (index, sha1, head_sha1, size, dev, ino, size, mtime_ns)
#: on success, (index, None, error text) on failure. Plain tuples marshal fast.
_Record = tuple[object, ...]


def _hash_one_record(index: int, path: str, buffer: bytearray) -> _Record:
    try:
        key, digest = hash_file(path, buffer=buffer)
    except OSError as exc:
        return (index, None, _error_text(exc))
    return (
        index,
        digest.sha1,
        digest.head_sha1,
        digest.size,
        key.device,
        key.inode,
        key.size,
        key.mtime_ns,
    )


def _result_from_record(record: _Record, items: Sequence[_Item]) -> HashResult:
    index = record[0]
    assert isinstance(index, int)
    path, given = items[index]
    if record[1] is None:
        return HashResult(path, given, None, str(record[2]))
    sha1, head, size, dev, ino, ksize, mtime = record[1:]
    return HashResult(
        path,
        FileKey(dev, ino, ksize, mtime),  # type: ignore[arg-type]
        FileDigest(Sha1(str(sha1)), Sha1(str(head)), size),  # type: ignore[arg-type]
    )


def _child_main(wfd: int, indices: Sequence[int], items: Sequence[_Item]) -> None:
    buffer = bytearray(BUFFER_SIZE)
    batch: list[_Record] = []
    with os.fdopen(wfd, "wb", buffering=0) as pipe:

        def flush() -> None:
            blob = marshal.dumps(batch)
            pipe.write(_FRAME.pack(len(blob)) + blob)
            batch.clear()

        for index in indices:
            batch.append(_hash_one_record(index, items[index][0], buffer))
            if len(batch) >= _RESULTS_PER_MESSAGE:
                flush()
        if batch:
            flush()


class _Child:
    """One forked hashing process and the read end of its result pipe."""

    def __init__(self, indices: Sequence[int], items: Sequence[_Item]) -> None:
        self.indices = indices
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child; coverage does not follow
            code = 0
            try:
                os.close(rfd)
                _child_main(wfd, indices, items)
            except BaseException:
                code = 1
            # _exit: never run the parent's atexit handlers or flush its stdio twice.
            os._exit(code)
        os.close(wfd)
        os.set_blocking(rfd, False)
        self.pid = pid
        self.rfd = rfd
        self.pending = bytearray()
        self.done: set[int] = set()
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
            self.pending += chunk
            while len(self.pending) >= _FRAME.size:
                (length,) = _FRAME.unpack_from(self.pending)
                if len(self.pending) < _FRAME.size + length:
                    break
                blob = bytes(self.pending[_FRAME.size : _FRAME.size + length])
                del self.pending[: _FRAME.size + length]
                batch = marshal.loads(blob)
                records.extend(batch)
                self.done.update(record[0] for record in batch)
        return records

    def close(self, kill: bool) -> None:
        """Reap the child (terminating it first if ``kill``)."""
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, 15)
        os.close(self.rfd)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


def _hash_small_parallel(
    order: Sequence[int], items: Sequence[_Item], workers: int
) -> Iterator[HashResult]:
    # Static interleaved split: share k gets order[k::workers]. The parent keeps share
    # 0 and forks one child per other share; it polls the children between files.
    shares = [order[k::workers] for k in range(workers)]
    children: list[_Child] = []
    ok = False
    try:
        for share in shares[1:]:
            children.append(_Child(share, items))
        buffer = bytearray(BUFFER_SIZE)
        for count, index in enumerate(shares[0]):
            yield _result_from_record(_hash_one_record(index, items[index][0], buffer), items)
            if count % 64 == 63:
                for child in children:
                    for record in child.drain(block=False):
                        yield _result_from_record(record, items)
        for child in children:
            while not child.eof:
                for record in child.drain(block=True):
                    yield _result_from_record(record, items)
            # A child that died early (killed, out of memory) leaves work undone:
            # finish it here rather than fail.
            for index in child.indices:
                if index not in child.done:
                    record = _hash_one_record(index, items[index][0], buffer)
                    yield _result_from_record(record, items)
        ok = True
    finally:
        for child in children:
            child.close(kill=not ok)


def _hash_big_threaded(
    order: Sequence[int],
    items: Sequence[_Item],
    workers: int,
    on_bytes: Callable[[int], None],
) -> Iterator[tuple[HashResult, int]]:
    # Threads pull indices from a shared iterator; the generator's own thread reports
    # progress (callbacks never run on worker threads) and yields finished results.
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
                index = next(pending, None)
            if index is None:
                return
            path, given = items[index]
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


def hash_files(
    items: Iterable[tuple[str, FileKey]],
    *,
    cache: HashCache | None = None,
    workers: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> Generator[HashResult, None, None]:
    """Hash many files, using the cache and every core; yield one result per item.

    Args:
        items: ``(path, key)`` pairs; the key is the caller's ``stat`` of the path
            (``FileKey.from_stat``), used for the cache lookup and for planning.
        cache: where to look digests up first and store new ones; None for none.
        workers: processes (small files) or threads (big files) to use; default
            ``default_workers()``.
        on_progress: called from the iterating thread with ``(files, bytes)`` done
            since the previous call, cached files included.
        on_warning: called with a message if the cache fails (it is then ignored).

    Yields:
        One ``HashResult`` per item, in no particular order: cached ones first.
        A file that cannot be read gives a result with ``error`` set; iteration
        goes on, so the caller decides whether that is fatal. Closing the generator
        early stops the workers.
    """
    listed = list(items)
    nworkers = default_workers() if workers is None else max(1, workers)
    report = on_progress or (lambda files, nbytes: None)
    warn = on_warning or (lambda message: None)

    found: dict[FileKey, FileDigest] = {}
    if cache is not None:
        try:
            found = cache.lookup_many(key for _, key in listed)
        except sqlite3.Error as exc:
            warn(f"hash cache unusable, continuing without it: {exc}")
            cache = None
    todo: list[int] = []
    ready: list[HashResult] = []
    ready_bytes = 0
    for index, (path, key) in enumerate(listed):
        digest = found.get(key)
        if digest is not None:
            ready.append(HashResult(path, key, digest, None, True))
            ready_bytes += key.size
        else:
            todo.append(index)
    if ready:
        report(len(ready), ready_bytes)  # one call, not one per file
        yield from ready
        del ready

    # Hard links and symlinked duplicates share a key: hash each key once.
    first_of: dict[FileKey, int] = {}
    copies: dict[int, list[int]] = {}
    unique: list[int] = []
    for index in todo:
        key = listed[index][1]
        owner = first_of.setdefault(key, index)
        if owner == index:
            unique.append(index)
        else:
            copies.setdefault(owner, []).append(index)

    big = [i for i in unique if listed[i][1].size >= BIG_FILE_BYTES]
    small = [i for i in unique if listed[i][1].size < BIG_FILE_BYTES]
    small_bytes = sum(listed[i][1].size for i in small)

    fresh: list[tuple[FileKey, FileDigest]] = []

    def finish(result: HashResult, index: int, streamed: int = 0) -> Iterator[HashResult]:
        if result.digest is not None:
            fresh.append((result.key, result.digest))
        for extra in (index, *copies.get(index, ())):
            path, given = listed[extra]
            out = result if extra == index else HashResult(path, *_tail(result))
            report(1, given.size - (streamed if extra == index else 0))
            yield out
        if cache is not None and len(fresh) >= 5000:
            flush()

    def flush() -> None:
        nonlocal cache
        if cache is not None and fresh:
            try:
                cache.store_many(fresh)
            except sqlite3.Error as exc:
                warn(f"hash cache unusable, continuing without it: {exc}")
                cache = None
        fresh.clear()

    try:
        index_of = {listed[i][0]: i for i in unique}
        parallel = (
            nworkers > 1
            and hasattr(os, "fork")
            and (len(small) >= PARALLEL_MIN_FILES or small_bytes >= PARALLEL_MIN_BYTES)
        )
        if parallel:
            small_results: Iterator[HashResult] = _hash_small_parallel(small, listed, nworkers)
        else:
            buffer = bytearray(BUFFER_SIZE)
            small_results = (
                _result_from_record(_hash_one_record(i, listed[i][0], buffer), listed)
                for i in small
            )
        for result in small_results:
            yield from finish(result, index_of[result.path])

        if big:
            # Bytes are reported as they stream (a 10 GiB file must move the bar);
            # finish() then reports the rest of the file's size.
            if len(big) == 1 or nworkers == 1:
                buffer = bytearray(BUFFER_SIZE)
                for i in big:
                    path, given = listed[i]
                    moved = [0]

                    def count(n: int, moved: list[int] = moved) -> None:
                        moved[0] += n
                        report(0, n)

                    try:
                        key, digest = hash_file(path, buffer=buffer, on_bytes=count)
                        result = HashResult(path, key, digest)
                    except OSError as exc:
                        result = HashResult(path, given, None, _error_text(exc))
                    yield from finish(result, i, moved[0])
            else:
                threaded = _hash_big_threaded(
                    big, listed, min(nworkers, len(big)), lambda n: report(0, n)
                )
                for result, moved_bytes in threaded:
                    yield from finish(result, index_of[result.path], moved_bytes)
    finally:
        # Also when the caller stops early: what was hashed is still worth keeping.
        flush()


def _tail(result: HashResult) -> tuple[FileKey, FileDigest | None, str | None, bool]:
    return result.key, result.digest, result.error, result.cached
