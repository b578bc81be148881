"""Building ``.prv`` and ``.prvdir`` documents from files on disk (SPEC §2, §3.3).

Two steps, so a command can show a progress bar with known totals:

1. ``scan_directory`` walks the tree once with ``os.scandir`` and an explicit stack (no
   recursion limit). Regular files are known from the directory entry's type; their
   ``stat`` is left to the hashing workers, so it runs on every core. Directories and
   symlinks are ``stat``-ed here. Names starting with ``.`` are skipped;
   symlinks are followed only when their target resolves inside the directory, not
   through a dot-name, and (for directories) is not one of the link's own ancestors,
   so there are no loops; special files (FIFOs, sockets, devices) and names a
   ``.prvdir`` cannot hold are skipped with a warning. An unreadable directory is an
   error naming it.
2. ``build_prvdir`` hashes what the scan found with ``kbapps.hashing`` (cache, all
   cores) and assembles the tree bottom-up. Every ``original_path`` is the file's path
   relative to the directory, never absolute. ``build_prvdir_bytes`` (what
   ``kb-prv-create`` uses) returns the same document as bytes, written straight from
   the digests, and reuses each unchanged directory's text from the hash cache (see
   the notes above it).

Everything is linear in the number of entries: 100,000 files is a list of 100,000
tuples, batched cache lookups (500 files a query) and one pass to assemble.
"""

from __future__ import annotations

import hashlib
import marshal
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import NamedTuple

from kbapps.hashing import (
    RACY_WINDOW_NS,
    FileKey,
    HashCache,
    HashResult,
    hash_files,
    hash_records,
)
from kbproto.errors import LocalProtocolError
from kbproto.ids import Sha1
from kbproto.prv import FCS_PREFIX, PRV_VERSION, Prv, PrvDir, PrvLimits, is_valid_entry_name

__all__ = (
    "PrvBuildError",
    "ScannedDir",
    "ScannedFile",
    "TreeScan",
    "build_prv",
    "build_prvdir",
    "build_prvdir_bytes",
    "files_fragment",
    "scan_directory",
)

_MAX_DEPTH = PrvLimits().max_depth

Warn = Callable[[str], None]
ProgressCallback = Callable[[int, int], None]


class PrvBuildError(Exception):
    """A ``.prv``/``.prvdir`` cannot be built; the message names the file."""


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


@dataclass(frozen=True, slots=True)
class ScannedDir:
    """One directory found by ``scan_directory``; index 0 is the root.

    Attributes:
        parent: index of the parent directory (-1 for the root).
        name: entry name in the parent ("" for the root).
        relpath: ``/``-separated path relative to the root ("" for the root).
    """

    parent: int
    name: str
    relpath: str


@dataclass(frozen=True, slots=True)
class TreeScan:
    """What ``scan_directory`` found; parents always precede their children.

    Attributes:
        root: the directory as given.
        dirs: every directory, the root first.
        files: every regular file to hash.
    """

    root: str
    dirs: tuple[ScannedDir, ...]
    files: tuple[ScannedFile, ...]


def _inside(target: str, root_real: str) -> bool:
    if target == root_real:
        return True
    prefix = root_real if root_real.endswith(os.sep) else root_real + os.sep
    if not target.startswith(prefix):
        return False
    # A link into a dot-directory (.kbucket, .git) would publish what we skip.
    return not any(part.startswith(".") for part in target[len(prefix) :].split(os.sep))


