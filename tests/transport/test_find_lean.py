"""The lean find path: reused responses and h11 events, direct writes, one header pass.

What each shortcut must keep:

- ``build_node_app`` reuses a whole /find response only while the core cannot have
  changed (no driver step), and never after a step that changed the answer;
- the HTTP server writes small responses straight to the transport and reuses built
  h11 ``Response`` events: every response still carries its own length, an HTTP/1.0
  client still gets ``Connection: close``, HEAD/204/304 carry no body, pipelined
  requests are answered in order, large bodies still go out whole;
- the one pass over request headers still lowercases names, finds bodies (Content-Length,
  chunked, ``Expect: 100-continue``) and bounds the head.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from kbproto.events import LookupFailed, LookupResolved
from kbtransport.driver import DriverStopped
from kbtransport.http import Request, Response
from kbtransport.http_server import ServerConfig
from kbtransport.httpapi import build_node_app
from kbtransport.testing import parse_raw_responses, raw_http
from tests.transport.node_helpers import sha1_file, tree, wait_until, write_file
from tests.transport.transport_helpers import loopback_server, memory_server

pytestmark = pytest.mark.anyio


def get(path: str, upgrade: str | None = None) -> Request:
    headers = () if upgrade is None else ((b"upgrade", upgrade.encode()),)
    return Request(
        method="GET",
        target=path.encode(),
        path=path,
        segments=tuple(path[1:].split("/")),
        headers=headers,
    )


async def no_local(request: Request) -> Response:
    return Response(status=418, body=b"local")


async def test_a_find_response_is_reused_until_a_driver_step_changes_the_answer(
    tmp_path: Path,
) -> None:
    write_file(tmp_path / "t" / "t.dat", 3000, 3)
    sha1 = sha1_file(tmp_path / "t" / "t.dat")
    async with tree() as net:
        a = await net.hub("A")
        t = await net.share("T", tmp_path / "t", "A")

        async def indexed() -> bool:
            return isinstance(await a.node.find(sha1), LookupResolved)

        await wait_until(indexed, what="T indexed at A")
        # The results the route reads are those of the node's own find.
        answer = await a.node.find(sha1)
        assert isinstance(answer, LookupResolved)
        assert a.node.answer_now(sha1) == answer.results
        app = build_node_app(a.node, no_local)
        # The first call fills the cache only if no driver step ran during it: ask
        # until two answers in a row come from the same step.
        for _ in range(100):
            steps = a.node.driver.steps
            first = await app(get(f"/find/{sha1}"))
            second = await app(get(f"/find/{sha1}"))
            if a.node.driver.steps == steps:
                break
            await anyio.sleep(0.01)
        assert second is first
        assert first.status == 200
        assert isinstance(first.body, bytes)
        assert b'"found":true' in first.body
        # Any case of the SHA-1, or a share-limited find, is its own entry and its own
        # answer, equal to the plain one where it should be.
        upper = await app(get(f"/find/{sha1.upper()}"))
        assert upper.body == first.body
        limited = await app(get(f"/{t.node.node_id}/api/find/{sha1}"))
        assert limited.body == first.body
        # A websocket upgrade to the find path is still a child link, not a find.
        upgrade = await app(get(f"/find/{sha1}", upgrade="websocket"))
        assert upgrade.status == 101
        # Another Upgrade value does not make it one.
        other = await app(get(f"/find/{sha1}", upgrade="h2c"))
        assert other.body == first.body
        # The share drops the file: a driver step at A, after which the old
        # response is never given again.
        await t.remove_file("t.dat")

        async def gone() -> bool:
            return isinstance(await a.node.find(sha1), LookupFailed)

        await wait_until(gone, what="the removal seen at A")
        after = await app(get(f"/find/{sha1}"))
        assert after.body == b'{"success":true,"found":false}'
        assert (await app(get(f"/find/{sha1}"))).body == after.body


async def test_a_stopped_node_answers_no_find_from_the_cache(tmp_path: Path) -> None:
    write_file(tmp_path / "t" / "t.dat", 100, 4)
    sha1 = sha1_file(tmp_path / "t" / "t.dat")
    async with tree() as net:
        a = await net.hub("A")
        await net.share("T", tmp_path / "t", "A")

        async def indexed() -> bool:
            return isinstance(await a.node.find(sha1), LookupResolved)

        await wait_until(indexed, what="T indexed at A")
        app = build_node_app(a.node, no_local)
        await app(get(f"/find/{sha1}"))
        cached = await app(get(f"/find/{sha1}"))
        driver = a.node.driver
        # The driver ending without a step in between (as when its task is cancelled
        # while it waits): the cached response must not outlive it.
        steps = driver.steps
        driver._running = False
        try:
            with pytest.raises(DriverStopped):
                await app(get(f"/find/{sha1}"))
        finally:
            driver._running = True
        assert driver.steps == steps
        assert (await app(get(f"/find/{sha1}"))).body == cached.body
        a.stop()
        await a.wait()
        with pytest.raises(DriverStopped):
            await app(get(f"/find/{sha1}"))


async def sized_app(request: Request) -> Response:
    """Answers by the first path segment (bodies of several sizes, 204, 304, an echo)."""
    name = request.segments[0]
    if name == "empty":
        return Response(status=204)
    if name == "same":
        return Response(status=304, headers=(("ETag", '"x"'),))
    if name == "big":
        return Response(status=200, body=b"b" * 100_000)
    if name == "echo":
        names = b",".join(n for n, _ in request.headers)
        return Response(status=200, body=names + b"|" + request.body)
    return Response(status=200, headers=(("Content-Type", "text/plain"),), body=name.encode())


async def exchange(port: int, requests: bytes) -> bytes:
    stream = await anyio.connect_tcp("127.0.0.1", port)
    async with stream:
        return await raw_http(stream, requests, timeout=10)


async def test_responses_on_a_real_socket_keep_their_own_heads() -> None:
    async with loopback_server(sized_app) as bound:
        data = await exchange(
            bound.port,
            b"".join(
                [
                    b"GET /ab HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"GET /abc HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"GET /de HTTP/1.1\r\nHost: x\r\n\r\n",  # the same head as /ab
                    b"GET /empty HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"GET /same HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n",
                    # HTTP/1.0 with /ab's head: h11 must still add Connection: close.
                    b"GET /xy HTTP/1.0\r\n\r\n",
                ]
            ),
        )
        head_data = await exchange(
            bound.port,
            b"GET /fgh HTTP/1.1\r\nHost: x\r\n\r\n"
            b"HEAD /ijk HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
    responses = parse_raw_responses(data)
    assert [r.status for r in responses] == [200, 200, 200, 204, 304, 200, 200]
    assert [r.body for r in responses[:3]] == [b"ab", b"abc", b"de"]
    assert [r.headers["content-length"] for r in responses[:3]] == ["2", "3", "2"]
    assert "connection" not in responses[0].headers
    empty, same, big, last = responses[3:]
    assert empty.body == b""
    assert "content-length" not in empty.headers
    assert (same.body, same.headers["etag"]) == (b"", '"x"')
    assert big.body == b"b" * 100_000
    assert (last.body, last.headers["connection"]) == (b"xy", "close")
    # A HEAD answer: the GET's length, no body (the connection then closes).
    _, _, rest = head_data.partition(b"fgh")
    (head,) = parse_raw_responses(rest, head_only=True)
    assert head.status == 200
    assert head.headers["content-length"] == "3"
    assert rest.endswith(b"\r\n\r\n")


async def test_pipelined_requests_on_a_real_socket_come_back_in_order() -> None:
    async with loopback_server(sized_app) as bound:
        stream = await anyio.connect_tcp("127.0.0.1", bound.port)
        async with stream:
            requests = b"".join(
                f"GET /r{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for i in range(200)
            )
            requests += b"GET /end HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            data = await raw_http(stream, requests, timeout=10)
    bodies = [r.body for r in parse_raw_responses(data)]
    assert bodies == [f"r{i}".encode() for i in range(200)] + [b"end"]


async def test_the_header_pass_lowercases_names_and_finds_every_body() -> None:
    async with memory_server(sized_app) as client:
        requests = b"".join(
            [
                b"GET /echo HTTP/1.1\r\nHOST: x\r\nX-Mixed-Case: 1\r\n\r\n",
                b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
                b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n0\r\n\r\n",
                b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
                b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                b"Content-Length: 2\r\nConnection: close\r\n\r\nok",
            ]
        )
        data = await raw_http(client, requests, timeout=10)
    responses = [r for r in parse_raw_responses(data) if r.status != 100]
    assert [r.body for r in responses] == [
        b"host,x-mixed-case|",
        b"host,content-length|hello",
        b"host,transfer-encoding|abc",
        b"host,content-length|",
        b"host,expect,content-length,connection|ok",
    ]


async def test_a_whole_head_over_the_limit_in_one_read_is_refused() -> None:
    config = ServerConfig(max_head_bytes=1024)
    async with memory_server(sized_app, config) as client:
        big = b"GET /x HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"p" * 1100 + b"\r\n\r\n"
        data = await raw_http(client, big, timeout=10)
    (response,) = parse_raw_responses(data)
    assert response.status == 431
