"""docs/security.md path safety: ShareDir unit tests, then raw HTTP requests over a real socket."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from kbapps.share import NotFoundError, ShareDir, UnsafePathError, build_share_router
from kbapps.share.paths import check_segments
from kbtransport.listener import BoundAddress, ListenConfig, serve_http
from kbtransport.testing import RawResponse, parse_raw_responses, raw_http

NODE = "abcdef012345"
SECRET = b"PRIVATE KEY MATERIAL"
OUTSIDE = b"outside the share"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def share(tmp_path: Path) -> ShareDir:
    root = tmp_path / "share"
    (root / "sub" / ".git").mkdir(parents=True)
    (root / ".kbucket").mkdir()
    (root / "empty").mkdir()
    (root / "top.bin").write_bytes(bytes(range(256)) * 4)
    (root / "sub" / "file.txt").write_bytes(b"hello\n")
    (root / "sub" / "a b+c%.txt").write_bytes(b"odd name")
    (root / "sub" / ".git" / "config").write_bytes(SECRET)
    (root / ".kbucket" / "private.pem").write_bytes(SECRET)
    (root / ".hidden").write_bytes(SECRET)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(OUTSIDE)
    (root / "link_out").symlink_to(outside / "secret.txt")
    (root / "dirlink_out").symlink_to(outside)
    (root / "link_kb").symlink_to(root / ".kbucket" / "private.pem")
    (root / "sub" / "link_in").symlink_to("../top.bin")
    (root / "dangling").symlink_to(tmp_path / "missing")
    os.mkfifo(root / "fifo")
    return ShareDir(root)


# -- unit level -------------------------------------------------------------------


@pytest.mark.parametrize(
    "segments",
    [
        [""],
        ["sub", ""],
        ["."],
        [".."],
        ["sub", "..", "top.bin"],
        [".kbucket", "private.pem"],
        ["sub", ".git", "config"],
        ["a/b"],
        ["a\\b"],
        ["a\x00b"],
        ["a\nb"],
        ["x" * 256],
        ["d"] * 65,
        ["y" * 200] * 21,
        ["\udcff"],  # a lone surrogate cannot be a UTF-8 path
    ],
)
def test_check_segments_refuses(segments: list[str]) -> None:
    with pytest.raises(UnsafePathError):
        check_segments(segments)


def test_check_segments_accepts_plain_names() -> None:
    assert check_segments(["sub", "a b+c%.txt", "x" * 255, "ünïcode"]) == (
        "sub",
        "a b+c%.txt",
        "x" * 255,
        "ünïcode",
    )


def test_open_file_inside_and_through_an_inside_symlink(share: ShareDir) -> None:
    shared = share.open_file(["sub", "link_in"])
    with shared.file:
        assert shared.file.read() == bytes(range(256)) * 4
    assert shared.relpath == "top.bin"
    assert shared.stat.st_size == 1024


@pytest.mark.parametrize(
    "segments",
    [
        ["link_out"],
        ["dirlink_out", "secret.txt"],
        ["link_kb"],
        ["fifo"],
        ["sub"],
        ["missing.txt"],
        ["dangling"],
    ],
)
def test_open_file_not_found(share: ShareDir, segments: list[str]) -> None:
    with pytest.raises(NotFoundError):
        share.open_file(segments)


def test_list_dir(share: ShareDir) -> None:
    root = share.list_dir([])
    assert root.files == (("top.bin", 1024),)
    assert root.dirs == ("empty", "sub")
    sub = share.list_dir(["sub", ""])
    assert sub.to_json() == {
        "files": [
            {"name": "a b+c%.txt", "size": 8},
            {"name": "file.txt", "size": 6},
            {"name": "link_in", "size": 1024},
        ],
        "dirs": [],
    }
    with pytest.raises(NotFoundError):
        share.list_dir(["top.bin"])
    with pytest.raises(NotFoundError):
        share.list_dir(["dirlink_out"])
    with pytest.raises(UnsafePathError):
        share.list_dir([".kbucket"])


def test_share_dir_must_exist(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError):
        ShareDir(tmp_path / "nope")


# -- end to end: raw HTTP over 127.0.0.1 ---------------------------------------------


@asynccontextmanager
async def running(share: ShareDir) -> AsyncIterator[BoundAddress]:
    def etag_for(relpath: str, st: os.stat_result) -> str | None:
        return '"' + "5" * 40 + '"' if relpath == "top.bin" else None

    router = build_share_router(share, NODE, etag_for=etag_for)
    async with anyio.create_task_group() as tg:
        bound: BoundAddress = await tg.start(
            serve_http, router.app, ListenConfig(host="127.0.0.1", port=0)
        )
        try:
            yield bound
        finally:
            tg.cancel_scope.cancel()


async def fetch(
    port: int, target: bytes, method: bytes = b"GET", extra: bytes = b""
) -> RawResponse:
    stream = await anyio.connect_tcp("127.0.0.1", port)
    try:
        request = method + b" " + target + b" HTTP/1.1\r\nHost: x\r\n" + extra
        data = await raw_http(stream, request + b"Connection: close\r\n\r\n", timeout=10)
    finally:
        await stream.aclose()
    (response,) = parse_raw_responses(data, head_only=method == b"HEAD")
    return response


REFUSED = [
    b"/ID/download/.kbucket/private.pem",
    b"/ID/download/%2ekbucket/private.pem",
    b"/ID/download/%2Ekbucket%2Fprivate.pem",
    b"/ID/download/sub/../.kbucket/private.pem",
    b"/ID/download/sub/%2e%2e/.kbucket/private.pem",
    b"/ID/download/sub/%2E%2E/%2E%2E/outside/secret.txt",
    b"/ID/download/..%2f..%2foutside%2fsecret.txt",
    b"/ID/download/%2e%2e%2f%2e%2e%2foutside%2fsecret.txt",
    b"/ID/download/sub%2f..%2f.kbucket%2fprivate.pem",
    b"/ID/download/sub%5c..%5c.kbucket%5cprivate.pem",
    b"/ID/download/sub\\..\\.kbucket\\private.pem",
    b"/ID/download/..\\outside\\secret.txt",
    b"/ID/download//etc/passwd",
    b"/ID/download/%2fetc%2fpasswd",
    b"/ID/download/%2Fetc/passwd",
    b"/ID/download/C:%5cWindows%5cwin.ini",
    b"/ID/download/link_out",
    b"/ID/download/link_kb",
    b"/ID/download/dirlink_out/secret.txt",
    b"/ID/download/sub/.git/config",
    b"/ID/download/.hidden",
    b"/ID/download/top.bin%00.txt",
    b"/ID/download/%c0%ae%c0%ae/outside/secret.txt",  # overlong UTF-8 dots
    b"/ID/download/%252e%252e/outside/secret.txt",  # double encoding stays literal
    b"/ID/download/fifo",
    b"/ID/download/sub",
    b"/ID/download/",
    b"/ID/download/" + b"a" * 300,
    b"/ID/download/" + b"d/" * 70 + b"f",
    b"/ID/api/readdir/.kbucket",
    b"/ID/api/readdir/..",
    b"/ID/api/readdir/dirlink_out",
    b"/OTHERNODEID/download/top.bin",
    b"http://x/ID/download/.kbucket/private.pem",
]


@pytest.mark.anyio
async def test_every_refused_path_over_a_socket(share: ShareDir, tmp_path: Path) -> None:
    async with running(share) as bound:
        for raw in REFUSED:
            target = raw.replace(b"/ID/", f"/{NODE}/".encode())
            response = await fetch(bound.port, target)
            assert response.status in (400, 404), (raw, response.status)
            body = json.loads(response.body)
            assert body["success"] is False, raw
            assert SECRET not in response.body
            assert OUTSIDE not in response.body
            assert str(tmp_path).encode() not in response.body, raw


@pytest.mark.anyio
async def test_allowed_paths_over_a_socket(share: ShareDir) -> None:
    base = f"/{NODE}/download".encode()
    async with running(share) as bound:
        top = await fetch(bound.port, base + b"/top.bin")
        assert top.status == 200
        assert top.body == bytes(range(256)) * 4
        assert top.headers["etag"] == '"' + "5" * 40 + '"'
        assert top.headers["accept-ranges"] == "bytes"
        assert (await fetch(bound.port, base + b"/sub/file.txt")).body == b"hello\n"
        assert (await fetch(bound.port, base + b"/sub/a%20b%2Bc%25.txt")).body == b"odd name"
        assert (await fetch(bound.port, base + b"/sub/link_in")).status == 200
        part = await fetch(bound.port, base + b"/top.bin", extra=b"Range: bytes=-4\r\n")
        assert (part.status, part.body) == (206, bytes(range(252, 256)))
        head = await fetch(bound.port, base + b"/top.bin", method=b"HEAD")
        assert (head.status, head.headers["content-length"], head.body) == (200, "1024", b"")
        assert "etag" not in (await fetch(bound.port, base + b"/sub/file.txt")).headers
        listing = await fetch(bound.port, f"/{NODE}/api/readdir/".encode())
        assert json.loads(listing.body) == {
            "success": True,
            "files": [{"name": "top.bin", "size": 1024}],
            "dirs": [{"name": "empty"}, {"name": "sub"}],
        }
        sub = json.loads((await fetch(bound.port, f"/{NODE}/api/readdir/sub".encode())).body)
        assert [f["name"] for f in sub["files"]] == ["a b+c%.txt", "file.txt", "link_in"]


@pytest.mark.anyio
async def test_readdir_file_extras_hook_and_wrong_node(share: ShareDir) -> None:
    calls: list[list[tuple[str, int]]] = []

    async def extras(files: Sequence[tuple[str, int]]) -> list[dict[str, object]]:
        calls.append(list(files))
        return [
            {"prv": {"original_path": relpath.rsplit("/", 1)[-1], "original_size": size}}
            for relpath, size in files
        ]

    router = build_share_router(share, NODE, file_extras=extras)
    async with anyio.create_task_group() as tg:
        bound: BoundAddress = await tg.start(
            serve_http, router.app, ListenConfig(host="127.0.0.1", port=0)
        )
        sub = await fetch(bound.port, f"/{NODE}/api/readdir/sub/".encode())
        wrong = await fetch(bound.port, b"/ffffffffffff/api/readdir/")
        tg.cancel_scope.cancel()
    files = json.loads(sub.body)["files"]
    assert files[1] == {
        "name": "file.txt",
        "size": 6,
        "prv": {"original_path": "file.txt", "original_size": 6},
    }
    # One call for the whole listing.
    assert calls == [[("sub/a b+c%.txt", 8), ("sub/file.txt", 6), ("sub/link_in", 1024)]]
    assert wrong.status == 404
