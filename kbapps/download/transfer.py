"""Moving one content's bytes from its sources into a ``PartFile``.

A source is dropped, with its reason, when it fails to connect, answers other than
200/206, ignores a Range (200 to a ranged request), announces the wrong length or
range, names other content in its ``ETag``, sends bytes whose first 1000 do not match
``original_fcs`` (caught after 1000 bytes, not after the whole file), cuts the body
short, stalls past the read timeout, or delivers a whole file whose SHA-1 differs.
When a mismatch is found at the end of a download that was *resumed*, the prefix may
be the culprit, so the same source is tried once more from byte 0 before it is blamed.

Speed (docs/benchmarks.md): ``HttpClient`` reads up to 1 MiB per
``recv`` from a raw socket; the event loop only receives and queues each chunk, and one
dedicated writer thread hashes it and appends it with ``os.writev`` while the next
chunk arrives. hashlib and ``writev`` release the GIL, so receiving and hashing+writing
overlap on two cores. At most 16 chunks wait (bounded memory). Small bodies (up to
256 KiB) skip the thread: starting one would cost more.
"""

from __future__ import annotations

import queue
import re
import threading
from collections.abc import Sequence

import anyio
import anyio.to_thread

from kbapps import output
from kbapps.download.deadline import ProgressDeadline
from kbapps.download.errors import (
    DownloadFailedError,
    SourceError,
    SourceFailure,
    Unreachable,
    WrongBytes,
)
from kbapps.download.find import error_text, short
from kbapps.download.options import ClientOptions
from kbapps.download.partfile import PartFile
from kbapps.download.progress import Reporter
from kbapps.download.results import EventSink
from kbproto.prv import Prv
from kbtransport.errors import ConnectError, TransportError
from kbtransport.http_client import HttpClient, HttpResponse
from kbtransport.net import parse_url

__all__ = (
    "DeadOrigins",
    "Writer",
    "check_piece_response",
    "check_response",
    "download_from_sources",
    "fetch",
    "origin_of",
    "pump",
)

#: Received chunks (each at most ``ClientConfig.read_size``, 1 MiB) queued for the
#: writer thread: bounds the memory a fast source can fill while the disk is slow.
_QUEUED_CHUNKS = 16
#: Bodies up to this size are hashed and written on the event loop (no thread).
_INLINE_BYTES = 256 * 1024
_SHA1_RE = re.compile(r"[0-9a-f]{40}")
_CONTENT_RANGE_RE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")

#: Origins (scheme, host, port) that gave no response during this run. A share
#: behind a firewall advertises a URL nobody can reach; once it failed, the other
#: files of a ``.prvdir`` try it last instead of waiting out a connect timeout each.
DeadOrigins = set[tuple[str, str, int]]


