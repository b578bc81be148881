"""``Node.find`` answers from the core's index without the driver when it can.

Real nodes on 127.0.0.1: hub A with share T directly under it and hub B (share S under
B). At A, T's content is answered at once (``IMMEDIATE_LOOKUP``), S's content needs B
(a real find in the core), and both give what the core's own find gives.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kbproto.events import LookupFailed, LookupResolved
from kbproto.ids import NodeId
from kbproto.messages import FindResult
from kbtransport.apijson import find_body
from kbtransport.driver import DriverStopped
from kbtransport.http_client import HttpClient
from kbtransport.node import IMMEDIATE_LOOKUP
from tests.transport.node_helpers import sha1_file, tree, wait_until, write_file

pytestmark = pytest.mark.anyio


async def test_direct_shares_are_answered_at_once_and_the_rest_through_the_driver(
    tmp_path: Path,
) -> None:
    write_file(tmp_path / "t" / "t.dat", 3000, 1)
    write_file(tmp_path / "s" / "s.dat", 2000, 2)
    t_sha1 = sha1_file(tmp_path / "t" / "t.dat")
    s_sha1 = sha1_file(tmp_path / "s" / "s.dat")
    async with tree() as net, HttpClient() as client:
        a = await net.hub("A")
        await net.hub("B", "A")
        s = await net.share("S", tmp_path / "s", "B")
        t = await net.share("T", tmp_path / "t", "A")

        async def both_indexed() -> bool:
            answers = [await a.node.find(x) for x in (t_sha1, s_sha1)]
            return all(isinstance(x, LookupResolved) for x in answers)

        await wait_until(both_indexed, what="S and T indexed at A")

        # T is a direct share of A and no child hub holds its content: at once.
        direct = await a.node.find(t_sha1)
        assert isinstance(direct, LookupResolved)
        assert direct.lookup_id == IMMEDIATE_LOOKUP
        assert [(r.kbshare_id, r.path, r.hops) for r in direct.results] == [
            (t.node.node_id, "t.dat", ())
        ]
        # S's content is below hub B: a real find (a lookup id of the core).
        below = await a.node.find(s_sha1)
        assert isinstance(below, LookupResolved)
        assert below.lookup_id != IMMEDIATE_LOOKUP
        assert [r.kbshare_id for r in below.results] == [s.node.node_id]
        # A is the top hub: nothing anywhere is "not found" at once, as the core says.
        missing = await a.node.find("0" * 40)
        assert isinstance(missing, LookupFailed)
        assert missing.lookup_id == IMMEDIATE_LOOKUP
        assert missing.reason == "not found"
        # A share answers its own file at once, and asks its hub for the others.
        own = await t.node.find(t_sha1)
        assert isinstance(own, LookupResolved)
        assert own.lookup_id == IMMEDIATE_LOOKUP
        other = await t.node.find(s_sha1)
        assert isinstance(other, LookupResolved)
        assert other.lookup_id != IMMEDIATE_LOOKUP
        # Share-limited: S holds no copy of T's content and S is in A's subtree, so
        # nothing needs asking ("not found" at once); S's content on S needs B.
        limited = await a.node.find(t_sha1, share_id=s.node.node_id)
        assert isinstance(limited, LookupFailed)
        assert limited.lookup_id == IMMEDIATE_LOOKUP
        on_s = await a.node.find(s_sha1, share_id=s.node.node_id)
        assert isinstance(on_s, LookupResolved)
        assert on_s.lookup_id != IMMEDIATE_LOOKUP

        # The HTTP answer (docs/http.md) is the same JSON either way.
        response, body = await client.request("GET", f"{a.local_url}/find/{t_sha1}")
        assert response.status == 200
        payload = json.loads(body)
        assert payload["found"] is True
        assert payload["results"] == [{"kbshare_id": t.node.node_id, "size": 3000, "path": "t.dat"}]
        assert payload["urls"] == [
            f"{t.local_url}/{t.node.node_id}/download/t.dat",
            f"{a.local_url}/{t.node.node_id}/download/t.dat",
        ]
        # Nothing was left pending in the core by the shortcut.
        assert await a.node.driver.call(lambda now: a.node._core.pending_lookups()) == 0


async def test_find_on_a_stopped_node_fails_clearly(tmp_path: Path) -> None:
    async with tree() as net:
        a = await net.hub("A")
        node = a.node
        a.stop()
        await a.wait()
        with pytest.raises(DriverStopped):
            await node.find("0" * 40)


async def test_the_find_answer_is_find_body_with_json_headers(tmp_path: Path) -> None:
    write_file(tmp_path / "t" / "ü dir" / "x.dat", 10, 3)
    sha1 = sha1_file(tmp_path / "t" / "ü dir" / "x.dat")
    async with tree() as net, HttpClient() as client:
        a = await net.hub("A")
        await net.share("T", tmp_path / "t", "A")

        async def indexed() -> bool:
            return isinstance(await a.node.find(sha1), LookupResolved)

        await wait_until(indexed, what="T indexed at A")
        answer = await a.node.find(sha1)
        assert isinstance(answer, LookupResolved)
        response, body = await client.request("GET", f"{a.local_url}/find/{sha1}")
        assert body == find_body(answer.results, a.node.info.listen_url)
        assert (b"content-type", b"application/json; charset=utf-8") in response.headers


_texts = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\x00"),
    min_size=1,
    max_size=30,
)
_urls = st.sampled_from(["", "http://s:1", "http://h:2/", 'http://"q":3'])
_ids = st.sampled_from([NodeId("a" * 12), NodeId("b" * 12), NodeId("c" * 12)])


@given(
    st.lists(
        st.tuples(
            _ids,
            _urls,
            _texts,
            st.integers(0, 2**53),
            st.lists(st.tuples(_ids, _urls), max_size=3),
        ),
        min_size=1,
        max_size=5,
    ),
    _urls,
)
@settings(max_examples=300, deadline=None)
def test_find_body_is_valid_json_for_any_path_and_url(
    rows: list[tuple[NodeId, str, str, int, list[tuple[NodeId, str]]]], own_url: str
) -> None:
    """The hand-written JSON parses back to what was written, whatever the text."""
    results = tuple(
        FindResult(kbshare_id=sid, share_url=url, path=path, size=size, hops=tuple(hops))
        for sid, url, path, size, hops in rows
    )
    payload = json.loads(find_body(results, own_url))
    assert list(payload) == ["success", "found", "size", "urls", "results"]
    assert payload["success"] is True
    assert payload["found"] is True
    assert payload["size"] == rows[0][3]
    assert payload["results"] == [
        {"kbshare_id": sid, "size": size, "path": path} for sid, _, path, size, _ in rows
    ]
    tails = [f"/{sid}/download/{quote(path, safe='/')}" for sid, _, path, _, _ in rows]
    urls = payload["urls"]
    assert len(urls) == len(set(urls))
    assert all(any(url.endswith(tail) for tail in tails) for url in urls)
    if own_url:
        # This node's own URL for every result, after every other URL of it.
        for tail in tails:
            assert own_url.rstrip("/") + tail in urls


async def test_a_find_answer_is_reused_only_until_the_core_changes(tmp_path: Path) -> None:
    """The /find route keeps the answers it gave at once until the driver's next step:
    the same bytes while nothing changes, and never the old answer once the share's
    index update reached the hub."""
    write_file(tmp_path / "t" / "t.dat", 3000, 3)
    t_sha1 = sha1_file(tmp_path / "t" / "t.dat")
    async with tree() as net, HttpClient() as client:
        a = await net.hub("A")
        t = await net.share("T", tmp_path / "t", "A")

        async def found_at_a() -> bool:
            _, body = await client.request("GET", f"{a.local_url}/find/{t_sha1}")
            return bool(json.loads(body)["found"])

        await wait_until(found_at_a, what="T indexed at A")
        _, first = await client.request("GET", f"{a.local_url}/find/{t_sha1}")
        _, again = await client.request("GET", f"{a.local_url}/find/{t_sha1.upper()}")
        assert json.loads(first)["found"] is True
        assert again == first
        await t.remove_file("t.dat")

        async def gone() -> bool:
            return not await found_at_a()

        await wait_until(gone, what="the removal seen at A")
        for _ in range(3):
            assert not await found_at_a()
