"""Writing a ``.prvdir``: the entry points of the fast path, which write the document
straight from digests and stored fragments (``_text``), hashing only the files of
changed directories (``_pool``) and storing the tree's fragments (``_fragments``).

``write_tree`` is ``kb-prv-create``'s: a tree described before is planned first
(``plan_prvdir``: its unchanged directories are checked, the rest hashed); a tree
never described is hashed while it is walked (``_write_streamed``), so the second
core starts on the first directory instead of after the whole walk.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from kbapps.hashing import RACY_WINDOW_NS, FragmentWriter, HashCache
from kbapps.prvbuild._common import DEFAULT_OPTIONS, BuildOptions, ProgressCallback
from kbapps.prvbuild._fragments import enclosing_digests, store_fragments
from kbapps.prvbuild._plan import TreePlan, plan_from_scan, plan_known
from kbapps.prvbuild._pool import (
    CHUNK_FILES,
    Collected,
    Jobs,
    Pool,
    TreeWorker,
    cut_chunks,
    finish_raw,
    wants_lookups,
)
from kbapps.prvbuild._scan import BY_NAME, ScannedDir, ScannedFile, start_walk, walk
from kbapps.prvbuild._text import assemble, open_dir, quiet_only, stored_digests

if TYPE_CHECKING:
    from kbapps.hashing import _Buffer
    from kbapps.prvbuild._scan import TreeScan

#: Takes the document as lists of pieces (bytes or read-only buffers), over one or
#: more calls: all the pieces, in order, are the document. The list is not kept.
Writer = Callable[[list["_Buffer"]], None]
#: The document is handed to ``write`` in pieces of about this much (a streamed
#: tree), so few writes while hashing goes on, and little held in memory.
_OUT_PIECE_BYTES = 1 << 20
#: What a tree's fragment file will hold: (relpath, key text, entries text, digests).
_Kept = tuple[str, "_Buffer", "_Buffer", "_Buffer"]


def build_prvdir_bytes(scan: TreeScan, options: BuildOptions = DEFAULT_OPTIONS) -> bytes:
    """Like ``build_prvdir`` followed by ``serialize_prvdir``, only faster.

    Same arguments and errors as ``build_prvdir``. With a cache, every directory's
    files section is also remembered and reused while none of its files changed
    (name, device, inode, size and mtime all equal), unless one of them was modified
    within ``RACY_WINDOW_NS`` of the run.

    Returns:
        The ``.prvdir`` bytes, identical to ``serialize_prvdir(build_prvdir(...))``.
    """
    pieces: list[_Buffer] = []
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
    known = cache.load_fragments(os.path.realpath(scan.root)) if cache is not None else {}
    write_planned(plan_from_scan(scan, known, options), write, options.on_progress)


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
    known = cache.load_fragments(scope) if cache is not None else {}
    if known:
        plan = plan_known(root, options, known)
        if on_total is not None:
            on_total(plan.total_files)
        write_planned(plan, write)
    else:
        _write_streamed(root, scope, write, options, on_total)


def write_planned(
    plan: TreePlan, write: Writer, on_progress: ProgressCallback | None = None
) -> None:
    """``write_prvdir`` for a ``plan_prvdir`` result, with the options it was
    planned with.

    Args:
        plan: from ``plan_prvdir``.
        write: takes the document as a list of pieces, to be written in order.
        on_progress: ``(files, bytes)`` deltas (replaces the plan's ``on_progress``
            when given: a progress bar is sized from ``plan.total_files``).

    Raises:
        PrvBuildError: if a file cannot be read (the message names it); and
            whatever ``write`` raises.
    """
    options = plan.options
    if on_progress is not None:
        options = options._replace(on_progress=on_progress)
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

    fragments: list[_Buffer | None] = [None] * ndirs
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
    jobs = Jobs([], [], [], [])
    for index in sorted(plan.pending):
        jobs.add(plan.pending[index], index)

    collected = Collected(report, options.warn(), relpaths)
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
        lookups = wants_lookups(cache, table)
        cache_path = cache.path if cache is not None and lookups else None
        worker = TreeWorker(options.exclude, cache, table, lookups)
        pool = Pool(worker, collected, nworkers, cache_path)
        ok = False
        try:
            pool.add(cut_chunks(jobs, 0, len(jobs.paths), depth, relpaths), len(jobs.paths))
            pool.finish()
            ok = True
        finally:
            pool.close(kill=not ok)
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
    # in chunks as they are found; the pool forks its children once there is enough
    # work, and this process walks, feeds them, then hashes with them. Directories
    # are written out (document and fragment file) as they complete, in the walk's
    # order, which is the document's: little is left to do once the last file is in.
    cache = options.cache
    warn = options.warn()
    nworkers = options.nworkers()
    # Maybe part of a tree that was described (a subdirectory): its digests answer.
    table = enclosing_digests(cache, scope, whole=True, itself=False) if cache else {}
    lookups = wants_lookups(cache, table)
    cache_path = cache.path if cache is not None and lookups else None
    root_real, stack = start_walk(root)
    dirs: list[ScannedDir] = [ScannedDir(-1, "", "")]
    depth = [0]
    relpaths = [""]
    listed: list[ScannedFile] = []
    jobs = Jobs([], [], [], [])
    collected = Collected(options.report(), warn, relpaths)
    pool = Pool(TreeWorker(options.exclude, cache, table, lookups), collected, nworkers, cache_path)
    emitter = _Emitter(dirs, depth, collected, write, cache, scope, warn)
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
                ready = len(jobs.paths) - (len(jobs.paths) - queued) % CHUNK_FILES
                if ready > queued:
                    pool.add(cut_chunks(jobs, queued, ready, depth, relpaths), ready - queued)
                    queued = ready
                pool.pump()
                emitter.advance()
        total = len(jobs.paths)
        if queued < total:
            pool.add(cut_chunks(jobs, queued, total, depth, relpaths), total - queued)
        if on_total is not None:
            on_total(total)
        pool.finish(emitter.advance)
        ok = True
    finally:
        pool.close(kill=not ok)
        if not ok:
            emitter.abort()
    if collected.raw:
        finish_raw(jobs, collected, depth, cache, nworkers)
        collected.raw.clear()
    emitter.finish(total)


class _Emitter:
    """Writes a streamed tree's document (to ``write``) and its fragment file (if
    there is a cache) a directory at a time: the next directory in document order
    as soon as it has been listed and all its files are in.

    ``dirs`` and ``depth`` grow as the walk runs; ``listed`` tells each directory's
    number of files once it is listed.
    """

    def __init__(
        self,
        dirs: Sequence[ScannedDir],
        depth: Sequence[int],
        collected: Collected,
        write: Writer,
        cache: HashCache | None,
        scope: str,
        warn: Callable[[str], None],
    ) -> None:
        self.dirs = dirs
        self.depth = depth
        self.collected = collected
        self.write = write
        self.warn = warn
        self.racy_ns = cache.racy_window_ns if cache else RACY_WINDOW_NS
        self.expected: dict[int, int] = {}  # files of each listed directory
        self.children: list[list[tuple[str, int]]] = [[]]
        self.stack: list[int | bytes] = [0]
        self.out: list[_Buffer] = []
        self.out_bytes = 0
        self.fragments: FragmentWriter | None = None
        if cache is not None:
            try:
                self.fragments = cache.fragment_writer(scope)
            except OSError as exc:
                self._store_failed(exc)

    def listed(self, index: int, nfiles: int) -> None:
        """Directory ``index`` has been listed: ``nfiles`` files, and its
        subdirectories are the entries of ``dirs`` added since the last call."""
        self.expected[index] = nfiles
        for sub in range(len(self.children), len(self.dirs)):
            self.children.append([])
            self.children[self.dirs[sub].parent].append((self.dirs[sub].name, sub))

    def advance(self) -> None:
        """Write out every directory that is complete, in order, up to the first
        that is not."""
        stack, out, collected = self.stack, self.out, self.collected
        while stack:
            item = stack[-1]
            if not isinstance(item, int):
                stack.pop()
                out.append(item)
                continue
            nfiles = self.expected.get(item)
            if nfiles is None or collected.counts.get(item, 0) < nfiles or item in collected.raw:
                break
            stack.pop()
            fragment = self._fragment(item)
            open_dir(self.depth[item], fragment, self.children[item], stack, out)
            self.out_bytes += len(fragment) if fragment else 0
            if self.out_bytes >= _OUT_PIECE_BYTES:
                self._flush()

    def finish(self, hashed: int) -> None:
        """Write out the rest (every file is in) and store the fragment file."""
        self.advance()
        if self.stack:  # pragma: no cover - every directory is complete by now
            raise AssertionError("a directory was never completed")
        self.out.append(b"\n")
        try:
            self._flush()
        except BaseException:
            self.abort()
            raise
        if self.fragments is not None:
            writer, self.fragments = self.fragments, None
            if not hashed:
                writer.abort()  # nothing worth remembering
                return
            try:
                writer.commit()
            except OSError as exc:
                self._store_failed(exc)

    def abort(self) -> None:
        """Drop the fragment file being written."""
        if self.fragments is not None:
            self.fragments.abort()
            self.fragments = None

    def _fragment(self, index: int) -> bytes | None:
        # Join the directory's texts, and store them (as write_planned's _finish).
        parts = self.collected.texts.pop(index, None)
        if not parts:
            return None
        parts.sort(key=_first_of)
        fragment = b",\n".join([part[1] for part in parts if part[1]])
        if self.fragments is not None:
            keys_text = b"".join([part[2] for part in parts])
            digests = b"".join([part[3] for part in parts])
            limit = time.time_ns() - self.racy_ns
            if max([part[4] for part in parts]) > limit:
                # As in _finish: a racy file's directory keeps no text, and the
                # racy files no digest.
                keys_text, digests = quiet_only(keys_text, digests, limit)
                stored = b""
            else:
                stored = fragment
            try:
                self.fragments.add(self.collected.relpaths[index], keys_text, stored, digests)
            except OSError as exc:
                self.fragments = None  # (the writer dropped its file)
                self._store_failed(exc)
        return fragment

    def _flush(self) -> None:
        if self.out:
            pieces = self.out[:]
            self.out.clear()  # (the same list: advance holds it)
            self.out_bytes = 0
            self.write(pieces)

    def _store_failed(self, exc: OSError) -> None:
        self.warn(f"hash cache: cannot store directory fragments: {exc.strerror or exc}")


def _finish(
    dirs: Sequence[ScannedDir],
    depth: list[int],
    fragments: list[_Buffer | None],
    keep: list[_Kept],
    collected: Collected,
    hashed: int,
    scope: str,
    known: dict[str, tuple[_Buffer, _Buffer, _Buffer]],
    options: BuildOptions,
    write: Writer,
) -> None:
    # Join each hashed directory's texts, store the tree's fragments (forked when
    # many) and hand the document to ``write``.
    cache = options.cache
    relpaths = collected.relpaths
    limit = time.time_ns() - (cache.racy_window_ns if cache else RACY_WINDOW_NS)
    for index, parts in collected.texts.items():
        parts.sort(key=_first_of)
        fragment = b",\n".join([part[1] for part in parts if part[1]])
        fragments[index] = fragment
        keys_text = b"".join([part[2] for part in parts])
        digests = b"".join([part[3] for part in parts])
        if max([part[4] for part in parts]) <= limit:
            keep.append((relpaths[index], keys_text, fragment, digests))
        else:
            # A file modified within the racy window may change again within the
            # same mtime tick: its directory's fragment must not be trusted later,
            # nor its digest; the other files' digests are kept (no fragment).
            keys_text, digests = quiet_only(keys_text, digests, limit)
            keep.append((relpaths[index], keys_text, b"", digests))
    storing = None
    if cache is not None and (hashed or len(keep) != len(known)):
        storing = store_fragments(cache, scope, keep, hashed, options.nworkers(), options.warn())
    try:
        write(assemble(dirs, depth, fragments))
    finally:
        if storing is not None:
            storing()


def _first_of(part: tuple[Any, ...]) -> int:
    # The sort key of a segment's texts: its first job (files in directory order).
    return int(part[0])
