"""``kb-prv-download`` never touches a user's files wrongly (issue 11, classes 1 and 2).

Class 1: a symlink (or hard link) planted where the client writes — ``OUT.part``, the
sidecar and its temporary file, ``OUT/.kbucket-partial`` and the partial files in it,
a directory of a ``.prvdir`` swapped for a symlink while a download runs — never
redirects a write: the file outside stays byte for byte as it was, and the download
refuses with one line (exit 2) or proceeds safely. Real ``kbucket-hub`` and
``kbucket-host`` processes serve the content; the attacker's own server
(``FakeSource``) plays a slow source where timing matters.

Class 2: an OUT holding other content (or a symlink) is refused with one line naming
it (exit 2) and replaced only with ``--force``; a ``.prvdir`` lists every conflicting
file and changes nothing; an OUT already holding the right bytes is kept as it is and
reported as such.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from kbproto.prv import serialize_prvdir
from tests.e2e.procs import command
from tests.hostile.client_net import (
    ClientNet,
    FakeSource,
    Served,
    client_net,
    fake_source,
    run_download,
    tree_of,
    wait_until,
)

__all__ = ("client_net", "fake_source")  # fixtures used by the tests below

#: What a user keeps outside OUT, and must find unchanged.
PRECIOUS = b"the user's own file, outside OUT: never to be written\n" * 20


def precious_file(tmp_path: Path) -> Path:
    """A file outside OUT, in a directory of its own."""
    path = tmp_path / "outside" / "precious.txt"
    path.parent.mkdir()
    path.write_bytes(PRECIOUS)
    return path


def assert_one_error_line(run: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit 2, no traceback, and the last stderr line is an ``Error:`` naming ``words``."""
    assert "Traceback" not in run.stderr, run.stderr
    assert run.returncode == 2, (run.returncode, run.stderr)
    line = run.stderr.strip().splitlines()[-1]
    assert line.startswith("Error: "), run.stderr
    for word in words:
        assert word in line, (word, line)


# --- class 1: a .prv's OUT.part, its sidecar and the sidecar's temporary file ----------


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_a_planted_link_at_out_part_is_refused(
    client_net: ClientNet, tmp_path: Path, link: str
) -> None:
    client_net.write_prv(tmp_path / "f.prv", "big.bin")
    precious = precious_file(tmp_path)
    out_dir = tmp_path / "dl"
    out_dir.mkdir()
    part = out_dir / "big.bin.part"
    if link == "symlink":
        part.symlink_to(precious)
    else:
        os.link(precious, part)
    env = client_net.env(tmp_path / "cache")
    run = run_download(env, tmp_path / "f.prv", out_dir / "big.bin", "--hub", client_net.hub.url)
    assert precious.read_bytes() == PRECIOUS
    assert_one_error_line(run, str(part), "symlink" if link == "symlink" else "hard link")
    assert not (out_dir / "big.bin").exists()


def test_a_symlink_at_the_sidecar_s_temporary_file_is_not_followed(
    client_net: ClientNet, tmp_path: Path
) -> None:
    client_net.write_prv(tmp_path / "f.prv", "big.bin")
    precious = precious_file(tmp_path)
    out_dir = tmp_path / "dl"
    out_dir.mkdir()
    planted = out_dir / "big.bin.part.json.tmp"
    planted.symlink_to(precious)
    env = client_net.env(tmp_path / "cache")
    run = run_download(env, tmp_path / "f.prv", out_dir / "big.bin", "--hub", client_net.hub.url)
    assert run.returncode == 0, run.stderr
    assert precious.read_bytes() == PRECIOUS
    assert (out_dir / "big.bin").read_bytes() == client_net.data["big.bin"]
    assert planted.is_symlink()  # not even removed: temporary names are unpredictable


