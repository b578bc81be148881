"""Smoke tests of the commands on trio (``KBUCKET_ANYIO_BACKEND=trio``), real processes.

kbtransport runs on any anyio backend; its asyncio-only speed paths fall back to the
portable ones (``kbtransport._accel``). Topology, started once::

    hub A (trio)  <-  share S (trio, "behind a firewall": http://127.0.0.1:9)
        ^
        +--------  share T (asyncio: a trio node and an asyncio node talk)

The clients (``kb-prv-find``, ``kb-prv-download``) run on trio too.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.procs import UNREACHABLE, Node, Procs, command, sha1_of, write_pattern

SIZE = 6 * 1024 * 1024 + 3


@dataclass
class TrioNet:
    procs: Procs
    trio_env: dict[str, str]
    a: Node
    s: Node
    t: Node
    s_data: bytes
    t_data: bytes
    workdir: Path


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrioNet]:
    work = tmp_path_factory.mktemp("trio")
    procs = Procs(work)
    trio_env = {**procs.env, "KBUCKET_ANYIO_BACKEND": "trio"}
    try:
        s_data = write_pattern(work / "S" / "s.bin", SIZE, seed=5)
        t_data = write_pattern(work / "T" / "t.bin", SIZE // 3, seed=6)
        a = procs.node("kbucket-hub", work / "A", name="hub-A", env=trio_env)
        t_ready = procs.launch("kbucket-host", work / "T", name="share-T", parent=a)
        s = procs.node(
            "kbucket-host",
            work / "S",
            "--listen-url",
            UNREACHABLE,
            name="share-S",
            parent=a,
            env=trio_env,
        )
        t = t_ready()
        for node in (a, s):
            assert "Note: running on trio ($KBUCKET_ANYIO_BACKEND)" in node.proc.stderr()
        assert "running on trio" not in t.proc.stderr()
        yield TrioNet(procs, trio_env, a, s, t, s_data, t_data, work)
    finally:
        procs.close()


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        data: bytes = response.read()
        return data


def prv_of(net: TrioNet, node: Node, name: str) -> Path:
    path = net.workdir / f"{name}.prv"
    path.write_bytes(fetch(f"{net.a.url}/{node.node_id}/prv/{name}"))
    return path


def client(net: TrioNet, *args: str, cache: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(*args),
        capture_output=True,
        text=True,
        env={**net.trio_env, "KBUCKET_CACHE_DIR": str(net.workdir / cache)},
        timeout=120,
    )


def test_a_trio_hub_finds_and_proxies_a_trio_share(net: TrioNet) -> None:
    prv = prv_of(net, net.s, "s.bin")
    found = client(net, "kb-prv-find", str(prv), "--hub", net.a.url, cache="find")
    assert found.returncode == 0, found.stderr
    assert found.stderr == "Note: running on trio ($KBUCKET_ANYIO_BACKEND)\n"
    assert f"/{net.s.node_id}/download/s.bin" in found.stdout
    # S's own URL is unreachable: the bytes come through hub A, trio on every side.
    out = net.workdir / "s.out"
    done = client(net, "kb-prv-download", str(prv), str(out), "--hub", net.a.url, cache="dl-s")
    assert done.returncode == 0, done.stderr
    assert "Note: running on trio" in done.stderr
    assert out.read_bytes() == net.s_data
    # The content route checks the bytes against their SHA-1 as they stream.
    assert fetch(f"{net.a.url}/sha1/{sha1_of(net.s_data)}") == net.s_data


def test_a_trio_client_downloads_straight_from_an_asyncio_share(net: TrioNet) -> None:
    prv = prv_of(net, net.t, "t.bin")
    out = net.workdir / "t.out"
    done = client(
        net, "kb-prv-download", str(prv), str(out), "--hub", net.a.url, "--json", cache="dl-t"
    )
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == net.t_data
    sources = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
    used = [e["url"] for e in sources if e.get("event") == "source"]
    # T's own listen URL first (".": http://localhost:PORT), and it delivered.
    assert used == [f"http://localhost:{net.t.port}/{net.t.node_id}/download/t.bin"]


def test_a_trio_share_joins_leaves_and_stops_cleanly(net: TrioNet) -> None:
    write_pattern(net.workdir / "U" / "u.bin", 1000, seed=7)
    u = net.procs.node(
        "kbucket-host", net.workdir / "U", name="share-U", parent=net.a, env=net.trio_env
    )
    info = json.loads(fetch(f"{net.a.url}/{net.a.node_id}/api/nodeinfo"))
    assert {net.s.node_id, net.t.node_id, u.node_id} <= set(info["child_leaf_nodes"])
    assert u.proc.stop() == 0  # SIGTERM: a clean stop on trio
    net.a.proc.wait_line(rf"Child \w+ left: share-U \({u.node_id}\)")


def test_an_unknown_backend_is_one_line_and_exit_2(net: TrioNet, tmp_path: Path) -> None:
    prv = tmp_path / "x.prv"
    prv.write_text(
        json.dumps(
            {
                "original_checksum": "0" * 40,
                "original_size": 1,
                "original_fcs": "head1000-" + "0" * 40,
                "original_path": "x",
                "prv_version": "0.11",
            }
        )
    )
    done = subprocess.run(
        command("kb-prv-find", str(prv), "--hub", net.a.url),
        capture_output=True,
        text=True,
        env={**net.procs.env, "KBUCKET_ANYIO_BACKEND": "curio"},
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "Error: KBUCKET_ANYIO_BACKEND must be one of asyncio, trio, not 'curio'"
    ]
