"""``build_prvdir_bytes``: byte-identical to the model serializer, and its
per-directory fragment cache is reused only while a directory is unchanged."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kbapps import hashing, prvbuild
from kbapps.hashing import HashCache, digest, fragments
from kbapps.prvbuild import (
    BuildOptions,
    _common,
    _fragments,
    build_prvdir,
    build_prvdir_bytes,
    files_fragment,
    scan_directory,
)
from kbproto.chunks import ChunkSpec
from kbproto.ids import Sha1
from kbproto.prv import Prv, PrvDir, serialize_prvdir

HOUR_NS = 3600 * 10**9


def _model_bytes(root: Path) -> bytes:
    return serialize_prvdir(build_prvdir(scan_directory(str(root)), BuildOptions(workers=1)))


def _age(root: Path) -> None:
    past = time.time_ns() - HOUR_NS
    for item in root.rglob("*"):
        os.utime(item, ns=(past, past))


def _age_one(path: Path) -> None:
    past = time.time_ns() - HOUR_NS
    os.utime(path, ns=(past, past))


# --- the serializer ------------------------------------------------------------------

_NAME = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="/\\\x00"),
    min_size=1,
    max_size=12,
).filter(lambda name: not name.startswith(".") and len(name.encode()) <= 255)
_HEX = st.text(alphabet="0123456789abcdef", min_size=40, max_size=40)


@given(
    depth=st.integers(0, 4),
    names=st.lists(_NAME, min_size=1, max_size=4, unique=True),
    files=st.dictionaries(_NAME, st.tuples(_HEX, _HEX, st.integers(0, 2**63 - 1)), max_size=5),
)
def test_files_fragment_matches_the_model_serializer(
    depth: int, names: list[str], files: dict[str, tuple[str, str, int]]
) -> None:
    path = names[:depth] + ["x"] * max(0, depth - len(names))
    relbase = "/".join(path)
    prefix = f"{relbase}/" if relbase else ""
    root = hashlib.sha256(repr(files).encode()).hexdigest()
    leaf = PrvDir(
        files={
            name: Prv(
                sha1=Sha1(sha1),
                head_sha1=Sha1(head),
                size=size,
                path=prefix + name,
                chunks=ChunkSpec(root=root),
            )
            for name, (sha1, head, size) in files.items()
        }
    )
    tree = leaf
    for name in reversed(path):
        tree = PrvDir(dirs={name: tree})
    entries = sorted((name, sha1, head, size, root) for name, (sha1, head, size) in files.items())
    fragment = files_fragment(depth, relbase, entries)
    text = serialize_prvdir(tree).decode()
    i1 = " " * (8 * depth + 4)
    expected = f'"files": {{\n{fragment}\n{i1}}}' if files else '"files": {}'
    assert f"{i1}{expected}," in text
    assert text.count('"original_checksum"') == len(files)


@pytest.fixture
def scratch() -> Generator[Path, None, None]:
    path = Path(tempfile.mkdtemp(prefix="kbfast-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


_TREE = st.lists(
    st.tuples(
        st.lists(st.sampled_from(["a", "b", "é ü", 'q"t', "a b"]), max_size=3),
        st.sampled_from(["f", "g.dat", "ñ", "x y", "'", "<&>", "z" * 30]),
        st.binary(max_size=2500),
    ),
    max_size=15,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=_TREE)
def test_random_trees_serialize_byte_for_byte_like_the_models(
    tree: list[tuple[list[str], str, bytes]],
) -> None:
    root = Path(tempfile.mkdtemp(prefix="kbfast-"))
    try:
        (root / "empty" / "deeper").mkdir(parents=True)
        for parts, name, data in tree:
            folder = root.joinpath(*parts)
            folder.mkdir(parents=True, exist_ok=True)
            if not (folder / name).is_dir():
                (folder / name).write_bytes(data)
        expected = _model_bytes(root)
        assert build_prvdir_bytes(scan_directory(str(root)), BuildOptions(workers=1)) == expected
        cache = HashCache(root / ".cache" / "c.db", racy_window_ns=0)
        try:
            for _ in range(2):  # filling the fragment cache, then served from it
                assert (
                    build_prvdir_bytes(scan_directory(str(root)), BuildOptions(cache=cache))
                    == expected
                )
        finally:
            cache.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- the fragment cache --------------------------------------------------------------


class _Counting:
    """Wraps the one place the hasher opens files, to record which files each run
    read (runs use ``workers=1``, so every open happens in this process)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.names: list[str] = []
        real = digest.open_for_hashing

        def spy(path: str | os.PathLike[str]) -> int:
            self.names.append("/".join(os.fspath(path).rsplit("/", 2)[-2:]))
            return real(path)

        monkeypatch.setattr(digest, "open_for_hashing", spy)

    def take(self) -> list[str]:
        names, self.names = sorted(self.names), []
        return names


