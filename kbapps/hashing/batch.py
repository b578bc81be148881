"""Hashing many files: the small ones on the process pool, the big ones on threads,
every digest looked up in and stored to the hash cache.

Strategy
--------
* **Small files: processes.** For files of a few KiB the per-file work (stat, open,
  read, fstat, close, Python) dominates and holds the GIL, so the items are cut into
  units of ``_UNIT_FILES`` consecutive files (files of one directory stay together)
  and done on ``kbapps.hashing.pool`` (this process and its workers). A unit is: stat
  the files whose key is unknown, one batched cache lookup, hash the misses, store
  them in the cache (each process has its own connection), one record per file.
* **Big files: threads.** Workers hand files of ``BIG_FILE_BYTES`` or more back to the
  caller, which hashes them on threads (hashlib releases the GIL for large updates,
  so two threads hash two big files at nearly twice the speed of one) and reports
  their bytes as they stream, so a progress bar moves during a 10 GiB file.
* **A first run.** When the cache holds no digest at all when a run starts, workers
  skip the lookups and the ``stat`` taken for the lookup key: the ``fstat`` of the
  open file gives the key.

``hash_files`` yields a ``HashResult`` per item; ``hash_records`` yields the same as
batches of plain tuples (cheaper per file), for callers of 100,000 files.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from kbapps.hashing import digest
from kbapps.hashing.cache import RACY_WINDOW_NS, HashCache, RawKey, is_database_error
from kbapps.hashing.digest import FileDigest, FileHasher, FileKey, error_text
from kbapps.hashing.pool import ProcessPool

if TYPE_CHECKING:
    from kbproto.ids import Sha1

__all__ = (
    "BIG_FILE_BYTES",
    "HashResult",
    "RawResult",
    "hash_files",
    "hash_records",
)

#: Files at least this big are hashed by threads (hashlib releases the GIL on big
#: updates) with byte-level progress; smaller ones are done on the process pool.
BIG_FILE_BYTES = 4 * 1024 * 1024
#: Files per unit of work: small enough for smooth progress and balance.
_UNIT_FILES = 64
#: Digests are stored in transactions of this many rows: one per unit would make
#: hundreds of small transactions (and lock hand-offs between workers).
_STORE_BATCH = 4096
_NO_KEY = (0, 0, 0, 0)


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


#: One result of ``hash_records``, a plain tuple: ``(index, sha1, head_sha1, size,
#: key, cached, error, digest list)``. On success ``error`` is None; on failure
#: ``sha1``, ``head_sha1`` and the digest list are None and ``error`` says why.
#: ``key`` is a ``(dev, ino, size, mtime_ns)`` tuple (equal to the ``FileKey`` of the
#: same values).
RawResult = tuple[
    int, "Sha1 | None", "Sha1 | None", int, RawKey, bool, "str | None", "bytes | None"
]
#: An item: ``(path, key or None)``, or longer tuples whose first two fields are those
#: (so a scanner's own records can be passed as they are).
_Item = tuple[str, "FileKey | None"] | tuple[str, "FileKey | None", Any, Any]
#: A unit of work: ``(index, path, key or None)`` per file, plain tuples (marshal).
_Unit = list[tuple[int, str, "RawKey | None"]]
#: Records, plain tuples so they marshal fast:
#: ``(index, "ok", sha1, head, size, dev, ino, key size, mtime_ns, cached, digest list)``,
#: ``(index, "err", reason)``, ``(index, "big", dev, ino, size, mtime_ns)`` for a big
#: file left to the caller (threads, byte progress), and ``(-1, "warn", message)``.
_Record = tuple[Any, ...]


class _UnitWorker:
    """Does units in one process, with its own buffer and cache connection (the
    pool's ``Worker``)."""

    def __init__(self, cache: HashCache | None, lookups: bool) -> None:
        self.cache = cache
        #: False when the cache held no digest when the run began: nothing to find.
        self.lookups = lookups
        self.hasher = FileHasher()
        #: (dev, ino, size, mtime_ns, sha1, head_sha1, bytes hashed, digest list) not
        #: yet stored.
        self.fresh: list[tuple[int, int, int, int, str, str, int, bytes | None]] = []

    def process(self, unit: _Unit) -> list[_Record]:
        """Return the records of the files of ``unit``."""
        if not self.lookups or self.cache is None:
            # Items whose key was given keep the path below (it hashes hard links once).
            unkeyed = [item for item in unit if item[2] is None]
            out = self._process_unkeyed(unkeyed)
            if len(unkeyed) < len(unit):
                out += self._process_keyed([item for item in unit if item[2] is not None])
        else:
            out = self._process_keyed(unit)
        if len(self.fresh) >= _STORE_BATCH:
            self._flush(out)
        return out

    def finish(self) -> list[_Record]:
        """Store what is left in the cache; return a warning record if that failed."""
        out: list[_Record] = []
        self._flush(out)
        return out

    def _cache_failed(self, exc: Exception, out: list[_Record]) -> None:
        if not is_database_error(exc):
            raise exc
        out.append((-1, "warn", f"hash cache unusable, continuing without it: {exc}"))
        self.cache = None

    def _process_unkeyed(self, unit: _Unit) -> list[_Record]:
        # Nothing to look up (the cache was empty, or there is none): skip the stat
        # taken for the lookup key and let the fstat of the open file give the key.
        # This loop is the whole cost of a first run over many small files.
        out: list[_Record] = []
        append = out.append
        hash_fd, fresh = self.hasher.hash_fd, self.fresh
        store = self.cache is not None
        for index, path, _ in unit:
            try:
                fd = digest.open_for_hashing(path)
            except OSError as exc:
                append((index, "err", error_text(exc)))
                continue
            try:
                before = os.fstat(fd)
                if before.st_size >= BIG_FILE_BYTES and stat.S_ISREG(before.st_mode):
                    append(
                        (index, "big", before.st_dev, before.st_ino, before.st_size,
                         before.st_mtime_ns)
                    )  # fmt: skip
                    continue
                sha1, head, total, dev, ino, size, mtime_ns, chunks = hash_fd(fd, None, before)
            except OSError as exc:
                append((index, "err", error_text(exc)))
                continue
            finally:
                os.close(fd)
            append((index, "ok", sha1, head, total, dev, ino, size, mtime_ns, False, chunks))
            if store:
                fresh.append((dev, ino, size, mtime_ns, sha1, head, total, chunks))
        return out

    def _process_keyed(self, unit: _Unit) -> list[_Record]:
        # Plain tuples throughout: this loop runs once per file, and a NamedTuple costs
        # ten times a tuple to build. FileKey compares and hashes like its tuple.
        out: list[_Record] = []
        keyed: list[tuple[int, str, RawKey]] = []
        for index, path, given in unit:
            if given is None:
                try:
                    st = os.stat(path)
                except OSError as exc:
                    out.append((index, "err", error_text(exc)))
                    continue
                keyed.append((index, path, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)))
            else:
                keyed.append((index, path, given))
        found: dict[RawKey, tuple[str, str, bytes]] = {}
        if self.cache is not None and self.lookups:
            try:
                found = self.cache.lookup_raw([key for _, _, key in keyed])
            except Exception as exc:
                self._cache_failed(exc, out)
        fresh = self.fresh
        done: dict[RawKey, _Record] = {}  # hard links: hash once
        for index, path, key in keyed:
            hit = found.get(key)
            if hit is not None:
                out.append((index, "ok", hit[0], hit[1], key[2], *key, True, hit[2]))
                continue
            if key[2] >= BIG_FILE_BYTES:
                out.append((index, "big", *key))
                continue
            same = done.get(key)
            if same is not None:
                out.append((index, *same[1:]))
                continue
            try:
                fd = digest.open_for_hashing(path)
                try:
                    sha1, head, total, dev, ino, size, mtime_ns, chunks = self.hasher.hash_fd(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                out.append((index, "err", error_text(exc)))
                continue
            record = (index, "ok", sha1, head, total, dev, ino, size, mtime_ns, False, chunks)
            done[key] = record
            out.append(record)
            fresh.append((dev, ino, size, mtime_ns, sha1, head, total, chunks))
        return out

    def _flush(self, out: list[_Record]) -> None:
        # Store the digests computed so far in the cache, in one transaction.
        if self.fresh and self.cache is not None:
            try:
                self.cache.store_raw(self.fresh)
            except Exception as exc:
                self._cache_failed(exc, out)
        self.fresh.clear()


def _unit_worker(context: tuple[str | None, int, bool]) -> _UnitWorker:
    """The pool's factory of ``_UnitWorker`` in a worker process: ``context`` is the
    cache's path (the worker opens its own connection, never one across fork), its
    racy window and whether lookups are worth it."""
    cache_path, racy_window_ns, lookups = context
    cache = None
    if cache_path is not None:
        try:
            cache = HashCache(cache_path, racy_window_ns=racy_window_ns)
        except Exception as exc:
            if not isinstance(exc, OSError) and not is_database_error(exc):
                raise
            cache = None  # then digests are neither found nor stored there
    return _UnitWorker(cache, lookups)


def _units(items: Sequence[_Item]) -> list[_Unit]:
    units: list[_Unit] = []
    for low in range(0, len(items), _UNIT_FILES):
        unit: _Unit = []
        for index in range(low, min(low + _UNIT_FILES, len(items))):
            item = items[index]
            key = item[1]
            # Plain tuples, which marshal takes (a FileKey is a NamedTuple).
            plain = None if key is None else (key[0], key[1], key[2], key[3])
            unit.append((index, item[0], plain))
        units.append(unit)
    return units


def _hash_big_threaded(
    order: Sequence[tuple[str, FileKey]],
    workers: int,
    on_bytes: Callable[[int], None],
) -> Iterator[tuple[HashResult, int]]:
    # Threads pull items from a shared iterator; the generator's own thread reports
    # progress (callbacks never run on worker threads) and yields finished results
    # with the number of bytes already reported for each.
    import threading  # here: most runs have no big file (start-up)

    lock = threading.Lock()
    pending = iter(order)
    finished: list[tuple[HashResult, int]] = []
    progress = [0]
    stop = threading.Event()
    wake = threading.Event()

    def work() -> None:
        hasher = FileHasher()
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
                key, file_digest = hasher.hash_path(path, on_bytes=count)
                result = HashResult(path, key, file_digest)
            except OSError as exc:
                result = HashResult(path, given, None, error_text(exc))
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


def hash_records(
    items: Sequence[_Item],
    *,
    cache: HashCache | None = None,
    workers: int | None = None,
    pool: ProcessPool | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> Generator[list[RawResult], None, None]:
    """``hash_files`` for bulk callers: yield batches of ``RawResult`` tuples.

    Same arguments and behaviour as ``hash_files``, except that ``items`` must be a
    sequence (results name items by index), whose tuples may carry two more fields of
    the caller's (so a scanner's own records can be passed as they are), and results
    come as plain tuples in batches, which saves building three objects per file.
    """
    own_pool = pool is None
    if pool is None:
        pool = ProcessPool(workers)
    nworkers = pool.processes
    report = on_progress or (lambda files, nbytes: None)
    warn = on_warning or (lambda message: None)
    warned = False
    big: list[tuple[int, FileKey]] = []
    lookups = True
    if cache is not None:
        try:
            lookups = cache.has_files()
        except Exception as exc:
            if not is_database_error(exc):
                raise  # (else the lookups fail too, and say so)
    arrived: list[list[_Record]] = []
    local = _UnitWorker(cache, lookups)
    context = (
        cache.path if cache is not None else None,
        cache.racy_window_ns if cache is not None else RACY_WINDOW_NS,
        lookups,
    )
    run = pool.run(local, _unit_worker, context, arrived.append)
    finished = False

    def batches() -> Iterator[list[RawResult]]:
        nonlocal warned
        taken, arrived[:] = arrived[:], []
        for records in taken:
            batch: list[RawResult] = []
            nbytes = 0
            for record in records:
                kind = record[1]
                if kind == "ok":
                    index, _, sha1, head, size, dev, ino, ksize, mtime, cached, chunks = record
                    batch.append(
                        (index, sha1, head, size, (dev, ino, ksize, mtime), cached, None, chunks)
                    )
                    nbytes += size
                elif kind == "err":
                    index = record[0]
                    given = items[index][1]
                    batch.append((index, None, None, 0, given or _NO_KEY, False, record[2], None))
                elif kind == "big":
                    big.append((record[0], FileKey(*record[2:])))
                elif not warned:  # "warn": report the first cache failure only
                    warned = True
                    warn(str(record[2]))
            if batch:
                report(len(batch), nbytes)
                yield batch

    try:
        run.add(_units(items), len(items))
        while run.step():
            yield from batches()
        run.finish()
        finished = True
        yield from batches()
    finally:
        run.close()
        if not finished:
            local.finish()  # after an early close: keep what was hashed here
        if own_pool:
            pool.close()
    if big:
        yield from _hash_big(items, big, cache, nworkers, report, warn)


def _hash_big(
    items: Sequence[_Item],
    big: list[tuple[int, FileKey]],
    cache: HashCache | None,
    nworkers: int,
    report: Callable[[int, int], None],
    warn: Callable[[str], None],
) -> Iterator[list[RawResult]]:
    # The big files the units left, on threads (one file: on this thread), their bytes
    # reported as they stream and the rest of each file's size when it is done.
    fresh: list[tuple[FileKey, FileDigest]] = []
    index_of = {items[index][0]: index for index, _ in big}

    def finish(result: HashResult, moved: int) -> list[RawResult]:
        index = index_of[result.path]
        file_digest = result.digest
        report(1, (file_digest.size if file_digest else 0) - moved)
        if file_digest is None:
            return [(index, None, None, 0, result.key, False, result.error, None)]
        fresh.append((result.key, file_digest))
        return [
            (index, file_digest.sha1, file_digest.head_sha1, file_digest.size, result.key, False,
             None, file_digest.chunks)
        ]  # fmt: skip

    try:
        if len(big) == 1 or nworkers == 1:
            hasher = FileHasher()
            for index, given in big:
                path = items[index][0]
                moved = [0]

                def count(n: int, moved: list[int] = moved) -> None:
                    moved[0] += n
                    report(0, n)

                try:
                    key, file_digest = hasher.hash_path(path, on_bytes=count)
                    result = HashResult(path, key, file_digest)
                except OSError as exc:
                    result = HashResult(path, given, None, error_text(exc))
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
            except Exception as exc:
                if not is_database_error(exc):
                    raise
                warn(f"hash cache unusable, continuing without it: {exc}")


def hash_files(
    items: Iterable[tuple[str, FileKey | None]],
    *,
    cache: HashCache | None = None,
    workers: int | None = None,
    pool: ProcessPool | None = None,
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
        workers: processes to use (and threads for big files) when no ``pool`` is
            given; default ``kbapps.hashing.pool.default_workers()``. Worker processes
            are forked only for ``PARALLEL_MIN_FILES`` items or more, and never while
            this process runs other threads (then it does the work itself).
        pool: a ``ProcessPool`` to use (one started before the program's threads,
            as ``kbucket-host`` does); its ``processes`` replace ``workers``.
        on_progress: called from the iterating thread with ``(files, bytes)`` done
            since the previous call, cached files included.
        on_warning: called with a message if the cache fails (it is then ignored).

    Yields:
        One ``HashResult`` per item, in no particular order. A file that cannot be
        read gives a result with ``error`` set (and, if it could not even be
        ``stat``-ed and no key was given, a key of zeros); iteration goes on, so the
        caller decides whether that is fatal. Closing the generator early stops the
        workers; digests computed so far in this process are still stored.
    """
    listed = list(items)
    batches = hash_records(
        listed,
        cache=cache,
        workers=workers,
        pool=pool,
        on_progress=on_progress,
        on_warning=on_warning,
    )
    try:
        for batch in batches:
            for index, sha1, head, size, key, cached, error, chunks in batch:
                file_digest = (
                    None if sha1 is None or head is None else FileDigest(sha1, head, size, chunks)
                )
                yield HashResult(listed[index][0], FileKey(*key), file_digest, error, cached)
    finally:
        batches.close()
