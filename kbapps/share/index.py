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
batch of changes), with an index on the SHA-1 column. Rows are **not** mirrored in
memory: a share of a million files would need ~1 KB of Python objects per file for
that (docs/benchmarks.md, "A lean share"). Lookups are point queries (a few
microseconds, from SQLite's page cache) on a small pool of reader connections, so a
route never waits for the writer's transaction (WAL readers see the last commit);
``entries`` streams the rows in path order, a page at a time (``stamps`` the same
without the digests, for a walk to compare). Opening an index reads
no rows (a check of their shape runs in SQL), so a restart of a million-file share
is ready in about a second. In memory are only the counts of files and of distinct
content. Each entry also keeps the root of its chunk
digests (``kbproto.chunks``); the digest lists themselves (32 KiB per GiB) stay in a
second table, by content SHA-1, and are read from it for ``/ID/sha1/SHA1/chunks``
only (``chunk_list``), off the event loop. Lists of content no file holds any more
are dropped when the index is next opened (a file renamed between two walks keeps
its digests and its list). An entry of an index written before chunk digests has
no root (``chunks_root`` None): the indexer hashes that file once more. A database that
cannot be read is deleted and rebuilt with one warning; if even that fails, or a
write fails later, the index lives in an in-memory SQLite database (copied from the
file when it can still be read).

For the share's protocol core the index is also its ``kbproto.share.ShareFiles``
store (``representative``, ``content_keys``, ``content_count``): the core keeps no
copy of the files, and reads a content id's representative (the smallest trusted
path holding it) when it reports it to its hub or answers a find.

