"""The fragment files of the hash cache: per scanned tree, one checksummed file of
opaque per-directory parts (``kbapps.prvbuild`` keeps each directory's ``.prvdir``
text, its files' keys and their digests there).

Strategy
--------
The fragments (the finished ``.prvdir`` text, ~350 bytes per file) live in one file
per tree beside the hash cache's database, not in it: SQLite took ~0.1 s to store the
7 MB of a 20,000-file tree, one write of a file takes a few ms. A checksum (CRC-32: it
guards against torn writes, not attacks; the directory is the user's own, mode 0700)
makes a damaged file read as absent, and a lost one costs a re-hash of that tree at
worst, never a wrong digest; so no fsync. A file is written beside its final name and
renamed over it (``FragmentWriter``), a directory at a time as they are made.

The format (version 6, which added each file's chunk root to the digests part): the
magic, the CRC-32 of everything after the head, the size of the index, then every
directory's three parts in index order, then the index, a marshal dump of ``(scope,
[(relpath, (len keys, len fragment, len digests))])``, last, so that the parts can be
written as they are made.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import struct
import zlib
from collections.abc import Iterable

__all__ = (
    "FRAGMENT_DIR",
    "Buffer",
    "FragmentStore",
    "FragmentWriter",
    "Fragments",
)

#: Bytes, or a read-only view of some (what ``FragmentStore.load`` returns).
Buffer = bytes | memoryview
#: A tree's fragments: ``relpath -> (keys, fragment, digests)``.
Fragments = dict[str, tuple[Buffer, Buffer, Buffer]]
#: Directory, beside the hash cache's database, of the per-tree fragment files.
FRAGMENT_DIR = "prvdir-fragments"
#: First bytes of a fragment file (older formats read as absent: one re-hash).
_MAGIC = b"kbucket-fragments-6\n"
#: The head: the magic, the CRC-32 of everything after the head, the index's size.
_HEAD = struct.Struct(f"!{len(_MAGIC)}sII")


class FragmentWriter:
    """Writes one tree's fragment file a directory at a time: beside the target,
    renamed over it by ``commit``; ``abort`` (or a failed ``add``) leaves the old
    file as it was.

    Args:
        scope: the tree (its real path), kept in the file.
        target: the file to replace.

    Raises:
        OSError: from the constructor, ``add`` or ``commit``, if the file cannot be
            written.
    """

    def __init__(self, scope: str, target: str) -> None:
        self._scope = scope
        self._target = target
        self._tmp: str | None = f"{target}.{os.getpid()}.tmp"
        self._index: list[tuple[str, tuple[int, int, int]]] = []
        self._crc = 0
        # The head is written last, over this placeholder (its CRC covers the rest).
        self._handle = open(self._tmp, "wb")  # noqa: SIM115 - closed by commit/abort
        try:
            self._handle.write(bytes(_HEAD.size))
        except OSError:
            self.abort()
            raise

    def identity(self) -> tuple[int, int]:
        """``(st_dev, st_ino)`` of the file being written."""
        st = os.fstat(self._handle.fileno())
        return st.st_dev, st.st_ino

    def add(self, relpath: str, keys: Buffer, fragment: Buffer, digests: Buffer) -> None:
        """Append one directory's parts (opaque to this class)."""
        if self._tmp is None:
            raise OSError("fragment file already committed or aborted")
        try:
            self._handle.writelines((keys, fragment, digests))
        except OSError:
            self.abort()
            raise
        for piece in (keys, fragment, digests):
            self._crc = zlib.crc32(piece, self._crc)
        self._index.append((relpath, (len(keys), len(fragment), len(digests))))

    def commit(self) -> int:
        """Write the index and the head and put the file in place; return the
        number of directories."""
        if self._tmp is None:
            raise OSError("fragment file already committed or aborted")
        try:
            index_blob = marshal.dumps((self._scope, self._index))
            crc = zlib.crc32(index_blob, self._crc)
            self._handle.write(index_blob)
            self._handle.seek(0)
            self._handle.write(_HEAD.pack(_MAGIC, crc, len(index_blob)))
            self._handle.close()
            os.replace(self._tmp, self._target)
        except OSError:
            self.abort()
            raise
        self._tmp = None
        return len(self._index)

    def abort(self) -> None:
        """Drop what was written (no effect after ``commit``)."""
        if self._tmp is None:
            return
        tmp, self._tmp = self._tmp, None
        with contextlib.suppress(OSError):
            self._handle.close()
        with contextlib.suppress(OSError):
            os.unlink(tmp)


class FragmentStore:
    """The fragment files in one directory (``HashCache.fragments``: the
    ``FRAGMENT_DIR`` beside the database), one per scanned tree.

    Args:
        directory: where the files are; created (mode 0700) when first written.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def _file(self, scope: str) -> str:
        # 64 bits of checksums name the file (no hashlib to import); the file holds
        # its scope, so two trees whose names collide only evict each other.
        text = scope.encode("utf-8", "surrogatepass")
        return os.path.join(self.directory, f"{zlib.crc32(text):08x}{zlib.adler32(text):08x}.bin")

    def load(self, scope: str) -> Fragments:
        """Return the directory fragments stored for ``scope`` (a tree's real path):
        ``relpath -> (keys, fragment, digests)`` as given to ``store`` (as read-only
        buffers over the file, which compare equal to the bytes), or an empty dict if
        there are none or the file is damaged (its checksum is checked, so a torn
        write reads as none)."""
        # One read into one buffer, and views into it: a cached run pastes these bytes
        # into its output without another copy. (Not mmap: a file truncated by
        # someone else while mapped would kill the process with SIGBUS.)
        try:
            with open(self._file(scope), "rb", buffering=0) as handle:
                data = memoryview(handle.read())
        except OSError:
            return {}
        head = _HEAD.size
        if len(data) < head or data[: len(_MAGIC)] != _MAGIC:
            return {}
        _, crc, index_size = _HEAD.unpack_from(data)
        end = len(data) - index_size
        if end < head or zlib.crc32(data[head:]) != crc:
            return {}
        try:
            stored_scope, index = marshal.loads(data[end:])
            if stored_scope != scope:
                return {}
            table: Fragments = {}
            at = head
            for relpath, sizes in index:
                parts = []
                for size in sizes:
                    parts.append(data[at : at + size])
                    at += size
                table[relpath] = (parts[0], parts[1], parts[2])
        except (EOFError, ValueError, TypeError):  # not what we write
            return {}
        return table if at == end else {}

    def store(self, scope: str, rows: Iterable[tuple[str, Buffer, Buffer, Buffer]]) -> int:
        """Replace the fragments of ``scope`` with ``rows`` (``(relpath, keys,
        fragment, digests)``, opaque to this class); return how many. The caller keeps
        out what must not be trusted later (files inside the racy window).

        Raises:
            OSError: if the file cannot be written.
        """
        writer = self.writer(scope)
        try:
            for row in rows:
                writer.add(*row)
            return writer.commit()
        finally:
            writer.abort()  # (after a commit: nothing left to do)

    def writer(self, scope: str) -> FragmentWriter:
        """Return a ``FragmentWriter`` that replaces the fragments of ``scope`` once
        committed (``store`` a directory at a time, as they are made).

        Raises:
            OSError: if the file cannot be created.
        """
        with contextlib.suppress(FileExistsError):
            os.mkdir(self.directory, mode=0o700)
        return FragmentWriter(scope, self._file(scope))
