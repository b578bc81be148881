"""The share's indexing loop: a full scan at start, then stat-only rescans, as deltas.

Strategy
--------
``Indexer.run(sink)`` keeps ``FileIndex`` in step with the directory and tells ``sink``
(the node's handle) the SHA-1s of what changed (``content_changed``); the share's core
reads what it advertises from the index (only trusted entries: ``kbproto.sharestore``).

* **Walk.** ``iter_share`` yields every servable regular file with its ``FileStamp``,
  following the ``.prvdir`` rules of ``kbapps.prvbuild.scan_directory`` (dot-names
  skipped; symlinks only when the target stays inside and not under a dot-name; no
  loops; special files skipped with a warning), and also skips folders named
  ``node_modules`` (``UNLISTED_DIR_NAMES``: listings hide them, as the original
  share's did, so nothing in them is advertised). It is its own walker because a share
  must keep going where ``kb-prv-create`` stops: an unreadable sub-directory is one
  warning and is skipped, not fatal, and every file needs its ``stat`` (a rescan
  compares stamps). It also skips what docs/security.md path checks would refuse to serve
  (control characters, backslashes, more than 64 levels), so nothing is advertised
  that cannot be downloaded.
  It yields in path order, one directory listing per level in memory at a time.
* **Diff.** Each walk is merged with the index, read in the same order a page at a
  time and without the digests (``FileIndex.stamps``), so neither the walk nor the
  index is ever held whole (a million-file share: docs/benchmarks.md, "A lean
  share"): a path whose stamp is
  unchanged and trusted costs nothing (so a restart reads no unchanged file); a
  vanished or changed one is un-advertised at once; a file whose stamp re-appears
  under another path (a directory renamed inside the share) reuses its digests: new
  paths are held (up to ``_NEW_BUFFER``) until the walk has met the vanished ones.
* **Settle, then hash.** A new or changed file is hashed once its newest timestamp is
  ``settle`` seconds old, or once its stamp stayed the same for ``settle`` seconds;
  until then it waits in ``pending`` and is re-``stat``-ed (alone, not by a full walk)
  when due. So a file being copied in is read once, after the copy, and never recorded
  with a digest of half its bytes (``hash_file`` also refuses a file that changes while
  read; the result is recorded only if its ``fstat`` matches the walk's stamp). With
  ``settle`` at least the index's racy window, entries are trusted as soon as hashed;
  an entry still inside it (a restart just after a write) is re-hashed when it ends.
* **Off the loop, in bounded batches, overlapped.** Walks and hashing run in worker
  threads. The files a stretch of a walk found are hashed as one job of the hasher;
  its results are recorded at most ``batch_files`` files or ``batch_bytes`` bytes at
  a time, each batch one SQLite transaction whose deltas go to the sink, while the
  job goes on (a hand-over of ``_WRITES_AHEAD`` batches: the hashing thread waits
  when the writes fall behind, so memory stays bounded). So a big first scan makes
  files findable as it goes, the hashing processes do not wait for the index, and the
  node keeps serving. Many small files are hashed on the worker processes of a
  ``kbapps.hashing.ProcessPool``, which ``kbapps.noderun`` starts before
  ``anyio.run`` starts any thread: a process never forks while it runs threads
  (without such a pool, a worker thread hashes alone).
* **Interval.** The next full walk starts ``max(min_interval, walk_time * (1/f - 1))``
  seconds after the last one ended (``f`` = ``cpu_fraction``, capped at
  ``max_interval``): a warm walk of 100,000 files takes ~0.5 s (docs/benchmarks.md,
  ceilings §2), so such a share is rescanned every 2 s, and a ten-times bigger one
  spends at most a fifth of a core on it.

Hooks run in the event loop's thread (worker threads hand them over), so a
``kbapps.output.Progress`` can be driven from them directly.

Why one module of some 880 lines: the walk, the plan of a pass and the loop that
schedules passes share the stop signal and the stamps compared between passes; the
strategy above is most of its length.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import time
from collections.abc import Callable, Collection, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread
from anyio.streams.memory import MemoryObjectSendStream

from kbapps.hashing import FileKey, HashResult, ProcessPool, chunks_root, hash_files
from kbapps.share.index import FileIndex, FileStamp, IndexEntry, IndexStamp, stamp_of
from kbapps.share.paths import (
    MAX_PATH_BYTES,
    MAX_SEGMENTS,
    UNLISTED_DIR_NAMES,
    SharePathError,
    check_segments,
)

__all__ = (
    "Hasher",
    "IndexSink",
    "Indexer",
    "IndexerConfig",
    "IndexerHooks",
    "default_hasher",
    "iter_share",
    "walk_share",
)

T = TypeVar("T")

#: ``(items, on_progress) -> results``: ``kbapps.hashing.hash_files`` with its options
#: bound; tests inject a counting one.
Hasher = Callable[
    [Sequence[tuple[str, FileKey | None]], Callable[[int, int], None]], Iterator[HashResult]
]
_IFMT = 0o170000
_IFREG = stat.S_IFREG
_IFDIR = stat.S_IFDIR
#: Distinct warnings remembered (so rescans do not repeat them); past it, one last line.
_MAX_WARNINGS = 10_000
#: Digests kept for files vanished in a walk, so a directory renamed inside the share
#: (its files keep their stamps) is not re-hashed; cleared when full and after each
#: walk (memory bound).
_MAX_TOMBSTONES = 50_000
#: Batches that may wait to be written besides the one being written: the hashing
#: goes on while a batch is written (and its changes reported), and the hashing thread
#: blocks with the next full batch while this many wait (memory bound: three batches).
_WRITES_AHEAD = 1
#: Seconds between progress reports from the hashing thread (each is a round trip to
#: the event loop that the hashing waits for).
_PROGRESS_EVERY = 0.1


class IndexSink(Protocol):
    """Where the indexer reports changes (``NodeHandle`` fits): the share's core reads
    what it advertises from the index itself (``FileIndex`` is its store), so it is
    told only which content ids to report again."""

    async def content_changed(self, sha1s: Collection[str]) -> None:
        """The files holding these SHA-1s changed (added, removed, re-hashed)."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class IndexerConfig:
    """Timing and batching of the indexer.

    Attributes:
        min_interval: seconds between full walks at least (2 s: a file added to a
            100,000-file share is findable in ~2-5 s, well inside the 10 s docs/protocol.md allows).
        max_interval: seconds between full walks at most, however slow the walk.
        cpu_fraction: the share of one core full walks may take on average.
        settle: seconds a new or changed file must be quiet before it is hashed; at
            least the index's racy window (2 s by default), so entries are trusted
            as soon as they are hashed.
        batch_files: most files recorded per batch (one transaction, one delta burst;
            commits cost ~4.7 µs of CPU per file in batches of 4,096 and ~1.8 µs
            in batches of 16,384: docs/benchmarks.md, "A lean share").
        batch_bytes: most bytes recorded per batch (a single bigger file is one batch).
        workers: for ``default_hasher`` when no hasher is given: threads for big
            files (``kbapps.hashing.default_workers()`` if None).
    """

    min_interval: float = 2.0
    max_interval: float = 60.0
    cpu_fraction: float = 0.2
    settle: float = 2.0
    batch_files: int = 16384
    batch_bytes: int = 1 << 30
    workers: int | None = None

    def __post_init__(self) -> None:
        if not 0 < self.min_interval <= self.max_interval:
            raise ValueError("need 0 < min_interval <= max_interval")
        if not 0 < self.cpu_fraction <= 1:
            raise ValueError("cpu_fraction must be in (0, 1]")
        if self.settle < 0:
            raise ValueError("settle must not be negative")
        if self.batch_files < 1 or self.batch_bytes < 1:
            raise ValueError("batch limits must be positive")
        if self.workers is not None and self.workers < 1:
            raise ValueError("workers must be at least 1")


