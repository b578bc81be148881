"""The h11 server handler over in-memory streams: cycles, limits, errors, CORS, bodies."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import anyio
import pytest

from kbtransport.errors import ConnectError, TransportTimeout
from kbtransport.http import Request, Response, StreamBody, error_response, json_response
from kbtransport.http_server import ServerConfig
from kbtransport.testing import parse_raw_responses, raw_http
from tests.transport.transport_helpers import memory_server

pytestmark = pytest.mark.anyio

GET_CLOSE = b"GET /close HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


async def echo_app(request: Request) -> Response:
    """Answers with what the server parsed, so tests can check the parsing."""
    return json_response(
        200,
        {
            "method": request.method,
            "target": request.target.decode(),
            "path": request.path,
            "segments": list(request.segments),
            "query": [list(p) for p in request.query],
            "body": request.body.decode("latin-1"),
            "host": request.header("host"),
        },
    )


async def test_keep_alive_serves_several_requests_on_one_connection() -> None:
    async with memory_server(echo_app) as client:
        await client.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        first = await client.receive()
        assert first.startswith(b"HTTP/1.1 200 OK\r\n")
        data = await raw_http(client, GET_CLOSE)
    (second,) = parse_raw_responses(data)
    assert json.loads(second.body)["path"] == "/close"


async def test_pipelined_requests_are_answered_in_order() -> None:
    pipelined = (
        b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
        b"GET /three?a=1&b=%20 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    async with memory_server(echo_app) as client:
        data = await raw_http(client, pipelined)
    responses = parse_raw_responses(data)
    bodies = [json.loads(r.body) for r in responses]
    assert [b["path"] for b in bodies] == ["/one", "/two", "/three"]
    assert bodies[1]["body"] == "hello"
    assert bodies[2]["query"] == [["a", "1"], ["b", " "]]


async def test_request_split_at_every_byte_parses_the_same() -> None:
    request = b"GET /x/y%2Fz?q=1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    async with memory_server(echo_app) as client:
        for i in range(len(request)):
            await client.send(request[i : i + 1])
        data = await raw_http(client, b"")
    (response,) = parse_raw_responses(data)
    assert json.loads(response.body)["segments"] == ["x", "y/z"]


async def test_segments_are_split_before_decoding() -> None:
    async with memory_server(echo_app) as client:
        data = await raw_http(
            client, b"GET /a/%2e%2e/b%5cc/%00/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
    body = json.loads(parse_raw_responses(data)[0].body)
    assert body["segments"] == ["a", "..", "b\\c", "\x00", ""]
    assert body["path"] == "/a/%2e%2e/b%5cc/%00/"


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /x HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
        b"GET /%ff%fe HTTP/1.1\r\nHost: x\r\n\r\n",  # not UTF-8 once decoded
        b"GET http://example.org/x HTTP/1.1\r\nHost: x\r\n\r\n",  # absolute-form
        b"GET /x HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
        # Ambiguous framing (RFC 9112 §6.1, §6.3), then a request to smuggle after it.
        b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked"
        b"\r\n\r\n0\r\n\r\nGET /y HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 0"
        b"\r\n\r\n0\r\n\r\nGET /y HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /x HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked"
        b"\r\n\r\n0\r\n\r\nGET /y HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
)
async def test_malformed_requests_get_400_json_and_close(request_bytes: bytes) -> None:
    async with memory_server(echo_app) as client:
        data = await raw_http(client, request_bytes)
    (response,) = parse_raw_responses(data)
    assert response.status == 400
    assert response.headers["connection"] == "close"
    assert json.loads(response.body)["success"] is False


async def test_oversized_head_gets_431() -> None:
    config = ServerConfig(max_head_bytes=1024)
    big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n"
    async with memory_server(echo_app, config) as client:
        data = await raw_http(client, big)
    (response,) = parse_raw_responses(data)
    assert response.status == 431
    assert json.loads(response.body) == {
        "success": False,
        "error": "Request header fields too large",
    }


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n" + b"a" * 101,
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"40\r\n"
        + b"a" * 64
        + b"\r\n40\r\n"
        + b"b" * 64
        + b"\r\n0\r\n\r\n",
    ],
    ids=["content-length", "chunked"],
)
async def test_oversized_body_gets_413(request_bytes: bytes) -> None:
    async with memory_server(echo_app, ServerConfig(max_body_bytes=100)) as client:
        data = await raw_http(client, request_bytes)
    (response,) = parse_raw_responses(data)
    assert response.status == 413


async def test_head_sends_headers_only() -> None:
    request = b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n" + GET_CLOSE
    async with memory_server(echo_app) as client:
        data = await raw_http(client, request)
    head, rest = data.split(b"\r\n\r\n", 1)
    assert b"200 OK" in head
    length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
    assert length > 0
    # The next bytes are the second response, not a body.
    assert rest.startswith(b"HTTP/1.1 200 OK")


async def test_cors_headers_and_options_preflight() -> None:
    preflight = (
        b"OPTIONS /x/download/f HTTP/1.1\r\nHost: x\r\nOrigin: http://o\r\n"
        b"Access-Control-Request-Method: GET\r\n\r\n"
    )
    async with memory_server(echo_app) as client:
        data = await raw_http(client, preflight + GET_CLOSE)
    options, get = parse_raw_responses(data)
    assert options.status == 204
    assert "GET" in options.headers["access-control-allow-methods"]
    assert "Range" in options.headers["access-control-allow-headers"]
    for response in (options, get):
        assert response.headers["access-control-allow-origin"] == "*"
        assert response.headers["access-control-expose-headers"] == (
            "Content-Range, Content-Length, Accept-Ranges, ETag"
        )


async def test_app_exception_gives_500_and_the_connection_continues() -> None:
    async def broken(request: Request) -> Response:
        if request.path == "/boom":
            raise RuntimeError("secret /home/user path")
        return await echo_app(request)

    async with memory_server(broken) as client:
        data = await raw_http(client, b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n" + GET_CLOSE)
    boom, ok = parse_raw_responses(data)
    assert boom.status == 500
    assert b"secret" not in boom.body
    assert ok.status == 200


@pytest.mark.parametrize("length", [None, 6])
async def test_stream_bodies_chunked_or_with_length(length: int | None) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"abc"
        yield b""
        yield b"def"

    async def app(request: Request) -> Response:
        return Response(status=200, body=StreamBody(chunks=chunks(), length=length))

    async with memory_server(app) as client:
        data = await raw_http(client, GET_CLOSE)
    (response,) = parse_raw_responses(data)
    assert response.body == b"abcdef"
    if length is None:
        assert response.headers["transfer-encoding"] == "chunked"
    else:
        assert response.headers["content-length"] == "6"


async def test_stream_shorter_than_announced_aborts_the_connection() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"abc"

    async def app(request: Request) -> Response:
        return Response(status=200, body=StreamBody(chunks=chunks(), length=10))

    async with memory_server(app) as client:
        data = await raw_http(client, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    head, body = data.split(b"\r\n\r\n", 1)
    assert b"content-length: 10" in head
    assert body == b"abc"  # closed early: the client sees a truncated body


async def test_error_response_shape() -> None:
    response = error_response(404, "No such file")
    assert response.status == 404
    assert json.loads(response.body) == {"success": False, "error": "No such file"}  # type: ignore[arg-type]
    assert json.loads(error_response(504).body) == {  # type: ignore[arg-type]
        "success": False,
        "error": "Gateway timeout",
    }


async def test_idle_connection_is_closed_after_idle_timeout() -> None:
    config = ServerConfig(idle_timeout=0.2)
    async with memory_server(echo_app, config) as client:
        # No "Connection: close": only the idle timeout can end this before 5 s.
        data = await raw_http(client, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", timeout=5)
    (response,) = parse_raw_responses(data)
    assert response.status == 200


async def test_slowloris_is_dropped_while_another_client_is_served() -> None:
    config = ServerConfig(header_timeout=0.5, idle_timeout=5)
    request = b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 200 + b"\r\n\r\n"
    async with memory_server(echo_app, config) as slow, memory_server(echo_app, config) as fast:
        received: list[bytes] = []

        async def dribble() -> None:
            try:
                for i in range(len(request)):
                    await slow.send(request[i : i + 1])
                    await anyio.sleep(0.02)  # ~50 bytes/s: the head needs > 4 s
            except anyio.BrokenResourceError:
                pass  # the server closed on us, which is the point

        async def read_slow() -> None:
            while True:
                try:
                    received.append(await slow.receive())
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(dribble)
                tg.start_soon(read_slow)
                # Meanwhile a well-behaved client is served at once.
                data = await raw_http(fast, GET_CLOSE)
                assert parse_raw_responses(data)[0].status == 200
        (response,) = parse_raw_responses(b"".join(received))
        assert response.status == 408


async def test_trickling_body_is_dropped_after_body_timeout() -> None:
    config = ServerConfig(body_timeout=0.3)
    async with memory_server(echo_app, config) as client:
        # Announces 10 bytes, sends 1: only the body deadline can end this before 5 s.
        data = await raw_http(
            client, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\na", timeout=5
        )
    assert data == b""


async def test_unhandled_transport_errors_in_the_app_become_502_and_504() -> None:
    async def app(request: Request) -> Response:
        if request.path == "/timeout":
            raise TransportTimeout("upstream slow")
        raise ConnectError("upstream down")

    async with memory_server(app) as client:
        data = await raw_http(
            client,
            b"GET /timeout HTTP/1.1\r\nHost: x\r\n\r\n" + GET_CLOSE,
        )
    timeout, down = parse_raw_responses(data)
    assert (timeout.status, down.status) == (504, 502)
    assert json.loads(down.body) == {"success": False, "error": "Upstream failed"}


async def _one_chunk() -> AsyncIterator[bytes]:
    yield b"x"


@pytest.mark.parametrize("kind", ["bytes", "stream"])
async def test_a_response_with_a_malformed_header_ends_only_its_connection(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An app's header that would break the framing is never sent: that connection
    closes without an answer, one error line is logged, and the server goes on."""

    async def app(request: Request) -> Response:
        if request.path == "/bad":
            body = b"x" if kind == "bytes" else StreamBody(length=1, chunks=_one_chunk())
            return Response(status=200, headers=(("X-Bad", "a\r\nInjected: 1"),), body=body)
        return await echo_app(request)

    async with memory_server(app) as client:
        data = await raw_http(client, b"GET /bad HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"Injected" not in data
    assert parse_raw_responses(data) == []
    assert "broke HTTP framing" in caplog.text
    async with memory_server(app) as client:
        (good,) = parse_raw_responses(await raw_http(client, GET_CLOSE))
    assert good.status == 200
