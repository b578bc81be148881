"""kbapps.hashing: one-pass digests, parallel batches, and the SQLite hash cache."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from kbapps.hashing import (
    BIG_FILE_BYTES,
    PARALLEL_MIN_FILES,
    FileChangedError,
    FileDigest,
    FileKey,
    HashCache,
    HashResult,
    batch,
    digest,
    hash_file,
    hash_files,
)
from kbproto.chunks import CHUNK_SIZE, chunk_digests, digest_list_root
from kbproto.ids import Sha1

HOUR_NS = 3600 * 10**9


def _expected(data: bytes) -> tuple[str, str]:
    return hashlib.sha1(data).hexdigest(), hashlib.sha1(data[:1000]).hexdigest()


def _write(path: Path, data: bytes, *, age_ns: int = HOUR_NS) -> FileKey:
    """Write a file and date it ``age_ns`` in the past (outside the racy window)."""
    path.write_bytes(data)
    past = time.time_ns() - age_ns
    os.utime(path, ns=(past, past))
    return FileKey.from_stat(path.stat())


def _items(paths: list[Path]) -> list[tuple[str, FileKey]]:
    return [(str(p), FileKey.from_stat(p.stat())) for p in paths]


@pytest.mark.parametrize("size", [0, 1, 999, 1000, 1001, 65536, 65537, 300_001])
def test_hash_file_matches_hashlib(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "f"
    path.write_bytes(data)
    key, digest = hash_file(path, buffer=bytearray(4096))
    assert (digest.sha1, digest.head_sha1) == _expected(data)
    assert digest.size == size == key.size
    assert key == FileKey.from_stat(path.stat())


MIB = 1 << 20


@pytest.mark.parametrize(
    "size",
    [0, 1, 65536, MIB - 1, MIB, MIB + 1, 3 * MIB - 5, 4 * MIB, 5 * MIB + 7],
)
@pytest.mark.parametrize("read_cap", [None, 1000])
def test_the_chunk_digests_come_from_the_same_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int, read_cap: int | None
) -> None:
    """Every path of FileHasher (one read, several, the helper thread from 4 MiB on)
    gives kbproto.chunks' digest list, also when reads come back short (read_cap)."""
    data = os.urandom(size)
    path = tmp_path / "f"
    path.write_bytes(data)
    if read_cap is not None:
        real_readv = os.readv

        def short_readv(fd: int, buffers: list[bytearray | memoryview]) -> int:
            with memoryview(buffers[0]) as view:
                return real_readv(fd, [view[:read_cap]])

        monkeypatch.setattr(os, "readv", short_readv)
    _, result = hash_file(path)
    assert result.chunks == chunk_digests(data)
    assert (result.sha1, result.head_sha1) == _expected(data)


@pytest.mark.parametrize("size", [0, 1, 999, 1000, 1001, 4096, 65535])
def test_digest_small_gives_the_sha1s_and_the_chunk_root_of_one_read(size: int) -> None:
    data = os.urandom(size)
    hasher = digest.FileHasher()
    hasher.buffer[:size] = data
    whole, head, root = hasher.digest_small(size)
    assert (whole, head) == _expected(data)
    assert root == digest_list_root(chunk_digests(data))


def test_the_copies_of_kbproto_constants_agree() -> None:
    assert digest.CHUNK_BYTES == CHUNK_SIZE
    assert digest.chunks_root(b"x" * 64) == digest_list_root(b"x" * 64)
    assert digest.FileHasher().chunks_root(b"") == digest_list_root(b"")


def test_an_entry_without_a_digest_list_is_a_miss_and_is_hashed_once(tmp_path: Path) -> None:
    """A cache made before chunk digests (schema 3) keeps its rows, but each is
    hashed once more, for its list, then found."""
    db = tmp_path / "hashes.sqlite3"
    path = tmp_path / "f"
    key = _write(path, b"old content")
    old = sqlite3.connect(db)
    old.execute(
        "CREATE TABLE file_sha1 (dev INTEGER NOT NULL, ino INTEGER NOT NULL,"
        " size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha1 BLOB NOT NULL,"
        " head_sha1 BLOB NOT NULL, PRIMARY KEY (dev, ino)) WITHOUT ROWID"
    )
    whole, head = _expected(b"old content")
    old.execute(
        "INSERT INTO file_sha1 VALUES (?, ?, ?, ?, ?, ?)",
        (key.device, key.inode, key.size, key.mtime_ns, bytes.fromhex(whole), bytes.fromhex(head)),
    )
    old.execute("PRAGMA user_version=3")
    old.commit()
    old.close()
    with HashCache(db) as cache:
        assert cache.has_files()
        assert cache.lookup(key) is None
        (first,) = hash_files([(str(path), key)], cache=cache, workers=1)
        assert not first.cached
        assert first.digest == _digest(b"old content")
        (second,) = hash_files([(str(path), key)], cache=cache, workers=1)
        assert second.cached
        assert second.digest == _digest(b"old content")
        # One stored without a list (by an older writer) is a miss as well.
        cache.store_many([(key, _digest(b"old content")._replace(chunks=None))], now_ns=2**62)
        assert cache.lookup(key) is None