@dataclass(frozen=True, slots=True, kw_only=True)
class IndexerHooks:
    """Callbacks for the command's console; all run in the event loop's thread.

    Attributes:
        on_hash_start: ``(files, bytes)`` about to be hashed (open a progress bar).
        on_hash_progress: ``(files, bytes)`` hashed since the last call.
        on_hash_end: the hashing round is over (close the bar).
        on_initial_done: the first scan is over; the argument is the number of files
            indexed (``Indexed <n> files.``).
        on_warning: one line per distinct problem (unreadable file, special file...).
    """

    on_hash_start: Callable[[int, int], None] | None = None
    on_hash_progress: Callable[[int, int], None] | None = None
    on_hash_end: Callable[[], None] | None = None
    on_initial_done: Callable[[int], None] | None = None
    on_warning: Callable[[str], None] | None = None


def default_hasher(workers: int | None = None, pool: ProcessPool | None = None) -> Hasher:
    """``kbapps.hashing.hash_files`` without a cache (the index is the cache).

    Args:
        workers: threads for big files when no ``pool`` is given. Processes for small
            files would have to be forked from the indexer's worker thread, which
            ``hash_files`` never does: without a pool, that thread hashes them alone.
        pool: a ``ProcessPool`` started before the program's threads
            (``kbapps.noderun``): its processes hash the small files of a batch, and
            its size is the number of threads for big files.
    """

    def hasher(
        items: Sequence[tuple[str, FileKey | None]], on_progress: Callable[[int, int], None]
    ) -> Iterator[HashResult]:
        return hash_files(items, workers=workers, pool=pool, on_progress=on_progress)

    return hasher


