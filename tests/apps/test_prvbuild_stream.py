"""``write_tree``: a tree never described is hashed while it is walked, on two
processes, and gives the model's bytes; failures (a file, a directory, a worker that
dies) end the same way as in the planned path."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from kbapps.hashing import HashCache, digest
from kbapps.prvbuild import (
    BuildOptions,
    PrvBuildError,
    _worker,
    build_prvdir,
    scan_directory,
    write_tree,
)
from kbapps.prvbuild import _emit as emit_module
from kbproto.prv import serialize_prvdir

HOUR_NS = 3600 * 10**9


@pytest.fixture
def scratch() -> Generator[Path, None, None]:
    # Not pytest's tmp_path: its base can sit under a dot-directory, which the walk
    # refuses symlinks into.
    path = Path(tempfile.mkdtemp(prefix="kbstream-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _model_bytes(root: Path) -> bytes:
    return serialize_prvdir(build_prvdir(scan_directory(str(root)), BuildOptions(workers=1)))


def _tree(root: Path) -> int:
    """A tree of 3 x 300 files in nested directories, an empty directory, files in
    the root, a symlinked file and a dot-file; returns the number of files."""
    count = 0
    for d, folder in enumerate([root / "b", root / "a" / "deep", root / "a" / "c"]):
        folder.mkdir(parents=True)
        for i in range(300):
            (folder / f"f{i:03d}").write_bytes(b"%d/%d\n" % (d, i) * (i % 7))
            count += 1
    (root / "empty").mkdir()
    (root / "top.txt").write_bytes(b"top")
    (root / ".hidden").write_bytes(b"never listed")
    (root / "link").symlink_to(root / "a" / "c" / "f001")
    past = time.time_ns() - HOUR_NS
    for item in root.rglob("*"):
        os.utime(item, ns=(past, past), follow_symlinks=False)
    return count + 2


def _write(root: Path, options: BuildOptions) -> tuple[bytes, list[int]]:
    pieces: list[Any] = []
    totals: list[int] = []
    write_tree(str(root), pieces.extend, options, totals.append)
    return b"".join(pieces), totals


def test_a_new_tree_is_hashed_while_walked_and_gives_the_model_bytes(scratch: Path) -> None:
    root = scratch / "t"
    files = _tree(root)
    progress: list[tuple[int, int]] = []

    def report(nfiles: int, nbytes: int) -> None:
        progress.append((nfiles, nbytes))

    with HashCache(scratch / "c.db") as cache:
        options = BuildOptions(cache=cache, workers=2, on_progress=report)
        data, totals = _write(root, options)
        assert data == _model_bytes(root)
        assert totals == [files]
        assert sum(n for n, _ in progress) == files
        assert sum(b for _, b in progress) == sum(
            p.stat().st_size for p in root.rglob("*") if p.is_file() and p.name[0] != "."
        )
        # The fragments it stored serve the re-run (the planned path): same bytes.
        again, totals = _write(root, options._replace(on_progress=None))
        assert again == data
        assert totals == [files]


def test_without_a_cache_or_a_second_process_the_bytes_are_the_same(scratch: Path) -> None:
    root = scratch / "t"
    _tree(root)
    expected = _model_bytes(root)
    assert _write(root, BuildOptions(workers=1))[0] == expected
    assert _write(root, BuildOptions(workers=3))[0] == expected


def test_a_small_tree_never_forks(scratch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = scratch / "t"
    (root / "d").mkdir(parents=True)
    for i in range(20):
        (root / "d" / f"f{i}").write_bytes(b"%d" % i)

    def no_fork() -> int:
        raise AssertionError("forked for 20 files")

    monkeypatch.setattr(os, "fork", no_fork)
    assert _write(root, BuildOptions(workers=2))[0] == _model_bytes(root)


def test_a_hashing_worker_that_dies_leaves_its_chunks_to_the_parent(
    scratch: Path, monkeypatch: pytest.MonkeyPatch, forks: list[int]
) -> None:
    root = scratch / "t"
    _tree(root)
    expected = _model_bytes(root)
    parent = os.getpid()
    real = _worker.TreeWorker.process

    def die(self: Any, segments: Any) -> Any:
        if os.getpid() != parent:
            os._exit(3)  # the worker dies holding its chunk
        return real(self, segments)

    monkeypatch.setattr(_worker.TreeWorker, "process", die)
    assert _write(root, BuildOptions(workers=2))[0] == expected
    assert forks


def test_an_unreadable_file_is_named_even_when_a_worker_reads_it(
    scratch: Path, monkeypatch: pytest.MonkeyPatch, forks: list[int]
) -> None:
    root = scratch / "t"
    _tree(root)
    real = digest.open_for_hashing

    def refuse(path: str | os.PathLike[str]) -> int:
        if os.fspath(path).endswith("a/c/f200"):
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(digest, "open_for_hashing", refuse)  # the workers too (fork)
    for workers in (1, 2):
        with pytest.raises(PrvBuildError, match="cannot read a/c/f200: Permission denied"):
            _write(root, BuildOptions(workers=workers))
    assert forks  # (the second run had a worker)


def test_an_unreadable_directory_stops_the_walk_and_the_workers(
    scratch: Path, monkeypatch: pytest.MonkeyPatch, forks: list[int]
) -> None:
    root = scratch / "t"
    _tree(root)
    # The last directory listed (after "a" and its children have been queued and
    # the worker forked); refused the way a mode-000 directory is, even for root.
    real = os.scandir

    def scandir(path: Any) -> Any:
        if os.fspath(path).endswith("/b"):
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(PrvBuildError, match=r"cannot read directory .*/b: Permission denied"):
        _write(root, BuildOptions(workers=2))
    assert forks  # the worker had started...
    for pid in forks:  # ...and was reaped
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def test_the_document_is_written_in_pieces_as_directories_complete(
    scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = scratch / "t"
    _tree(root)
    monkeypatch.setattr(emit_module, "OUT_PIECE_BYTES", 1)  # a write per directory
    calls: list[int] = []
    pieces: list[Any] = []

    def write(more: list[Any]) -> None:
        calls.append(len(more))
        pieces.extend(more)

    write_tree(str(root), write, BuildOptions(workers=2))
    assert b"".join(pieces) == _model_bytes(root)
    # Each directory with files (root, a/c, a/deep, b) as it completes, then the end.
    assert len(calls) >= 5


def test_big_files_of_a_streamed_tree_are_left_to_the_parent(
    scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = scratch / "t"
    files = _tree(root)
    monkeypatch.setattr(_worker, "BIG_FILE_BYTES", 30)  # the files of 30+ bytes
    big = [p for p in root.rglob("f*") if p.stat().st_size >= 30]
    assert big
    with HashCache(scratch / "c.db") as cache:
        data, totals = _write(root, BuildOptions(cache=cache, workers=2))
        assert data == _model_bytes(root)
        assert totals == [files]
        assert _write(root, BuildOptions(cache=cache, workers=2))[0] == data


def test_a_racy_file_is_read_again_but_not_its_quiet_neighbours(
    scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = scratch / "t"
    _tree(root)
    (root / "b" / "f007").write_bytes(b"just written")  # within the racy window
    opened: list[str] = []
    real = digest.open_for_hashing

    def spy(path: str | os.PathLike[str]) -> int:
        opened.append(os.fspath(path))
        return real(path)

    with HashCache(scratch / "c.db") as cache:
        first = _write(root, BuildOptions(cache=cache, workers=1))[0]
        assert first == _model_bytes(root)
        monkeypatch.setattr(digest, "open_for_hashing", spy)
        assert _write(root, BuildOptions(cache=cache, workers=1))[0] == first
    assert opened == [str(root / "b" / "f007")]


def test_out_and_its_temporary_file_inside_the_tree_stay_out(
    scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kbapps.cli import prv_create

    root = scratch / "t"
    _small_dirs(root)
    (root / "z").mkdir()
    (root / "z" / "data").write_bytes(b"z")
    out = root / "z" / "t.prvdir"
    monkeypatch.setattr(emit_module, "OUT_PIECE_BYTES", 1)
    monkeypatch.setenv("KBUCKET_CACHE_DIR", str(scratch / "cache"))
    prv_create.run(str(root), str(out))
    first = out.read_bytes()
    assert b"t.prvdir" not in first  # neither OUT's name nor its temporary file's
    assert b'"z/data"' in first
    prv_create.run(str(root), str(out))  # OUT exists now: left out too
    assert out.read_bytes() == first
    assert sorted(p.name for p in (root / "z").iterdir()) == ["data", "t.prvdir"]


def _small_dirs(root: Path) -> None:
    # Many small directories before "z": the first ones are hashed and written out
    # long before the walk lists z.
    for d in range(300):
        (root / f"d{d:03d}").mkdir(parents=True)
        for i in range(10):
            (root / f"d{d:03d}" / f"f{i}").write_bytes(b"%d %d" % (d, i))


def test_a_cache_directory_inside_the_tree_does_not_describe_its_growing_file(
    scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = scratch / "t"
    _small_dirs(root)
    monkeypatch.setattr(emit_module, "OUT_PIECE_BYTES", 1)
    with HashCache(root / "zcache" / "c.db", lazy=True) as cache:
        data, _ = _write(root, BuildOptions(cache=cache, workers=2))
    assert b".tmp" not in data
    assert b'"zcache": {' in data  # the directory, without the file being written
