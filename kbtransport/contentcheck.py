"""Bytes proxied under a content id are checked against it before the response ends.

A hub answering ``/sha1/SHA1`` (or ``/ID/sha1/SHA1``) streams what a share sends, and a
share is trusted only for its own files, not for what their SHA-1 is: a share that
lies would make a browser or ``curl`` save a complete 200 of the wrong bytes. So the
node hashes the body while it streams it, holds the last chunk back, and sends it only
once every byte hashed to the id asked for. On a mismatch it raises
``ContentMismatch`` instead: the HTTP server then cuts the connection, and the client
is left with fewer bytes than the ``Content-Length`` (or no final chunk), never a
complete response (docs/security.md, "Content named by SHA-1"). The source is then
remembered in ``BadSources`` and not asked for that id again.

Hashing costs ~0.65 CPU seconds per GiB (OpenSSL SHA-1), on the path of every proxied
byte. ``hashlib`` releases the GIL on large buffers, so once a body has a chunk of
``_THREAD_MIN_BYTES`` or more, its chunks are hashed in order by the threads of
``kbtransport._ordered`` (shared by all bodies) while the event loop forwards them; at
most ``_MAX_QUEUED`` chunks of a body wait (bounded memory; the loop waits beyond that),
and the loop waits for the hashing once, at the body's end. Small bodies are hashed on
the loop: a thread hop costs more. A range that is
not the whole content cannot be checked alone; those are left to the caller
(``covers_whole``).
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable

from kbtransport._ordered import OrderedWork
from kbtransport.errors import ReadError

__all__ = ("EMPTY_SHA1", "BadSources", "ContentCheck", "ContentMismatch", "covers_whole")

#: The SHA-1 of no bytes: the only content id a body of length 0 can have.
EMPTY_SHA1 = hashlib.sha1(b"").hexdigest()
#: A body is hashed on the event loop until a chunk this large arrives: a thread costs
#: more than hashing a small body (~40 µs for 64 KiB).
_THREAD_MIN_BYTES = 64 * 1024
#: Chunks (each at most 1 MiB from the proxy) of one body waiting to be hashed.
_MAX_QUEUED = 4
_CONTENT_RANGE_RE = re.compile(r"bytes 0-(\d+)/(\d+)")


class ContentMismatch(ReadError):
    """A proxied body did not hash to the content id asked for (its end was held back)."""


def covers_whole(status: int, content_range: str | None) -> bool:
    """True if a ``status`` response with ``content_range`` carries the whole content:
    any 2xx but a 206, or a 206 whose range is ``bytes 0-(N-1)/N``."""
    if status != 206:
        return 200 <= status < 300
    match = _CONTENT_RANGE_RE.fullmatch((content_range or "").strip())
    return match is not None and int(match.group(1)) + 1 == int(match.group(2))


class ContentCheck:
    """Checks one body against content id ``sha1``; ``next_chunk`` replaces iteration.

    Args:
        sha1: the content id asked for (40 lowercase hex digits).
        on_mismatch: called once when the whole body arrived and hashed to another id
            (before ``ContentMismatch`` is raised); must not block.
    """

    def __init__(self, sha1: str, on_mismatch: Callable[[], None]) -> None:
        self._expected = sha1
        self._on_mismatch = on_mismatch
        self._hash = hashlib.sha1()
        self._queue: OrderedWork | None = None
        self._held: bytes | None = None
        self._finished = False

    async def next_chunk(self, chunks: AsyncIterator[bytes]) -> bytes:
        """The next chunk to send: the one before the newest chunk of ``chunks``; the
        last chunk only once the whole body hashed to ``sha1``.

        Raises:
            StopAsyncIteration: the body is complete and checked.
            ContentMismatch: the body hashed to another id; its last chunk is withheld.
            Whatever ``chunks`` raises (a reset stream): the held chunk is dropped.
        """
        while not self._finished:
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                self._finished = True
                if self._queue is not None:
                    await self._queue.finish()
                if self._hash.hexdigest() != self._expected:
                    self._held = None
                    self._on_mismatch()
                    raise ContentMismatch(
                        f"the body does not hash to {self._expected}: cut before its end"
                    ) from None
                break
            await self._feed(chunk)
            held, self._held = self._held, chunk
            if held is not None:
                return held
        held, self._held = self._held, None
        if held is None:
            raise StopAsyncIteration
        return held

    async def _feed(self, chunk: bytes) -> None:
        if self._queue is None:
            if len(chunk) < _THREAD_MIN_BYTES:
                self._hash.update(chunk)
                return
            self._queue = OrderedWork(self._update, _MAX_QUEUED)
        await self._queue.put(chunk)

    def _update(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self._hash.update(chunk)

    def close(self) -> None:
        """The body is done with, checked or not: forget the held chunk (what is queued
        for hashing is hashed and dropped, at most ``_MAX_QUEUED`` chunks); idempotent."""
        self._finished = True
        self._held = None


class BadSources:
    """The (source node id, content id) pairs that sent wrong bytes, the newest
    ``capacity`` of them (the oldest is forgotten first)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("BadSources capacity must be positive")
        self._capacity = capacity
        self._pairs: OrderedDict[tuple[str, str], None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pairs)

    def add(self, source: str, sha1: str) -> None:
        """Remember that ``source`` sent wrong bytes for ``sha1``."""
        key = (source, sha1)
        self._pairs[key] = None
        self._pairs.move_to_end(key)
        while len(self._pairs) > self._capacity:
            self._pairs.popitem(last=False)

    def has(self, source: str, sha1: str) -> bool:
        """True if ``source`` sent wrong bytes for ``sha1`` (and is still remembered)."""
        return (source, sha1) in self._pairs
