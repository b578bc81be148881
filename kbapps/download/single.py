"""``download_prv``: the content of one ``.prv`` to OUT, verified (docs/commands.md)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.to_thread

from kbapps.download import safefs
from kbapps.download.cache import FillRequest, open_cache
from kbapps.download.cachefill import fill_cache
from kbapps.download.conflicts import survey
from kbapps.download.errors import BadInputError, ClientError, ConflictError
from kbapps.download.job import Job, fetch_job
from kbapps.download.options import ClientOptions, make_http_client
from kbapps.download.partfile import part_name, resumable_bytes
from kbapps.download.places import Place
from kbapps.download.progress import Reporter
from kbapps.download.results import (
    DownloadResult,
    EventSink,
    done_event,
    error_event,
    kept_event,
    no_events,
)
from kbproto.prv import Prv, is_valid_entry_name
from kbtransport.http_client import HttpClient

__all__ = ("download_prv",)


def _resolve_out(prv: Prv, out: Path) -> tuple[Path, str]:
    """``(directory, file name)`` of the file to write for ``out``."""
    if out.is_dir():
        name = prv.path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
        if not is_valid_entry_name(name):
            raise BadInputError(f"{out} is a directory and the .prv names no usable file name")
        return out, name
    parent = out.parent
    if not parent.is_dir():
        raise BadInputError(f"cannot write {out}: directory {parent} does not exist")
    if out.name.endswith(".part"):
        raise BadInputError(f"OUT may not end in .part: {out}")
    return parent, out.name


async def download_prv(
    prv: Prv,
    out: str | os.PathLike[str],
    options: ClientOptions,
    *,
    on_event: EventSink | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    client: HttpClient | None = None,
) -> DownloadResult:
    """Download the content of one ``.prv`` to ``out``, verified (docs/commands.md).

    Args:
        prv: the parsed ``.prv``.
        out: the file to write; if it is an existing directory, the file is written
            inside it under the ``.prv``'s file name. ``out + ".part"`` (and
            ``out + ".part.json"``) hold an unfinished download for a later resume
            (a shortened name when OUT's is too long for them: ``partfile.part_name``).
        options: hub, caches, timeouts.
        on_event: receives the events described in ``kbapps.download.results``.
        on_progress: called with ``(files, bytes)`` deltas (for a progress bar).
        client: an ``HttpClient`` to reuse; one is made (and closed) if None.

    Returns:
        Where the file is and how it got there (``origin="present"``: OUT already held
        the content and was kept as it is).

    Raises:
        ConflictError: OUT holds other content, or is a symlink, a directory or a
            special file, and ``options.force`` is false (exit 2); nothing changed.
        BadInputError: OUT cannot be written (exit 2).
        NotFoundError: the network has no node with the content (exit 1).
        HubUnreachableError: the hub could not be asked (exit 3).
        DownloadFailedError: every source failed; ``failures`` lists them (exit 3).
    """
    emit = on_event or no_events
    directory, name = _resolve_out(prv, Path(out))
    try:
        dir_fd = safefs.open_dir(directory)
    except OSError as exc:
        raise BadInputError(f"cannot write {out}: {exc.strerror or exc}") from None
    try:
        return await _download_into(
            prv, Place(dir_fd, directory, (), name), options, emit, on_progress, client
        )
    finally:
        os.close(dir_fd)


async def _download_into(
    prv: Prv,
    place: Place,
    options: ClientOptions,
    emit: EventSink,
    on_progress: Callable[[int, int], None] | None,
    client: HttpClient | None,
) -> DownloadResult:
    target = place.path
    label = str(target)
    part = part_name(place.root_fd, place.name)
    job = Job(
        prv=prv,
        label=label,
        target=place,
        part_dir_fd=place.root_fd,
        part_name=part,
        part_label=str(place.root / part),
    )
    try:
        return await _fetch_into(job, options, emit, on_progress, client)
    except anyio.get_cancelled_exc_class():
        # Ctrl+C: say what the .part keeps for the next run (plain system calls while
        # the cancellation unwinds; every file of the job is closed by now).
        kept = resumable_bytes(place.root_fd, part, prv)
        if kept:
            emit(kept_event(label, job.part_label, kept, prv.size))
        raise


async def _fetch_into(
    job: Job,
    options: ClientOptions,
    emit: EventSink,
    on_progress: Callable[[int, int], None] | None,
    client: HttpClient | None,
) -> DownloadResult:
    prv, place, label = job.prv, job.target, job.label
    target = place.path
    cache = open_cache(options.cache_dir, options.cache_size)
    reporter = Reporter(emit, on_progress, options.progress_interval, prv.size, 1)
    found = await anyio.to_thread.run_sync(
        lambda: survey([(label, place, prv)], options.hash_cache_path)
    )
    if label in found.present:
        # OUT already holds this content (re-running a finished command): keep it.
        reporter.add(files=1, nbytes=prv.size)
        result = DownloadResult(path=target, sha1=prv.sha1, size=prv.size, origin="present")
        emit(done_event(result, label))
        return result
    conflict = found.conflicts.get(label)
    if conflict is not None:
        if not (options.force and conflict.replaceable):
            hint = " (use --force to replace it)" if conflict.replaceable else ""
            refused = ConflictError(f"{conflict.reason}: not replaced{hint}", [conflict.reason])
            emit(error_event(label, prv.sha1, refused))
            raise refused
        job.replace = True
    # The bytes a last run left count from the start (the progress bar starts there).
    job.counted = await anyio.to_thread.run_sync(resumable_bytes, place.root_fd, job.part_name, prv)
    if job.counted:
        reporter.add(nbytes=job.counted)
    own = client is None
    http = client if client is not None else make_http_client(options)
    fills: list[FillRequest] = []
    try:
        result = await fetch_job(job, http, options, cache, reporter, emit, set(), fills)
    except ClientError as exc:
        emit(error_event(label, prv.sha1, exc))
        raise
    finally:
        if own:
            with anyio.CancelScope(shield=True):
                await http.aclose()
    await fill_cache(cache, fills, background=options.cache_in_background, emit=emit)
    emit(done_event(result, label))
    return result
