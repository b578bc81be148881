"""The share's persistent file index: share-relative path -> stat identity and SHA-1s.

Strategy
--------
A share must answer "which SHA-1 is this file?" (ETag, readdir ``prv``, ``/ID/prv/PATH``)
and "which file has this SHA-1?" (``/sha1/SHA1``) without reading files, and a restart
must not re-read unchanged files (docs/reliability.md). So every hashed file is recorded
with the identity of the version that was hashed:

* ``FileStamp`` = ``(device, inode, size, mtime_ns, ctime_ns)``. The ctime is in it on
  purpose: it cannot be set from user space and changes on every write, so a same-size
  rewrite whose mtime was restored (``cp -p``, ``rsync -t --inplace``) still shows as a
  change. It costs one re-hash after a ``chmod`` or a rename, a fair price for docs/security.md
  ("a file changed after it was hashed is never served under its old SHA-1").
* An entry is **trusted** only when its stamp was taken before the hash started and its
  newest timestamp is older than the hash start by at least ``racy_window_ns`` (as git
  does for "racily clean" entries): a second write inside the same timestamp tick would
  otherwise leave a stale digest under an unchanged stamp. The indexer re-hashes
  untrusted entries once the window has passed; readers (the HTTP routes, the uplink)
  use trusted entries only. A stamp far in the future (clock skew of a copied dataset)
  cannot be hit again by a later write until the clock gets there, so it is trusted.

Storage: one SQLite table in ``DIR/.kbucket/index.sqlite`` (WAL, one transaction per
batch of changes), mirrored in memory (two dicts) and loaded whole at start: 100,000
files load in ~0.2 s and take ~30 MB, and every lookup is a dict access, so the HTTP
routes never wait on the database. Each entry also keeps the root of its chunk
digests (``kbproto.chunks``); the digest lists themselves (32 KiB per GiB) stay in a
second table, by content SHA-1, and are read from it for ``/ID/sha1/SHA1/chunks``
only (``chunk_list``), off the event loop. Lists of content no file holds any more
are dropped when the index is next opened (a file renamed between two walks keeps
its digests and its list). An entry of an index written before chunk digests has
no root (``chunks_root`` None): the indexer hashes that file once more. A database that
cannot be read is deleted and rebuilt with one warning; if even that fails, the index
lives in memory only.

Threads: one writer at a time (the indexer's worker thread calls ``apply``) and any
number of readers on any thread; the in-memory dicts are guarded by a lock held only
for dict operations, the database by another.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

from kbapps.hashing import RACY_WINDOW_NS
from kbproto.chunks import ChunkSpec
from kbproto.ids import Sha1
from kbproto.prv import Prv

__all__ = (
    "INDEX_FILENAME",
    "FileIndex",
    "FileStamp",
    "IndexEntry",
    "stamp_of",
)

#: The database file inside ``DIR/.kbucket/`` (docs/formats.md §3: "anything else ... yours").
INDEX_FILENAME = "index.sqlite"
#: Shown in warnings instead of the absolute path (docs/security.md: no log line holds one).
_SHOWN_NAME = f".kbucket/{INDEX_FILENAME}"
#: 2 added each entry's ``chunks_root`` and the ``chunk_lists`` table.
_SCHEMA_VERSION = 2
#: Rows per ``executemany`` call inside one transaction: bounds the list built per call.
_WRITE_CHUNK = 10_000


class FileStamp(NamedTuple):
    """The identity of one version of a file, from ``stat`` (see the module notes).

    Attributes:
        device: ``st_dev``.
        inode: ``st_ino``.
        size: ``st_size``.
        mtime_ns: ``st_mtime_ns``.
        ctime_ns: ``st_ctime_ns``.
    """

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int


def stamp_of(st: os.stat_result) -> FileStamp:
    """Return the ``FileStamp`` of a ``stat``/``fstat`` result."""
    return FileStamp(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class IndexEntry(NamedTuple):
    """One indexed file (a NamedTuple: there is one per file, 100,000s of them).

    Attributes:
        path: share-relative POSIX path (``sub/file.dat``), no dot-names.
        device, inode, size, mtime_ns, ctime_ns: the ``FileStamp`` of the version
            hashed, taken before hashing began.
        sha1: SHA-1 of the whole file.
        head_sha1: SHA-1 of its first 1000 bytes (``original_fcs``).
        hashed_ns: wall-clock time (ns) just before the hash started.
        chunks_root: the root of its chunk digests (64 hex digits), or None for an
            entry recorded before they existed (then hashed once more).
    """

    path: str
    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int
    sha1: Sha1
    head_sha1: Sha1
    hashed_ns: int
    chunks_root: str | None = None

    @property
    def stamp(self) -> FileStamp:
        """The stamp of the hashed version."""
        return FileStamp(self.device, self.inode, self.size, self.mtime_ns, self.ctime_ns)

    def racy(self, window_ns: int) -> bool:
        """True while a write in the same timestamp tick could go unnoticed."""
        newest = max(self.mtime_ns, self.ctime_ns)
        return self.hashed_ns - window_ns < newest <= self.hashed_ns + window_ns

    def prv(self) -> Prv:
        """The docs/formats.md §1 ``.prv`` of this file, with its ``chunks`` field when known;
        ``original_path`` is its name only."""
        return Prv(
            sha1=self.sha1,
            size=self.size,
            head_sha1=self.head_sha1,
            path=self.path.rsplit("/", 1)[-1],
            chunks=None if self.chunks_root is None else ChunkSpec(root=self.chunks_root),
        )


class _Unreadable(Exception):
    """The database holds something this module never writes."""


def _i64(value: int) -> int:
    # st_dev and st_ino are unsigned 64-bit; SQLite integers are signed 64-bit.
    return value - (1 << 64) if value >= (1 << 63) else value


def _u64(value: int) -> int:
    return value + (1 << 64) if value < 0 else value


def _row(entry: IndexEntry) -> tuple[object, ...]:
    return (
        entry.path,
        _i64(entry.device),
        _i64(entry.inode),
        entry.size,
        entry.mtime_ns,
        entry.ctime_ns,
        bytes.fromhex(entry.sha1),
        bytes.fromhex(entry.head_sha1),
        entry.hashed_ns,
        None if entry.chunks_root is None else bytes.fromhex(entry.chunks_root),
    )


#: Rows this module would never write; any of them means the file is not ours or was
#: damaged, and the whole index is rebuilt. Checked in SQL (one scan in C), so loading
#: 100,000 rows stays a fraction of a second.
_BAD_ROWS = (
    "SELECT count(*) FROM files WHERE typeof(path) != 'text' OR path = ''"
    " OR substr(path, 1, 1) = '/' OR typeof(dev) != 'integer' OR typeof(ino) != 'integer'"
    " OR typeof(size) != 'integer' OR size < 0 OR typeof(mtime_ns) != 'integer'"
    " OR typeof(ctime_ns) != 'integer' OR typeof(hashed_ns) != 'integer'"
    " OR typeof(sha1) != 'blob' OR length(sha1) != 20"
    " OR typeof(head_sha1) != 'blob' OR length(head_sha1) != 20"
    " OR (chunks_root IS NOT NULL AND (typeof(chunks_root) != 'blob'"
    " OR length(chunks_root) != 32))"
)
_LOAD = (
    "SELECT path, dev, ino, size, mtime_ns, ctime_ns, lower(hex(sha1)),"
    " lower(hex(head_sha1)), hashed_ns, lower(hex(chunks_root)) FROM files"
)
#: Digest lists of content no indexed file holds (dropped when the index is opened).
_DROP_ORPHAN_LISTS = "DELETE FROM chunk_lists WHERE sha1 NOT IN (SELECT sha1 FROM files)"


def _load(db: sqlite3.Connection) -> list[IndexEntry]:
    (bad,) = db.execute(_BAD_ROWS).fetchone()
    if bad:
        raise _Unreadable(f"{bad} malformed rows")
    new = tuple.__new__  # 4x cheaper than the NamedTuple constructor, per row
    entries: list[IndexEntry] = []
    append = entries.append
    for row in db.execute(_LOAD):
        if row[1] < 0 or row[2] < 0:
            row = (row[0], _u64(row[1]), _u64(row[2]), *row[3:])
        if not row[9]:  # hex(NULL) is "": an entry from before chunk digests
            row = (*row[:9], None)
        append(new(IndexEntry, row))
    return entries


class FileIndex:
    """The share's file index, persisted in SQLite and mirrored in memory.

    Args:
        db_path: the database file (``DIR/.kbucket/index.sqlite``); None for an index
            kept in memory only.
        racy_window_ns: see ``IndexEntry.racy``; entries inside it are not trusted.
        on_warning: called with one line if the database had to be rebuilt or given
            up (the index then lives in memory); never raises for a bad database.
    """

    def __init__(
        self,
        db_path: str | os.PathLike[str] | None,
        *,
        racy_window_ns: int = RACY_WINDOW_NS,
        on_warning: Callable[[str], None] | None = None,
    ) -> None:
        self.racy_window_ns = racy_window_ns
        self._warn = on_warning or (lambda message: None)
        self._mem_lock = threading.Lock()
        self._db_lock = threading.Lock()
        self._by_path: dict[str, IndexEntry] = {}
        # sha1 -> paths holding it, as an insertion-ordered set (dict of None).
        self._by_sha1: dict[str, dict[str, None]] = {}
        # Digest lists by SHA-1 while the index lives in memory only (no database).
        self._mem_lists: dict[str, bytes] = {}
        self._db: sqlite3.Connection | None = None
        self.db_path = Path(db_path) if db_path is not None else None
        if self.db_path is not None:
            self._open(self.db_path)

    @classmethod
    def for_share(
        cls,
        kbucket_dir: str | os.PathLike[str],
        *,
        racy_window_ns: int = RACY_WINDOW_NS,
        on_warning: Callable[[str], None] | None = None,
    ) -> FileIndex:
        """Open (or create) the index of the share whose ``.kbucket/`` is given."""
        return cls(
            Path(kbucket_dir) / INDEX_FILENAME,
            racy_window_ns=racy_window_ns,
            on_warning=on_warning,
        )

    # --- opening ----------------------------------------------------------------------

    def _open(self, path: Path) -> None:
        try:
            self._db, rows = self._connect(path)
        except (sqlite3.Error, _Unreadable, OSError) as exc:
            self._warn(f"share index {_SHOWN_NAME} is unreadable ({exc}); rebuilding it")
            for suffix in ("", "-wal", "-shm", "-journal"):
                with contextlib.suppress(OSError):
                    os.unlink(f"{path}{suffix}")
            try:
                self._db, rows = self._connect(path)
            except (sqlite3.Error, _Unreadable, OSError) as again:
                self._warn(
                    f"share index {_SHOWN_NAME} cannot be created ({again});"
                    " keeping the index in memory (files are re-hashed after a restart)"
                )
                self._db = None
                return
        by_path = self._by_path
        by_sha1 = self._by_sha1
        for entry in rows:  # paths are unique (primary key): no old entries to drop
            by_path[entry.path] = entry
            by_sha1.setdefault(entry.sha1, {})[entry.path] = None

    @staticmethod
    def _connect(path: Path) -> tuple[sqlite3.Connection, list[IndexEntry]]:
        db = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
        try:
            # WAL + NORMAL: a crash may lose the last batch (re-hashed next start), never
            # corrupt the file.
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            (version,) = db.execute("PRAGMA user_version").fetchone()
            if version != _SCHEMA_VERSION:
                db.execute("BEGIN IMMEDIATE")
                if version == 1:
                    # Keep the digests: each file is hashed once more, for its chunks.
                    db.execute("ALTER TABLE files ADD COLUMN chunks_root BLOB")
                else:
                    db.execute("DROP TABLE IF EXISTS files")
                    db.execute(
                        "CREATE TABLE files (path TEXT PRIMARY KEY NOT NULL,"
                        " dev INTEGER NOT NULL, ino INTEGER NOT NULL, size INTEGER NOT NULL,"
                        " mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL,"
                        " sha1 BLOB NOT NULL, head_sha1 BLOB NOT NULL,"
                        " hashed_ns INTEGER NOT NULL, chunks_root BLOB) WITHOUT ROWID"
                    )
                db.execute("DROP TABLE IF EXISTS chunk_lists")
                db.execute(
                    "CREATE TABLE chunk_lists (sha1 BLOB PRIMARY KEY NOT NULL,"
                    " digests BLOB NOT NULL) WITHOUT ROWID"
                )
                db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
                db.execute("COMMIT")
            rows = _load(db)
            db.execute(_DROP_ORPHAN_LISTS)
        except BaseException:
            db.close()
            raise
        return db, rows

    @property
    def persistent(self) -> bool:
        """True while changes are written to the database."""
        return self._db is not None

    def close(self) -> None:
        """Close the database (the in-memory view stays readable)."""
        with self._db_lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # --- reading (any thread) ---------------------------------------------------------

    def __len__(self) -> int:
        return len(self._by_path)

    def get(self, path: str) -> IndexEntry | None:
        """The entry at share-relative ``path``, trusted or not, or None."""
        return self._by_path.get(path)

    def entries(self) -> list[IndexEntry]:
        """A snapshot of every entry."""
        with self._mem_lock:
            return list(self._by_path.values())

    def paths_for(self, sha1: str) -> tuple[str, ...]:
        """The paths whose recorded SHA-1 is ``sha1`` (trusted or not), oldest first."""
        with self._mem_lock:
            paths = self._by_sha1.get(sha1)
            return tuple(paths) if paths else ()

    def trusted(self, entry: IndexEntry) -> bool:
        """True if ``entry`` is outside the racy window (see the module notes)."""
        return not entry.racy(self.racy_window_ns)

    def current(self, path: str, st: os.stat_result) -> IndexEntry | None:
        """The entry at ``path`` if it is trusted and ``st`` is the version hashed.

        This is the check every SHA-1 a share hands out goes through (docs/security.md).
        """
        entry = self._by_path.get(path)
        if entry is None or entry.stamp != stamp_of(st) or not self.trusted(entry):
            return None
        return entry

    def chunk_list(self, sha1: str) -> bytes | None:
        """The digest list stored for content ``sha1`` (``kbproto.chunks``), or None.

        Reads the database (a list is up to 32 KiB per GiB): call it off the event
        loop. The list is as computed while indexing; a reader checks it against the
        root of its own ``.prv`` (``kbproto.chunks.DigestList.check``).
        """
        if sha1 not in self._by_sha1:
            return None
        with self._db_lock:
            if self._db is None:
                return self._mem_lists.get(sha1)
            try:
                row = self._db.execute(
                    "SELECT digests FROM chunk_lists WHERE sha1 = ?", (bytes.fromhex(sha1),)
                ).fetchone()
            except (sqlite3.Error, ValueError):
                return None
        return None if row is None else bytes(row[0])

    def prv_for(self, path: str) -> Prv | None:
        """The ``.prv`` of the file indexed at ``path`` (name only as ``original_path``).

        No ``stat`` is done here: callers serving it check ``current`` first.
        """
        entry = self._by_path.get(path)
        return entry.prv() if entry is not None else None

    # --- writing (one thread at a time) -----------------------------------------------

    def apply(
        self,
        puts: Iterable[IndexEntry] = (),
        removes: Iterable[str] = (),
        lists: Mapping[str, bytes] | None = None,
    ) -> None:
        """Record new or changed entries and forget paths, in one transaction.

        Args:
            puts: entries to record (replacing those at the same paths).
            removes: paths to forget.
            lists: digest lists of the content of ``puts``, by SHA-1.

        A database failure is reported once through ``on_warning``; the index then
        carries on in memory only.
        """
        put_list = list(puts)
        remove_list = [p for p in removes if p in self._by_path]
        list_rows = dict(lists or {})
        if not put_list and not remove_list:
            return
        with self._db_lock:
            if self._db is None:
                self._mem_lists.update(list_rows)
            else:
                try:
                    self._write(self._db, put_list, remove_list, list_rows)
                except sqlite3.Error as exc:
                    self._warn(
                        f"share index {_SHOWN_NAME} cannot be written ({exc});"
                        " keeping the index in memory (files are re-hashed after a restart)"
                    )
                    with contextlib.suppress(sqlite3.Error):
                        self._db.close()
                    self._db = None
                    self._mem_lists.update(list_rows)
        with self._mem_lock:
            for path in remove_list:
                self._remove_mem(path)
            for entry in put_list:
                self._put_mem(entry)

    @staticmethod
    def _write(
        db: sqlite3.Connection,
        puts: list[IndexEntry],
        removes: list[str],
        lists: dict[str, bytes],
    ) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            for start in range(0, len(removes), _WRITE_CHUNK):
                db.executemany(
                    "DELETE FROM files WHERE path = ?",
                    [(p,) for p in removes[start : start + _WRITE_CHUNK]],
                )
            for start in range(0, len(puts), _WRITE_CHUNK):
                db.executemany(
                    "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [_row(e) for e in puts[start : start + _WRITE_CHUNK]],
                )
            db.executemany(
                "INSERT OR REPLACE INTO chunk_lists VALUES (?, ?)",
                [(bytes.fromhex(sha1), digests) for sha1, digests in lists.items()],
            )
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _put_mem(self, entry: IndexEntry) -> None:
        old = self._by_path.get(entry.path)
        if old is not None:
            self._forget_sha1(old)
        self._by_path[entry.path] = entry
        self._by_sha1.setdefault(entry.sha1, {})[entry.path] = None

    def _remove_mem(self, path: str) -> None:
        old = self._by_path.pop(path, None)
        if old is not None:
            self._forget_sha1(old)

    def _forget_sha1(self, entry: IndexEntry) -> None:
        paths = self._by_sha1.get(entry.sha1)
        if paths is not None:
            paths.pop(entry.path, None)
            if not paths:
                del self._by_sha1[entry.sha1]
                self._mem_lists.pop(entry.sha1, None)
