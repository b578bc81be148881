"""Answering from a hub's relay cache, joining a fill in progress, and teeing into one.

The HTTP routes (``kbtransport.httpapi``) use three things from here:

* ``cached_response``: a cache entry answered like a share answers its own file
  (``kbtransport.ranges.file_response``: Range, HEAD, If-None-Match, ``ETag`` = the
  quoted SHA-1; the server sends it with ``sendfile``); ``entry_response`` does the
  same for an entry opened beforehand (a download by path, answered once the share
  confirmed the path still holds that content).
* ``joined_response``: a whole GET for content a fill is writing right now (single
  flight). The joiner reads the fill's temporary up to what has arrived, then follows
  it; it never sends the last byte before the fill committed (so a joiner never gets a
  complete body of unverified bytes), waits at most ``JOIN_IDLE`` seconds for the next
  bytes, and is cut (an incomplete body, like a failed proxy) if the fill is dropped.
  The writer never waits for joiners.
* ``Tee``: what the proxied body writes into a fill as it streams.
* ``KnownPaths``: which content id a share last named (its ``ETag``) for a download
  by path, so the next download of that path can be asked conditionally
  (``If-None-Match``) and answered from the cache (docs/protocol.md §13).
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from typing import BinaryIO

import anyio

from kbtransport._signal import Signal
from kbtransport.errors import ReadError
from kbtransport.http import FileBody, Request, Response, StreamBody
from kbtransport.ranges import content_type_for, file_response
from kbtransport.relaycache import CacheFill, RelayCache
from kbtransport.usercontent import user_content_headers

__all__ = (
    "JOIN_IDLE",
    "KnownPaths",
    "Tee",
    "cached_response",
    "entry_response",
    "is_plain_get",
    "joined_response",
)

#: Seconds a joiner waits for the next bytes of a fill before it gives up (the proxy's
#: own idle limit is of the same order: a stalled share is a failed download).
JOIN_IDLE = 60.0
#: Seconds between a joiner's looks at a fill whose pool thread is writing what it was
#: given (the writer's next chunk or its end wake the joiner sooner).
_WRITING_POLL = 0.01
#: Bytes a joiner reads from the temporary at a time (the proxy's chunk size).
_READ_SIZE = 1024 * 1024


def cached_response(request: Request, cache: RelayCache, sha1: str, name: str) -> Response | None:
    """The answer to ``request`` (GET or HEAD) from the entry of ``sha1``, or None if
    the cache holds no valid entry for it. ``name`` gives the ``Content-Type``."""
    opened = cache.open_entry(sha1)
    if opened is None:
        return None
    return entry_response(request, cache, sha1, opened, name)


def entry_response(
    request: Request, cache: RelayCache, sha1: str, opened: tuple[BinaryIO, int], name: str
) -> Response:
    """The answer to ``request`` (GET or HEAD) from ``opened``, the entry of ``sha1``
    as ``RelayCache.open_entry`` gave it (the response owns the file)."""
    file, size = opened
    response = file_response(request, file, size, name=name, etag=f'"{sha1}"')
    cache.stats.hits += 1
    if request.method == "GET" and isinstance(response.body, FileBody):
        cache.stats.bytes_served += response.body.length
    return response


def is_plain_get(request: Request) -> bool:
    """True for a GET of the whole content: no Range, no conditional (what may join a
    fill, and what may start one)."""
    return request.method == "GET" and all(
        request.header(name) is None for name in ("range", "if-none-match", "if-range")
    )


def joined_response(request: Request, cache: RelayCache, sha1: str, name: str) -> Response | None:
    """The whole content of ``sha1`` followed from the fill in progress, for a plain
    GET (no Range, no conditional); None if there is no fill to join."""
    if not is_plain_get(request):
        return None
    fill = cache.fill_in_progress(sha1)
    if fill is None:
        return None
    fd = fill.open_reader()
    if fd is None:
        return None
    cache.stats.hits += 1
    headers = (
        ("Accept-Ranges", "bytes"),
        ("ETag", f'"{sha1}"'),
        *user_content_headers(content_type_for(name)),
    )
    follower = _Follower(cache, fill, fd)
    return Response(
        status=200,
        headers=headers,
        body=StreamBody(chunks=follower, length=fill.size, on_close=follower.aclose),
    )


class _Follower:
    """The body of a joiner: the fill's bytes as they arrive (see the module docstring)."""

    def __init__(self, cache: RelayCache, fill: CacheFill, fd: int) -> None:
        self._cache = cache
        self._fill = fill
        self._fd: int | None = fd
        self._pos = 0
        self._signal = Signal()

    def __aiter__(self) -> _Follower:
        return self

    async def __anext__(self) -> bytes:
        fill = self._fill
        while self._fd is not None:
            # The last byte only once the fill committed: never a complete unverified body.
            limit = fill.size if fill.committed else min(fill.written, fill.size - 1)
            if self._pos < limit:
                data = os.pread(self._fd, min(_READ_SIZE, limit - self._pos), self._pos)
                if not data:
                    break
                self._pos += len(data)
                self._cache.stats.bytes_served += len(data)
                return data
            if fill.committed:
                await self.aclose()
                raise StopAsyncIteration
            if fill.failed:
                break
            if fill.writing:
                # Bytes on their way into the file: a pool thread writes them and
                # cannot wake this task, so look again soon (only while they are).
                with anyio.move_on_after(_WRITING_POLL):
                    await fill.wait(self._signal)
                continue
            with anyio.move_on_after(JOIN_IDLE):
                await fill.wait(self._signal)
                continue
            break
        await self.aclose()
        raise ReadError("the shared transfer of this content failed")

    async def aclose(self) -> None:
        """Close the temporary's descriptor (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


class Tee:
    """Writes a proxied body into ``fill`` as it streams.

    Args:
        fill: the fill.
        checked: True when the body passes through the content check against
            ``fill.sha1`` (``kbtransport.contentcheck``), which hashes it already:
            reaching its end means the bytes hash to the id. False: the tee hashes
            the body itself (a download by path, whose id the share's ``ETag`` named).
    """

    def __init__(self, fill: CacheFill, *, checked: bool) -> None:
        self._fill = fill
        self._hash = None if checked else hashlib.sha1()

    async def feed(self, chunk: bytes) -> None:
        """The next chunk of the body (waits only while the fill's writes lag behind)."""
        if self._hash is not None:
            self._hash.update(chunk)
        await self._fill.write(chunk)

    async def end(self) -> None:
        """The body ended (and passed the content check, if ``checked``): commit."""
        digest = self._fill.sha1 if self._hash is None else self._hash.hexdigest()
        await self._fill.commit(digest)

    def abort(self) -> None:
        """The body did not end well: drop the fill (idempotent)."""
        self._fill.abort()


class KnownPaths:
    """The content id each recent download by path was last named by its share
    (``(share id, request target) -> sha1``), the least recently used forgotten past
    ``kept`` entries. A hint only: the share confirms it on every use (a 304 to
    ``If-None-Match``), so a stale entry costs one ordinary proxied answer."""

    def __init__(self, kept: int) -> None:
        if kept < 1:
            raise ValueError("KnownPaths needs room for one entry at least")
        self._kept = kept
        self._ids: OrderedDict[tuple[str, str], str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._ids)

    def get(self, share: str, target: str) -> str | None:
        """The content id last named for ``target`` at ``share``, or None."""
        sha1 = self._ids.get((share, target))
        if sha1 is not None:
            self._ids.move_to_end((share, target))
        return sha1

    def learn(self, share: str, target: str, sha1: str) -> None:
        """``share`` named ``sha1`` for ``target`` ("" to forget what it named)."""
        key = (share, target)
        if not sha1:
            self._ids.pop(key, None)
            return
        self._ids[key] = sha1
        self._ids.move_to_end(key)
        if len(self._ids) > self._kept:
            self._ids.popitem(last=False)
