"""The fragment cache of a tree: finding stored digests, checking directories
against their stored keys, and storing a tree's fragments.

Per tree, one checksummed file in the cache directory (``HashCache.fragments``)
keeps every directory's ``.prvdir`` text, the key of each of its
files and their digests (see ``_text``). An unchanged directory then costs one
``stat`` per file and a comparison (``check_dirs``; on two processes for big trees:
``check_stored``, ``check_part``). When a directory did change, the digests stored
for the whole tree answer for every file whose key is unchanged (one that moved
within the tree too), so only new content is read.

The digests of a tree's small files are kept there only, not also as one SQLite row
per file: those rows cost ~3-5 µs per file, a fifth of hashing a 4 KiB file. A run
over a subdirectory of a tree described before, or over one of its files
(``build_prv``), looks them up in the nearest enclosing tree's fragment file
(``enclosing_digests``). Files of ``BIG_FILE_BYTES`` and up still get their row, and
the rows of the database (single files, big files, other callers) are looked up for
files of changed directories when it holds any. What is not found: a small file
hashed only as part of an unrelated tree (another root, not an ancestor) is read
once more.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from kbapps.hashing import PARALLEL_MIN_FILES, ForkedTask, HashCache
from kbapps.prvbuild._common import Key, Stored, Warn
from kbapps.prvbuild._scan import BY_NAME
from kbapps.prvbuild._text import KEY_PART, key_bytes, stored_digests

if TYPE_CHECKING:
    from kbapps.hashing import Buffer, Fragments
    from kbapps.prvbuild._scan import ScannedDir, ScannedFile


def enclosing_digests(
    cache: HashCache, directory: str, *, whole: bool, itself: bool
) -> dict[Key, Stored]:
    """Return the stored digests (by key) of the files of ``directory`` (a real
    path) and, if ``whole``, of everything below it, from the nearest tree holding
    it (``directory`` itself too if ``itself``) that has a fragment file; empty if
    there is none."""
    scope = directory
    while True:
        known = cache.fragments.load(scope) if itself or scope != directory else {}
        if known:
            break
        parent = os.path.dirname(scope)
        if parent == scope:
            return {}
        scope = parent
    relpath = os.path.relpath(directory, scope).replace(os.sep, "/")
    relpath = "" if relpath == "." else relpath
    prefix = relpath + "/" if relpath else ""
    return stored_digests(
        {
            key: entry
            for key, entry in known.items()
            if key == relpath or (whole and key.startswith(prefix))
        }
    )


def store_fragments(
    cache: HashCache,
    scope: str,
    keep: list[tuple[str, Buffer, Buffer, Buffer]],
    hashed: int,
    workers: int,
    warn: Warn,
) -> Callable[[], None] | None:
    """Store the tree's fragments; when there are many (after hashing many files),
    in a forked process (``ForkedTask``), and return a function that waits for it."""

    def store() -> str | None:
        try:
            cache.fragments.store(scope, keep)
        except OSError as exc:
            return f"hash cache: cannot store directory fragments: {exc.strerror or exc}"
        return None

    task = ForkedTask.start(store) if hashed >= PARALLEL_MIN_FILES and workers >= 2 else None
    if task is None:
        message = store()
        if message:
            warn(message)
        return None

    def wait() -> None:
        try:
            stored, message = task.result()
        finally:
            task.close()
        if not stored:  # the process died: store here
            message = store()
        if message:
            warn(message)

    return wait


def check_dirs(
    items: Sequence[tuple[int, list[ScannedFile], Buffer]], exclude: frozenset[tuple[int, int]]
) -> list[tuple[int, bool, int]]:
    """Return, for each ``(dir index, files in name order, stored key text)``, whether
    the directory's key text is unchanged, and its bytes."""
    # A stat per file (the cost of the bare walk) and a comparison per directory: the
    # whole cost of a cached re-run. No tuple per file.
    out: list[tuple[int, bool, int]] = []
    stat_ = os.stat
    for index, listed, stored_keys in items:
        parts: list[str] = []
        append = parts.append
        nbytes = 0
        first = listed[0]
        dir_fd = -1
        try:
            # Names relative to the open directory: the kernel resolves one component
            # per stat instead of the whole path (~0.3 us of ~2.5 per file here).
            dir_fd = os.open(
                first.path[: -len(first.name) - 1] or "/",
                os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC,
            )
            for scanned in listed:
                key = scanned.key
                if key is None:
                    st = stat_(scanned.name, dir_fd=dir_fd)
                    dev, ino, size, mtime = st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns
                else:
                    dev, ino, size, mtime = key
                if exclude and (dev, ino) in exclude:
                    continue
                append(KEY_PART % (scanned.name, dev, ino, size, mtime))
                nbytes += size
        except OSError:
            out.append((index, False, 0))  # hashing reports it, with its usual message
            continue
        finally:
            if dir_fd >= 0:
                os.close(dir_fd)
        out.append((index, key_bytes("".join(parts)) == stored_keys, nbytes))
    return out


def check_stored(
    items: Sequence[tuple[int, list[ScannedFile], Buffer]],
    exclude: frozenset[tuple[int, int]],
    workers: int,
) -> list[tuple[int, bool, int]]:
    """``check_dirs`` on two processes when there are many files: a forked one
    (``ForkedTask``) checks the second half (by files) while this one checks the
    first."""
    total = sum([len(item[1]) for item in items])
    if workers < 2 or total < PARALLEL_MIN_FILES:
        return check_dirs(items, exclude)
    split, counted = 0, 0
    while counted * 2 < total:
        counted += len(items[split][1])
        split += 1
    theirs_items = items[split:]
    task = ForkedTask.start(lambda: check_dirs(theirs_items, exclude))
    if task is None:
        return check_dirs(items, exclude)
    try:
        mine = check_dirs(items[:split], exclude)
        checked, theirs = task.result()
    finally:
        task.close()
    if not checked or len(theirs) != len(theirs_items):  # it died: do its part here
        theirs = check_dirs(theirs_items, exclude)
    return mine + list(theirs)


def check_part(
    found: list[ScannedFile],
    dirs: Sequence[ScannedDir],
    known: Fragments,
    exclude: frozenset[tuple[int, int]],
) -> tuple[list[tuple[int, int, int]], list[ScannedFile]]:
    """Check the directories of ``found`` (files of one directory one after the
    other) against their stored fragments; return ``([(dir, files, bytes)]`` of the
    unchanged ones, the files of the others, each directory's in name order)."""
    groups: list[list[ScannedFile]] = []
    for scanned in found:
        if groups and groups[-1][0].dir_index == scanned.dir_index:
            groups[-1].append(scanned)
        else:
            groups.append([scanned])
    to_check: list[tuple[int, list[ScannedFile], Buffer]] = []
    pending: list[ScannedFile] = []
    by_index: dict[int, list[ScannedFile]] = {}
    for listed in groups:
        listed.sort(key=BY_NAME)
        index = listed[0].dir_index
        stored = known.get(dirs[index].relpath)
        if stored is not None and stored[1]:
            to_check.append((index, listed, stored[0]))
            by_index[index] = listed
        else:
            pending += listed
    hits: list[tuple[int, int, int]] = []
    for index, unchanged, nbytes in check_dirs(to_check, exclude):
        if unchanged:
            hits.append((index, len(by_index[index]), nbytes))
        else:
            pending += by_index[index]
    return hits, pending
