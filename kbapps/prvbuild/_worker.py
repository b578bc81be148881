"""One worker's hashing: the files of a chunk read, hashed and turned into their
finished ``.prvdir`` texts (``TreeWorker``, the job ``kbapps.hashing.pool`` runs in
every process), and how the files to hash are laid out and cut into chunks (``Jobs``,
``cut_chunks``).

The files to hash are laid out directory by directory, each directory's files sorted
by name, and cut into chunks of consecutive files (a chunk may hold the end of one
directory and the start of the next: "segments"). A chunk is plain data, so it can be
sent to a worker process started before it existed. A worker turns each segment
straight into its finished texts (entries, keys, digests: ``_text.segment_texts``):
formatting runs on every core too, and one marshal message per chunk carries it all.
Files of ``BIG_FILE_BYTES`` and up are left to the caller (``_collect.finish_raw``).
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from kbapps.hashing import (
    BIG_FILE_BYTES,
    RACY_WINDOW_NS,
    FileHasher,
    HashCache,
    chunks_root,
    error_text,
    is_database_error,
)
from kbapps.hashing import digest as digest_module
from kbapps.prvbuild._common import Key, Stored
from kbapps.prvbuild._text import segment_texts

if TYPE_CHECKING:
    from kbapps.prvbuild._scan import ScannedFile

#: Files per chunk: ~1-2 ms of work, few messages, and the last chunk finishes soon.
CHUNK_FILES = 128
#: ``open_for_hashing`` as it is (tests replace it).
_OPEN_FOR_HASHING = digest_module.open_for_hashing
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
#: A file modified less than this before it is read takes the careful read (an fstat
#: before and after); an older one is read first and fstat-ed once (see ``_segment``).
_QUIET_NS = RACY_WINDOW_NS

#: A segment, the files of one directory in one chunk: (dir index, first job index,
#: the directory's depth, its relative path, the path to open it by, names, keys).
#: Self-contained plain data, so it goes to a worker started before it existed
#: (marshal); the files are opened by name in the directory, so their paths are not
#: sent (that was a fifth of the bytes sent per file, and of the unit's decoding).
Segment = tuple[int, int, int, str, str, list[str], list["Key | None"]]
#: What a worker reports, as plain tuples (marshal):
#: ("t", dir, first, entries text, key text, digests, newest mtime_ns, files, bytes,
#: files from the hash cache); ("r", dir, first, records, files, bytes, files from the
#: hash cache) for a segment holding big files (records as for ``segment_texts``, sha1
#: None for a big file); ("e", dir, name, reason); ("w", message).
Report = tuple[Any, ...]
#: What a worker process builds its ``TreeWorker`` from (``tree_worker``): files to
#: leave out, the stored digests by key, whether to look keys up, the cache's path.
Context = tuple[frozenset[tuple[int, int]], dict[Key, Stored], bool, "str | None"]


class Jobs(NamedTuple):
    """The files to hash, in directory-then-name order, as parallel lists."""

    paths: list[str]
    names: list[str]
    keys: list[Key | None]
    dirs: list[int]

    def add(self, listed: Sequence[ScannedFile], dir_index: int) -> None:
        """Append the files of one directory (in name order)."""
        self.paths.extend([scanned.path for scanned in listed])
        self.names.extend([scanned.name for scanned in listed])
        keys: list[Key | None] = [scanned.key for scanned in listed]
        if any(keys):  # (symlinks only) plain tuples, which marshal takes
            keys = [None if key is None else (key[0], key[1], key[2], key[3]) for key in keys]
        self.keys.extend(keys)
        self.dirs.extend([dir_index] * len(listed))


class TreeWorker:
    """Hashes chunks in one process, with its own buffer and cache connection.

    Args:
        exclude: ``(st_dev, st_ino)`` of files to leave out.
        cache: looked up for files of changed directories (not written: the tree's
            digests are stored with its fragments).
        table: digests stored with the tree's fragments, by key.
        lookups: whether keys are worth taking (``table`` or the cache holds any).
    """

    def __init__(
        self,
        exclude: frozenset[tuple[int, int]],
        cache: HashCache | None,
        table: dict[Key, Stored],
        lookups: bool,
    ) -> None:
        self.exclude = exclude
        self.cache = cache
        self.table = table
        self.lookups = lookups
        # Made at the first file to hash, not here: this process makes its worker
        # before the pool forks, and loading OpenSSL (~2 ms) then runs after the fork,
        # beside the worker process, instead of before it.
        self.hasher: FileHasher | None = None

    def process(self, segments: Sequence[Segment]) -> list[Report]:
        """Return the reports of one chunk."""
        out: list[Report] = []
        for segment in segments:
            self._segment(segment, out)
        return out

    def finish(self) -> list[Report]:
        """Nothing to store at the end (the tree's digests go to its fragments)."""
        return []

    def _lookup(
        self, folder: str, names: Sequence[str], given: Sequence[Key | None], out: list[Report]
    ) -> tuple[list[Key | None], dict[Key, Stored]]:
        # Keys (a stat per file the parent did not stat) and their known digests.
        keys: list[Key | None] = []
        for name, key in zip(names, given, strict=True):
            if key is None:
                try:
                    st = os.stat(os.path.join(folder, name))
                except OSError:
                    keys.append(None)  # the open reports it
                    continue
                key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            keys.append(key)
        table = self.table
        found = {key: table[key] for key in keys if key is not None and key in table}
        if self.cache is not None and len(found) < len(keys):
            try:
                rows = self.cache.lookup_raw([k for k in keys if k is not None and k not in found])
                found.update(
                    {
                        key: (sha1, head, chunks_root(chunks))
                        for key, (sha1, head, chunks) in rows.items()
                    }
                )
            except Exception as exc:
                if not is_database_error(exc):
                    raise
                out.append(("w", f"hash cache unusable, continuing without it: {exc}"))
                self.cache = None
        return keys, found

    def _segment(self, segment: Segment, out: list[Report]) -> None:
        # This loop is the whole cost of a first run over many small files: plain
        # tuples and local names only.
        #
        # A small file is read first and fstat-ed once, after the read: one syscall
        # fewer than fstat, read, fstat. That is as safe whenever its mtime is older
        # than _QUIET_NS: a write starts by setting the mtime to the (coarse) clock,
        # so a write during our read would show a recent mtime in that fstat. Any
        # other file (recent, big, short read, not regular) is read again the careful
        # way (``FileHasher.hash_fd``).
        _, _, _, _, folder, names, given = segment
        keys: Sequence[Key | None] = ()
        found: dict[Key, Stored] = {}
        if self.lookups:
            keys, found = self._lookup(folder, names, given, out)
        open_ = digest_module.open_for_hashing  # looked up here: tests replace it
        # Names relative to the open directory: the kernel resolves one component per
        # open instead of the whole path, and a shorter string is converted (~0.3 us
        # of ~20 per file). Only with the usual open (tests replace it to watch it).
        dir_fd = -1
        if open_ is _OPEN_FOR_HASHING and names:
            with contextlib.suppress(OSError):  # then by path: the open names the error
                dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
        try:
            self._files(segment, out, keys, found, dir_fd, open_)
        finally:
            if dir_fd >= 0:
                os.close(dir_fd)

    def _files(
        self,
        segment: Segment,
        out: list[Report],
        keys: Sequence[Key | None],
        found: dict[Key, Stored],
        dir_fd: int,
        open_: Callable[[str], int],
    ) -> None:
        # The loop of _segment (see there), with the directory open as dir_fd if >= 0.
        dir_index, first, depth, relbase, folder, names, _ = segment
        hasher = self.hasher
        if hasher is None:
            hasher = self.hasher = FileHasher()
        full = len(hasher.buffer)
        buffers = (hasher.buffer,)
        digest_small, hash_fd = hasher.digest_small, hasher.hash_fd
        root_of = hasher.chunks_root
        quiet = time.time_ns() - _QUIET_NS
        os_open, flags = os.open, digest_module.OPEN_FLAGS
        exclude = self.exclude
        fstat, readv, close = os.fstat, os.readv, os.close
        is_reg = stat.S_ISREG
        # (job, name, sha1, head, size, dev, ino, key size, mtime_ns, chunk root); sha1
        # None for a big file left to the parent.
        records: list[tuple[Any, ...]] = []
        append = records.append
        big = False
        hits = 0
        job = first - 1
        for name in names:
            job += 1
            if found:
                key = keys[job - first]
                if key is not None and (hit := found.get(key)) is not None:
                    dev, ino, ksize, mtime = key
                    if not (exclude and (dev, ino) in exclude):
                        append((job, name, hit[0], hit[1], ksize, dev, ino, ksize, mtime, hit[2]))
                        hits += 1
                    continue
            try:
                if dir_fd >= 0:
                    fd = os_open(name, flags, dir_fd=dir_fd)
                else:
                    fd = open_(os.path.join(folder, name))
            except OSError as exc:
                out.append(("e", dir_index, name, error_text(exc)))
                return
            try:
                try:
                    n = readv(fd, buffers)
                except OSError:
                    n = -1  # a directory or a FIFO swapped in: the fstat says which
                st = fstat(fd)
                if exclude and (st.st_dev, st.st_ino) in exclude:
                    # OUT or its temporary file (in the tree): maybe growing, so
                    # not to be hashed (the careful read could call it changed).
                    continue
                size = st.st_size
                mtime = st.st_mtime_ns
                if n == size and n < full and mtime <= quiet and is_reg(st.st_mode):
                    whole, head, root = digest_small(n)
                    append((job, name, whole, head, n, st.st_dev, st.st_ino, n, mtime, root))
                    continue
                if size >= BIG_FILE_BYTES and is_reg(st.st_mode):
                    # Left to the parent: threads, and progress while it streams.
                    big = True
                    append((job, name, None, None, 0, st.st_dev, st.st_ino, size, mtime, None))
                    continue
                if is_reg(st.st_mode):
                    os.lseek(fd, 0, os.SEEK_SET)
                whole, head, total, dev, ino, ksize, mtime, chunks = hash_fd(fd)
            except OSError as exc:
                out.append(("e", dir_index, name, error_text(exc)))
                return
            finally:
                close(fd)
            append((job, name, whole, head, total, dev, ino, ksize, mtime, root_of(chunks)))
        nbytes = sum([r[4] for r in records])
        if big:
            out.append(("r", dir_index, first, records, len(names), nbytes, hits))
            return
        text, keys_text, digests, newest = segment_texts(records, depth, relbase)
        out.append(
            ("t", dir_index, first, text, keys_text, digests, newest, len(names), nbytes, hits)
        )


def tree_worker(context: Context) -> TreeWorker:
    """The ``TreeWorker`` of a worker process (the pool's factory): its own cache
    connection (never one across fork), opened only if lookups may find something."""
    exclude, table, lookups, cache_path = context
    cache = None
    if cache_path is not None:
        try:
            cache = HashCache(cache_path)
        except Exception as exc:
            if not isinstance(exc, OSError) and not is_database_error(exc):
                raise
            cache = None  # then only the stored digests answer
    return TreeWorker(exclude, cache, table, lookups)


def cut_chunks(
    jobs: Jobs, start: int, end: int, depth: Sequence[int], relpaths: Sequence[str]
) -> list[list[Segment]]:
    """Cut jobs ``start`` to ``end`` into chunks of ``CHUNK_FILES`` consecutive files,
    each split into segments at directory boundaries."""
    paths, names, keys, dirs = jobs
    chunks: list[list[Segment]] = []
    for low in range(start, end, CHUNK_FILES):
        high = min(low + CHUNK_FILES, end)
        segments: list[Segment] = []
        first = low
        while first < high:
            index = dirs[first]
            stop = first + 1
            while stop < high and dirs[stop] == index:
                stop += 1
            # Its directory's path: any of its files' paths without the name (the
            # walk joined them with os.sep; "/name" for a file in "/").
            folder = paths[first][: -len(names[first]) - 1] or os.sep
            segments.append(
                (
                    index,
                    first,
                    depth[index],
                    relpaths[index],
                    folder,
                    names[first:stop],
                    keys[first:stop],
                )
            )
            first = stop
        chunks.append(segments)
    return chunks
