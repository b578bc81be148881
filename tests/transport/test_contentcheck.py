"""Checking a proxied body against its content id (``kbtransport.contentcheck``)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import AsyncIterator

import anyio
import pytest

from kbtransport._ordered import WORK_THREADS
from kbtransport.contentcheck import (
    EMPTY_SHA1,
    BadSources,
    ContentCheck,
    ContentMismatch,
    covers_whole,
)

pytestmark = pytest.mark.anyio


async def _chunks(pieces: list[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


async def _sent(check: ContentCheck, pieces: list[bytes]) -> list[bytes]:
    """What the server sends for ``pieces`` through ``check`` (until it stops or fails)."""
    out: list[bytes] = []
    source = _chunks(pieces)
    try:
        while True:
            try:
                out.append(await check.next_chunk(source))
            except StopAsyncIteration:
                return out
            except ContentMismatch:
                out.append(b"<cut>")
                return out
    finally:
        check.close()


# Small bodies are hashed on the loop; from the first large chunk (>= 64 KiB) on, in a
# thread (more chunks than may wait for it, too).
PIECES = [
    [b"a" * 10],
    [b"a" * 10, b"b" * 20, b"c" * 30],
    [b"s" * 100, b"x" * (1 << 20), b"y" * 100, b"z" * (300 << 10)],
    [bytes([i]) * (200 << 10) for i in range(12)],
]


@pytest.mark.parametrize("pieces", PIECES, ids=["one", "small", "mixed", "large"])
async def test_a_matching_body_is_sent_whole_and_in_order(pieces: list[bytes]) -> None:
    mismatches: list[int] = []
    sha1 = hashlib.sha1(b"".join(pieces)).hexdigest()
    sent = await _sent(ContentCheck(sha1, lambda: mismatches.append(1)), pieces)
    assert sent == pieces
    assert mismatches == []


@pytest.mark.parametrize("pieces", PIECES, ids=["one", "small", "mixed", "large"])
async def test_a_wrong_body_loses_its_last_chunk(pieces: list[bytes]) -> None:
    mismatches: list[int] = []
    sha1 = hashlib.sha1(b"other bytes").hexdigest()
    sent = await _sent(ContentCheck(sha1, lambda: mismatches.append(1)), pieces)
    # Everything but the last piece went out; then the cut, never the last piece.
    assert sent == [*pieces[:-1], b"<cut>"]
    assert mismatches == [1]


async def test_an_empty_body_matches_only_the_empty_id() -> None:
    assert await _sent(ContentCheck(EMPTY_SHA1, lambda: None), []) == []
    mismatches: list[int] = []
    sha1 = hashlib.sha1(b"x").hexdigest()
    assert await _sent(ContentCheck(sha1, lambda: mismatches.append(1)), []) == [b"<cut>"]
    assert mismatches == [1]


async def test_a_failing_source_is_not_a_mismatch() -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"first"
        yield b"second"
        raise OSError("reset")

    mismatches: list[int] = []
    check = ContentCheck(hashlib.sha1(b"firstsecond").hexdigest(), lambda: mismatches.append(1))
    source = broken()
    assert await check.next_chunk(source) == b"first"
    with pytest.raises(OSError, match="reset"):
        await check.next_chunk(source)
    assert mismatches == []


async def test_many_bodies_share_a_few_hashing_threads() -> None:
    bodies = [[bytes([i, j]) * (300 << 10) for j in range(6)] for i in range(24)]
    results: list[bool] = []

    async def one(pieces: list[bytes], given_up: bool) -> None:
        sha1 = hashlib.sha1(b"".join(pieces)).hexdigest()
        check = ContentCheck(sha1, lambda: results.append(False))
        if given_up:  # a client gone after two chunks: the rest is never read
            source = _chunks(pieces)
            await check.next_chunk(source)
            await check.next_chunk(source)
            check.close()
            return
        results.append(await _sent(check, pieces) == pieces)

    async with anyio.create_task_group() as tg:
        for index, pieces in enumerate(bodies):
            tg.start_soon(one, pieces, index % 4 == 0)
    assert results == [True] * 18
    hashing = [t for t in threading.enumerate() if t.name.startswith("kbucket-work")]
    assert 1 <= len(hashing) <= WORK_THREADS


@pytest.mark.parametrize(
    ("status", "content_range", "whole"),
    [
        (200, None, True),
        (203, None, True),
        (206, "bytes 0-99/100", True),
        (206, " bytes 0-99/100 ", True),
        (206, "bytes 0-98/100", False),
        (206, "bytes 1-99/100", False),
        (206, "bytes 0-99/*", False),
        (206, None, False),
        (304, None, False),
        (404, None, False),
        (416, "bytes */100", False),
    ],
)
def test_covers_whole(status: int, content_range: str | None, whole: bool) -> None:
    assert covers_whole(status, content_range) is whole


def test_bad_sources_are_bounded_and_forget_the_oldest() -> None:
    bad = BadSources(3)
    for i in range(5):
        bad.add(f"node{i}", "a" * 40)
    assert len(bad) == 3
    assert not bad.has("node0", "a" * 40)
    assert not bad.has("node1", "a" * 40)
    assert bad.has("node4", "a" * 40)
    assert not bad.has("node4", "b" * 40)
    bad.add("node2", "a" * 40)  # seen again: now the newest
    bad.add("node5", "a" * 40)
    assert bad.has("node2", "a" * 40)
    assert not bad.has("node3", "a" * 40)
    with pytest.raises(ValueError, match="positive"):
        BadSources(0)
