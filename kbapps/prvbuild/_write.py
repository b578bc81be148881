"""Writing a ``.prvdir``: the entry points of the fast path, which write the document
straight from digests and stored fragments (``_text``), hashing only the files of
changed directories (``_worker``, on ``kbapps.hashing.pool``) and storing the tree's
fragments (``_fragments``).

``write_tree`` is ``kb-prv-create``'s: a tree described before is planned first
(``plan_prvdir``: its unchanged directories are checked, the rest hashed); a tree
never described is hashed while it is walked (``_write_streamed``), so the second
core starts on the first directory instead of after the whole walk.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from kbapps.hashing import RACY_WINDOW_NS, HashCache, PoolRun, ProcessPool
from kbapps.prvbuild._collect import Collected, finish_raw, wants_lookups
from kbapps.prvbuild._common import DEFAULT_OPTIONS, BuildOptions, Key, Stored
from kbapps.prvbuild._emit import Emitter, Writer
from kbapps.prvbuild._fragments import enclosing_digests, store_fragments
from kbapps.prvbuild._plan import TreePlan, plan_from_scan, plan_known
from kbapps.prvbuild._scan import BY_NAME, ScannedDir, ScannedFile, start_walk, walk
from kbapps.prvbuild._text import assemble, directory_text, stored_digests, stored_texts
from kbapps.prvbuild._worker import CHUNK_FILES, Jobs, TreeWorker, cut_chunks, tree_worker

if TYPE_CHECKING:
    from kbapps.hashing import Buffer, Fragments
    from kbapps.prvbuild._scan import TreeScan

#: What a tree's fragment file will hold: (relpath, key text, entries text, digests).
_Kept = tuple[str, "Buffer", "Buffer", "Buffer"]


def _hashing_run(
    pool: ProcessPool,
    collected: Collected,
    exclude: frozenset[tuple[int, int]],
    cache: HashCache | None,
    table: dict[Key, Stored],
) -> PoolRun:
    # The job of hashing a tree's chunks on ``pool``, reported to ``collected``. Worker
    # processes open their own connection to the cache, only if lookups may answer.
    lookups = wants_lookups(cache, table)
    cache_path = cache.path if cache is not None and lookups else None
    local = TreeWorker(exclude, cache, table, lookups)
    return pool.run(local, tree_worker, (exclude, table, lookups, cache_path), collected.take)


def build_prvdir_bytes(scan: TreeScan, options: BuildOptions = DEFAULT_OPTIONS) -> bytes:
    """Like ``build_prvdir`` followed by ``serialize_prvdir``, only faster.

    Same arguments and errors as ``build_prvdir``. With a cache, every directory's
    files section is also remembered and reused while none of its files changed
    (name, device, inode, size and mtime all equal), unless one of them was modified
    within ``RACY_WINDOW_NS`` of the run.

    Returns:
        The ``.prvdir`` bytes, identical to ``serialize_prvdir(build_prvdir(...))``.
    """
    pieces: list[Buffer] = []
    write_prvdir(scan, pieces.extend, options)
    return b"".join(pieces)


def write_prvdir(scan: TreeScan, write: Writer, options: BuildOptions = DEFAULT_OPTIONS) -> None:
    """``build_prvdir_bytes``, handing the document to ``write`` as a list of pieces
    (bytes or read-only buffers, to be written in order) instead of joining them:
    a 20,000-file ``.prvdir`` is 7 MB, and ``kb-prv-create`` writes the pieces
    straight to OUT. When the tree's fragment file must be rewritten, a forked
    process writes it while this one assembles the document and calls ``write``.

    Raises:
        PrvBuildError: as ``build_prvdir``; and whatever ``write`` raises.
    """
    cache = options.cache
    known = cache.fragments.load(os.path.realpath(scan.root)) if cache is not None else {}
    write_planned(plan_from_scan(scan, known, options), write)


def write_tree(
    root: str,
    write: Writer,
    options: BuildOptions = DEFAULT_OPTIONS,
    on_total: Callable[[int], None] | None = None,
) -> None:
    """Walk ``root``, hash what changed and hand its ``.prvdir`` to ``write`` (as
    ``write_prvdir(scan_directory(root), ...)``, same bytes and errors).

    A tree with stored fragments is planned first (``plan_prvdir``); any other is
    hashed while the walk runs, on every core.

    Args:
        root: the directory.
        write: takes the document as lists of pieces, over one or more calls (a
            tree never described: a directory at a time, while hashing goes on).
        options: as for ``plan_prvdir``.
        on_total: called once with the number of files in the tree, as soon as the
            walk has found them all (for a progress bar; hashing may have started).

    Raises:
        PrvBuildError: as ``scan_directory`` and ``build_prvdir``; and whatever
            ``write`` raises.
    """
    cache = options.cache
    scope = os.path.realpath(root)
    known = cache.fragments.load(scope) if cache is not None else {}
    if known:
        plan = plan_known(root, options, known)
        if on_total is not None:
            on_total(plan.total_files)
        write_planned(plan, write)
    else:
        _write_streamed(root, scope, write, options, on_total)


def write_planned(plan: TreePlan, write: Writer) -> None:
    """``write_prvdir`` for a ``plan_prvdir`` result, with the options it was
    planned with.

    Args:
        plan: from ``plan_prvdir``.
        write: takes the document as a list of pieces, to be written in order.

    Raises:
        PrvBuildError: if a file cannot be read (the message names it); and
            whatever ``write`` raises.
    """
    options = plan.options
    cache = options.cache
    report = options.report()
    nworkers = options.nworkers()
    dirs = plan.dirs
    ndirs = len(dirs)
    depth = [0] * ndirs
    for index in range(1, ndirs):  # parents come first
        depth[index] = depth[dirs[index].parent] + 1
    relpaths = [d.relpath for d in dirs]
    scope = os.path.realpath(plan.root)
    known = plan.known

    fragments: list[Buffer | None] = [None] * ndirs
    keep: list[_Kept] = []
    hit_files = hit_bytes = 0
    for index, (nfiles, nbytes) in plan.hits.items():
        stored = known[relpaths[index]]
        fragments[index] = stored[1]
        keep.append((relpaths[index], *stored))
        hit_files += nfiles
        hit_bytes += nbytes
    if hit_files:
        report(hit_files, hit_bytes)
        options.cached()(hit_files)
    jobs = Jobs([], [], [], [])
    for index in sorted(plan.pending):
        jobs.add(plan.pending[index], index)

    collected = Collected(report, options.warn(), relpaths, options.cached())
    if jobs.paths:
        # The stored digests that may answer: those of the changed directories (an
        # edited, added or renamed file, or one moved between them), or of the whole
        # tree when a directory is new (its files may come from anywhere).
        stored_of = {relpaths[index]: known.get(relpaths[index]) for index in plan.pending}
        if not known and cache is not None:
            # A tree never described: maybe part of one that was (a subdirectory).
            table = enclosing_digests(cache, scope, whole=True, itself=False)
        elif any(entry is None for entry in stored_of.values()):
            table = stored_digests(known)
        else:
            table = stored_digests({k: v for k, v in stored_of.items() if v is not None})
        pool = ProcessPool(nworkers)
        run = _hashing_run(pool, collected, options.exclude, cache, table)
        try:
            run.add(cut_chunks(jobs, 0, len(jobs.paths), depth, relpaths), len(jobs.paths))
            run.finish()
        finally:
            run.close()
            pool.close()
        if collected.raw:
            finish_raw(jobs, collected, depth, cache, nworkers)
    _finish(dirs, depth, fragments, keep, collected, len(jobs.paths), scope, known, options, write)


def _write_streamed(
    root: str,
    scope: str,
    write: Writer,
    options: BuildOptions,
    on_total: Callable[[int], None] | None,
) -> None:
    # A tree never described: list it one directory at a time and queue its files
    # in chunks as they are found; the pool forks its workers once there is enough
    # work, and this process walks, feeds them, then hashes with them. Directories
    # are written out (document and fragment file) as they complete, in the walk's
    # order, which is the document's: little is left to do once the last file is in.
    cache = options.cache
    warn = options.warn()
    nworkers = options.nworkers()
    # Maybe part of a tree that was described (a subdirectory): its digests answer.
    table = enclosing_digests(cache, scope, whole=True, itself=False) if cache else {}
    root_real, stack = start_walk(root)
    dirs: list[ScannedDir] = [ScannedDir(-1, "", "")]
    depth = [0]
    relpaths = [""]
    listed: list[ScannedFile] = []
    jobs = Jobs([], [], [], [])
    collected = Collected(options.report(), warn, relpaths, options.cached())
    emitter = Emitter(dirs, depth, collected, write, cache, scope, warn)
    # The fragment file grows while the walk runs: never part of the tree.
    exclude = options.exclude | emitter.growing()
    pool = ProcessPool(nworkers)
    run = _hashing_run(pool, collected, exclude, cache, table)
    queued = 0
    ok = False
    try:
        while stack:
            current = stack[-1][0]
            walk(root, root_real, stack, dirs, listed, warn, limit=1)  # that directory
            for index in range(len(depth), len(dirs)):
                depth.append(depth[dirs[index].parent] + 1)
                relpaths.append(dirs[index].relpath)
            emitter.listed(current, len(listed))
            if listed:
                listed.sort(key=BY_NAME)
                jobs.add(listed, current)
                listed.clear()
                # Whole chunks, and the rest too if it is half a chunk or more (so a
                # directory of 500 files is queued, and can be written out, at once);
                # a smaller rest waits for the next directory's files.
                ready = len(jobs.paths)
                if (ready - queued) % CHUNK_FILES < CHUNK_FILES // 2:
                    ready -= (ready - queued) % CHUNK_FILES
                if ready > queued:
                    run.add(cut_chunks(jobs, queued, ready, depth, relpaths), ready - queued)
                    queued = ready
                run.pump()
                emitter.advance()
        total = len(jobs.paths)
        if queued < total:
            run.add(cut_chunks(jobs, queued, total, depth, relpaths), total - queued)
        if on_total is not None:
            on_total(total)
        run.finish(emitter.advance)
        ok = True
    finally:
        run.close()
        pool.close()
        if not ok:
            emitter.abort()
    if collected.raw:
        finish_raw(jobs, collected, depth, cache, nworkers)
        collected.raw.clear()
    emitter.finish(total)


def _finish(
    dirs: Sequence[ScannedDir],
    depth: list[int],
    fragments: list[Buffer | None],
    keep: list[_Kept],
    collected: Collected,
    hashed: int,
    scope: str,
    known: Fragments,
    options: BuildOptions,
    write: Writer,
) -> None:
    # Join each hashed directory's texts, store the tree's fragments (forked when
    # many) and hand the document to ``write``.
    cache = options.cache
    relpaths = collected.relpaths
    limit = time.time_ns() - (cache.racy_window_ns if cache else RACY_WINDOW_NS)
    for index, parts in collected.texts.items():
        fragment = fragments[index] = directory_text(parts)
        keep.append((relpaths[index], *stored_texts(parts, fragment, limit)))
    storing = None
    if cache is not None and (hashed or len(keep) != len(known)):
        storing = store_fragments(cache, scope, keep, hashed, options.nworkers(), options.warn())
    try:
        write(assemble(dirs, depth, fragments))
    finally:
        if storing is not None:
            storing()