# --- the walk ------------------------------------------------------------------------


def _show(path: str) -> str:
    # As typed, except what would break a console line (control characters, bytes
    # that are not UTF-8), which is escaped.
    text = path.encode("utf-8", "backslashreplace").decode("utf-8")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _servable_name(name: str) -> bool:
    if name.isascii() and name.isprintable() and "\\" not in name:
        return True  # the common case, without building a tuple
    try:
        check_segments((name,))
    except SharePathError:
        return False
    return True


class _Root:
    """The real root path, and the test that a resolved path stays visibly inside."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.real = os.path.realpath(root)
        self.prefix = self.real.rstrip(os.sep) + os.sep

    def inside(self, target: str) -> bool:
        if target == self.real:
            return True  # a link to the root: a loop, which the walk reports as one
        if not target.startswith(self.prefix):
            return False
        # A link into a dot-directory (.kbucket, .git) would publish what we skip.
        return not any(p.startswith(".") for p in target[len(self.prefix) :].split(os.sep))

    def join(self, relpath: str) -> str:
        return self.prefix + relpath.replace("/", os.sep)


def walk_share(
    root: str | os.PathLike[str], *, on_warning: Callable[[str], None] | None = None
) -> dict[str, FileStamp]:
    """List the files a share serves: share-relative POSIX path -> ``FileStamp``
    (``iter_share`` gathered in a dict; the indexer streams instead).

    Raises:
        OSError: the root itself cannot be read.
    """
    return dict(iter_share(root, on_warning=on_warning))


def iter_share(
    root: str | os.PathLike[str], *, on_warning: Callable[[str], None] | None = None
) -> Iterator[tuple[str, FileStamp]]:
    """Yield the files a share serves as ``(share-relative POSIX path, FileStamp)``, in
    the byte order of their UTF-8 paths (the order of ``FileIndex.entries``).

    That order is a depth-first walk that visits a directory's entries sorted by name,
    a sub-directory's name followed by ``/`` (so ``a-b`` comes before ``a/x``, as
    ``-`` < ``/``). Only one directory's listing per level is held at a time: a walk
    of a million files holds thousands of entries, not a million. Symlinked files
    appear under the link's path with the target's stamp.

    Args:
        root: the share directory.
        on_warning: one line per skipped entry (may repeat on every walk).

    Raises:
        OSError: the root itself cannot be read (at the first ``next``).
    """
    warn = on_warning or (lambda message: None)
    base = _Root(root)
    root_st = os.stat(base.real)
    os.scandir(base.real).close()  # an unreadable root is an error, not an empty share
    yield from _walk_dir(
        base, warn, "", base.real, 0, frozenset({(root_st.st_dev, root_st.st_ino)})
    )


def _walk_dir(
    base: _Root,
    warn: Callable[[str], None],
    rel: str,
    path: str,
    depth: int,
    ancestors: frozenset[tuple[int, int]],
) -> Iterator[tuple[str, FileStamp]]:
    try:
        with os.scandir(path) as listing:
            entries = list(listing)
    except OSError as exc:
        warn(f"skipping directory {_show(rel)}: {exc.strerror or exc}")
        return
    new_stamp = tuple.__new__  # 4x cheaper than the NamedTuple constructor
    prefix = f"{rel}/" if rel else ""
    # (sort key, stamp) for a file; (name + "/", (path, depth, ancestors)) for a folder.
    found: list[tuple[str, Any]] = []
    # The loop below runs once per file on every walk: locals and inlined tests
    # keep it near the cost of the stat calls (docs/benchmarks.md, ceilings §2).
    for entry in entries:
        name = entry.name
        if name[0] == ".":
            continue
        relname = prefix + name
        if not (name.isascii() and name.isprintable() and "\\" not in name) and (
            not _servable_name(name)
        ):
            warn(f"skipping {_show(relname)}: a share cannot serve this name")
            continue
        try:
            if entry.is_symlink():
                if not base.inside(os.path.realpath(entry.path)):
                    warn(f"skipping {_show(relname)}: symlink points outside the share")
                    continue
                st = os.stat(entry.path)
            else:
                st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue  # vanished since listed, or a dangling link: nothing to serve
        except OSError as exc:
            warn(f"skipping {_show(relname)}: {exc.strerror or exc}")
            continue
        kind = st.st_mode & _IFMT
        if kind == _IFREG:
            if len(relname) * 4 >= MAX_PATH_BYTES and len(relname.encode()) >= MAX_PATH_BYTES:
                warn(f"skipping {_show(relname)}: path too long to serve")
                continue
            found.append(
                (
                    relname,
                    new_stamp(
                        FileStamp,
                        (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns),
                    ),
                )
            )
        elif kind == _IFDIR:
            if name in UNLISTED_DIR_NAMES:
                continue  # never listed, so never indexed (the original skipped them too)
            key = (st.st_dev, st.st_ino)
            if key in ancestors:
                warn(f"skipping {_show(relname)}: symlink loop")
            elif depth + 2 > MAX_SEGMENTS:
                warn(f"skipping {_show(relname)}: nested deeper than {MAX_SEGMENTS} levels")
            else:
                found.append((relname + "/", (entry.path, depth + 1, ancestors | {key})))
        else:
            warn(f"skipping {_show(relname)}: not a regular file or directory")
    del entries
    found.sort(key=_first)
    for sort_key, value in found:
        if sort_key[-1] == "/":
            sub_path, sub_depth, sub_ancestors = value
            yield from _walk_dir(base, warn, sort_key[:-1], sub_path, sub_depth, sub_ancestors)
        else:
            yield sort_key, value


def _first(item: tuple[str, Any]) -> str:
    return item[0]


# --- the indexer ---------------------------------------------------------------------


class _Batch(NamedTuple):
    """Hashing results to record in one transaction: ``FileIndex.apply``'s arguments,
    and the warnings they gave."""

    puts: list[IndexEntry]
    removes: list[str]
    lists: dict[str, bytes]
    warnings: list[str]


class _Stopped(Exception):
    """The indexer is stopping: abandon the batch being hashed."""


@dataclass(slots=True)
class _Plan:
    """What one stretch of a walk asks for (a walk yields several, each bounded)."""

    removes: list[str] = field(default_factory=list)
    reuse: list[IndexEntry] = field(default_factory=list)
    hash_now: list[tuple[str, FileStamp]] = field(default_factory=list)


#: New and changed paths held before they are settled or hashed: a directory renamed
#: inside the share is recognised (its files' stamps are the vanished ones) when it
#: holds up to this many files, wherever the walk meets the old and new names.
_NEW_BUFFER = 32_768
#: Removes, reuses and hashes per stretch of a walk (one transaction, one report).
_STRETCH = 4096


class _Pass:
    """The state of one walk's merge with the index (``Indexer._plans``)."""

    def __init__(self, indexer: Indexer, pending_before: set[str], failed_before: set[str]):
        self.indexer = indexer
        self.plan = _Plan()
        self.fresh: list[tuple[str, FileStamp]] = []
        self.now_ns = time.time_ns()
        self.mono = time.monotonic()
        self.window = indexer.index.racy_window_ns
        self.settle_ns = int(indexer.config.settle * 1e9)
        # Pending and failed paths from before this walk that it did not meet are
        # forgotten at its end (those added meanwhile are this walk's own).
        self.pending_unseen = pending_before
        self.failed_unseen = failed_before

    def vanished(self, row: IndexStamp) -> None:
        """An indexed path the walk did not find."""
        path = row[0]
        self.plan.removes.append(path)
        newest = max(row[4], row[5])
        if not (row[6] - self.window < newest <= row[6] + self.window):
            # Its digests, for a rename met later in the walk (a point query: rows
            # are read without them, and few paths vanish in one walk).
            entry = self.indexer.index.get(path)
            if entry is None:
                return
            tombstones = self.indexer._tombstones
            if len(tombstones) >= _MAX_TOMBSTONES:
                tombstones.clear()
            tombstones[entry.stamp] = entry

    def known(self, row: IndexStamp, stamp: FileStamp) -> None:
        """An indexed path the walk found: unchanged (trusted: nothing to do; racy:
        re-hash once the window is over) or changed (un-advertised, then new)."""
        path = row[0]
        self._seen(path, stamp)
        if stamp != row[1:6]:
            self.plan.removes.append(path)
            self.fresh.append((path, stamp))
            return
        newest = max(row[4], row[5])
        trusted = not (row[6] - self.window < newest <= row[6] + self.window)
        if trusted and not row[7]:
            # Indexed before chunk digests: hashed once more, for them; it stays
            # advertised meanwhile (its SHA-1 is still right).
            self.plan.hash_now.append((path, stamp))
        elif trusted:
            return
        elif self.now_ns >= newest + self.window:
            self.plan.hash_now.append((path, stamp))
        else:
            self.indexer._pending[path] = (
                stamp,
                self.mono + (newest + self.window - self.now_ns) / 1e9,
            )

    def new(self, path: str, stamp: FileStamp) -> None:
        """A path the index does not hold."""
        self._seen(path, stamp)
        self.fresh.append((path, stamp))

    def _seen(self, path: str, stamp: FileStamp) -> None:
        indexer = self.indexer
        self.pending_unseen.discard(path)
        self.failed_unseen.discard(path)
        failed = indexer._failed.get(path)
        if failed is not None and failed != stamp:
            del indexer._failed[path]  # changed since it failed: try again

    def full(self) -> bool:
        plan = self.plan
        return (
            len(self.fresh) >= _NEW_BUFFER
            or len(plan.removes) + len(plan.reuse) + len(plan.hash_now) >= _STRETCH
        )

    def take(self, final: bool = False) -> Iterator[_Plan]:
        """Yield the plan so far; the held new paths too when full or at the end."""
        if final or len(self.fresh) >= _NEW_BUFFER:
            self._settle_new()
        plan, self.plan = self.plan, _Plan()
        if plan.removes or plan.reuse or plan.hash_now:
            yield plan

    def _settle_new(self) -> None:
        """New and changed paths: a vanished stamp's digests, hashed now if settled,
        else pending (``settle``)."""
        indexer = self.indexer
        plan = self.plan
        tombstones = indexer._tombstones
        pending = indexer._pending
        failed = indexer._failed
        settle = indexer.config.settle
        for path, stamp in self.fresh:
            if path in failed:
                continue
            old = tombstones.pop(stamp, None)
            if old is not None:
                plan.reuse.append(old._replace(path=path))
                continue
            age = self.now_ns - max(stamp.mtime_ns, stamp.ctime_ns)
            seen = pending.get(path)
            if age >= self.settle_ns or (
                seen is not None and seen[0] == stamp and seen[1] <= self.mono
            ):
                pending.pop(path, None)
                plan.hash_now.append((path, stamp))
            elif seen is None or seen[0] != stamp:
                wait = (self.settle_ns - age) / 1e9 if age >= 0 else settle
                pending[path] = (stamp, self.mono + min(settle, wait))
        self.fresh = []

    def finish(self) -> None:
        """The walk is over: forget what it did not meet."""
        indexer = self.indexer
        for path in self.pending_unseen:
            indexer._pending.pop(path, None)
        for path in self.failed_unseen:
            indexer._failed.pop(path, None)
        # Digests of files gone in this walk were for renames within it.
        indexer._tombstones.clear()


