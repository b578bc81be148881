"""The walk: list the directories and files a ``.prvdir`` would hold.

``scan_directory`` walks the tree once with ``os.scandir`` and an explicit stack (no
recursion limit). Regular files are known from the directory entry's type; their
``stat`` is left to the hashing workers, so it runs on every core. Directories and
symlinks are ``stat``-ed here. Names starting with ``.`` are skipped; symlinks are
followed only when their target resolves inside the directory, not through a
dot-name, and (for directories) is not one of the link's own ancestors, so there are
no loops; special files (FIFOs, sockets, devices) and names a ``.prvdir`` cannot hold
are skipped with a warning. An unreadable directory is an error naming it.

``start_walk`` and ``walk`` are the same walk in steps, for callers that share it
between processes or hash while it runs.
"""

from __future__ import annotations

import operator
import os
import stat
from typing import NamedTuple

from kbapps.hashing import FileKey
from kbapps.prvbuild._common import MAX_DEPTH, PrvBuildError, Warn, rel, show


class ScannedFile(NamedTuple):
    """One regular file found by ``scan_directory`` (a NamedTuple: one per file; its
    first two fields make it a ``hash_records`` item as it is).

    Attributes:
        path: a path to open it by (the scanned root joined with its relative path).
        key: its ``stat`` identity if the scan took one (symlinks), else None.
        dir_index: index of its directory in ``TreeScan.dirs``.
        name: its entry name.
    """

    path: str
    key: FileKey | None
    dir_index: int
    name: str


#: Sort key of the ``ScannedFile`` of one directory: by name (a C function, ~4x
#: faster than comparing the tuples, whose paths share the directory's prefix).
BY_NAME = operator.itemgetter(3)


class ScannedDir(NamedTuple):
    """One directory found by ``scan_directory``; index 0 is the root.

    Attributes:
        parent: index of the parent directory (-1 for the root).
        name: entry name in the parent ("" for the root).
        relpath: ``/``-separated path relative to the root ("" for the root).
    """

    parent: int
    name: str
    relpath: str


class TreeScan(NamedTuple):
    """What ``scan_directory`` found; parents always precede their children.

    Attributes:
        root: the directory as given.
        dirs: every directory, the root first.
        files: every regular file to hash.
    """

    root: str
    dirs: tuple[ScannedDir, ...]
    files: tuple[ScannedFile, ...]


def _valid_name(name: str) -> bool:
    from kbproto.prv import is_valid_entry_name  # rare names only: see the constants

    return is_valid_entry_name(name)


def _inside(target: str, root_real: str) -> bool:
    if target == root_real:
        return True
    prefix = root_real if root_real.endswith(os.sep) else root_real + os.sep
    if not target.startswith(prefix):
        return False
    # A link into a dot-directory (.kbucket, .git) would publish what we skip.
    return not any(part.startswith(".") for part in target[len(prefix) :].split(os.sep))


def scan_directory(root: str, *, on_warning: Warn | None = None) -> TreeScan:
    """Walk ``root`` and list the directories and files a ``.prvdir`` would hold.

    Regular files are recognised from the directory entry's type, without a ``stat``
    (that is left to the hashing workers, so it runs on every core); symlinks are
    resolved and ``stat``-ed here, since their target decides what they are.

    Args:
        root: the directory.
        on_warning: called with one line per skipped entry.

    Returns:
        The ``TreeScan``.

    Raises:
        PrvBuildError: if a directory cannot be read, or the tree is deeper than the
            ``.prvdir`` depth limit.
    """
    warn = on_warning or (lambda message: None)
    root_real, stack = start_walk(root)
    dirs: list[ScannedDir] = [ScannedDir(-1, "", "")]
    files: list[ScannedFile] = []
    walk(root, root_real, stack, dirs, files, warn)
    return TreeScan(root, tuple(dirs), tuple(files))


