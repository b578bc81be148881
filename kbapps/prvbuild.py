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
   relative to the directory, never absolute. That is the model; ``kb-prv-create``
   uses the fast path below (``plan_prvdir`` then ``write_planned``, or
   ``write_prvdir``/``build_prvdir_bytes`` for a scan), which writes the same bytes
   straight from the digests (a hypothesis test compares them):

   * the directories that changed are hashed by forked workers that claim chunks of
     files from a pipe and turn them into finished ``.prvdir`` text themselves;
   * per tree, one checksummed file in the cache directory keeps every directory's
     text, the key of each of its files (name, dev, ino, size, mtime_ns) and their
     digests: an unchanged directory costs one ``stat`` per file and a comparison,
     and a changed one reads only the files whose key is new;
   * on a re-run the walk and those checks are shared by two processes.

Everything is linear in the number of entries: 100,000 files is a list of 100,000
tuples, chunks of 128 files and one pass to assemble.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from kbapps import hashing
from kbapps.hashing import (
    BIG_FILE_BYTES,
    BUFFER_SIZE,
    PARALLEL_MIN_FILES,
    RACY_WINDOW_NS,
    FileKey,
    HashCache,
    HashResult,
    _Buffer,
    default_workers,
    hash_files,
    hash_records,
)

if TYPE_CHECKING:
    import hashlib
    import sqlite3

    from kbproto.prv import Prv, PrvDir
else:  # imported when first used (see hashing._LazyModule)
    hashlib = hashing._LazyModule("hashlib", globals())
    sqlite3 = hashing._LazyModule("sqlite3", globals())

try:
    # The C function behind json.encoder's: importing the json package to reach it
    # costs ~4 ms of every kb-prv-create start-up.
    from _json import encode_basestring
except ImportError:  # pragma: no cover - not CPython
    from json.encoder import encode_basestring

__all__ = (
    "PrvBuildError",
    "ScannedDir",
    "ScannedFile",
    "TreePlan",
    "TreeScan",
    "build_prv",
    "build_prvdir",
    "build_prvdir_bytes",
    "files_fragment",
    "plan_prvdir",
    "scan_directory",
    "write_planned",
    "write_prvdir",
)

# kbproto.prv's constants, repeated here so that a kb-prv-create of a directory never
# imports kbproto.prv (and, through it, dataclasses, json and re: ~25 ms of start-up,
# a tenth of a cached run over 20,000 files). A test checks they are equal.
#: ``kbproto.prv.PrvLimits().max_depth``.
_MAX_DEPTH = 256
#: ``kbproto.prv.PRV_VERSION``, ``FCS_PREFIX`` and ``FCS_HEAD_BYTES``.
_PRV_VERSION = "0.11"
_FCS_PREFIX = "head1000-"
_FCS_HEAD_BYTES = hashing.FCS_HEAD_BYTES

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
    root_real, stack = _start_walk(root)
    dirs: list[ScannedDir] = [ScannedDir(-1, "", "")]
    files: list[ScannedFile] = []
    _walk(root, root_real, stack, dirs, files, warn)
    return TreeScan(root, tuple(dirs), tuple(files))


#: A directory to list: (dir index, path to open, depth, (dev, ino) of it and its
#: ancestors).
_StackItem = tuple[int, str, int, frozenset[tuple[int, int]]]


def _start_walk(root: str) -> tuple[str, list[_StackItem]]:
    # The root's real path (symlink targets must stay inside it) and the first item.
    root_real = os.path.realpath(root)
    try:
        root_st = os.stat(root)
    except OSError as exc:
        raise PrvBuildError(f"cannot read {root}: {exc.strerror}") from None
    return root_real, [(0, root, 0, frozenset({(root_st.st_dev, root_st.st_ino)}))]


