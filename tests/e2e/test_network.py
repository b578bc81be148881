"""The running network, end to end, with real processes on 127.0.0.1 (issue 4 "Done when").

Topology (module-wide, started once)::

    hub A  <-  hub B  <-  share S   (S advertises http://127.0.0.1:9: "behind a firewall")
      ^
      +-----  share T

S holds a 50 MiB file; every download of it must go through the hubs' proxy, since
S's own URL is unreachable.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.procs import (
    UNREACHABLE,
    Node,
    Procs,
    command,
    iter_json_lines,
    sha1_of,
    wait_for,
    write_pattern,
)

BIG_SIZE = 50 * 1024 * 1024
BIG_NAME = "big.bin"


@dataclass
class Net:
    procs: Procs
    a: Node
    b: Node
    s: Node
    t: Node
    big: bytes
    big_sha1: str
    secret: Path
    workdir: Path


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    work = tmp_path_factory.mktemp("net")
    procs = Procs(work)
    try:
        s_dir = work / "S"
        big = write_pattern(s_dir / BIG_NAME, BIG_SIZE, seed=1)
        (s_dir / "sub").mkdir()
        (s_dir / "sub" / "small.txt").write_text("small file in a sub-directory\n")
        secret = work / "outside-secret.txt"
        secret.write_text("TOP-SECRET-OUTSIDE-THE-SHARE\n")
        (s_dir / "escape.txt").symlink_to(secret)
        (work / "T").mkdir()
        (work / "T" / "t.txt").write_text("a file of share T\n")
        # No relay cache: this module pins the proxy path (finds, resumes with S frozen);
        # a hub answering from its cache is tests/e2e/test_relay_cache.py.
        nocache = ("--cache-size", "0")
        a = procs.node("kbucket-hub", work / "A", *nocache, name="hub-A")
        # B and T start together; S as soon as B listens.
        b = procs.launch(
            "kbucket-hub", work / "B", *nocache, name="hub-B", parent=a, wait_joined=False
        )()
        t_ready = procs.launch("kbucket-host", work / "T", name="share-T", parent=a)
        s = procs.node("kbucket-host", s_dir, "--listen-url", UNREACHABLE, name="share-S", parent=b)
        b.proc.wait_line(r"Connected to parent hub: hub-A$")
        t = t_ready()
        yield Net(procs, a, b, s, t, big, sha1_of(big), secret, work)
    finally:
        procs.close()


def get(
    url: str, headers: dict[str, str] | None = None, timeout: float = 20.0
) -> tuple[int, dict[str, str], bytes]:
    """GET ``url``; returns status, headers (lower-case names) and body, also for errors."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return (
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                response.read(),
            )
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def get_json(url: str) -> Any:
    status, _, body = get(url)
    assert status == 200, (url, status, body[:300])
    value = json.loads(body)
    assert isinstance(value, dict)
    return value


def wait_found(node: Node, sha1: str, timeout: float) -> Any:
    """Poll ``/find/SHA1`` at ``node`` until found; the answer."""
    answer: Any = {}

    def found() -> bool:
        nonlocal answer
        answer = get_json(f"{node.url}/find/{sha1}")
        return answer.get("found") is True

    wait_for(found, timeout, f"{sha1} findable at {node.url}", step=0.2)
    return answer


def listen(node: Node) -> str:
    """The listen URL the node advertises (``.`` = http://localhost:PORT)."""
    return f"http://localhost:{node.port}"


def prv_file(net: Net, path: Path) -> Path:
    """The ``.prv`` of S's big file, as S serves it through hub A."""
    status, _, body = get(f"{net.a.url}/{net.s.node_id}/prv/{BIG_NAME}")
    assert status == 200, body
    prv = json.loads(body)
    assert prv["original_checksum"] == net.big_sha1
    assert prv["original_size"] == BIG_SIZE
    path.write_bytes(body)
    return path


def client_env(net: Net, name: str) -> dict[str, str]:
    """An environment with its own download cache (so every download hits the network)."""
    env = dict(net.procs.env)
    env["KBUCKET_CACHE_DIR"] = str(net.workdir / f"cache-{name}")
    return env


def run_download(
    net: Net, prv: Path, out: Path, hub: Node, name: str
) -> tuple[int, list[dict[str, object]], str]:
    done = subprocess.run(
        command("kb-prv-download", str(prv), str(out), "--hub", hub.url, "--json"),
        capture_output=True,
        text=True,
        env=client_env(net, name),
        timeout=120,
    )
    return done.returncode, list(iter_json_lines(done.stdout)), done.stderr