def _show(name: str) -> str:
    # Names are shown as typed, except characters that would break the line.
    return name.encode("utf-8", "backslashreplace").decode("utf-8").replace("\n", "\\n")


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
    root_real = os.path.realpath(root)
    try:
        root_st = os.stat(root)
    except OSError as exc:
        raise PrvBuildError(f"cannot read {root}: {exc.strerror}") from None
    dirs: list[ScannedDir] = [ScannedDir(-1, "", "")]
    files: list[ScannedFile] = []
    # Stack items: (dir index, path to open, depth, (dev, ino) of it and its ancestors).
    stack: list[tuple[int, str, int, frozenset[tuple[int, int]]]] = [
        (0, root, 0, frozenset({(root_st.st_dev, root_st.st_ino)}))
    ]
    append_file = files.append
    while stack:
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
            if (not name.isascii() or "\\" in name) and not is_valid_entry_name(name):
                warn(f"skipping {_show(_rel(relbase, name))}: a .prvdir cannot hold this name")
                continue
            try:
                if entry.is_symlink():
                    target = os.path.realpath(entry.path)
                    if not _inside(target, root_real):
                        warn(
                            f"skipping {_show(_rel(relbase, name))}: symlink points outside"
                            f" {root} or into a hidden entry"
                        )
                        continue
                    st = os.stat(entry.path)
                    if stat.S_ISREG(st.st_mode):
                        append_file(ScannedFile(entry.path, FileKey.from_stat(st), dir_index, name))
                        continue
                elif entry.is_file(follow_symlinks=False):
                    append_file(ScannedFile(entry.path, None, dir_index, name))
                    continue
                else:
                    st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                warn(f"skipping {_show(_rel(relbase, name))}: it vanished or is a broken symlink")
                continue
            except OSError as exc:
                raise PrvBuildError(
                    f"cannot read {_show(_rel(relbase, name))}: {exc.strerror}"
                ) from None
            if stat.S_ISDIR(st.st_mode):
                if (st.st_dev, st.st_ino) in ancestors:
                    warn(f"skipping {_show(_rel(relbase, name))}: symlink loop")
                    continue
                subdirs.append((name, entry.path, st))
            else:
                warn(f"skipping {_show(_rel(relbase, name))}: not a regular file or directory")
        if subdirs and depth + 1 > _MAX_DEPTH:
            raise PrvBuildError(
                f"{_show(shown_dir)}: directories nested deeper than {_MAX_DEPTH} levels"
            )
        for name, path, st in subdirs:
            dirs.append(ScannedDir(dir_index, name, _rel(relbase, name)))
            stack.append((len(dirs) - 1, path, depth + 1, ancestors | {(st.st_dev, st.st_ino)}))
    return TreeScan(root, tuple(dirs), tuple(files))


def _rel(base: str, name: str) -> str:
    return f"{base}/{name}" if base else name


def _check_result(result: HashResult, shown: str) -> None:
    if result.error is not None or result.digest is None:
        raise PrvBuildError(f"cannot read {_show(shown)}: {result.error}")


def build_prvdir(
    scan: TreeScan,
    *,
    cache: HashCache | None = None,
    workers: int | None = None,
    on_progress: ProgressCallback | None = None,
    on_warning: Warn | None = None,
    exclude: frozenset[tuple[int, int]] = frozenset(),
) -> PrvDir:
    """Hash the files of a scan and assemble its ``.prvdir``.

    Args:
        scan: from ``scan_directory``.
        cache: the hash cache, or None.
        workers: passed to ``hash_files``.
        on_progress: ``(files, bytes)`` deltas, for a progress bar.
        on_warning: for cache problems.
        exclude: ``(st_dev, st_ino)`` of files to leave out (the output file, when it
            is written inside the tree).

    Returns:
        The tree, every ``original_path`` relative to the scanned directory.

    Raises:
        PrvBuildError: if a file cannot be read (the message names it).
    """
    files_of: list[dict[str, Prv]] = [{} for _ in scan.dirs]
    dirs = scan.dirs
    scanned = scan.files
    batches = hash_records(
        scanned,
        cache=cache,
        workers=workers,
        on_progress=on_progress,
        on_warning=on_warning,
    )
    try:
        for batch in batches:
            for index, sha1, head, size, key, _, error in batch:
                entry = scanned[index]
                base = dirs[entry.dir_index].relpath
                relpath = f"{base}/{entry.name}" if base else entry.name
                if sha1 is None or head is None:
                    raise PrvBuildError(f"cannot read {_show(relpath)}: {error}")
                if exclude and (key[0], key[1]) in exclude:
                    continue
                files_of[entry.dir_index][entry.name] = Prv(
                    sha1=sha1, size=size, head_sha1=head, path=relpath
                )
    finally:
        batches.close()
    # Bottom-up: children come after their parent in scan.dirs.
    subdirs_of: list[dict[str, PrvDir]] = [{} for _ in dirs]
    for index in range(len(dirs) - 1, -1, -1):
        node = PrvDir(files=files_of[index], dirs=subdirs_of[index])
        if index == 0:
            return node
        subdirs_of[dirs[index].parent][dirs[index].name] = node
    raise AssertionError("unreachable: a scan always holds its root")  # pragma: no cover


