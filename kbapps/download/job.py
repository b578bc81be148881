"""One content fetched into one target: empty, the cache, a ``.part`` on disk, the network."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import anyio
import anyio.to_thread

from kbapps.download import safefs
from kbapps.download.cache import ContentCache, FillRequest
from kbapps.download.errors import (
    BadInputError,
    ClientError,
    NotFoundError,
    SourceFailure,
    WrongBytes,
)
from kbapps.download.find import download_sources, find_content
from kbapps.download.options import ClientOptions
from kbapps.download.parallel import download_in_pieces
from kbapps.download.partfile import PartFile
from kbapps.download.places import Place
from kbapps.download.probe import Switched, one_source_first
from kbapps.download.progress import Reporter
from kbapps.download.results import DownloadResult, EventSink
from kbapps.download.sources import group_sources
from kbapps.download.transfer import DeadOrigins, download_from_sources
from kbproto.prv import Prv
from kbtransport.http_client import HttpClient

__all__ = ("EMPTY_SHA1", "Job", "copy_verified", "fetch_job")

#: SHA-1 of zero bytes: a file of size 0 needs no network.
EMPTY_SHA1 = hashlib.sha1(b"").hexdigest()


@dataclass
class Job:
    """One content to fetch into one or more targets.

    Attributes:
        prv: what to fetch.
        label: the path the user knows the first target by (in events and errors).
        target: where the content goes.
        part_dir_fd: the open directory holding its ``.part`` (borrowed).
        part_name: the ``.part``'s name there.
        part_label: the ``.part``'s path, for messages.
        replace: whether the target may replace what is at its name (``--force`` and
            a conflict; see ``safefs.install``).
        copies: ``(label, place, replace)`` of the other files with the same content.
        counted: bytes of its ``.part`` the reporter counted before the job started
            (``partfile.resumable_bytes``: the progress bar starts where the last run
            stopped); the job counts only what differs from them.
    """

    prv: Prv
    label: str
    target: Place
    part_dir_fd: int
    part_name: str
    part_label: str
    replace: bool = False
    copies: list[tuple[str, Place, bool]] = field(default_factory=list)
    counted: int = 0


def _install(part: PartFile, place: Place, replace: bool) -> FillRequest:
    """Move the verified part into place; return what the cache needs to copy it."""
    fd = place.open_dir(create=True)
    try:
        part.install(fd, place.name, replace=replace)
        st = os.stat(place.name, dir_fd=fd, follow_symlinks=False)
    except FileExistsError:
        raise BadInputError(
            f"{place.path} appeared during the download and was not replaced"
        ) from None
    finally:
        os.close(fd)
    return FillRequest(part.prv.sha1, os.path.abspath(place.path), FillRequest.key_of(st))


async def fetch_job(
    job: Job,
    client: HttpClient,
    options: ClientOptions,
    cache: ContentCache | None,
    reporter: Reporter,
    emit: EventSink,
    dead: DeadOrigins,
    fills: list[FillRequest],
) -> DownloadResult:
    """Get ``job.prv``'s content to ``job.target``: empty, cache, part, then network.

    A file that came from the network or a complete ``.part`` is added to ``fills``,
    for the caller to copy into the content cache once every file is in place.

    Emits ``resume`` (``offset``: the verified bytes of the ``.part`` it continues).
    When cancelled (Ctrl+C), an empty ``.part`` is removed and any other kept.

    Raises:
        ClientError: as ``download_prv`` documents.
    """
    prv = job.prv
    target = job.target.path
    if prv.size == 0:
        if prv.sha1 != EMPTY_SHA1:
            raise BadInputError(
                f"{job.label}: the .prv says size 0 but its SHA-1 is not that of empty content"
            )
        try:
            await anyio.to_thread.run_sync(_write_empty, job)
        except OSError as exc:
            raise BadInputError(f"cannot write {target}: {exc.strerror or exc}") from None
        reporter.add(files=1)
        return DownloadResult(path=target, sha1=prv.sha1, size=0, origin="empty")

    part = PartFile(job.part_dir_fd, job.part_name, job.part_label, prv)
    try:
        try:
            resumable = await anyio.to_thread.run_sync(part.open)
        except OSError as exc:
            raise BadInputError(f"cannot write {job.part_label}: {exc.strerror or exc}") from None

        if cache is not None:
            entry = cache.open_entry(prv.sha1, prv.size)
            if entry is not None:
                try:
                    ok = await anyio.to_thread.run_sync(part.copy_from, entry)
                finally:
                    os.close(entry)
                if ok:
                    await anyio.to_thread.run_sync(_install, part, job.target, job.replace)
                    reporter.add(files=1, nbytes=prv.size - job.counted)
                    return DownloadResult(path=target, sha1=prv.sha1, size=prv.size, origin="cache")
                cache.remove(prv.sha1)
                resumable = False

        resumed = 0
        if resumable and part.pieces is not None:
            # Pieces of an earlier parallel run: checked once the digest list is in.
            resumed = part.pieces.nbytes(prv.size)
        elif resumable:
            try:
                resumed = await anyio.to_thread.run_sync(part.rehash)
            except WrongBytes:
                await anyio.to_thread.run_sync(part.reset)
                resumed = 0
            if part.verified():
                fills.append(
                    await anyio.to_thread.run_sync(_install, part, job.target, job.replace)
                )
                reporter.add(files=1, nbytes=prv.size - job.counted)
                return DownloadResult(path=target, sha1=prv.sha1, size=prv.size, origin="part")
            if part.offset == prv.size:  # complete but wrong: start over
                await anyio.to_thread.run_sync(part.reset)
                resumed = 0
        if resumed != job.counted:
            # From here on the reporter counts this job's bytes as they are on disk.
            reporter.add(nbytes=resumed - job.counted)
        if resumed:
            emit(
                {
                    "event": "resume",
                    "path": job.label,
                    "part": job.part_label,
                    "offset": resumed,
                    "size": prv.size,
                }
            )

        within = options.speed_window if options.min_speed else None
        found = await find_content(client, options.hub_url, prv.sha1, within=within)
        if not found.found:
            raise NotFoundError(f"{job.label}: no node of the network has it (sha1 {prv.sha1})")
        if found.size is not None and found.size != prv.size:
            emit(
                {
                    "event": "warning",
                    "path": job.label,
                    "message": f"hub reports size {found.size}, the .prv says {prv.size}",
                }
            )
        sources = download_sources(found, options.hub_url, prv.sha1)
        nodes = group_sources(sources)
        failures: list[SourceFailure] = []
        per_source: dict[str, int] = {}
        pieces = single = switched = None
        several = part.pieces is not None
        if not several and (
            options.max_sources > 1
            and prv.size >= options.parallel_min_size
            and sum(1 for node in nodes if node.node) >= 2
        ):
            if options.one_source_first:
                # One source first; the others only when likely to help (ramp.py).
                first = await one_source_first(
                    client, sources, part, options, reporter, emit, job.label, dead
                )
                if isinstance(first, Switched):
                    switched = first
                    # A URL that failed before the switch is not asked again, unless
                    # nothing else is left.
                    failed = {f.url for f in first.failures}
                    if any(url not in failed for url in sources):
                        sources = tuple(url for url in sources if url not in failed)
                        nodes = group_sources(sources)
                else:
                    single = first
            several = single is None
        if several:
            at = part.offset if part.pieces is None else resumed
            pieces = await download_in_pieces(
                client, sources, nodes, part, at, options, reporter, emit, job.label, dead
            )
        if pieces is not None:
            url, start = pieces.url or sources[0], resumed
            transferred, per_source = pieces.transferred, dict(pieces.sources)
            failures = pieces.failures
            if switched is not None:
                failures = [*switched.failures, *failures]
            if switched is not None and switched.url is not None:
                # What the one source sent before the others joined (its whole units).
                first_bytes = max(0, pieces.kept - resumed)
                merged = {switched.url: first_bytes}
                for u, n in per_source.items():
                    merged[u] = merged.get(u, 0) + n
                per_source = merged
                transferred += switched.offset - resumed
        elif single is not None:
            url, start, transferred, failures = single
        else:
            url, start, transferred, failures = await download_from_sources(
                client, sources, part, options, reporter, emit, job.label, dead
            )
        try:
            fills.append(await anyio.to_thread.run_sync(_install, part, job.target, job.replace))
        except OSError as exc:
            raise BadInputError(f"cannot write {target}: {exc.strerror or exc}") from None
        reporter.add(files=1)
        return DownloadResult(
            path=target,
            sha1=prv.sha1,
            size=prv.size,
            origin="network",
            url=url,
            resumed_from=start,
            transferred=transferred,
            failures=tuple(failures),
            sources=tuple(per_source.items()),
        )
    except ClientError:
        if part.offset == 0 and part.fd >= 0 and (part.pieces is None or not part.pieces.runs):
            part.discard()  # nothing worth resuming: leave no empty .part behind
        raise
    except OSError as exc:
        raise BadInputError(f"cannot write {job.part_label}: {exc.strerror or exc}") from None
    except anyio.get_cancelled_exc_class():
        # Ctrl+C: an empty .part is not worth keeping (the caller reports the rest).
        if part.fd >= 0 and part.bytes_on_disk() == 0:
            part.discard()
        raise
    finally:
        part.close()


def _write_empty(job: Job) -> None:
    fd = job.target.open_dir(create=True)
    try:
        part = PartFile.temporary(fd, job.target.name, str(job.target.path), job.prv)
        try:
            _install(part, job.target, job.replace)
        except BaseException:
            part.discard()
            raise
    finally:
        os.close(fd)


def copy_verified(job: Job, place: Place, replace: bool) -> bool:
    """Copy the installed ``job.target`` to ``place``, verified; True if it worked.

    The source is read through ``O_NOFOLLOW`` opens and the copy written to a new
    temporary file (``O_EXCL``) in the destination's directory, hashed as it is
    written, and moved into place only if it verifies.

    Raises:
        UnsafeEntry: a directory on the way to ``place`` is a symlink or not a directory.
    """
    try:
        source_dir = job.target.open_dir(create=False)
    except OSError:
        return False
    try:
        source = safefs.open_readable(source_dir, job.target.name)
    except OSError:
        source = None
    finally:
        os.close(source_dir)
    if source is None:
        return False
    try:
        fd = place.open_dir(create=True)
        try:
            part = PartFile.temporary(fd, place.name, str(place.path), job.prv)
            try:
                if part.copy_from(source):
                    part.install(fd, place.name, replace=replace)
                    return True
            except OSError:
                pass
            part.discard()
            return False
        finally:
            os.close(fd)
    except OSError:
        return False
    finally:
        os.close(source)
