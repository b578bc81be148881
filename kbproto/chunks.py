"""Chunk digests: the optional ``chunks`` field of a ``.prv`` and the checks behind it.

Strategy
--------
A file is cut into fixed pieces of ``CHUNK_SIZE`` bytes (the last one shorter; a file
of 0 bytes has none). Each piece's SHA-256 is 32 bytes; their concatenation in order
is the file's **digest list** (32 KiB per GiB), and the SHA-256 of that list is its
**root** (``docs/formats.md``, "Chunk digests"). A ``.prv`` written by
``kb-prv-create`` carries the root::

    "chunks": {"algorithm": "sha256", "size": 1048576, "root": "<64 hex>"}

The list itself is served by nodes (``GET /sha1/SHA1/chunks``, ``docs/http.md``), and
no node is trusted for it (``docs/security.md``, "Chunk digests"): a list is used only
once its SHA-256 equals the root of the reader's own ``.prv`` and its length is 32 per
chunk (``DigestList.check``). Then each chunk a source sends is checked on arrival
(``DigestList.chunk_ok``), so a wrong byte costs at most one chunk of that source.

This module is the single place that knows the field and the checks: the ``.prv``
model (``kbproto.prv``), the download client and the Python API call it. It lives in
kbproto because ``kbproto.prv`` parses the field, and both are pure: bytes in, answers
out, no I/O (``hashlib`` is computation).

Readers are lenient the way the original tool's were about fields they do not know:
a ``chunks`` value that is not exactly what we can check (another algorithm, a size
that is not a power of two from 64 KiB to 64 MiB, a malformed root) is ignored with a
warning, never trusted and never an error (``parse_chunk_field``), so such a ``.prv``
keeps whole-file verification.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from kbproto.errors import LocalProtocolError, RemoteProtocolError

__all__ = (
    "CHUNK_ALGORITHM",
    "CHUNK_SIZE",
    "DIGEST_BYTES",
    "MAX_CHUNK_SIZE",
    "MIN_CHUNK_SIZE",
    "ChunkListError",
    "ChunkSpec",
    "DigestList",
    "chunk_count",
    "chunk_digests",
    "chunks_for_range",
    "digest_list_root",
    "parse_chunk_field",
)

#: The only digest readers accept and writers write.
CHUNK_ALGORITHM = "sha256"
#: What writers use: 1 MiB pieces (a wrong byte costs at most this much of a source).
CHUNK_SIZE = 1 << 20
#: Bounds on a size readers accept: smaller would make lists huge (32 bytes per 64 KiB
#: is already 512 KiB per GiB), larger would make a bad source cost too much.
MIN_CHUNK_SIZE = 1 << 16
MAX_CHUNK_SIZE = 1 << 26
#: Bytes of one chunk digest (SHA-256).
DIGEST_BYTES = 32

_ROOT_RE = re.compile(r"[0-9a-f]{64}")
#: Largest file size a ``.prv`` may state (``kbproto.prv``): a signed 64-bit offset.
_MAX_FILE_SIZE = 2**63 - 1


class ChunkListError(RemoteProtocolError):
    """A digest list from the network does not match the ``.prv``'s root or length."""


def _size_problem(size: object) -> str | None:
    if type(size) is not int:
        return "size must be an integer"
    if not MIN_CHUNK_SIZE <= size <= MAX_CHUNK_SIZE or size & (size - 1):
        return f"size {size} is not a power of two from {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE}"
    return None


def _root_problem(root: object) -> str | None:
    if type(root) is not str or _ROOT_RE.fullmatch(root) is None:
        return "root must be 64 lowercase hex digits"
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class ChunkSpec:
    """The ``chunks`` field of a ``.prv``: how the file is cut, and the root.

    Attributes:
        root: SHA-256 of the digest list, 64 lowercase hex digits.
        size: bytes per chunk (the last chunk is shorter); a power of two from
            ``MIN_CHUNK_SIZE`` to ``MAX_CHUNK_SIZE``. Writers use ``CHUNK_SIZE``.
        algorithm: always ``CHUNK_ALGORITHM``.

    Raises:
        LocalProtocolError: if a value is not one we can check.
    """

    root: str
    size: int = CHUNK_SIZE
    algorithm: str = CHUNK_ALGORITHM

    def __post_init__(self) -> None:
        problem = (
            ("algorithm must be sha256" if self.algorithm != CHUNK_ALGORITHM else None)
            or _size_problem(self.size)
            or _root_problem(self.root)
        )
        if problem is not None:
            raise LocalProtocolError(f"ChunkSpec: {problem}")

    def to_json_object(self) -> dict[str, Any]:
        """The field's value, keys in the order writers write them."""
        return {"algorithm": self.algorithm, "size": self.size, "root": self.root}

    def list_length(self, file_size: int) -> int:
        """Bytes of the digest list of a file of ``file_size`` bytes."""
        return DIGEST_BYTES * chunk_count(file_size, self.size)


