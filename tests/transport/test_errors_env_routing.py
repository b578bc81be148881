"""Exception mapping, the in-memory stream pair, the env sources and the route table."""

from __future__ import annotations

import json
import ssl

import anyio
import h11
import pytest

from kbproto.ids import IdSource
from kbtransport.env import AnyioClock, SystemIdSource
from kbtransport.errors import (
    CONNECT_ERRORS,
    READ_ERRORS,
    WRITE_ERRORS,
    ConnectError,
    PeerProtocolError,
    ReadError,
    TransportError,
    TransportTimeout,
    WriteError,
    map_exceptions,
)
from kbtransport.http import Request, Response, json_response
from kbtransport.routing import Match, Router
from kbtransport.testing import memory_stream_pair


@pytest.mark.parametrize(
    ("mapping", "raised", "expected"),
    [
        (READ_ERRORS, anyio.EndOfStream(), ReadError),
        (READ_ERRORS, anyio.BrokenResourceError(), ReadError),
        (READ_ERRORS, anyio.ClosedResourceError(), ReadError),
        (READ_ERRORS, TimeoutError(), TransportTimeout),
        (READ_ERRORS, ConnectionResetError(104, "reset"), ReadError),
        (READ_ERRORS, ssl.SSLError("bad record"), ReadError),
        (READ_ERRORS, h11.RemoteProtocolError("bad", error_status_hint=431), PeerProtocolError),
        (WRITE_ERRORS, BrokenPipeError(32, "pipe"), WriteError),
        (WRITE_ERRORS, anyio.BrokenResourceError(), WriteError),
        (WRITE_ERRORS, TimeoutError(), TransportTimeout),
        (CONNECT_ERRORS, ConnectionRefusedError(111, "refused"), ConnectError),
        (CONNECT_ERRORS, ssl.SSLCertVerificationError("cert"), ConnectError),
        (CONNECT_ERRORS, TimeoutError(), TransportTimeout),
    ],
)
def test_map_exceptions(
    mapping: dict[type[BaseException], type[TransportError]],
    raised: Exception,
    expected: type[TransportError],
) -> None:
    with pytest.raises(expected) as info, map_exceptions(mapping):
        raise raised
    assert info.value.__cause__ is raised
    assert str(info.value)


def test_map_exceptions_keeps_status_hint_and_passes_others() -> None:
    with pytest.raises(PeerProtocolError) as info, map_exceptions(READ_ERRORS):
        raise h11.RemoteProtocolError("too big", error_status_hint=431)
    assert info.value.status_hint == 431
    with pytest.raises(KeyError), map_exceptions(READ_ERRORS):
        raise KeyError("not ours")
    original = ReadError("already translated")
    with pytest.raises(ReadError) as again, map_exceptions(WRITE_ERRORS):
        raise original
    assert again.value is original


@pytest.mark.anyio
async def test_memory_stream_pair() -> None:
    a, b = memory_stream_pair()
    await a.send(b"hello world")
    assert await b.receive(5) == b"hello"
    assert await b.receive() == b" world"
    await b.send(b"back")
    assert await a.receive() == b"back"
    await a.send_eof()
    with pytest.raises(anyio.EndOfStream):
        await b.receive()
    await b.send(b"still open")  # half-close: the other direction works
    assert await a.receive() == b"still open"
    with pytest.raises(anyio.ClosedResourceError):
        await a.send(b"after my own EOF")
    await b.aclose()
    with pytest.raises(anyio.ClosedResourceError):
        await b.receive()
    c, d = memory_stream_pair()
    await d.aclose()
    with pytest.raises(anyio.BrokenResourceError):
        await c.send(b"peer is gone")
    with pytest.raises(ValueError, match="max_bytes"):
        await a.receive(0)


@pytest.mark.anyio
async def test_env_sources() -> None:
    source: IdSource = SystemIdSource()
    nonces = {source.nonce(16) for _ in range(10)}
    assert len(nonces) == 10
    assert all(len(n) == 16 for n in nonces)
    assert all(1.0 <= source.uniform(1.0, 2.0) <= 2.0 for _ in range(100))
    clock = AnyioClock()
    before = clock.now()
    await anyio.sleep(0.01)
    assert clock.now() > before


def _request(method: str, path: str) -> Request:
    return Request(
        method=method, target=path.encode(), path=path, segments=tuple(path[1:].split("/"))
    )


@pytest.mark.anyio
async def test_router() -> None:
    router = Router()

    async def download(request: Request, match: Match) -> Response:
        return json_response(200, {"params": match.params, "rest": list(match.rest)})

    async def info(request: Request, match: Match) -> Response:
        return json_response(200, {"info": match.params["node_id"]})

    router.add(("GET", "HEAD"), "/{node_id}/download/{path*}", download)
    router.add(("GET",), "/{node_id}/api/nodeinfo", info)
    response = await router.app(_request("GET", "/abc/download/a/b%2Fc"))
    assert json.loads(response.body) == {  # type: ignore[arg-type]
        "params": {"node_id": "abc", "path": "a/b%2Fc"},
        "rest": ["a", "b%2Fc"],
    }
    response = await router.app(_request("GET", "/abc/api/nodeinfo"))
    assert json.loads(response.body) == {"info": "abc"}  # type: ignore[arg-type]
    assert (await router.app(_request("POST", "/abc/api/nodeinfo"))).status == 405
    assert (await router.app(_request("GET", "/abc/api/nodeinfo/extra"))).status == 404
    assert (await router.app(_request("GET", "/abc"))).status == 404
    with pytest.raises(ValueError, match="last"):
        router.add(("GET",), "/{rest*}/x", download)
    with pytest.raises(ValueError, match="start"):
        router.add(("GET",), "x", download)