def origin_of(url: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of ``url`` (a key of ``DeadOrigins``)."""
    try:
        parsed = parse_url(url)
    except ConnectError:
        return ("", url, 0)
    return (parsed.scheme, parsed.host, parsed.port)


def check_response(response: HttpResponse, offset: int, prv: Prv) -> None:
    """Check a 200/206 response's head against the ``.prv`` and the Range asked for.

    Raises:
        SourceError: the response announces other content, length or range.
    """
    etag = response.header("etag")
    if etag is not None:
        tag = etag.strip()
        quoted = tag.startswith('"') and tag.endswith('"')
        if quoted and _SHA1_RE.fullmatch(tag[1:-1].lower()) and tag[1:-1].lower() != prv.sha1:
            raise SourceError(f"serves other content (ETag {short(tag, 60)})")
    length = response.content_length
    if response.status == 200:
        if offset:
            raise SourceError("ignored the Range request (200 instead of 206)")
        if length is not None and length != prv.size:
            raise SourceError(f"announced {output.counted(length, 'byte')}, expected {prv.size:,}")
        return
    if response.status != 206:
        raise SourceError(f"unexpected HTTP {response.status} {response.reason}".rstrip())
    match = _CONTENT_RANGE_RE.fullmatch((response.header("content-range") or "").strip())
    if match is None:
        raise SourceError("206 without a valid Content-Range")
    start, end, total = int(match.group(1)), int(match.group(2)), match.group(3)
    if start != offset or end != prv.size - 1 or (total != "*" and int(total) != prv.size):
        raise SourceError(
            f"sent range {start}-{end}/{total}, asked for {offset}-{prv.size - 1}/{prv.size}"
        )
    if length is not None and length != prv.size - offset:
        announced = output.counted(length, "byte")
        raise SourceError(f"announced {announced}, expected {prv.size - offset:,}")


def check_piece_response(response: HttpResponse, start: int, end: int, prv: Prv) -> None:
    """Check the head of an answer to ``Range: bytes=START-(END-1)``: a 206 with exactly
    that ``Content-Range`` (a 200 only when the range is the whole file), and no
    ``ETag`` naming other content.

    Raises:
        SourceError: the response announces other content, status or range.
    """
    etag = (response.header("etag") or "").strip().strip('"').lower()
    if _SHA1_RE.fullmatch(etag) and etag != prv.sha1:
        raise SourceError(f"serves other content (ETag {etag})")
    if response.status == 200 and start == 0 and end == prv.size:
        return
    if response.status != 206:
        raise SourceError(f"answered HTTP {response.status} {response.reason}".rstrip())
    match = _CONTENT_RANGE_RE.fullmatch((response.header("content-range") or "").strip())
    total = match.group(3) if match else ""
    if (
        match is None
        or int(match.group(1)) != start
        or int(match.group(2)) != end - 1
        or (total != "*" and int(total) != prv.size)
    ):
        raise SourceError(f"sent another range than {start}-{end - 1}/{prv.size}")


class Writer:
    """A thread that hashes and appends the chunks handed to it, for one transfer.

    Measured on this machine (1 GiB over loopback, interleaved runs): a dedicated
    thread fed through a ``SimpleQueue`` beat both hashing/writing inline on the event
    loop (~1.2-1.9x) and one ``anyio.to_thread`` hop per batch (~1.5-2x), whose
    per-hop cost dominates at loopback speeds. hashlib and ``writev`` release the GIL,
    so receiving and hashing+writing run on both cores at once.

    Only the loop calls ``put``/``close``; only the thread touches the part until
    ``close`` returns. At most ``max_chunks`` chunks wait (bounded memory).
    """

    def __init__(self, part: PartFile, max_chunks: int) -> None:
        self._part = part
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()  # None: stop
        self._room = threading.Semaphore(max_chunks)
        #: Bytes hashed and written so far (written by the thread, read by the loop).
        self.written = 0
        #: The first error the thread met; it then discards what it is given.
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="kb-download-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            chunk = self._queue.get()
            if chunk is None:
                return
            try:
                # One chunk at a time, hashed then written at once while it is still
                # in the CPU cache: batching several into one writev measured slower.
                if self.error is None:
                    self.written += self._part.write_batch((chunk,))
            except BaseException as exc:
                self.error = exc
            finally:
                self._room.release()

    async def put(self, chunk: bytes) -> None:
        """Queue ``chunk``; waits (off the loop) only while ``max_chunks`` are queued."""
        if not chunk:
            return
        if not self._room.acquire(blocking=False):
            await anyio.to_thread.run_sync(self._room.acquire)
        self._queue.put(chunk)

    async def close(self) -> None:
        """Let the thread write what is queued, then stop it and wait for it."""
        self._queue.put(None)
        with anyio.CancelScope(shield=True):
            # Shielded: after Ctrl+C the part must not be closed under the thread.
            await anyio.to_thread.run_sync(self._thread.join)


async def pump(
    response: HttpResponse,
    part: PartFile,
    options: ClientOptions,
    reporter: Reporter,
    watch: ProgressDeadline,
) -> int:
    """Stream the body into the part through a ``Writer`` thread.

    Returns the number of bytes received. Raises what the transfer raised; bytes that
    arrived before a transport failure or a cancellation (the progress deadline) are
    still written (and hashed), so the next source continues after them with a Range.
    """
    length = response.content_length
    if length is not None and length <= _INLINE_BYTES:
        # A small body: a thread would cost more than it saves (a .prvdir of 100,000
        # small files would start 100,000 threads).
        received = 0
        async for chunk in response.iter_bytes():
            received += len(chunk)
            watch.feed(len(chunk))
            reporter.add(nbytes=part.write_batch((chunk,)))
        return received
    writer = Writer(part, _QUEUED_CHUNKS)
    received = 0
    reported = 0
    step = options.progress_bytes
    transport_error: TransportError | None = None
    try:
        async for chunk in response.iter_bytes():
            received += len(chunk)
            watch.feed(len(chunk))
            await writer.put(chunk)
            if writer.error is not None:
                break  # wrong bytes: stop reading this source now
            if writer.written - reported >= step:
                done = writer.written
                reporter.add(nbytes=done - reported)
                reported = done
    except TransportError as exc:
        transport_error = exc
    finally:
        await writer.close()
        reporter.add(nbytes=writer.written - reported)
    if writer.error is not None:
        raise writer.error  # wrong bytes matter more than a broken connection
    if transport_error is not None:
        raise transport_error
    return received


async def fetch(
    client: HttpClient,
    url: str,
    part: PartFile,
    options: ClientOptions,
    reporter: Reporter,
) -> int:
    """Ask ``url`` for the bytes after ``part.offset`` and append them; return how many.

    Raises:
        Unreachable: no response at all.
        SourceError: the source answered wrongly, its body ended early, or it fell
            under the minimum progress (``deadline``).
    """
    offset = part.offset
    headers = [("Range", f"bytes={offset}-")] if offset else []
    answered = False
    watch = ProgressDeadline(options.min_speed, options.speed_window, part.prv.size - offset)
    received = 0
    with watch.scope():
        try:
            async with client.stream("GET", url, headers=headers) as response:
                answered = True
                if response.status in (200, 206):
                    check_response(response, offset, part.prv)
                else:
                    raise SourceError(await error_text(response))
                received = await pump(response, part, options, reporter, watch)
        except TransportError as exc:
            text = short(str(exc)) or type(exc).__name__
            raise (SourceError(text) if answered else Unreachable(text)) from None
    if part.offset != part.prv.size:
        if watch.expired:
            raise SourceError(watch.reason())
        expected = output.counted(part.prv.size, "byte")
        raise SourceError(f"body ended after {part.offset:,} of {expected}")
    return received


async def download_from_sources(
    client: HttpClient,
    sources: Sequence[str],
    part: PartFile,
    options: ClientOptions,
    reporter: Reporter,
    emit: EventSink,
    label: str,
    dead: DeadOrigins,
    failures: list[SourceFailure] | None = None,
) -> tuple[str, int, int, list[SourceFailure]]:
    """Try ``sources`` in order until the part verifies: ``(url, resumed_from, bytes, failures)``.

    Sources on an origin in ``dead`` go last; origins that give no response are added.
    Each failed attempt is appended to ``failures`` (a new list if None) as it
    happens, so a caller that cancels the transfer still has them.

    Raises:
        DownloadFailedError: every source failed (the failures are listed).
    """
    failures = [] if failures is None else failures
    transferred = 0
    prv = part.prv
    ordered = [u for u in sources if origin_of(u) not in dead]
    ordered += [u for u in sources if origin_of(u) in dead]
    for url in ordered:
        retried = False
        while True:
            start = part.offset
            emit({"event": "source", "path": label, "sha1": prv.sha1, "url": url, "offset": start})
            try:
                transferred += await fetch(client, url, part, options, reporter)
                if part.verified():
                    return url, start, transferred, failures
                raise WrongBytes(f"sent bytes whose SHA-1 is {part.digest()}, expected {prv.sha1}")
            except SourceError as exc:
                message = str(exc)
                wrong = isinstance(exc, WrongBytes)
                if isinstance(exc, Unreachable):
                    dead.add(origin_of(url))
                if wrong and start > 0 and not retried:
                    # The resumed prefix may be what is wrong: give this source one
                    # more try from byte 0 before blaming it.
                    message += (
                        f"; the first {output.counted(start, 'byte')} came from an earlier "
                        "source or run, retrying from byte 0"
                    )
                    retried = True
                    again = True
                else:
                    again = False
                failures.append(SourceFailure(url, message))
                emit(
                    {
                        "event": "error",
                        "path": label,
                        "sha1": prv.sha1,
                        "url": url,
                        "message": message,
                    }
                )
                if wrong:
                    reporter.undo(part.offset)
                    with anyio.CancelScope(shield=True):  # a cancel must not race the reset
                        await anyio.to_thread.run_sync(part.reset)
                if not again:
                    break
    raise DownloadFailedError(
        f"no source delivered {label} ({len(failures)} attempt"
        f"{'s' if len(failures) != 1 else ''} failed)",
        failures,
    )
