"""What the hashing of a tree reports, per directory (``Collected``), and the big
files the workers left to this process (``finish_raw``).

The chunks of a tree (``_worker``) are hashed on ``kbapps.hashing.pool``: this process
and worker processes forked once there is enough work, fed while the walk runs. This
process only joins the texts they report.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kbapps.hashing import FileKey, HashCache, chunks_root, hash_files, is_database_error
from kbapps.prvbuild._common import (
    CountCallback,
    Key,
    ProgressCallback,
    PrvBuildError,
    Stored,
    Warn,
    rel,
    show,
)
from kbapps.prvbuild._text import segment_texts
from kbapps.prvbuild._worker import Jobs, Report


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
        cached: called with the files whose digests came from the hash cache.
    """

    def __init__(
        self,
        report: ProgressCallback,
        warn: Warn,
        relpaths: Sequence[str],
        cached: CountCallback,
    ) -> None:
        self.texts: dict[int, list[tuple[int, bytes, bytes, bytes, int]]] = {}
        self.raw: dict[int, list[tuple[int, list[tuple[Any, ...]]]]] = {}
        self.counts: dict[int, int] = {}
        self.report = report
        self.cached = cached
        self.warn = warn
        self.warned = False
        self.relpaths = relpaths

    def take(self, reports: Sequence[Report]) -> None:
        """Record a batch of reports; raise ``PrvBuildError`` for a file that failed."""
        files = nbytes = hits = 0
        for item in reports:
            kind = item[0]
            if kind == "t":
                _, dir_index, first, text, keys_text, digests, newest, nfiles, size, hit = item
                self.texts.setdefault(dir_index, []).append(
                    (first, text, keys_text, digests, newest)
                )
                self.counts[dir_index] = self.counts.get(dir_index, 0) + nfiles
                files += nfiles
                nbytes += size
                hits += hit
            elif kind == "r":
                _, dir_index, first, records, nfiles, size, hit = item
                self.raw.setdefault(dir_index, []).append((first, records))
                self.counts[dir_index] = self.counts.get(dir_index, 0) + nfiles
                files += nfiles - sum([1 for r in records if r[2] is None])
                nbytes += size
                hits += hit
            elif kind == "e":
                _, dir_index, name, reason = item
                shown = rel(self.relpaths[dir_index], name)
                raise PrvBuildError(f"cannot read {show(shown)}: {reason}")
            elif not self.warned:  # "w": the first cache failure only
                self.warned = True
                self.warn(item[1])
        if files or nbytes:
            self.report(files, nbytes)
        if hits:
            self.cached(hits)


def wants_lookups(cache: HashCache | None, table: dict[Key, Stored]) -> bool:
    """Whether workers should take each file's key and look it up before reading it:
    only if some digest could answer (``table`` or the database holds any)."""
    if table:
        return True
    if cache is None:
        return False
    try:
        return cache.has_files()
    except Exception as exc:
        if not is_database_error(exc):
            raise
        return True  # the lookups will fail and say so


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
    hits = 0
    try:
        for result in results:
            job = job_of[result.path]
            hits += result.cached
            digest = result.digest
            if digest is None:
                shown = rel(collected.relpaths[jobs.dirs[job]], jobs.names[job])
                raise PrvBuildError(f"cannot read {show(shown)}: {result.error}")
            if digest.chunks is None:  # (a hash_files result always has its list)
                raise PrvBuildError(f"no chunk digests for {jobs.names[job]}")
            digests[job] = (
                digest.sha1, digest.head_sha1, digest.size, *result.key, chunks_root(digest.chunks)
            )  # fmt: skip
    finally:
        results.close()
    if hits:
        collected.cached(hits)
    for dir_index, segments in collected.raw.items():
        for first, records in segments:
            done = [
                record if record[2] is not None else (*record[:2], *digests[record[0]])
                for record in records
            ]
            texts = segment_texts(done, depth[dir_index], collected.relpaths[dir_index])
            collected.texts.setdefault(dir_index, []).append((first, *texts))