# --- finds --------------------------------------------------------------------------


def test_find_at_every_node_orders_urls_from_the_share_up(net: Net) -> None:
    sid = net.s.node_id
    path = f"/{sid}/download/{BIG_NAME}"
    own = UNREACHABLE + path
    expected = {
        "S": [own],
        "B": [own, listen(net.b) + path],
        "A": [own, listen(net.b) + path, listen(net.a) + path],
        "T": [own, listen(net.b) + path, listen(net.a) + path, listen(net.t) + path],
    }
    for label, node in (("A", net.a), ("B", net.b), ("S", net.s), ("T", net.t)):
        answer = get_json(f"{node.url}/find/{net.big_sha1}")
        assert answer == {
            "success": True,
            "found": True,
            "size": BIG_SIZE,
            "urls": expected[label],
            "results": [{"kbshare_id": sid, "size": BIG_SIZE, "path": BIG_NAME}],
        }, label
    missing = get_json(f"{net.a.url}/find/{'0' * 40}")
    assert missing == {"success": True, "found": False}


# --- downloads through the proxy ----------------------------------------------------


@pytest.mark.parametrize("at", ["A", "B", "T"])
def test_download_big_file_through_the_hubs(net: Net, at: str) -> None:
    hub = {"A": net.a, "B": net.b, "T": net.t}[at]
    prv = prv_file(net, net.workdir / f"big-{at}.prv")
    out = net.workdir / f"out-{at}.bin"
    started = time.monotonic()
    code, events, stderr = run_download(net, prv, out, hub, f"dl-{at}")
    elapsed = time.monotonic() - started
    assert code == 0, stderr
    done = [e for e in events if e["event"] == "done"]
    assert len(done) == 1
    # S's own URL is unreachable: the bytes came through a hub's proxy.
    assert isinstance(done[0]["url"], str)
    assert not done[0]["url"].startswith(UNREACHABLE)
    assert done[0]["transferred"] == BIG_SIZE
    assert out.stat().st_size == BIG_SIZE
    assert out.read_bytes() == net.big
    print(f"download at {at}: {BIG_SIZE / elapsed / 1e6:.0f} MB/s ({elapsed:.2f} s)")


def test_range_through_two_hubs_is_the_exact_slice(net: Net) -> None:
    sid = net.s.node_id
    first, last = 1_000_003, 9_437_183
    status, headers, body = get(
        f"{net.a.url}/{sid}/download/{BIG_NAME}", {"Range": f"bytes={first}-{last}"}
    )
    assert status == 206
    assert headers["content-range"] == f"bytes {first}-{last}/{BIG_SIZE}"
    assert body == net.big[first : last + 1]
    assert headers["etag"] == f'"{net.big_sha1}"'
    # /sha1/SHA1 at A finds the content through the tree and serves a range of it too.
    status, headers, body = get(f"{net.a.url}/sha1/{net.big_sha1}", {"Range": "bytes=-4096"})
    assert status == 206
    assert body == net.big[-4096:]
    status, _, _ = get(f"{net.a.url}/{sid}/download/{BIG_NAME}", {"Range": f"bytes={BIG_SIZE}-"})
    assert status == 416


def test_readdir_and_nodeinfo_of_s_through_a(net: Net) -> None:
    sid = net.s.node_id
    listing = get_json(f"{net.a.url}/{sid}/api/readdir/")
    assert listing["success"] is True
    files = {f["name"]: f for f in listing["files"]}
    assert set(files) == {BIG_NAME}  # the symlink out of the share is not listed
    assert files[BIG_NAME]["size"] == BIG_SIZE
    assert files[BIG_NAME]["prv"]["original_checksum"] == net.big_sha1
    assert listing["dirs"] == [{"name": "sub"}]
    sub = get_json(f"{net.a.url}/{sid}/api/readdir/sub")
    assert [f["name"] for f in sub["files"]] == ["small.txt"]
    info = get_json(f"{net.a.url}/{sid}/api/nodeinfo")
    assert info["success"] is True
    assert info["info"]["node_id"] == sid
    assert info["info"]["node_type"] == "leaf"
    assert info["info"]["name"] == "share-S"
    assert info["info"]["listen_url"] == UNREACHABLE
    assert info["parent_hub_info"]["node_id"] == net.b.node_id
    hub_info = get_json(f"{net.a.url}/{net.a.node_id}/api/nodeinfo")
    assert net.b.node_id in hub_info["child_hubs"]
    assert net.t.node_id in hub_info["child_leaf_nodes"]
    # The hubs' consoles named their children as they joined.
    assert net.a.proc.has_line(rf"Child hub joined: hub-B \({net.b.node_id}\)$")
    assert net.b.proc.has_line(rf"Child share joined: share-S \({sid}\)$")


