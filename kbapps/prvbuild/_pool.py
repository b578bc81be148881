"""Hashing chunks on every core: this process and forked workers, fed while the
walk runs (``Pool``); what they report (``Collected``); the big files left to the
parent (``finish_raw``).

A ``Pool`` hashes chunks (``_worker``) on this process and forked children, which
it keeps fed through a work pipe each; chunks can be added while it runs, so hashing
starts while the walk goes on. The parent only joins texts (``Collected``).
"""

from __future__ import annotations

import marshal
import os
import select
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from kbapps import hashing
from kbapps.hashing import PARALLEL_MIN_FILES, FileKey, HashCache, hash_files
from kbapps.prvbuild._common import Key, ProgressCallback, PrvBuildError, Warn, rel, show
from kbapps.prvbuild._text import segment_texts
from kbapps.prvbuild._worker import Jobs, Report, Segment, TreeWorker

if TYPE_CHECKING:
    import hashlib
    import sqlite3
else:  # imported when first used (see hashing._LazyModule)
    hashlib = hashing._LazyModule("hashlib", globals())
    sqlite3 = hashing._LazyModule("sqlite3", globals())

#: Chunks handed to a child ahead of what it has reported: one to work on and one
#: waiting, so it never waits for the parent, and little is left on one side at the
#: end (the parent cannot take back what it handed out).
_AHEAD = 2


class Collected:
    """What the workers reported, per directory: ``texts[dir]`` holds ``(first job,
    entries text, key text, digests, newest mtime)`` and ``raw[dir]`` ``(first job,
    records)`` for segments with big files left to the parent; ``counts[dir]`` is
    the number of its files reported so far.

    Args:
        report: progress callback.
        warn: warning callback.
        relpaths: every directory's relative path, by index (to name a failed file;
            it may grow while the walk runs).
    """

    def __init__(self, report: ProgressCallback, warn: Warn, relpaths: Sequence[str]) -> None:
        self.texts: dict[int, list[tuple[int, bytes, bytes, bytes, int]]] = {}
        self.raw: dict[int, list[tuple[int, list[tuple[Any, ...]]]]] = {}
        self.counts: dict[int, int] = {}
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
                self.counts[dir_index] = self.counts.get(dir_index, 0) + nfiles
                files += nfiles
                nbytes += size
            elif kind == "c":
                self.done.add(item[1])
            elif kind == "r":
                _, _, dir_index, first, records, nfiles, size = item
                self.raw.setdefault(dir_index, []).append((first, records))
                self.counts[dir_index] = self.counts.get(dir_index, 0) + nfiles
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


def wants_lookups(cache: HashCache | None, table: dict[Key, tuple[str, str]]) -> bool:
    """Whether workers should take each file's key and look it up before reading it:
    only if some digest could answer (``table`` or the database holds any)."""
    if table:
        return True
    if cache is None:
        return False
    try:
        return cache.has_files()
    except sqlite3.Error:
        return True  # the lookups will fail and say so


class _Feed:
    """The parent's side of one forked worker: its result pipe, the write end of its
    work pipe (-1 once closed), the bytes not yet written there, and the chunks it
    was handed and has not reported done."""

    def __init__(self, child: hashing._Child, work_fd: int) -> None:
        self.child = child
        self.work_fd = work_fd
        self.outgoing = bytearray()
        self.sent: set[int] = set()


