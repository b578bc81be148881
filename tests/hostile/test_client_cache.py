"""The content cache never shares a writable inode with a user's file (issue 11, class 3).

Against a real ``kbucket-hub`` and ``kbucket-host``: a downloaded file and its cache
entry are two inodes, so appending to the download leaves the entry as it was (and a
file made from the entry is a copy again); the cache stays within its bound
(``$KBUCKET_CACHE_SIZE``/``--cache-size``), least recently used content evicted first;
``--cache-info`` and ``--clear-cache`` show and empty it; ``--cache-size 0`` turns it
off; three clients at once leave only whole, verified entries within the bound; a
symlink planted in the cache directory is never written through (class 1).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.apps.test_download_support import wait_for_caching
from tests.e2e.procs import command
from tests.hostile.client_net import ClientNet, client_net, run_download

__all__ = ("client_net",)  # the fixture used by the tests below


def entry_of(cache: Path, sha1: str) -> Path:
    """Where the content cache under the user cache directory ``cache`` keeps ``sha1``."""
    return cache / "content" / sha1[:2] / sha1


def entries(cache: Path) -> dict[str, bytes]:
    """Every file below ``cache/content`` (name -> bytes)."""
    root = cache / "content"
    return {p.name: p.read_bytes() for p in root.rglob("*") if p.is_file()} if root.exists() else {}


def fetch(
    net: ClientNet, tmp_path: Path, name: str, out: Path, env: dict[str, str], *extra: str
) -> subprocess.CompletedProcess[str]:
    """Download the share's ``name`` to ``out`` and wait for its cache copy to end."""
    prv = tmp_path / (name.replace("/", "_") + ".prv")
    net.write_prv(prv, name)
    run = run_download(env, prv, out, "--hub", net.hub.url, "--json", *extra)
    assert run.returncode == 0, run.stderr
    wait_for_caching(run.stdout)
    return run