def _make(root: Path) -> None:
    for folder in ("d1", "d2", "d3"):
        (root / folder).mkdir()
        for i in range(4):
            (root / folder / f"f{i}").write_bytes(f"{folder} {i}".encode())
    _age(root)


def _run(root: Path, cache: HashCache, seen: _Counting) -> tuple[bytes, list[str]]:
    """One fast run, checked against the models; returns its bytes and the files it
    sent to hashing."""
    data = build_prvdir_bytes(scan_directory(str(root)), BuildOptions(cache=cache, workers=1))
    hashed = seen.take()
    assert data == _model_bytes(root)
    seen.take()
    return data, hashed


def test_unchanged_directories_are_served_from_their_fragment(
    scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = scratch / "t"
    root.mkdir()
    _make(root)
    seen = _Counting(monkeypatch)
    with HashCache(scratch / "c.db") as cache:
        first, hashed = _run(root, cache, seen)
        assert len(hashed) == 12
        assert set(cache.fragments.load(os.path.realpath(root))) == {"d1", "d2", "d3"}
        # Nothing hashed, nothing even looked up per file.
        assert _run(root, cache, seen) == (first, [])

        # One file rewritten (same size, new mtime): only its directory is redone,
        # and only that file is read (the others' digests are stored with the tree).
        (root / "d2" / "f1").write_bytes(b"d2 X")
        _age_one(root / "d2" / "f1")
        changed, hashed = _run(root, cache, seen)
        assert changed != first
        assert hashed == ["d2/f1"]
        assert _run(root, cache, seen) == (changed, [])

        # A file added (only it is read), then one removed (nothing is read).
        (root / "d3" / "new").write_bytes(b"new")
        _age_one(root / "d3" / "new")
        assert _run(root, cache, seen)[1] == ["d3/new"]
        (root / "d1" / "f0").unlink()
        assert _run(root, cache, seen)[1] == []
        # A file renamed keeps its inode, size and mtime: its name changes the
        # directory's text, not its digest.
        (root / "d1" / "f1").rename(root / "d1" / "renamed")
        assert _run(root, cache, seen)[1] == []
        # Moved to another directory of the tree: still known by its key.
        (root / "d1" / "f2").rename(root / "d3" / "moved")
        assert _run(root, cache, seen)[1] == []
        assert set(cache.fragments.load(os.path.realpath(root))) == {"d1", "d2", "d3"}
        assert _run(root, cache, seen)[1] == []
        # A directory renamed: its files are still known.
        (root / "d3").rename(root / "d4")
        assert _run(root, cache, seen)[1] == []
        assert set(cache.fragments.load(os.path.realpath(root))) == {"d1", "d2", "d4"}


def test_a_directory_with_a_racy_file_is_not_remembered(
    scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = scratch / "t"
    root.mkdir()
    _make(root)
    (root / "d1" / "fresh").write_bytes(b"just written")  # inside the racy window
    seen = _Counting(monkeypatch)
    with HashCache(scratch / "c.db") as cache:
        _run(root, cache, seen)
        stored = cache.fragments.load(os.path.realpath(root))
        assert {relpath for relpath, entry in stored.items() if entry[1]} == {"d2", "d3"}
        # Only the racy file is read again: the other files of its directory keep
        # their digests, their directory only its text.
        assert _run(root, cache, seen)[1] == ["d1/fresh"]
        _age_one(root / "d1" / "fresh")
        assert _run(root, cache, seen)[1] == ["d1/fresh"]
        assert _run(root, cache, seen)[1] == []


def test_the_output_file_inside_the_tree_stays_out_of_fragments(scratch: Path) -> None:
    root = scratch / "t"
    root.mkdir()
    _make(root)
    out = root / "d1" / "out.prvdir"
    out.write_bytes(b"old")
    _age(root)
    st_out = out.stat()
    exclude = frozenset({(st_out.st_dev, st_out.st_ino)})
    with HashCache(scratch / "c.db") as cache:
        for _ in range(2):
            data = build_prvdir_bytes(
                scan_directory(str(root)), BuildOptions(cache=cache, exclude=exclude)
            )
            assert b"out.prvdir" not in data
            assert data == serialize_prvdir(
                build_prvdir(scan_directory(str(root)), BuildOptions(exclude=exclude))
            )


def test_a_vanished_file_is_named_even_when_its_directory_was_cached(
    scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = scratch / "t"
    root.mkdir()
    _make(root)
    with HashCache(scratch / "c.db") as cache:
        _run(root, cache, _Counting(monkeypatch))
        scan = scan_directory(str(root))
        (root / "d2" / "f3").unlink()  # after the scan: stat fails, hashing names it
        with pytest.raises(prvbuild.PrvBuildError, match="d2/f3"):
            build_prvdir_bytes(scan, BuildOptions(cache=cache))


# --- start-up ------------------------------------------------------------------------


def test_constants_repeated_from_kbproto_prv_are_equal() -> None:
    from kbproto import prv

    assert _common.PRV_VERSION == prv.PRV_VERSION
    assert _common.FCS_PREFIX == prv.FCS_PREFIX
    assert hashing.FCS_HEAD_BYTES == prv.FCS_HEAD_BYTES
    assert prv.PrvLimits().max_depth == _common.MAX_DEPTH
    from kbproto import chunks

    assert _common.CHUNK_ALGORITHM == chunks.CHUNK_ALGORITHM
    assert _common.CHUNK_SIZE == chunks.CHUNK_SIZE


def test_a_cached_directory_run_imports_no_model_database_or_openssl(scratch: Path) -> None:
    # kbproto.prv brings dataclasses, json and re (~25 ms of start-up); sqlite3
    # brings datetime, hashlib OpenSSL (~8 ms together): a re-run needs none of them.
    # pathlib (urllib.parse, ipaddress), random (kbproto.ids) and threading (big
    # files only) are not needed either way.
    root = scratch / "t"
    root.mkdir()
    _make(root)
    # -S: without site, whose .pth files (coverage, certifi) import some of these
    # before kb-prv-create starts; the project is found through PYTHONPATH.
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "from kbapps.cli import prv_create\n"
        "assert prv_create.main(sys.argv[1:]) == 0\n"
        "heavy = ('kbproto.prv', 'dataclasses', 'json', 'sqlite3', 'hashlib', '_hashlib',"
        " 'pathlib', 'random', 'threading')\n"
        "print(sorted(m for m in heavy if m in sys.modules and m not in before))\n"
    )
    env = {
        **os.environ,
        "KBUCKET_CACHE_DIR": str(scratch / "cache"),
        "PYTHONPATH": str(Path(hashing.__file__).resolve().parents[2]),
    }
    runs = [
        subprocess.run(
            [sys.executable, "-S", "-c", code, str(root), str(scratch / f"{n}.prvdir")],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
            env=env,
        )
        for n in range(2)
    ]
    # A first run hashes: OpenSSL's functions, without the hashlib module around them.
    assert runs[0].stdout.strip() == "['_hashlib']"
    assert runs[1].stdout.strip() == "[]"
    assert (scratch / "1.prvdir").read_bytes() == _model_bytes(root)


# --- the fragment file and the two-process check ---------------------------------------


def test_a_damaged_fragment_file_reads_as_absent(scratch: Path) -> None:
    root = scratch / "t"
    root.mkdir()
    _make(root)
    with HashCache(scratch / "c.db") as cache:
        expected = _run_plain(root, cache)
        scope = os.path.realpath(root)
        (stored,) = (scratch / fragments.FRAGMENT_DIR).iterdir()
        data = bytearray(stored.read_bytes())
        data[-5] ^= 0x01  # one bit of the last directory's digests
        stored.write_bytes(bytes(data))
        assert cache.fragments.load(scope) == {}
        stored.write_bytes(bytes(data[:100]))  # torn
        assert cache.fragments.load(scope) == {}
        stored.write_bytes(b"")
        assert cache.fragments.load(scope) == {}
        assert _run_plain(root, cache) == expected  # rebuilt, and stored again
        assert set(cache.fragments.load(scope)) == {"d1", "d2", "d3"}


def _run_plain(root: Path, cache: HashCache, workers: int = 1) -> bytes:
    data = build_prvdir_bytes(scan_directory(str(root)), BuildOptions(cache=cache, workers=workers))
    assert data == _model_bytes(root)
    return data


def _many(root: Path, dirs: int = 4, per_dir: int = 200) -> None:
    for d in range(dirs):
        (root / f"d{d}").mkdir(parents=True)
        for i in range(per_dir):
            (root / f"d{d}" / f"f{i:03d}").write_bytes(b"%d/%d" % (d, i))
    _age(root)


def test_two_processes_check_and_hash_a_tree(scratch: Path, forks: list[int]) -> None:
    root = scratch / "t"
    _many(root)
    with HashCache(scratch / "c.db") as cache:
        _run_plain(root, cache, workers=2)  # hashed by two processes
        assert forks
        forks.clear()
        _run_plain(root, cache, workers=2)  # checked by two processes
        assert forks
        (root / "d3" / "f007").write_bytes(b"changed")  # in the other process's half
        _age_one(root / "d3" / "f007")
        (root / "d0" / "f100").unlink()  # in this process's half
        _run_plain(root, cache, workers=2)
        _run_plain(root, cache, workers=2)


def test_a_checking_child_that_dies_leaves_its_part_to_the_parent(
    scratch: Path, monkeypatch: pytest.MonkeyPatch, forks: list[int]
) -> None:
    root = scratch / "t"
    _many(root)
    parent = os.getpid()
    real = _fragments.check_dirs

    def check(*args: Any) -> Any:
        if os.getpid() != parent:
            os._exit(3)  # the forked child dies without an answer
        return real(*args)

    with HashCache(scratch / "c.db") as cache:
        expected = _run_plain(root, cache, workers=2)
        monkeypatch.setattr(_fragments, "check_dirs", check)
        seen = _Counting(monkeypatch)
        forks.clear()
        data = build_prvdir_bytes(scan_directory(str(root)), BuildOptions(cache=cache, workers=2))
        assert forks  # (it had started)
        assert seen.take() == []  # the parent checked everything: nothing was read
        assert data == expected


def test_a_lazy_cache_creates_no_database_until_it_stores(scratch: Path) -> None:
    path = scratch / "sub" / "c.db"
    cache = HashCache(path, lazy=True)
    try:
        assert not cache.has_files()
        assert cache.lookup_raw([(1, 2, 3, 4)]) == {}
        assert not path.exists()
        assert cache.store_raw([(1, 2, 3, 4, "a" * 40, "b" * 40, 3, b"")], now_ns=10**19) == 1
        assert path.is_file()
        assert cache.has_files()
    finally:
        cache.close()
    with pytest.raises(sqlite3.ProgrammingError):
        cache.has_files()


# --- the shared walk of a re-run --------------------------------------------------------


def _planned(root: Path, cache: HashCache, warnings: list[str] | None = None) -> bytes:
    """A kb-prv-create run: plan (the walk shared by two processes on a re-run), then
    write."""
    emit = warnings.append if warnings is not None else None
    plan = prvbuild.plan_prvdir(str(root), BuildOptions(cache=cache, workers=2, on_warning=emit))
    pieces: list[Any] = []
    prvbuild.write_planned(plan, pieces.extend)
    assert plan.total_files == len(scan_directory(str(root)).files)
    return b"".join(pieces)


def test_the_shared_walk_gives_the_same_document_and_warnings(
    scratch: Path, forks: list[int]
) -> None:
    root = scratch / "t"
    _many(root, dirs=5, per_dir=150)
    (root / "d1" / "deep" / "er").mkdir(parents=True)
    (root / "d1" / "deep" / "er" / "x").write_bytes(b"x")
    (root / "d2" / "link").symlink_to(root / "d1" / "f001")
    (root / "d3" / "out").symlink_to("/etc/hostname")
    (root / "d4" / ".hidden").write_bytes(b"h")
    os.mkfifo(root / "d0" / "fifo")
    _age(root)
    expected_warnings: list[str] = []
    scan_directory(str(root), on_warning=expected_warnings.append)
    with HashCache(scratch / "c.db") as cache:
        assert _planned(root, cache) == _model_bytes(root)  # first run: no fragments
        for _ in range(2):
            warnings: list[str] = []
            assert _planned(root, cache, warnings) == _model_bytes(root)
            assert sorted(warnings) == sorted(expected_warnings)
        # Changes on both sides of the split, and a new directory.
        for folder in ("d0", "d1", "d4"):
            (root / folder / "f010").write_bytes(b"new " + folder.encode())
            _age_one(root / folder / "f010")
        (root / "d3" / "sub").mkdir()
        (root / "d3" / "sub" / "n").write_bytes(b"n")
        (root / "d2" / "f100").unlink()
        assert _planned(root, cache) == _model_bytes(root)
        assert _planned(root, cache) == _model_bytes(root)
    assert forks  # the walks were shared


def test_an_unreadable_directory_in_the_other_half_is_named(
    scratch: Path, monkeypatch: pytest.MonkeyPatch, forks: list[int]
) -> None:
    root = scratch / "t"
    _many(root)
    with HashCache(scratch / "c.db") as cache:
        _planned(root, cache)
        real = os.scandir
        parent = os.getpid()

        def scandir(path: Any) -> Any:
            # Only the forked child fails: its error must come back and be raised.
            if os.getpid() != parent and os.fspath(path).endswith(("d0", "d1", "d2", "d3")):
                raise PermissionError(13, "Permission denied")
            return real(path)

        monkeypatch.setattr(os, "scandir", scandir)
        with pytest.raises(prvbuild.PrvBuildError, match=r"cannot read directory .*/d\d"):
            prvbuild.plan_prvdir(str(root), BuildOptions(cache=cache, workers=2))


def test_a_walking_child_that_dies_leaves_its_half_to_the_parent(
    scratch: Path, monkeypatch: pytest.MonkeyPatch, forks: list[int]
) -> None:
    root = scratch / "t"
    _many(root)
    parent = os.getpid()
    real = _fragments.check_part

    def check(*args: Any) -> Any:
        if os.getpid() != parent:
            os._exit(3)
        return real(*args)

    with HashCache(scratch / "c.db") as cache:
        expected = _planned(root, cache)
        monkeypatch.setattr(_fragments, "check_part", check)
        seen = _Counting(monkeypatch)
        forks.clear()
        plan = prvbuild.plan_prvdir(str(root), BuildOptions(cache=cache, workers=2))
        assert forks  # (it had started)
        assert plan.pending == {}  # everything checked, nothing to read
        assert len(plan.hits) == 4
        pieces: list[Any] = []
        prvbuild.write_planned(plan, pieces.extend)
        assert seen.take() == []
        assert b"".join(pieces) == expected


def test_big_files_in_a_tree_are_hashed_by_the_parent_with_byte_progress(scratch: Path) -> None:
    root = scratch / "t"
    _many(root, dirs=2, per_dir=300)
    big = {
        root / "d0" / "f150.big": os.urandom(hashing.BIG_FILE_BYTES + 3),
        root / "d1" / "zz.big": os.urandom(hashing.BIG_FILE_BYTES + 4001),
    }
    for path, data in big.items():
        path.write_bytes(data)
    _age(root)
    total = sum(path.stat().st_size for path in root.rglob("*") if path.is_file())
    with HashCache(scratch / "c.db") as cache:
        for _ in range(2):  # hashed (two workers, the big files left to the parent), then stored
            moved: list[tuple[int, int]] = []

            def progress(files: int, nbytes: int, moved: list[tuple[int, int]] = moved) -> None:
                moved.append((files, nbytes))

            data = build_prvdir_bytes(
                scan_directory(str(root)),
                BuildOptions(cache=cache, workers=2, on_progress=progress),
            )
            assert data == _model_bytes(root)
            assert sum(files for files, _ in moved) == 602
            assert sum(nbytes for _, nbytes in moved) == total
        # The big files' digests are rows of the database too.
        keys = [hashing.FileKey.from_stat(path.stat()) for path in big]
        assert len(cache.lookup_many(keys)) == 2


def test_a_subtree_or_a_file_of_a_described_tree_is_not_read_again(
    scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = scratch / "t"
    root.mkdir()
    _make(root)
    (root / "top").write_bytes(b"top")
    _age_one(root / "top")
    seen = _Counting(monkeypatch)
    with HashCache(scratch / "c.db") as cache:
        _run(root, cache, seen)  # the whole tree: its small files' digests are stored
        assert prvbuild.build_prv(str(root / "top"), BuildOptions(cache=cache)).size == 3
        assert seen.take() == []  # a file of the tree's root
        expected = _model_bytes(root / "d2")
        seen.take()
        sub = build_prvdir_bytes(
            scan_directory(str(root / "d2")), BuildOptions(cache=cache, workers=1)
        )
        assert seen.take() == []
        assert sub == expected
        prv = prvbuild.build_prv(str(root / "d3" / "f1"), BuildOptions(cache=cache))
        assert seen.take() == []
        assert prv.sha1 == hashlib.sha1(b"d3 1").hexdigest()
        assert prv.path == "f1"
        # A changed file is read, and its new digest is cached as a row.
        (root / "d3" / "f1").write_bytes(b"d3 !")
        _age_one(root / "d3" / "f1")
        assert prvbuild.build_prv(str(root / "d3" / "f1"), BuildOptions(cache=cache)).sha1 == (
            hashlib.sha1(b"d3 !").hexdigest()
        )
        assert seen.take() == ["d3/f1"]
