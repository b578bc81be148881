"""The hash cache: a SQLite table of known digests, keyed by file identity.

Strategy
--------
A table maps ``(device, inode)`` to ``(size, mtime_ns, sha1, head_sha1, chunks)`` (the
cache key of ``kb-prv-create``, README "Commands"; ``chunks`` is the file's digest
list, ``kbproto.chunks``). A lookup hits only if size and mtime also match, so an
edited file is re-hashed, and only if the row has its digest list (a row stored before
lists existed is a miss: each such file is re-hashed once); keying rows by
``(device, inode)`` means a file rewritten many times keeps one row. A file modified
less than ``RACY_WINDOW_NS`` before it was read is hashed but not cached: a second
write within the same mtime tick (1-2 s on some file systems) could otherwise leave a
stale digest under an unchanged key.

The database is opened only when first used if asked (``lazy=True``): a
``kb-prv-create`` of a tree of small files may need it for nothing (their digests go
to the tree's fragment file, ``HashCache.fragments``). ``sqlite3`` (with ``datetime``)
is imported then too, not with this module (~5 ms of start-up).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, cast

from kbapps.hashing.digest import FileDigest, FileKey
from kbapps.hashing.fragments import FRAGMENT_DIR, FragmentStore

if TYPE_CHECKING:
    import sqlite3

    from kbproto.ids import Sha1

__all__ = (
    "HASH_CACHE_FILENAME",
    "RACY_WINDOW_NS",
    "HashCache",
    "RawKey",
    "is_database_error",
)

#: A file whose mtime is this close to the time it was hashed is not cached.
RACY_WINDOW_NS = 2_000_000_000
#: Name of the per-user cache database inside ``kbapps.cachedir.user_cache_dir()``.
HASH_CACHE_FILENAME = "hashes.sqlite3"
#: A ``FileKey`` as a plain tuple ``(dev, ino, size, mtime_ns)``, for hot loops.
RawKey = tuple[int, int, int, int]

#: 2 added a ``dir_files`` table; 3 moved those fragments out to files
#: (``kbapps.hashing.fragments``); 4 added the ``chunks`` column (digest lists).
_SCHEMA_VERSION = 4
#: SQLite allows 32766 host parameters; 500 keeps each statement small.
_LOOKUP_CHUNK = 500


def is_database_error(exc: BaseException) -> bool:
    """Return whether ``exc`` is the database's (``sqlite3.Error``).

    For ``except Exception`` clauses that keep going without the cache: naming
    ``sqlite3.Error`` there would import sqlite3 in every run that never opens it. No
    such error can exist before sqlite3 is imported.
    """
    sqlite3 = sys.modules.get("sqlite3")
    return sqlite3 is not None and isinstance(exc, sqlite3.Error)


def _i64(value: int) -> int:
    # st_dev and st_ino are unsigned 64-bit; SQLite integers are signed 64-bit.
    return value - (1 << 64) if value >= (1 << 63) else value


class HashCache:
    """A SQLite table of known digests keyed by ``FileKey``.

    Safe for several processes at once (WAL journal, busy timeout). Use one instance
    per thread (a forked worker opens its own from ``path``). Entries are replaced
    per ``(device, inode)``, so the table holds at most one row per file ever hashed.

    Args:
        path: the database file; created with its parent directory if missing.
        racy_window_ns: entries whose mtime is closer than this to the time they are
            stored are not stored (see the module notes).
        lazy: open the database only when first needed (then the errors below come
            from that first call instead).

    Attributes:
        path: the database file.
        racy_window_ns: as given.
        fragments: the per-tree fragment files, in ``FRAGMENT_DIR`` beside the
            database.

    Raises:
        sqlite3.Error: if the database cannot be opened or is not a database.
        OSError: if its directory cannot be created.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        racy_window_ns: int = RACY_WINDOW_NS,
        lazy: bool = False,
    ) -> None:
        # A string, not a Path: pathlib costs a few ms of kb-prv-create's start-up.
        self.path = os.fspath(path)
        self.racy_window_ns = racy_window_ns
        directory = os.path.dirname(self.path) or "."
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.fragments = FragmentStore(os.path.join(directory, FRAGMENT_DIR))
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        if not lazy:
            self._connect()

    def _connect(self) -> sqlite3.Connection:
        # Opened (or created, ~10 ms with its schema) when first used if lazy.
        if self._conn is None:
            import sqlite3  # here: see the module notes (start-up)

            if self._closed:
                raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
            db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
            try:
                self._setup(db)
            except BaseException:
                db.close()
                raise
            self._conn = db
        return self._conn

    def _absent(self) -> bool:
        # Lazy, and the database was never created: nothing stored, and reading must
        # not create it.
        return self._conn is None and not self._closed and not os.path.exists(self.path)

    def _setup(self, db: sqlite3.Connection) -> None:
        # WAL: readers never block the writer; NORMAL sync: a crash may lose the last
        # entries (they are re-hashed), never corrupt the file.
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version == _SCHEMA_VERSION:
            return
        db.execute("BEGIN IMMEDIATE")
        # 2 -> 3 only moved the directory fragments out to files, 3 -> 4 added a
        # column: keep the digests (rows without a digest list are misses).
        if version not in (2, 3):
            db.execute("DROP TABLE IF EXISTS file_sha1")
        db.execute("DROP TABLE IF EXISTS dir_files")
        db.execute(
            "CREATE TABLE IF NOT EXISTS file_sha1 (dev INTEGER NOT NULL,"
            " ino INTEGER NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,"
            " sha1 BLOB NOT NULL, head_sha1 BLOB NOT NULL, chunks BLOB,"
            " PRIMARY KEY (dev, ino)) WITHOUT ROWID"
        )
        columns = [row[1] for row in db.execute("PRAGMA table_info(file_sha1)")]
        if "chunks" not in columns:
            db.execute("ALTER TABLE file_sha1 ADD COLUMN chunks BLOB")
        db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        db.execute("COMMIT")

    def close(self) -> None:
        """Close the database; later calls raise ``sqlite3.ProgrammingError``."""
        self._closed = True
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> HashCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def has_files(self) -> bool:
        """Return whether any file digest is stored (a fresh cache has none, and
        then lookups can be skipped altogether)."""
        if self._absent():
            return False
        row = self._connect().execute("SELECT 1 FROM file_sha1 LIMIT 1").fetchone()
        return row is not None

    def lookup(self, key: FileKey) -> FileDigest | None:
        """Return the cached digest for ``key``, or None if absent or stale."""
        return self.lookup_many([key]).get(key)

    def lookup_many(self, keys: Iterable[FileKey]) -> dict[FileKey, FileDigest]:
        """Return the cached digests of those ``keys`` that are present and fresh.

        Batched: one query per device and 500 inodes.
        """
        wanted = list(keys)
        raw = self.lookup_raw(wanted)
        return {
            key: FileDigest(
                cast("Sha1", raw[key][0]), cast("Sha1", raw[key][1]), key.size, raw[key][2]
            )
            for key in wanted
            if key in raw
        }

    def lookup_raw(self, keys: Iterable[RawKey]) -> dict[RawKey, tuple[str, str, bytes]]:
        """Like ``lookup_many`` with plain tuples: ``(dev, ino, size, mtime_ns)`` ->
        ``(sha1, head_sha1, digest list)``. For hot loops, where building ``FileKey``
        and ``FileDigest`` objects costs more than the lookup itself."""
        by_device: dict[int, dict[int, RawKey]] = {}
        for key in keys:
            inode = key[1]
            wanted = by_device.get(key[0])
            if wanted is None:
                wanted = by_device[key[0]] = {}
            # st_ino is unsigned 64-bit; SQLite integers are signed.
            wanted[inode if inode < 1 << 63 else inode - (1 << 64)] = key
        found: dict[RawKey, tuple[str, str, bytes]] = {}
        if not by_device or self._absent():
            return found
        execute = self._connect().execute
        for device, wanted in by_device.items():
            inodes = list(wanted)
            for start in range(0, len(inodes), _LOOKUP_CHUNK):
                chunk = inodes[start : start + _LOOKUP_CHUNK]
                rows = execute(
                    "SELECT ino, size, mtime_ns, sha1, head_sha1, chunks FROM file_sha1"
                    f" WHERE dev = ? AND ino IN ({','.join('?' * len(chunk))})"
                    " AND chunks IS NOT NULL",
                    (_i64(device), *chunk),
                )
                for ino, size, mtime_ns, sha1, head, chunks in rows:
                    key = wanted[ino]
                    if key[2] == size and key[3] == mtime_ns:
                        found[key] = (sha1.hex(), head.hex(), chunks)
        return found

    def store_many(
        self, entries: Iterable[tuple[FileKey, FileDigest]], *, now_ns: int | None = None
    ) -> int:
        """Remember digests, in one transaction; return how many were stored.

        Entries modified within ``racy_window_ns`` of ``now_ns`` (default: the wall
        clock now) are skipped, as are entries whose digest size differs from the key.
        An entry without a digest list is stored as one (a later lookup misses it).
        """
        return self.store_raw(
            [
                (*key, digest.sha1, digest.head_sha1, digest.size, digest.chunks)
                for key, digest in entries
            ],
            now_ns=now_ns,
        )

    def store_raw(
        self,
        entries: Iterable[tuple[int, int, int, int, str, str, int, bytes | None]],
        *,
        now_ns: int | None = None,
    ) -> int:
        """``store_many`` with plain tuples ``(dev, ino, size, mtime_ns, sha1,
        head_sha1, bytes hashed, digest list)``, for hot loops."""
        limit = (time.time_ns() if now_ns is None else now_ns) - self.racy_window_ns
        rows = [
            (_i64(dev), _i64(ino), size, mtime, bytes.fromhex(sha1), bytes.fromhex(head), chunks)
            for dev, ino, size, mtime, sha1, head, hashed, chunks in entries
            if mtime <= limit and hashed == size
        ]
        if rows:
            with self._transaction() as db:
                db.executemany(
                    "INSERT OR REPLACE INTO file_sha1 VALUES (?, ?, ?, ?, ?, ?, ?)", rows
                )
        return len(rows)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._connect()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
