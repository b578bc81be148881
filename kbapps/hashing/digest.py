"""One pass over a file: every digest kbucket keeps of a file's content, from one read.

Strategy
--------
A file is read once, into one reused buffer (``FileHasher``): each read feeds the
whole-file SHA-1 (the content id) and, while within the first ``FCS_HEAD_BYTES``, the
SHA-1 of the head that ``.prv`` files call ``original_fcs``. Every digest is computed
in two places only, side by side in ``FileHasher``: ``digest_read`` for a file that
one read brought in whole (most small files), and ``_digest_stream`` for a file read
in several reads. The same pass gives the file's chunk digests (``kbproto.chunks``:
the SHA-256 of each 1 MiB chunk, concatenated: the digest list, whose SHA-256 is the
``chunks`` root of a ``.prv``).

* **Chunk digests beside the SHA-1.** A file read in one read is one chunk: one more
  hashlib call. A file of ``THREADED_CHUNKS_BYTES`` and more is read a chunk at a
  time into one of ``_CHUNK_BUFFERS`` 1 MiB buffers, 64 KiB per read (the SHA-1
  follows each read while it is in L2), and a helper thread hashes each full chunk
  with SHA-256: hashlib releases the GIL, and with SHA-NI SHA-256 runs at about
  SHA-1's speed, so the two run side by side on two cores and the file is still read
  once (``docs/benchmarks.md``). Files in between (on the process pool, several
  at once) update both digests in turn on their 64 KiB reads.

* **64 KiB reads into one reused buffer.** hashlib here reaches ~1.3 GB/s with 64 KiB
  ``readinto`` but ~0.9 GB/s with 1 MiB or larger buffers: once the buffer leaves the
  1 MiB L2 cache, the kernel's copy out of the page cache gets three times dearer
  (``docs/benchmarks.md``, "Hashing and kb-prv-create"). No allocation per read.
* **Changes while reading.** The file's ``fstat`` before and after the read must agree
  (size and mtime), and the bytes read must be its size; otherwise
  ``FileChangedError``: a digest of half-written bytes is never returned.
* **Start-up.** ``hashlib`` (with OpenSSL) is imported when the first ``FileHasher`` is
  made, not with this module: a cached ``kb-prv-create`` of a tree reads no file and
  should not pay for it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, cast

if TYPE_CHECKING:
    from _hashlib import HASH
    from queue import SimpleQueue

    # Only a type here: importing kbproto.ids (and random with it) costs ~2 ms of
    # every start-up, and a NewType of str is the identity at run time.
    from kbproto.ids import Sha1

__all__ = (
    "BUFFER_SIZE",
    "CHUNK_BYTES",
    "FCS_HEAD_BYTES",
    "OPEN_FLAGS",
    "PROGRESS_BYTES",
    "THREADED_CHUNKS_BYTES",
    "FileChangedError",
    "FileDigest",
    "FileHasher",
    "FileKey",
    "RawDigest",
    "chunks_root",
    "error_text",
    "hash_file",
    "open_for_hashing",
)

#: ``kbproto.prv.FCS_HEAD_BYTES`` (a test checks it): ``original_fcs`` covers this many
#: leading bytes. Repeated so that hashing never imports kbproto.prv (start-up).
FCS_HEAD_BYTES = 1000
#: Read size, chosen by measurement: 64 KiB stays in L2 next to the page being copied
#: (1.3 GB/s); 128 KiB and up fall to 0.8-0.95 GB/s.
BUFFER_SIZE = 64 * 1024
#: ``kbproto.chunks.CHUNK_SIZE`` (a test checks it): the bytes of one chunk digest.
#: Repeated so that hashing never imports kbproto (start-up).
CHUNK_BYTES = 1 << 20
#: Files at least this big get their chunk digests on a helper thread: below it the
#: thread's start and hand-offs (~0.1 ms) outweigh what it saves, and smaller files
#: are hashed several at a time anyway (the process pool).
THREADED_CHUNKS_BYTES = 4 * CHUNK_BYTES
#: 1 MiB buffers of the threaded path: one being read, one being hashed, one spare so
#: the reader rarely waits for the hasher.
_CHUNK_BUFFERS = 3
#: While a file is read in several reads, progress is reported every this many bytes.
PROGRESS_BYTES = 16 * 1024 * 1024
#: O_NONBLOCK: if a FIFO was swapped in for a file, opening it must not hang; the
#: fstat then refuses anything that is not a regular file.
OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC

# FileKey and FileDigest are NamedTuples rather than frozen dataclasses: one of each
# is made per file (100,000s per run), and tuple construction and hashing are several
# times cheaper. They are just as immutable.


class FileKey(NamedTuple):
    """What identifies one version of a file for the hash cache.

    Attributes:
        device: ``st_dev``.
        inode: ``st_ino``.
        size: ``st_size`` in bytes.
        mtime_ns: ``st_mtime_ns``.
    """

    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def from_stat(cls, st: os.stat_result) -> FileKey:
        """Return the key of a ``stat`` result."""
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class FileDigest(NamedTuple):
    """The digests of one file's content.

    Attributes:
        sha1: SHA-1 of all bytes (the content id), 40 hex digits.
        head_sha1: SHA-1 of the first ``FCS_HEAD_BYTES`` bytes (all, if fewer).
        size: the number of bytes hashed.
        chunks: the digest list (``kbproto.chunks``: 32 bytes of SHA-256 per 1 MiB
            chunk, ``b""`` for an empty file), or None where it is not known (a cache
            entry written before chunk digests existed: such an entry is a miss).
    """

    sha1: Sha1
    head_sha1: Sha1
    size: int
    chunks: bytes | None = None


#: ``hashlib.sha1``/``sha256``: a new hash object, fed the bytes given, if any.
_Constructor = Callable[..., "HASH"]


class FileChangedError(OSError):
    """The file changed (size or mtime) while it was being read."""


#: What ``FileHasher.hash_fd`` returns, as plain values (it runs once per file, and for
#: 4 KiB files Python overhead is half the cost): ``(sha1, head_sha1, bytes hashed,
#: st_dev, st_ino, st_size, st_mtime_ns, digest list)``, the key being the open file's.
RawDigest = tuple[str, str, int, int, int, int, int, bytes]


def open_for_hashing(path: str | os.PathLike[str]) -> int:
    """Open ``path`` for reading (``OPEN_FLAGS``); return the descriptor.

    Every file hashed by path is opened here (tests replace it to watch or refuse).

    Raises:
        OSError: if it cannot be opened.
    """
    return os.open(path, OPEN_FLAGS)


def error_text(exc: OSError) -> str:
    """The short reason of an ``OSError`` (``Permission denied``, ...) for one line."""
    return exc.strerror or str(exc) or type(exc).__name__


class FileHasher:
    """Hashes files in one pass each, with one reused read buffer.

    Use one per thread or process (every call reuses the buffer).

    Args:
        buffer: the read buffer to reuse (``BUFFER_SIZE`` is the measured best); a new
            one is made if omitted.

    Attributes:
        buffer: the read buffer; a caller may read a file into it itself and then ask
            ``digest_read`` for its digests.
        view: a memoryview of ``buffer``.
    """

    __slots__ = ("_sha1", "_sha256", "buffer", "view")

    def __init__(self, buffer: bytearray | None = None) -> None:
        self.buffer = bytearray(BUFFER_SIZE) if buffer is None else buffer
        self.view = memoryview(self.buffer)
        self._sha1, self._sha256 = _constructors()

    def chunks_root(self, digest_list: bytes) -> str:
        """``chunks_root`` (the root of a digest list, hex) without a call through the
        module's import."""
        return self._sha256(digest_list).hexdigest()

    def digest_read(self, n: int) -> tuple[str, str, bytes]:
        """Return ``(sha1, head_sha1, digest list)`` of a whole file that one read put
        in the first ``n`` bytes of ``buffer`` (``n`` at most ``CHUNK_BYTES``)."""
        view = self.view
        chunks = self._sha256(view[:n]).digest() if n else b""
        if n <= FCS_HEAD_BYTES:
            whole = self._sha1(view[:n]).hexdigest()
            return whole, whole, chunks
        # One object: the head's state is the prefix of the whole's.
        digest = self._sha1(view[:FCS_HEAD_BYTES])
        head = digest.hexdigest()
        digest.update(view[FCS_HEAD_BYTES:n])
        return digest.hexdigest(), head, chunks

    def digest_small(self, n: int) -> tuple[str, str, str]:
        """``digest_read`` with the root of the digest list instead of the list:
        ``(sha1, head_sha1, chunks_root)`` of a whole file that one read put in the
        first ``n`` bytes of ``buffer`` (``n`` at most ``CHUNK_BYTES``). One call per
        small file of a tree (~0.2 us fewer than the two it replaces, of ~12 per
        file), so it keeps to local names."""
        view = self.view
        sha256 = self._sha256
        root = sha256(sha256(view[:n]).digest() if n else b"").hexdigest()
        if n <= FCS_HEAD_BYTES:
            whole = self._sha1(view[:n]).hexdigest()
            return whole, whole, root
        digest = self._sha1(view[:FCS_HEAD_BYTES])
        head = digest.hexdigest()
        digest.update(view[FCS_HEAD_BYTES:n])
        return digest.hexdigest(), head, root

    def _digest_stream(
        self, fd: int, n: int, on_bytes: Callable[[int], None] | None
    ) -> tuple[str, str, int, bytes]:
        # (sha1, head_sha1, bytes, digest list) of a file whose first read put n bytes
        # in the buffer, reading on to its end. One call per file: the loop runs once
        # per 64 KiB, so it keeps to local names.
        buffer, view = self.buffer, self.view
        full = len(buffer)
        sha256 = self._sha256
        whole, head, part = self._sha1(), self._sha1(), sha256()
        digests: list[bytes] = []
        total = reported = in_chunk = 0
        while n:
            data = view if n == full else view[:n]
            if total < FCS_HEAD_BYTES:
                head.update(data[: FCS_HEAD_BYTES - total])
            whole.update(data)
            room = CHUNK_BYTES - in_chunk
            if n < room:
                part.update(data)
                in_chunk += n
            else:  # this read ends a chunk (a read is never longer than one)
                part.update(data[:room])
                digests.append(part.digest())
                part = sha256(data[room:])
                in_chunk = n - room
            total += n
            if on_bytes is not None and total - reported >= PROGRESS_BYTES:
                on_bytes(total - reported)
                reported = total
            n = os.readv(fd, (buffer,))
        if in_chunk:
            digests.append(part.digest())
        if on_bytes is not None and total > reported:
            on_bytes(total - reported)
        return whole.hexdigest(), head.hexdigest(), total, b"".join(digests)

    def _digest_threaded(
        self, fd: int, n: int, on_bytes: Callable[[int], None] | None
    ) -> tuple[str, str, int, bytes]:
        # _digest_stream for a big file: reads fill 1 MiB chunk buffers, the SHA-1
        # follows each read, a helper thread hashes each full buffer with SHA-256
        # (see the module notes). The first n bytes are already in self.buffer.
        import queue  # here: only big files need them (start-up)
        import threading

        free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        for _ in range(_CHUNK_BUFFERS):
            free.put(bytearray(CHUNK_BYTES))
        work: queue.SimpleQueue[tuple[bytearray, int] | None] = queue.SimpleQueue()
        digests: list[bytes] = []
        helper = threading.Thread(
            target=_hash_chunks, args=(self._sha256, work, free, digests), daemon=True
        )
        helper.start()
        whole, head = self._sha1(), None
        total = reported = 0
        try:
            chunk = free.get()
            chunk[:n] = self.view[:n]
            filled = n
            view = memoryview(chunk)
            while True:
                if filled:
                    whole.update(view[filled - n : filled] if n else view[:0])
                if n == 0 or filled == CHUNK_BYTES:
                    if filled:
                        if head is None:
                            head = self._sha1(view[: min(filled, FCS_HEAD_BYTES)])
                        view.release()
                        work.put((chunk, filled))
                        total += filled
                        if on_bytes is not None and total - reported >= PROGRESS_BYTES:
                            on_bytes(total - reported)
                            reported = total
                    if n == 0:
                        break
                    chunk = free.get()
                    view = memoryview(chunk)
                    filled = 0
                n = os.readv(fd, (view[filled : filled + BUFFER_SIZE],))
                filled += n
        finally:
            work.put(None)
            helper.join()
        if on_bytes is not None and total > reported:
            on_bytes(total - reported)
        head_hex = head.hexdigest() if head is not None else whole.hexdigest()
        return whole.hexdigest(), head_hex, total, b"".join(digests)

    def hash_fd(
        self,
        fd: int,
        on_bytes: Callable[[int], None] | None = None,
        before: os.stat_result | None = None,
    ) -> RawDigest:
        """Read the open file ``fd`` from its current offset to its end and return its
        digests and key (``RawDigest``).

        Args:
            fd: an open regular file, at offset 0.
            on_bytes: called with the bytes read since the last call, every
                ``PROGRESS_BYTES`` and at the end (only for a file read in several
                reads).
            before: the caller's ``fstat`` of ``fd``, if it took one.

        Raises:
            FileChangedError: if its size or mtime changed while it was read.
            OSError: if it cannot be read, or is not a regular file.
        """
        if before is None:
            before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise OSError(f"not a regular file (mode {stat.filemode(before.st_mode)})")
        size = before.st_size
        buffer = self.buffer
        full = len(buffer)
        n = os.readv(fd, (buffer,))
        if n == size and n < full:
            # The whole file came in one read (most small files): no second read for
            # EOF. Growth after the fstat would have made n differ; growth or a rewrite
            # after the read shows in the second fstat below.
            whole, head, chunks = self.digest_read(n)
            total = n
        elif size >= THREADED_CHUNKS_BYTES:
            whole, head, total, chunks = self._digest_threaded(fd, n, on_bytes)
        else:
            whole, head, total, chunks = self._digest_stream(fd, n, on_bytes)
        after = os.fstat(fd)
        if total != size or after.st_size != size or after.st_mtime_ns != before.st_mtime_ns:
            raise FileChangedError("changed while being read")
        return whole, head, total, before.st_dev, before.st_ino, size, before.st_mtime_ns, chunks

    def hash_path(
        self, path: str | os.PathLike[str], on_bytes: Callable[[int], None] | None = None
    ) -> tuple[FileKey, FileDigest]:
        """``hash_file`` with this hasher's buffer."""
        fd = open_for_hashing(path)
        try:
            sha1, head, total, dev, ino, size, mtime_ns, chunks = self.hash_fd(fd, on_bytes)
        finally:
            os.close(fd)
        digest = FileDigest(cast("Sha1", sha1), cast("Sha1", head), total, chunks)
        return FileKey(dev, ino, size, mtime_ns), digest


