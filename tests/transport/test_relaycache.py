"""The hub's relay cache store (``kbtransport.relaycache``) and its serving helpers."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import anyio
import pytest

from kbtransport import cacheserve
from kbtransport.cacheserve import Tee, cached_response, joined_response
from kbtransport.errors import ReadError
from kbtransport.http import FileBody, StreamBody
from kbtransport.relaycache import MAX_FILLS, CacheDirError, RelayCache
from kbtransport.served_streams import request_from_target

pytestmark = pytest.mark.anyio


def _content(size: int, seed: int) -> tuple[bytes, str]:
    data = bytes((seed + i) % 251 for i in range(size))
    return data, hashlib.sha1(data).hexdigest()


async def _put(cache: RelayCache, data: bytes, sha1: str) -> bool:
    fill = cache.begin(sha1, len(data))
    assert fill is not None
    await fill.write(data)
    return await fill.commit(hashlib.sha1(data).hexdigest())


async def test_an_entry_is_visible_only_after_commit_and_reads_back(tmp_path: Path) -> None:
    cache = RelayCache.open(tmp_path / "c", 1 << 20)
    data, sha1 = _content(5000, 1)
    fill = cache.begin(sha1, len(data))
    assert fill is not None
    await fill.write(data[:100])
    assert cache.open_entry(sha1) is None
    assert cache.fill_in_progress(sha1) is fill
    assert cache.begin(sha1, len(data)) is None  # one fill per content
    await fill.write(data[100:])
    assert await fill.commit(sha1)
    opened = cache.open_entry(sha1)
    assert opened is not None
    file, size = opened
    with file:
        assert (file.read(), size) == (data, 5000)
    assert (cache.entries, cache.size, cache.fill_in_progress(sha1)) == (1, 5000, None)
    assert list((tmp_path / "c" / "tmp").iterdir()) == []
    assert oct((tmp_path / "c").stat().st_mode & 0o777) == "0o700"
    cache.close()


@pytest.mark.parametrize("case", ["wrong-digest", "short", "long", "aborted"])
async def test_unverified_or_incomplete_bytes_never_become_an_entry(
    tmp_path: Path, case: str
) -> None:
    cache = RelayCache.open(tmp_path / "c", 1 << 20)
    data, sha1 = _content(3000, 2)
    fill = cache.begin(sha1, len(data))
    assert fill is not None
    if case == "wrong-digest":
        await fill.write(data)
        assert not await fill.commit("0" * 40)
    elif case == "short":
        await fill.write(data[:-1])
        assert not await fill.commit(sha1)
    elif case == "long":
        await fill.write(data + b"x")
        assert not await fill.commit(sha1)
    else:
        await fill.write(data)
        fill.abort()
        assert not await fill.commit(sha1)
    assert fill.failed
    assert cache.open_entry(sha1) is None
    assert cache.entries == 0
    assert list((tmp_path / "c" / "tmp").iterdir()) == []
    assert cache.stats.fills_dropped == 1
    cache.close()


async def test_lru_eviction_keeps_entries_and_fills_under_the_bound(tmp_path: Path) -> None:
    cache = RelayCache.open(tmp_path / "c", 10_000)
    items = [_content(4000, seed) for seed in range(3)]
    assert await _put(cache, *items[0])
    assert await _put(cache, *items[1])
    first = cache.open_entry(items[0][1])  # used: now the most recent
    assert first is not None
    first[0].close()
    assert await _put(cache, *items[2])  # 12000 > 10000: the least recently used goes
    assert items[1][1] not in cache
    assert items[0][1] in cache
    assert items[2][1] in cache
    assert cache.size == 8000 <= cache.bound
    assert not (tmp_path / "c" / "objects" / items[1][1]).exists()
    big, big_sha1 = _content(10_001, 9)
    assert cache.begin(big_sha1, len(big)) is None  # larger than the bound
    # A fill in progress counts: the entries make room for it at once.
    fill = cache.begin(_content(9000, 7)[1], 9000)
    assert fill is not None
    assert cache.size + cache.reserved <= cache.bound
    fill.abort()
    cache.close()


async def test_zero_bound_caches_nothing(tmp_path: Path) -> None:
    cache = RelayCache.open(tmp_path / "c", 0)
    assert cache.begin(_content(10, 1)[1], 10) is None
    cache.close()


async def test_fills_at_once_are_bounded(tmp_path: Path) -> None:
    cache = RelayCache.open(tmp_path / "c", 1 << 30)
    fills = [cache.begin(_content(10, seed)[1], 10) for seed in range(MAX_FILLS + 1)]
    assert fills[-1] is None
    assert all(f is not None for f in fills[:-1])
    cache.close()
    assert list((tmp_path / "c" / "tmp").iterdir()) == []


async def test_a_restart_keeps_entries_and_their_order(tmp_path: Path) -> None:
    root = tmp_path / "c"
    cache = RelayCache.open(root, 10_000)
    a, b = _content(4000, 1), _content(4000, 2)
    assert await _put(cache, *a)
    assert await _put(cache, *b)
    opened = cache.open_entry(a[1])
    assert opened is not None
    opened[0].close()
    stray = cache.begin(_content(100, 3)[1], 100)  # a fill the "crash" leaves behind
    assert stray is not None
    await stray.write(b"x" * 10)
    cache._db.close()
    again = RelayCache.open(root, 10_000)
    assert (again.entries, again.size) == (2, 8000)
    assert list((root / "tmp").iterdir()) == []
    assert await _put(again, *_content(4000, 4))  # b is now the least recently used
    assert b[1] not in again
    assert a[1] in again
    again.close()
    smaller = RelayCache.open(root, 4000)  # a smaller bound evicts at once
    assert smaller.entries == 1
    assert smaller.size <= 4000
    smaller.close()


@pytest.mark.parametrize("damage", ["deleted", "rewritten", "truncated", "replaced", "symlink"])
async def test_a_damaged_entry_is_never_served(tmp_path: Path, damage: str) -> None:
    root = tmp_path / "c"
    cache = RelayCache.open(root, 1 << 20)
    data, sha1 = _content(4000, 5)
    assert await _put(cache, data, sha1)
    path = cache.path_for(sha1)
    if damage == "deleted":
        path.unlink()
    elif damage == "rewritten":
        st = path.stat()
        path.write_bytes(b"y" * len(data))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    elif damage == "truncated":
        with path.open("r+b") as f:
            f.truncate(100)
    elif damage == "replaced":
        other = tmp_path / "other"
        other.write_bytes(b"z" * len(data))
        os.replace(other, path)
    else:
        target = tmp_path / "target"
        target.write_bytes(data)
        path.unlink()
        path.symlink_to(target)
    assert cache.open_entry(sha1) is None
    assert sha1 not in cache
    assert cache.size == 0
    cache.close()
    # The same damage found at start-up drops the entry too.
    cache = RelayCache.open(root, 1 << 20)
    assert await _put(cache, data, sha1)
    path.write_bytes(b"q" * len(data))
    cache.close()
    again = RelayCache.open(root, 1 << 20)
    assert sha1 not in again
    assert again.open_entry(sha1) is None
    again.close()


def test_a_symlinked_cache_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "c").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(CacheDirError, match="symlink"):
        RelayCache.open(tmp_path / "c", 1 << 20)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "objects").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(CacheDirError, match="symlink"):
        RelayCache.open(tmp_path / "d", 1 << 20)
    (tmp_path / "f").write_text("x")
    with pytest.raises(CacheDirError, match="not a directory"):
        RelayCache.open(tmp_path / "f", 1 << 20)
    assert list((tmp_path / "elsewhere").iterdir()) == []


async def test_a_full_disk_drops_the_fill_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = RelayCache.open(tmp_path / "c", 1 << 20)
    kept, kept_sha1 = _content(100, 1)
    assert await _put(cache, kept, kept_sha1)
    data, sha1 = _content(4000, 2)
    fill = cache.begin(sha1, len(data))
    assert fill is not None
    await fill.write(data[:1000])

    def full(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "writev", full)
    await fill.write(data[1000:])  # never raises
    monkeypatch.undo()
    assert fill.failed
    assert not await fill.commit(sha1)
    assert sha1 not in cache
    assert kept_sha1 in cache
    assert list((tmp_path / "c" / "tmp").iterdir()) == []
    cache.close()


async def test_a_disk_short_of_room_begins_no_fill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = RelayCache.open(tmp_path / "c", 1 << 40)
    vfs = os.statvfs(tmp_path)
    free = vfs.f_bavail * vfs.f_frsize
    assert cache.begin(_content(10, 1)[1], free) is None
    cache.close()


async def test_cached_response_serves_range_head_and_etag(tmp_path: Path) -> None:
    cache = RelayCache.open(tmp_path / "c", 1 << 20)
    data, sha1 = _content(5000, 3)
    assert await _put(cache, data, sha1)
    whole = cached_response(request_from_target("GET", f"/sha1/{sha1}"), cache, sha1, sha1)
    assert whole is not None
    assert whole.status == 200
    assert whole.header("etag") == f'"{sha1}"'
    assert isinstance(whole.body, FileBody)
    assert whole.body.length == 5000
    whole.body.file.close()
    part = cached_response(
        request_from_target("GET", f"/sha1/{sha1}", [("Range", "bytes=10-19")]), cache, sha1, sha1
    )
    assert part is not None
    assert part.status == 206
    assert part.header("content-range") == "bytes 10-19/5000"
    assert isinstance(part.body, FileBody)
    part.body.file.close()
    head = cached_response(request_from_target("HEAD", f"/sha1/{sha1}"), cache, sha1, sha1)
    assert head is not None
    assert head.status == 200
    assert isinstance(head.body, FileBody)
    head.body.file.close()
    same = cached_response(
        request_from_target("GET", f"/sha1/{sha1}", [("If-None-Match", f'"{sha1}"')]),
        cache,
        sha1,
        sha1,
    )
    assert same is not None
    assert same.status == 304
    assert cache.stats.hits == 4
    assert cache.stats.bytes_served == 5010
    assert cached_response(request_from_target("GET", "/x"), cache, "1" * 40, "x") is None
    cache.close()


async def _body(response_body: object) -> bytes:
    assert isinstance(response_body, StreamBody)
    out = b""
    async for chunk in response_body.chunks:
        out += chunk
    return out


@pytest.mark.parametrize("case", ["full-disk", "aborted"])
async def test_a_fill_written_by_a_pool_thread_that_fails_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    cache = RelayCache.open(tmp_path / "c", 1 << 30)
    data, sha1 = _content(1 << 20, 9)
    fill = cache.begin(sha1, len(data))
    assert fill is not None
    chunks = [data[i : i + (128 << 10)] for i in range(0, len(data), 128 << 10)]
    await fill.write(chunks[0])  # large: written by a pool thread
    if case == "full-disk":

        def full(fd: int, buffers: object) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "writev", full)
        for chunk in chunks[1:]:
            await fill.write(chunk)  # never raises
        assert not await fill.commit(sha1)
        monkeypatch.undo()
    else:
        for chunk in chunks[1:]:
            await fill.write(chunk)
        fill.abort()  # the hub stopping: writes in flight end, the rest is dropped
        assert not await fill.commit(sha1)
    assert fill.failed
    assert not fill.writing
    assert sha1 not in cache
    assert cache.fill_in_progress(sha1) is None
    assert list((tmp_path / "c" / "tmp").iterdir()) == []
    # The next fill of the same content works.
    assert await _put(cache, data, sha1)
    cache.close()


async def test_a_joiner_follows_the_fill_and_gets_its_end_only_after_commit(
    tmp_path: Path,
) -> None:
    cache = RelayCache.open(tmp_path / "c", 1 << 30)
    data, sha1 = _content(3 << 20, 4)
    fill = cache.begin(sha1, len(data))
    assert fill is not None
    await fill.write(data[: 1 << 20])
    request = request_from_target("GET", f"/sha1/{sha1}")
    assert joined_response(request_from_target("HEAD", f"/sha1/{sha1}"), cache, sha1, sha1) is None
    ranged = request_from_target("GET", f"/sha1/{sha1}", [("Range", "bytes=0-1")])
    assert joined_response(ranged, cache, sha1, sha1) is None
    joined = joined_response(request, cache, sha1, sha1)
    assert joined is not None
    assert joined.status == 200
    body = joined.body
    assert isinstance(body, StreamBody)
    assert body.length == len(data)
    received = bytearray()

    async def read() -> None:
        async for chunk in body.chunks:
            received.extend(chunk)

    async def until_received(size: int) -> None:
        # A pool thread writes the fill: the joiner sees its bytes soon, not at once.
        with anyio.fail_after(10):
            while len(received) < size:
                await anyio.sleep(0.01)

    async with anyio.create_task_group() as tg:
        tg.start_soon(read)
        await until_received(1 << 20)
        assert bytes(received) == data[: 1 << 20]
        tee = Tee(fill, checked=True)  # the content check hashed the body
        await tee.feed(data[1 << 20 :])
        await until_received(len(data) - 1)
        await anyio.sleep(0.05)
        # Every byte arrived, but the fill is not committed: the last one is held.
        assert bytes(received) == data[:-1]
        await tee.end()
    assert bytes(received) == data
    assert sha1 in cache


async def test_a_joiner_is_cut_when_the_fill_fails_or_stalls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = RelayCache.open(tmp_path / "c", 1 << 30)
    data, sha1 = _content(1000, 5)
    fill = cache.begin(sha1, len(data))
    assert fill is not None
    await fill.write(data[:500])
    joined = joined_response(request_from_target("GET", f"/sha1/{sha1}"), cache, sha1, sha1)
    assert joined is not None
    got: list[bytes] = []

    async def collect() -> None:
        assert isinstance(joined.body, StreamBody)
        async for chunk in joined.body.chunks:
            got.append(chunk)

    async def read() -> None:
        with pytest.raises(ReadError, match="shared transfer"):
            await collect()

    async with anyio.create_task_group() as tg:
        tg.start_soon(read)
        await anyio.sleep(0.05)
        Tee(fill, checked=False).abort()
    assert got == [data[:500]]
    # A fill that stops sending: the joiner gives up after JOIN_IDLE.
    monkeypatch.setattr(cacheserve, "JOIN_IDLE", 0.1)
    stalled = cache.begin(sha1, len(data))
    assert stalled is not None
    joined2 = joined_response(request_from_target("GET", f"/sha1/{sha1}"), cache, sha1, sha1)
    assert joined2 is not None
    with pytest.raises(ReadError):
        await _body(joined2.body)
    stalled.abort()
    cache.close()


async def test_a_tee_of_bytes_not_hashing_to_the_id_commits_nothing(tmp_path: Path) -> None:
    cache = RelayCache.open(tmp_path / "c", 1 << 20)
    data, sha1 = _content(1000, 6)
    fill = cache.begin(sha1, len(data))
    assert fill is not None
    tee = Tee(fill, checked=False)
    await tee.feed(b"x" * len(data))
    await tee.end()
    assert sha1 not in cache
    assert fill.failed
    cache.close()


async def test_a_commit_that_fails_or_is_cancelled_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = RelayCache.open(tmp_path / "c", 1 << 20)
    data, sha1 = _content(2000, 8)
    fill = cache.begin(sha1, len(data))
    assert fill is not None
    await fill.write(data)

    def no_rename(src: object, dst: object) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "rename", no_rename)
    assert not await fill.commit(sha1)
    monkeypatch.undo()
    assert fill.failed
    assert sha1 not in cache
    assert list((tmp_path / "c" / "tmp").iterdir()) == []
    # Cancelled while it waits for the fsync (the hub stopping): the same.
    again = cache.begin(sha1, len(data))
    assert again is not None
    await again.write(data)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await again.commit(sha1)
    assert again.failed
    assert sha1 not in cache
    assert list((tmp_path / "c" / "tmp").iterdir()) == []
    assert list((tmp_path / "c" / "objects").iterdir()) == []
    cache.close()