def parse_chunk_field(value: object) -> tuple[ChunkSpec | None, str | None]:
    """Read a ``.prv``'s ``chunks`` value.

    Args:
        value: the decoded JSON value of the field.

    Returns:
        ``(spec, None)`` when it is one we can check, else ``(None, problem)``:
        the field is then to be ignored (with a warning naming ``problem``), and the
        file verified whole, as for a ``.prv`` without it. Never raises.
    """
    if not isinstance(value, dict):
        return None, "must be a JSON object"
    algorithm = value.get("algorithm")
    if algorithm != CHUNK_ALGORITHM:
        return None, f"algorithm {str(algorithm)[:40]!r} is not {CHUNK_ALGORITHM!r}"
    size = value.get("size")
    problem = _size_problem(size) or _root_problem(value.get("root"))
    if problem is not None:
        return None, problem
    return ChunkSpec(root=value["root"], size=value["size"]), None


def chunk_count(file_size: int, chunk_size: int = CHUNK_SIZE) -> int:
    """The number of chunks of a file of ``file_size`` bytes (0 for an empty file)."""
    return -(-file_size // chunk_size)


def chunk_digests(data: bytes | bytearray | memoryview, chunk_size: int = CHUNK_SIZE) -> bytes:
    """The digest list of ``data`` held in memory (a file's reader hashes as it reads:
    ``kbapps.hashing``; this is for small content and for tests)."""
    view = memoryview(data)
    return b"".join(
        hashlib.sha256(view[start : start + chunk_size]).digest()
        for start in range(0, len(view), chunk_size)
    )


def digest_list_root(digest_list: bytes | bytearray | memoryview) -> str:
    """The root of a digest list: its SHA-256, 64 lowercase hex digits."""
    return hashlib.sha256(digest_list).hexdigest()


def chunks_for_range(start: int, end: int, file_size: int, chunk_size: int = CHUNK_SIZE) -> range:
    """The indices of the chunks that bytes ``start`` to ``end`` (exclusive) touch.

    Raises:
        LocalProtocolError: if the range is not within the file (or is reversed).
    """
    if not 0 <= start <= end <= file_size:
        raise LocalProtocolError(f"byte range {start}-{end} is not within 0-{file_size}")
    if start == end:
        return range(0)
    return range(start // chunk_size, (end - 1) // chunk_size + 1)


class DigestList:
    """A digest list checked against a ``.prv``: each chunk can then be checked alone.

    Build it with ``check``; an instance only exists for a list that matched.

    Attributes:
        spec: the ``chunks`` field it was checked against.
        file_size: the ``.prv``'s ``original_size``.
        count: the number of chunks.
    """

    __slots__ = ("_digests", "count", "file_size", "spec")

    def __init__(self, spec: ChunkSpec, file_size: int, digests: bytes) -> None:
        # Private: ``check`` is the way in (it is what makes the list trustworthy).
        self.spec = spec
        self.file_size = file_size
        self.count = chunk_count(file_size, spec.size)
        self._digests = digests

    @classmethod
    def check(
        cls, spec: ChunkSpec, file_size: int, data: bytes | bytearray | memoryview
    ) -> DigestList:
        """Accept ``data`` (from any source) as the digest list of a ``.prv``.

        Args:
            spec: the ``chunks`` field of the reader's own ``.prv``.
            file_size: its ``original_size``.
            data: the list as received.

        Returns:
            The checked list.

        Raises:
            ChunkListError: if its length is not 32 per chunk or its SHA-256 is not
                the root; nothing of it is to be used then.
            LocalProtocolError: if ``file_size`` is not a file size.
        """
        if type(file_size) is not int or not 0 <= file_size <= _MAX_FILE_SIZE:
            raise LocalProtocolError(f"file size {file_size!r:.40} is not a size")
        expected = spec.list_length(file_size)
        if len(data) != expected:
            raise ChunkListError(
                f"digest list is {len(data)} bytes, {expected} expected for {file_size} bytes"
            )
        if digest_list_root(data) != spec.root:
            raise ChunkListError("digest list does not hash to the root of the .prv")
        return cls(spec, file_size, bytes(data))

    def chunk_span(self, index: int) -> tuple[int, int]:
        """``(start, end)`` byte offsets of chunk ``index`` (end exclusive).

        Raises:
            LocalProtocolError: if there is no such chunk.
        """
        if type(index) is not int or not 0 <= index < self.count:
            raise LocalProtocolError(f"no chunk {index!r:.40} in {self.count} chunks")
        start = index * self.spec.size
        return start, min(start + self.spec.size, self.file_size)

    def digest(self, index: int) -> bytes:
        """The 32-byte digest of chunk ``index`` (``LocalProtocolError`` if none)."""
        self.chunk_span(index)
        return self._digests[DIGEST_BYTES * index : DIGEST_BYTES * (index + 1)]

    def chunk_ok(self, index: int, data: bytes | bytearray | memoryview) -> bool:
        """Whether ``data`` is exactly chunk ``index`` of the file (its length and its
        SHA-256); raises ``LocalProtocolError`` if there is no such chunk."""
        start, end = self.chunk_span(index)
        return len(data) == end - start and hashlib.sha256(data).digest() == self.digest(index)

    def chunks_for_range(self, start: int, end: int) -> range:
        """``chunks_for_range`` for this file: the chunks bytes ``start``-``end`` touch."""
        return chunks_for_range(start, end, self.file_size, self.spec.size)
