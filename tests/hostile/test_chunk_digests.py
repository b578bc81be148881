"""Chunk digests end to end, and sources that lie about them (issue 13 item 3;
docs/security.md "Chunk digests").

A real share computes each file's digest list while indexing and serves it at
``/ID/sha1/SHA1/chunks``; a real hub answers ``/sha1/SHA1/chunks`` from a share holding
the content. The root comes only from ``kb-prv-create`` run here on the same bytes
(the reader's own ``.prv``): every list fetched is checked against it with
``kbproto.chunks.DigestList.check``, the one check the downloader and the Python API
use.

The liar (``tests.hostile.fake_share``, joined first, so the hub asks it first) claims
the honest share's content and answers its list with: another file's list of the same
length (well formed, wrong root), a list of the wrong length (the hub skips it for the
honest share), and a list that is right except for one digest (its chunk would be
refused). Each lie is caught: by the hub where the length gives it away, by the
verifier otherwise, never by trusting a source. An original five-field ``.prv`` still
downloads through the same hub.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import urllib.request
from pathlib import Path

import pytest

from kbproto.chunks import ChunkListError, ChunkSpec, DigestList, chunk_digests
from kbproto.prv import parse_prv
from tests.e2e.procs import Node, Procs, command, sha1_of, wait_for, write_pattern
from tests.hostile.fake_share import FakeRoute, FakeShareScript, start_fake_share
from tests.hostile.helpers import find_json, http_get

MIB = 1 << 20
#: Four chunks, the last one short.
SIZE = 3 * MIB + 12345


def _own_prv(path: Path) -> ChunkSpec:
    """The reader's own .prv of ``path``, made by a real ``kb-prv-create``; its root."""
    done = subprocess.run(
        command("kb-prv-create", str(path)),
        capture_output=True,
        timeout=120,
        check=False,
        env={"KBUCKET_CACHE_DIR": str(path.parent.parent / "prv-cache"), "PATH": "/usr/bin"},
    )
    assert done.returncode == 0, done.stderr
    spec = parse_prv(done.stdout).chunks
    assert spec is not None
    return spec


def _head(url: str) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(url, method="HEAD")
    with urllib.request.urlopen(request, timeout=15) as response:
        return response.status, {k.lower(): v for k, v in response.headers.items()}


def _found_at(hub: Node, sha1: str, holders: int) -> None:
    def found() -> bool:
        answer = find_json(hub, sha1)
        results = answer.get("results")
        return isinstance(results, list) and len(results) >= holders

    wait_for(found, 20.0, f"{holders} holders of {sha1} at the hub")


@pytest.fixture
def contents(tmp_path: Path) -> dict[str, bytes]:
    share_dir = tmp_path / "honest"
    return {
        "first.bin": write_pattern(share_dir / "first.bin", SIZE, seed=31),
        "second.bin": write_pattern(share_dir / "second.bin", SIZE, seed=32),
        "third.bin": write_pattern(share_dir / "third.bin", SIZE, seed=33),
        "tiny.txt": write_pattern(share_dir / "tiny.txt", 6, seed=34),
    }


