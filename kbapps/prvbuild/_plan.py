"""The plan of a ``.prvdir``: walk the tree and find which directories are unchanged
since their fragment was stored, so the totals are known before hashing starts."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, NamedTuple

from kbapps.hashing import PARALLEL_MIN_FILES, FileKey, ForkedTask
from kbapps.prvbuild import _fragments
from kbapps.prvbuild._common import (
    DEFAULT_OPTIONS,
    DIGESTS_HEX,
    BuildOptions,
    PrvBuildError,
    Warn,
)
from kbapps.prvbuild._scan import (
    BY_NAME,
    ScannedDir,
    ScannedFile,
    StackItem,
    TreeScan,
    scan_directory,
    start_walk,
    walk,
)

if TYPE_CHECKING:
    from kbapps.hashing import Buffer, Fragments


class TreePlan(NamedTuple):
    """What ``plan_prvdir`` found: the tree, and what is left to hash.

    Attributes:
        root: the directory as given.
        dirs: every directory, the root first, parents before their children.
        pending: for each directory to (re)build, its files in name order.
        hits: for each unchanged directory (served from its stored fragment), its
            number of files and of bytes.
        known: the tree's stored fragments (``HashCache.fragments``).
        total_files: every file of the tree (for a progress bar).
        options: what ``plan_prvdir`` was given (``write_planned`` goes on with it).
    """

    root: str
    dirs: tuple[ScannedDir, ...]
    pending: dict[int, list[ScannedFile]]
    hits: dict[int, tuple[int, int]]
    known: Fragments
    total_files: int
    options: BuildOptions


def plan_from_scan(
    scan: TreeScan,
    known: Fragments,
    options: BuildOptions,
) -> TreePlan:
    """Group the files of ``scan`` by directory (each in name order) and check the
    directories that have a stored fragment."""
    files_of: dict[int, list[ScannedFile]] = {}
    for scanned in scan.files:
        listed = files_of.get(scanned.dir_index)
        if listed is None:
            files_of[scanned.dir_index] = listed = []
        listed.append(scanned)
    to_check: list[tuple[int, list[ScannedFile], Buffer]] = []
    for index, listed in files_of.items():
        listed.sort(key=BY_NAME)
        stored = known.get(scan.dirs[index].relpath)
        if stored is not None and stored[1]:  # (an empty fragment: not reusable)
            to_check.append((index, listed, stored[0]))
    hits: dict[int, tuple[int, int]] = {}
    for index, unchanged, nbytes in _fragments.check_stored(
        to_check, options.exclude, options.nworkers()
    ):
        if unchanged:
            hits[index] = (len(files_of.pop(index)), nbytes)
    return TreePlan(scan.root, scan.dirs, files_of, hits, known, len(scan.files), options)


def plan_prvdir(root: str, options: BuildOptions = DEFAULT_OPTIONS) -> TreePlan:
    """Scan ``root`` (as ``scan_directory``) and check which directories are
    unchanged since their fragment was stored: the first half of ``write_prvdir``,
    so a caller can size a progress bar before hashing starts.

    When the tree has a fragment file (a re-run) of many files, the walk itself is
    shared with a forked process (``ForkedTask``): each lists and checks half of the
    root's subdirectories, and only the files of changed directories come back.

    Args:
        root: the directory.
        options: ``on_progress`` is not used here (``write_planned`` takes it).

    Raises:
        PrvBuildError: as ``scan_directory``.
    """
    cache = options.cache
    known = cache.fragments.load(os.path.realpath(root)) if cache is not None else {}
    return plan_known(root, options, known)


def plan_known(root: str, options: BuildOptions, known: Fragments) -> TreePlan:
    """``plan_prvdir`` with the tree's stored fragments already loaded."""
    warn = options.warn()
    nworkers = options.nworkers()
    # DIGESTS_HEX hex digits of digests per stored file.
    stored_files = sum([len(entry[2]) for entry in known.values()]) // DIGESTS_HEX
    if stored_files < PARALLEL_MIN_FILES or nworkers < 2:
        return plan_from_scan(scan_directory(root, on_warning=warn), known, options)
    root_real, stack = start_walk(root)
    dirs: list[ScannedDir] = [ScannedDir(-1, "", "")]
    files: list[ScannedFile] = []
    walk(root, root_real, stack, dirs, files, warn, limit=1)  # the root only
    if len(stack) < 2:
        walk(root, root_real, stack, dirs, files, warn)
        scan = TreeScan(root, tuple(dirs), tuple(files))
        return plan_from_scan(scan, known, options)
    base = len(dirs)
    theirs = stack[1::2]
    mine = stack[0::2]

    def part(
        items: list[StackItem], found: list[ScannedFile], emit: Warn
    ) -> tuple[list[tuple[int, int, int]], list[ScannedFile]]:
        # Walk, then check every listed directory that has a stored fragment:
        # ([(dir, files, bytes)] unchanged, [files of the others]).
        walk(root, root_real, items, dirs, found, emit)
        return _fragments.check_part(found, dirs, known, options.exclude)

    def their_half() -> tuple[Any, ...]:  # pragma: no cover - runs in a forked process
        messages: list[str] = []
        try:
            hits, pending = part(theirs, [], messages.append)
        except PrvBuildError as exc:
            return (str(exc), messages)
        return (
            None,
            messages,
            [tuple(d) for d in dirs[base:]],
            hits,
            [(f.path, tuple(f.key) if f.key else None, f.dir_index, f.name) for f in pending],
        )

    task = ForkedTask.start(their_half)
    if task is None:  # this process may not fork now: it walks the rest alone
        walk(root, root_real, stack, dirs, files, warn)
        return plan_from_scan(TreeScan(root, tuple(dirs), tuple(files)), known, options)
    try:
        hits, pending = part(mine, files, warn)
        answered, answer = task.result()
    finally:
        task.close()
    if not answered:  # the other process died: walk its half here
        more_hits, more_pending = part(theirs, [], warn)
        hits += more_hits
        pending += more_pending
    else:
        for message in answer[1]:
            warn(message)
        if answer[0] is not None:
            raise PrvBuildError(answer[0])
        _, _, their_dirs, their_hits, their_pending = answer
        shift = len(dirs) - base  # their directories go after ours

        def moved(index: int) -> int:
            return index if index < base else index + shift

        for parent, name, relpath in their_dirs:
            dirs.append(ScannedDir(moved(parent), name, relpath))
        hits += [(moved(index), nfiles, nbytes) for index, nfiles, nbytes in their_hits]
        pending += [
            ScannedFile(path, FileKey(*key) if key else None, moved(index), name)
            for path, key, index, name in their_pending
        ]
    pending_of: dict[int, list[ScannedFile]] = {}
    for scanned in pending:  # each directory's files stay together, in name order
        listed = pending_of.get(scanned.dir_index)
        if listed is None:
            pending_of[scanned.dir_index] = listed = []
        listed.append(scanned)
    hit_of = {index: (nfiles, nbytes) for index, nfiles, nbytes in hits}
    total = len(pending) + sum([nfiles for nfiles, _ in hit_of.values()])
    return TreePlan(root, tuple(dirs), pending_of, hit_of, known, total, options)
