"""The server's reused response heads and direct writes, and its one header pass.

What each must keep (``kbtransport.http_heads``, ``kbtransport._accel.direct_writer``,
``kbtransport.http_request.read_head``):

- every response still carries its own length, an HTTP/1.0 client still gets
  ``Connection: close``, HEAD/204/304 carry no body, pipelined requests are answered
  in order, large bodies still go out whole;
- the one pass over request headers still lowercases names, finds bodies (Content-Length,
  chunked, ``Expect: 100-continue``) and bounds the head.
"""

from __future__ import annotations

import anyio
import pytest

from kbtransport.http import Request, Response
from kbtransport.http_server import ServerConfig
from kbtransport.testing import parse_raw_responses, raw_http
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
