"""The share's indexing loop: a full scan at start, then stat-only rescans, as deltas.

Strategy
--------
``Indexer.run(sink)`` keeps ``FileIndex`` in step with the directory and tells ``sink``
(the node's handle: ``set_files``/``put_file``/``remove_file``) what it may advertise.

* **Walk.** ``walk_share`` lists every servable regular file with its ``FileStamp``,
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
* **Diff.** Each walk is compared with the index: a path whose stamp is unchanged and
  trusted costs nothing (so a restart reads no unchanged file); a vanished or changed
  one is un-advertised at once; a file whose stamp re-appears under another path
  (a directory renamed inside the share) reuses its digests.
* **Settle, then hash.** A new or changed file is hashed once its newest timestamp is
  ``settle`` seconds old, or once its stamp stayed the same for ``settle`` seconds;
  until then it waits in ``pending`` and is re-``stat``-ed (alone, not by a full walk)
  when due. So a file being copied in is read once, after the copy, and never recorded
  with a digest of half its bytes (``hash_file`` also refuses a file that changes while
  read; the result is recorded only if its ``fstat`` matches the walk's stamp). With
  ``settle`` at least the index's racy window, entries are trusted as soon as hashed;
  an entry still inside it (a restart just after a write) is re-hashed when it ends.
* **Off the loop, in bounded batches.** Walks and hashing run in worker threads, at
  most ``batch_files`` files or ``batch_bytes`` bytes per batch; each batch is one
  SQLite transaction and its deltas go to the sink before the next starts, so a big
  first scan makes files findable as it goes and the node keeps serving. Many small
  files are hashed on the worker processes of a ``kbapps.hashing.ProcessPool``, which
  ``kbapps.noderun`` starts before ``anyio.run`` starts any thread: a process never
  forks while it runs threads (without such a pool, a worker thread hashes alone).
* **Interval.** The next full walk starts ``max(min_interval, walk_time * (1/f - 1))``
  seconds after the last one ended (``f`` = ``cpu_fraction``, capped at
  ``max_interval``): a warm walk of 100,000 files takes ~0.5 s (docs/benchmarks.md,
  ceilings §2), so such a share is rescanned every 2 s, and a ten-times bigger one
  spends at most a fifth of a core on it.

Hooks run in the event loop's thread (worker threads hand them over), so a
``kbapps.output.Progress`` can be driven from them directly.

Why one module of some 720 lines: the walk, the plan of a pass and the loop that
schedules passes share the stop signal and the stamps compared between passes; the
strategy above is most of its length.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread

from kbapps.hashing import FileKey, HashResult, ProcessPool, chunks_root, hash_files
from kbapps.share.index import FileIndex, FileStamp, IndexEntry, stamp_of
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
#: Digests kept for vanished files, so a directory renamed inside the share (its
#: files keep their stamps) is not re-hashed; cleared when full (memory bound).
_MAX_TOMBSTONES = 200_000
#: Changed files reported to the node per call (one driver step each).
_REPORT_BATCH = 4096


class IndexSink(Protocol):
    """Where the indexer reports what the share may advertise (``NodeHandle`` fits).

    Entries are ``(sha1, path, size)``; only trusted, unchanged files are reported.
    """

    async def set_files(self, entries: Iterable[tuple[str, str, int]]) -> None:
        """Replace everything advertised (called once, after the first walk)."""

    async def update_files(
        self, puts: Iterable[tuple[str, str, int]], removes: Iterable[str] = ()
    ) -> list[tuple[str, str]]:
        """Stop advertising ``removes``, then advertise (or replace) ``puts``; return the
        puts refused as ``(path, reason)``."""
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
        batch_files: most files hashed per batch (one transaction, one delta burst).
        batch_bytes: most bytes hashed per batch (a single bigger file is one batch).
        workers: for ``default_hasher`` when no hasher is given: threads for big
            files (``kbapps.hashing.default_workers()`` if None).
    """

    min_interval: float = 2.0
    max_interval: float = 60.0
    cpu_fraction: float = 0.2
    settle: float = 2.0
    batch_files: int = 4096
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
    """List the files a share serves: share-relative POSIX path -> ``FileStamp``.

    Symlinked files appear under the link's path with the target's stamp.

    Args:
        root: the share directory.
        on_warning: one line per skipped entry (may repeat on every walk).

    Raises:
        OSError: the root itself cannot be read.
    """
    warn = on_warning or (lambda message: None)
    new_stamp = tuple.__new__  # 4x cheaper than the NamedTuple constructor
    base = _Root(root)
    root_st = os.stat(base.real)
    os.scandir(base.real).close()  # an unreadable root is an error, not an empty share
    found: dict[str, FileStamp] = {}
    stack: list[tuple[str, str, int, frozenset[tuple[int, int]]]] = [
        ("", base.real, 0, frozenset({(root_st.st_dev, root_st.st_ino)}))
    ]
    while stack:
        rel, path, depth, ancestors = stack.pop()
        try:
            with os.scandir(path) as listing:
                entries = list(listing)
        except OSError as exc:
            warn(f"skipping directory {_show(rel)}: {exc.strerror or exc}")
            continue
        prefix = f"{rel}/" if rel else ""
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
                found[relname] = new_stamp(
                    FileStamp, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
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
                    stack.append((relname, entry.path, depth + 1, ancestors | {key}))
            else:
                warn(f"skipping {_show(relname)}: not a regular file or directory")
    return found


# --- the indexer ---------------------------------------------------------------------


class _Stopped(Exception):
    """The indexer is stopping: abandon the batch being hashed."""


@dataclass(slots=True)
class _Plan:
    """What one walk asks for."""

    removes: list[str] = field(default_factory=list)
    reuse: list[IndexEntry] = field(default_factory=list)
    hash_now: list[tuple[str, FileStamp]] = field(default_factory=list)


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
        self._advertised: dict[str, tuple[str, int]] = {}
        self._pending: dict[str, tuple[FileStamp, float]] = {}
        self._failed: dict[str, FileStamp] = {}
        self._tombstones: dict[FileStamp, IndexEntry] = {}
        self._warned: set[str] = set()
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
    def advertised(self) -> dict[str, tuple[str, int]]:
        """A copy of what the sink was last told: path -> ``(sha1, size)``."""
        return dict(self._advertised)

    @property
    def pending(self) -> tuple[str, ...]:
        """Paths waiting to settle before they are hashed."""
        return tuple(self._pending)

    async def run(self, sink: IndexSink) -> None:
        """Index the share and report to ``sink`` until cancelled.

        The first walk's unchanged entries go in one ``set_files``; everything after
        is ``put_file``/``remove_file``. Errors of the sink propagate.
        """
        self._rescan = anyio.Event()
        try:
            await self._full_pass(sink, initial=True)
            if self._pending:
                # Files written just before the start (a fresh dataset) settle within
                # ``settle`` seconds: count them in "Indexed N files." too. Files still
                # changing then stay pending and come later.
                await anyio.sleep(
                    max(0.0, max(d for _, d in self._pending.values()) - time.monotonic())
                )
                await self._settle_pass(sink)
            if self.hooks.on_initial_done is not None:
                self.hooks.on_initial_done(len(self._advertised))
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
                    await self._full_pass(sink, initial=False)
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

    async def _full_pass(self, sink: IndexSink, *, initial: bool) -> None:
        started = time.monotonic()
        warnings: list[str] = []
        try:
            found = await self._thread(
                lambda: walk_share(self._root.real, on_warning=warnings.append)
            )
        except OSError as exc:
            # The root went away or became unreadable: keep what we have, say so once.
            self._warn(f"cannot read the share directory: {exc.strerror or exc}")
            return
        finally:
            for message in warnings:
                self._warn(message)
        plan = await self._thread(self._plan, found)
        self.walks += 1
        self.last_walk_seconds = time.monotonic() - started
        if plan.removes or plan.reuse:
            await self._thread(self.index.apply, plan.reuse, plan.removes)
        if initial:
            trusted = self.index.trusted
            entries = [e for e in self.index.entries() if trusted(e)]
            self._advertised = {e.path: (e.sha1, e.size) for e in entries}
            await sink.set_files([(e.sha1, e.path, e.size) for e in entries])
        else:
            await self._report(sink, plan.reuse, plan.removes)
        await self._hash(sink, plan.hash_now)

    def _plan(self, found: dict[str, FileStamp]) -> _Plan:
        """Compare a walk with the index (worker thread; owns the indexer state)."""
        plan = _Plan()
        index = self.index
        now_ns = time.time_ns()
        mono = time.monotonic()
        settle_ns = int(self.config.settle * 1e9)
        window = index.racy_window_ns
        tombstones = self._tombstones
        pending = self._pending
        # Pass 1 over the index: vanished, changed, unchanged (trusted: nothing to do;
        # racy: re-hash once the window is over). Both passes run once per file on
        # every walk, hence the inlined tests (``IndexEntry.racy``) and no stamp
        # objects built per file.
        unchanged: set[str] = set()
        for entry in index.entries():
            path = entry.path
            stamp = found.get(path)
            newest = max(entry.mtime_ns, entry.ctime_ns)
            trusted = not (entry.hashed_ns - window < newest <= entry.hashed_ns + window)
            if stamp is None:
                plan.removes.append(path)
                if trusted:
                    if len(tombstones) >= _MAX_TOMBSTONES:
                        tombstones.clear()
                    tombstones[entry.stamp] = entry
            elif stamp != entry[1:6]:
                plan.removes.append(path)
            else:
                unchanged.add(path)
                if trusted and entry.chunks_root is None:
                    # Indexed before chunk digests: hashed once more, for them; it
                    # stays advertised meanwhile (its SHA-1 is still right).
                    plan.hash_now.append((path, stamp))
                    continue
                if trusted:
                    continue
                if now_ns >= newest + window:
                    plan.hash_now.append((path, stamp))
                else:
                    pending[path] = (stamp, mono + (newest + window - now_ns) / 1e9)
        for path in [p for p in pending if p not in found]:
            del pending[path]
        failed = self._failed
        for path in [p for p in failed if found.get(p) != failed[p]]:
            del failed[path]
        # Pass 2 over the new and changed paths only.
        for path in [p for p in found if p not in unchanged]:
            stamp = found[path]
            if path in failed:
                continue
            old = tombstones.pop(stamp, None)
            if old is not None:
                plan.reuse.append(old._replace(path=path))
                continue
            age = now_ns - max(stamp.mtime_ns, stamp.ctime_ns)
            seen = pending.get(path)
            if age >= settle_ns or (seen is not None and seen[0] == stamp and seen[1] <= mono):
                pending.pop(path, None)
                plan.hash_now.append((path, stamp))
            elif seen is None or seen[0] != stamp:
                wait = (settle_ns - age) / 1e9 if age >= 0 else self.config.settle
                pending[path] = (stamp, mono + min(self.config.settle, wait))
        return plan

    async def _settle_pass(self, sink: IndexSink) -> None:
        """Re-``stat`` the pending files that are due; hash those that kept still."""
        now = time.monotonic()
        due = [(p, s) for p, (s, d) in self._pending.items() if d <= now]
        if not due:
            return
        ready, gone = await self._thread(self._restat, due)
        if gone:
            await self._thread(self.index.apply, (), gone)
            await self._report(sink, [], gone)
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

    def _batches(self, items: list[tuple[str, FileStamp]]) -> Iterator[list[tuple[str, FileStamp]]]:
        cfg = self.config
        batch: list[tuple[str, FileStamp]] = []
        size = 0
        for item in items:
            if batch and (len(batch) >= cfg.batch_files or size + item[1].size > cfg.batch_bytes):
                yield batch
                batch, size = [], 0
            batch.append(item)
            size += item[1].size
        if batch:
            yield batch

    async def _hash(self, sink: IndexSink, items: list[tuple[str, FileStamp]]) -> None:
        if not items:
            return
        hooks = self.hooks
        if hooks.on_hash_start is not None:
            hooks.on_hash_start(len(items), sum(s.size for _, s in items))
        try:
            for batch in self._batches(items):
                puts, removes, warnings = await self._thread(self._hash_batch, batch)
                for message in warnings:
                    self._warn(message)
                await self._report(sink, puts, removes)
        finally:
            if hooks.on_hash_end is not None:
                hooks.on_hash_end()

    def _progress(self, files: int, nbytes: int) -> None:
        # Runs in the worker thread, from inside the hasher.
        if self._stop.is_set():
            raise _Stopped
        hook = self.hooks.on_hash_progress
        if hook is not None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody to tell
                anyio.from_thread.run_sync(hook, files, nbytes)

    def _hash_batch(
        self, batch: list[tuple[str, FileStamp]]
    ) -> tuple[list[IndexEntry], list[str], list[str]]:
        """Hash one batch and record it (worker thread)."""
        started_ns = time.time_ns()
        mono = time.monotonic()
        by_full = {self._root.join(path): (path, stamp) for path, stamp in batch}
        items = [(full, FileKey(*stamp[:4])) for full, (_, stamp) in by_full.items()]
        puts: list[IndexEntry] = []
        removes: list[str] = []
        warnings: list[str] = []
        lists: dict[str, bytes] = {}
        results = self._hasher(items, self._progress)
        try:
            for result in results:
                if self._stop.is_set():
                    raise _Stopped
                path, stamp = by_full[result.path]
                digest = result.digest
                if (
                    digest is not None
                    and digest.chunks is not None
                    and result.key == FileKey(*stamp[:4])
                ):
                    root = chunks_root(digest.chunks)
                    puts.append(
                        IndexEntry(path, *stamp, digest.sha1, digest.head_sha1, started_ns, root)
                    )
                    lists[digest.sha1] = digest.chunks
                    self._failed.pop(path, None)
                    continue
                if self.index.get(path) is not None:
                    removes.append(path)
                try:
                    now_stamp: FileStamp | None = stamp_of(os.stat(result.path))
                except OSError:
                    now_stamp = None  # gone: the next walk forgets it
                if now_stamp is None:
                    continue
                if now_stamp != stamp or digest is not None:
                    # It is being written: hash it once it has been still a while.
                    self._pending[path] = (now_stamp, mono + self.config.settle)
                else:
                    # Unchanged and unreadable: say so once, retry when it changes.
                    self._failed[path] = stamp
                    warnings.append(f"cannot read {_show(path)}: {result.error}")
        except _Stopped:
            return [], [], []
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()
        self.index.apply(puts, removes, lists)
        return puts, removes, warnings

    # --- reporting -------------------------------------------------------------------

    async def _report(self, sink: IndexSink, puts: list[IndexEntry], removes: list[str]) -> None:
        advertised = self._advertised
        gone = [path for path in removes if advertised.pop(path, None) is not None]
        trusted = self.index.trusted
        # Re-hashed (and then reported) once its racy window ends; unchanged: nothing.
        new = [
            entry
            for entry in puts
            if trusted(entry) and advertised.get(entry.path) != (entry.sha1, entry.size)
        ]
        # One call per batch, not per file: each call is a round trip to the node.
        for start in range(0, max(len(new), 1 if gone else 0), _REPORT_BATCH):
            batch = new[start : start + _REPORT_BATCH]
            refused = dict(
                await sink.update_files(
                    [(e.sha1, e.path, e.size) for e in batch], gone if start == 0 else ()
                )
            )
            for entry in batch:
                reason = refused.get(entry.path)
                if reason is not None:
                    self._warn(f"cannot advertise {_show(entry.path)}: {reason}")
                else:
                    advertised[entry.path] = (entry.sha1, entry.size)

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
