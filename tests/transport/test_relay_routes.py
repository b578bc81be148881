"""A hub's relay cache through its HTTP routes: fill on proxy, hits, single flight."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import anyio
import pytest

from kbtransport.cacheserve import KnownPaths
from kbtransport.http_client import HttpClient
from kbtransport.httpapi import NodeAppConfig
from kbtransport.relaycache import RelayCache
from tests.transport.node_helpers import Tree, tree, wait_until, write_file

pytestmark = pytest.mark.anyio

UNREACHABLE = "http://127.0.0.1:9"


async def _hub_and_share(
    t: Tree, tmp_path: Path, files: dict[str, int], bound: int = 1 << 30
) -> tuple[RelayCache, dict[str, bytes]]:
    cache = RelayCache.open(tmp_path / "hubcache", bound)
    await t.hub("A", app_config=NodeAppConfig(cache=cache))
    root = tmp_path / "s"
    root.mkdir()
    contents = {
        name: write_file(root / name, size, seed) for seed, (name, size) in enumerate(files.items())
    }
    await t.share("S", root, "A", listen_url=UNREACHABLE)
    a = t.handles["A"].node

    async def indexed() -> bool:
        return all(a.answer_now(hashlib.sha1(d).hexdigest()) for d in contents.values())

    await wait_until(indexed, what="the share's index at the hub")
    return cache, contents


async def test_a_proxied_download_is_then_served_from_the_cache_with_the_share_gone(
    tmp_path: Path,
) -> None:
    async with tree() as t, HttpClient() as client:
        cache, contents = await _hub_and_share(t, tmp_path, {"f.dat": 300_000})
        data = contents["f.dat"]
        sha1 = hashlib.sha1(data).hexdigest()
        base = t.handles["A"].local_url
        response, body = await client.request("GET", f"{base}/sha1/{sha1}")
        assert (response.status, body) == (200, data)
        await _in_cache(cache, sha1)  # committed after the last byte went out
        share = t.handles["S"]
        sent_before = share.node.metrics.tree_file_bytes
        share.stop()
        await wait_until(lambda: _false_when(t, sha1), what="the hub forgot the share's content")
        response, body = await client.request("GET", f"{base}/sha1/{sha1}")
        assert (response.status, body) == (200, data)
        assert response.header("etag") == f'"{sha1}"'
        response, body = await client.request(
            "GET", f"{base}/sha1/{sha1}", headers=[("Range", "bytes=100-199")]
        )
        assert (response.status, body) == (206, data[100:200])
        response, body = await client.request("HEAD", f"{base}/sha1/{sha1}")
        assert (response.status, body, response.header("content-length")) == (200, b"", "300000")
        # /ID/sha1/SHA1 for the share is answered from the hub's cache too.
        response, body = await client.request("GET", f"{base}/{share.node.node_id}/sha1/{sha1}")
        assert (response.status, body) == (200, data)
        assert share.node.metrics.tree_file_bytes == sent_before
        response, body = await client.request(
            "GET", f"{base}/{t.handles['A'].node.node_id}/api/nodeinfo"
        )
        info = json.loads(body)["cache"]
        assert info["entries"] == 1
        assert info["bytes"] == len(data)
        assert info["hits"] == 4
        assert info["bytes_served"] == 2 * len(data) + 100
        assert info["fills"] == 1


async def _in_cache(cache: RelayCache, sha1: str) -> None:
    async def held() -> bool:
        return sha1 in cache

    await wait_until(held, what="the entry committed")


async def _false_when(t: Tree, sha1: str) -> bool:
    return not t.handles["A"].node.answer_now(sha1)


async def test_a_download_by_path_fills_the_cache_when_its_etag_names_the_content(
    tmp_path: Path,
) -> None:
    async with tree() as t, HttpClient() as client:
        cache, contents = await _hub_and_share(t, tmp_path, {"d.dat": 50_000, "r.dat": 40_000})
        base = t.handles["A"].local_url
        sid = t.handles["S"].node.node_id
        response, body = await client.request("GET", f"{base}/{sid}/download/d.dat")
        assert (response.status, body) == (200, contents["d.dat"])
        await _in_cache(cache, hashlib.sha1(contents["d.dat"]).hexdigest())
        # A ranged request never fills.
        response, body = await client.request(
            "GET", f"{base}/{sid}/download/r.dat", headers=[("Range", "bytes=0-9")]
        )
        assert (response.status, body) == (206, contents["r.dat"][:10])
        assert cache.entries == 1


async def test_simultaneous_downloads_share_one_transfer_from_the_share(tmp_path: Path) -> None:
    size = 8 << 20
    async with tree() as t:
        cache, contents = await _hub_and_share(t, tmp_path, {"big.dat": size})
        data = contents["big.dat"]
        sha1 = hashlib.sha1(data).hexdigest()
        base = t.handles["A"].local_url
        share = t.handles["S"].node
        bodies: list[bytes] = []

        async def fetch() -> None:
            async with HttpClient() as client:
                response, body = await client.request("GET", f"{base}/sha1/{sha1}")
                assert response.status == 200
                bodies.append(body)

        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(fetch)
        assert bodies == [data] * 8
        # One transfer over the share's link (a little slack for nothing else).
        assert share.metrics.tree_file_bytes == size
        await _in_cache(cache, sha1)
        assert cache.stats.hits == 7


async def test_many_unknown_ids_leave_the_cache_as_it_was(tmp_path: Path) -> None:
    async with tree() as t, HttpClient() as client:
        cache, _ = await _hub_and_share(t, tmp_path, {"x.dat": 1000})
        base = t.handles["A"].local_url
        for i in range(200):
            response, _ = await client.request("GET", f"{base}/sha1/{i:040x}")
            assert response.status == 404
        assert (cache.entries, cache.reserved, cache.stats.misses) == (0, 0, 200)
        assert list((tmp_path / "hubcache" / "tmp").iterdir()) == []
        assert list((tmp_path / "hubcache" / "objects").iterdir()) == []


async def test_a_hub_announces_its_cache_so_the_content_is_found_and_served_upstream(
    tmp_path: Path,
) -> None:
    async with tree() as t, HttpClient() as client:
        await t.hub("P")
        cache = RelayCache.open(tmp_path / "hubcache", 1 << 30)
        a = await t.hub("A", parent="P", app_config=NodeAppConfig(cache=cache))
        root = tmp_path / "s"
        root.mkdir()
        data = write_file(root / "f.dat", 200_000, 5)
        sha1 = hashlib.sha1(data).hexdigest()
        await t.share("S", root, "A", listen_url=UNREACHABLE)
        p_url, a_url, a_id = t.handles["P"].local_url, a.local_url, a.node.node_id

        async def found_at_p() -> bool:
            _response, body = await client.request("GET", f"{p_url}/find/{sha1}")
            return bool(json.loads(body)["found"])

        await wait_until(found_at_p, what="S's file findable at P")
        response, body = await client.request("GET", f"{a_url}/sha1/{sha1}")
        assert (response.status, body) == (200, data)
        await _in_cache(cache, sha1)
        t.handles["S"].stop()

        async def only_a_holds_it() -> bool:
            _response, body = await client.request("GET", f"{p_url}/find/{sha1}")
            answer = json.loads(body)
            return answer["found"] and [r["kbshare_id"] for r in answer["results"]] == [a_id]

        await wait_until(only_a_holds_it, what="A announced as the source at P")
        response, body = await client.request("GET", f"{p_url}/find/{sha1}")
        answer = json.loads(body)
        assert answer["results"] == [{"kbshare_id": a_id, "size": len(data), "path": sha1}]
        own_url = f"{a_url}/{a_id}/download/{sha1}"
        assert own_url in answer["urls"]
        # The URL the find gives, at A; through P by id; and P's /sha1/ (asks A).
        for url in (own_url, f"{p_url}/{a_id}/download/{sha1}", f"{p_url}/sha1/{sha1}"):
            response, body = await client.request("GET", url)
            assert (url, response.status, body == data) == (url, 200, True)
        response, body = await client.request(
            "GET", f"{p_url}/{a_id}/sha1/{sha1}", headers=[("Range", "bytes=1-3")]
        )
        assert (response.status, body) == (206, data[1:4])
        # Evicted (here: the file damaged, found at use): no longer announced.
        cache.path_for(sha1).write_bytes(b"x")
        response, _ = await client.request("GET", f"{a_url}/{a_id}/download/{sha1}")
        assert response.status == 404

        async def gone_at_p() -> bool:
            _response, body = await client.request("GET", f"{p_url}/find/{sha1}")
            return not json.loads(body)["found"]

        await wait_until(gone_at_p, what="A's announcement withdrawn at P")


async def test_a_download_by_path_is_answered_from_the_cache_after_the_share_s_304(
    tmp_path: Path,
) -> None:
    async with tree() as t, HttpClient() as client:
        cache, contents = await _hub_and_share(t, tmp_path, {"d.dat": 50_000})
        data = contents["d.dat"]
        sha1 = hashlib.sha1(data).hexdigest()
        url = f"{t.handles['A'].local_url}/{t.handles['S'].node.node_id}/download/d.dat"
        share = t.handles["S"].node.metrics
        response, body = await client.request("GET", url)
        assert (response.status, body) == (200, data)
        await _in_cache(cache, sha1)
        sent = share.tree_file_bytes
        response, body = await client.request("GET", url, headers=[("Range", "bytes=3-9")])
        assert (response.status, body, response.header("etag")) == (206, data[3:10], f'"{sha1}"')
        assert (share.tree_file_bytes, cache.stats.hits) == (sent, 1)
        # The client's own conditional is the share's to answer, not the cache's.
        response, body = await client.request("GET", url, headers=[("If-None-Match", f'"{sha1}"')])
        assert (response.status, body, cache.stats.hits) == (304, b"", 1)


def test_known_paths_forget_the_least_recently_used_and_what_is_cleared() -> None:
    paths = KnownPaths(2)
    paths.learn("s", "/s/download/a", "1" * 40)
    paths.learn("s", "/s/download/b", "2" * 40)
    assert paths.get("s", "/s/download/a") == "1" * 40  # now the most recently used
    paths.learn("s", "/s/download/c", "3" * 40)
    assert (paths.get("s", "/s/download/b"), len(paths)) == (None, 2)
    paths.learn("s", "/s/download/a", "")
    assert (paths.get("s", "/s/download/a"), paths.get("t", "/s/download/c")) == (None, None)
    with pytest.raises(ValueError, match="one entry"):
        KnownPaths(0)