def test_digest_lists_from_a_share_and_its_hub_check_and_lies_are_caught(
    procs: Procs, tmp_path: Path, contents: dict[str, bytes]
) -> None:
    hub = procs.node("kbucket-hub", tmp_path / "hub", name="chunk-hub")
    first, third = contents["first.bin"], contents["third.bin"]
    sha = {name: sha1_of(data) for name, data in contents.items()}
    honest_lists = {name: chunk_digests(data) for name, data in contents.items()}
    unrelated = chunk_digests(write_pattern(tmp_path / "unrelated.bin", SIZE, seed=35))
    one_wrong = bytearray(honest_lists["third.bin"])
    one_wrong[64] ^= 1  # the third chunk's digest
    binary = (("Content-Type", "application/octet-stream"),)
    liar = FakeShareScript(
        hub_url=hub.url,
        seed=1301,
        files=(
            (sha["first.bin"], "first.bin", SIZE),
            (sha["second.bin"], "second.bin", SIZE),
            (sha["third.bin"], "third.bin", SIZE),
        ),
        routes={
            f"sha1/{sha['first.bin']}/chunks": FakeRoute(headers=binary, body=unrelated),
            f"sha1/{sha['second.bin']}/chunks": FakeRoute(
                headers=binary, body=honest_lists["second.bin"][:-32]
            ),
            f"sha1/{sha['third.bin']}/chunks": FakeRoute(headers=binary, body=bytes(one_wrong)),
        },
    )
    liar_id = start_fake_share(procs, liar, tmp_path / "liar")
    share = procs.node("kbucket-host", tmp_path / "honest", name="chunk-share", parent=hub)
    share_id = share.node_id
    specs = {name: _own_prv(tmp_path / "honest" / name) for name in contents}
    for name in ("first.bin", "second.bin", "third.bin"):
        _found_at(hub, sha[name], 2)

    # The share itself: each list as computed while indexing, and it checks.
    for name, data in contents.items():
        for url in (
            f"{share.url}/{share_id}/sha1/{sha[name]}/chunks",
            f"{share.url}/sha1/{sha[name]}/chunks",
        ):
            status, body = http_get(url)
            assert status == 200, (url, body[:200])
            assert body == honest_lists[name]
            checked = DigestList.check(specs[name], len(data), body)
            assert checked.count == -(-len(data) // MIB)
        status, headers = _head(f"{share.url}/sha1/{sha[name]}/chunks")
        assert status == 200
        assert headers["content-length"] == str(len(honest_lists[name]))
        assert headers["content-type"] == "application/octet-stream"
    # /ID/prv/PATH carries the same root as the reader's own .prv.
    status, body = http_get(f"{share.url}/{share_id}/prv/first.bin")
    assert status == 200
    assert json.loads(body)["chunks"] == specs["first.bin"].to_json_object()
    assert http_get(f"{share.url}/sha1/{'0' * 40}/chunks")[0] == 404
    assert http_get(f"{share.url}/sha1/not-a-sha1/chunks")[0] == 400

    # Through the hub, from the honest share by its id: the same bytes, and they check.
    for name in ("first.bin", "tiny.txt"):
        status, body = http_get(f"{hub.url}/{share_id}/sha1/{sha[name]}/chunks")
        assert status == 200
        DigestList.check(specs[name], len(contents[name]), body)
    status, body = http_get(f"{hub.url}/sha1/{sha['tiny.txt']}/chunks")
    assert (status, body) == (200, hashlib.sha256(contents["tiny.txt"]).digest())

    # Lie 1: another file's list, the right length. The hub cannot know (only the
    # reader's .prv holds the root); the verifier refuses it, and nothing of it is used.
    status, body = http_get(f"{hub.url}/sha1/{sha['first.bin']}/chunks")
    assert (status, body) == (200, unrelated)
    with pytest.raises(ChunkListError):
        DigestList.check(specs["first.bin"], SIZE, body)
    # The reader then asks the other holder by its id: that list checks.
    status, body = http_get(f"{hub.url}/{share_id}/sha1/{sha['first.bin']}/chunks")
    assert status == 200
    assert DigestList.check(specs["first.bin"], SIZE, body).chunk_ok(0, first[:MIB])

    # Lie 2: a list one digest short. Its length gives it away at the hub, which
    # skips the liar and answers with the honest share's list.
    status, body = http_get(f"{hub.url}/sha1/{sha['second.bin']}/chunks")
    assert status == 200
    DigestList.check(specs["second.bin"], SIZE, body)
    assert body == honest_lists["second.bin"]
    assert (
        http_get(f"{hub.url}/{liar_id}/sha1/{sha['second.bin']}/chunks")[1]
        == (honest_lists["second.bin"][:-32])
    )

    # Lie 3: one wrong digest among right ones (so that the third chunk's true bytes
    # would be refused, or a liar's bytes taken). The root gives it away.
    status, body = http_get(f"{hub.url}/sha1/{sha['third.bin']}/chunks")
    assert (status, body) == (200, bytes(one_wrong))
    with pytest.raises(ChunkListError):
        DigestList.check(specs["third.bin"], SIZE, body)
    honest = DigestList.check(
        specs["third.bin"],
        SIZE,
        http_get(f"{hub.url}/{share_id}/sha1/{sha['third.bin']}/chunks")[1],
    )
    assert [honest.chunk_ok(i, third[i * MIB : (i + 1) * MIB]) for i in range(4)] == [True] * 4
    # A source sending a wrong byte in that chunk is caught within it.
    bad = bytearray(third[2 * MIB : 3 * MIB])
    bad[500] ^= 0xFF
    assert not honest.chunk_ok(2, bytes(bad))

    # An original five-field .prv (no chunks field, an absolute path) still downloads
    # through the hub, verified whole.
    original = {
        "original_checksum": sha["tiny.txt"],
        "original_size": len(contents["tiny.txt"]),
        "original_fcs": "head1000-" + sha["tiny.txt"],
        "original_path": "/home/someone/data/tiny.txt",
        "prv_version": "0.11",
    }
    (tmp_path / "original.prv").write_text(json.dumps(original, indent=4))
    done = subprocess.run(
        command(
            "kb-prv-download",
            str(tmp_path / "original.prv"),
            str(tmp_path / "got.txt"),
            "--hub",
            hub.url,
        ),
        capture_output=True,
        timeout=120,
        check=False,
        env={"KBUCKET_CACHE_DIR": str(tmp_path / "client-cache"), "PATH": "/usr/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "got.txt").read_bytes() == contents["tiny.txt"]

    assert hub.proc.popen.poll() is None
    assert "Traceback" not in hub.proc.stderr()
    assert "Traceback" not in share.proc.stderr()
