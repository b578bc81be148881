"""Writing a ``.prvdir``: the entry points of the fast path, which write the document
straight from digests and stored fragments (``_text``), hashing only the files of
changed directories (``_pool``) and storing the tree's fragments (``_fragments``)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kbapps.hashing import RACY_WINDOW_NS
from kbapps.prvbuild._common import DEFAULT_OPTIONS, BuildOptions, ProgressCallback
from kbapps.prvbuild._fragments import enclosing_digests, store_fragments
from kbapps.prvbuild._plan import TreePlan, plan_from_scan
from kbapps.prvbuild._pool import Collected, Jobs, finish_raw, hash_jobs
from kbapps.prvbuild._text import assemble, quiet_only, stored_digests

if TYPE_CHECKING:
    from kbapps.hashing import _Buffer
    from kbapps.prvbuild._scan import TreeScan


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


def write_prvdir(
    scan: TreeScan,
    write: Callable[[list[_Buffer]], None],
    options: BuildOptions = DEFAULT_OPTIONS,
) -> None:
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


def write_planned(
    plan: TreePlan,
    write: Callable[[list[_Buffer]], None],
    on_progress: ProgressCallback | None = None,
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
    cache, exclude = options.cache, options.exclude
    warn = options.warn()
    report = on_progress or options.report()
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
    keep: list[tuple[str, _Buffer, _Buffer, _Buffer]] = []  # what the fragment file will hold
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
        listed = plan.pending[index]
        jobs.paths.extend([scanned.path for scanned in listed])
        jobs.names.extend([scanned.name for scanned in listed])
        jobs.keys.extend([scanned.key for scanned in listed])
        jobs.dirs.extend([index] * len(listed))

    if jobs.paths:
        collected = Collected(report, warn, relpaths)
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
        hash_jobs(jobs, relpaths, depth, exclude, cache, table, nworkers, collected)
        if collected.raw:
            finish_raw(jobs, collected, depth, cache, nworkers)
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
    if cache is not None and (jobs.paths or len(keep) != len(known)):
        storing = store_fragments(cache, scope, keep, len(jobs.paths), nworkers, warn)
    try:
        write(assemble(dirs, depth, fragments))
    finally:
        if storing is not None:
            storing()


def _first_of(part: tuple[Any, ...]) -> int:
    # The sort key of a segment's texts: its first job (files in directory order).
    return int(part[0])
