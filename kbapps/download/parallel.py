"""One large file from several sources at once, verified chunk by chunk (issue 13).

``fetch_parallel`` runs one worker per source, up to ``ClientOptions.max_sources``
(the sources are nodes: ``kbapps.download.sources``). Each worker asks the
``PieceScheduler`` for a piece (a run of units; a unit is one chunk of the ``.prv``'s
chunk digests, else 1 MiB), fetches it with one ranged GET and writes each unit where
it belongs in the ``.part`` with ``os.pwrite`` as soon as it is whole. A faster source
comes back for more sooner and so does more of the file; near the end an idle source
takes the second half of what the slowest source still holds (that one stops reading
where the half starts), and a last unit is fetched by two sources, the first to land
it winning (the other is stopped).

Checks: with a digest list (fetched once from any source and accepted only if it
hashes to the ``.prv``'s root, ``kbapps.download.digests``), each unit is checked
against its digest before it is written: a source sending a wrong byte is dropped
after at most one chunk of bad data and its piece goes back to the others. Without
one (an original five-field ``.prv``), the first 1000 bytes are checked against
``original_fcs`` and the rest only by the whole-file SHA-1. The whole file is always
hashed, in order, as the units land (a unit that lands after its successors is hashed
with them, read back from the part), so the final check costs no second pass; when
it does not match, the caller fetches the file again from one source at a time.

A source is dropped, with its reason (a ``dropped`` event), when a URL fails to
connect, answers another status or range, names other content, sends a wrong chunk,
cuts its body short or falls under ``--min-speed``; a node with more URLs (through
its hubs) goes on with the next, except after a wrong chunk, which drops the node.
Its finished units stay; the others go back to the pool. A reserve source (beyond
``max_sources``) takes the place of a dropped one.

Resume: the finished units are recorded in the part's sidecar (``PartFile.save_pieces``)
at most every ``_SAVE_INTERVAL`` seconds and when the run ends or is interrupted, so
the next run fetches only the others. With digests, kept units are re-read and
checked before they count (``verify_kept``); without, the record is trusted and the
whole-file SHA-1 is the check.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import anyio
import anyio.abc
import anyio.to_thread

from kbapps import output
from kbapps.download.deadline import ProgressDeadline
from kbapps.download.digests import fetch_digest_list
from kbapps.download.errors import (
    DownloadFailedError,
    SourceError,
    SourceFailure,
    Unreachable,
    WrongBytes,
)
from kbapps.download.find import error_text, short
from kbapps.download.options import ClientOptions
from kbapps.download.partfile import PartFile, PieceRecord
from kbapps.download.pieces import Piece, PieceScheduler
from kbapps.download.progress import Reporter
from kbapps.download.results import EventSink
from kbapps.download.sources import Source
from kbapps.download.transfer import DeadOrigins, check_piece_response, origin_of
from kbproto.chunks import DigestList
from kbproto.prv import FCS_HEAD_BYTES, Prv
from kbtransport.errors import TransportError
from kbtransport.http_client import HttpClient

__all__ = (
    "PIECE_BYTES",
    "UNIT_BYTES",
    "ParallelOutcome",
    "download_in_pieces",
    "fetch_parallel",
    "unit_size",
    "verify_kept",
    "whole_sha1",
)

#: The unit of a ``.prv`` without chunk digests (with them: the chunk size).
UNIT_BYTES = 1 << 20
#: Bytes one request asks for at least: the request per piece then costs little
#: (at most 4 requests per 16 MiB). A large file's pieces are larger, about a quarter
#: of each source's share, up to ``_MAX_PIECE_BYTES``: fewer requests, and the end
#: game splits what a slow source still holds (``PieceScheduler``).
PIECE_BYTES = 4 << 20
_MAX_PIECE_BYTES = 32 << 20
#: Seconds between two records of the finished pieces in the sidecar.
_SAVE_INTERVAL = 1.0
#: Read size of the final whole-file hash: measured faster than ``DISK_READ`` for
#: files that are mostly in the page cache (docs/benchmarks.md).
_HASH_READ = 1 << 20


@dataclass
class ParallelOutcome:
    """What a parallel fetch did.

    Attributes:
        transferred: bytes received from the network (duplicates included).
        sources: verified bytes each URL delivered that were kept, in first-use order.
        failures: the URLs dropped, each with why.
        sha1: the SHA-1 of the part's bytes, hashed in order as the units landed (None
            if the run did not complete).
        kept: bytes of the part that were on disk and verified before the fetch.
    """

    transferred: int = 0
    sources: dict[str, int] = field(default_factory=dict)
    failures: list[SourceFailure] = field(default_factory=list)
    sha1: str | None = None
    kept: int = 0

    @property
    def url(self) -> str | None:
        """The URL that delivered the most bytes."""
        return max(self.sources, key=lambda u: self.sources[u]) if self.sources else None


def unit_size(prv: Prv, digests: DigestList | None) -> int:
    """The unit of a parallel fetch of ``prv``: its chunk when checked, else 1 MiB."""
    return digests.spec.size if digests is not None else UNIT_BYTES


def _span(index: int, unit: int, size: int) -> tuple[int, int]:
    start = index * unit
    return start, min(start + unit, size)


def verify_kept(
    fd: int, prv: Prv, digests: DigestList | None, unit: int, units: Iterable[int]
) -> list[int]:
    """The units of ``units`` whose bytes in the open part ``fd`` still check out
    against ``digests`` (all of them without a list: nothing to check them against)."""
    kept = list(units)
    if digests is None:
        return kept
    good = []
    for index in kept:
        start, end = _span(index, unit, prv.size)
        data = os.pread(fd, end - start, start)
        if digests.chunk_ok(index, data):
            good.append(index)
    return good


def whole_sha1(fd: int, size: int) -> str:
    """The SHA-1 of the first ``size`` bytes of the open file ``fd``, read in order."""
    digest = hashlib.sha1()
    buffer = bytearray(_HASH_READ)
    view = memoryview(buffer)
    done = 0
    while done < size:
        n = os.preadv(fd, (view[: min(_HASH_READ, size - done)],), done)
        if not n:
            break
        digest.update(view[:n])
        done += n
    return digest.hexdigest()


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


class _Run:
    """The shared state of one parallel fetch (its workers run on one event loop)."""

    def __init__(
        self,
        client: HttpClient,
        part: PartFile,
        digests: DigestList | None,
        unit: int,
        scheduler: PieceScheduler,
        options: ClientOptions,
        reporter: Reporter,
        emit: EventSink,
        label: str,
        dead: DeadOrigins,
        reserve: list[Source],
        kept: Iterable[int],
    ) -> None:
        self.client = client
        self.part = part
        self.prv = part.prv
        self.digests = digests
        self.unit = unit
        self.sched = scheduler
        self.options = options
        self.reporter = reporter
        self.emit = emit
        self.label = label
        self.dead = dead
        self.reserve = reserve
        self.outcome = ParallelOutcome()
        self.scopes: dict[str, anyio.CancelScope] = {}
        self._changed = anyio.Event()
        self._saved = time.monotonic()
        #: A local error (writing the part) that ended the fetch.
        self.fatal: OSError | None = None
        # The writer threads' state, under _lock: units a writer took (each is written
        # once, so the bytes hashed are the bytes on disk), units on disk, and the
        # SHA-1 of the file's prefix, extended as the units land in order.
        self._lock = threading.Lock()
        self._taken = bytearray(scheduler.units)
        self._written = bytearray(scheduler.units)
        for index in kept:
            self._taken[index] = self._written[index] = 1
        self._prefix = hashlib.sha1()
        self._prefix_units = 0

    # -- bookkeeping ---------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def save(self) -> None:
        """Record the finished units in the sidecar (plain system calls: safe while a
        cancellation unwinds)."""
        self._saved = time.monotonic()
        self.part.save_pieces(PieceRecord(self.unit, tuple(self.sched.done_ranges())))

    def _drop(self, url: str, message: str) -> None:
        self.outcome.failures.append(SourceFailure(url, message))
        self.emit(
            {
                "event": "dropped",
                "path": self.label,
                "sha1": self.prv.sha1,
                "url": url,
                "message": message,
                "bytes": self.outcome.sources.get(url, 0),
            }
        )

    # -- workers -------------------------------------------------------------------------

    async def worker(self, group: anyio.abc.TaskGroup) -> None:
        """Fetch pieces with the next reserve source until the file is complete or no
        source is left. A local failure (the part cannot be written) stops every
        worker; ``fatal`` holds it for ``fetch_parallel`` to raise."""
        try:
            while self.reserve and not self.sched.complete:
                await self._use(self.reserve.pop(0))
        except OSError as exc:
            self.fatal = exc
            group.cancel_scope.cancel()
        self._notify()  # an idle worker waiting on this one looks again

    async def _use(self, source: Source) -> None:
        urls = [u for u in source.urls if origin_of(u) not in self.dead]
        urls += [u for u in source.urls if origin_of(u) in self.dead]
        for url in urls:
            try:
                await self._pieces(source.key, url)
                return
            except WrongBytes as exc:
                self._drop(url, str(exc))
                return  # the node itself serves other bytes: none of its URLs is asked
            except SourceError as exc:
                if isinstance(exc, Unreachable):
                    self.dead.add(origin_of(url))
                self._drop(url, str(exc))

    async def _pieces(self, key: str, url: str) -> None:
        announced = False
        while not self.sched.complete:
            piece = self.sched.assign(key)
            if piece is None:
                await self._changed.wait()
                continue
            if not announced:
                announced = True
                self.outcome.sources.setdefault(url, 0)
                offset = piece.start * self.unit
                self.emit(
                    {
                        "event": "source",
                        "path": self.label,
                        "sha1": self.prv.sha1,
                        "url": url,
                        "offset": offset,
                    }
                )
            self.reporter.active += 1
            try:
                with anyio.CancelScope() as scope:
                    self.scopes[key] = scope
                    await self._fetch(key, url, piece)
            finally:
                self.scopes.pop(key, None)
                self.reporter.active -= 1
                self.sched.release(key)
                self._notify()

    async def _fetch(self, key: str, url: str, piece: Piece) -> None:
        size = self.prv.size
        start, end = piece.start * self.unit, min(piece.end * self.unit, size)
        headers = [("Range", f"bytes={start}-{end - 1}")]
        watch = ProgressDeadline(self.options.min_speed, self.options.speed_window, end - start)
        answered = False
        index = piece.start
        with watch.scope():
            try:
                async with self.client.stream("GET", url, headers=headers) as response:
                    answered = True
                    if response.status not in (200, 206):
                        raise SourceError(await error_text(response))
                    check_piece_response(response, start, end, self.prv)
                    # The unit's parts (views of the received chunks, joined once: one
                    # copy per byte) and their length.
                    parts: list[memoryview] = []
                    have = 0
                    need = _span(index, self.unit, size)[1] - start
                    async for chunk in response.iter_bytes():
                        watch.feed(len(chunk))
                        view = memoryview(chunk)
                        while view:
                            if index == piece.end:
                                raise SourceError(f"sent more than the {end - start:,} bytes asked")
                            take = view[: need - have]
                            parts.append(take)
                            have += len(take)
                            view = view[len(take) :]
                            if have == need:
                                stop = await self._land(key, url, index, b"".join(parts))
                                parts.clear()
                                have = 0
                                index += 1
                                if stop:
                                    return  # the piece is done (by this source or a twin)
                                need = _span(index, self.unit, size)[1] - index * self.unit
            except TransportError as exc:
                text = short(str(exc)) or type(exc).__name__
                raise (SourceError(text) if answered else Unreachable(text)) from None
        if watch.expired:
            raise SourceError(watch.reason())
        if index < piece.end:
            got = index * self.unit - start
            raise SourceError(f"body ended after {output.counted(max(got, 0), 'whole chunk')}")

    async def _land(self, key: str, url: str, index: int, data: bytes) -> bool:
        """Check and write unit ``index``; True when ``key``'s piece has nothing left."""
        self.outcome.transferred += len(data)
        if not self.sched.is_done(index):
            await anyio.to_thread.run_sync(self._write_unit, index, data)
        new, finished = self.sched.unit_done(key, index)
        if new:
            self.reporter.add(nbytes=len(data))
            self.reporter.source_bytes(url, len(data))
            self.outcome.sources[url] = self.outcome.sources.get(url, 0) + len(data)
        for other in finished - {key}:
            scope = self.scopes.get(other)
            if scope is not None:
                scope.cancel()  # a duplicate lost the race: it stops and takes other work
        if time.monotonic() - self._saved >= _SAVE_INTERVAL:
            self.save()
        return key in finished

    def _write_unit(self, index: int, data: bytes) -> None:
        """Check unit ``index`` (its chunk digest; the head) and write it in place."""
        start, end = _span(index, self.unit, self.prv.size)
        if self.digests is not None and not self.digests.chunk_ok(index, data):
            raise WrongBytes(f"chunk {index} (bytes {start}-{end - 1}) does not match its digest")
        if start == 0:
            head = min(FCS_HEAD_BYTES, self.prv.size)
            if hashlib.sha1(data[:head]).hexdigest() != self.prv.head_sha1:
                raise WrongBytes(
                    f"the first {output.counted(head, 'byte')} do not match the .prv's original_fcs"
                )
        with self._lock:
            if self._taken[index]:
                return  # a twin is writing (or wrote) it
            self._taken[index] = 1
        _pwrite_all(self.part.fd, data, start)
        with self._lock:
            self._written[index] = 1
            while self._prefix_units < self.sched.units and self._written[self._prefix_units]:
                at = self._prefix_units
                if at == index:
                    self._prefix.update(data)
                else:  # landed earlier, out of order (or kept from an earlier run)
                    first, last = _span(at, self.unit, self.prv.size)
                    self._prefix.update(os.pread(self.part.fd, last - first, first))
                self._prefix_units += 1

    def whole_sha1(self) -> str | None:
        """The SHA-1 of the whole part, if every unit landed and was hashed in order."""
        with self._lock:
            done = self._prefix_units == self.sched.units
            return self._prefix.hexdigest() if done else None