def test_appending_to_a_download_never_changes_the_cache(
    client_net: ClientNet, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    env = client_net.env(cache)
    data = client_net.data["big.bin"]
    out = tmp_path / "big.bin"
    fetch(client_net, tmp_path, "big.bin", out, env)
    entry = entry_of(cache, client_net.sha1("big.bin"))
    assert entry.read_bytes() == data
    assert entry.stat().st_ino != out.stat().st_ino
    with out.open("ab") as handle:
        handle.write(b"the user's own notes, appended\n")
    assert entry.read_bytes() == data

    # The second download comes from the cache, as a copy again.
    again = tmp_path / "again.bin"
    run = fetch(client_net, tmp_path, "big.bin", again, env)
    assert json.loads(run.stdout.splitlines()[-1])["from"] == "cache"
    assert again.stat().st_ino != entry.stat().st_ino
    with again.open("r+b") as handle:
        handle.write(b"overwritten in place")
    assert entry.read_bytes() == data


def test_least_recently_used_content_is_evicted_under_the_bound(
    client_net: ClientNet, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    env = client_net.env(cache, KBUCKET_CACHE_SIZE="450K")  # two of the 200 kB files
    sha1 = {n: client_net.sha1(f"lru/{n}.bin") for n in "abc"}
    fetch(client_net, tmp_path, "lru/a.bin", tmp_path / "a1", env)
    fetch(client_net, tmp_path, "lru/b.bin", tmp_path / "b1", env)
    assert sorted(entries(cache)) == sorted([sha1["a"], sha1["b"]])
    run = fetch(client_net, tmp_path, "lru/a.bin", tmp_path / "a2", env)  # a used again
    assert json.loads(run.stdout.splitlines()[-1])["from"] == "cache"
    fetch(client_net, tmp_path, "lru/c.bin", tmp_path / "c1", env)
    held = entries(cache)
    assert sorted(held) == sorted([sha1["a"], sha1["c"]])  # b was the least recently used
    assert sum(len(v) for v in held.values()) <= 450 * 1024
    # The bound as an option (it wins over the environment variable).
    fetch(client_net, tmp_path, "lru/b.bin", tmp_path / "b2", env, "--cache-size", "250K")
    assert sorted(entries(cache)) == [sha1["b"]]


def test_cache_info_and_clear_cache(client_net: ClientNet, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = client_net.env(cache)
    fetch(client_net, tmp_path, "lru/a.bin", tmp_path / "a", env)
    fetch(client_net, tmp_path, "small.csv", tmp_path / "s.csv", env)
    size = len(client_net.data["lru/a.bin"]) + len(client_net.data["small.csv"])

    info = run_download(env, "--cache-info")
    assert info.returncode == 0, info.stderr
    assert info.stderr.strip() == (
        f"Content cache {cache / 'content'}: 2 entries, 201.8 kB; at most 10.7 GB "
        "(--cache-size or $KBUCKET_CACHE_SIZE)"
    )
    as_json = run_download(env, "--cache-info", "--json", "--cache-size", "1G")
    assert json.loads(as_json.stdout) == {
        "event": "cache",
        "path": str(cache / "content"),
        "entries": 2,
        "bytes": size,
        "bound": 1024**3,
    }

    cleared = run_download(env, "--clear-cache")
    assert cleared.returncode == 0, cleared.stderr
    assert f"Cleared the content cache {cache / 'content'}: 2 entries" in cleared.stderr
    assert entries(cache) == {}
    assert "0 entries" in run_download(env, "--cache-info").stderr

    mixed = run_download(env, "--cache-info", tmp_path / "x.prv", tmp_path / "x")
    assert mixed.returncode == 2
    assert mixed.stderr.startswith("Error: --cache-info and --clear-cache take no PRV or OUT")


def test_cache_size_zero_turns_the_cache_off(client_net: ClientNet, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = client_net.env(cache, KBUCKET_CACHE_SIZE="0")
    run = fetch(client_net, tmp_path, "small.csv", tmp_path / "one.csv", env)
    assert '"caching"' not in run.stdout
    assert entries(cache) == {}
    again = fetch(client_net, tmp_path, "small.csv", tmp_path / "two.csv", env)
    assert json.loads(again.stdout.splitlines()[-1])["from"] == "network"
    bad = run_download(client_net.env(cache, KBUCKET_CACHE_SIZE="lots"), "--cache-info")
    assert bad.returncode == 2
    assert bad.stderr.startswith("Error: $KBUCKET_CACHE_SIZE: not a size: 'lots'")


def test_three_clients_at_once_leave_only_whole_entries_within_the_bound(
    client_net: ClientNet, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    env = client_net.env(cache, KBUCKET_CACHE_SIZE="500K")  # two of the three fit
    procs = []
    for name in ("lru/a.bin", "lru/b.bin", "lru/c.bin"):
        prv = tmp_path / (name.replace("/", "_") + ".prv")
        client_net.write_prv(prv, name)
        argv = command("kb-prv-download", str(prv), str(tmp_path / name[4:]), "--json")
        argv += ["--hub", client_net.hub.url]
        procs.append(
            subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        )
    try:
        outputs = [proc.communicate(timeout=90) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, (stdout, stderr) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, stderr
        wait_for_caching(stdout.decode())
    held = entries(cache)
    assert held, "nothing was cached"
    for name, data in held.items():
        assert hashlib.sha1(data).hexdigest() == name  # whole entries only, no temporaries
    assert sum(len(data) for data in held.values()) <= 500 * 1024


@pytest.mark.parametrize("planted", ["content", "content/XX"])
def test_a_symlink_planted_in_the_cache_directory_is_not_followed(
    client_net: ClientNet, tmp_path: Path, planted: str
) -> None:
    cache = tmp_path / "cache"
    sha1 = client_net.sha1("small.csv")
    link = cache / planted.replace("XX", sha1[:2])
    link.parent.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    link.symlink_to(outside, target_is_directory=True)
    env = client_net.env(cache)
    out = tmp_path / "s.csv"
    fetch(client_net, tmp_path, "small.csv", out, env)
    assert out.read_bytes() == client_net.data["small.csv"]
    assert list(outside.rglob("*")) == []
    assert link.is_symlink()
    info = run_download(env, "--cache-info")
    if planted == "content":
        assert info.returncode == 2
        assert info.stderr.startswith(f"Error: refusing to use {link}: it is a symlink")
    else:
        assert info.returncode == 0, info.stderr
        assert "0 entries" in info.stderr
    assert os.listdir(outside) == []
