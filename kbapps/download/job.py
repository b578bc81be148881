"""One content fetched into one target: empty, the cache, a ``.part`` on disk, the network."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.to_thread

from kbapps.download.cache import ContentCache
from kbapps.download.errors import BadInputError, ClientError, NotFoundError, WrongBytes
from kbapps.download.find import download_sources, find_content
from kbapps.download.options import ClientOptions
from kbapps.download.partfile import PartFile
from kbapps.download.progress import Reporter
from kbapps.download.results import DownloadResult, EventSink
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
        part: the ``.part`` file that holds it meanwhile.
        copies: ``(label, target)`` of the other files with the same content.
    """

    prv: Prv
    label: str
    target: Path
    part: Path
    copies: list[tuple[str, Path]] = field(default_factory=list)


async def fetch_job(
    job: Job,
    client: HttpClient,
    options: ClientOptions,
    cache: ContentCache | None,
    reporter: Reporter,
    emit: EventSink,
    dead: DeadOrigins,
) -> DownloadResult:
    """Get ``job.prv``'s content to ``job.target``: empty, cache, part, then network.

    Raises:
        ClientError: as ``download_prv`` documents.
    """
    prv = job.prv
    if prv.size == 0:
        if prv.sha1 != EMPTY_SHA1:
            raise BadInputError(
                f"{job.label}: the .prv says size 0 but its SHA-1 is not that of empty content"
            )
        await anyio.to_thread.run_sync(_write_empty, job.target)
        reporter.add(files=1)
        return DownloadResult(path=job.target, sha1=prv.sha1, size=0, origin="empty")

    part = PartFile(job.part, prv)
    try:
        try:
            resumable = await anyio.to_thread.run_sync(part.open)
        except OSError as exc:
            raise BadInputError(f"cannot write {job.part}: {exc.strerror or exc}") from None

        if cache is not None and cache.has(prv.sha1, prv.size):
            ok = await anyio.to_thread.run_sync(part.copy_from, cache.path_for(prv.sha1))
            if ok:
                await anyio.to_thread.run_sync(part.install, job.target)
                reporter.add(files=1, nbytes=prv.size)
                return DownloadResult(path=job.target, sha1=prv.sha1, size=prv.size, origin="cache")
            cache.remove(prv.sha1)
            resumable = False

        resumed = 0
        if resumable:
            try:
                resumed = await anyio.to_thread.run_sync(part.rehash)
            except WrongBytes:
                await anyio.to_thread.run_sync(part.reset)
                resumed = 0
            if part.verified():
                await anyio.to_thread.run_sync(part.install, job.target)
                reporter.add(files=1, nbytes=prv.size)
                if cache is not None:
                    await anyio.to_thread.run_sync(cache.add, prv.sha1, job.target)
                return DownloadResult(path=job.target, sha1=prv.sha1, size=prv.size, origin="part")
            if part.offset == prv.size:  # complete but wrong: start over
                await anyio.to_thread.run_sync(part.reset)
                resumed = 0
            reporter.add(nbytes=resumed)

        found = await find_content(client, options.hub_url, prv.sha1)
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
        url, start, transferred, failures = await download_from_sources(
            client, sources, part, options, reporter, emit, job.label, dead
        )
        try:
            await anyio.to_thread.run_sync(part.install, job.target)
        except OSError as exc:
            raise BadInputError(f"cannot write {job.target}: {exc.strerror or exc}") from None
        reporter.add(files=1)
        if cache is not None:
            await anyio.to_thread.run_sync(cache.add, prv.sha1, job.target)
        return DownloadResult(
            path=job.target,
            sha1=prv.sha1,
            size=prv.size,
            origin="network",
            url=url,
            resumed_from=start,
            transferred=transferred,
            failures=tuple(failures),
        )
    except ClientError:
        if part.offset == 0:
            part.discard()  # nothing worth resuming: leave no empty .part behind
        raise
    except OSError as exc:
        raise BadInputError(f"cannot write {job.part}: {exc.strerror or exc}") from None
    finally:
        part.close()


def _write_empty(target: Path) -> None:
    tmp = target.with_name(target.name + ".part")
    with open(tmp, "wb"):
        pass
    os.replace(tmp, target)


def copy_verified(job: Job, source: Path) -> bool:
    """Copy ``source`` (a finished file of the same content) to ``job.target``, verified."""
    part = PartFile(job.part.with_name(f"{job.prv.sha1}.copy.part"), job.prv)
    try:
        part.open()
        if part.copy_from(source):
            part.install(job.target)
            return True
        part.discard()
        return False
    except OSError:
        part.discard()
        return False