def chunks_root(digest_list: bytes) -> str:
    """``kbproto.chunks.digest_list_root`` (a test checks it): the SHA-256 of a digest
    list, in hex. Here so that hashing never imports kbproto (start-up)."""
    return _constructors()[1](digest_list).hexdigest()


#: ``_constructors()`` once found (``chunks_root`` runs once per file of a share).
_FOUND: list[tuple[_Constructor, _Constructor]] = []


def _constructors() -> tuple[_Constructor, _Constructor]:
    """OpenSSL's SHA-1 and SHA-256, imported on first use (see the module notes).

    They are the functions ``hashlib`` hands out, taken from ``_hashlib`` itself:
    ``import hashlib`` also loads its other algorithms and ``_blake2`` (~0.5 ms of a
    ``kb-prv-create`` start-up). ``hashlib`` is the fallback where OpenSSL is missing
    or refuses SHA-1 (FIPS mode), as ``hashlib`` itself falls back.
    """
    if _FOUND:
        return _FOUND[0]
    try:
        from _hashlib import openssl_sha1, openssl_sha256

        openssl_sha1(b"")
        found: tuple[_Constructor, _Constructor] = (openssl_sha1, openssl_sha256)
    except (ImportError, ValueError):  # pragma: no cover - no OpenSSL, or FIPS mode
        from hashlib import sha1, sha256

        found = (sha1, sha256)
    _FOUND.append(found)
    return found