# --- resume -------------------------------------------------------------------------


def test_download_killed_half_way_resumes_from_part(net: Net) -> None:
    prv = prv_file(net, net.workdir / "resume.prv")
    out = net.workdir / "resume.bin"
    part = Path(f"{out}.part")
    env = client_env(net, "resume")
    client = subprocess.Popen(
        command("kb-prv-download", str(prv), str(out), "--hub", net.a.url, "--json"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    paused = False
    try:
        # As soon as bytes arrive, freeze S so the download stalls half-way, then kill
        # the client the hard way.
        wait_for(lambda: part.exists() and part.stat().st_size > 0, 30, "OUT.part", step=0.002)
        net.s.proc.signal(signal.SIGSTOP)
        paused = True
        sizes: list[int] = []

        def settled() -> bool:
            sizes.append(part.stat().st_size)
            return len(sizes) > 5 and sizes[-1] == sizes[-6]

        wait_for(settled, 10, "OUT.part to stop growing", step=0.05)
        client.kill()
        client.wait(10)
    finally:
        if paused:
            net.s.proc.signal(signal.SIGCONT)
        if client.poll() is None:
            client.kill()
            client.wait(10)
    kept = part.stat().st_size
    assert 0 < kept < BIG_SIZE, kept
    assert not out.exists()
    done = subprocess.run(
        command("kb-prv-download", str(prv), str(out), "--hub", net.a.url, "--json"),
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    finished = [e for e in iter_json_lines(done.stdout) if e["event"] == "done"]
    assert finished[0]["resumed_from"] == kept
    assert finished[0]["transferred"] == BIG_SIZE - kept
    assert out.read_bytes() == net.big


# --- path safety (docs/security.md) against the real share process ---------------------------


def raw_get(node: Node, target: str) -> tuple[int, bytes]:
    """One raw HTTP/1.1 GET with ``target`` sent byte for byte (no client normalising)."""
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as sock:
        sock.sendall(
            f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        )
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    data = b"".join(chunks)
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_share_refuses_every_unsafe_path(net: Net) -> None:
    sid = net.s.node_id
    private = (net.s.directory / ".kbucket" / "private.pem").read_bytes()
    secret = net.secret.read_bytes()
    bad = [
        f"/{sid}/download/.kbucket/private.pem",
        f"/{sid}/download/%2ekbucket/private.pem",
        f"/{sid}/download/%2Ekbucket%2Fprivate.pem",
        f"/{sid}/download/sub/../.kbucket/private.pem",
        f"/{sid}/download/sub/%2e%2e/.kbucket/private.pem",
        f"/{sid}/download/sub%2f..%2f..%2foutside-secret.txt",
        f"/{sid}/download/..%2foutside-secret.txt",
        f"/{sid}/download/%2e%2e/outside-secret.txt",
        f"/{sid}/download/sub%5c..%5c..%5coutside-secret.txt",
        f"/{sid}/download/%2f{net.secret.as_posix().lstrip('/')}",
        f"/{sid}/download//{net.secret.as_posix().lstrip('/')}",
        f"/{sid}/download/{net.secret.as_posix()}",
        f"/{sid}/download/escape.txt",
        f"/{sid}/download/%65scape.txt",
        f"/{sid}/api/readdir/.kbucket",
        f"/{sid}/api/readdir/%2e%2e",
        f"/{sid}/prv/.kbucket/private.pem",
        f"/{sid}/download/%00",
    ]
    for target in bad:
        status, body = raw_get(net.s, target)
        assert 400 <= status < 500, (target, status)
        assert b"PRIVATE KEY" not in body, target
        assert private not in body, target
        assert secret not in body, target
        assert str(net.workdir).encode() not in body, target
    # Through the hub the same refusals hold.
    for target in bad[:3]:
        status, body = raw_get(net.a, target)
        assert 400 <= status < 500, (target, status)
        assert b"PRIVATE KEY" not in body
    # The ordinary file next to them is served.
    status, body = raw_get(net.s, f"/{sid}/download/sub/small.txt")
    assert (status, body) == (200, b"small file in a sub-directory\n")


# --- a share that goes away mid-download ----------------------------------------------


def test_share_frozen_mid_download_fails_the_client_and_hubs_keep_serving(net: Net) -> None:
    procs = net.procs
    data = write_pattern(net.workdir / "S2" / "lost.bin", 40 * 1024 * 1024, seed=2)
    s2 = procs.node(
        "kbucket-host",
        net.workdir / "S2",
        "--listen-url",
        UNREACHABLE,
        name="share-S2",
        parent=net.b,
    )
    try:
        sha1 = sha1_of(data)
        wait_found(net.a, sha1, 10)
        status, _, prv_body = get(f"{net.a.url}/{s2.node_id}/prv/lost.bin")
        assert status == 200
        prv = net.workdir / "lost.prv"
        prv.write_bytes(prv_body)
        out = net.workdir / "lost.bin"
        part = Path(f"{out}.part")
        client = subprocess.Popen(
            command("kb-prv-download", str(prv), str(out), "--hub", net.a.url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=client_env(net, "lost"),
        )
        try:
            wait_for(lambda: part.exists() and part.stat().st_size > 0, 30, "OUT.part", step=0.002)
            # The share hangs (no FIN, no RST): only the heartbeat can tell.
            s2.proc.signal(signal.SIGSTOP)
            frozen_at = time.monotonic()
            stdout, stderr = client.communicate(timeout=60)
            waited = time.monotonic() - frozen_at
        finally:
            if client.poll() is None:
                client.kill()
                client.wait(10)
        assert client.returncode == 3, (stdout, stderr)
        # Progress lines may come first (the client got some bytes); no "done" line.
        errors = [line for line in stderr.splitlines() if line.startswith("Error: ")]
        assert len(errors) == 1, stderr
        assert "lost.prv" in errors[0] or sha1 in errors[0] or "lost.bin" in errors[0], stderr
        assert "done" not in stderr, stderr
        assert not out.exists()
        print(f"client failed {waited:.1f} s after the share froze")
        # B dropped S2 (heartbeat), and says so.
        net.b.proc.wait_line(rf"Child share left: share-S2 \({s2.node_id}\)")
        # The hubs keep serving the rest of the network.
        t_sha1 = sha1_of((net.t.directory / "t.txt").read_bytes())
        answer = get_json(f"{net.b.url}/find/{t_sha1}")
        assert answer["found"] is True
        status, _, body = get(f"{net.b.url}/sha1/{t_sha1}")
        assert (status, body) == (200, b"a file of share T\n")
        status, _, body = get(f"{net.a.url}/{net.s.node_id}/download/sub/small.txt")
        assert status == 200
        assert get_json(f"{net.a.url}/find/{sha1}") == {"success": True, "found": False}
    finally:
        s2.proc.signal(signal.SIGKILL)
        s2.proc.signal(signal.SIGCONT)


# --- restart without re-hashing; a file added while running ----------------------------


def test_share_restart_rejoins_without_rehashing_and_new_files_are_found(net: Net) -> None:
    procs = net.procs
    r_dir = net.workdir / "R"
    one = write_pattern(r_dir / "one.bin", 3 * 1024 * 1024, seed=3)
    write_pattern(r_dir / "deep" / "two.bin", 1024 * 1024, seed=4)
    first = procs.node("kbucket-host", r_dir, name="share-R", parent=net.a)
    first.proc.wait_line(r"Hashed 2 files; 0 unchanged since the last run\.$")
    wait_found(net.a, sha1_of(one), 10)
    assert first.proc.stop() == 0
    assert "Traceback" not in first.proc.stderr()
    net.a.proc.wait_line(rf"Child share left: share-R \({first.node_id}\)")

    again = procs.node("kbucket-host", r_dir, name="share-R", parent=net.a)
    assert again.proc.has_line(r"Indexed 2 files\.$")
    again.proc.wait_line(r"Hashed 0 files; 2 unchanged since the last run\.$")
    assert not again.proc.has_line(r"Hashing ")
    assert again.node_id == first.node_id
    answer = wait_found(net.a, sha1_of(one), 10)
    assert answer["results"] == [{"kbshare_id": again.node_id, "size": len(one), "path": "one.bin"}]

    added = write_pattern(r_dir / "later" / "three.bin", 200_000, seed=5)
    start = time.monotonic()
    answer = wait_found(net.a, sha1_of(added), 10)
    print(f"added file findable at the top hub after {time.monotonic() - start:.1f} s")
    assert answer["results"] == [
        {"kbshare_id": again.node_id, "size": len(added), "path": "later/three.bin"}
    ]
    assert again.proc.stop() == 0
