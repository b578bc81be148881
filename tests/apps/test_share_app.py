"""kbapps.share.app: ETag, readdir prv, /ID/prv/PATH and /ID/sha1/SHA1, never stale."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from kbapps.hashing import hash_file
from kbapps.share import ShareDir
from kbapps.share.app import ShareApp, build_share_app
from kbapps.share.index import INDEX_FILENAME, FileIndex, IndexEntry, stamp_of
from kbapps.share.indexer import Indexer, IndexerConfig
from kbtransport.http import FileBody, Response
from kbtransport.listener import BoundAddress, ListenConfig, serve_http
from kbtransport.served_streams import request_from_target
from kbtransport.testing import RawResponse, parse_raw_responses, raw_http

NODE = "abcdef012345"
TOP = bytes(range(256)) * 10
A = b"alpha file\n"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def sha1_of(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def index_now(index: FileIndex, root: Path, *relpaths: str) -> None:
    """Record files as the indexer would (stamp taken before hashing)."""
    puts = []
    for rel in relpaths:
        st = os.stat(root / rel)
        started = time.time_ns()
        _, digest = hash_file(root / rel)
        puts.append(IndexEntry(rel, *stamp_of(st), digest.sha1, digest.head_sha1, started))
    index.apply(puts)


class Setup:
    def __init__(self, tmp_path: Path, *, racy_window_ns: int = 0) -> None:
        self.root = tmp_path / "share"
        (self.root / "sub").mkdir(parents=True)
        (self.root / ".kbucket").mkdir()
        (self.root / "top.bin").write_bytes(TOP)
        (self.root / "sub" / "a.dat").write_bytes(A)
        (self.root / "sub" / "copy.dat").write_bytes(A)
        (self.root / "sub" / "unindexed.txt").write_bytes(b"not hashed yet")
        (self.root / "sub" / "link.dat").symlink_to("a.dat")
        (self.root / ".hidden").write_bytes(b"hidden")
        self.index = FileIndex(
            self.root / ".kbucket" / INDEX_FILENAME, racy_window_ns=racy_window_ns
        )
        index_now(self.index, self.root, "top.bin", "sub/a.dat", "sub/copy.dat", "sub/link.dat")
        self.stale = 0
        self.app: ShareApp = build_share_app(
            ShareDir(self.root), self.index, NODE, on_stale=self._on_stale
        )

    def _on_stale(self) -> None:
        self.stale += 1

    async def get(
        self, target: str, method: str = "GET", headers: tuple[tuple[str, str], ...] = ()
    ) -> tuple[Response, bytes]:
        response = await self.app.router.app(request_from_target(method, target, headers))
        body = response.body
        if isinstance(body, FileBody):
            try:
                body.file.seek(body.offset)
                data = body.file.read(body.length)
            finally:
                body.file.close()
        else:
            assert isinstance(body, bytes)
            data = body
        return response, data


def rewrite_same_size_same_mtime(path: Path, data: bytes) -> None:
    """Rewrite in place with the same size and restore the mtime (``cp -p`` style)."""
    before = os.stat(path)
    assert len(data) == before.st_size
    # ctime ticks with the kernel's coarse clock (a few ms): make sure it moves on.
    time.sleep(0.05)
    with open(path, "r+b") as f:
        f.write(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    )
    assert after.st_ctime_ns != before.st_ctime_ns


@pytest.mark.anyio
async def test_download_etag_only_while_unchanged(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    response, data = await s.get(f"/{NODE}/download/top.bin")
    assert response.status == 200
    assert data == TOP
    assert response.header("etag") == f'"{sha1_of(TOP)}"'
    response, data = await s.get(f"/{NODE}/download/sub/unindexed.txt")
    assert response.header("etag") is None
    assert s.stale == 0

    with open(s.root / "top.bin", "r+b") as f:
        f.truncate(100)
    response, data = await s.get(f"/{NODE}/download/top.bin")
    assert response.status == 200
    assert data == TOP[:100]
    assert response.header("etag") is None
    assert s.stale == 1
    # A client holding the old ETag gets the whole new file, never a stale range.
    response, data = await s.get(
        f"/{NODE}/download/top.bin",
        headers=(("Range", "bytes=0-9"), ("If-Range", f'"{sha1_of(TOP)}"')),
    )
    assert response.status == 200
    assert data == TOP[:100]


@pytest.mark.anyio
async def test_same_size_rewrite_with_restored_mtime_is_never_served_as_old(
    tmp_path: Path,
) -> None:
    s = Setup(tmp_path)
    old = sha1_of(TOP)
    new_bytes = bytes(reversed(TOP))
    rewrite_same_size_same_mtime(s.root / "top.bin", new_bytes)
    response, data = await s.get(f"/{NODE}/download/top.bin")
    assert data == new_bytes
    assert response.header("etag") is None
    response, _ = await s.get(f"/{NODE}/prv/top.bin")
    assert response.status == 404
    response, data = await s.get(f"/{NODE}/sha1/{old}")
    assert response.status == 404
    assert new_bytes not in data
    response, data = await s.get(f"/{NODE}/api/readdir/")
    listing = json.loads(data)
    (top,) = [f for f in listing["files"] if f["name"] == "top.bin"]
    assert "prv" not in top
    assert s.stale >= 3


@pytest.mark.anyio
async def test_readdir_has_prv_for_indexed_files_only(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    response, data = await s.get(f"/{NODE}/api/readdir/sub")
    assert response.status == 200
    listing = json.loads(data)
    assert listing["success"] is True
    files = {f["name"]: f for f in listing["files"]}
    assert set(files) == {"a.dat", "copy.dat", "link.dat", "unindexed.txt"}
    assert files["a.dat"] == {
        "name": "a.dat",
        "size": len(A),
        "prv": {
            "original_checksum": sha1_of(A),
            "original_size": len(A),
            "original_fcs": f"head1000-{sha1_of(A)}",
            "original_path": "a.dat",
            "prv_version": "0.11",
        },
    }
    assert files["link.dat"]["prv"]["original_path"] == "link.dat"
    assert files["unindexed.txt"] == {"name": "unindexed.txt", "size": 14}
    response, data = await s.get(f"/{NODE}/api/readdir/")
    listing = json.loads(data)
    assert [d["name"] for d in listing["dirs"]] == ["sub"]
    assert [f["name"] for f in listing["files"]] == ["top.bin"]
    assert s.stale == 0


@pytest.mark.anyio
async def test_prv_route_is_the_exact_prv_file(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    response, data = await s.get(f"/{NODE}/prv/sub/a.dat")
    assert response.status == 200
    assert response.header("content-type") == "application/json"
    assert (
        data
        == (
            "{\n"
            f'    "original_checksum": "{sha1_of(A)}",\n'
            f'    "original_size": {len(A)},\n'
            f'    "original_fcs": "head1000-{sha1_of(A)}",\n'
            '    "original_path": "a.dat",\n'
            '    "prv_version": "0.11"\n'
            "}\n"
        ).encode()
    )
    response, data = await s.get(f"/{NODE}/prv/top.bin")
    assert json.loads(data)["original_fcs"] == f"head1000-{sha1_of(TOP[:1000])}"
    assert str(tmp_path) not in data.decode()

    for target, status in [
        (f"/{NODE}/prv/sub/unindexed.txt", 404),
        (f"/{NODE}/prv/missing.dat", 404),
        (f"/{NODE}/prv/.hidden", 400),
        (f"/{NODE}/prv/.kbucket/{INDEX_FILENAME}", 400),
        (f"/{NODE}/prv/%2ekbucket/{INDEX_FILENAME}", 400),
        (f"/{NODE}/download/.kbucket/{INDEX_FILENAME}", 400),
        (f"/{NODE}/prv/sub/..%2f..%2ftop.bin", 400),
        ("/000000000000/prv/sub/a.dat", 404),
    ]:
        response, data = await s.get(target)
        assert response.status == status, target
        assert json.loads(data)["success"] is False


@pytest.mark.anyio
async def test_content_by_sha1(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    sha1 = sha1_of(TOP)
    response, data = await s.get(f"/{NODE}/sha1/{sha1}")
    assert response.status == 200
    assert data == TOP
    assert response.header("etag") == f'"{sha1}"'
    response, data = await s.get(
        f"/{NODE}/sha1/{sha1.upper()}", headers=(("Range", "bytes=10-19"),)
    )
    assert response.status == 206
    assert data == TOP[10:20]
    assert response.header("content-range") == f"bytes 10-19/{len(TOP)}"
    response, data = await s.get(f"/{NODE}/sha1/{sha1}", method="HEAD")
    assert response.status == 200
    response, _ = await s.get(f"/{NODE}/sha1/{'0' * 40}")
    assert response.status == 404
    response, _ = await s.get(f"/{NODE}/sha1/xyz")
    assert response.status == 400
    response, _ = await s.get(f"/000000000000/sha1/{sha1}")
    assert response.status == 404
    assert s.stale == 0


@pytest.mark.anyio
async def test_content_by_sha1_skips_changed_copies(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    sha1 = sha1_of(A)
    # Every path holding A, one by one, becomes something else; the route serves an
    # unchanged copy while there is one, and then refuses.
    holders = list(s.index.paths_for(sha1))
    assert sorted(holders) == ["sub/a.dat", "sub/copy.dat", "sub/link.dat"]
    (s.root / "sub" / "copy.dat").write_bytes(b"other bytes")
    response, data = await s.get(f"/{NODE}/sha1/{sha1}")
    assert response.status == 200
    assert data == A
    rewrite_same_size_same_mtime(s.root / "sub" / "a.dat", b"ALPHA FILE\n")
    response, data = await s.get(f"/{NODE}/sha1/{sha1}")
    assert response.status == 404
    assert b"ALPHA" not in data
    assert s.stale >= 2


@pytest.mark.anyio
async def test_racy_entries_are_not_trusted_yet(tmp_path: Path) -> None:
    # Hashed less than the (here huge) racy window after the files last changed.
    s = Setup(tmp_path, racy_window_ns=3600 * 1_000_000_000)
    response, _ = await s.get(f"/{NODE}/download/top.bin")
    assert response.header("etag") is None
    response, _ = await s.get(f"/{NODE}/prv/top.bin")
    assert response.status == 404
    response, _ = await s.get(f"/{NODE}/sha1/{sha1_of(TOP)}")
    assert response.status == 404
    # Racy is not stale: the indexer already re-checks those; no rescan storm.
    assert s.stale == 0


# --- end to end: indexer + routes over 127.0.0.1 -----------------------------------------


@asynccontextmanager
async def serving(root: Path) -> AsyncIterator[tuple[BoundAddress, Indexer]]:
    index = FileIndex(root / ".kbucket" / INDEX_FILENAME, racy_window_ns=50_000_000)
    config = IndexerConfig(min_interval=0.05, max_interval=0.2, settle=0.1, workers=1)
    indexer = Indexer(root, index, config=config)
    app = build_share_app(ShareDir(root), index, NODE, on_stale=indexer.request_rescan)

    class NullSink:
        async def content_changed(self, sha1s: object) -> None:
            pass

    async with anyio.create_task_group() as tg:
        tg.start_soon(indexer.run, NullSink())
        bound: BoundAddress = await tg.start(
            serve_http, app.router.app, ListenConfig(host="127.0.0.1", port=0)
        )
        with anyio.fail_after(20):
            await indexer.initial_done.wait()
        try:
            yield bound, indexer
        finally:
            tg.cancel_scope.cancel()
    index.close()


async def fetch(port: int, target: str) -> RawResponse:
    stream = await anyio.connect_tcp("127.0.0.1", port)
    try:
        request = f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        data = await raw_http(stream, request, timeout=10)
    finally:
        await stream.aclose()
    (response,) = parse_raw_responses(data)
    return response


@pytest.mark.anyio
async def test_live_share_serves_new_content_and_drops_changed(tmp_path: Path) -> None:
    root = tmp_path / "share"
    (root / ".kbucket").mkdir(parents=True)
    async with serving(root) as (bound, _):
        first = b"first version of the file" * 100
        (root / "live.dat").write_bytes(first)
        with anyio.fail_after(20):
            while (await fetch(bound.port, f"/{NODE}/sha1/{sha1_of(first)}")).status != 200:
                await anyio.sleep(0.05)
        response = await fetch(bound.port, f"/{NODE}/sha1/{sha1_of(first)}")
        assert response.body == first
        assert response.headers["etag"] == f'"{sha1_of(first)}"'

        second = b"second" * 10
        (root / "live.dat").write_bytes(second)
        # From the moment it changed, the old SHA-1 is refused...
        response = await fetch(bound.port, f"/{NODE}/sha1/{sha1_of(first)}")
        assert response.status == 404
        # ... and the new one becomes available once re-indexed.
        with anyio.fail_after(20):
            while (await fetch(bound.port, f"/{NODE}/prv/live.dat")).status != 200:
                await anyio.sleep(0.05)
        prv = json.loads((await fetch(bound.port, f"/{NODE}/prv/live.dat")).body)
        assert prv["original_checksum"] == sha1_of(second)
        assert prv["original_path"] == "live.dat"
        response = await fetch(bound.port, f"/{NODE}/download/.kbucket/{INDEX_FILENAME}")
        assert response.status == 400
