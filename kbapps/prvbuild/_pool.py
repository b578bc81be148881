"""Hashing the files of changed directories, on every core.

The files to hash are laid out directory by directory, each directory's files sorted
by name, and cut into chunks of consecutive files (a chunk may hold the end of one
directory and the start of the next: "segments"). Chunks are claimed from a pipe by
the parent and its forked children as in ``kbapps.hashing`` (4-byte chunk numbers,
atomic reads), so the load balances itself. A worker turns each segment straight
into its finished texts (entries, keys, digests: ``_text.segment_texts``):
formatting runs on every core too, and one marshal message per chunk carries it all;
the parent only joins texts (``Collected``). Files of ``BIG_FILE_BYTES`` and up are
left to the parent (``finish_raw``: threads, byte progress, SQLite rows).
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from kbapps import hashing
from kbapps.hashing import (
    BIG_FILE_BYTES,
    BUFFER_SIZE,
    PARALLEL_MIN_FILES,
    RACY_WINDOW_NS,
    FileKey,
    HashCache,
    hash_files,
)
from kbapps.prvbuild._common import (
    FCS_HEAD_BYTES,
    Key,
    ProgressCallback,
    PrvBuildError,
    Warn,
    rel,
    show,
)
from kbapps.prvbuild._text import segment_texts

if TYPE_CHECKING:
    import hashlib
    import sqlite3
else:  # imported when first used (see hashing._LazyModule)
    hashlib = hashing._LazyModule("hashlib", globals())
    sqlite3 = hashing._LazyModule("sqlite3", globals())


#: Files per chunk: ~1-2 ms of work, few messages, and the last chunk finishes soon.
_CHUNK_FILES = 128


#: Never more chunks than this (their numbers must fit in a pipe buffer, see hashing).
_MAX_CHUNKS = 8192


#: A file modified less than this before it is read takes the careful read (an fstat
#: before and after); an older one is read first and fstat-ed once (see ``_segment``).
_QUIET_NS = RACY_WINDOW_NS


#: A segment: (dir index, first job index, end job index).
Segment = tuple[int, int, int]


#: What a worker reports, as plain tuples (marshal):
#: ("t", chunk, dir, first, entries text, key text, digests, newest mtime_ns, files,
#: bytes); ("r", chunk, dir, first, records, files, bytes) for a segment holding big
#: files (records as for ``segment_texts``, sha1 None for a big file);
#: ("e", chunk, dir, name, reason); ("w", chunk, message); ("c", chunk): chunk done.
Report = tuple[Any, ...]


class Jobs(NamedTuple):
    """The files to hash, in directory-then-name order, as parallel lists."""

    paths: list[str]
    names: list[str]
    keys: list[Key | None]
    dirs: list[int]


class TreeWorker:
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
        jobs: Jobs,
        relpaths: Sequence[str],
        depth: Sequence[int],
        exclude: frozenset[tuple[int, int]],
        cache: HashCache | None,
        table: dict[Key, tuple[str, str]],
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

    def process(self, chunk: int, segments: Sequence[Segment]) -> list[Report]:
        """Return the reports of one chunk, ending with its ("c", chunk)."""
        out: list[Report] = []
        for segment in segments:
            self._segment(chunk, segment, out)
        out.append(("c", chunk))
        return out

    def _lookup(
        self, chunk: int, first: int, end: int, out: list[Report]
    ) -> tuple[list[Key | None], dict[Key, tuple[str, str]]]:
        # Keys (a stat per file the parent did not stat) and their known digests.
        paths, given = self.jobs.paths, self.jobs.keys
        keys: list[Key | None] = []
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

    def _segment(self, chunk: int, segment: Segment, out: list[Report]) -> None:
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
        keys: Sequence[Key | None] = ()
        found: dict[Key, tuple[str, str]] = {}
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
        head_bytes = FCS_HEAD_BYTES
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
        text, keys_text, digests, newest = segment_texts(
            records, self.depth[dir_index], self.relpaths[dir_index]
        )
        out.append(
            ("t", chunk, dir_index, first, text, keys_text, digests, newest, end - first, nbytes)
        )


def cut_chunks(jobs: Jobs) -> list[list[Segment]]:
    # Consecutive files, about _CHUNK_FILES each, split at directory boundaries.
    count = len(jobs.paths)
    size = max(_CHUNK_FILES, -(-count // _MAX_CHUNKS))
    dirs = jobs.dirs
    chunks: list[list[Segment]] = []
    for start in range(0, count, size):
        end = min(start + size, count)
        segments: list[Segment] = []
        first = start
        for job in range(start + 1, end):
            if dirs[job] != dirs[first]:
                segments.append((dirs[first], first, job))
                first = job
        segments.append((dirs[first], first, end))
        chunks.append(segments)
    return chunks


class Collected:
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

    def take(self, reports: Sequence[Report]) -> None:
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
                shown = rel(self.relpaths[dir_index], name)
                raise PrvBuildError(f"cannot read {show(shown)}: {reason}")
            elif not self.warned:  # "w": the first cache failure only
                self.warned = True
                self.warn(item[2])
        if files or nbytes:
            self.report(files, nbytes)


def hash_jobs(
    jobs: Jobs,
    relpaths: Sequence[str],
    depth: Sequence[int],
    exclude: frozenset[tuple[int, int]],
    cache: HashCache | None,
    table: dict[Key, tuple[str, str]],
    workers: int,
    collected: Collected,
) -> None:
    """Hash every job into ``collected``, on ``workers`` processes (this one too)."""
    chunks = cut_chunks(jobs)
    lookups = bool(table)
    if cache is not None and not lookups:
        try:
            lookups = cache.has_files()
        except sqlite3.Error:
            lookups = True  # the lookups will fail and say so
    parent = TreeWorker(jobs, relpaths, depth, exclude, cache, table, lookups)
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
        worker = TreeWorker(jobs, relpaths, depth, exclude, child_cache, table, lookups)
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


def finish_raw(
    jobs: Jobs,
    collected: Collected,
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
                shown = rel(collected.relpaths[jobs.dirs[job]], jobs.names[job])
                raise PrvBuildError(f"cannot read {show(shown)}: {result.error}")
            digests[job] = (digest.sha1, digest.head_sha1, digest.size, *result.key)
    finally:
        results.close()
    for dir_index, segments in collected.raw.items():
        for first, records in segments:
            done = [
                record if record[2] is not None else (*record[:2], *digests[record[0]])
                for record in records
            ]
            texts = segment_texts(done, depth[dir_index], collected.relpaths[dir_index])
            collected.texts.setdefault(dir_index, []).append((first, *texts))
