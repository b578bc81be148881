"""A hub's relay cache with real processes on 127.0.0.1 (issue 12 "Done when").

Topology (per test)::

    hub A (--cache-size)  <-  hub B  <-  share S   (S advertises http://127.0.0.1:9)

Every download of S's files goes through the hubs' proxy; A keeps what it proxied whole
and verified in ``A/.kbucket/cache`` and answers it again with S stopped; B (a cache of
its default size) keeps what it relayed by content id for A.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.procs import UNREACHABLE, Node, Procs, command, sha1_of, wait_for, write_pattern
from tests.e2e.test_network import get, get_json, listen, wait_found

MiB = 1024 * 1024


@dataclass
class Relay:
    procs: Procs
    a: Node
    b: Node
    s: Node
    files: dict[str, bytes]


def start(procs: Procs, work: Path, cache_size: str, files: dict[str, int]) -> Relay:
    contents = {
        name: write_pattern(work / "S" / name, size, seed)
        for seed, (name, size) in enumerate(files.items(), start=1)
    }
    a = procs.node("kbucket-hub", work / "A", "--cache-size", cache_size, name="hub-A")
    b = procs.node("kbucket-hub", work / "B", name="hub-B", parent=a)
    s = procs.node(
        "kbucket-host", work / "S", "--listen-url", UNREACHABLE, name="share-S", parent=b
    )
    relay = Relay(procs, a, b, s, contents)
    for data in contents.values():
        wait_found(a, sha1_of(data), 30)
    return relay


def cache_info(hub: Node) -> dict[str, Any]:
    info = get_json(f"{hub.url}/{hub.node_id}/api/nodeinfo")["cache"]
    assert isinstance(info, dict)
    return info


def wait_entries(hub: Node, entries: int) -> dict[str, Any]:
    """Poll nodeinfo until the cache holds ``entries`` (a fill commits just after the
    body's last byte went out)."""
    wait_for(lambda: cache_info(hub)["entries"] == entries, 20, f"{entries} cache entries")
    return cache_info(hub)


def share_sent(relay: Relay) -> int:
    """Bytes of its files S sent into the tree (its nodeinfo, asked through A)."""
    info = get_json(f"{relay.a.url}/{relay.s.node_id}/api/nodeinfo")
    sent = info["metrics"]["bytes_served_to_network"]
    assert isinstance(sent, int)
    return sent


def prv_find(hub: Node, sha1: str) -> list[str]:
    """The URLs ``kb-prv-find sha1://SHA1 --hub HUB`` prints."""
    done = subprocess.run(
        command("kb-prv-find", f"sha1://{sha1}", "--hub", hub.url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode in (0, 1), done.stderr
    return done.stdout.split()


def head(url: str) -> tuple[int, dict[str, str]]:
    """HEAD ``url``: status and headers (lower-case names)."""
    with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=20) as r:
        return r.status, {k.lower(): v for k, v in r.headers.items()}


def prv_download(relay: Relay, work: Path, name: str) -> bytes:
    """``kb-prv-download`` of S's ``name`` through A (its own content cache, so every
    run asks the network); the bytes it wrote."""
    prv = work / f"{name}.prv"
    status, _, body = get(f"{relay.a.url}/{relay.s.node_id}/prv/{name}")
    assert status == 200, body
    prv.write_bytes(body)
    out = work / f"{name}.{len(list(work.glob(name + '.*')))}"
    env = dict(relay.procs.env, KBUCKET_CACHE_DIR=str(out) + ".cache")
    done = subprocess.run(
        command("kb-prv-download", str(prv), str(out), "--hub", relay.a.url),
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return out.read_bytes()


def restart_a(relay: Relay, work: Path, *args: str) -> Node:
    assert relay.a.proc.stop() == 0
    relay.a = relay.procs.node("kbucket-hub", work / "A", *args, name="hub-A")
    return relay.a


def test_a_file_downloaded_once_is_served_again_with_the_share_stopped(
    procs: Procs, tmp_path: Path
) -> None:
    relay = start(procs, tmp_path, "64M", {"f.bin": 3 * MiB + 17})
    data = relay.files["f.bin"]
    sha1 = sha1_of(data)
    status, _, body = get(f"{relay.a.url}/sha1/{sha1}")
    assert (status, body == data) == (200, True)
    assert wait_entries(relay.a, 1)["bytes"] == len(data)
    saved = json.loads((tmp_path / "A" / ".kbucket" / "kbnode.json").read_text())
    assert saved["cache_size"] == 64 * MiB

    # B relayed /S/sha1/SHA1 for A: its core handed it to its app, which cached it too.
    assert wait_entries(relay.b, 1)["bytes"] == len(data)
    # kb-prv-find at A lists A itself first, then B (both with their own URL).
    own_url = f"{listen(relay.a)}/{relay.a.node_id}/download/{sha1}"
    b_url = f"{listen(relay.b)}/{relay.b.node_id}/download/{sha1}"
    found = prv_find(relay.a, sha1)
    assert found.index(own_url) < found.index(b_url)

    assert relay.s.proc.stop() == 0
    holders = [relay.a.node_id, relay.b.node_id]

    def sources() -> list[str]:
        answer = get_json(f"{relay.a.url}/find/{sha1}")
        return [r["kbshare_id"] for r in answer.get("results", [])]

    def only_hubs_hold_it() -> bool:
        return sources() == holders

    # S gone, A and B still sources: they announced what their caches hold.
    wait_for(only_hubs_hold_it, 30, "S gone, A and B the only sources")
    status, headers, body = get(f"{relay.a.url}/sha1/{sha1}")
    assert (status, body == data, headers["etag"]) == (200, True, f'"{sha1}"')
    status, _, body = get(f"{relay.a.url}/sha1/{sha1}", {"Range": "bytes=5-14"})
    assert (status, body) == (206, data[5:15])
    # Both hubs' own URLs serve the bytes from their caches.
    for url in (own_url, b_url):
        status, _, body = get(url)
        assert (status, body == data) == (200, True)
    assert cache_info(relay.b)["hits"] == 1

    # A second hub on A's directory is refused by the node lock (the cache too).
    second = procs.start(
        "hub-A2", command("kbucket-hub", str(tmp_path / "A"), "--auto", "--port", "0")
    )
    assert second.popen.wait(30) == 2
    assert "already served by" in second.stderr()

    # A restart keeps the cache: same bytes, the share still stopped.
    a = restart_a(relay, tmp_path)
    assert cache_info(a)["entries"] == 1
    # (B joins the new A after its own back-off: A alone is enough here.)
    wait_for(lambda: sources()[:1] == [a.node_id], 20, "A announcing its entry after the restart")
    status, _, body = get(f"{a.url}/sha1/{sha1}")
    assert (status, body == data) == (200, True)
    assert cache_info(a)["hits"] == 1

    # A cache file changed behind the hub's back is never served (dropped at start).
    assert a.proc.stop() == 0
    entry = tmp_path / "A" / ".kbucket" / "cache" / "objects" / sha1
    with entry.open("r+b") as f:
        f.write(b"\0" * 10)
    a = restart_a(relay, tmp_path)
    status, _, body = get(f"{a.url}/sha1/{sha1}")
    assert status == 404
    assert cache_info(a)["entries"] == 0
    assert not entry.exists()


def test_a_download_by_path_is_answered_from_the_cache_once_the_share_confirms_it(
    procs: Procs, tmp_path: Path
) -> None:
    relay = start(procs, tmp_path, "64M", {"p.bin": 2 * MiB + 5})
    data = relay.files["p.bin"]
    sha1 = sha1_of(data)
    # kb-prv-download through A, twice: the second run costs S's link nothing.
    assert prv_download(relay, tmp_path, "p.bin") == data
    wait_for(
        lambda: cache_info(relay.a)["entries"] + cache_info(relay.b)["entries"] > 0, 20, "a fill"
    )
    sent = share_sent(relay)
    assert prv_download(relay, tmp_path, "p.bin") == data
    assert share_sent(relay) == sent

    # /S/download/PATH at A: the first answer is S's (A learns the path's id from its
    # ETag, and fills its cache if it had not), the next ones come from A's cache
    # after S's 304 (If-None-Match), with Range, HEAD and the ETag as S gives them.
    path_url = f"{relay.a.url}/{relay.s.node_id}/download/p.bin"
    status, _, body = get(path_url)
    assert (status, body == data) == (200, True)
    wait_entries(relay.a, 1)
    sent, hits = share_sent(relay), cache_info(relay.a)["hits"]
    status, headers, body = get(path_url)
    assert (status, body == data, headers["etag"]) == (200, True, f'"{sha1}"')
    status, headers, body = get(path_url, {"Range": "bytes=7-1048582"})
    assert (status, body == data[7:1048583]) == (206, True)
    assert headers["content-range"] == f"bytes 7-1048582/{len(data)}"
    status, headers = head(path_url)
    assert (status, headers["content-length"], headers["etag"]) == (
        200,
        str(len(data)),
        f'"{sha1}"',
    )
    assert share_sent(relay) == sent
    assert cache_info(relay.a)["hits"] == hits + 3

    # The share's index stays the truth for paths: a changed file is S's to answer.
    changed = write_pattern(tmp_path / "S" / "p.bin", len(data), 99)
    status, _, body = get(path_url)
    assert (status, body == changed) == (200, True)
    assert share_sent(relay) == sent + len(changed)

    # S stopped: the path has no answer (nobody can say what it holds now), the
    # content still has one.
    assert relay.s.proc.stop() == 0
    wait_for(lambda: get(path_url)[0] == 404, 30, "the path gone with S")
    status, _, body = get(f"{relay.a.url}/sha1/{sha1}")
    assert (status, body == data) == (200, True)


@pytest.mark.parametrize(
    "size",
    [
        pytest.param(24 * MiB, id="24MiB"),
        pytest.param(100 * MiB, id="100MiB", marks=pytest.mark.slow),
    ],
)
def test_eight_simultaneous_downloads_cost_one_transfer_over_the_share_link(
    procs: Procs, tmp_path: Path, size: int
) -> None:
    relay = start(procs, tmp_path, "1G", {"new.bin": size})
    data = relay.files["new.bin"]
    sha1 = sha1_of(data)
    before = share_sent(relay)
    results: list[tuple[int, bool]] = []
    lock = threading.Lock()

    def download() -> None:
        status, _, body = get(f"{relay.a.url}/sha1/{sha1}", timeout=120)
        with lock:
            results.append((status, body == data))

    threads = [threading.Thread(target=download) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(150)
    assert results == [(200, True)] * 8
    assert share_sent(relay) - before == size
    info = wait_entries(relay.a, 1)
    assert (info["hits"], info["fills"]) == (7, 1)


def test_eviction_keeps_the_cache_under_its_bound_and_unknown_ids_cost_nothing(
    procs: Procs, tmp_path: Path
) -> None:
    relay = start(procs, tmp_path, "10M", {f"{n}.bin": 4 * MiB for n in "xyz"})
    for name in ("x.bin", "y.bin", "z.bin"):
        data = relay.files[name]
        status, _, body = get(f"{relay.a.url}/sha1/{sha1_of(data)}")
        assert (status, body == data) == (200, True)
    wait_for(lambda: cache_info(relay.a)["fills"] == 3, 20, "three fills")
    info = cache_info(relay.a)
    objects = tmp_path / "A" / ".kbucket" / "cache" / "objects"
    on_disk = sum(p.stat().st_size for p in objects.iterdir())
    assert (info["entries"], info["bytes"], on_disk) == (2, 8 * MiB, 8 * MiB)
    assert info["bound"] == 10 * MiB
    # The least recently used (x) went; z is answered from the cache.
    assert not (objects / sha1_of(relay.files["x.bin"])).exists()

    # Many different unknown ids: 404 each, nothing written, the hub still answers.
    for _ in range(300):
        status, _, _ = get(f"{relay.a.url}/sha1/{os.urandom(20).hex()}", timeout=30)
        assert status == 404
    after = cache_info(relay.a)
    assert (after["entries"], after["bytes"], after["misses"]) == (2, 8 * MiB, 3 + 300)
    assert list((tmp_path / "A" / ".kbucket" / "cache" / "tmp").iterdir()) == []
