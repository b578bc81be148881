"""kbapps.share.index: persistence, lookups, trust rules, .prv bytes, broken databases."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import pytest

from kbapps.share import index as index_module
from kbapps.share.index import INDEX_FILENAME, FileIndex, FileStamp, IndexEntry, stamp_of
from kbproto.ids import Sha1
from kbproto.prv import serialize_prv

SEC = 1_000_000_000


def sha1_of(data: bytes) -> Sha1:
    return Sha1(hashlib.sha1(data).hexdigest())


def entry(
    path: str,
    data: bytes,
    *,
    stamp: FileStamp | None = None,
    hashed_ns: int | None = None,
) -> IndexEntry:
    st = stamp or FileStamp(1, abs(hash(path)) % 10_000, len(data), 5 * SEC, 5 * SEC)
    return IndexEntry(
        path,
        *st,
        sha1_of(data),
        sha1_of(data[:1000]),
        hashed_ns if hashed_ns is not None else 100 * SEC,
    )


def test_apply_lookup_and_reopen(tmp_path: Path) -> None:
    db = tmp_path / INDEX_FILENAME
    warnings: list[str] = []
    index = FileIndex(db, on_warning=warnings.append)
    assert index.persistent
    assert len(index) == 0
    a = entry("a.dat", b"alpha")
    b = entry("sub/b.dat", b"beta")
    twin = entry("sub/twin.dat", b"alpha")
    index.apply([a, b, twin])
    assert index.get("a.dat") == a
    assert index.paths_for(a.sha1) == ("a.dat", "sub/twin.dat")
    assert index.paths_for(sha1_of(b"nothing")) == ()
    index.apply(removes=["a.dat", "never-indexed"])
    assert index.get("a.dat") is None
    assert index.paths_for(a.sha1) == ("sub/twin.dat",)
    # Replacing a path moves it from its old SHA-1 to the new one.
    b2 = entry("sub/b.dat", b"beta v2")
    index.apply([b2])
    assert index.paths_for(b.sha1) == ()
    assert index.paths_for(b2.sha1) == ("sub/b.dat",)
    index.close()

    again = FileIndex(db, on_warning=warnings.append)
    assert sorted(again.entries()) == sorted([b2, twin])
    assert again.paths_for(twin.sha1) == ("sub/twin.dat",)
    assert warnings == []
    again.close()


def test_unsigned_64_bit_device_and_inode_round_trip(tmp_path: Path) -> None:
    db = tmp_path / INDEX_FILENAME
    big = FileStamp(2**64 - 5, 2**63 + 7, 3, 1, 2)
    index = FileIndex(db)
    index.apply([entry("x", b"xyz", stamp=big)])
    index.close()
    reopened = FileIndex(db)
    got = reopened.get("x")
    assert got is not None
    assert got.stamp == big
    # What a walk compares: the same stamp, without the digests.
    assert list(reopened.stamps()) == [("x", *big, got.hashed_ns, 0)]


def test_current_requires_the_hashed_stamp_and_trust(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"content")
    st = os.stat(path)
    index = FileIndex(None, racy_window_ns=2 * SEC)
    newest = max(st.st_mtime_ns, st.st_ctime_ns)
    trusted = entry("f.bin", b"content", stamp=stamp_of(st), hashed_ns=newest + 3 * SEC)
    index.apply([trusted])
    assert index.current("f.bin", st) == trusted
    assert index.current("other", st) is None
    # Any part of the stamp differing means another version of the file.
    for field in range(5):
        changed = list(stamp_of(st))
        changed[field] += 1
        d, i, z, m, c = changed
        index.apply(
            [IndexEntry("f.bin", d, i, z, m, c, trusted.sha1, trusted.head_sha1, trusted.hashed_ns)]
        )
        assert index.current("f.bin", st) is None, FileStamp._fields[field]
    # Hashed within the racy window of the file's last change: not trusted yet.
    index.apply([trusted._replace(hashed_ns=newest + SEC)])
    assert index.current("f.bin", st) is None
    # A stamp far in the future cannot be hit by a later write yet: trusted.
    index.apply([trusted._replace(hashed_ns=newest - 10 * SEC)])
    assert index.current("f.bin", st) is not None


def test_prv_for_is_the_exact_spec_document(tmp_path: Path) -> None:
    index = FileIndex(None)
    data = bytes(range(256)) * 5
    index.apply([entry("deep/er/file1.dat", data)])
    prv = index.prv_for("deep/er/file1.dat")
    assert prv is not None
    expected = (
        "{\n"
        f'    "original_checksum": "{hashlib.sha1(data).hexdigest()}",\n'
        f'    "original_size": {len(data)},\n'
        f'    "original_fcs": "head1000-{hashlib.sha1(data[:1000]).hexdigest()}",\n'
        '    "original_path": "file1.dat",\n'
        '    "prv_version": "0.11"\n'
        "}\n"
    ).encode()
    assert serialize_prv(prv) == expected
    assert index.prv_for("missing.dat") is None


def test_garbage_database_is_rebuilt_with_one_warning(tmp_path: Path) -> None:
    db = tmp_path / INDEX_FILENAME
    db.write_bytes(b"this is not a database at all" * 100)
    warnings: list[str] = []
    index = FileIndex(db, on_warning=warnings.append)
    assert len(warnings) == 1
    assert ".kbucket/index.sqlite" in warnings[0]
    assert "rebuilding" in warnings[0]
    assert str(tmp_path) not in warnings[0]  # no absolute local path in a log line
    assert index.persistent
    assert len(index) == 0
    index.apply([entry("a", b"a")])
    index.close()
    assert FileIndex(db).get("a") is not None


def test_malformed_row_is_rebuilt(tmp_path: Path) -> None:
    db = tmp_path / INDEX_FILENAME
    FileIndex(db).close()
    raw = sqlite3.connect(db)
    raw.execute("INSERT INTO files VALUES ('a', 1, 2, 3, 4, 5, x'0102', x'0304', 6, NULL)")
    raw.commit()
    raw.close()
    warnings: list[str] = []
    index = FileIndex(db, on_warning=warnings.append)
    assert len(warnings) == 1
    assert "1 malformed rows" in warnings[0]
    assert len(index) == 0
    assert index.persistent


def test_old_schema_is_replaced_silently(tmp_path: Path) -> None:
    db = tmp_path / INDEX_FILENAME
    raw = sqlite3.connect(db)
    raw.execute("CREATE TABLE files (x)")
    raw.execute("INSERT INTO files VALUES (1)")
    raw.execute("PRAGMA user_version=99")
    raw.commit()
    raw.close()
    warnings: list[str] = []
    index = FileIndex(db, on_warning=warnings.append)
    assert warnings == []
    assert len(index) == 0
    index.apply([entry("a", b"a")])
    assert index.get("a") is not None


def test_uncreatable_database_falls_back_to_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_bytes(b"")
    warnings: list[str] = []
    index = FileIndex(blocker / INDEX_FILENAME, on_warning=warnings.append)
    assert not index.persistent
    assert len(warnings) == 2
    assert "in memory" in warnings[1]
    index.apply([entry("a", b"a")])
    assert index.get("a") is not None


def test_write_failure_keeps_the_index_in_memory(tmp_path: Path) -> None:
    warnings: list[str] = []
    index = FileIndex(tmp_path / INDEX_FILENAME, on_warning=warnings.append)
    # Simulate the database failing under us (disk gone, file replaced...).
    db = index._db
    assert db is not None
    db.close()
    index.apply([entry("a", b"a")])
    assert not index.persistent
    assert len(warnings) == 1
    assert "cannot be written" in warnings[0]
    assert index.get("a") is not None


def test_for_share_uses_the_kbucket_dir(tmp_path: Path) -> None:
    kb = tmp_path / ".kbucket"
    kb.mkdir()
    index = FileIndex.for_share(kb)
    assert index.db_path == kb / INDEX_FILENAME
    index.close()
    assert (kb / INDEX_FILENAME).exists()


def test_hundred_thousand_entries_round_trip(tmp_path: Path) -> None:
    db = tmp_path / INDEX_FILENAME
    index = FileIndex(db)
    base = entry("x", b"x")
    entries = [
        base._replace(path=f"d{i // 1000}/f{i}.dat", inode=i, sha1=Sha1(f"{i:040x}"))
        for i in range(100_000)
    ]
    index.apply(entries)
    index.close()
    reopened = FileIndex(db)
    assert len(reopened) == 100_000
    assert reopened.paths_for(Sha1(f"{99_999:040x}")) == ("d99/f99999.dat",)
    assert reopened.get("d5/f5000.dat") == entries[5000]
    # Streamed in path order across pages, as the walk merges them.
    assert list(reopened.stamps()) == [
        (e.path, *e[1:6], e.hashed_ns, 0) for e in sorted(entries, key=lambda e: e.path)
    ]


@pytest.mark.parametrize("bad", ["", "/abs/path"])
def test_bad_path_rows_are_rebuilt(tmp_path: Path, bad: str) -> None:
    db = tmp_path / INDEX_FILENAME
    FileIndex(db).close()
    raw = sqlite3.connect(db)
    raw.execute(
        "INSERT INTO files VALUES (?, 1, 2, 3, 4, 5, ?, ?, 6, NULL)",
        (bad, b"\x00" * 20, b"\x00" * 20),
    )
    raw.commit()
    raw.close()
    warnings: list[str] = []
    assert len(FileIndex(db, on_warning=warnings.append)) == 0
    assert len(warnings) == 1


def test_the_core_view_counts_representatives_and_pages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the share's core reads (``kbproto.sharestore.ShareFiles``): the smallest
    trusted path per content id, content ids a page at a time, counts kept by apply."""
    monkeypatch.setattr(index_module, "_PAGE", 3)
    index = FileIndex(tmp_path / INDEX_FILENAME, racy_window_ns=2 * SEC)
    a, twin = entry("b/a.dat", b"alpha"), entry("a/twin.dat", b"alpha")
    others = [entry(f"o{i}", b"other %d" % i) for i in range(7)]
    touched = index.apply([a, twin, *others])
    assert touched == {a.sha1} | {e.sha1 for e in others}
    assert (len(index), index.content_count) == (9, 8)
    raw = bytes.fromhex(a.sha1)
    assert index.representative(raw) == ("a/twin.dat", 5)
    # A racy entry is not advertised: the other copy is.
    racy = twin._replace(hashed_ns=twin.mtime_ns + SEC)
    assert index.apply([racy]) == {a.sha1}
    assert index.representative(raw) == ("b/a.dat", 5)
    keys = list(index.content_keys())
    assert keys == sorted({bytes.fromhex(e.sha1) for e in [a, *others]})
    assert index.trusted_count() == 8
    assert [e.path for e in index.entries()] == sorted(e.path for e in [a, twin, *others])
    assert set(index.get_many(["b/a.dat", "o3", "missing"])) == {"b/a.dat", "o3"}
    # Removing both copies drops the content id; the counts follow.
    assert index.apply(removes=["b/a.dat", "a/twin.dat", "never"]) == {a.sha1}
    assert index.representative(raw) is None
    assert (len(index), index.content_count) == (7, 7)
    index.close()
    reopened = FileIndex(tmp_path / INDEX_FILENAME)
    assert (len(reopened), reopened.content_count) == (7, 7)
    assert reopened.chunk_list("not hex") is None
    assert reopened.paths_for("not hex") == ()