def _hash_chunks(
    sha256: Callable[[memoryview], Any],
    work: SimpleQueue[tuple[bytearray, int] | None],
    free: SimpleQueue[bytearray],
    digests: list[bytes],
) -> None:
    """The helper thread of ``FileHasher._digest_threaded``: the SHA-256 of each chunk
    buffer handed over, in order, until None; each buffer goes back to ``free``."""
    while (item := work.get()) is not None:
        chunk, filled = item
        with memoryview(chunk) as view:
            digests.append(sha256(view[:filled]).digest())
        free.put(chunk)


def hash_file(
    path: str | os.PathLike[str],
    *,
    buffer: bytearray | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> tuple[FileKey, FileDigest]:
    """Hash one file in a single pass (whole-file and first-1000-byte SHA-1, and the
    chunk digests).

    Args:
        path: the file; symlinks are followed.
        buffer: a reusable read buffer (``BUFFER_SIZE`` is the measured best); a new
            one is made if omitted.
        on_bytes: called with the number of bytes read since the last call, about
            every 16 MiB and at the end (for progress bars).

    Returns:
        ``(key, digest)``: the key from ``fstat`` of the open file, and the digests.

    Raises:
        FileChangedError: if the size or mtime changed while reading.
        OSError: if the file cannot be opened or read, or is not a regular file.
    """
    return FileHasher(buffer).hash_path(path, on_bytes)
