"""Which bytes of a remote file are checked, and against what (``docs/python-api.md``).

A ``.prv`` carries two digests: the SHA-1 of the first 1000 bytes (``original_fcs``)
and the SHA-1 of the whole file. ``ContentVerifier`` is told of every span of bytes a
reader fetched, in any order, and checks what those two digests allow:

* a span that covers the first ``min(1000, size)`` bytes is checked against the head
  digest before a single byte of it is returned;
* the whole-file SHA-1 is computed over the file's prefix as it grows (spans that
  continue the hashed prefix extend it); once it covers the file, the digest must be
  the ``.prv``'s.

A ``.prv`` with a ``chunks`` field (``docs/formats.md``) allows more: once the reader
has a digest list that matched the field's root (``use_digests``; ``RangeReader``
fetches it from the sources), every whole chunk a span holds is checked against its
SHA-256 before a byte of the span is returned, so a wrong byte anywhere is caught
within its chunk. Without a list (an older ``.prv``, or no source served one that
matched), bytes outside the first 1000 are unverified until the whole file was read.
"""

from __future__ import annotations

import hashlib

from kbproto.chunks import DigestList
from kbproto.prv import Prv

__all__ = (
    "HEAD_BYTES",
    "ChunkMismatchError",
    "ContentVerifier",
    "HeadMismatchError",
    "SourceContentError",
    "VerificationError",
)

#: The bytes ``original_fcs`` covers.
HEAD_BYTES = 1000


class VerificationError(Exception):
    """Fetched bytes do not match the ``.prv`` (the message says which and where)."""


class SourceContentError(VerificationError):
    """A span does not match a digest that covers it alone: the source that sent it
    serves other bytes (nothing of the span was taken; another source may be asked)."""


class HeadMismatchError(SourceContentError):
    """The first 1000 bytes do not match ``original_fcs``."""


class ChunkMismatchError(SourceContentError):
    """A chunk of the span does not match its digest in the checked digest list."""


class ContentVerifier:
    """Checks spans of one file's content against its ``.prv`` (see the module docstring).

    Args:
        prv: what the content must hash to.
    """

    def __init__(self, prv: Prv) -> None:
        self.prv = prv
        self._whole = hashlib.sha1()
        self._hashed = 0
        self._whole_checked = prv.size == 0
        self._digests: DigestList | None = None

    def use_digests(self, digests: DigestList) -> None:
        """Check every whole chunk of later spans against ``digests`` (a list that
        ``DigestList.check`` accepted for this ``.prv``)."""
        self._digests = digests

    @property
    def chunk_checked(self) -> bool:
        """True when spans are checked chunk by chunk."""
        return self._digests is not None

    @property
    def hashed(self) -> int:
        """Bytes of the file's prefix hashed so far."""
        return self._hashed

    @property
    def fully_verified(self) -> bool:
        """True once every byte of the file was hashed and matched the SHA-1."""
        return self._whole_checked

    def check_span(self, offset: int, data: bytes) -> None:
        """Check ``data``, the bytes at ``offset``, before they are returned to a reader.

        Raises:
            HeadMismatchError: the span holds the head and it does not match
                ``original_fcs`` (the span was not taken).
            ChunkMismatchError: a whole chunk of the span does not match its digest.
            VerificationError: the span completes the file and the SHA-1 does not match.
        """
        if self._digests is not None:
            _check_chunks(self._digests, offset, data)
        head = min(HEAD_BYTES, self.prv.size)
        if offset == 0 and len(data) >= head:
            digest = hashlib.sha1(data[:head]).hexdigest()
            if digest != self.prv.head_sha1:
                raise HeadMismatchError(
                    f"the first {head} bytes hash to {digest}, not to the .prv's "
                    f"original_fcs {self.prv.head_sha1}"
                )
        self._extend_prefix(offset, data)

    def _extend_prefix(self, offset: int, data: bytes) -> None:
        end = offset + len(data)
        if offset > self._hashed or end <= self._hashed:
            return
        self._whole.update(memoryview(data)[self._hashed - offset :])
        self._hashed = end
        if self._hashed == self.prv.size:
            digest = self._whole.hexdigest()
            if digest != self.prv.sha1:
                raise VerificationError(
                    f"the whole file hashes to {digest}, not to the .prv's SHA-1 {self.prv.sha1}"
                )
            self._whole_checked = True


def _check_chunks(digests: DigestList, offset: int, data: bytes) -> None:
    view = memoryview(data)
    for index in digests.chunks_for_range(offset, offset + len(data)):
        start, end = digests.chunk_span(index)
        if start < offset or end > offset + len(data):
            continue  # only part of this chunk is here: the prefix hash covers it
        if not digests.chunk_ok(index, view[start - offset : end - offset]):
            raise ChunkMismatchError(
                f"chunk {index} (bytes {start}-{end - 1}) does not match its digest"
            )
