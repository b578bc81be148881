"""Range parsing and file responses: 206 slices, suffix/open ranges, 416, ETag, HEAD."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from kbtransport.http import FileBody, Request, Response
from kbtransport.ranges import (
    ByteRange,
    RangeNotSatisfiable,
    content_type_for,
    file_response,
    parse_range,
)
from kbtransport.testing import parse_raw_responses, raw_http
from tests.transport.transport_helpers import memory_server

DATA = bytes(range(256)) * 40  # 10240 bytes
ETAG = '"' + "a" * 40 + '"'


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-9", ByteRange(0, 9, 100)),
        ("bytes=10-", ByteRange(10, 99, 100)),
        ("bytes=-10", ByteRange(90, 99, 100)),
        ("bytes=-1000", ByteRange(0, 99, 100)),
        ("bytes=90-1000", ByteRange(90, 99, 100)),
        ("bytes = 5 - 6", ByteRange(5, 6, 100)),
        ("BYTES=1-1", ByteRange(1, 1, 100)),
        ("bytes=0-1,5-6", None),  # several ranges: whole file, as the original
        ("items=0-1", None),
        ("bytes=abc", None),
        ("bytes=9-5", None),
        ("bytes=-", None),
        ("bytes=0-9" + " " * 2000, None),  # over-long header: ignored
    ],
)
def test_parse_range(header: str | None, expected: ByteRange | None) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize(
    ("header", "size"), [("bytes=100-", 100), ("bytes=-0", 100), ("bytes=0-", 0)]
)
def test_unsatisfiable_ranges(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, size)


def test_byte_range_content_range() -> None:
    assert ByteRange(0, 9, 100).content_range == "bytes 0-9/100"
    assert ByteRange(0, 9, 100).length == 10


def test_content_type_for() -> None:
    assert content_type_for("a.json") == "application/json"
    assert content_type_for("a.txt").startswith("text/plain")
    assert content_type_for("a.tar.gz") == "application/octet-stream"
    assert content_type_for("noext") == "application/octet-stream"


def _app(tmp_path: Path, etag: str | None = ETAG):  # type: ignore[no-untyped-def]
    path = tmp_path / "data.bin"
    path.write_bytes(DATA)

    async def app(request: Request) -> Response:
        file = path.open("rb")
        return file_response(request, file, len(DATA), name="data.bin", etag=etag)

    return app


async def _get(tmp_path: Path, *headers: str, method: str = "GET"):  # type: ignore[no-untyped-def]
    extra = "".join(f"{h}\r\n" for h in headers)
    request = f"{method} /f HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n".encode()
    async with memory_server(_app(tmp_path)) as client:
        data = await raw_http(client, request)
    (response,) = parse_raw_responses(data, head_only=method == "HEAD")
    return response


@pytest.mark.anyio
async def test_whole_file(tmp_path: Path) -> None:
    response = await _get(tmp_path)
    assert response.status == 200
    assert response.body == DATA
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["etag"] == ETAG
    assert response.headers["content-type"] == "application/octet-stream"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("header", "start", "end"),
    [("bytes=100-199", 100, 199), ("bytes=-300", 9940, 10239), ("bytes=10000-", 10000, 10239)],
    ids=["exact", "suffix", "open-ended"],
)
async def test_206_slices(tmp_path: Path, header: str, start: int, end: int) -> None:
    response = await _get(tmp_path, f"Range: {header}")
    assert response.status == 206
    assert response.body == DATA[start : end + 1]
    assert response.headers["content-range"] == f"bytes {start}-{end}/{len(DATA)}"
    assert response.headers["content-length"] == str(end - start + 1)


@pytest.mark.anyio
async def test_416(tmp_path: Path) -> None:
    response = await _get(tmp_path, "Range: bytes=20000-")
    assert response.status == 416
    assert response.headers["content-range"] == f"bytes */{len(DATA)}"


@pytest.mark.anyio
async def test_multiple_ranges_give_whole_file(tmp_path: Path) -> None:
    response = await _get(tmp_path, "Range: bytes=0-1,5-6")
    assert response.status == 200
    assert response.body == DATA


@pytest.mark.anyio
async def test_head_gives_headers_of_the_range(tmp_path: Path) -> None:
    response = await _get(tmp_path, "Range: bytes=0-9", method="HEAD")
    assert response.status == 206
    assert response.headers["content-length"] == "10"
    assert response.body == b""


@pytest.mark.anyio
async def test_if_none_match_and_if_range(tmp_path: Path) -> None:
    assert (await _get(tmp_path, f"If-None-Match: {ETAG}")).status == 304
    assert (await _get(tmp_path, 'If-None-Match: "other"')).status == 200
    fresh = await _get(tmp_path, "Range: bytes=0-9", f"If-Range: {ETAG}")
    assert fresh.status == 206
    stale = await _get(tmp_path, "Range: bytes=0-9", 'If-Range: "old"')
    assert stale.status == 200
    assert stale.body == DATA


def test_file_response_closes_file_when_no_body() -> None:
    file = io.BytesIO(DATA)
    request = Request(
        method="GET",
        target=b"/f",
        path="/f",
        segments=("f",),
        headers=((b"range", b"bytes=999999-"),),
    )
    response = file_response(request, file, len(DATA), name="f")
    assert response.status == 416
    assert file.closed
    ok = file_response(
        Request(method="GET", target=b"/", path="/", segments=()),
        io.BytesIO(DATA),
        5,
        name="f",
    )
    assert isinstance(ok.body, FileBody)
    assert ok.body.length == 5