def build_prv(
    path: str,
    *,
    cache: HashCache | None = None,
    on_progress: ProgressCallback | None = None,
    on_warning: Warn | None = None,
) -> Prv:
    """Hash one file and return its ``.prv``; ``original_path`` is its name only.

    Raises:
        PrvBuildError: if the file cannot be read or is not a regular file.
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        raise PrvBuildError(f"cannot read {_show(path)}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise PrvBuildError(f"{_show(path)} is not a regular file")
    name = os.path.basename(os.path.normpath(path))
    results = hash_files(
        [(path, FileKey.from_stat(st))],
        cache=cache,
        workers=1,
        on_progress=on_progress,
        on_warning=on_warning,
    )
    try:
        result = next(results)
    finally:
        results.close()
    _check_result(result, path)
    digest = result.digest
    assert digest is not None
    try:
        return Prv(sha1=Sha1(digest.sha1), size=digest.size, head_sha1=digest.head_sha1, path=name)
    except LocalProtocolError:
        raise PrvBuildError(f"{_show(path)}: the file name is not valid UTF-8 text") from None


# --- the fast path: JSON text straight from digests, and per-directory fragments -------
#
# Building a frozen Prv per file and a PrvDir per directory, then serializing them,
# costs several microseconds per file; a cached re-run of a big tree must cost little
# more than listing it. So ``build_prvdir_bytes`` writes the text of each directory's
# "files" object directly (``files_fragment``, byte-identical to ``serialize_prvdir``,
# which the tests check on random trees) and keeps it in the hash cache keyed by the
# directory and a digest of its files' names and (dev, ino, size, mtime_ns): an
# unchanged directory then costs one ``stat`` per file and a dictionary lookup.

_VERSION_TEXT = encode_basestring(PRV_VERSION)


def files_fragment(depth: int, relbase: str, entries: Sequence[tuple[str, str, str, int]]) -> str:
    """Return the entries of one directory's ``"files"`` object as ``serialize_prvdir``
    writes them (without the braces around them), for a directory ``depth`` levels
    below the root whose relative path is ``relbase``.

    Args:
        depth: 0 for the root.
        relbase: the directory's ``/``-separated path relative to the root ("" for it).
        entries: ``(name, sha1, head_sha1, size)``, sorted by name.
    """
    i2 = " " * (8 * depth + 8)
    inner = i2 + "    "
    # The fixed parts of every entry, formatted once per directory.
    template = (
        f'{i2}%s: {{\n{inner}"original_checksum": "%s",\n{inner}"original_size": %d,\n'
        f'{inner}"original_fcs": "{FCS_PREFIX}%s",\n{inner}"original_path": %s,\n'
        f'{inner}"prv_version": {_VERSION_TEXT}\n{i2}}}'
    )
    prefix = f"{relbase}/" if relbase else ""
    return ",\n".join(
        [
            template % (encode_basestring(name), sha1, size, head, encode_basestring(prefix + name))
            for name, sha1, head, size in entries
        ]
    )


def _dir_digest(keyed: list[tuple[str, int, int, int, int]]) -> bytes:
    # (name, dev, ino, size, mtime_ns), sorted by name. marshal is fast; version 2,
    # because 3 and up write back-references to objects seen twice, so equal lists
    # of different objects would give different bytes. A Python upgrade that changed
    # the format would only cost one re-hash.
    return hashlib.sha1(marshal.dumps(keyed, 2)).digest()


def build_prvdir_bytes(
    scan: TreeScan,
    *,
    cache: HashCache | None = None,
    workers: int | None = None,
    on_progress: ProgressCallback | None = None,
    on_warning: Warn | None = None,
    exclude: frozenset[tuple[int, int]] = frozenset(),
) -> bytes:
    """Like ``build_prvdir`` followed by ``serialize_prvdir``, only faster.

    Same arguments and errors as ``build_prvdir``. With a cache, every directory's
    files section is also remembered and reused while none of its files changed
    (name, device, inode, size and mtime all equal), unless one of them was modified
    within ``RACY_WINDOW_NS`` of the run.

    Returns:
        The ``.prvdir`` bytes, identical to ``serialize_prvdir(build_prvdir(...))``.
    """
    warn = on_warning or (lambda message: None)
    report = on_progress or (lambda files, nbytes: None)
    dirs = scan.dirs
    ndirs = len(dirs)
    depth = [0] * ndirs
    for index in range(1, ndirs):  # parents come first
        depth[index] = depth[dirs[index].parent] + 1
    files_of: list[list[ScannedFile]] = [[] for _ in range(ndirs)]
    for scanned in scan.files:
        files_of[scanned.dir_index].append(scanned)

    scope = os.path.realpath(scan.root)
    known: dict[str, tuple[bytes, str]] = {}
    if cache is not None:
        try:
            known = cache.load_fragments(scope)
        except sqlite3.Error as exc:
            warn(f"hash cache unusable, continuing without it: {exc}")
            cache = None

    fragments: list[str | None] = [None] * ndirs
    todo: list[ScannedFile] = []
    missed: list[int] = []
    hit_files = hit_bytes = 0
    for index in range(ndirs):
        listed = files_of[index]
        if not listed:
            continue
        entry = known.get(dirs[index].relpath)
        if entry is not None:
            # Stat every file (the cost of the bare walk) and compare with the digest
            # the fragment was stored under.
            # Plain tuples here: this is the whole cost of a cached re-run.
            stat_keys: list[tuple[int, int, int, int]] = []
            stat_ = os.stat
            try:
                for scanned in listed:
                    known_key = scanned.key
                    if known_key is None:
                        st = stat_(scanned.path)
                        stat_keys.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
                    else:
                        stat_keys.append(known_key)
            except OSError:
                pass  # let the hashing report it, with its usual message
            else:
                keyed = [
                    (scanned.name, *key)
                    for scanned, key in zip(listed, stat_keys, strict=True)
                    if not exclude or (key[0], key[1]) not in exclude
                ]
                keyed.sort()
                if _dir_digest(keyed) == entry[0]:
                    fragments[index] = entry[1]
                    hit_files += len(listed)
                    hit_bytes += sum([item[3] for item in keyed])
                    continue
                # Changed: hand the stat_keys over, so the workers look every file up.
                listed = [
                    scanned._replace(key=FileKey(*key))
                    for scanned, key in zip(listed, stat_keys, strict=True)
                ]
        missed.append(index)
        todo.extend(listed)
    if hit_files:
        report(hit_files, hit_bytes)

    if todo:
        # (name, sha1, head, size) and (name, dev, ino, size, mtime_ns) per directory.
        done: dict[int, list[tuple[str, str, str, int]]] = {index: [] for index in missed}
        keys: dict[int, list[tuple[str, int, int, int, int]]] = {index: [] for index in missed}
        batches = hash_records(
            todo, cache=cache, workers=workers, on_progress=on_progress, on_warning=on_warning
        )
        try:
            for batch in batches:
                for item, sha1, head, size, key, _, error in batch:
                    scanned = todo[item]
                    if sha1 is None or head is None:
                        base = dirs[scanned.dir_index].relpath
                        shown = f"{base}/{scanned.name}" if base else scanned.name
                        raise PrvBuildError(f"cannot read {_show(shown)}: {error}")
                    if exclude and (key[0], key[1]) in exclude:
                        continue
                    done[scanned.dir_index].append((scanned.name, sha1, head, size))
                    keys[scanned.dir_index].append((scanned.name, *key))
        finally:
            batches.close()
        limit = time.time_ns() - (cache.racy_window_ns if cache else RACY_WINDOW_NS)
        store: list[tuple[str, bytes, str]] = []
        for index in missed:
            entries = done[index]
            entries.sort()
            relpath = dirs[index].relpath
            fragment = files_fragment(depth[index], relpath, entries)
            fragments[index] = fragment
            keyed = keys[index]
            # A file modified within the racy window may change again within the same
            # mtime tick: its directory's fragment must not be trusted later.
            if cache is not None and all(item[4] <= limit for item in keyed):
                keyed.sort()
                store.append((relpath, _dir_digest(keyed), fragment))
        if cache is not None and store:
            try:
                cache.store_fragments(scope, store)
            except sqlite3.Error as exc:
                warn(f"hash cache unusable, continuing without it: {exc}")
    return _assemble(dirs, depth, fragments)


def _assemble(dirs: Sequence[ScannedDir], depth: list[int], fragments: list[str | None]) -> bytes:
    # The same layout and order as serialize_prvdir, from the directory list.
    children: list[list[tuple[str, int]]] = [[] for _ in dirs]
    for index in range(1, len(dirs)):
        children[dirs[index].parent].append((dirs[index].name, index))
    out: list[str] = []
    stack: list[int | str] = [0]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        indent = " " * (8 * depth[item])
        i1 = indent + "    "
        fragment = fragments[item]
        if fragment:
            out.append(f'{{\n{i1}"files": {{\n{fragment}\n{i1}}},\n{i1}"dirs": ')
        else:
            out.append(f'{{\n{i1}"files": {{}},\n{i1}"dirs": ')
        subdirs = children[item]
        if not subdirs:
            out.append("{}\n" + indent + "}")
            continue
        subdirs.sort()
        i2 = i1 + "    "
        stack.append("\n" + i1 + "}\n" + indent + "}")
        for position in range(len(subdirs) - 1, -1, -1):
            name, sub = subdirs[position]
            stack.append(sub)
            lead = "{\n" if position == 0 else ",\n"
            stack.append(lead + i2 + encode_basestring(name) + ": ")
    out.append("\n")
    return "".join(out).encode("utf-8")