class Indexer:
    """Keeps a ``FileIndex`` in step with the share directory (see the module notes).

    Args:
        root: the share directory.
        index: the share's index (loaded; the indexer is its only writer).
        config: timing and batching.
        hooks: console callbacks.
        hasher: replaces ``default_hasher(config.workers)`` (tests count calls).

    Raises:
        ValueError: ``config.settle`` is shorter than the index's racy window.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        index: FileIndex,
        *,
        config: IndexerConfig | None = None,
        hooks: IndexerHooks | None = None,
        hasher: Hasher | None = None,
    ) -> None:
        self.config = config if config is not None else IndexerConfig()
        if self.config.settle * 1e9 < index.racy_window_ns:
            raise ValueError("settle must be at least the index's racy window")
        self.index = index
        self.hooks = hooks if hooks is not None else IndexerHooks()
        self._root = _Root(root)
        self._hasher = hasher if hasher is not None else default_hasher(self.config.workers)
        self._pending: dict[str, tuple[FileStamp, float]] = {}
        self._failed: dict[str, FileStamp] = {}
        self._tombstones: dict[FileStamp, IndexEntry] = {}
        self._warned: set[str] = set()
        #: Progress not yet reported: files, bytes, and when it was last reported.
        self._moved: tuple[int, int, float] = (0, 0, 0.0)
        self._stop = threading.Event()
        self._rescan: anyio.Event | None = None
        #: Set once the first scan has been reported (``on_initial_done``).
        self.initial_done = anyio.Event()
        #: Full walks done so far.
        self.walks = 0
        #: Seconds the last full walk took (walk and diff).
        self.last_walk_seconds = 0.0

    # --- public ----------------------------------------------------------------------

    def request_rescan(self) -> None:
        """Walk again as soon as possible (e.g. a route met a changed file)."""
        if self._rescan is not None:
            self._rescan.set()

    @property
    def pending(self) -> tuple[str, ...]:
        """Paths waiting to settle before they are hashed."""
        return tuple(self._pending)

    async def run(self, sink: IndexSink) -> None:
        """Index the share and report to ``sink`` until cancelled.

        The sink hears the SHA-1s of every change (``content_changed``); what it
        advertises it reads from the index. Errors of the sink propagate.
        """
        self._rescan = anyio.Event()
        try:
            await self._full_pass(sink)
            if self._pending:
                # Files written just before the start (a fresh dataset) settle within
                # ``settle`` seconds: count them in "Indexed N files." too. Files still
                # changing then stay pending and come later.
                await anyio.sleep(
                    max(0.0, max(d for _, d in self._pending.values()) - time.monotonic())
                )
                await self._settle_pass(sink)
            if self.hooks.on_initial_done is not None:
                self.hooks.on_initial_done(await self._thread(self.index.trusted_count))
            self.initial_done.set()
            next_walk, soonest = self._schedule()
            while True:
                # A requested rescan (a route met a changed file) runs early, but no
                # sooner than the CPU budget allows (a busy route cannot spin walks).
                rescan = self._rescan.is_set()
                walk_at = min(next_walk, soonest) if rescan else next_walk
                due = min((d for _, d in self._pending.values()), default=walk_at)
                wait = min(walk_at, due) - time.monotonic()
                if wait > 0:
                    with anyio.move_on_after(wait):
                        if rescan:
                            await anyio.sleep(wait)
                        else:
                            await self._rescan.wait()
                    continue
                if time.monotonic() >= walk_at:
                    self._rescan = anyio.Event()
                    await self._full_pass(sink)
                    next_walk, soonest = self._schedule()
                else:
                    await self._settle_pass(sink)
        finally:
            # Worker threads that outlive a cancellation stop at their next check.
            self._stop.set()

    # --- passes ----------------------------------------------------------------------

    def _schedule(self) -> tuple[float, float]:
        """When the next walk is due, and the soonest a requested one may start."""
        cfg = self.config
        now = time.monotonic()
        budget = self.last_walk_seconds * (1.0 / cfg.cpu_fraction - 1.0)
        return now + min(cfg.max_interval, max(cfg.min_interval, budget)), now + budget

    async def _thread(self, fn: Callable[..., T], *args: object) -> T:
        # abandon_on_cancel: Ctrl+C must not wait for a big batch to finish; the
        # thread notices ``_stop`` at its next file or progress report.
        return await anyio.to_thread.run_sync(fn, *args, abandon_on_cancel=True)

    async def _full_pass(self, sink: IndexSink) -> None:
        """Walk the share and act on the differences, a bounded stretch at a time."""
        warnings: list[str] = []
        plans: Generator[_Plan, None, None] = self._plans(
            iter_share(self._root.real, on_warning=warnings.append)
        )
        spent = 0.0
        # Not closed on cancellation: a worker thread abandoned mid-``next`` may still
        # run it; it is dropped with the pass.
        while True:
            started = time.monotonic()
            try:
                plan = await self._thread(next, plans, None)
            except OSError as exc:
                # The root went away or became unreadable: keep what we have, say so once.
                self._warn(f"cannot read the share directory: {exc.strerror or exc}")
                return
            finally:
                spent += time.monotonic() - started
                for message in warnings:
                    self._warn(message)
                warnings.clear()
            if plan is None:
                break
            if plan.removes or plan.reuse:
                await self._report(
                    sink, await self._thread(self.index.apply, plan.reuse, plan.removes)
                )
            await self._hash(sink, plan.hash_now)
        self.walks += 1
        self.last_walk_seconds = spent

    def _plans(self, walk: Iterator[tuple[str, FileStamp]]) -> Generator[_Plan, None, None]:
        """Compare a walk with the index, both in path order (a merge: neither is held
        whole), and yield what to do a stretch at a time. Runs in worker threads, one
        ``next`` at a time; owns the indexer state meanwhile."""
        state = _Pass(self, set(self._pending), set(self._failed))
        entries = self.index.stamps()
        entry = next(entries, None)
        for path, stamp in walk:
            while entry is not None and entry[0] < path:
                state.vanished(entry)
                entry = next(entries, None)
            if entry is not None and entry[0] == path:
                state.known(entry, stamp)
                entry = next(entries, None)
            else:
                state.new(path, stamp)
            if state.full():
                yield from state.take()
        while entry is not None:
            state.vanished(entry)
            entry = next(entries, None)
        yield from state.take(final=True)
        state.finish()

    async def _settle_pass(self, sink: IndexSink) -> None:
        """Re-``stat`` the pending files that are due; hash those that kept still."""
        now = time.monotonic()
        due = [(p, s) for p, (s, d) in self._pending.items() if d <= now]
        if not due:
            return
        ready, gone = await self._thread(self._restat, due)
        if gone:
            await self._report(sink, await self._thread(self.index.apply, (), gone))
        await self._hash(sink, ready)

    def _restat(
        self, due: list[tuple[str, FileStamp]]
    ) -> tuple[list[tuple[str, FileStamp]], list[str]]:
        ready: list[tuple[str, FileStamp]] = []
        gone: list[str] = []
        mono = time.monotonic()
        for path, seen in due:
            full = self._root.join(path)
            try:
                st = os.stat(full)
                ok = stat.S_ISREG(st.st_mode) and self._root.inside(os.path.realpath(full))
            except OSError:
                ok = False
            if not ok:
                self._pending.pop(path, None)
                gone.append(path)
                continue
            stamp = stamp_of(st)
            if stamp == seen:
                self._pending.pop(path, None)
                ready.append((path, stamp))
            else:
                self._pending[path] = (stamp, mono + self.config.settle)
        return ready, gone

    # --- hashing ---------------------------------------------------------------------

    async def _hash(self, sink: IndexSink, items: list[tuple[str, FileStamp]]) -> None:
        """Hash ``items`` as one job of the hasher, recording its results a batch at a
        time while it goes on: a worker thread hashes and hands each batch over, and
        this task records it (another worker thread) and reports it meanwhile."""
        if not items:
            return
        hooks = self.hooks
        if hooks.on_hash_start is not None:
            hooks.on_hash_start(len(items), sum(s.size for _, s in items))
        send, receive = anyio.create_memory_object_stream[_Batch](_WRITES_AHEAD)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._hash_into, items, send)
                async with receive:
                    async for puts, removes, lists, warnings in receive:
                        for message in warnings:
                            self._warn(message)
                        touched = await self._thread(self.index.apply, puts, removes, lists)
                        await self._report(sink, touched)
        except BaseExceptionGroup as group:
            # The task group wraps what failed (the hasher, the index, the sink):
            # the caller sees it as it did when all ran in one task.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        finally:
            if hooks.on_hash_end is not None:
                hooks.on_hash_end()

    async def _hash_into(
        self, items: list[tuple[str, FileStamp]], send: MemoryObjectSendStream[_Batch]
    ) -> None:
        async with send:
            await self._thread(self._hash_items, items, send)

    def _progress(self, files: int, nbytes: int) -> None:
        # Runs in the hashing thread, from inside the hasher: one call into the event
        # loop per _PROGRESS_EVERY seconds, not per unit of 64 files (a round trip
        # each, which the hashing thread waits for).
        if self._stop.is_set():
            raise _Stopped
        hook = self.hooks.on_hash_progress
        if hook is None:
            return
        self._moved = (self._moved[0] + files, self._moved[1] + nbytes, self._moved[2])
        now = time.monotonic()
        if now - self._moved[2] >= _PROGRESS_EVERY:
            self._flush_progress(now)

    def _flush_progress(self, now: float) -> None:
        files, nbytes, _ = self._moved
        self._moved = (0, 0, now)
        hook = self.hooks.on_hash_progress
        if hook is not None and (files or nbytes):
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody to tell
                anyio.from_thread.run_sync(hook, files, nbytes)

    def _hash_items(
        self, items: list[tuple[str, FileStamp]], send: MemoryObjectSendStream[_Batch]
    ) -> None:
        """Hash ``items`` and hand their records over in batches (worker thread)."""
        cfg = self.config
        started_ns = time.time_ns()
        mono = time.monotonic()
        self._moved = (0, 0, mono)
        by_full = {self._root.join(path): (path, stamp) for path, stamp in items}
        keys = [(full, FileKey(*stamp[:4])) for full, (_, stamp) in by_full.items()]
        batch = _Batch([], [], {}, [])
        size = 0
        results = self._hasher(keys, self._progress)
        try:
            for result in results:
                if self._stop.is_set():
                    raise _Stopped
                size += self._record(result, by_full[result.path], started_ns, mono, batch)
                if len(batch.puts) + len(batch.removes) >= cfg.batch_files or (
                    size >= cfg.batch_bytes
                ):
                    self._flush_progress(time.monotonic())
                    anyio.from_thread.run(send.send, batch)
                    batch, size = _Batch([], [], {}, []), 0
            self._flush_progress(time.monotonic())
            if batch.puts or batch.removes or batch.warnings:
                anyio.from_thread.run(send.send, batch)
        except _Stopped:
            return
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()

    def _record(
        self,
        result: HashResult,
        item: tuple[str, FileStamp],
        started_ns: int,
        mono: float,
        batch: _Batch,
    ) -> int:
        """Add one result to ``batch``; return the bytes it recorded."""
        path, stamp = item
        digest = result.digest
        # (A FileKey equals the plain tuple of its fields: no object per file.)
        if digest is not None and digest.chunks is not None and result.key == stamp[:4]:
            root = chunks_root(digest.chunks)
            batch.puts.append(
                IndexEntry(path, *stamp, digest.sha1, digest.head_sha1, started_ns, root)
            )
            batch.lists[digest.sha1] = digest.chunks
            self._failed.pop(path, None)
            return stamp.size
        if self.index.get(path) is not None:
            batch.removes.append(path)
        try:
            now_stamp = stamp_of(os.stat(result.path))
        except OSError:
            return 0  # gone: the next walk forgets it
        if now_stamp != stamp or digest is not None:
            # It is being written: hash it once it has been still a while.
            self._pending[path] = (now_stamp, mono + self.config.settle)
        else:
            # Unchanged and unreadable: say so once, retry when it changes.
            self._failed[path] = stamp
            batch.warnings.append(f"cannot read {_show(path)}: {result.error}")
        return 0

    # --- reporting -------------------------------------------------------------------

    async def _report(self, sink: IndexSink, touched: set[str]) -> None:
        # One call per batch, not per file: each call is a round trip to the node.
        if touched:
            await sink.content_changed(sorted(touched))

    def _warn(self, message: str) -> None:
        hook = self.hooks.on_warning
        if hook is None or message in self._warned:
            return
        if len(self._warned) >= _MAX_WARNINGS:
            if len(self._warned) == _MAX_WARNINGS:
                self._warned.add("")
                hook("too many indexing warnings; further ones are not shown")
            return
        self._warned.add(message)
        hook(message)
