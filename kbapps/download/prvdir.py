"""``download_prvdir``: every file of a ``.prvdir`` into a directory (SPEC §3.5).

The files are fanned out over a few concurrent workers sharing one HTTP client; files
already present with the right content are skipped (the per-user hash cache of
``kbapps.hashing`` makes that check cheap), identical contents are fetched once, and
partial files live in ``OUT/.kbucket-partial/`` (a dot-name, so never a ``.prvdir``
entry) to be resumed by the next run.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.to_thread

from kbapps.download.cache import ContentCache
from kbapps.download.errors import BadInputError, ClientError, HubUnreachableError
from kbapps.download.job import Job, copy_verified, fetch_job
from kbapps.download.options import ClientOptions, make_http_client
from kbapps.download.present import present_files
from kbapps.download.progress import Reporter
from kbapps.download.results import (
    DownloadResult,
    EventSink,
    PrvDirResult,
    done_event,
    error_event,
    no_events,
)
from kbapps.download.transfer import DeadOrigins
from kbproto.prv import Prv, PrvDir, is_valid_entry_name
from kbtransport.http_client import HttpClient

__all__ = ("PARTIAL_DIRNAME", "download_prvdir", "safe_target")

#: Where a ``.prvdir`` download keeps its partial files, inside OUT. A dot-name: never
#: a ``.prvdir`` entry, and skipped by ``kb-prv-create``.
PARTIAL_DIRNAME = ".kbucket-partial"


def safe_target(out_dir: Path, relpath: str) -> Path:
    """Return ``out_dir/relpath``, creating its directories, refusing any escape.

    Every component must be a valid ``.prvdir`` entry name (no ``..``, no absolute
    path, no separator, no dot-name); an existing component that is a symlink or not
    a directory is refused rather than followed.

    Raises:
        BadInputError: the path is unsafe or a directory cannot be made.
    """
    parts = relpath.split("/")
    if not parts or not all(is_valid_entry_name(p) for p in parts):
        raise BadInputError(f"unsafe path in .prvdir: {relpath!r}")
    current = out_dir
    for name in parts[:-1]:
        current = current / name
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            try:
                os.mkdir(current, 0o755)
            except FileExistsError:
                pass
            except OSError as exc:
                raise BadInputError(f"cannot create {current}: {exc.strerror or exc}") from None
            st = os.lstat(current)
        except OSError as exc:
            raise BadInputError(f"cannot use {current}: {exc.strerror or exc}") from None
        if not stat.S_ISDIR(st.st_mode):
            what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
            raise BadInputError(f"refusing to write {relpath}: {current} is {what}")
    target = current / parts[-1]
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return target
    except OSError as exc:
        raise BadInputError(f"cannot use {target}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise BadInputError(f"cannot write {relpath}: {target} is a directory")
    return target


async def download_prvdir(
    prvdir: PrvDir,
    out_dir: str | os.PathLike[str],
    options: ClientOptions,
    *,
    on_event: EventSink | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> PrvDirResult:
    """Download every file of a ``.prvdir`` into the directory ``out_dir`` (SPEC §3.5).

    Files already present with the right content are skipped; identical contents are
    fetched once; up to ``options.concurrency`` files download at once over one
    HTTP client. Partial files wait in ``out_dir/.kbucket-partial/`` for the next run.
    If the hub turns out to be unreachable, the remaining files are not attempted.

    Returns:
        What was done and what failed (``exit_code`` summarises).

    Raises:
        BadInputError: ``out_dir`` exists and is not a directory, or cannot be made.
    """
    emit = on_event or no_events
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise BadInputError(f"OUT must be a directory for a .prvdir: {root} is a file")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInputError(f"cannot create {root}: {exc.strerror or exc}") from None

    files = list(prvdir.iter_files())
    total_bytes = sum(prv.size for _, prv in files)
    reporter = Reporter(emit, on_progress, options.progress_interval, total_bytes, len(files))
    done: list[DownloadResult] = []
    failed: list[tuple[str, ClientError]] = []

    def fail(rel: str, sha1: str, exc: ClientError) -> None:
        failed.append((rel, exc))
        emit(error_event(rel, sha1, exc))

    planned: list[tuple[str, Path, Prv]] = []
    for rel, prv in files:
        try:
            planned.append((rel, safe_target(root, rel), prv))
        except BadInputError as exc:
            fail(rel, prv.sha1, exc)

    # On the event loop's thread, not a worker thread: for many small files
    # hash_files forks worker processes, and forking is only safe from the thread
    # that owns the process (nothing else runs on the loop yet).
    present = present_files(planned, options.hash_cache_path)
    partial_dir = root / PARTIAL_DIRNAME
    jobs: dict[str, Job] = {}
    for rel, target, prv in planned:
        if rel in present:
            result = DownloadResult(path=target, sha1=prv.sha1, size=prv.size, origin="present")
            done.append(result)
            reporter.add(files=1, nbytes=prv.size)
            emit(done_event(result, rel))
            continue
        job = jobs.get(prv.sha1)
        if job is None:
            part = partial_dir / f"{prv.sha1}.part"
            jobs[prv.sha1] = Job(prv=prv, label=rel, target=target, part=part)
        else:
            job.copies.append((rel, target))
    if jobs:
        try:
            partial_dir.mkdir(exist_ok=True)
        except OSError as exc:
            raise BadInputError(f"cannot create {partial_dir}: {exc.strerror or exc}") from None

    cache = ContentCache(options.cache_dir) if options.cache_dir is not None else None
    queue = list(jobs.values())
    queue.reverse()  # pop() from the end keeps the .prvdir's order
    stop = anyio.Event()
    dead: DeadOrigins = set()

    async def worker(http: HttpClient) -> None:
        while queue and not stop.is_set():
            job = queue.pop()
            try:
                result = await fetch_job(job, http, options, cache, reporter, emit, dead)
            except ClientError as exc:
                fail(job.label, job.prv.sha1, exc)
                for rel, _target in job.copies:
                    fail(rel, job.prv.sha1, exc)
                if isinstance(exc, HubUnreachableError):
                    stop.set()  # every other file would fail the same way
                continue
            done.append(result)
            emit(done_event(result, job.label))
            for rel, target in job.copies:
                copy = Job(prv=job.prv, label=rel, target=target, part=job.part)
                ok = await anyio.to_thread.run_sync(copy_verified, copy, job.target)
                if ok:
                    copied = DownloadResult(
                        path=target, sha1=job.prv.sha1, size=job.prv.size, origin="copy"
                    )
                    done.append(copied)
                    reporter.add(files=1, nbytes=job.prv.size)
                    emit(done_event(copied, rel))
                else:
                    fail(rel, job.prv.sha1, BadInputError(f"cannot write {target}"))

    async with make_http_client(options) as http, anyio.create_task_group() as tg:
        for _ in range(min(options.concurrency, len(queue))):
            tg.start_soon(worker, http)
    if stop.is_set():
        for job in queue:
            skipped = HubUnreachableError(f"{job.label}: not attempted, the hub is unreachable")
            fail(job.label, job.prv.sha1, skipped)
            for rel, _target in job.copies:
                fail(rel, job.prv.sha1, skipped)
    with contextlib.suppress(OSError):
        partial_dir.rmdir()  # only if empty: partial files stay for the next run
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
