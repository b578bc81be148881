"""A real network in one process on 127.0.0.1: hub A <- hub B <- share S, share T <- A.

S advertises an unreachable listen URL (it is "behind a firewall"), so everything of S
reached through A or T travels over the websockets, hop by hop. Real cores, real
websockets, the real HTTP server and client; shares serve temp directories with
``kbapps.share.server.build_share_router``.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
import trustme

from kbproto import HubConfig, HubCore, SeededIdSource
from kbtransport._accel import set_read_size
from kbtransport.errors import TransportError
from kbtransport.http_client import ClientConfig, HttpClient
from kbtransport.listener import BoundAddress, ListenConfig
from kbtransport.routing import Router
from kbtransport.serve import NodeHandle, serve_node
from kbtransport.testing import raw_http
from tests.helpers import CryptoVerifier, Ed25519Signer
from tests.transport.node_helpers import (
    FAST,
    UNREACHABLE,
    Tree,
    sha1_file,
    tree,
    wait_until,
    write_file,
)

pytestmark = pytest.mark.anyio

#: A few MiB: many stream windows on every hop, still quick.
BIG = 3 * 1024 * 1024 + 12345


@dataclass
class Net:
    tree: Tree
    a: NodeHandle
    b: NodeHandle
    s: NodeHandle
    t: NodeHandle
    big: bytes
    big_sha1: str
    small: bytes
    small_sha1: str


@asynccontextmanager
async def network(tmp_path: Path) -> AsyncIterator[Net]:
    big = write_file(tmp_path / "s" / "data" / "big file.dat", BIG, 1)
    (tmp_path / "s" / ".hidden").write_bytes(b"secret")
    small = write_file(tmp_path / "t" / "small.dat", 5000, 2)
    async with tree() as t:
        a = await t.hub("A")
        b = await t.hub("B", "A")
        s = await t.share("S", tmp_path / "s", "B", listen_url=UNREACHABLE)
        tt = await t.share("T", tmp_path / "t", "A")
        net = Net(
            t,
            a,
            b,
            s,
            tt,
            big,
            sha1_file(tmp_path / "s" / "data" / "big file.dat"),
            small,
            sha1_file(tmp_path / "t" / "small.dat"),
        )

        # Joined and indexed: the top hub finds S's content.
        async def indexed() -> bool:
            answer = await a.node.find(net.big_sha1)
            return bool(getattr(answer, "results", ()))

        await wait_until(indexed, what="S's index at A")
        yield net


async def get_json(client: HttpClient, url: str) -> tuple[int, dict[str, object]]:
    response, body = await client.request("GET", url)
    return response.status, json.loads(body)


async def test_find_urls_downloads_ranges_and_routes_through_two_hubs(
    tmp_path: Path, anyio_backend: str
) -> None:
    async with network(tmp_path) as net, HttpClient() as client:
        a, b, s, t = net.a, net.b, net.s, net.t
        sid = s.node.node_id
        tail = f"/{sid}/download/data/big%20file.dat"

        # /find at every node: share URL, then the hubs from S upward, then the node.
        expected = {
            "S": [UNREACHABLE + tail],
            "B": [UNREACHABLE + tail, b.local_url + tail],
            "A": [UNREACHABLE + tail, b.local_url + tail, a.local_url + tail],
            "T": [UNREACHABLE + tail, b.local_url + tail, a.local_url + tail, t.local_url + tail],
        }
        for name, handle in (("S", s), ("B", b), ("A", a), ("T", t)):
            status, payload = await get_json(client, f"{handle.local_url}/find/{net.big_sha1}/x")
            assert status == 200
            assert payload == {
                "success": True,
                "found": True,
                "size": BIG,
                "urls": expected[name],
                "results": [{"kbshare_id": sid, "size": BIG, "path": "data/big file.dat"}],
            }, name
        # Limited to one share, anywhere in the network.
        status, payload = await get_json(client, f"{t.local_url}/{sid}/api/find/{net.big_sha1}")
        assert payload["found"] is True
        status, payload = await get_json(
            client, f"{a.local_url}/{t.node.node_id}/api/find/{net.big_sha1}"
        )
        assert payload == {"success": True, "found": False}
        status, payload = await get_json(client, f"{a.local_url}/find/{'0' * 40}")
        assert payload == {"success": True, "found": False}

        # The whole file through two hubs, asked at A, at B, and at T (up, then down).
        for handle in (a, b, t):
            response, body = await client.request(
                "GET", handle.local_url + tail, max_body_bytes=BIG + 1
            )
            assert response.status == 200
            assert response.header("content-length") == str(BIG)
            assert response.header("access-control-allow-origin") == "*"
            assert body == net.big
        # A Range through two hubs: the exact slice.
        response, body = await client.request(
            "GET", a.local_url + tail, headers=[("Range", "bytes=1000000-2100000")]
        )
        assert response.status == 206
        assert response.header("content-range") == f"bytes 1000000-2100000/{BIG}"
        assert body == net.big[1000000:2100001]
        response, body = await client.request(
            "GET", a.local_url + tail, headers=[("Range", f"bytes={BIG}-")]
        )
        assert response.status == 416
        # HEAD: headers alone.
        response, body = await client.request("HEAD", a.local_url + tail)
        assert response.status == 200
        assert body == b""
        assert response.header("content-length") == str(BIG)
        assert response.header("accept-ranges") == "bytes"
        # The content by SHA-1, from wherever it is: through the tree, and locally.
        for handle in (a, s):
            response, body = await client.request(
                "GET", f"{handle.local_url}/sha1/{net.big_sha1}", max_body_bytes=BIG + 1
            )
            assert response.status == 200
            assert body == net.big
        response, body = await client.request(
            "GET", f"{b.local_url}/sha1/{net.small_sha1}", headers=[("Range", "bytes=10-19")]
        )
        assert response.status == 206
        assert body == net.small[10:20]

        # readdir and nodeinfo of S through A; no dot-names.
        status, payload = await get_json(client, f"{a.local_url}/{sid}/api/readdir/")
        assert status == 200
        assert payload["dirs"] == [{"name": "data"}]
        assert payload["files"] == []
        status, payload = await get_json(client, f"{a.local_url}/{sid}/api/readdir/data")
        files = payload["files"]
        assert isinstance(files, list)
        assert files[0]["name"] == "big file.dat"
        status, payload = await get_json(client, f"{a.local_url}/{sid}/api/nodeinfo")
        assert status == 200
        info = payload["info"]
        assert isinstance(info, dict)
        assert info["node_id"] == sid
        assert info["node_type"] == "leaf"
        assert info["listen_url"] == UNREACHABLE
        assert "PRIVATE" not in json.dumps(payload)
        parent = payload["parent_hub_info"]
        assert isinstance(parent, dict)
        assert parent["name"] == "B"
        # A hub's own nodeinfo lists its children.
        status, payload = await get_json(client, f"{a.local_url}/{a.node.node_id}/api/nodeinfo")
        # (description and owner from each child's registration, for the hub's page)
        child = {"description": "", "owner": ""}
        assert payload["child_hubs"] == {
            b.node.node_id: {"name": "B", "listen_url": b.local_url, **child}
        }
        assert payload["child_leaf_nodes"] == {
            t.node.node_id: {"name": "T", "listen_url": t.local_url, **child}
        }
        assert "parent_hub_info" not in payload
        # A node id nobody has: 404; a malformed content id finds nothing (as the
        # original hubs answered, so its clients say "not found").
        response, body = await client.request("GET", f"{b.local_url}/0123456789ab/api/nodeinfo")
        assert response.status == 404
        assert json.loads(body)["success"] is False
        for target in ("/find/xyz", f"/{sid}/api/find/xyz", f"/find/{'g' * 40}/name.txt"):
            response, body = await client.request("GET", a.local_url + target)
            assert response.status == 200
            answer = json.loads(body)
            assert answer["success"] is True
            assert answer["found"] is False
            assert "Malformed SHA-1" in answer["reason"]

        # Console hooks saw the joins.
        lines = net.tree.lines.lines
        assert f"A: child joined hub B {b.node.node_id}" in lines
        assert f"A: child joined leaf T {t.node.node_id}" in lines
        assert f"B: child joined leaf S {sid}" in lines
        assert "S: connected B" in lines
        assert "B: connected A" in lines
        # Every child sends upward on its raw uplink connection (the default).
        assert a.node.uplink_count() == 2
        assert b.node.uplink_count() == 1
        # ... read 1 MiB per socket read on asyncio (``kbtransport._accel``), not its
        # default 256 KiB (trio has no such limit to raise).
        for hub in (a, b):
            for uplink in hub.node._children_links._uplinks._links.values():
                assert uplink._stream is not None
                raised = set_read_size(uplink._stream, 1024 * 1024)
                assert raised == (anyio_backend == "asyncio")
        # Nothing leaked: every stream is closed at every node.
        for handle in (a, b, s, t):
            assert await handle.node.open_streams() == 0


async def test_concurrent_downloads_share_the_links(tmp_path: Path) -> None:
    async with network(tmp_path) as net, HttpClient() as client:
        tail = f"/{net.s.node.node_id}/download/data/big%20file.dat"
        results: dict[int, bytes] = {}

        async def fetch(index: int, start: int) -> None:
            headers = [("Range", f"bytes={start}-")]
            response, body = await client.request(
                "GET", net.t.local_url + tail, headers=headers, max_body_bytes=BIG + 1
            )
            assert response.status == 206
            results[index] = body

        starts = [0, 1, 777_777, 2_000_000]
        async with anyio.create_task_group() as tg:
            for index, start in enumerate(starts):
                tg.start_soon(fetch, index, start)
        for index, start in enumerate(starts):
            assert results[index] == net.big[start:]
        for handle in (net.a, net.b, net.s, net.t):
            await wait_until(lambda h=handle: _no_streams(h), what="streams closed")


async def test_cors_preflight_and_websocket_upgrade_path(tmp_path: Path) -> None:
    async with network(tmp_path) as net:
        stream = await anyio.connect_tcp("127.0.0.1", net.a.port)
        raw = await raw_http(
            stream,
            b"OPTIONS /find/abc HTTP/1.1\r\nHost: x\r\nOrigin: http://example\r\n"
            b"Access-Control-Request-Method: GET\r\nConnection: close\r\n\r\n",
        )
        assert b" 204 " in raw.split(b"\r\n", 1)[0]
        assert b"access-control-allow-origin: *" in raw.lower()
        assert b"content-range" in raw.lower()  # exposed headers listed
        await stream.aclose()


async def test_share_killed_mid_download_fails_the_client_and_hubs_keep_serving(
    tmp_path: Path,
) -> None:
    async with network(tmp_path) as net, HttpClient() as client:
        sid = net.s.node.node_id
        url = f"{net.a.local_url}/{sid}/download/data/big%20file.dat"
        received = 0

        async def download_until_cut() -> None:
            nonlocal received
            stopped = False
            async with client.stream("GET", url) as response:
                assert response.status == 200
                async for chunk in response.iter_bytes():
                    received += len(chunk)
                    if received >= 300_000 and not stopped:
                        stopped = True
                        net.s.stop()  # the share goes away mid-download

        with anyio.fail_after(FAST.heartbeat_timeout + 10), pytest.raises(TransportError):
            await download_until_cut()
        assert received < BIG
        # The hubs keep serving everyone else.
        tail = f"/{net.t.node.node_id}/download/small.dat"
        response, body = await client.request("GET", net.b.local_url + tail)
        assert response.status == 200
        assert body == net.small
        # S's content is dropped from the index once its link is gone.

        async def forgotten() -> bool:
            answer = await net.a.node.find(net.big_sha1)
            return not getattr(answer, "results", ())

        await wait_until(forgotten, timeout=FAST.heartbeat_timeout + 10)
        response, body = await client.request("GET", f"{net.a.local_url}/{sid}/api/nodeinfo")
        assert response.status in (404, 502)
        for handle in (net.a, net.b):
            await wait_until(lambda h=handle: _no_streams(h), what="streams closed")


async def _no_streams(handle: NodeHandle) -> bool:
    return await handle.node.open_streams() == 0


async def test_client_gone_mid_download_resets_the_stream_at_every_hop(tmp_path: Path) -> None:
    async with network(tmp_path) as net:
        sid = net.s.node.node_id
        request = (f"GET /{sid}/download/data/big%20file.dat HTTP/1.1\r\nHost: x\r\n\r\n").encode()
        stream = await anyio.connect_tcp("127.0.0.1", net.a.port)
        await stream.send(request)
        got = 0
        with anyio.fail_after(10):
            while got < 200_000:
                got += len(await stream.receive())
        # The stream is open at A (origin), B (relay) and S (target) right now.
        assert await net.s.node.open_streams() == 1
        await stream.aclose()  # the client goes away mid-download
        for handle in (net.a, net.b, net.s):
            await wait_until(lambda h=handle: _no_streams(h), what="stream reset")
        # And the links are still fine: a second download works.
        async with HttpClient() as client:
            response, body = await client.request(
                "GET",
                f"{net.a.local_url}/{sid}/download/data/big%20file.dat",
                headers=[("Range", "bytes=0-99")],
            )
        assert response.status == 206
        assert body == net.big[:100]


async def test_uplink_child_sends_its_bytes_upgraded(tmp_path: Path) -> None:
    data = write_file(tmp_path / "s" / "a.dat", 700_000, 5)
    async with tree() as t, HttpClient() as client:
        a = await t.hub("A")
        b = await t.hub("B", "A", uplink=False)
        s = await t.share("S", tmp_path / "s", "B", listen_url=UNREACHABLE)
        sha1 = sha1_file(tmp_path / "s" / "a.dat")

        async def found() -> bool:
            return bool(getattr(await a.node.find(sha1), "results", ()))

        await wait_until(found)
        assert b.node.uplink_count() == 1  # S -> B upgraded; B -> A a plain websocket
        assert a.node.uplink_count() == 0
        response, body = await client.request(
            "GET", f"{a.local_url}/sha1/{sha1}", headers=[("Range", "bytes=100-699999")]
        )
        assert response.status == 206
        assert body == data[100:]
        # The share going away ends its uplink link promptly at B.
        s.stop()

        async def dropped() -> bool:
            return not getattr(await a.node.find(sha1), "results", ())

        await wait_until(dropped)
        await wait_until(lambda: _zero(b.node.uplink_count()))


async def test_a_parent_that_refuses_the_uplink_upgrade_still_gets_the_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_file(tmp_path / "s" / "a.dat", 5_000, 9)
    async with tree() as t, HttpClient() as client:
        a = await t.hub("A")
        # As behind a proxy that passes websockets only: the websocket selects the
        # uplink, but every upgrade of the second connection is answered 404.
        monkeypatch.setattr(a.node._children_links._uplinks, "take", lambda token: None)
        await t.share("S", tmp_path / "s", "A", listen_url=UNREACHABLE)
        sha1 = sha1_file(tmp_path / "s" / "a.dat")

        async def found() -> bool:
            return bool(getattr(await a.node.find(sha1), "results", ()))

        await wait_until(found)  # the redial offers a plain websocket
        response, body = await client.request("GET", f"{a.local_url}/sha1/{sha1}")
        assert response.status == 200
        assert body == data


async def test_a_failed_websocket_upgrade_leaves_no_uplink_token_behind(tmp_path: Path) -> None:
    token = "c0" * 16
    async with tree() as t:
        a = await t.hub("A")
        # An uplink offer on an upgrade the server refuses (no Sec-WebSocket-Key): 400.
        stream = await anyio.connect_tcp("127.0.0.1", a.port)
        raw = await raw_http(
            stream,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: kbucket.uplink\r\n"
            b"X-Kbucket-Uplink: " + token.encode() + b"\r\n\r\n",
        )
        await stream.aclose()
        assert b" 400 " in raw.split(b"\r\n", 1)[0]
        assert a.node.uplink_count() == 0
        # So the token opens nothing: no 101, no connection parked for ever.
        stream = await anyio.connect_tcp("127.0.0.1", a.port)
        raw = await raw_http(
            stream,
            b"GET /_kblink/" + token.encode() + b" HTTP/1.1\r\nHost: x\r\n"
            b"Connection: Upgrade, close\r\nUpgrade: kbucket-uplink\r\n\r\n",
            timeout=5,
        )
        await stream.aclose()
        assert b" 404 " in raw.split(b"\r\n", 1)[0]


async def _zero(value: int) -> bool:
    return value == 0


async def test_uplink_upgrade_for_an_unknown_token_is_404(tmp_path: Path) -> None:
    async with tree() as t, HttpClient() as client:
        a = await t.hub("A")
        response, body = await client.request(
            "GET",
            f"{a.local_url}/_kblink/{'ab' * 16}",
            headers=[("Connection", "Upgrade"), ("Upgrade", "kbucket-uplink")],
        )
        assert response.status == 404
        assert json.loads(body)["success"] is False


async def test_client_gone_before_the_first_byte_resets_the_stream(tmp_path: Path) -> None:
    async with network(tmp_path) as net:
        sid = net.s.node.node_id
        for _ in range(3):
            stream = await anyio.connect_tcp("127.0.0.1", net.t.port)
            await stream.send(
                f"GET /{sid}/download/data/big%20file.dat HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            )
            await stream.aclose()  # gone at once: the body was never read
        for handle in (net.t, net.a, net.b, net.s):
            await wait_until(lambda h=handle: _no_streams(h), what="stream reset")


async def test_wrong_passcode_is_refused_with_one_line(tmp_path: Path) -> None:
    write_file(tmp_path / "s" / "a.dat", 100, 3)
    async with tree() as t:
        await t.hub("A", passcode="sesame")
        await t.share("S", tmp_path / "s", "A", parent_passcode="wrong")

        async def refused() -> bool:
            return any(line.startswith("S: refused") for line in t.lines.lines)

        await wait_until(refused)
        assert not any(line.startswith("A: child joined") for line in t.lines.lines)


async def test_hub_over_tls_serves_a_child_over_wss_and_a_client_over_https(
    tmp_path: Path, ca: trustme.CA, server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    data = write_file(tmp_path / "s" / "a.dat", 200_000, 4)
    signer = Ed25519Signer(900)

    def make(bound: BoundAddress) -> HubCore:
        config = HubConfig(
            name="TLS hub", listen_url=f"https://127.0.0.1:{bound.port}", timeouts=FAST
        )
        return HubCore(config, signer=signer, verifier=CryptoVerifier(), ids=SeededIdSource("tls"))

    listen = ListenConfig(host="127.0.0.1", port=0, ssl_context=server_ssl)
    async with serve_node(make, Router(), listen) as hub:
        assert hub.scheme == "https"
        assert hub.local_url.startswith("https://")
        async with tree() as t:
            t.handles["H"] = hub
            share = await t.share("S", tmp_path / "s", "H", client_ssl=client_ssl)
            sha1 = sha1_file(tmp_path / "s" / "a.dat")

            async def joined() -> bool:
                return bool(getattr(await hub.node.find(sha1), "results", ()))

            await wait_until(joined)
            async with HttpClient(_client_config(client_ssl)) as client:
                url = f"{hub.local_url}/sha1/{sha1}"
                response, body = await client.request("GET", url)
                assert response.status == 200
                assert body == data
            del share


def _client_config(context: ssl.SSLContext) -> ClientConfig:
    return ClientConfig(ssl_context=context)


async def test_target_capacity_is_read_from_the_core_not_from_a_stale_event() -> None:
    # Events are dispatched after a whole batch of inputs; a send applied in the same
    # batch already used part of the credit a StreamWritable reports. The serving side
    # must take the live value, or it would over-send (regression: a proxied download
    # was cut with "send_data() ... with only 0 of credit").
    from kbproto import ShareConfig, ShareCore
    from kbproto.events import StreamWritable
    from kbproto.ids import StreamId
    from kbtransport.node import Node
    from kbtransport.served_streams import _Target

    core = ShareCore(
        ShareConfig(name="s", listen_url="http://s:1"),
        signer=Ed25519Signer(5),
        ids=SeededIdSource("s"),
    )
    node = Node(core)
    sid = StreamId(7)
    target = _Target(sid, capacity=0, link=None)
    node._served._streams[sid] = target
    node._on_event(StreamWritable(stream_id=sid, capacity=1 << 20))
    assert target.capacity == core.send_capacity(sid) == 0