#: A directory to list: (dir index, path to open, depth, (dev, ino) of it and its
#: ancestors).
StackItem = tuple[int, str, int, frozenset[tuple[int, int]]]


def start_walk(root: str) -> tuple[str, list[StackItem]]:
    # The root's real path (symlink targets must stay inside it) and the first item.
    root_real = os.path.realpath(root)
    try:
        root_st = os.stat(root)
    except OSError as exc:
        raise PrvBuildError(f"cannot read {root}: {exc.strerror}") from None
    return root_real, [(0, root, 0, frozenset({(root_st.st_dev, root_st.st_ino)}))]


def walk(
    root: str,
    root_real: str,
    stack: list[StackItem],
    dirs: list[ScannedDir],
    files: list[ScannedFile],
    warn: Warn,
    limit: int = -1,
) -> None:
    """List the directories on ``stack`` and, depth first, all below them (at most
    ``limit`` directories if it is not negative): new directories are appended to
    ``dirs`` (and pushed), regular files to ``files`` (those of one directory one
    after the other)."""
    append_file = files.append
    new_file = tuple.__new__
    while stack and limit != 0:
        limit -= 1
        dir_index, dir_path, depth, ancestors = stack.pop()
        relbase = dirs[dir_index].relpath
        shown_dir = os.path.join(root, relbase) if relbase else root
        subdirs: list[tuple[str, str, os.stat_result]] = []
        try:
            with os.scandir(dir_path) as listing:
                entries = list(listing)
        except OSError as exc:
            raise PrvBuildError(f"cannot read directory {shown_dir}: {exc.strerror}") from None
        for entry in entries:
            name = entry.name
            if name[0] == ".":
                continue
            # The file system already excludes "/" and NUL; check the rest only when
            # the name could fail (the regex costs more than the whole test below).
            if (not name.isascii() or "\\" in name) and not _valid_name(name):
                warn(f"skipping {show(rel(relbase, name))}: a .prvdir cannot hold this name")
                continue
            try:
                if entry.is_file(follow_symlinks=False):
                    # A regular file, not a symlink: the common case, first and cheap
                    # (the C constructor of the tuple, not the NamedTuple's __new__).
                    append_file(new_file(ScannedFile, (entry.path, None, dir_index, name)))
                    continue
                if entry.is_symlink():
                    target = os.path.realpath(entry.path)
                    if not _inside(target, root_real):
                        warn(
                            f"skipping {show(rel(relbase, name))}: symlink points outside"
                            f" {root} or into a hidden entry"
                        )
                        continue
                    st = os.stat(entry.path)
                    if stat.S_ISREG(st.st_mode):
                        append_file(ScannedFile(entry.path, FileKey.from_stat(st), dir_index, name))
                        continue
                else:
                    st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                warn(f"skipping {show(rel(relbase, name))}: it vanished or is a broken symlink")
                continue
            except OSError as exc:
                raise PrvBuildError(
                    f"cannot read {show(rel(relbase, name))}: {exc.strerror}"
                ) from None
            if stat.S_ISDIR(st.st_mode):
                if (st.st_dev, st.st_ino) in ancestors:
                    warn(f"skipping {show(rel(relbase, name))}: symlink loop")
                    continue
                subdirs.append((name, entry.path, st))
            else:
                warn(f"skipping {show(rel(relbase, name))}: not a regular file or directory")
        if subdirs and depth + 1 > MAX_DEPTH:
            raise PrvBuildError(
                f"{show(shown_dir)}: directories nested deeper than {MAX_DEPTH} levels"
            )
        # Pushed in reverse name order, so popped in name order: the walk lists the
        # directories in the order of the document (depth first, by name).
        subdirs.sort(reverse=True)
        for name, path, st in subdirs:
            dirs.append(ScannedDir(dir_index, name, rel(relbase, name)))
            stack.append((len(dirs) - 1, path, depth + 1, ancestors | {(st.st_dev, st.st_ino)}))