def test_hash_file_reports_bytes_and_detects_a_change_while_reading(tmp_path: Path) -> None:
    path = tmp_path / "growing"
    path.write_bytes(b"\0" * (40 * 1024 * 1024))
    seen: list[int] = []

    def grow(n: int) -> None:
        seen.append(n)
        if len(seen) == 1:
            with path.open("ab") as handle:
                handle.write(b"more")

    with pytest.raises(FileChangedError, match="changed while being read"):
        hash_file(path, on_bytes=grow)
    assert seen
    assert seen[0] >= 16 * 1024 * 1024


def test_hash_file_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        hash_file(fifo)


def test_hash_file_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        hash_file(tmp_path / "nope")


# --- the cache -------------------------------------------------------------------------


def _digest(data: bytes) -> FileDigest:
    whole, head = _expected(data)
    return FileDigest(Sha1(whole), Sha1(head), len(data), chunk_digests(data))


def test_cache_round_trip_and_staleness(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "hashes.sqlite3"
    key = FileKey(device=2**64 - 1, inode=2**63 + 5, size=3, mtime_ns=10)
    with HashCache(db) as cache:
        assert cache.lookup(key) is None
        assert cache.store_many([(key, _digest(b"abc"))], now_ns=HOUR_NS) == 1
        assert cache.lookup(key) == _digest(b"abc")
        # Same inode, other size or mtime: a miss, never a stale digest.
        assert cache.lookup(key._replace(mtime_ns=11)) is None
        assert cache.lookup(key._replace(size=4)) is None
        # A newer version of the same inode replaces the row.
        newer = key._replace(size=4, mtime_ns=20)
        cache.store_many([(newer, _digest(b"abcd"))], now_ns=HOUR_NS)
        assert cache.lookup(key) is None
        assert cache.lookup(newer) == _digest(b"abcd")
    assert (db.stat().st_mode & 0o777) <= 0o755
    with HashCache(db) as reopened:  # persisted
        assert reopened.lookup(newer) == _digest(b"abcd")
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM file_sha1").fetchone() == (1,)


def test_cache_skips_racy_and_inconsistent_entries(tmp_path: Path) -> None:
    with HashCache(tmp_path / "c.db", racy_window_ns=1000) as cache:
        fresh = FileKey(1, 1, 3, mtime_ns=5000)
        assert cache.store_many([(fresh, _digest(b"abc"))], now_ns=5500) == 0
        assert cache.store_many([(fresh, _digest(b"abc"))], now_ns=6000) == 1
        wrong_size = FileKey(1, 2, 99, mtime_ns=0)
        assert cache.store_many([(wrong_size, _digest(b"abc"))], now_ns=6000) == 0


def test_cache_lookup_many_batches_across_devices(tmp_path: Path) -> None:
    keys = [FileKey(device=d, inode=i, size=1, mtime_ns=0) for d in (1, 2) for i in range(1200)]
    with HashCache(tmp_path / "c.db") as cache:
        cache.store_many(((k, _digest(b"x")) for k in keys[::2]), now_ns=HOUR_NS)
        found = cache.lookup_many(keys)
    assert set(found) == set(keys[::2])


def test_cache_with_another_schema_version_is_rebuilt(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE file_sha1 (junk)")
    conn.execute("PRAGMA user_version=99")
    conn.commit()
    conn.close()
    key = FileKey(1, 1, 1, 0)
    with HashCache(db) as cache:
        assert cache.lookup(key) is None
        cache.store_many([(key, _digest(b"x"))], now_ns=HOUR_NS)
        assert cache.lookup(key) == _digest(b"x")


def test_cache_that_is_not_a_database_fails_to_open(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    db.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(sqlite3.DatabaseError):
        HashCache(db)


# --- many files ------------------------------------------------------------------------


def _check(results: list[HashResult], files: dict[str, bytes]) -> None:
    assert sorted(r.path for r in results) == sorted(files)
    for result in results:
        assert result.error is None
        assert result.digest is not None
        assert (result.digest.sha1, result.digest.head_sha1) == _expected(files[result.path])


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_hash_files_many_small_files(tmp_path: Path, workers: int) -> None:
    files: dict[str, bytes] = {}
    for i in range(PARALLEL_MIN_FILES + 37):
        data = os.urandom(i % 3000)
        path = tmp_path / f"f{i}"
        path.write_bytes(data)
        files[str(path)] = data
    progress: list[tuple[int, int]] = []
    items = _items([Path(p) for p in files])
    results = list(
        hash_files(items, workers=workers, on_progress=lambda f, b: progress.append((f, b)))
    )
    _check(results, files)
    assert sum(f for f, _ in progress) == len(files)
    assert sum(b for _, b in progress) == sum(len(d) for d in files.values())
    assert not any(r.cached for r in results)


def test_hash_files_parallel_reports_errors_per_file(tmp_path: Path) -> None:
    files: dict[str, bytes] = {}
    for i in range(PARALLEL_MIN_FILES + 10):
        path = tmp_path / f"f{i}"
        files[str(path)] = f"file {i}".encode()
        path.write_bytes(files[str(path)])
    items = _items([Path(p) for p in files])
    gone = [items[3][0], items[400][0]]
    for name in gone:
        os.unlink(name)
    results = list(hash_files(items, workers=2))
    failed = {r.path: r.error for r in results if r.error is not None}
    assert failed == dict.fromkeys(gone, "No such file or directory")
    _check(
        [r for r in results if r.error is None], {p: d for p, d in files.items() if p not in gone}
    )


def test_hash_files_big_files_use_threads_with_byte_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {}
    for i in range(3):
        data = os.urandom(1000) * (BIG_FILE_BYTES // 1000 + 1 + i)
        path = tmp_path / f"big{i}"
        path.write_bytes(data)
        files[str(path)] = data
    small = tmp_path / "small"
    small.write_bytes(b"tiny")
    files[str(small)] = b"tiny"
    progress: list[tuple[int, int]] = []
    thread_names: set[str] = set()
    real_open = digest.open_for_hashing

    def spy(path: str) -> int:
        thread_names.add(threading.current_thread().name)
        return real_open(path)

    monkeypatch.setattr(digest, "open_for_hashing", spy)
    results = list(
        hash_files(
            _items([Path(p) for p in files]),
            workers=2,
            on_progress=lambda f, b: progress.append((f, b)),
        )
    )
    _check(results, files)
    assert sum(f for f, _ in progress) == 4
    assert sum(b for _, b in progress) == sum(len(d) for d in files.values())
    assert threading.main_thread().name in thread_names  # the small file
    assert len(thread_names) >= 2  # big files on worker threads
    # Byte-level progress came before the files finished.
    assert any(f == 0 and b > 0 for f, b in progress)


def test_hash_files_single_big_file_reports_bytes_as_it_goes(tmp_path: Path) -> None:
    data = os.urandom(1024) * (3 * 16 * 1024 + 7)  # just over 48 MiB
    path = tmp_path / "big"
    path.write_bytes(data)
    progress: list[tuple[int, int]] = []
    results = list(hash_files(_items([path]), on_progress=lambda f, b: progress.append((f, b))))
    _check(results, {str(path): data})
    assert len([p for p in progress if p[0] == 0]) >= 3
    assert sum(b for _, b in progress) == len(data)
    assert progress[-1][0] == 1


def test_hash_files_uses_and_fills_the_cache(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    paths = [tmp_path / "d" / f"f{i}" for i in range(5)]
    for i, path in enumerate(paths):
        _write(path, f"content {i}".encode())
    fresh = tmp_path / "d" / "fresh"
    fresh.write_bytes(b"just written")  # inside the racy window: hashed, not cached
    paths.append(fresh)
    with HashCache(tmp_path / "c.db") as cache:
        first = list(hash_files(_items(paths), cache=cache, workers=1))
        assert not any(r.cached for r in first)
        second = {r.path: r for r in hash_files(_items(paths), cache=cache, workers=1)}
    assert [second[str(p)].cached for p in paths] == [True] * 5 + [False]
    assert {r.path: r.digest for r in first} == {p: r.digest for p, r in second.items()}


def test_hash_files_cached_result_is_served_without_reading(tmp_path: Path) -> None:
    path = tmp_path / "f"
    _write(path, b"old bytes")
    with HashCache(tmp_path / "c.db") as cache:
        list(hash_files(_items([path]), cache=cache))
        key = FileKey.from_stat(path.stat())
        # Same size and mtime, other bytes: only a cache hit can still say "old".
        path.write_bytes(b"new bytes")
        os.utime(path, ns=(key.mtime_ns, key.mtime_ns))
        (result,) = hash_files(_items([path]), cache=cache)
        assert result.cached
        assert result.digest == _digest(b"old bytes")
        # A new mtime is a new key: re-read.
        os.utime(path, ns=(key.mtime_ns - 10**9, key.mtime_ns - 10**9))
        (result,) = hash_files(_items([path]), cache=cache)
        assert not result.cached
        assert result.digest == _digest(b"new bytes")


def test_hash_files_hard_links_are_hashed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = tmp_path / "a"
    _write(a, b"shared")
    b = tmp_path / "b"
    os.link(a, b)
    calls: list[str] = []
    real = digest.open_for_hashing

    def spy(path: str) -> int:
        calls.append(str(path))
        return real(path)

    monkeypatch.setattr(digest, "open_for_hashing", spy)
    results = list(hash_files(_items([a, b]), workers=1))
    assert len(calls) == 1
    assert {r.path for r in results} == {str(a), str(b)}
    assert {r.digest for r in results} == {_digest(b"shared")}


def test_hash_files_broken_cache_is_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "f"
    _write(path, b"data")
    cache = HashCache(tmp_path / "c.db")
    cache.close()  # every later call raises sqlite3.ProgrammingError
    warnings: list[str] = []
    results = list(hash_files(_items([path]), cache=cache, on_warning=warnings.append))
    _check(results, {str(path): b"data"})
    assert len(warnings) == 1
    assert "hash cache unusable" in warnings[0]


def test_closing_hash_files_early_stops_the_workers(tmp_path: Path) -> None:
    paths = []
    for i in range(3 * PARALLEL_MIN_FILES):
        path = tmp_path / f"f{i}"
        path.write_bytes(os.urandom(100))
        paths.append(path)
    results = hash_files(_items(paths), workers=2)
    next(results)
    started = time.monotonic()
    results.close()
    assert time.monotonic() - started < 30
    # The children are reaped: no zombie remains for them.
    with open(f"/proc/{os.getpid()}/task/{os.getpid()}/children") as handle:
        children = handle.read().split()
    for pid in children:
        with open(f"/proc/{pid}/stat") as handle:
            assert handle.read().split()[2] != "Z"


def test_a_worker_that_dies_leaves_its_work_to_the_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forks: list[int]
) -> None:
    files: dict[str, bytes] = {}
    for i in range(2 * PARALLEL_MIN_FILES):
        path = tmp_path / f"f{i}"
        files[str(path)] = b"%d" % i
        path.write_bytes(files[str(path)])
    parent = os.getpid()
    real = batch._UnitWorker.process

    def crash(self: object, unit: object) -> object:
        if os.getpid() != parent:
            raise MemoryError("simulated death of a worker")  # holding its units
        return real(self, unit)  # type: ignore[arg-type]

    # The forked worker runs the patched method; the units it held are done by the
    # parent, and every item still gets exactly one result.
    monkeypatch.setattr(batch._UnitWorker, "process", crash)
    results = list(hash_files(_items([Path(p) for p in files]), workers=2))
    _check(results, files)
    assert forks


def test_the_cache_path_as_a_string_is_the_cache_dir(tmp_path: Path) -> None:
    from kbapps.cachedir import (
        ensure_user_cache_dir,
        ensure_user_cache_path,
        user_cache_dir,
        user_cache_path,
    )

    home = str(tmp_path / "home")
    for env in (
        {"HOME": home},
        {"HOME": home, "XDG_CACHE_HOME": "relative"},
        {"HOME": home, "XDG_CACHE_HOME": str(tmp_path / "xdg")},
        {"HOME": home, "KBUCKET_CACHE_DIR": str(tmp_path / "kb")},
    ):
        assert Path(user_cache_path(env)) == user_cache_dir(env)
        made = ensure_user_cache_path(env)
        assert os.path.isdir(made)
        assert os.stat(made).st_mode & 0o777 == 0o700
        assert ensure_user_cache_dir(env) == Path(made)