Threads: one writer at a time (the indexer's worker thread calls ``apply``) and any
number of readers on any thread, each on a reader connection of its own while it
reads (an in-memory index shares its one connection under a lock).

Why one module of some 670 lines: its one job is the index's SQLite database, and its
parts are bound by the schema: the row format, opening and checking a database, the
reader pool, the queries and the writer's transaction all read the same columns, and
the fall-back to memory reopens every one of them. The walk and the hashing that feed
it live in ``kbapps.share.indexer``.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from kbapps.hashing import RACY_WINDOW_NS
from kbproto.chunks import ChunkSpec
from kbproto.ids import Sha1
from kbproto.prv import Prv

__all__ = (
    "INDEX_FILENAME",
    "FileIndex",
    "FileStamp",
    "IndexEntry",
    "IndexStamp",
    "stamp_of",
)

T = TypeVar("T")

#: The database file inside ``DIR/.kbucket/`` (docs/formats.md §3: "anything else ... yours").
INDEX_FILENAME = "index.sqlite"
#: Shown in warnings instead of the absolute path (docs/security.md: no log line holds one).
_SHOWN_NAME = f".kbucket/{INDEX_FILENAME}"
#: 2 added each entry's ``chunks_root`` and the ``chunk_lists`` table.
_SCHEMA_VERSION = 2
#: Rows per ``executemany`` call inside one transaction: bounds the list built per call.
_WRITE_CHUNK = 10_000
#: Parameters per ``IN (...)`` list (SQLite allows 32,766).
_IN_CHUNK = 500
#: Rows per page when streaming the index in path order, or its content ids.
_PAGE = 2048
#: Idle reader connections kept for the next lookup.
_MAX_IDLE_READERS = 8


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


#: What ``FileIndex.stamps`` yields per entry, a plain tuple: ``(path, device, inode,
#: size, mtime_ns, ctime_ns, hashed_ns, has chunks_root)``; ``[1:6]`` equals the
#: entry's ``FileStamp``.
IndexStamp = tuple[str, int, int, int, int, int, int, int]


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
_COLUMNS = (
    "path, dev, ino, size, mtime_ns, ctime_ns, lower(hex(sha1)),"
    " lower(hex(head_sha1)), hashed_ns, lower(hex(chunks_root))"
)
#: ``IndexStamp``'s columns.
_STAMP_COLUMNS = "path, dev, ino, size, mtime_ns, ctime_ns, hashed_ns, chunks_root IS NOT NULL"
#: Digest lists of content no indexed file holds (dropped when the index is opened).
_DROP_ORPHAN_LISTS = "DELETE FROM chunk_lists WHERE sha1 NOT IN (SELECT sha1 FROM files)"
_CREATE_FILES = (
    "CREATE TABLE files (path TEXT PRIMARY KEY NOT NULL,"
    " dev INTEGER NOT NULL, ino INTEGER NOT NULL, size INTEGER NOT NULL,"
    " mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL,"
    " sha1 BLOB NOT NULL, head_sha1 BLOB NOT NULL,"
    " hashed_ns INTEGER NOT NULL, chunks_root BLOB) WITHOUT ROWID"
)
_CREATE_LISTS = (
    "CREATE TABLE chunk_lists (sha1 BLOB PRIMARY KEY NOT NULL, digests BLOB NOT NULL) WITHOUT ROWID"
)
#: Content ids by SHA-1 (``paths_for``, ``representative``, ``content_keys``).
_CREATE_SHA1_INDEX = "CREATE INDEX IF NOT EXISTS files_sha1 ON files (sha1, path)"
#: A row is trusted (outside the racy window, ``IndexEntry.racy``); one parameter:
#: the window in ns.
_TRUSTED_SQL = (
    "NOT (hashed_ns - :w < max(mtime_ns, ctime_ns) AND max(mtime_ns, ctime_ns) <= hashed_ns + :w)"
)


def _entry(row: tuple[object, ...]) -> IndexEntry:
    if row[1] < 0 or row[2] < 0:  # type: ignore[operator]
        row = (row[0], _u64(row[1]), _u64(row[2]), *row[3:])  # type: ignore[arg-type]
    if not row[9]:  # hex(NULL) is "": an entry from before chunk digests
        row = (*row[:9], None)
    return tuple.__new__(IndexEntry, row)  # 4x cheaper than the NamedTuple constructor


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _present(db: sqlite3.Connection, raws: list[bytes]) -> set[bytes]:
    """The content ids of ``raws`` some row holds."""
    found: set[bytes] = set()
    for part in _chunks(raws, _IN_CHUNK):
        found.update(
            bytes(r[0])
            for r in db.execute(
                f"SELECT DISTINCT sha1 FROM files WHERE sha1 IN ({_marks(len(part))})", part
            )
        )
    return found


def _create(db: sqlite3.Connection) -> None:
    db.execute(_CREATE_FILES)
    db.execute(_CREATE_LISTS)
    db.execute(_CREATE_SHA1_INDEX)


class FileIndex:
    """The share's file index, persisted in SQLite (see the module notes).

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
        self._db_lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._files = 0
        self._contents = 0
        self._db: sqlite3.Connection | None = None
        #: The in-memory database when there is no file (shared, under ``_db_lock``).
        self._mem: sqlite3.Connection | None = None
        self.db_path = Path(db_path) if db_path is not None else None
        if self.db_path is not None:
            self._open(self.db_path)
        if self._db is None:
            self._to_memory(None)

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
            self._db = self._connect(path)
        except (sqlite3.Error, _Unreadable, OSError) as exc:
            self._warn(f"share index {_SHOWN_NAME} is unreadable ({exc}); rebuilding it")
            for suffix in ("", "-wal", "-shm", "-journal"):
                with contextlib.suppress(OSError):
                    os.unlink(f"{path}{suffix}")
            try:
                self._db = self._connect(path)
            except (sqlite3.Error, _Unreadable, OSError) as again:
                self._warn(
                    f"share index {_SHOWN_NAME} cannot be created ({again});"
                    " keeping the index in memory (files are re-hashed after a restart)"
                )
                self._db = None
                return
        self._count(self._db)

    def _count(self, db: sqlite3.Connection) -> None:
        (self._files,) = db.execute("SELECT count(*) FROM files").fetchone()
        (self._contents,) = db.execute("SELECT count(DISTINCT sha1) FROM files").fetchone()

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
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
                    db.execute(_CREATE_FILES)
                db.execute("DROP TABLE IF EXISTS chunk_lists")
                db.execute(_CREATE_LISTS)
                db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
                db.execute("COMMIT")
            (bad,) = db.execute(_BAD_ROWS).fetchone()
            if bad:
                raise _Unreadable(f"{bad} malformed rows")
            # An index written before the SHA-1 index had none: built once, here.
            db.execute(_CREATE_SHA1_INDEX)
            db.execute(_DROP_ORPHAN_LISTS)
        except BaseException:
            db.close()
            raise
        return db

    def _to_memory(self, source: sqlite3.Connection | None) -> None:
        """Carry on in an in-memory database, a copy of ``source`` if it can be read."""
        mem = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        try:
            if source is None:
                raise sqlite3.Error("nothing to copy")
            source.backup(mem)
        except sqlite3.Error:
            mem.close()
            mem = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            _create(mem)
        self._mem = mem
        self._count(mem)
        self._close_readers()

    @property
    def persistent(self) -> bool:
        """True while changes are written to the database."""
        return self._db is not None

    def _close_readers(self) -> None:
        with self._pool_lock:
            idle, self._idle = self._idle, []
        for db in idle:
            db.close()

    def close(self) -> None:
        """Close the database file; the index then reads as empty (in memory)."""
        with self._db_lock:
            if self._db is not None:
                db, self._db = self._db, None
                self._to_memory(None)
                db.close()

    # --- reading (any thread) ---------------------------------------------------------

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        """A connection to read with: a pooled reader of the file, or the memory one."""
        if self._db is None or self.db_path is None:
            with self._db_lock:
                assert self._mem is not None
                yield self._mem
            return
        with self._pool_lock:
            db = self._idle.pop() if self._idle else None
        if db is None:
            db = sqlite3.connect(
                self.db_path, timeout=10.0, isolation_level=None, check_same_thread=False
            )
        try:
            yield db
        finally:
            with self._pool_lock:
                keep = self._db is not None and len(self._idle) < _MAX_IDLE_READERS
                if keep:
                    self._idle.append(db)
            if not keep:
                db.close()

    def _query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
        try:
            with self._reader() as db:
                return db.execute(sql, params).fetchall()
        except sqlite3.Error:
            return []  # an index that cannot be read holds nothing (the writer warns)

    def __len__(self) -> int:
        return self._files

    def get(self, path: str) -> IndexEntry | None:
        """The entry at share-relative ``path``, trusted or not, or None."""
        rows = self._query(f"SELECT {_COLUMNS} FROM files WHERE path = ?", (path,))
        return _entry(rows[0]) if rows else None

    def get_many(self, paths: Sequence[str]) -> dict[str, IndexEntry]:
        """The entries at ``paths`` that are indexed (trusted or not), by path: one
        query per 500 paths (a listing of 10,000 files is 20 queries, not 10,000)."""
        found: dict[str, IndexEntry] = {}
        for part in _chunks(list(paths), _IN_CHUNK):
            rows = self._query(
                f"SELECT {_COLUMNS} FROM files WHERE path IN ({_marks(len(part))})", part
            )
            for row in rows:
                found[row[0]] = _entry(row)
        return found

    def entries(self) -> Iterator[IndexEntry]:
        """Every entry, in path order (byte order of the UTF-8 path), read a page at a
        time (a consistent snapshot only while no ``apply`` runs)."""
        return self.entries_after(None)

    def entries_after(self, path: str | None) -> Iterator[IndexEntry]:
        """The entries whose path sorts after ``path`` (all for None), in path order."""
        while True:
            if path is None:
                rows = self._query(f"SELECT {_COLUMNS} FROM files ORDER BY path LIMIT {_PAGE}")
            else:
                rows = self._query(
                    f"SELECT {_COLUMNS} FROM files WHERE path > ? ORDER BY path LIMIT {_PAGE}",
                    (path,),
                )
            for row in rows:
                yield _entry(row)
            if len(rows) < _PAGE:
                return
            path = rows[-1][0]

    def stamps(self) -> Iterator[IndexStamp]:
        """What a walk compares, for every entry in path order, read a page at a time:
        ``entries`` without the digests (a restart compares a million of these; reading
        them costs a third of whole entries)."""
        path: str | None = None
        while True:
            if path is None:
                rows = self._query(
                    f"SELECT {_STAMP_COLUMNS} FROM files ORDER BY path LIMIT {_PAGE}"
                )
            else:
                rows = self._query(
                    f"SELECT {_STAMP_COLUMNS} FROM files WHERE path > ?"
                    f" ORDER BY path LIMIT {_PAGE}",
                    (path,),
                )
            for row in rows:
                if row[1] < 0 or row[2] < 0:
                    row = (row[0], _u64(row[1]), _u64(row[2]), *row[3:])
                yield row
            if len(rows) < _PAGE:
                return
            path = rows[-1][0]

    def paths_for(self, sha1: str) -> tuple[str, ...]:
        """The paths whose recorded SHA-1 is ``sha1`` (trusted or not), in path order."""
        try:
            raw = bytes.fromhex(sha1)
        except ValueError:
            return ()
        rows = self._query("SELECT path FROM files WHERE sha1 = ? ORDER BY path", (raw,))
        return tuple(row[0] for row in rows)

    def trusted(self, entry: IndexEntry) -> bool:
        """True if ``entry`` is outside the racy window (see the module notes)."""
        return not entry.racy(self.racy_window_ns)

    def trusted_count(self) -> int:
        """Entries outside the racy window (one scan: call it off the event loop)."""
        rows = self._query(
            f"SELECT count(*) FROM files WHERE {_TRUSTED_SQL}", {"w": self.racy_window_ns}
        )
        return int(rows[0][0]) if rows else 0

    def current(self, path: str, st: os.stat_result) -> IndexEntry | None:
        """The entry at ``path`` if it is trusted and ``st`` is the version hashed.

        This is the check every SHA-1 a share hands out goes through (docs/security.md).
        """
        entry = self.get(path)
        if entry is None or entry.stamp != stamp_of(st) or not self.trusted(entry):
            return None
        return entry

    def chunk_list(self, sha1: str) -> bytes | None:
        """The digest list stored for content ``sha1`` (``kbproto.chunks``), or None.

        A list is up to 32 KiB per GiB: call it off the event loop. The list is as
        computed while indexing; a reader checks it against the root of its own
        ``.prv`` (``kbproto.chunks.DigestList.check``).
        """
        try:
            raw = bytes.fromhex(sha1)
        except ValueError:
            return None
        rows = self._query(
            "SELECT digests FROM chunk_lists WHERE sha1 = ?"
            " AND EXISTS (SELECT 1 FROM files WHERE sha1 = ?)",
            (raw, raw),
        )
        return bytes(rows[0][0]) if rows else None

    def prv_for(self, path: str) -> Prv | None:
        """The ``.prv`` of the file indexed at ``path`` (name only as ``original_path``).

        No ``stat`` is done here: callers serving it check ``current`` first.
        """
        entry = self.get(path)
        return entry.prv() if entry is not None else None

    # --- the protocol core's view (``kbproto.share.ShareFiles``) ----------------------

    def representative(self, raw: bytes) -> tuple[str, int] | None:
        """``(path, size)`` of the smallest trusted path holding content ``raw``."""
        rows = self._query(
            f"SELECT path, size FROM files WHERE sha1 = :s AND {_TRUSTED_SQL}"
            " ORDER BY path LIMIT 1",
            {"w": self.racy_window_ns, "s": raw},
        )
        return (rows[0][0], rows[0][1]) if rows else None

    def content_keys(self) -> Iterator[bytes]:
        """Every content id (raw), in byte order, read a page at a time: a full sync
        to the hub holds one page in memory, not a million keys."""
        last = b""
        while True:
            rows = self._query(
                f"SELECT DISTINCT sha1 FROM files WHERE sha1 > ? ORDER BY sha1 LIMIT {_PAGE}",
                (last,),
            )
            for row in rows:
                yield bytes(row[0])
            if len(rows) < _PAGE:
                return
            last = bytes(rows[-1][0])

    @property
    def content_count(self) -> int:
        """Distinct content ids indexed (trusted or not)."""
        return self._contents

    # --- writing (one thread at a time) -----------------------------------------------

    def apply(
        self,
        puts: Iterable[IndexEntry] = (),
        removes: Iterable[str] = (),
        lists: Mapping[str, bytes] | None = None,
    ) -> set[str]:
        """Record new or changed entries and forget paths, in one transaction.

        Args:
            puts: entries to record (replacing those at the same paths).
            removes: paths to forget.
            lists: digest lists of the content of ``puts``, by SHA-1.

        Returns:
            The SHA-1s whose set of paths changed: those of ``puts`` and of the
            entries replaced or removed (what the share's core re-reports).

        A database failure is reported once through ``on_warning``; the index then
        carries on in memory only.
        """
        put_list = list(puts)
        remove_list = list(removes)
        list_rows = dict(lists or {})
        if not put_list and not remove_list:
            return set()
        with self._db_lock:
            if self._db is not None:
                try:
                    return self._write(self._db, put_list, remove_list, list_rows)
                except sqlite3.Error as exc:
                    self._warn(
                        f"share index {_SHOWN_NAME} cannot be written ({exc});"
                        " keeping the index in memory (files are re-hashed after a restart)"
                    )
                    db, self._db = self._db, None
                    copy = self._readable_copy(db)
                    self._to_memory(copy)
                    for conn in (db, copy):  # the same one, or a second to close too
                        if conn is not None:
                            with contextlib.suppress(sqlite3.Error):
                                conn.close()
            assert self._mem is not None
            return self._write(self._mem, put_list, remove_list, list_rows)

    def _readable_copy(self, db: sqlite3.Connection) -> sqlite3.Connection | None:
        """A connection the failed writer's data can still be copied from, if any."""
        try:
            db.execute("SELECT 1").fetchone()
            return db
        except sqlite3.Error:
            pass
        if self.db_path is None:
            return None
        try:
            return sqlite3.connect(self.db_path, check_same_thread=False)
        except sqlite3.Error:
            return None

    def _write(
        self,
        db: sqlite3.Connection,
        puts: list[IndexEntry],
        removes: list[str],
        lists: dict[str, bytes],
    ) -> set[str]:
        db.execute("BEGIN IMMEDIATE")
        try:
            # Old rows at the paths written or removed, and the content they held.
            old: list[bytes] = []
            paths = removes + [e.path for e in puts]
            for names in _chunks(paths, _IN_CHUNK):
                old.extend(
                    bytes(r[0])
                    for r in db.execute(
                        f"DELETE FROM files WHERE path IN ({_marks(len(names))}) RETURNING sha1",
                        names,
                    )
                )
            new = [bytes.fromhex(e.sha1) for e in puts]
            touched = list(set(old).union(new))
            still = _present(db, touched)
            before = still.union(old)
            for part in _chunks(puts, _WRITE_CHUNK):
                db.executemany(
                    "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [_row(e) for e in part],
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
        after = still.union(new)
        self._files += len(puts) - len(old)
        self._contents += len(after) - len(before)
        return {raw.hex() for raw in touched}