async def fetch_parallel(
    client: HttpClient,
    sources: Sequence[Source],
    part: PartFile,
    digests: DigestList | None,
    kept: Iterable[int],
    options: ClientOptions,
    reporter: Reporter,
    emit: EventSink,
    label: str,
    dead: DeadOrigins,
) -> ParallelOutcome:
    """Fill ``part`` from up to ``options.max_sources`` of ``sources`` at once.

    Args:
        sources: the distinct sources, best first (``group_sources``); those past
            ``max_sources`` wait in reserve.
        part: the open part (its units in ``kept`` are on disk and verified).
        digests: the checked digest list, if the ``.prv`` has one and a source
            served it; units are then its chunks.
        kept: units already done.

    Returns:
        What it did; every unit is then on disk (the caller hashes the whole file).

    Raises:
        DownloadFailedError: every source was dropped before the file was complete
            (the finished units are recorded for the next run).
        OSError: the part could not be written.
    """
    prv = part.prv
    unit = unit_size(prv, digests)
    units = -(-prv.size // unit)
    on_disk = [u for u in sources if u.urls]
    # Nodes first; a URL naming no node may be one of them, so it waits in reserve.
    workers = max(1, min(options.max_sources, sum(1 for s in on_disk if s.node)))
    piece_units = min(max(units // (4 * workers), PIECE_BYTES // unit), _MAX_PIECE_BYTES // unit)
    kept = list(kept)
    scheduler = PieceScheduler(units, max(1, piece_units), kept)
    run = _Run(
        client, part, digests, unit, scheduler, options, reporter, emit, label, dead, on_disk, kept
    )
    try:
        async with anyio.create_task_group() as group:
            for _ in range(workers):
                group.start_soon(run.worker, group)
    finally:
        if not scheduler.complete:
            run.save()  # the finished units, for the next run (also after Ctrl+C)
    if run.fatal is not None:
        raise run.fatal
    if not scheduler.complete:
        count = len(run.outcome.failures)
        record = PieceRecord(unit, tuple(scheduler.done_ranges()))
        missing = output.format_bytes(prv.size - record.nbytes(prv.size))
        raise DownloadFailedError(
            f"no source delivered {label} ({count} source{'s' if count != 1 else ''} "
            f"dropped, {missing} missing; the rest is kept for the next run)",
            run.outcome.failures,
        )
    run.outcome.sha1 = run.whole_sha1()
    return run.outcome


def _runs(units: Iterable[int]) -> tuple[tuple[int, int], ...]:
    runs: list[tuple[int, int]] = []
    for index in sorted(set(units)):
        if runs and runs[-1][1] == index:
            runs[-1] = (runs[-1][0], index + 1)
        else:
            runs.append((index, index + 1))
    return tuple(runs)


async def download_in_pieces(
    client: HttpClient,
    urls: Sequence[str],
    sources: Sequence[Source],
    part: PartFile,
    resumed: int,
    options: ClientOptions,
    reporter: Reporter,
    emit: EventSink,
    label: str,
    dead: DeadOrigins,
) -> ParallelOutcome | None:
    """Fetch ``part`` in pieces from ``sources`` and check its whole SHA-1.

    Args:
        urls: every download URL, best first (where the digest list is asked).
        sources: the same, grouped by node (``group_sources``).
        part: the open part: ``part.pieces`` lists its finished units, or its first
            ``part.offset`` bytes are a verified prefix (an earlier one-source run).
        resumed: the bytes of the part the reporter counts already.

    Returns:
        The outcome, once the part holds the whole content; None when every piece
        arrived but the whole does not hash to the ``.prv``'s SHA-1 (possible only
        without chunk digests, or with a ``.prv`` whose root and SHA-1 disagree): the
        part is then emptied and its bytes uncounted, for the caller to fetch the
        file again from one source at a time, which pins the culprit on one source.

    Raises:
        DownloadFailedError: no source was left before the file was complete.
    """
    prv = part.prv
    digests = await fetch_digest_list(client, prv, urls)
    unit = unit_size(prv, digests)
    record = part.pieces
    if record is not None:
        candidates = list(record.units()) if record.unit == unit else []
    else:
        candidates = list(range(part.offset // unit))
    kept = await anyio.to_thread.run_sync(verify_kept, part.fd, prv, digests, unit, candidates)
    kept_record = PieceRecord(unit, _runs(kept))
    kept_bytes = kept_record.nbytes(prv.size)
    if kept_bytes != resumed:
        reporter.add(nbytes=kept_bytes - resumed)
    part.save_pieces(kept_record)  # from here the part is filled out of order
    outcome = await fetch_parallel(
        client, sources, part, digests, kept, options, reporter, emit, label, dead
    )
    outcome.kept = kept_bytes
    digest = outcome.sha1 or await anyio.to_thread.run_sync(whole_sha1, part.fd, prv.size)
    if digest == prv.sha1:
        return outcome
    emit(
        {
            "event": "warning",
            "path": label,
            "message": f"the pieces from {output.counted(len(outcome.sources), 'source')} "
            f"hash to {digest}, not to the .prv's SHA-1; fetching the file again from "
            "one source at a time",
        }
    )
    reporter.undo(prv.size)
    await anyio.to_thread.run_sync(part.reset)
    return None
