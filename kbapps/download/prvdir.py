"""``download_prvdir``: every file of a ``.prvdir`` into a directory (docs/commands.md).

The files are fanned out over a few concurrent workers sharing one HTTP client; files
already present with the right content are skipped (the per-user hash cache of
``kbapps.hashing`` makes that check cheap), identical contents are fetched once, and
partial files live in ``OUT/.kbucket-partial/`` (a dot-name, so never a ``.prvdir``
entry) to be resumed by the next run.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import anyio
import anyio.to_thread

from kbapps.download import safefs
from kbapps.download.cache import FillRequest, open_cache
from kbapps.download.cachefill import fill_cache
from kbapps.download.conflicts import Conflict, survey
from kbapps.download.errors import (
    BadInputError,
    ClientError,
    ConflictError,
    HubUnreachableError,
)
from kbapps.download.job import Job, copy_verified, fetch_job
from kbapps.download.options import ClientOptions, make_http_client
from kbapps.download.partfile import PART_SUFFIX, resumable_bytes
from kbapps.download.places import Place, split_relpath
from kbapps.download.progress import Reporter
from kbapps.download.results import (
    DownloadResult,
    EventSink,
    PrvDirResult,
    done_event,
    error_event,
    kept_event,
    no_events,
)
from kbapps.download.transfer import DeadOrigins
from kbproto.prv import Prv, PrvDir
from kbtransport.http_client import HttpClient

__all__ = ("PARTIAL_DIRNAME", "download_prvdir")

#: Where a ``.prvdir`` download keeps its partial files, inside OUT. A dot-name: never
#: a ``.prvdir`` entry, and skipped by ``kb-prv-create``.
PARTIAL_DIRNAME = ".kbucket-partial"


async def download_prvdir(
    prvdir: PrvDir,
    out_dir: str | os.PathLike[str],
    options: ClientOptions,
    *,
    on_event: EventSink | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> PrvDirResult:
    """Download every file of a ``.prvdir`` into the directory ``out_dir`` (docs/commands.md).

    Files already present with the right content are skipped; identical contents are
    fetched once; up to ``options.concurrency`` files download at once over one
    HTTP client. Partial files wait in ``out_dir/.kbucket-partial/`` for the next run.
    If the hub turns out to be unreachable, the remaining files are not attempted.
    Nothing below ``out_dir`` is reached through a symlink (``kbapps.download.safefs``).
    Before anything is written, every target is looked at (``conflicts``): one that
    holds other content, or is in the way, stops the run unless ``options.force``;
    with it, files and symlinks in the way are replaced, and a file whose name is a
    directory, or whose directory on the way is a symlink or a file, fails (exit 2).

    Returns:
        What was done and what failed (``exit_code`` summarises).

    Raises:
        ConflictError: without ``options.force``, targets hold other content or are in
            the way (each listed); nothing was changed.
        BadInputError: ``out_dir`` exists and is not a directory, or cannot be made,
            or its ``.kbucket-partial`` is a symlink or not a directory.
    """
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise BadInputError(f"OUT must be a directory for a .prvdir: {root} is a file")
    try:
        root.mkdir(parents=True, exist_ok=True)
        root_fd = safefs.open_dir(root)
    except OSError as exc:
        raise BadInputError(f"cannot create {root}: {exc.strerror or exc}") from None
    try:
        return await _download_tree(prvdir, root, root_fd, options, on_event, on_progress)
    finally:
        os.close(root_fd)


async def _download_tree(
    prvdir: PrvDir,
    root: Path,
    root_fd: int,
    options: ClientOptions,
    on_event: EventSink | None,
    on_progress: Callable[[int, int], None] | None,
) -> PrvDirResult:
    emit = on_event or no_events
    files = list(prvdir.iter_files())
    total_bytes = sum(prv.size for _, prv in files)
    reporter = Reporter(emit, on_progress, options.progress_interval, total_bytes, len(files))
    done: list[DownloadResult] = []
    failed: list[tuple[str, ClientError]] = []

    def fail(rel: str, sha1: str, exc: ClientError) -> None:
        failed.append((rel, exc))
        emit(error_event(rel, sha1, exc))

    planned: list[tuple[str, Place, Prv]] = []
    for rel, prv in files:
        try:
            dirs, name = split_relpath(rel)
        except BadInputError as exc:
            fail(rel, prv.sha1, exc)
            continue
        planned.append((rel, Place(root_fd, root, dirs, name), prv))

    # On the event loop's thread, not a worker thread: for many small files
    # hash_files forks worker processes, and forking is only safe from the thread
    # that owns the process (nothing else runs on the loop yet).
    found = survey(planned, options.hash_cache_path)
    if found.conflicts and not options.force:
        _refuse(found.conflicts, root, emit, {rel: prv for rel, _p, prv in planned})
    present = found.present
    jobs: dict[str, Job] = {}
    partial_fd = -1
    # What is already on disk (files in place, partial files) is counted in one step
    # before any byte moves, so the first progress shown starts where the last run
    # stopped (docs/commands.md, kb-prv-download).
    on_disk_files = on_disk_bytes = 0
    try:
        for rel, place, prv in planned:
            conflict = found.conflicts.get(rel)
            if conflict is not None and not conflict.replaceable:
                # A directory at the name, or on the way a symlink or a file: never
                # followed or replaced, --force or not.
                fail(rel, prv.sha1, BadInputError(f"refusing to write {rel}: {conflict.reason}"))
                continue
            replace = conflict is not None
            if rel in present:
                result = DownloadResult(
                    path=place.path, sha1=prv.sha1, size=prv.size, origin="present"
                )
                done.append(result)
                on_disk_files += 1
                on_disk_bytes += prv.size
                emit(done_event(result, rel))
                continue
            job = jobs.get(prv.sha1)
            if job is None:
                if partial_fd < 0:
                    partial_fd = _open_partial_dir(root, root_fd)
                name = prv.sha1 + PART_SUFFIX
                jobs[prv.sha1] = Job(
                    prv=prv,
                    label=rel,
                    target=place,
                    part_dir_fd=partial_fd,
                    part_name=name,
                    part_label=str(root / PARTIAL_DIRNAME / name),
                    replace=replace,
                )
            else:
                job.copies.append((rel, place, replace))
        if partial_fd >= 0:
            on_disk = await anyio.to_thread.run_sync(_parts_on_disk, partial_fd, jobs)
            for job, nbytes in on_disk:
                job.counted = nbytes
                on_disk_bytes += nbytes
        if on_disk_files or on_disk_bytes:
            reporter.add(files=on_disk_files, nbytes=on_disk_bytes)
        await _run_jobs(list(jobs.values()), options, reporter, emit, done, fail)
    except anyio.get_cancelled_exc_class():
        # Ctrl+C: say what the partial files keep for the next run (plain system calls
        # while the cancellation unwinds; the jobs have closed their files).
        if partial_fd >= 0:
            for job, nbytes in _parts_on_disk(partial_fd, jobs):
                emit(kept_event(job.label, job.part_label, nbytes, job.prv.size))
        raise
    finally:
        if partial_fd >= 0:
            os.close(partial_fd)
            with contextlib.suppress(OSError):
                # Only if empty: partial files stay for the next run.
                os.rmdir(PARTIAL_DIRNAME, dir_fd=root_fd)
    outcome = PrvDirResult(done=tuple(done), failed=tuple(failed))
    emit(
        {
            "event": "finished",
            "files": len(files),
            "done": len(done),
            "skipped": sum(1 for r in done if r.origin == "present"),
            "failed": len(failed),
            "exit_code": outcome.exit_code,
        }
    )
    return outcome


def _refuse(
    conflicts: dict[str, Conflict], root: Path, emit: EventSink, prvs: dict[str, Prv]
) -> NoReturn:
    """Report every conflict and stop: nothing has been changed yet."""
    reasons = []
    for rel, conflict in conflicts.items():
        never = "" if conflict.replaceable else " (never replaced, even with --force)"
        reasons.append(conflict.reason + never)
        emit(error_event(rel, prvs[rel].sha1, ConflictError(reasons[-1], [reasons[-1]])))
    count = len(conflicts)
    raise ConflictError(
        f"{count} file{'s' if count != 1 else ''} in {root} would be replaced or "
        "written through: nothing was changed (use --force to replace files and symlinks)",
        reasons,
    )


def _parts_on_disk(partial_fd: int, jobs: dict[str, Job]) -> list[tuple[Job, int]]:
    """The jobs whose partial file in ``partial_fd`` a run would resume, and its bytes
    (``partfile.resumable_bytes``); one listing of the directory, not a look per job."""
    named = {job.part_name: job for job in jobs.values()}
    with os.scandir(partial_fd) as listing:
        found = [named[entry.name] for entry in listing if entry.name in named]
    on_disk = [(job, resumable_bytes(partial_fd, job.part_name, job.prv)) for job in found]
    return [(job, nbytes) for job, nbytes in on_disk if nbytes]


def _open_partial_dir(root: Path, root_fd: int) -> int:
    label = str(root / PARTIAL_DIRNAME)
    try:
        return safefs.open_subdir(root_fd, PARTIAL_DIRNAME, label, create=True)
    except safefs.UnsafeEntry:
        raise  # a planted symlink: refuse the whole run, one line
    except OSError as exc:
        raise BadInputError(f"cannot create {label}: {exc.strerror or exc}") from None


async def _run_jobs(
    queue: list[Job],
    options: ClientOptions,
    reporter: Reporter,
    emit: EventSink,
    done: list[DownloadResult],
    fail: Callable[[str, str, ClientError], None],
) -> None:
    cache = open_cache(options.cache_dir, options.cache_size)
    fills: list[FillRequest] = []
    queue.reverse()  # pop() from the end keeps the .prvdir's order
    stop = anyio.Event()
    dead: DeadOrigins = set()

    async def worker(http: HttpClient) -> None:
        while queue and not stop.is_set():
            job = queue.pop()
            try:
                result = await fetch_job(job, http, options, cache, reporter, emit, dead, fills)
            except ClientError as exc:
                fail(job.label, job.prv.sha1, exc)
                for rel, _place, _replace in job.copies:
                    fail(rel, job.prv.sha1, exc)
                if isinstance(exc, HubUnreachableError):
                    stop.set()  # every other file would fail the same way
                continue
            done.append(result)
            emit(done_event(result, job.label))
            for rel, place, replace in job.copies:
                try:
                    ok = await anyio.to_thread.run_sync(copy_verified, job, place, replace)
                except ClientError as exc:
                    fail(rel, job.prv.sha1, exc)
                    continue
                if ok:
                    copied = DownloadResult(
                        path=place.path, sha1=job.prv.sha1, size=job.prv.size, origin="copy"
                    )
                    done.append(copied)
                    reporter.add(files=1, nbytes=job.prv.size)
                    emit(done_event(copied, rel))
                else:
                    fail(rel, job.prv.sha1, BadInputError(f"cannot write {place.path}"))

    async with make_http_client(options) as http, anyio.create_task_group() as tg:
        for _ in range(min(options.concurrency, len(queue))):
            tg.start_soon(worker, http)
    if stop.is_set():
        for job in queue:
            skipped = HubUnreachableError(f"{job.label}: not attempted, the hub is unreachable")
            fail(job.label, job.prv.sha1, skipped)
            for rel, _place, _replace in job.copies:
                fail(rel, job.prv.sha1, skipped)
    await fill_cache(cache, fills, background=options.cache_in_background, emit=emit)