def _walk(
    root: str,
    root_real: str,
    stack: list[_StackItem],
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
                warn(f"skipping {_show(_rel(relbase, name))}: a .prvdir cannot hold this name")
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
                            f"skipping {_show(_rel(relbase, name))}: symlink points outside"
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
    from kbproto.prv import Prv, PrvDir

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
    key = FileKey.from_stat(st)
    if cache is not None:
        # A file of a tree described before: its digest is in that tree's fragments.
        folder = os.path.realpath(os.path.dirname(os.path.abspath(path)))
        hit = _enclosing_digests(cache, folder, whole=False, itself=True).get(key)
        if hit is not None:
            if on_progress is not None:
                on_progress(1, st.st_size)
            return _new_prv(hit[0], st.st_size, hit[1], name, path)
    results = hash_files(
        [(path, key)],
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
    return _new_prv(digest.sha1, digest.size, digest.head_sha1, name, path)


def _enclosing_digests(
    cache: HashCache, directory: str, *, whole: bool, itself: bool
) -> dict[_Key, tuple[str, str]]:
    """Return the stored digests (by key) of the files of ``directory`` (a real
    path) and, if ``whole``, of everything below it, from the nearest tree holding
    it (``directory`` itself too if ``itself``) that has a fragment file; empty if
    there is none."""
    scope = directory
    while True:
        known = cache.load_fragments(scope) if itself or scope != directory else {}
        if known:
            break
        parent = os.path.dirname(scope)
        if parent == scope:
            return {}
        scope = parent
    relpath = os.path.relpath(directory, scope).replace(os.sep, "/")
    relpath = "" if relpath == "." else relpath
    prefix = relpath + "/" if relpath else ""
    return _stored_digests(
        {
            key: entry
            for key, entry in known.items()
            if key == relpath or (whole and key.startswith(prefix))
        }
    )


def _new_prv(sha1: str, size: int, head: str, name: str, path: str) -> Prv:
    from kbproto.errors import LocalProtocolError
    from kbproto.ids import Sha1
    from kbproto.prv import Prv

    try:
        return Prv(sha1=Sha1(sha1), size=size, head_sha1=Sha1(head), path=name)
    except LocalProtocolError:
        raise PrvBuildError(f"{_show(path)}: the file name is not valid UTF-8 text") from None


# --- the fast path: JSON text straight from digests, and per-directory fragments -------
#
# Building a frozen Prv per file and a PrvDir per directory, then serializing them,
# costs several microseconds per file; a cached re-run of a big tree must cost little
# more than listing it. So ``build_prvdir_bytes`` writes the text of each directory's
# "files" object directly (``files_fragment``, byte-identical to ``serialize_prvdir``,
# which the tests check on random trees) and keeps it in the hash cache's fragment file
# for the tree (``HashCache.store_fragments``), with the directory's key text (every
# file's name, dev, ino, size and mtime_ns) and its files' digests: an unchanged
# directory then costs one ``stat`` per file and a comparison. When a directory did
# change, the digests stored for the whole tree answer for every file whose key is
# unchanged (one that moved within the tree too), so only new content is read.
#
# The digests of a tree's small files are kept there only, not also as one SQLite row
# per file: those rows cost ~3-5 µs per file, a fifth of hashing a 4 KiB file. A run
# over a subdirectory of a tree described before, or over one of its files
# (``build_prv``), looks them up in the nearest enclosing tree's fragment file. Files
# of ``BIG_FILE_BYTES`` and up still get their row, and the rows of the database
# (single files, big files, other callers) are looked up for files of changed
# directories when it holds any. What is not found: a small file hashed only as part
# of an unrelated tree (another root, not an ancestor) is read once more.

_VERSION_TEXT = encode_basestring(_PRV_VERSION)


def files_fragment(depth: int, relbase: str, entries: Sequence[tuple[str, str, str, int]]) -> str:
    """Return the entries of one directory's ``"files"`` object as ``serialize_prvdir``
    writes them (without the braces around them), for a directory ``depth`` levels
    below the root whose relative path is ``relbase``.

    Args:
        depth: 0 for the root.
        relbase: the directory's ``/``-separated path relative to the root ("" for it).
        entries: ``(name, sha1, head_sha1, size)``, sorted by name.
    """
    template, prefix = _entry_template(depth, relbase)
    return ",\n".join(
        [
            template % (encode_basestring(name), sha1, size, head, encode_basestring(prefix + name))
            for name, sha1, head, size in entries
        ]
    )


def _entry_template(depth: int, relbase: str) -> tuple[str, str]:
    # The fixed parts of every entry of one directory, formatted once per directory:
    # (template taking name, sha1, size, head, original_path; prefix of the paths).
    i2 = " " * (8 * depth + 8)
    inner = i2 + "    "
    template = (
        f'{i2}%s: {{\n{inner}"original_checksum": "%s",\n{inner}"original_size": %d,\n'
        f'{inner}"original_fcs": "{_FCS_PREFIX}%s",\n{inner}"original_path": %s,\n'
        f'{inner}"prv_version": {_VERSION_TEXT}\n{i2}}}'
    )
    return template, (f"{relbase}/" if relbase else "")


#: One file's part of a directory's key text: name, then dev, ino, size, mtime_ns.
#: NUL ends each part: no name holds one, so the text maps back to one listing.
_KEY_PART = "%s\0%d %d %d %d\0"

_Key = tuple[int, int, int, int]


def _key_bytes(text: str) -> bytes:
    # surrogatepass: a name the file system gave as undecodable bytes still compares.
    return text.encode("utf-8", "surrogatepass")


def _stored_digests(
    known: dict[str, tuple[_Buffer, _Buffer, _Buffer]],
) -> dict[_Key, tuple[str, str]]:
    """Return ``key -> (sha1, head_sha1)`` for every file of a tree's stored fragments
    (from each directory's key text and digests; see ``_segment_texts``)."""
    table: dict[_Key, tuple[str, str]] = {}
    for stored in known.values():
        try:
            keys_text, _, digests = stored
            parts = str(keys_text, "utf-8", "surrogatepass").split("\0")
            hexes = str(digests, "ascii")
        except (ValueError, TypeError):
            continue  # not ours: ignore it
        for position in range(len(parts) // 2):
            numbers = parts[2 * position + 1].split(" ")
            if len(numbers) != 4:
                break
            at = 80 * position
            key = (int(numbers[0]), int(numbers[1]), int(numbers[2]), int(numbers[3]))
            table[key] = (hexes[at : at + 40], hexes[at + 40 : at + 80])
    return table


def _quiet_only(keys_text: bytes, digests: bytes, limit: int) -> tuple[bytes, bytes]:
    """Return the key text and digests of a directory without its files modified
    after ``limit`` (mtime_ns)."""
    parts = keys_text.decode("utf-8", "surrogatepass").split("\0")
    hexes = digests.decode("ascii")
    kept_keys: list[str] = []
    kept_digests: list[str] = []
    for position in range(len(parts) // 2):
        numbers = parts[2 * position + 1]
        if int(numbers.rsplit(" ", 1)[1]) <= limit:
            kept_keys.append(f"{parts[2 * position]}\0{numbers}\0")
            kept_digests.append(hexes[80 * position : 80 * position + 80])
    return _key_bytes("".join(kept_keys)), "".join(kept_digests).encode("ascii")


def _segment_texts(
    records: Sequence[tuple[Any, ...]], depth: int, relbase: str
) -> tuple[bytes, bytes, bytes, int]:
    """Return the ``.prvdir`` entries text, the key text, the digests text (sha1 then
    head_sha1, 80 hex digits per file) and the newest mtime of records ``(job, name,
    sha1, head, size, dev, ino, key size, mtime_ns)`` of one directory, in name
    order."""
    template, prefix = _entry_template(depth, relbase)
    text = ",\n".join(
        [
            template % (encode_basestring(r[1]), r[2], r[4], r[3], encode_basestring(prefix + r[1]))
            for r in records
        ]
    )
    keys_text = "".join([_KEY_PART % (r[1], r[5], r[6], r[7], r[8]) for r in records])
    digests = "".join([r[2] + r[3] for r in records])
    newest = max([r[8] for r in records], default=0)
    return text.encode("utf-8"), _key_bytes(keys_text), digests.encode("ascii"), newest


# --- hashing the files of changed directories, on every core ---------------------------
#
# The files to hash are laid out directory by directory, each directory's files sorted
# by name, and cut into chunks of consecutive files (a chunk may hold the end of one
# directory and the start of the next: "segments"). Chunks are claimed from a pipe by
# the parent and its forked children as in ``kbapps.hashing`` (4-byte chunk numbers,
# atomic reads), so the load balances itself. A worker turns each segment straight
# into its finished texts (entries, keys, digests): formatting runs on every core too,
# and one marshal message per chunk carries it all; the parent only joins texts.

#: Files per chunk: ~1-2 ms of work, few messages, and the last chunk finishes soon.
_CHUNK_FILES = 128
#: Never more chunks than this (their numbers must fit in a pipe buffer, see hashing).
_MAX_CHUNKS = 8192
#: A file modified less than this before it is read takes the careful read (an fstat
#: before and after); an older one is read first and fstat-ed once (see ``_segment``).
_QUIET_NS = RACY_WINDOW_NS

#: A segment: (dir index, first job index, end job index).
_Segment = tuple[int, int, int]
#: What a worker reports, as plain tuples (marshal):
#: ("t", chunk, dir, first, entries text, key text, digests, newest mtime_ns, files,
#: bytes); ("r", chunk, dir, first, records, files, bytes) for a segment holding big
#: files (records as for ``_segment_texts``, sha1 None for a big file);
#: ("e", chunk, dir, name, reason); ("w", chunk, message); ("c", chunk): chunk done.
_Report = tuple[Any, ...]


class _Jobs(NamedTuple):
    """The files to hash, in directory-then-name order, as parallel lists."""

    paths: list[str]
    names: list[str]
    keys: list[_Key | None]
    dirs: list[int]


class _TreeWorker:
    """Hashes chunks in one process, with its own buffer and cache connection.

    Args:
        jobs, relpaths, depth, exclude: the work (shared, read-only).
        cache: looked up for files of changed directories (not written: the tree's
            digests are stored with its fragments).
        table: digests stored with the tree's fragments, by key.
        lookups: whether keys are worth taking (``table`` or the cache holds any).
    """

    def __init__(
        self,
        jobs: _Jobs,
        relpaths: Sequence[str],
        depth: Sequence[int],
        exclude: frozenset[tuple[int, int]],
        cache: HashCache | None,
        table: dict[_Key, tuple[str, str]],
        lookups: bool,
    ) -> None:
        self.jobs = jobs
        self.relpaths = relpaths
        self.depth = depth
        self.exclude = exclude
        self.cache = cache
        self.table = table
        self.lookups = lookups
        self.buffer = bytearray(BUFFER_SIZE)
        self.view = memoryview(self.buffer)

    def process(self, chunk: int, segments: Sequence[_Segment]) -> list[_Report]:
        """Return the reports of one chunk, ending with its ("c", chunk)."""
        out: list[_Report] = []
        for segment in segments:
            self._segment(chunk, segment, out)
        out.append(("c", chunk))
        return out

    def _lookup(
        self, chunk: int, first: int, end: int, out: list[_Report]
    ) -> tuple[list[_Key | None], dict[_Key, tuple[str, str]]]:
        # Keys (a stat per file the parent did not stat) and their known digests.
        paths, given = self.jobs.paths, self.jobs.keys
        keys: list[_Key | None] = []
        for job in range(first, end):
            key = given[job]
            if key is None:
                try:
                    st = os.stat(paths[job])
                except OSError:
                    keys.append(None)  # the open reports it
                    continue
                key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            keys.append(key)
        table = self.table
        found = {key: table[key] for key in keys if key is not None and key in table}
        if self.cache is not None and len(found) < len(keys):
            try:
                found.update(
                    self.cache.lookup_raw([k for k in keys if k is not None and k not in found])
                )
            except sqlite3.Error as exc:
                out.append(("w", chunk, f"hash cache unusable, continuing without it: {exc}"))
                self.cache = None
        return keys, found

    def _segment(self, chunk: int, segment: _Segment, out: list[_Report]) -> None:
        # This loop is the whole cost of a first run over many small files: plain
        # tuples and local names only.
        #
        # A small file is read first and fstat-ed once, after the read: one syscall
        # fewer than fstat, read, fstat. That is as safe whenever its mtime is older
        # than _QUIET_NS: a write starts by setting the mtime to the (coarse) clock,
        # so a write during our read would show a recent mtime in that fstat. Any
        # other file (recent, big, short read, not regular) is read again the careful
        # way, as ``kbapps.hashing`` does.
        dir_index, first, end = segment
        paths, names = self.jobs.paths, self.jobs.names
        keys: Sequence[_Key | None] = ()
        found: dict[_Key, tuple[str, str]] = {}
        if self.lookups:
            keys, found = self._lookup(chunk, first, end, out)
        buffer, view = self.buffer, self.view
        full = len(buffer)
        buffers = (buffer,)
        quiet = time.time_ns() - _QUIET_NS
        open_ = hashing._open_for_hashing  # looked up here: tests replace it
        fstat, readv, close, hash_fd = os.fstat, os.readv, os.close, hashing._hash_fd
        sha1 = hashlib.sha1
        is_reg = stat.S_ISREG
        head_bytes = _FCS_HEAD_BYTES
        # (job, name, sha1, head, size, dev, ino, key size, mtime_ns); sha1 None for
        # a big file left to the parent.
        records: list[tuple[Any, ...]] = []
        append = records.append
        big = False
        for job in range(first, end):
            if found:
                key = keys[job - first]
                hit = found.get(key) if key is not None else None
                if hit is not None and key is not None:
                    dev, ino, ksize, mtime = key
                    append((job, names[job], hit[0], hit[1], ksize, dev, ino, ksize, mtime))
                    continue
            try:
                fd = open_(paths[job])
            except OSError as exc:
                out.append(("e", chunk, dir_index, names[job], hashing._error_text(exc)))
                return
            try:
                try:
                    n = readv(fd, buffers)
                except OSError:
                    n = -1  # a directory or a FIFO swapped in: the fstat says which
                st = fstat(fd)
                size = st.st_size
                mtime = st.st_mtime_ns
                if n == size and n < full and mtime <= quiet and is_reg(st.st_mode):
                    if n <= head_bytes:
                        whole = head = sha1(view[:n]).hexdigest()
                    else:
                        digest = sha1(view[:head_bytes])
                        head = digest.hexdigest()
                        digest.update(view[head_bytes:n])
                        whole = digest.hexdigest()
                    append((job, names[job], whole, head, n, st.st_dev, st.st_ino, n, mtime))
                    continue
                if size >= BIG_FILE_BYTES and is_reg(st.st_mode):
                    # Left to the parent: threads, and progress while it streams.
                    big = True
                    append((job, names[job], None, None, 0, st.st_dev, st.st_ino, size, mtime))
                    continue
                if is_reg(st.st_mode):
                    os.lseek(fd, 0, os.SEEK_SET)
                whole, head, total, dev, ino, ksize, mtime = hash_fd(fd, buffer, view, None)
            except OSError as exc:
                out.append(("e", chunk, dir_index, names[job], hashing._error_text(exc)))
                return
            finally:
                close(fd)
            append((job, names[job], whole, head, total, dev, ino, ksize, mtime))
        if self.exclude:
            exclude = self.exclude
            records = [r for r in records if (r[5], r[6]) not in exclude]
        nbytes = sum([r[4] for r in records])
        if big:
            out.append(("r", chunk, dir_index, first, records, end - first, nbytes))
            return
        text, keys_text, digests, newest = _segment_texts(
            records, self.depth[dir_index], self.relpaths[dir_index]
        )
        out.append(
            ("t", chunk, dir_index, first, text, keys_text, digests, newest, end - first, nbytes)
        )


def _cut_chunks(jobs: _Jobs) -> list[list[_Segment]]:
    # Consecutive files, about _CHUNK_FILES each, split at directory boundaries.
    count = len(jobs.paths)
    size = max(_CHUNK_FILES, -(-count // _MAX_CHUNKS))
    dirs = jobs.dirs
    chunks: list[list[_Segment]] = []
    for start in range(0, count, size):
        end = min(start + size, count)
        segments: list[_Segment] = []
        first = start
        for job in range(start + 1, end):
            if dirs[job] != dirs[first]:
                segments.append((dirs[first], first, job))
                first = job
        segments.append((dirs[first], first, end))
        chunks.append(segments)
    return chunks


class _Collected:
    """What the workers reported, per directory: ``texts[dir]`` holds ``(first job,
    entries text, key text, digests, newest mtime)`` and ``raw[dir]`` ``(first job,
    records)`` for segments with big files left to the parent."""

    def __init__(self, report: ProgressCallback, warn: Warn, relpaths: Sequence[str]) -> None:
        self.texts: dict[int, list[tuple[int, bytes, bytes, bytes, int]]] = {}
        self.raw: dict[int, list[tuple[int, list[tuple[Any, ...]]]]] = {}
        self.done: set[int] = set()
        self.report = report
        self.warn = warn
        self.warned = False
        self.relpaths = relpaths

    def take(self, reports: Sequence[_Report]) -> None:
        """Record a batch of reports; raise ``PrvBuildError`` for a file that failed."""
        files = nbytes = 0
        for item in reports:
            kind = item[0]
            if kind == "t":
                _, _, dir_index, first, text, keys_text, digests, newest, nfiles, size = item
                self.texts.setdefault(dir_index, []).append(
                    (first, text, keys_text, digests, newest)
                )
                files += nfiles
                nbytes += size
            elif kind == "c":
                self.done.add(item[1])
            elif kind == "r":
                _, _, dir_index, first, records, nfiles, size = item
                self.raw.setdefault(dir_index, []).append((first, records))
                files += nfiles - sum([1 for r in records if r[2] is None])
                nbytes += size
            elif kind == "e":
                _, _, dir_index, name, reason = item
                shown = _rel(self.relpaths[dir_index], name)
                raise PrvBuildError(f"cannot read {_show(shown)}: {reason}")
            elif not self.warned:  # "w": the first cache failure only
                self.warned = True
                self.warn(item[2])
        if files or nbytes:
            self.report(files, nbytes)


def _hash_jobs(
    jobs: _Jobs,
    relpaths: Sequence[str],
    depth: Sequence[int],
    exclude: frozenset[tuple[int, int]],
    cache: HashCache | None,
    table: dict[_Key, tuple[str, str]],
    workers: int,
    collected: _Collected,
) -> None:
    """Hash every job into ``collected``, on ``workers`` processes (this one too)."""
    chunks = _cut_chunks(jobs)
    lookups = bool(table)
    if cache is not None and not lookups:
        try:
            lookups = cache.has_files()
        except sqlite3.Error:
            lookups = True  # the lookups will fail and say so
    parent = _TreeWorker(jobs, relpaths, depth, exclude, cache, table, lookups)
    nproc = min(workers, len(chunks)) if len(jobs.paths) >= PARALLEL_MIN_FILES else 1
    if nproc <= 1 or not hasattr(os, "fork"):
        for number, segments in enumerate(chunks):
            collected.take(parent.process(number, segments))
        return
    queue_r, queue_w = os.pipe()
    children: list[hashing._Child] = []
    cache_path = cache.path if cache is not None and lookups else None

    def body(result_fd: int) -> None:  # pragma: no cover - runs in the child
        child_cache = None
        if cache_path is not None:
            # Never use the parent's connection across fork: open our own.
            try:
                child_cache = HashCache(cache_path)
            except (OSError, sqlite3.Error):
                child_cache = None
        worker = _TreeWorker(jobs, relpaths, depth, exclude, child_cache, table, lookups)
        with os.fdopen(result_fd, "wb", buffering=0) as pipe:
            while (number := hashing._claim(queue_r)) is not None:
                hashing._send_frame(pipe, worker.process(number, chunks[number]))

    ok = False
    try:
        payload = b"".join([hashing._CHUNK.pack(n) for n in range(len(chunks))])
        view = memoryview(payload)
        while view:  # fits in the pipe buffer (<= 32 KiB), so this never blocks
            view = view[os.write(queue_w, view) :]
        os.close(queue_w)
        queue_w = -1
        for _ in range(nproc - 1):
            children.append(hashing._Child(body))
        while (claimed := hashing._claim(queue_r)) is not None:
            collected.take(parent.process(claimed, chunks[claimed]))
            for child in children:
                collected.take(child.drain(block=False))
        for child in children:
            while not child.eof:
                collected.take(child.drain(block=True))
        # A child that died (killed, out of memory) leaves chunks unreported: do
        # them here rather than fail.
        for number, segments in enumerate(chunks):
            if number not in collected.done:
                collected.take(parent.process(number, segments))
        ok = True
    finally:
        if queue_w >= 0:
            os.close(queue_w)
        os.close(queue_r)
        for child in children:
            child.close(kill=not ok)


def _finish_raw(
    jobs: _Jobs,
    collected: _Collected,
    depth: Sequence[int],
    cache: HashCache | None,
    workers: int,
) -> None:
    """Hash the big files the workers left (threads, byte progress, cached as rows
    of the database) and turn their segments into texts."""
    big = [
        (record[0], FileKey(record[5], record[6], record[7], record[8]))
        for segments in collected.raw.values()
        for _, records in segments
        for record in records
        if record[2] is None
    ]
    digests: dict[int, tuple[Any, ...]] = {}
    job_of = {jobs.paths[job]: job for job, _ in big}
    results = hash_files(
        [(jobs.paths[job], key) for job, key in big],
        cache=cache,
        workers=workers,
        on_progress=collected.report,
        on_warning=collected.warn,
    )
    try:
        for result in results:
            job = job_of[result.path]
            digest = result.digest
            if digest is None:
                shown = _rel(collected.relpaths[jobs.dirs[job]], jobs.names[job])
                raise PrvBuildError(f"cannot read {_show(shown)}: {result.error}")
            digests[job] = (digest.sha1, digest.head_sha1, digest.size, *result.key)
    finally:
        results.close()
    for dir_index, segments in collected.raw.items():
        for first, records in segments:
            done = [
                record if record[2] is not None else (*record[:2], *digests[record[0]])
                for record in records
            ]
            texts = _segment_texts(done, depth[dir_index], collected.relpaths[dir_index])
            collected.texts.setdefault(dir_index, []).append((first, *texts))


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
    pieces: list[_Buffer] = []
    write_prvdir(
        scan,
        pieces.extend,
        cache=cache,
        workers=workers,
        on_progress=on_progress,
        on_warning=on_warning,
        exclude=exclude,
    )
    return b"".join(pieces)


def write_prvdir(
    scan: TreeScan,
    write: Callable[[list[_Buffer]], None],
    *,
    cache: HashCache | None = None,
    workers: int | None = None,
    on_progress: ProgressCallback | None = None,
    on_warning: Warn | None = None,
    exclude: frozenset[tuple[int, int]] = frozenset(),
) -> None:
    """``build_prvdir_bytes``, handing the document to ``write`` as a list of pieces
    (bytes or read-only buffers, to be written in order) instead of joining them:
    a 20,000-file ``.prvdir`` is 7 MB, and ``kb-prv-create`` writes the pieces
    straight to OUT. When the tree's fragment file must be rewritten, a forked
    process writes it while this one assembles the document and calls ``write``.

    Raises:
        PrvBuildError: as ``build_prvdir``; and whatever ``write`` raises.
    """
    nworkers = default_workers() if workers is None else max(1, workers)
    scope = os.path.realpath(scan.root)
    known = cache.load_fragments(scope) if cache is not None else {}
    plan = _plan_from_scan(scan, known, exclude, nworkers)
    write_planned(
        plan,
        write,
        cache=cache,
        workers=workers,
        on_progress=on_progress,
        on_warning=on_warning,
        exclude=exclude,
    )


class TreePlan(NamedTuple):
    """What ``plan_prvdir`` found: the tree, and what is left to hash.

    Attributes:
        root: the directory as given.
        dirs: every directory, the root first, parents before their children.
        pending: for each directory to (re)build, its files in name order.
        hits: for each unchanged directory (served from its stored fragment), its
            number of files and of bytes.
        known: the tree's stored fragments (``HashCache.load_fragments``).
        total_files: every file of the tree (for a progress bar).
    """

    root: str
    dirs: tuple[ScannedDir, ...]
    pending: dict[int, list[ScannedFile]]
    hits: dict[int, tuple[int, int]]
    known: dict[str, tuple[_Buffer, _Buffer, _Buffer]]
    total_files: int


def _plan_from_scan(
    scan: TreeScan,
    known: dict[str, tuple[_Buffer, _Buffer, _Buffer]],
    exclude: frozenset[tuple[int, int]],
    workers: int,
) -> TreePlan:
    # Group the files by directory, and check the directories with a stored fragment.
    files_of: dict[int, list[ScannedFile]] = {}
    for scanned in scan.files:
        listed = files_of.get(scanned.dir_index)
        if listed is None:
            files_of[scanned.dir_index] = listed = []
        listed.append(scanned)
    to_check: list[tuple[int, list[ScannedFile], _Buffer]] = []
    for index, listed in files_of.items():
        # By path: within one directory the same order as by name (one common
        # prefix), and compared in C without a key function.
        listed.sort()
        stored = known.get(scan.dirs[index].relpath)
        if stored is not None and stored[1]:  # (an empty fragment: not reusable)
            to_check.append((index, listed, stored[0]))
    hits: dict[int, tuple[int, int]] = {}
    for index, unchanged, nbytes in _check_stored(to_check, exclude, workers):
        if unchanged:
            hits[index] = (len(files_of.pop(index)), nbytes)
    return TreePlan(scan.root, scan.dirs, files_of, hits, known, len(scan.files))


def plan_prvdir(
    root: str,
    *,
    cache: HashCache | None = None,
    workers: int | None = None,
    on_warning: Warn | None = None,
    exclude: frozenset[tuple[int, int]] = frozenset(),
) -> TreePlan:
    """Scan ``root`` (as ``scan_directory``) and check which directories are
    unchanged since their fragment was stored: the first half of ``write_prvdir``,
    so a caller can size a progress bar before hashing starts.

    When the tree has a fragment file (a re-run) of many files, the walk itself is
    shared with a forked process: each lists and checks half of the root's
    subdirectories, and only the files of changed directories come back.

    Raises:
        PrvBuildError: as ``scan_directory``.
    """
    warn = on_warning or (lambda message: None)
    nworkers = default_workers() if workers is None else max(1, workers)
    known = cache.load_fragments(os.path.realpath(root)) if cache is not None else {}
    # 80 hex digits of digests per stored file.
    stored_files = sum([len(entry[2]) for entry in known.values()]) // 80
    if stored_files < PARALLEL_MIN_FILES or nworkers < 2 or not hasattr(os, "fork"):
        return _plan_from_scan(scan_directory(root, on_warning=warn), known, exclude, nworkers)
    root_real, stack = _start_walk(root)
    dirs: list[ScannedDir] = [ScannedDir(-1, "", "")]
    files: list[ScannedFile] = []
    _walk(root, root_real, stack, dirs, files, warn, limit=1)  # the root only
    if len(stack) < 2:
        _walk(root, root_real, stack, dirs, files, warn)
        scan = TreeScan(root, tuple(dirs), tuple(files))
        return _plan_from_scan(scan, known, exclude, nworkers)
    base = len(dirs)
    theirs = stack[1::2]
    mine = stack[0::2]

    def part(
        items: list[_StackItem], found: list[ScannedFile], emit: Warn
    ) -> tuple[list[tuple[int, int, int]], list[ScannedFile]]:
        # Walk, then check every listed directory that has a stored fragment:
        # ([(dir, files, bytes)] unchanged, [files of the others]).
        _walk(root, root_real, items, dirs, found, emit)
        return _check_part(found, dirs, known, exclude)

    def body(result_fd: int) -> None:  # pragma: no cover - runs in the child
        messages: list[str] = []
        answer: tuple[Any, ...]
        try:
            hits, pending = part(theirs, [], messages.append)
            answer = (
                None,
                messages,
                [tuple(d) for d in dirs[base:]],
                hits,
                [(f.path, tuple(f.key) if f.key else None, f.dir_index, f.name) for f in pending],
            )
        except PrvBuildError as exc:
            answer = (str(exc), messages)
        with os.fdopen(result_fd, "wb", buffering=0) as pipe:
            hashing._send_frame(pipe, [answer])

    child = hashing._Child(body)
    ok = False
    try:
        hits, pending = part(mine, files, warn)
        answers: list[Any] = []
        while not child.eof:
            answers.extend(child.drain(block=True))
        ok = True
    finally:
        child.close(kill=not ok)
    if not answers:  # the child died: walk its half here
        more_hits, more_pending = part(theirs, [], warn)
        hits += more_hits
        pending += more_pending
    else:
        (answer,) = answers
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
    return TreePlan(root, tuple(dirs), pending_of, hit_of, known, total)


def _check_part(
    found: list[ScannedFile],
    dirs: Sequence[ScannedDir],
    known: dict[str, tuple[_Buffer, _Buffer, _Buffer]],
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
    to_check: list[tuple[int, list[ScannedFile], _Buffer]] = []
    pending: list[ScannedFile] = []
    by_index: dict[int, list[ScannedFile]] = {}
    for listed in groups:
        listed.sort()  # by path: by name within one directory
        index = listed[0].dir_index
        stored = known.get(dirs[index].relpath)
        if stored is not None and stored[1]:
            to_check.append((index, listed, stored[0]))
            by_index[index] = listed
        else:
            pending += listed
    hits: list[tuple[int, int, int]] = []
    for index, unchanged, nbytes in _check_dirs(to_check, exclude):
        if unchanged:
            hits.append((index, len(by_index[index]), nbytes))
        else:
            pending += by_index[index]
    return hits, pending


def write_planned(
    plan: TreePlan,
    write: Callable[[list[_Buffer]], None],
    *,
    cache: HashCache | None = None,
    workers: int | None = None,
    on_progress: ProgressCallback | None = None,
    on_warning: Warn | None = None,
    exclude: frozenset[tuple[int, int]] = frozenset(),
) -> None:
    """``write_prvdir`` for a ``plan_prvdir`` result (same arguments; ``cache`` and
    ``exclude`` as given to ``plan_prvdir``)."""
    warn = on_warning or (lambda message: None)
    report = on_progress or (lambda files, nbytes: None)
    nworkers = default_workers() if workers is None else max(1, workers)
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
    jobs = _Jobs([], [], [], [])
    for index in sorted(plan.pending):
        listed = plan.pending[index]
        jobs.paths.extend([scanned.path for scanned in listed])
        jobs.names.extend([scanned.name for scanned in listed])
        jobs.keys.extend([scanned.key for scanned in listed])
        jobs.dirs.extend([index] * len(listed))

    if jobs.paths:
        collected = _Collected(report, warn, relpaths)
        # The stored digests that may answer: those of the changed directories (an
        # edited, added or renamed file, or one moved between them), or of the whole
        # tree when a directory is new (its files may come from anywhere).
        stored_of = {relpaths[index]: known.get(relpaths[index]) for index in plan.pending}
        if not known and cache is not None:
            # A tree never described: maybe part of one that was (a subdirectory).
            table = _enclosing_digests(cache, scope, whole=True, itself=False)
        elif any(entry is None for entry in stored_of.values()):
            table = _stored_digests(known)
        else:
            table = _stored_digests({k: v for k, v in stored_of.items() if v is not None})
        _hash_jobs(jobs, relpaths, depth, exclude, cache, table, nworkers, collected)
        if collected.raw:
            _finish_raw(jobs, collected, depth, cache, nworkers)
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
                keys_text, digests = _quiet_only(keys_text, digests, limit)
                keep.append((relpaths[index], keys_text, b"", digests))
    storing = None
    if cache is not None and (jobs.paths or len(keep) != len(known)):
        storing = _store_fragments(cache, scope, keep, len(jobs.paths), nworkers, warn)
    try:
        write(_assemble(dirs, depth, fragments))
    finally:
        if storing is not None:
            storing()


def _store_fragments(
    cache: HashCache,
    scope: str,
    keep: list[tuple[str, _Buffer, _Buffer, _Buffer]],
    hashed: int,
    workers: int,
    warn: Warn,
) -> Callable[[], None] | None:
    """Store the tree's fragments; when there are many (after hashing many files),
    in a forked process, and return a function that waits for it."""

    def store() -> str | None:
        try:
            cache.store_fragments(scope, keep)
        except OSError as exc:
            return f"hash cache: cannot store directory fragments: {exc.strerror or exc}"
        return None

    if hashed < PARALLEL_MIN_FILES or workers < 2 or not hasattr(os, "fork"):
        message = store()
        if message:
            warn(message)
        return None

    def body(result_fd: int) -> None:  # pragma: no cover - runs in the child
        failed = store()
        with os.fdopen(result_fd, "wb", buffering=0) as pipe:
            hashing._send_frame(pipe, [("stored", failed)])

    child = hashing._Child(body)

    def wait() -> None:
        answer: list[tuple[str, str | None]] = []
        try:
            while not child.eof:
                answer.extend(child.drain(block=True))
        finally:
            child.close(kill=False)
        if not answer:  # the child died: store here
            answer = [("stored", store())]
        if answer[0][1]:
            warn(answer[0][1])

    return wait


def _check_dirs(
    items: Sequence[tuple[int, list[ScannedFile], _Buffer]], exclude: frozenset[tuple[int, int]]
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
                append(_KEY_PART % (scanned.name, dev, ino, size, mtime))
                nbytes += size
        except OSError:
            out.append((index, False, 0))  # hashing reports it, with its usual message
            continue
        finally:
            if dir_fd >= 0:
                os.close(dir_fd)
        out.append((index, _key_bytes("".join(parts)) == stored_keys, nbytes))
    return out


def _check_stored(
    items: Sequence[tuple[int, list[ScannedFile], _Buffer]],
    exclude: frozenset[tuple[int, int]],
    workers: int,
) -> list[tuple[int, bool, int]]:
    """``_check_dirs`` on two processes when there are many files: a forked child
    checks the second half (by files) while this process checks the first."""
    total = sum([len(item[1]) for item in items])
    if workers < 2 or total < PARALLEL_MIN_FILES or not hasattr(os, "fork"):
        return _check_dirs(items, exclude)
    split, counted = 0, 0
    while counted * 2 < total:
        counted += len(items[split][1])
        split += 1
    theirs_items = items[split:]

    def body(result_fd: int) -> None:  # pragma: no cover - runs in the child
        with os.fdopen(result_fd, "wb", buffering=0) as pipe:
            hashing._send_frame(pipe, _check_dirs(theirs_items, exclude))

    child = hashing._Child(body)
    ok = False
    try:
        mine = _check_dirs(items[:split], exclude)
        theirs: list[tuple[int, bool, int]] = []
        while not child.eof:
            theirs.extend(child.drain(block=True))
        ok = True
    finally:
        child.close(kill=not ok)
    if len(theirs) != len(theirs_items):  # the child died: do its part here
        theirs = _check_dirs(theirs_items, exclude)
    return mine + theirs


def _first_of(part: tuple[Any, ...]) -> int:
    return int(part[0])


def _assemble(
    dirs: Sequence[ScannedDir], depth: list[int], fragments: list[_Buffer | None]
) -> list[_Buffer]:
    # The same layout and order as serialize_prvdir, from the directory list.
    children: list[list[tuple[str, int]]] = [[] for _ in dirs]
    for index in range(1, len(dirs)):
        children[dirs[index].parent].append((dirs[index].name, index))
    out: list[_Buffer] = []
    stack: list[int | bytes] = [0]
    while stack:
        item = stack.pop()
        if not isinstance(item, int):
            out.append(item)
            continue
        indent = " " * (8 * depth[item])
        i1 = indent + "    "
        fragment = fragments[item]
        if fragment:
            out.append(f'{{\n{i1}"files": {{\n'.encode())
            out.append(fragment)
            out.append(f'\n{i1}}},\n{i1}"dirs": '.encode())
        else:
            out.append(f'{{\n{i1}"files": {{}},\n{i1}"dirs": '.encode())
        subdirs = children[item]
        if not subdirs:
            out.append(("{}\n" + indent + "}").encode())
            continue
        subdirs.sort()
        i2 = i1 + "    "
        stack.append(("\n" + i1 + "}\n" + indent + "}").encode())
        for position in range(len(subdirs) - 1, -1, -1):
            name, sub = subdirs[position]
            stack.append(sub)
            lead = "{\n" if position == 0 else ",\n"
            stack.append((lead + i2 + encode_basestring(name) + ": ").encode("utf-8"))
    out.append(b"\n")
    return out
