"""The node's docs/http.md routes: pure helpers, and a standalone share on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kbproto.events import LookupResolved
from kbproto.ids import LookupId, NodeId
from kbproto.messages import FindResult
from kbtransport.apijson import find_body
from kbtransport.http_client import HttpClient
from kbtransport.served_streams import request_from_target
from kbtransport.uplink import UplinkRegistry, uplink_url
from tests.transport.node_helpers import sha1_file, tree, write_file

pytestmark = pytest.mark.anyio

SHA = "a" * 40
S1, S2, H1, H2 = (NodeId(x * 12) for x in "1234")


def result(share: NodeId, url: str, path: str, hops: tuple[tuple[NodeId, str], ...]) -> FindResult:
    return FindResult(kbshare_id=share, share_url=url, path=path, size=10, hops=hops)


def test_find_urls_are_ordered_share_then_hops_then_this_node() -> None:
    answer = LookupResolved(
        lookup_id=LookupId(1),
        sha1=SHA,
        share_id=None,
        results=(
            result(S1, "http://s1:2000", "d/a b.dat", ((H1, "http://h1:3240"),)),
            result(S2, "", "x#y?.dat", ((H2, "http://h2:3240/"), (H1, "http://h1:3240"))),
        ),
    )
    payload = json.loads(find_body(answer.results, "http://top:3240"))
    one = f"/{S1}/download/d/a%20b.dat"
    two = f"/{S2}/download/x%23y%3F.dat"
    assert payload["urls"] == [
        # distance 0: the shares' own URLs (S2 has none)
        "http://s1:2000" + one,
        # distance 1: the hub next to each share
        "http://h1:3240" + one,
        "http://h2:3240" + two,
        # distance 2
        "http://h1:3240" + two,
        # then the node that was asked
        "http://top:3240" + one,
        "http://top:3240" + two,
    ]
    assert payload["results"] == [
        {"kbshare_id": S1, "size": 10, "path": "d/a b.dat"},
        {"kbshare_id": S2, "size": 10, "path": "x#y?.dat"},
    ]
    assert payload["found"] is True
    assert payload["size"] == 10


def test_find_urls_of_a_local_result_are_not_repeated() -> None:
    answer = LookupResolved(
        lookup_id=LookupId(1),
        sha1=SHA,
        share_id=None,
        results=(result(S1, "http://s1:2000", "a", ()),),
    )
    assert json.loads(find_body(answer.results, "http://s1:2000/"))["urls"] == [
        f"http://s1:2000/{S1}/download/a"
    ]


def test_request_from_target_splits_before_decoding() -> None:
    request = request_from_target("get", "/id/download/a%2Fb/c%20d?x=1&y", [("Range", "bytes=1-")])
    assert request.method == "GET"
    assert request.segments == ("id", "download", "a/b", "c d")
    assert request.query == (("x", "1"), ("y", ""))
    assert request.header("range") == "bytes=1-"
    for bad in ("relative", "/%ff", "/caf\u00e9"):
        with pytest.raises(ValueError, match=r"\w"):
            request_from_target("GET", bad)


async def test_uplink_registry_tokens() -> None:
    registry = UplinkRegistry()
    assert registry.expect("short") is None
    assert registry.expect("G" * 32) is None
    token = "0f" * 16
    link = registry.expect(token)
    assert link is not None
    assert registry.expect(token) is None  # taken
    assert registry.take(token) is link
    assert registry.take(token) is None  # one upward connection per link
    registry.forget(token)
    assert len(registry) == 0
    assert uplink_url("wss://hub.example/", token) == f"https://hub.example:443/_kblink/{token}"
    assert uplink_url("http://[::1]:3240", token) == f"http://[::1]:3240/_kblink/{token}"


async def test_standalone_share_answers_its_own_routes(tmp_path: Path) -> None:
    data = write_file(tmp_path / "s" / "sub" / "f.dat", 100_000, 7)
    sha1 = sha1_file(tmp_path / "s" / "sub" / "f.dat")
    async with tree() as t, HttpClient() as client:
        s = await t.share("S", tmp_path / "s", None)
        sid = s.node.node_id
        base = s.local_url

        response, body = await client.request("GET", f"{base}/find/{sha1}/f.dat")
        assert json.loads(body) == {
            "success": True,
            "found": True,
            "size": 100_000,
            "urls": [f"{base}/{sid}/download/sub/f.dat"],
            "results": [{"kbshare_id": sid, "size": 100_000, "path": "sub/f.dat"}],
        }
        response, body = await client.request("GET", f"{base}/{sid}/api/find/{sha1.upper()}")
        assert json.loads(body)["found"] is True
        response, body = await client.request("GET", f"{base}/find/{'b' * 40}")
        assert json.loads(body) == {"success": True, "found": False}

        response, body = await client.request(
            "GET", f"{base}/sha1/{sha1}", headers=[("Range", "bytes=5-9")]
        )
        assert response.status == 206
        assert body == data[5:10]
        response, body = await client.request("HEAD", f"{base}/sha1/{sha1}")
        assert response.status == 200
        assert response.header("content-length") == "100000"
        response, body = await client.request("GET", f"{base}/sha1/{'b' * 40}")
        assert response.status == 404

        response, body = await client.request("GET", f"{base}/{sid}/api/nodeinfo")
        payload = json.loads(body)
        assert payload["info"]["node_type"] == "leaf"
        assert "child_hubs" not in payload
        assert "parent_hub_info" not in payload

        # Another node id: nowhere to route it on a standalone share.
        response, body = await client.request("GET", f"{base}/{'c' * 12}/api/nodeinfo")
        assert response.status == 404
        assert json.loads(body)["success"] is False
        # Methods and malformed input.
        response, body = await client.request("POST", f"{base}/find/{sha1}", body=b"x")
        assert response.status == 405
        response, body = await client.request("GET", f"{base}/sha1/nothex")
        assert response.status == 400
        # Anything else goes to the app's local router (here: 404 from it).
        response, body = await client.request("GET", f"{base}/web/index.html")
        assert response.status == 404
        assert response.header("access-control-allow-origin") == "*"
        assert await s.node.open_streams() == 0
