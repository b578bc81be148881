"""Faults with real processes on 127.0.0.1 (issue 6 part 2, docs/reliability.md, docs/security.md).

- a hub in the middle of the tree is killed (SIGKILL) during downloads: a client that
  can reach another path finishes with the exact bytes, a client whose only path ran
  through that hub fails with exit 3 (no hang); the hub restarts on its port and the
  tree and indexes recover without restarting the share;
- a file truncated or rewritten (same size, mtime restored) after it was indexed is
  never served under its old SHA-1 (``/sha1``, ETag, find -> download);
- a download killed at random points resumes, run after run, to the exact bytes;
- a share started while its parent hub is down joins it when it comes up.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.e2e.procs import (
    UNREACHABLE,
    Node,
    Procs,
    command,
    free_port,
    iter_json_lines,
    sha1_of,
    wait_for,
    write_pattern,
)

#: Bound on a client run (a hang guard, not a timing assertion).
CLIENT_TIMEOUT = 120.0


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    """GET ``url``: (status, lower-case headers, body), error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return (
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                response.read(),
            )
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def find(node: Node, sha1: str) -> dict[str, Any]:
    status, _, body = get(f"{node.url}/find/{sha1}")
    assert status == 200, body
    answer = json.loads(body)
    assert isinstance(answer, dict)
    return answer


def wait_found(node: Node, sha1: str, timeout: float = 30.0) -> None:
    wait_for(lambda: find(node, sha1).get("found") is True, timeout, f"{sha1} at {node.url}", 0.2)


def save_prv(hub: Node, share: Node, path: str, out: Path) -> Path:
    status, _, body = get(f"{hub.url}/{share.node_id}/prv/{path}")
    assert status == 200, body
    out.write_bytes(body)
    return out


def client_env(procs: Procs, name: str) -> dict[str, str]:
    env = dict(procs.env)
    env["KBUCKET_CACHE_DIR"] = str(procs.workdir / f"cache-{name}")  # no shared cache hits
    return env