def test_a_sidecar_planted_as_a_symlink_to_a_fifo_neither_hangs_nor_is_followed(
    client_net: ClientNet, tmp_path: Path
) -> None:
    client_net.write_prv(tmp_path / "f.prv", "big.bin")
    fifo = tmp_path / "outside-fifo"
    os.mkfifo(fifo)
    out_dir = tmp_path / "dl"
    out_dir.mkdir()
    (out_dir / "big.bin.part.json").symlink_to(fifo)
    env = client_net.env(tmp_path / "cache")
    args = (tmp_path / "f.prv", out_dir / "big.bin", "--hub", client_net.hub.url)
    try:
        run = run_download(env, *args, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("kb-prv-download hung opening a FIFO planted at the sidecar")
    assert run.returncode == 0, run.stderr
    assert (out_dir / "big.bin").read_bytes() == client_net.data["big.bin"]
    assert sorted(os.listdir(out_dir)) == ["big.bin"]


# --- class 1: a .prvdir's partial directory and the directories it creates ---------------


def test_a_symlink_at_a_partial_file_is_refused_and_the_rest_is_downloaded(
    client_net: ClientNet, tmp_path: Path
) -> None:
    files = client_net.write_prvdir(tmp_path / "t.prvdir", "tree")
    precious = precious_file(tmp_path)
    out = tmp_path / "out"
    (out / ".kbucket-partial").mkdir(parents=True)
    planted = out / ".kbucket-partial" / f"{client_net.sha1('tree/sub/z.bin')}.part"
    planted.symlink_to(precious)
    env = client_net.env(tmp_path / "cache")
    run = run_download(env, tmp_path / "t.prvdir", out, "--hub", client_net.hub.url)
    assert precious.read_bytes() == PRECIOUS
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    assert f"refusing to write {planted}: it is a symlink" in run.stderr
    assert not (out / "sub" / "z.bin").exists()
    for rel in ("x.txt", "sub/y.txt"):
        assert (out / rel).read_bytes() == files[rel]


def test_a_symlinked_partial_directory_is_refused_with_one_line(
    client_net: ClientNet, tmp_path: Path
) -> None:
    client_net.write_prvdir(tmp_path / "t.prvdir", "tree")
    outside = precious_file(tmp_path).parent
    before = (sorted(os.listdir(outside)), outside.stat().st_mtime_ns)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".kbucket-partial").symlink_to(outside)
    env = client_net.env(tmp_path / "cache")
    run = run_download(env, tmp_path / "t.prvdir", out, "--hub", client_net.hub.url)
    assert_one_error_line(run, str(out / ".kbucket-partial"), "symlink")
    assert (sorted(os.listdir(outside)), outside.stat().st_mtime_ns) == before
    assert sorted(os.listdir(out)) == [".kbucket-partial"]  # nothing downloaded