class Pool:
    """Hashes chunks on this process and ``workers - 1`` forked ones; chunks may be
    added while it runs (the walk feeds it), so hashing starts with the first
    directory listed.

    A child is forked once ``PARALLEL_MIN_FILES`` files are queued (a small tree
    never forks). Each child has a work pipe of its own: the parent writes whole
    chunks there (marshal frames, non-blocking, so a full pipe never stalls it) and
    keeps each child ``_AHEAD`` chunks ahead of its reports; everything else it
    hashes itself between walking and feeding. A child that dies leaves its chunks
    unreported: the parent does them at the end.

    Args:
        worker: hashes here (and, copied by fork, in the children).
        collected: receives every report.
        workers: processes to use, this one included.
        cache_path: the children open their own connection to it (never a parent's
            connection across fork); None for no cache lookups.

    Use: ``add`` chunks, calling ``pump`` now and then; ``finish`` once all are
    added; ``close`` always (in a ``finally``).
    """

    def __init__(
        self, worker: TreeWorker, collected: Collected, workers: int, cache_path: Any
    ) -> None:
        self.worker = worker
        self.collected = collected
        self.workers = workers
        self.cache_path = cache_path
        self.chunks: list[list[Segment]] = []
        self.next = 0  # the first chunk neither handed out nor done here
        self.feeds: list[_Feed] = []
        self.queued_files = 0
        self.forked = workers < 2 or not hasattr(os, "fork")
        self.closed = False  # no more chunks will be added

    def add(self, chunks: list[list[Segment]], nfiles: int) -> None:
        """Queue ``chunks`` (of ``nfiles`` files in all)."""
        self.chunks += chunks
        self.queued_files += nfiles

    def pump(self) -> None:
        """Fork the children once there is enough work, take their reports, and
        hand them chunks; never blocks."""
        if not self.forked and self.queued_files >= PARALLEL_MIN_FILES:
            self.forked = True
            self._fork()
        ahead = _AHEAD
        if self.closed and len(self.chunks) - self.next <= _AHEAD * len(self.feeds):
            # The last chunks: one each at a time, so that no child is left with a
            # queued chunk while the parent, done with its own, waits for it.
            ahead = 1
        for feed in self.feeds:
            self._receive(feed)
            while feed.work_fd >= 0 and len(feed.sent) < ahead and self.next < len(self.chunks):
                blob = marshal.dumps([(self.next, self.chunks[self.next])])
                feed.outgoing += hashing._FRAME.pack(len(blob)) + blob
                feed.sent.add(self.next)
                self.next += 1
            self._flush(feed)

    def finish(self, between: Callable[[], None] | None = None) -> None:
        """Hash every chunk not handed out, wait for the children, and redo what a
        dead child left; raises ``PrvBuildError`` for a file that failed.

        Args:
            between: called after each chunk done here and each wait (to write out
                what is complete while the children work).
        """
        self.closed = True
        while True:
            self.pump()
            if between is not None:
                between()
            if self.next >= len(self.chunks):
                break
            number = self.next
            self.next += 1
            self.collected.take(self.worker.process(number, self.chunks[number]))
        for feed in self.feeds:
            if not feed.outgoing:
                self._close_work(feed)  # it finishes what it has, then exits
        while any(not feed.child.eof for feed in self.feeds):
            self._wait()
            for feed in self.feeds:
                self._receive(feed)
                self._flush(feed)
                if not feed.outgoing:
                    self._close_work(feed)
            if between is not None:
                between()
        for number, segments in enumerate(self.chunks):
            if number not in self.collected.done:
                self.collected.take(self.worker.process(number, segments))

    def close(self, kill: bool) -> None:
        """Close the pipes and reap the children (terminating them first if
        ``kill``)."""
        for feed in self.feeds:
            self._close_work(feed)
            feed.child.close(kill=kill)
        self.feeds = []

    def _fork(self) -> None:
        hashlib.sha1  # noqa: B018 - import it once here, not in every child
        inherited: list[int] = []  # the parent's ends of earlier children's pipes
        for _ in range(self.workers - 1):
            work_r, work_w = os.pipe()
            closing = [*inherited, work_w]

            def body(
                result_fd: int, work_r: int = work_r, closing: list[int] = closing
            ) -> None:  # pragma: no cover - runs in the child
                for fd in closing:
                    os.close(fd)
                self._child_main(work_r, result_fd)

            try:
                child = hashing._Child(body)
            finally:
                os.close(work_r)
            os.set_blocking(work_w, False)
            self.feeds.append(_Feed(child, work_w))
            inherited += [work_w, child.rfd]

    def _child_main(self, work_fd: int, result_fd: int) -> None:  # pragma: no cover
        # Runs in a child: chunks from the work pipe until it closes, reports back.
        worker = self.worker
        worker.cache = None
        if self.cache_path is not None:
            try:
                worker.cache = HashCache(self.cache_path)
            except (OSError, sqlite3.Error):
                worker.cache = None
        size = hashing._FRAME.size
        with (
            os.fdopen(work_fd, "rb") as work,
            os.fdopen(result_fd, "wb", buffering=0) as pipe,
        ):
            while len(head := work.read(size)) == size:
                (length,) = hashing._FRAME.unpack(head)
                for number, segments in marshal.loads(work.read(length)):
                    hashing._send_frame(pipe, worker.process(number, segments))

    def _receive(self, feed: _Feed) -> None:
        reports = feed.child.drain(block=False)
        if reports:
            feed.sent.difference_update([item[1] for item in reports if item[0] == "c"])
            self.collected.take(reports)
        if feed.child.eof:
            feed.outgoing.clear()
            self._close_work(feed)

    def _flush(self, feed: _Feed) -> None:
        if not feed.outgoing or feed.work_fd < 0:
            return
        try:
            written = os.write(feed.work_fd, feed.outgoing)
        except BlockingIOError:
            return
        except OSError:  # the child is gone: its chunks are redone at the end
            feed.outgoing.clear()
            self._close_work(feed)
            return
        del feed.outgoing[:written]

    def _close_work(self, feed: _Feed) -> None:
        if feed.work_fd >= 0:
            os.close(feed.work_fd)
            feed.work_fd = -1

    def _wait(self) -> None:
        # Until a child reports or ends, or a full work pipe takes more.
        readable = [feed.child.rfd for feed in self.feeds if not feed.child.eof]
        writable = [feed.work_fd for feed in self.feeds if feed.outgoing and feed.work_fd >= 0]
        if readable or writable:
            select.select(readable, writable, [])


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
