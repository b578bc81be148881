"""``kb-prv-create`` end to end: real processes, exact bytes, bad input, the cache."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kbapps import hashing
from kbapps.cli import prv_create
from kbapps.hashing import digest, fragments
from kbproto.prv import parse_prv, parse_prvdir

ROOT = Path(__file__).resolve().parent.parent.parent
DATA = ROOT / "tests" / "data" / "prv"
HOUR_NS = 3600 * 10**9


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The environment for a run: a private hash cache, the source tree importable."""
    return {
        **os.environ,
        "KBUCKET_CACHE_DIR": str(tmp_path / "cache"),
        "PYTHONPATH": str(ROOT),
    }


def kb(
    env: dict[str, str], *args: str | Path, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``kb-prv-create`` as its own process (the module, with this interpreter)."""
    return subprocess.run(
        [sys.executable, "-m", "kbapps.cli.prv_create", *map(str, args)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _age(path: Path) -> None:
    """Date every file under ``path`` an hour back, outside the cache's racy window."""
    past = time.time_ns() - HOUR_NS
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        if not item.is_symlink():
            os.utime(item, ns=(past, past))


# --- exact output ----------------------------------------------------------------------


def test_installed_console_script_writes_the_spec_prv(tmp_path: Path, env: dict[str, str]) -> None:
    script = shutil.which("kb-prv-create") or str(Path(sys.executable).parent / "kb-prv-create")
    assert Path(script).exists(), "pip install . must install the kb-prv-create console script"
    shutil.copy(DATA / "sample.dat", tmp_path / "sample.dat")
    done = subprocess.run(
        [script, "sample.dat", "sample.dat.prv"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # One summary line, on stderr: files, bytes, seconds.
    assert re.fullmatch(r"Wrote sample\.dat\.prv: 1 file, 2\.5 kB, \d+\.\d s\n", done.stderr)
    written = (tmp_path / "sample.dat.prv").read_bytes()
    assert written == (DATA / "sample.dat.prv").read_bytes()
    data = (DATA / "sample.dat").read_bytes()
    prv = json.loads(written)
    assert prv["original_checksum"] == hashlib.sha1(data).hexdigest()
    assert prv["original_fcs"] == "head1000-" + hashlib.sha1(data[:1000]).hexdigest()
    assert prv["original_size"] == len(data)
    # The original tool's five fields first, as it wrote them, then chunks (issue 13).
    assert list(prv) == [
        "original_checksum",
        "original_size",
        "original_fcs",
        "original_path",
        "prv_version",
        "chunks",
    ]
    digest_list = hashlib.sha256(data).digest()  # one chunk: 2,500 bytes
    assert prv["chunks"] == {
        "algorithm": "sha256",
        "size": 1048576,
        "root": hashlib.sha256(digest_list).hexdigest(),
    }


def test_prv_to_stdout_with_an_absolute_path_holds_only_the_name(
    tmp_path: Path, env: dict[str, str]
) -> None:
    target = tmp_path / "deep" / "er"
    target.mkdir(parents=True)
    shutil.copy(DATA / "small.txt", target / "small.txt")
    done = kb(env, target / "small.txt", "-q")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == (DATA / "small.txt.prv").read_text()
    assert str(tmp_path) not in done.stdout


def test_prvdir_matches_the_hand_written_file(tmp_path: Path, env: dict[str, str]) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(DATA / "tree", tree)  # with .hidden and .hiddendir/, to be skipped
    assert (tree / ".hidden").exists()
    assert (tree / ".hiddendir" / "x.txt").exists()
    done = kb(env, tree, tmp_path / "tree.prvdir", "--quiet")
    assert (done.returncode, done.stderr) == (0, "")
    assert (tmp_path / "tree.prvdir").read_bytes() == (DATA / "tree.prvdir").read_bytes()


def test_readme_quick_start_job(tmp_path: Path, env: dict[str, str]) -> None:
    done = kb(env, ROOT / "examples" / "dataset_01", "dataset_01.prvdir", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, "")
    summary = r"Wrote dataset_01\.prvdir: 5 files, 66\.0 kB, \d+\.\d s\n"
    assert re.fullmatch(summary, done.stderr), done.stderr
    tree = parse_prvdir((tmp_path / "dataset_01.prvdir").read_bytes())
    listed = dict(tree.iter_files())
    for relpath, prv in listed.items():
        data = (ROOT / "examples" / "dataset_01" / relpath).read_bytes()
        assert prv.sha1 == hashlib.sha1(data).hexdigest()
        assert prv.path == relpath
        assert not prv.path.startswith("/")
    assert "recording/raw.mda" in listed


# --- what a directory walk includes ----------------------------------------------------


def test_walk_skips_dot_names_special_files_and_outside_symlinks(
    tmp_path: Path, env: dict[str, str]
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("not to be shared")
    tree = tmp_path / "d"
    (tree / "sub" / ".git").mkdir(parents=True)
    (tree / "sub" / ".git" / "config").write_text("x")
    (tree / "sub" / "data.bin").write_bytes(b"\1\2\3")
    (tree / ".kbucket").mkdir()
    (tree / ".kbucket" / "private.pem").write_text("key")
    (tree / "empty").mkdir()
    (tree / "link_out").symlink_to(outside)
    (tree / "link_out_dir").symlink_to(tmp_path)
    (tree / "link_in").symlink_to("sub/data.bin")
    (tree / "link_dir").symlink_to("sub")
    (tree / "link_loop").symlink_to(".")
    (tree / "link_key").symlink_to(".kbucket/private.pem")
    (tree / "dangling").symlink_to("nowhere")
    os.mkfifo(tree / "fifo")
    done = kb(env, tree, tmp_path / "d.prvdir")
    assert done.returncode == 0, done.stderr
    *warned, summary = done.stderr.splitlines()
    assert summary.startswith(f"Wrote {tmp_path / 'd.prvdir'}: 3 files, 9 B, ")
    warnings = sorted(warned)
    assert warnings == [
        "Warning: skipping dangling: it vanished or is a broken symlink",
        "Warning: skipping fifo: not a regular file or directory",
        f"Warning: skipping link_key: symlink points outside {tree} or into a hidden entry",
        "Warning: skipping link_loop: symlink loop",
        f"Warning: skipping link_out: symlink points outside {tree} or into a hidden entry",
        f"Warning: skipping link_out_dir: symlink points outside {tree} or into a hidden entry",
    ]
    result = parse_prvdir((tmp_path / "d.prvdir").read_bytes())
    paths = [path for path, _ in result.iter_files()]
    assert paths == ["link_in", "link_dir/data.bin", "sub/data.bin"]
    assert set(result.dirs) == {"empty", "link_dir", "sub"}
    digests = {prv.sha1 for _, prv in result.iter_files()}
    assert digests == {hashlib.sha1(b"\1\2\3").hexdigest()}
    text = (tmp_path / "d.prvdir").read_text()
    assert str(tmp_path) not in text
    assert "private" not in text
    assert "config" not in text


def test_output_inside_the_tree_is_not_listed_on_a_rerun(
    tmp_path: Path, env: dict[str, str]
) -> None:
    tree = tmp_path / "d"
    tree.mkdir()
    (tree / "a").write_text("a")
    for _ in range(2):
        done = kb(env, tree, tree / "self.prvdir")
        assert done.returncode == 0, done.stderr
    assert list(parse_prvdir((tree / "self.prvdir").read_bytes()).files) == ["a"]


def test_five_thousand_files_in_nested_directories(tmp_path: Path, env: dict[str, str]) -> None:
    _many_files(tmp_path, env, 5_000)


@pytest.mark.slow
def test_one_hundred_thousand_files(tmp_path: Path, env: dict[str, str]) -> None:
    _many_files(tmp_path, env, 100_000)


def _many_files(tmp_path: Path, env: dict[str, str], count: int) -> None:
    tree = tmp_path / "many"
    per_dir = 500
    for i in range(count):
        folder = tree / f"g{i // per_dir // 10:03d}" / f"d{i // per_dir:04d}"
        if i % per_dir == 0:
            folder.mkdir(parents=True)
        (folder / f"f{i:06d}.dat").write_bytes(b"%d\n" % i)
    done = kb(env, tree, tmp_path / "many.prvdir")
    assert done.returncode == 0, done.stderr[-2000:]
    # Not a terminal: at most one line per 10% milestone, and a final line; then the
    # summary line.
    *lines, summary = done.stderr.splitlines()
    assert all(line.startswith("Hashing: ") for line in lines), lines
    assert len(lines) <= 10
    assert summary.startswith(f"Wrote {tmp_path / 'many.prvdir'}: {count:,} files, ")
    result = parse_prvdir((tmp_path / "many.prvdir").read_bytes())
    listed = dict(result.iter_files())
    assert len(listed) == count
    for i in (0, count // 2, count - 1):
        relpath = f"g{i // per_dir // 10:03d}/d{i // per_dir:04d}/f{i:06d}.dat"
        assert listed[relpath].sha1 == hashlib.sha1(b"%d\n" % i).hexdigest()
        assert listed[relpath].path == relpath


# --- the hash cache --------------------------------------------------------------------


def test_second_run_reads_no_file_content(tmp_path: Path, env: dict[str, str]) -> None:
    tree = tmp_path / "d"
    tree.mkdir()
    files = [tree / f"f{i}.dat" for i in range(3)]
    for i, path in enumerate(files):
        path.write_bytes(b"original %d" % i)
    _age(tree)
    first = kb(env, tree, tmp_path / "1.prvdir")
    assert first.returncode == 0, first.stderr
    # A tree of small files is remembered in its fragment file, in the cache directory.
    assert len(list((tmp_path / "cache" / fragments.FRAGMENT_DIR).iterdir())) == 1
    # Change every file's bytes but keep its size and mtime: a run that read any file
    # would see the new content, so the old digests prove the cache answered.
    for i, path in enumerate(files):
        st = path.stat()
        path.write_bytes(b"replaced %d" % i)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    second = kb(env, tree, tmp_path / "2.prvdir")
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "2.prvdir").read_bytes() == (tmp_path / "1.prvdir").read_bytes()
    # A touched file has a new key and is read again.
    os.utime(files[0], ns=(0, 10**9))
    third = kb(env, tree, tmp_path / "3.prvdir")
    new = parse_prvdir((tmp_path / "3.prvdir").read_bytes())
    assert new.files["f0.dat"].sha1 == hashlib.sha1(b"replaced 0").hexdigest()
    assert new.files["f1.dat"].sha1 == hashlib.sha1(b"original 1").hexdigest()
    assert third.returncode == 0


def test_single_file_is_cached_too(tmp_path: Path, env: dict[str, str]) -> None:
    path = tmp_path / "x.dat"
    path.write_bytes(b"before")
    _age(path)
    assert kb(env, path).returncode == 0
    st = path.stat()
    path.write_bytes(b"after!")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    prv = parse_prv(kb(env, path).stdout)
    assert prv.sha1 == hashlib.sha1(b"before").hexdigest()


def test_a_corrupt_cache_is_a_warning_not_a_failure(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / hashing.HASH_CACHE_FILENAME).write_bytes(b"garbage" * 1000)
    shutil.copy(DATA / "small.txt", tmp_path / "small.txt")
    done = kb(env, tmp_path / "small.txt", "-q")  # -q: warnings still show
    assert done.returncode == 0
    assert done.stdout == (DATA / "small.txt.prv").read_text()
    assert done.stderr.startswith("Warning: hash cache disabled: ")
    assert len(done.stderr.splitlines()) == 1


# --- bad input: one line, exit 2 -------------------------------------------------------


def _one_error_line(done: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert done.returncode == code
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("Error: ")
    assert done.stdout == ""
    return lines[0]


def test_missing_file(tmp_path: Path, env: dict[str, str]) -> None:
    line = _one_error_line(kb(env, tmp_path / "nope.dat"))
    assert line == f"Error: {tmp_path / 'nope.dat'}: no such file or directory"


def test_out_with_the_wrong_suffix(tmp_path: Path, env: dict[str, str]) -> None:
    shutil.copy(DATA / "small.txt", tmp_path / "small.txt")
    line = _one_error_line(kb(env, tmp_path / "small.txt", tmp_path / "small.json"))
    assert "must end in .prv" in line
    line = _one_error_line(kb(env, tmp_path / "small.txt", tmp_path / "small.prvdir"))
    assert "must end in .prv" in line
    line = _one_error_line(kb(env, DATA / "tree", tmp_path / "tree.prv"))
    assert "must end in .prvdir" in line
    assert not list(tmp_path.glob("*.prv*"))


def test_directory_without_out(tmp_path: Path, env: dict[str, str]) -> None:
    line = _one_error_line(kb(env, DATA / "tree"))
    assert "is a directory" in line
    assert "OUT" in line


def test_unwritable_out_is_one_line(tmp_path: Path, env: dict[str, str]) -> None:
    shutil.copy(DATA / "small.txt", tmp_path / "small.txt")
    out = tmp_path / "no" / "such" / "dir" / "x.prv"
    line = _one_error_line(kb(env, tmp_path / "small.txt", out))
    assert f"cannot write {out}" in line


def test_usage_errors_and_help(env: dict[str, str]) -> None:
    line = _one_error_line(kb(env, "a", "b", "c"))
    assert "unexpected extra argument" in line
    line = _one_error_line(kb(env, "--frobnicate", "a"))
    assert "--frobnicate" in line
    line = _one_error_line(kb(env))
    assert "PATH" in line
    shown = kb(env, "--help")
    assert shown.returncode == 0
    assert "Usage" in shown.stdout
    assert ".prvdir" in shown.stdout


def _make_unreadable(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``path`` unreadable: by its mode, and, for root (whom modes do not stop),
    by refusing to open it at the one place the hasher opens files."""
    path.chmod(0)
    if os.geteuid() == 0:
        # The worker keeps the real function, to tell whether a test replaced it: it
        # must have been imported before the replacement, whatever ran before.
        importlib.import_module("kbapps.prvbuild._worker")
        real_open = digest.open_for_hashing

        def refuse(target: str | os.PathLike[str]) -> int:
            if os.fspath(target).endswith(path.name):
                raise PermissionError(13, "Permission denied", os.fspath(target))
            return real_open(target)

        monkeypatch.setattr(digest, "open_for_hashing", refuse)


def test_unreadable_file_in_a_directory_is_named(
    tmp_path: Path,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("KBUCKET_CACHE_DIR", env["KBUCKET_CACHE_DIR"])
    tree = tmp_path / "tree"
    shutil.copytree(DATA / "tree", tree)
    _make_unreadable(tree / "sub" / "b.bin", monkeypatch)
    code = prv_create.main([str(tree), str(tmp_path / "t.prvdir")])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err == "Error: cannot read sub/b.bin: Permission denied\n"
    assert not (tmp_path / "t.prvdir").exists()


def test_unreadable_single_file_is_named(
    tmp_path: Path,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("KBUCKET_CACHE_DIR", env["KBUCKET_CACHE_DIR"])
    path = tmp_path / "secret.dat"
    path.write_bytes(b"x")
    _make_unreadable(path, monkeypatch)
    code = prv_create.main([str(path)])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err == f"Error: cannot read {path}: Permission denied\n"
    assert captured.out == ""


def test_unreadable_directory_is_named(
    tmp_path: Path,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("KBUCKET_CACHE_DIR", env["KBUCKET_CACHE_DIR"])
    tree = tmp_path / "tree"
    shutil.copytree(DATA / "tree", tree)
    locked = tree / "sub" / "deeper"
    locked.chmod(0)
    if os.geteuid() == 0:
        real_scandir = os.scandir

        def refuse(target: str) -> object:
            if os.fspath(target).endswith("deeper"):
                raise PermissionError(13, "Permission denied", target)
            return real_scandir(target)

        monkeypatch.setattr(os, "scandir", refuse)
    try:
        code = prv_create.main([str(tree), str(tmp_path / "t.prvdir")])
    finally:
        locked.chmod(0o755)
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err == f"Error: cannot read directory {locked}: Permission denied\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["sample.dat"],
        ["sample.dat", "out.prv"],
        ["-q", "sample.dat", "out.prv"],
        ["sample.dat", "--quiet"],
        ["tree", "t.prvdir", "-q"],
    ],
)
def test_typer_parses_what_the_fast_path_parses(argv: list[str]) -> None:
    from kbapps.cli._typer_app import parse_with_typer

    fast = prv_create.parse(argv)
    assert isinstance(fast, prv_create.CreateArgs)
    assert parse_with_typer(prv_create.make_app(), argv, prv_create.PROG) == fast


@pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="posix_fadvise is Linux's")
def test_out_starts_its_writeback_range_by_range_as_it_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # So that the rename over an existing OUT has little left to flush (ext4): each
    # write asks for the writeback of what it added, never again for what came before.
    asked: list[tuple[int, int, int]] = []
    monkeypatch.setattr(
        os, "posix_fadvise", lambda fd, at, n, advice: asked.append((at, n, advice))
    )
    out = tmp_path / "t.prvdir"
    out.write_bytes(b"old")
    target = prv_create._AtomicFile(str(out))
    target.write([b"x" * 1000, memoryview(b"y" * 500)])
    target.write([b"z" * 20])
    target.commit()
    assert out.read_bytes() == b"x" * 1000 + b"y" * 500 + b"z" * 20
    assert asked == [(0, 1500, os.POSIX_FADV_DONTNEED), (1500, 20, os.POSIX_FADV_DONTNEED)]
