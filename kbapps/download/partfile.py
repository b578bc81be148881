"""``OUT.part`` and its sidecar: a download's bytes on disk, hashed as they are written.

A ``.part`` never exists without its sidecar (``OUT.part.json``: the expected SHA-1 and
size), so a later run knows what it holds: a ``.part`` without a matching sidecar
belongs to other content and is truncated, never resumed. When OUT's name is too long
for these suffixes, the part's name is shortened (``part_name``, ``kbapps.filenames``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from kbapps import output
from kbapps.download import copying, safefs
from kbapps.download.errors import SourceError, WrongBytes
from kbapps.filenames import fitting_name, name_max
from kbproto.prv import FCS_HEAD_BYTES, Prv

__all__ = (
    "DISK_READ",
    "PART_SUFFIX",
    "PartFile",
    "PieceRecord",
    "part_name",
    "resumable_bytes",
    "write_all",
)

#: Sidecar files are small JSON objects (a piece list of a few thousand runs at most);
#: anything bigger is not ours.
_MAX_SIDECAR_BYTES = 64 * 1024
#: Read size when hashing a file from disk: the measured best for SHA-1 (docs/benchmarks.md).
DISK_READ = 64 * 1024
#: What marks a partial file: ``OUT.part``.
PART_SUFFIX = ".part"
#: What marks a part's sidecar: ``OUT.part.json``.
_SIDECAR_SUFFIX = ".json"


def part_name(dir_fd: int, name: str) -> str:
    """The name of the part of the file ``name`` in the directory ``dir_fd``:
    ``name.part``, or a shortened name when that or its sidecar's name would not fit
    the file system (the same for the same ``name``, so a later run finds it)."""
    return fitting_name(name, PART_SUFFIX, name_max(dir_fd), reserve=len(_SIDECAR_SUFFIX))


@dataclass(frozen=True, slots=True)
class PieceRecord:
    """The finished pieces of a part written out of order (its sidecar's record).

    Attributes:
        unit: bytes per unit (the last unit of the file is shorter).
        runs: sorted, disjoint ``(start, end)`` runs of finished units (end exclusive).
    """

    unit: int
    runs: tuple[tuple[int, int], ...]

    def units(self) -> Iterator[int]:
        """Every finished unit."""
        for start, end in self.runs:
            yield from range(start, end)

    def nbytes(self, size: int) -> int:
        """The bytes the finished units hold, for a file of ``size`` bytes."""
        return sum(min(end * self.unit, size) - start * self.unit for start, end in self.runs)

    def within(self, length: int, size: int) -> PieceRecord:
        """The record without the units not wholly inside the first ``length`` bytes of
        a file of ``size`` bytes (a part shorter than its record claims)."""
        runs = []
        for start, end in self.runs:
            while end > start and min(end * self.unit, size) > length:
                end -= 1
            if end > start:
                runs.append((start, end))
        return PieceRecord(self.unit, tuple(runs))


def _piece_record(obj: dict[str, Any], prv: Prv) -> PieceRecord | None:
    """The sidecar's piece record, if it has a well-formed one."""
    unit, runs = obj.get("unit"), obj.get("pieces")
    if type(unit) is not int or unit < 1 or not isinstance(runs, list):
        return None
    units = -(-prv.size // unit)
    out: list[tuple[int, int]] = []
    last = 0
    for run in runs:
        if (
            not isinstance(run, list)
            or len(run) != 2
            or not all(type(v) is int for v in run)
            or not last <= run[0] < run[1] <= units
        ):
            return None
        out.append((run[0], run[1]))
        last = run[1]
    return PieceRecord(unit, tuple(out))


def _read_sidecar(dir_fd: int, sidecar: str, prv: Prv) -> dict[str, Any] | None:
    """The sidecar ``sidecar`` in ``dir_fd`` when it names ``prv``'s content."""
    try:
        fd = safefs.open_readable(dir_fd, sidecar)
        if fd is None:
            return None
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(_MAX_SIDECAR_BYTES + 1)
        obj = json.loads(data)
    except (OSError, ValueError, RecursionError):
        return None
    if isinstance(obj, dict) and obj.get("sha1") == prv.sha1 and obj.get("size") == prv.size:
        return obj
    return None


def resumable_bytes(dir_fd: int, name: str, prv: Prv) -> int:
    """How many bytes of the part ``name`` in ``dir_fd`` a run would resume from: when it
    is a plain file that its sidecar says holds ``prv``'s content and it is not longer
    than that, its size, or the bytes of the pieces its sidecar lists as finished; else
    0. Nothing is written or followed."""
    st = safefs.lstat_at(dir_fd, name)
    if st is None or not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
        return 0
    if not 0 < st.st_size <= prv.size:
        return 0
    obj = _read_sidecar(dir_fd, name + _SIDECAR_SUFFIX, prv)
    if obj is None:
        return 0
    record = _piece_record(obj, prv)
    if record is not None:
        return record.within(st.st_size, prv.size).nbytes(prv.size)
    return st.st_size


def write_all(fd: int, chunks: Sequence[bytes | memoryview]) -> None:
    """Write every byte of ``chunks`` to ``fd`` (``writev``, short writes continued)."""
    views = [memoryview(c) for c in chunks if len(c)]
    while views:
        # writev: one system call per batch (IOV_MAX is 1024 on Linux).
        written = os.writev(fd, views[:1024])
        while written and views:
            first = views[0]
            if written >= len(first):
                written -= len(first)
                views.pop(0)
            else:
                views[0] = first[written:]
                written = 0


class PartFile:
    """A download's bytes on disk and their sidecar, appended in order, hashed as written.

    The part is the name ``name`` in the open directory ``dir_fd`` (borrowed, not
    owned), reached and written only as ``kbapps.download.safefs`` allows: never via a
    symlink, never a file with other hard links. ``PartFile.temporary`` makes one with
    an unpredictable name and no sidecar (a copy being made, an empty file).

    Thread use: ``write_batch``/``rehash``/``copy_from`` run in a worker thread, one
    call at a time; everything else on the event loop between those calls.
    """

    def __init__(self, dir_fd: int, name: str, label: str, prv: Prv) -> None:
        self.dir_fd = dir_fd
        self.name = name
        self.label = label
        self.sidecar: str | None = name + _SIDECAR_SUFFIX
        self.prv = prv
        self.fd = -1
        self.offset = 0
        self._whole = hashlib.sha1()
        self._head = hashlib.sha1()
        self._head_len = min(FCS_HEAD_BYTES, prv.size)
        #: The finished pieces of a part written out of order (``open``/``save_pieces``).
        self.pieces: PieceRecord | None = None

    @classmethod
    def temporary(cls, dir_fd: int, stem: str, label: str, prv: Prv) -> PartFile:
        """A new, empty part with an unpredictable name (``O_EXCL``) and no sidecar.

        Raises:
            OSError: it cannot be created.
        """
        fd, name = safefs.create_temp(dir_fd, stem)
        part = cls(dir_fd, name, label, prv)
        part.sidecar = None
        part.fd = fd
        return part

    # -- opening ---------------------------------------------------------------------

    def open(self) -> bool:
        """Open (creating) the part; return True if its existing prefix may be resumed.

        A part is resumable only when its sidecar names this content and it is not
        longer than the content; anything else is truncated and the sidecar rewritten.

        Raises:
            UnsafeEntry: the part is a symlink, not a regular file or hard-linked
                elsewhere (refused before anything is written).
            OSError: it cannot be opened or created.
        """
        st = safefs.lstat_at(self.dir_fd, self.name)
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise safefs.UnsafeEntry(self.label, safefs.describe(st), "write")
        if st is not None and st.st_nlink > 1:
            raise safefs.UnsafeEntry(self.label, "a file with other hard links", "write")
        assert self.sidecar is not None
        found = _read_sidecar(self.dir_fd, self.sidecar, self.prv)
        if found is None:
            # The sidecar first: a .part never exists without saying what it holds.
            self._write_sidecar()
        self.fd = safefs.open_writable(self.dir_fd, self.name, self.label)
        size = os.fstat(self.fd).st_size
        if found is not None and 0 < size <= self.prv.size:
            record = _piece_record(found, self.prv)
            self.pieces = record.within(size, self.prv.size) if record is not None else None
            return True
        self.reset()
        return False

    def save_pieces(self, record: PieceRecord | None) -> None:
        """Record the finished pieces in the sidecar (None: the part is a prefix again).

        The record is written to a new temporary file and renamed over the sidecar, so
        a crash leaves the old record or the new one. A record too long for a sidecar
        keeps its first runs (the units of the others are fetched again).
        """
        if record is not None:
            while len(record.runs) > 1 and 24 * len(record.runs) > _MAX_SIDECAR_BYTES - 256:
                record = PieceRecord(record.unit, record.runs[: len(record.runs) // 2])
        self.pieces = record
        self._write_sidecar()

    def _write_sidecar(self) -> None:
        assert self.sidecar is not None
        obj: dict[str, Any] = {"sha1": self.prv.sha1, "size": self.prv.size}
        if self.pieces is not None:
            obj["unit"] = self.pieces.unit
            obj["pieces"] = [list(run) for run in self.pieces.runs]
        data = json.dumps(obj, separators=(",", ":")).encode()
        fd, tmp = safefs.create_temp(self.dir_fd, self.sidecar)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            # A rename replaces whatever is at the sidecar's name, a symlink included,
            # and writes nothing through it.
            os.replace(tmp, self.sidecar, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
        except BaseException:
            safefs.unlink_at(self.dir_fd, tmp)
            raise

    def rehash(self) -> int:
        """Hash the bytes already in the part (bounded memory); return how many.

        Raises:
            WrongBytes: the first 1000 bytes contradict ``original_fcs``.
        """
        size = os.fstat(self.fd).st_size
        buffer = bytearray(DISK_READ)
        view = memoryview(buffer)
        os.lseek(self.fd, 0, os.SEEK_SET)
        done = 0
        while done < size:
            n = os.readv(self.fd, (buffer,))
            if not n:
                break
            n = min(n, size - done)
            self._hash(view[:n])
            done += n
        # Anything past what we hashed (a file that grew meanwhile) is dropped.
        os.ftruncate(self.fd, done)
        os.lseek(self.fd, done, os.SEEK_SET)
        return done

    def reset(self) -> None:
        """Forget every byte: truncate the part and restart the hashes."""
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)
        self.offset = 0
        self._whole = hashlib.sha1()
        self._head = hashlib.sha1()
        if self.pieces is not None:
            self.save_pieces(None)

    # -- appending -------------------------------------------------------------------

    def _hash(self, chunk: bytes | memoryview) -> None:
        if self.offset < self._head_len:
            take = min(len(chunk), self._head_len - self.offset)
            self._head.update(chunk[:take])
            if (
                self.offset + take == self._head_len
                and self._head.hexdigest() != self.prv.head_sha1
            ):
                raise WrongBytes(
                    f"the first {output.counted(self._head_len, 'byte')} do not match "
                    "the .prv's original_fcs"
                )
        self._whole.update(chunk)
        self.offset += len(chunk)

    def write_batch(self, chunks: Sequence[bytes | memoryview]) -> int:
        """Hash and append ``chunks``; return their total length.

        Raises:
            WrongBytes: a byte past the expected size, or a wrong first 1000 bytes.
            OSError: the write failed (disk full...).
        """
        total = sum(len(c) for c in chunks)
        if self.offset + total > self.prv.size:
            expected = output.counted(self.prv.size, "byte")
            raise SourceError(f"sent more than the {expected} expected")
        for chunk in chunks:
            self._hash(chunk)
        write_all(self.fd, chunks)
        return total

    def copy_from(self, source_fd: int) -> bool:
        """Replace the part with the bytes of the open file ``source_fd``, hashing them.

        A reflink where the file system has them (then the part is hashed by reading
        it), else a copy through user space hashed on the way. Returns True if the
        bytes verify (the part is then complete); the caller closes ``source_fd``.
        """
        self.reset()
        try:
            if copying.clone(source_fd, self.fd):
                self.rehash()
            else:
                os.lseek(source_fd, 0, os.SEEK_SET)
                buffer = bytearray(1024 * 1024)
                view = memoryview(buffer)
                while True:
                    n = os.readv(source_fd, (buffer,))
                    if not n:
                        break
                    self.write_batch([view[:n]])
        except (SourceError, OSError):
            self.reset()
            return False
        if self.verified():
            return True
        self.reset()
        return False

    # -- finishing -------------------------------------------------------------------

    def verified(self) -> bool:
        """True when exactly ``size`` bytes hashing to ``sha1`` are in the part."""
        return self.offset == self.prv.size and self._whole.hexdigest() == self.prv.sha1

    def digest(self) -> str:
        """The SHA-1 of the bytes so far."""
        return self._whole.hexdigest()

    def install(self, dir_fd: int, name: str, *, replace: bool) -> None:
        """Move the verified part to ``name`` in ``dir_fd`` and drop the sidecar.

        See ``safefs.install`` for ``replace``; the part stays (complete, resumable) if
        the move fails.

        Raises:
            FileExistsError: ``name`` exists and ``replace`` is false.
            OSError: the move failed.
        """
        self.close()
        safefs.install(self.dir_fd, self.name, dir_fd, name, replace=replace)
        if self.sidecar is not None:
            safefs.unlink_at(self.dir_fd, self.sidecar)

    def bytes_on_disk(self) -> int:
        """The part's size on disk now (0 when it is not open)."""
        return os.fstat(self.fd).st_size if self.fd >= 0 else 0

    def close(self) -> None:
        """Close the file descriptor (the part and sidecar stay for a later resume)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def discard(self) -> None:
        """Close and delete the part and its sidecar."""
        self.close()
        for name in (self.name, self.sidecar):
            if name is not None:
                with contextlib.suppress(OSError):
                    safefs.unlink_at(self.dir_fd, name)
