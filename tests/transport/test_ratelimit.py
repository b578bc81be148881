"""The upload rate limit: the token bucket on a fake clock, then the HTTP server's bodies
(files by sendfile in slices or read and sent, streams, bytes) paced on real sockets."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from kbtransport.http import Request, Response, StreamBody
from kbtransport.http_client import HttpClient
from kbtransport.http_server import ServerConfig
from kbtransport.ranges import file_response
from kbtransport.ratelimit import MAX_PIECE, MIN_PIECE, UploadLimiter
from tests.transport.transport_helpers import loopback_server


class FakeClock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.time = 100.0

    def now(self) -> float:
        return self.time


# --- the bucket -----------------------------------------------------------------------


def test_a_full_bucket_sends_at_once_then_debt_is_waited_out() -> None:
    clock = FakeClock()
    limit = UploadLimiter(1000, clock=clock, burst=500)
    assert limit.reserve(300) == 0.0
    assert limit.reserve(200) == 0.0  # the bucket is now empty
    assert limit.reserve(1000) == pytest.approx(1.0)
    # A second sender queues behind the first one's debt.
    assert limit.reserve(500) == pytest.approx(1.5)
    clock.time += 1.5  # the debt is paid back, nothing more
    assert limit.reserve(0) == 0.0
    assert limit.reserve(100) == pytest.approx(0.1)


def test_the_bucket_refills_at_the_rate_up_to_its_size() -> None:
    clock = FakeClock()
    limit = UploadLimiter(1000, clock=clock, burst=500)
    assert limit.reserve(500) == 0.0
    clock.time += 0.2
    assert limit.reserve(200) == 0.0
    assert limit.reserve(1) == pytest.approx(0.001)
    clock.time += 60.0  # idle for long: still at most ``burst`` at once
    assert limit.reserve(500) == 0.0
    assert limit.reserve(100) == pytest.approx(0.1)


def test_refunds_never_overfill_the_bucket() -> None:
    clock = FakeClock()
    limit = UploadLimiter(1000, clock=clock, burst=500)
    assert limit.reserve(2000) == pytest.approx(1.5)
    limit.refund(2000)
    assert limit.reserve(500) == 0.0
    limit.refund(10_000)
    assert limit.reserve(600) == pytest.approx(0.1)


def test_pieces_are_a_twentieth_of_a_second_within_bounds() -> None:
    assert UploadLimiter(1000).piece_size == MIN_PIECE
    assert UploadLimiter(2 * 1024 * 1024).piece_size == 2 * 1024 * 1024 // 20
    assert UploadLimiter(10**12).piece_size == MAX_PIECE
    assert UploadLimiter(2 * 1024 * 1024).burst == 2 * 1024 * 1024 // 20


@pytest.mark.parametrize(("rate", "burst"), [(0, None), (-5, None), (1000, 0)])
def test_bad_rates_are_refused(rate: int, burst: int | None) -> None:
    with pytest.raises(ValueError, match="UploadLimiter"):
        UploadLimiter(rate, burst=burst)


@pytest.mark.anyio
async def test_acquire_sleeps_out_the_debt() -> None:
    limit = UploadLimiter(1024 * 1024, burst=1)
    started = anyio.current_time()
    await limit.acquire(1)
    await limit.acquire(100 * 1024)
    assert anyio.current_time() - started >= 0.09


@pytest.mark.anyio
async def test_a_cancelled_acquire_gives_its_tokens_back() -> None:
    clock = FakeClock()
    limit = UploadLimiter(1000, clock=clock, burst=500)
    with anyio.move_on_after(0.05) as scope:
        await limit.acquire(5000)  # 4.5 s of debt
    assert scope.cancelled_caught
    assert limit.reserve(500) == 0.0


# --- the HTTP server's bodies -----------------------------------------------------------

RATE = 4 * 1024 * 1024
SIZE = 1024 * 1024 + 17
PIECES = 4


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "data.bin"
    path.write_bytes(
        b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(SIZE // 32 + 1))[
            :SIZE
        ]
    )
    return path


def paced_app(path: Path):  # type: ignore[no-untyped-def]
    data = path.read_bytes()
    piece = len(data) // PIECES + 1

    async def chunks() -> AsyncIterator[bytes]:
        for offset in range(0, len(data), piece):
            yield data[offset : offset + piece]

    async def app(request: Request) -> Response:
        if request.path == "/file":
            return file_response(request, path.open("rb"), SIZE, name=path.name)
        if request.path == "/stream":
            return Response(status=200, body=StreamBody(chunks=chunks(), length=len(data)))
        assert request.path == "/bytes"
        return Response(status=200, body=data)

    return app


@pytest.mark.anyio
@pytest.mark.parametrize("use_sendfile", [True, False])
async def test_every_body_kind_is_paced_and_exact(
    data_file: Path,
    sendfile_calls: list[tuple[int, int]],
    anyio_backend: str,
    use_sendfile: bool,
) -> None:
    expected = data_file.read_bytes()
    limit = UploadLimiter(RATE)
    config = ServerConfig(upload_limit=limit, use_sendfile=use_sendfile)
    # Whatever the body, the first ``burst`` bytes may go at once, the rest at RATE.
    floor = 0.6 * (SIZE - limit.burst) / RATE
    async with loopback_server(paced_app(data_file), config) as bound, HttpClient() as client:
        for route in ("file", "stream", "bytes"):
            started = time.monotonic()
            with anyio.fail_after(30):
                _, body = await client.request(
                    "GET", f"http://127.0.0.1:{bound.port}/{route}", max_body_bytes=SIZE
                )
            elapsed = time.monotonic() - started
            assert body == expected, route
            assert elapsed >= floor, (route, elapsed)
            with anyio.fail_after(30):
                # Let the bucket fill again, so each body starts alike.
                await anyio.sleep(limit.burst / RATE)
    if anyio_backend == "asyncio" and use_sendfile:
        # The kernel still sends the file, one bounded slice per piece of tokens.
        assert len(sendfile_calls) == -(-SIZE // limit.piece_size)
        assert all(length <= limit.piece_size for _, length in sendfile_calls)
        assert sum(length for _, length in sendfile_calls) == SIZE
    else:
        assert sendfile_calls == []


@pytest.mark.anyio
async def test_one_bucket_is_shared_by_all_connections(data_file: Path) -> None:
    expected = data_file.read_bytes()
    limit = UploadLimiter(RATE)
    config = ServerConfig(upload_limit=limit)
    bodies: list[bytes] = []
    async with loopback_server(paced_app(data_file), config) as bound:

        async def fetch() -> None:
            async with HttpClient() as client:
                _, body = await client.request(
                    "GET", f"http://127.0.0.1:{bound.port}/file", max_body_bytes=SIZE
                )
            bodies.append(body)

        started = time.monotonic()
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(fetch)
        elapsed = time.monotonic() - started
    assert bodies == [expected] * 3
    assert elapsed >= 0.6 * (3 * SIZE - limit.burst) / RATE
