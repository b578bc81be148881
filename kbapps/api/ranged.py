"""``RangeReader``: byte ranges of one remote file, fetched on demand, verified, cached.

The file is cut into blocks of ``block_size`` bytes. A read asks for the blocks it
covers that are not cached; the missing ones are fetched with one ranged GET
(``Range: bytes=a-b``) per contiguous run, from the first source that works. Reads
that continue where the previous fetch ended are taken as sequential: each such fetch
asks for twice as many blocks ahead as the one before, up to ``max_readahead`` bytes,
so a whole-file read costs few requests; any other read fetches only its own blocks.
Fetched blocks stay in a least-recently-used cache of ``cache_blocks`` blocks, so
memory is bounded by ``(cache_blocks + max_readahead / block_size) * block_size``.

Every fetched span goes through ``ContentVerifier.check_span`` before a byte of it
is returned (``kbapps.api.verify`` says which bytes that checks). When the ``.prv``
has a ``chunks`` field, the first read fetches the digest list
(``BASE/ID/sha1/SHA1/chunks`` for a source ``BASE/ID/download/PATH``,
``BASE/sha1/SHA1/chunks`` for ``BASE/sha1/SHA1``; the first list that matches the
root is used, ``kbproto.chunks``) and blocks are whole chunks, so every byte returned
was checked with its chunk. A source that fails, answers with another range or
length, announces other content (its ``ETag``), or sends a head or a chunk that does
not match its digest is dropped and the next is asked;
when none is left, or when the whole file does not hash to its SHA-1, the read raises
and the reader refuses every later read (``docs/python-api.md``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

from kbapps.api.verify import ContentVerifier, SourceContentError, VerificationError
from kbapps.download import DownloadFailedError, SourceFailure
from kbapps.download.digests import fetch_digest_list
from kbapps.download.errors import SourceError
from kbapps.download.find import short
from kbapps.download.transfer import check_piece_response
from kbproto.prv import Prv
from kbtransport.errors import TransportError
from kbtransport.http_client import HttpClient, HttpResponse

__all__ = ("DEFAULT_READ_OPTIONS", "ContentReadError", "RangeReader", "ReadOptions")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadOptions:
    """How a remote file is read (sizes in bytes).

    Attributes:
        block_size: the unit fetched and cached (at least 4 KiB, so the first block
            holds the 1000 bytes ``original_fcs`` covers).
        cache_blocks: blocks kept once read.
        max_readahead: the most a sequential read fetches in one request.
    """

    block_size: int = 1024 * 1024
    cache_blocks: int = 16
    max_readahead: int = 16 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.block_size < 4096 or self.cache_blocks < 1:
            raise ValueError("ReadOptions: block_size must be >= 4096 and cache_blocks >= 1")
        if self.max_readahead < self.block_size:
            raise ValueError("ReadOptions: max_readahead must be at least block_size")


DEFAULT_READ_OPTIONS = ReadOptions()


class ContentReadError(DownloadFailedError, OSError):
    """A read that cannot return verified bytes: no source delivered them (``failures``
    lists each), or the content does not match its ``.prv``. An ``OSError`` too, as
    ``io`` readers (pandas, h5py, fsspec) expect of a failed read."""


class _SourceFailed(Exception):
    """This source failed for this span; the next is asked."""


class RangeReader:
    """Reads byte ranges of the content of ``prv`` (see the module docstring).

    Args:
        prv: the content's ``.prv``; every byte returned is checked against it.
        sources: download URLs, best first (``kbapps.download.download_sources``).
        client: the HTTP client to fetch with (not closed here).
        options: block size, cache and read-ahead bounds.
    """

    def __init__(
        self,
        prv: Prv,
        sources: Sequence[str],
        client: HttpClient,
        options: ReadOptions = DEFAULT_READ_OPTIONS,
    ) -> None:
        self.prv = prv
        self.options = options
        self.verifier = ContentVerifier(prv)
        chunk = prv.chunks.size if prv.chunks is not None else 1
        #: The block size: ``options.block_size``, rounded up to whole chunks.
        self.block_size = -(-options.block_size // chunk) * chunk
        self._digests_asked = prv.chunks is None
        self._sources = list(sources)
        self._failures: list[SourceFailure] = []
        self._client = client
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._next_block = 0  # the block after the last fetch: reading it is sequential
        self._ahead = 1  # blocks the next sequential fetch asks for
        self._broken: str | None = None
        #: Bytes received from the network so far.
        self.transferred = 0

    @property
    def failures(self) -> tuple[SourceFailure, ...]:
        """The sources dropped so far, each with why."""
        return tuple(self._failures)

    @property
    def size(self) -> int:
        """The file's size."""
        return self.prv.size

    async def read(self, offset: int, length: int) -> bytes:
        """The bytes ``[offset, offset + length)`` (fewer at the end of the file).

        Raises:
            ContentReadError: no source delivered the bytes (each listed), or the
                content does not match the ``.prv`` (then every later read raises too).
        """
        if self._broken is not None:
            raise ContentReadError(self._broken, self._failures)
        end = min(self.prv.size, offset + max(length, 0))
        if offset < 0 or offset >= end:
            return b""
        if not self._digests_asked:
            await self._fetch_digests()
        size = self.block_size
        first, last = offset // size, (end - 1) // size
        missing = [index for index in range(first, last + 1) if index not in self._blocks]
        if missing:
            await self._fetch_missing(missing)
        parts = [self._touch(index) for index in range(first, last + 1)]
        data = b"".join(parts) if len(parts) > 1 else parts[0]
        while len(self._blocks) > self.options.cache_blocks:
            self._blocks.popitem(last=False)
        start = offset - first * size
        return data[start : start + end - offset]

    def _touch(self, index: int) -> bytes:
        self._blocks.move_to_end(index)
        return self._blocks[index]

    async def _fetch_missing(self, missing: list[int]) -> None:
        total_blocks = -(-self.prv.size // self.block_size)
        sequential = missing[0] == self._next_block
        runs: list[list[int]] = []
        for index in missing:
            if runs and runs[-1][-1] + 1 == index:
                runs[-1].append(index)
            else:
                runs.append([index])
        limit = max(1, self.options.max_readahead // self.block_size)
        if sequential:
            self._ahead = min(self._ahead * 2, limit)
            ahead = min(self._ahead, self.options.cache_blocks)
            tail = runs[-1]
            while len(tail) < ahead and tail[-1] + 1 < total_blocks:
                if tail[-1] + 1 in self._blocks:
                    break
                tail.append(tail[-1] + 1)
        else:
            self._ahead = 1
        for run in runs:
            await self._fetch_run(run[0], run[-1])
        self._next_block = runs[-1][-1] + 1

    async def _fetch_run(self, first: int, last: int) -> None:
        size = self.block_size
        start, end = first * size, min(self.prv.size, (last + 1) * size)
        while self._sources:
            url = self._sources[0]
            try:
                data = await self._fetch_span(url, start, end)
                self.verifier.check_span(start, data)
            except (_SourceFailed, SourceContentError) as exc:
                self._failures.append(SourceFailure(url, str(exc)))
                self._sources.pop(0)
                continue
            except VerificationError as exc:
                self._break(exc)
            for index in range(first, last + 1):
                self._blocks[index] = data[(index - first) * size : (index - first + 1) * size]
            self._hash_cached_blocks()
            return
        detail = "; ".join(f"{f.url}: {f.error}" for f in self._failures[-4:])
        raise ContentReadError(
            f"{self.prv.sha1}: no source delivered bytes {start}-{end - 1} ({short(detail, 400)})",
            self._failures,
        )

    async def _fetch_digests(self) -> None:
        """Use the first digest list a source serves that matches the ``.prv``'s root;
        with none, reads keep the head and whole-file checks (``kbapps.api.verify``)."""
        self._digests_asked = True
        digests = await fetch_digest_list(self._client, self.prv, self._sources)
        if digests is not None:
            self.verifier.use_digests(digests)

    def _hash_cached_blocks(self) -> None:
        """Extend the whole-file hash over cached blocks that continue its prefix (read
        out of order earlier), so a file read in any order is fully verified at the end."""
        size = self.block_size
        index = self.verifier.hashed // size
        while index in self._blocks and self.verifier.hashed == index * size:
            try:
                self.verifier.check_span(index * size, self._blocks[index])
            except VerificationError as exc:
                self._break(exc)
            index += 1

    def _break(self, exc: VerificationError) -> NoReturn:
        self._broken = f"{self.prv.sha1}: {exc}; the bytes read cannot be trusted"
        self._blocks.clear()
        raise ContentReadError(self._broken, self._failures) from None

    async def _fetch_span(self, url: str, start: int, end: int) -> bytes:
        headers = [("Range", f"bytes={start}-{end - 1}")]
        try:
            async with self._client.stream("GET", url, headers=headers) as response:
                self._check_head(response, start, end)
                parts: list[bytes] = []
                received = 0
                async for chunk in response.iter_bytes():
                    received += len(chunk)
                    if received > end - start:
                        raise _SourceFailed(f"sent more than the {end - start} bytes asked for")
                    parts.append(chunk)
        except TransportError as exc:
            raise _SourceFailed(short(str(exc))) from None
        self.transferred += received
        if received != end - start:
            raise _SourceFailed(f"sent {received} of {end - start} bytes")
        return b"".join(parts)

    def _check_head(self, response: HttpResponse, start: int, end: int) -> None:
        try:
            check_piece_response(response, start, end, self.prv)
        except SourceError as exc:
            raise _SourceFailed(str(exc)) from None
