"""``SimApp``, the scripted app every simulated node runs: what it serves and records.

A share's app answers ``GET /<own id>/download/<path>`` and ``GET /sha1/<sha1>``,
honours one ``bytes=`` Range (206) or refuses it (416), and answers 404 for anything
else, including a request that reaches a hub. A client's app records finds and
downloads it issued itself, and only those; a cancelled download resets the stream
at every hop. All through a real hub and share, one hop apart.
"""

from __future__ import annotations

import pytest

from kbproto.config import Limits
from kbproto.core import NodeCore
from kbproto.hub import HubCore
from kbproto.sim import DownloadRecord, SimWorld, sha1_hex, star
from tests.sim.scenarios import make_world, settle

SEED = 7
ALPHA = b"0123456789"
BIG = bytes(range(256)) * 40


def _world(limits: Limits | None = None, credit_delay: float = 0.0) -> SimWorld:
    files = {"s0": {"alpha.txt": ALPHA, "empty.txt": b"", "big.bin": BIG}}
    world = make_world(SEED, star(1), files, limits=limits, credit_delay=credit_delay)
    settle(world)
    return world


def _get(world: SimWorld, path: str, *headers: tuple[str, str]) -> DownloadRecord:
    record = world.apps["h0"].download(world.nodes["h0"], world.ids["s0"], path, headers)
    world.network.run_until(lambda: record.done, timeout=10)
    return record


@pytest.fixture
def world() -> SimWorld:
    return _world()


def test_files_are_served_by_path_and_by_content_id(world: SimWorld) -> None:
    share = world.ids["s0"]
    by_path = _get(world, f"/{share}/download/alpha.txt")
    by_sha1 = _get(world, f"/sha1/{sha1_hex(ALPHA)}")
    for record in (by_path, by_sha1):
        assert (record.status, bytes(record.body), record.ended) == (200, ALPHA, True)
    empty = _get(world, f"/{share}/download/empty.txt")
    assert (empty.status, bytes(empty.body), empty.ended) == (200, b"", True)
    assert dict(empty.headers)["content-length"] == "0"


@pytest.mark.parametrize(
    "path",
    ["/sha1/" + "0" * 40, "/elsewhere", "/{share}/upload/alpha.txt", "/{share}/download/none"],
)
def test_anything_else_is_404(world: SimWorld, path: str) -> None:
    record = _get(world, path.format(share=world.ids["s0"]))
    assert (record.status, bytes(record.body), record.ended) == (404, b"", True)


@pytest.mark.parametrize(
    ("value", "span"),
    [
        ("bytes=2-4", (2, 5)),
        ("bytes=7-", (7, 10)),
        ("bytes=-3", (7, 10)),
        ("bytes=-30", (0, 10)),
        ("bytes=8-99", (8, 10)),
    ],
)
def test_one_byte_range_is_honoured(world: SimWorld, value: str, span: tuple[int, int]) -> None:
    record = _get(world, f"/sha1/{sha1_hex(ALPHA)}", ("range", value))
    start, end = span
    assert record.status == 206
    assert bytes(record.body) == ALPHA[start:end]
    assert dict(record.headers)["content-range"] == f"bytes {start}-{end - 1}/10"


@pytest.mark.parametrize(
    "value",
    ["items=0-1", "bytes=0-1,3-4", "bytes=-0", "bytes=x-1", "bytes=1-y", "bytes=5-2", "bytes=10-"],
)
def test_a_range_that_cannot_be_served_is_416(world: SimWorld, value: str) -> None:
    record = _get(world, f"/sha1/{sha1_hex(ALPHA)}", ("range", value))
    assert record.status == 416
    assert dict(record.headers)["content-range"] == "bytes */10"
    assert record.body == b""


def test_a_request_reaching_a_hub_is_404(world: SimWorld) -> None:
    app, s0 = world.apps["s0"], world.nodes["s0"]
    record = app.download(s0, world.ids["h0"], f"/{world.ids['h0']}/download/alpha.txt")
    world.network.run_until(lambda: record.done, timeout=10)
    assert record.status == 404
    world.network.run_until_quiescent()


def test_finds_and_requests_the_app_did_not_issue_are_not_recorded(world: SimWorld) -> None:
    h0 = world.nodes["h0"]
    share = world.ids["s0"]

    def behind_the_app(core: NodeCore, now: float) -> None:
        assert isinstance(core, HubCore)
        core.find(sha1_hex(ALPHA), now)
        core.open_request(share, "HEAD", f"/{share}/download/alpha.txt", (), now=now)

    h0.command(behind_the_app)
    world.network.run_for(5.0)
    assert not world.apps["h0"].lookups
    assert all(record.done for record in world.apps["h0"].downloads.values())
    world.network.run_until_quiescent()


def test_a_cancelled_download_is_reset_at_every_hop() -> None:
    world = _world(limits=Limits(stream_window=1024, data_chunk=256), credit_delay=0.2)
    net = world.network
    app, h0 = world.apps["h0"], world.nodes["h0"]
    record = app.download(h0, world.ids["s0"], f"/{world.ids['s0']}/download/big.bin")
    net.run_until(lambda: len(record.body) > 0, timeout=10)
    app.cancel(h0, record)
    assert (record.done, record.reset_status) == (True, 499)
    assert record.reset_reason == "cancelled by the client"
    finished = record.finished
    net.run_until(lambda: not world.apps["s0"].serving, timeout=10)
    assert world.apps["s0"].stream_resets
    app.cancel(h0, record)  # cancelling again changes nothing
    assert record.finished == finished
    assert 0 < len(record.body) < len(BIG)
    net.run_until_quiescent()