def test_a_directory_swapped_for_a_symlink_during_the_download_is_not_followed(
    client_net: ClientNet, fake_source: FakeSource, tmp_path: Path
) -> None:
    # The source sends 100 kB, then waits while the attacker swaps OUT/sub for a
    # symlink to a directory outside; then it sends the rest and the client installs.
    data = client_net.data["big.bin"]
    prvdir = tmp_path / "t.prvdir"
    tree = tree_of({"sub/big.bin": data})
    prvdir.write_bytes(serialize_prvdir(tree))
    sha1 = client_net.sha1("big.bin")
    served = Served(data, fast=100_000)
    fake_source.urls[sha1] = [fake_source.add("pause", served)]
    outside = precious_file(tmp_path).parent
    out = tmp_path / "out"
    env = client_net.env(tmp_path / "cache")
    proc = subprocess.Popen(
        command("kb-prv-download", str(prvdir), str(out), "--hub", fake_source.base),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        part = out / ".kbucket-partial" / f"{sha1}.part"
        wait_until(lambda: part.exists() and part.stat().st_size >= 100_000, "the first bytes")
        sub = out / "sub"
        if sub.is_dir() and not sub.is_symlink():
            sub.rmdir()
        sub.symlink_to(outside)
        served.release.set()
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert sorted(os.listdir(outside)) == ["precious.txt"]
    assert (outside / "precious.txt").read_bytes() == PRECIOUS
    assert proc.returncode == 2, stderr
    assert "Traceback" not in stderr
    assert f"refusing to use {sub}: it is a symlink" in stderr


# --- class 2: no silent overwrite ------------------------------------------------------


def test_a_file_holding_other_content_is_refused_and_replaced_only_with_force(
    client_net: ClientNet, tmp_path: Path
) -> None:
    client_net.write_prv(tmp_path / "x.prv", "small.csv")
    existing = tmp_path / "existing.csv"
    existing.write_bytes(b"id,value\n1,mine\n")
    env = client_net.env(tmp_path / "cache")
    hub = ("--hub", client_net.hub.url)
    run = run_download(env, tmp_path / "x.prv", existing, *hub)
    assert_one_error_line(run, str(existing), "other content", "--force")
    assert len(run.stderr.strip().splitlines()) == 1
    assert existing.read_bytes() == b"id,value\n1,mine\n"
    assert sorted(set(os.listdir(tmp_path)) - {"cache"}) == ["existing.csv", "x.prv"]

    forced = run_download(env, tmp_path / "x.prv", existing, *hub, "--force")
    assert forced.returncode == 0, forced.stderr
    assert existing.read_bytes() == client_net.data["small.csv"]


def test_a_symlink_at_out_is_refused_and_with_force_replaced_never_followed(
    client_net: ClientNet, tmp_path: Path
) -> None:
    client_net.write_prv(tmp_path / "x.prv", "small.csv")
    precious = precious_file(tmp_path)
    out = tmp_path / "out.csv"
    out.symlink_to(precious)
    env = client_net.env(tmp_path / "cache")
    hub = ("--hub", client_net.hub.url)
    run = run_download(env, tmp_path / "x.prv", out, *hub)
    assert_one_error_line(run, str(out), "symlink")
    assert out.is_symlink()

    forced = run_download(env, tmp_path / "x.prv", out, *hub, "--force")
    assert forced.returncode == 0, forced.stderr
    assert not out.is_symlink()
    assert out.read_bytes() == client_net.data["small.csv"]
    assert precious.read_bytes() == PRECIOUS


def test_prvdir_conflicts_are_all_listed_and_nothing_changes_without_force(
    client_net: ClientNet, tmp_path: Path
) -> None:
    files = client_net.write_prvdir(tmp_path / "t.prvdir", "tree")
    env = client_net.env(tmp_path / "cache")
    hub = ("--hub", client_net.hub.url)
    out = tmp_path / "copy"
    assert run_download(env, tmp_path / "t.prvdir", out, *hub).returncode == 0
    # The user edits two files and deletes a third.
    (out / "x.txt").write_bytes(b"my notes\n")
    (out / "sub" / "y.txt").write_bytes(b"my other notes\n")
    (out / "sub" / "z.bin").unlink()
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    run = run_download(env, tmp_path / "t.prvdir", out, *hub, "--json")
    assert "Traceback" not in run.stderr
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert lines[0].startswith("Error: 2 files in ")
    assert "nothing was changed" in lines[0]
    assert sorted(line.strip() for line in lines[1:]) == [
        f"{out / 'sub' / 'y.txt'} holds other content",
        f"{out / 'x.txt'} holds other content",
    ]
    errors = [json.loads(line) for line in run.stdout.splitlines()]
    assert sorted(e["path"] for e in errors if e["event"] == "error") == ["sub/y.txt", "x.txt"]
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert not (out / "sub" / "z.bin").exists()
    assert sorted(os.listdir(out)) == ["sub", "x.txt"]

    forced = run_download(env, tmp_path / "t.prvdir", out, *hub, "--force")
    assert forced.returncode == 0, forced.stderr
    for rel, data in files.items():
        assert (out / rel).read_bytes() == data


def test_an_out_already_holding_the_right_bytes_is_kept_and_reported_as_such(
    client_net: ClientNet, tmp_path: Path
) -> None:
    client_net.write_prv(tmp_path / "x.prv", "small.csv")
    same = tmp_path / "same.csv"
    same.write_bytes(client_net.data["small.csv"])
    kept = same.stat()
    env = client_net.env(tmp_path / "cache")
    run = run_download(env, tmp_path / "x.prv", same, "--hub", client_net.hub.url, "--json")
    assert run.returncode == 0, run.stderr
    assert run.stderr.strip() == (
        f"Already present: {same} (1.8 kB) holds this content; kept as it is"
    )
    (done,) = [json.loads(line) for line in run.stdout.splitlines()][-1:]
    assert done["event"] == "done"
    assert done["from"] == "present"
    assert "url" not in done
    after = same.stat()
    assert (after.st_ino, after.st_mtime_ns) == (kept.st_ino, kept.st_mtime_ns)