def start_download(
    procs: Procs, prv: Path, out: Path, hub: Node, name: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command("kb-prv-download", str(prv), str(out), "--hub", hub.url, "--json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=client_env(procs, name),
    )


def part_size(out: Path) -> int:
    try:
        return Path(f"{out}.part").stat().st_size
    except FileNotFoundError:
        return 0


def test_mid_tree_hub_killed_during_downloads_then_restarted(procs: Procs) -> None:
    work = procs.workdir
    size = 24 * 1024 * 1024
    both = write_pattern(work / "S" / "both.bin", size, seed=11)
    only = write_pattern(work / "S" / "only_s.bin", size, seed=12)
    write_pattern(work / "T" / "both.bin", size, seed=11)
    a = procs.node("kbucket-hub", work / "A", name="hub-A")
    b = procs.node("kbucket-hub", work / "B", name="hub-B", parent=a)
    # Both shares are "behind firewalls": every byte goes through the hubs.
    s = procs.node(
        "kbucket-host", work / "S", "--listen-url", UNREACHABLE, name="share-S", parent=b
    )
    t = procs.node(
        "kbucket-host", work / "T", "--listen-url", UNREACHABLE, name="share-T", parent=a
    )
    s_pid = s.proc.popen.pid
    wait_found(a, sha1_of(only))
    wait_found(a, sha1_of(both))
    prv_both = save_prv(a, s, "both.bin", work / "both.prv")
    prv_only = save_prv(a, s, "only_s.bin", work / "only.prv")
    out_both, out_only = work / "both.out", work / "only.out"

    c_both = start_download(procs, prv_both, out_both, a, "both")
    c_only = start_download(procs, prv_only, out_only, a, "only")
    stopped = False
    try:
        # Mid-download: bytes have arrived. Freeze S so its streams stall (the kill is
        # then certainly mid-download), kill B the hard way, thaw S.
        wait_for(lambda: part_size(out_only) > 0, 60, "only_s.bin bytes", step=0.002)
        s.proc.signal(signal.SIGSTOP)
        stopped = True
        b.proc.popen.kill()
        b.proc.popen.wait(10)
        killed_at = time.monotonic()
        s.proc.signal(signal.SIGCONT)
        stopped = False
        out, err = c_only.communicate(timeout=CLIENT_TIMEOUT)
        only_failed_after = time.monotonic() - killed_at
        assert c_only.returncode == 3, (c_only.returncode, err)
        assert "Traceback" not in err
        assert not out_only.exists()
        out, err = c_both.communicate(timeout=CLIENT_TIMEOUT)
        assert c_both.returncode == 0, err
        assert out_both.read_bytes() == both
        sources = [
            (e["event"], e.get("url"), e.get("offset", e.get("resumed_from")))
            for e in iter_json_lines(out)
            if e.get("event") in ("source", "done")
        ]
    finally:
        if stopped:
            s.proc.signal(signal.SIGCONT)
        for client in (c_only, c_both):
            if client.poll() is None:
                client.kill()
                client.wait(10)
    print(
        f"only-path client failed (exit 3) {only_failed_after:.1f} s after the kill; "
        f"other client's sources: {sources}"
    )
    # The tree without B: S's content is gone from A, T's is still there.
    wait_for(lambda: find(a, sha1_of(only)).get("found") is False, 30, "S's index dropped at A")
    assert find(a, sha1_of(both))["found"] is True

    # Restart B on its port: S (never restarted) rejoins, B rejoins A, indexes recover.
    mark = len(s.proc.lines)
    b2 = procs.node("kbucket-hub", work / "B", name="hub-B", parent=a, port=b.port)
    s.proc.wait_line(r"Connected to parent hub: hub-B", timeout=60, start=mark)
    wait_found(a, sha1_of(only), timeout=60)
    assert s.proc.popen.pid == s_pid
    assert s.proc.popen.poll() is None
    assert t.proc.popen.poll() is None
    # And the failed download now resumes and completes through the restarted hub.
    done = subprocess.run(
        command("kb-prv-download", str(prv_only), str(out_only), "--hub", a.url, "--json"),
        capture_output=True,
        text=True,
        env=client_env(procs, "only"),
        timeout=CLIENT_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    assert out_only.read_bytes() == only
    assert b2.proc.popen.poll() is None


def rewrite_same_size_keep_mtime(path: Path, data: bytes) -> None:
    """Rewrite in place with the same size and restore the mtime (``cp -p`` style)."""
    before = os.stat(path)
    assert len(data) == before.st_size
    time.sleep(0.05)  # ctime ticks with a coarse clock: let it move on
    with open(path, "r+b") as f:
        f.write(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_changed_files_are_never_served_under_their_old_sha1(procs: Procs) -> None:
    work = procs.workdir
    size = 2 * 1024 * 1024
    old_trunc = write_pattern(work / "S" / "trunc.bin", size, seed=21)
    old_rewrite = write_pattern(work / "S" / "rewrite.bin", size, seed=22)
    a = procs.node("kbucket-hub", work / "A", name="hub-A")
    s = procs.node("kbucket-host", work / "S", name="share-S", parent=a)
    wait_found(a, sha1_of(old_trunc))
    wait_found(a, sha1_of(old_rewrite))
    prvs = {
        "trunc.bin": save_prv(a, s, "trunc.bin", work / "trunc.prv"),
        "rewrite.bin": save_prv(a, s, "rewrite.bin", work / "rewrite.prv"),
    }
    old = {"trunc.bin": sha1_of(old_trunc), "rewrite.bin": sha1_of(old_rewrite)}

    with open(work / "S" / "trunc.bin", "r+b") as f:
        f.truncate(size // 2)
    new_rewrite = write_pattern(work / "S" / "rewrite.new", size, seed=23)
    os.unlink(work / "S" / "rewrite.new")
    rewrite_same_size_keep_mtime(work / "S" / "rewrite.bin", new_rewrite)

    # Right after the change (before the indexer saw it) and for a while after.
    checks = 0
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline or checks < 3:
        for name, sha1 in old.items():
            for node in (s, a):
                status, headers, body = get(f"{node.url}/sha1/{sha1}")
                assert status != 200 or sha1_of(body) == sha1, (node.url, name, status)
                status, headers, body = get(f"{node.url}/{s.node_id}/download/{name}")
                assert status == 200
                assert headers.get("etag") != f'"{sha1}"', (node.url, name, headers)
                etag = headers.get("etag")
                assert etag is None or etag == f'"{sha1_of(body)}"', (etag, name)
                status, headers, body = get(f"{node.url}/{s.node_id}/prv/{name}")
                if status == 200:
                    assert json.loads(body)["original_checksum"] != sha1, (node.url, name)
        checks += 1
        time.sleep(0.3)
    # find -> download with the old .prv: never exit 0, never the wrong bytes in OUT.
    for name, prv in prvs.items():
        out = work / f"{name}.out"
        done = subprocess.run(
            command("kb-prv-download", str(prv), str(out), "--hub", a.url, "--json"),
            capture_output=True,
            text=True,
            env=client_env(procs, name),
            timeout=CLIENT_TIMEOUT,
        )
        assert done.returncode in (1, 3), (name, done.returncode, done.stderr)
        assert not out.exists()
        assert "Traceback" not in done.stderr
    # The new content is what the share serves now, under its own SHA-1.
    wait_found(a, sha1_of(new_rewrite))
    status, _, body = get(f"{a.url}/sha1/{sha1_of(new_rewrite)}")
    assert (status, body) == (200, new_rewrite)


def test_download_cut_at_random_points_resumes_to_exact_bytes(procs: Procs) -> None:
    work = procs.workdir
    size = 32 * 1024 * 1024
    data = write_pattern(work / "S" / "big.bin", size, seed=31)
    a = procs.node("kbucket-hub", work / "A", name="hub-A")
    s = procs.node(
        "kbucket-host", work / "S", "--listen-url", UNREACHABLE, name="share-S", parent=a
    )
    wait_found(a, sha1_of(data))
    prv = save_prv(a, s, "big.bin", work / "big.prv")
    out = work / "big.out"
    rng = random.Random(6)
    cuts: list[int] = []
    for _ in range(6):
        client = start_download(procs, prv, out, a, "cut")
        target = part_size(out) + rng.randrange(1, 6 * 1024 * 1024)
        try:
            wait_for(
                lambda: part_size(out) >= target or client.poll() is not None,  # noqa: B023
                60,
                "bytes to arrive",
                step=0.001,
            )
        finally:
            client.kill()
            client.wait(10)
            for pipe in (client.stdout, client.stderr):
                if pipe is not None:
                    pipe.close()
        if out.exists():
            break  # finished before the cut
        cuts.append(part_size(out))
    done = subprocess.run(
        command("kb-prv-download", str(prv), str(out), "--hub", a.url, "--json"),
        capture_output=True,
        text=True,
        env=client_env(procs, "cut"),
        timeout=CLIENT_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == data
    print(f"cut after {cuts} bytes of {size}")
    assert len(cuts) >= 2, cuts


def test_parent_down_at_share_start_is_joined_when_it_comes_up(procs: Procs) -> None:
    work = procs.workdir
    data = write_pattern(work / "S" / "late.bin", 100_000, seed=41)
    port = free_port()
    hub_url = f"http://127.0.0.1:{port}"
    s = procs.node("kbucket-host", work / "S", "--parent-hub", hub_url, name="share-S")
    s.proc.wait_line(rf"Cannot reach parent hub {hub_url}")
    assert not s.proc.has_line("Connected to parent hub")
    # The share serves meanwhile.
    status, _, body = get(f"{s.url}/sha1/{sha1_of(data)}")
    assert (status, body) == (200, data)
    a = procs.node("kbucket-hub", work / "A", name="hub-A", port=port)
    s.proc.wait_line(r"Connected to parent hub: hub-A", timeout=60)
    wait_found(a, sha1_of(data))
    status, _, body = get(f"{a.url}/sha1/{sha1_of(data)}")
    assert (status, body) == (200, data)
