"""A share of many files with real processes (issue 17, "a lean share"): a hub finds
its files after the first index, a delta (files added and removed) reaches the hub, and
a restart hashes nothing and keeps every answer right.

The default run uses 3,000 files (three of the index's 2,048-row pages, and more than
one report batch to the hub); ``-m slow`` runs the same with a million files.
"""

from __future__ import annotations

import hashlib
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.procs import Node, Procs, wait_for

PER_DIR = 1000


def make_tree(root: Path, files: int) -> None:
    for i in range(files):
        folder = root / f"d{i // PER_DIR:04d}"
        if i % PER_DIR == 0:
            folder.mkdir(parents=True)
        (folder / f"f{i % PER_DIR:04d}.dat").write_bytes(content(i))


def content(i: int) -> bytes:
    return b"kbucket tiny file %d\n" % i


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def find(node: Node, digest: str) -> Any:
    with urllib.request.urlopen(f"{node.url}/find/{digest}", timeout=20) as response:
        return json.loads(response.read())


def wait_answer(node: Node, digest: str, found: bool, timeout: float) -> Any:
    answer: Any = {}

    def check() -> bool:
        nonlocal answer
        answer = find(node, digest)
        return answer.get("found") is found

    wait_for(check, timeout, f"{digest} found={found} at {node.url}", step=0.2)
    return answer


def download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=20) as response:
        data: bytes = response.read()
        return data


def _start(procs: Procs, tree: Path, hub: Node, name: str, timeout: float) -> Node:
    """A share of ``tree`` under ``hub``, once it indexed (within ``timeout``)."""
    ready = procs.launch("kbucket-host", tree, parent=hub, name=name)
    procs.all[-1].wait_line(r"^Indexed \d+ files?\.$", timeout)
    return ready()


def _scale(procs: Procs, tmp_path: Path, files: int, timeout: float) -> None:
    tree = tmp_path / "tree"
    make_tree(tree, files)
    hub = procs.node("kbucket-hub", tmp_path / "hub")
    share = _start(procs, tree, hub, "tree", timeout)
    assert share.proc.has_line(rf"^Indexed {files} files\.$")
    samples = sorted({0, 1, files // 2, files - 2, files - 1})
    for i in samples:  # the whole index reached the hub (the full sync is done)
        answer = wait_answer(hub, sha1(content(i)), True, timeout)
        assert answer["results"][0]["path"] == f"d{i // PER_DIR:04d}/f{i % PER_DIR:04d}.dat"
        assert download(answer["urls"][0]) == content(i)

    # A delta: three files added, three removed, while the share runs.
    added = [tree / "new" / f"added{k}.dat" for k in range(3)]
    added[0].parent.mkdir()
    for k, path in enumerate(added):
        path.write_bytes(b"added %d" % k)
    removed = [files // 3, files // 3 + 1, files - 1]
    for i in removed:
        (tree / f"d{i // PER_DIR:04d}" / f"f{i % PER_DIR:04d}.dat").unlink()
    for k in range(3):
        wait_answer(hub, sha1(b"added %d" % k), True, timeout)
    for i in removed:
        wait_answer(hub, sha1(content(i)), False, timeout)
    assert find(hub, sha1(content(files // 2)))["found"] is True

    # A restart: nothing hashed, the same answers.
    share.proc.stop(timeout)
    again = _start(procs, tree, hub, "tree-again", timeout)
    remaining = files - len(removed) + len(added)
    assert again.proc.has_line(rf"^Indexed {remaining} files\.$")
    hashed = again.proc.wait_line(r"^Hashed (\d+) files?;")
    assert hashed.group(1) == "0"
    for i in (0, files // 2, files - 2):
        wait_answer(hub, sha1(content(i)), True, timeout)
    for i in removed:
        assert find(hub, sha1(content(i)))["found"] is False
    answer = wait_answer(hub, sha1(b"added 2"), True, timeout)
    assert download(answer["urls"][0]) == b"added 2"
    assert answer["results"][0]["path"] == "new/added2.dat"


def test_share_of_thousands_of_files_finds_deltas_and_restart(procs: Procs, tmp_path: Path) -> None:
    _scale(procs, tmp_path, 3000, timeout=60)


@pytest.mark.slow
def test_share_of_a_million_files_finds_deltas_and_restart(procs: Procs, tmp_path: Path) -> None:
    _scale(procs, tmp_path, 1_000_000, timeout=1800)
