"""A real hub holding many content ids (issue 17 item 1), with real processes.

A real ``kbucket-hub`` on 127.0.0.1 is fed N made-up content ids by a fake share over
its websocket, speaking the protocol as a share does (``share_index`` batches, at most
four unacknowledged). Then, through the hub's HTTP ``/find``: a sample of the ids is
found at the right path and size, random ids are not; a delta (drops and new puts)
is applied; and when the child leaves, its ids are gone and the hub's memory comes
back down. By default N is 200,000; the ``slow`` variant feeds 10,000,000 (the scale
of a hub near the top of a big tree; its index growth is bounded per id too).
"""

from __future__ import annotations

import hashlib
import random
import time
from pathlib import Path

import anyio
import pytest

from kbproto.codec import decode, encode
from kbproto.framing import FrameBuffer
from kbproto.messages import Challenge, IndexAck, Message, Register, ShareIndexUpdate, Welcome
from kbtransport.websocket import WebSocketLink, connect_websocket
from tests.e2e.procs import Node, Procs, rss_mb, wait_for
from tests.helpers import Ed25519Signer, make_placement
from tests.hostile.helpers import find_json

pytestmark = pytest.mark.anyio

BATCH = 4000
WINDOW = 4
SAMPLE = 200


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _sha1(i: int) -> str:
    return hashlib.sha1(b"scale/" + i.to_bytes(8, "big")).hexdigest()


def _path(i: int) -> str:
    return f"run{i // 1000}/img_{i:08}.tif"


class _FakeShare:
    """One joined share link, sending index messages within the window."""

    def __init__(self, ws: WebSocketLink) -> None:
        self.ws = ws
        self.frames = FrameBuffer()
        self.seq = 0
        self.unacked = 0

    async def read(self) -> list[Message]:
        self.frames.feed(await self.ws.receive())
        out: list[Message] = []
        while (frame := self.frames.next_frame()) is not None:
            out.append(decode(*frame))
        return out

    async def join(self) -> None:
        signer = Ed25519Signer(1717)
        (challenge,) = await self.read()
        assert isinstance(challenge, Challenge)
        placement = make_placement(
            signer, challenge.node_id, nonce=challenge.nonce, name="scale", stamp=1
        )
        await self.ws.send(
            encode(
                Register(
                    placement=placement,
                    passcode="",
                    max_streams=8,
                    max_lookups=8,
                    heartbeat_timeout_ms=600_000,
                )
            )
        )
        messages = await self.read()
        assert isinstance(messages[0], Welcome), messages

    async def _acks(self, at_most: int) -> None:
        while self.unacked > at_most:
            for message in await self.read():
                if isinstance(message, IndexAck):
                    self.unacked -= 1

    async def send(self, put: tuple[tuple[str, str, int], ...], drop: tuple[str, ...]) -> None:
        await self._acks(WINDOW - 1)
        update = ShareIndexUpdate(seq=self.seq, reset=self.seq == 0, put=put, drop=drop)
        await self.ws.send(encode(update))
        self.seq += 1
        self.unacked += 1

    async def settle(self) -> None:
        """Every message sent has been applied (acknowledged)."""
        await self._acks(0)


def _entry(i: int) -> tuple[str, str, int]:
    return (_sha1(i), _path(i), 1000 + i)


def _found(hub: Node, i: int, path: str | None = None, size: int | None = None) -> None:
    """``/find`` at the hub answers id ``i`` with one result, at its path and size."""
    answer = find_json(hub, _sha1(i))
    assert answer["found"] is True, (i, answer)
    results = answer["results"]
    assert isinstance(results, list)
    expected = (path or _path(i), 1000 + i if size is None else size)
    assert [(r["path"], r["size"]) for r in results] == [expected], answer


def _missing(hub: Node, sha1: str) -> None:
    answer = find_json(hub, sha1)
    assert answer["found"] is False, (sha1, answer)


async def _scale(procs: Procs, tmp_path: Path, n: int, max_bytes_per_id: float) -> None:
    budget = str(2 * n + 1_000_000)
    hub = await anyio.to_thread.run_sync(
        lambda: procs.node(
            "kbucket-hub",
            tmp_path / "hub",
            *("--index-budget", budget, "--open-child-quota", budget),
            # The fake share sends no pings: the last option given wins.
            *("--heartbeat-timeout", "3600"),
            name="hub",
        )
    )
    pid = hub.proc.popen.pid
    before = rss_mb(pid)
    rng = random.Random(n)
    ws = await connect_websocket(hub.url, timeout=10)
    try:
        share = _FakeShare(ws)
        await share.join()
        for start in range(0, n, BATCH):
            await share.send(tuple(_entry(i) for i in range(start, min(n, start + BATCH))), ())
        await share.settle()
        grown = (rss_mb(pid) - before) * 1024 * 1024 / n
        sample = rng.sample(range(n), SAMPLE)

        def check_full() -> None:
            for i in sample:
                _found(hub, i)
            for i in range(SAMPLE // 4):
                _missing(hub, hashlib.sha1(b"absent/%d" % i).hexdigest())

        await anyio.to_thread.run_sync(check_full)
        assert grown < max_bytes_per_id, f"{grown:.0f} bytes per id"

        # A delta: drop a quarter of the sample, move a quarter, add new ids.
        dropped = sample[: SAMPLE // 4]
        moved = sample[SAMPLE // 4 : SAMPLE // 2]
        added = range(n, n + SAMPLE)
        put = tuple((_sha1(i), "moved/" + _path(i), 7) for i in moved) + tuple(
            _entry(i) for i in added
        )
        await share.send(put, tuple(_sha1(i) for i in dropped))
        await share.settle()

        def check_delta() -> None:
            for i in dropped:
                _missing(hub, _sha1(i))
            for i in moved:
                _found(hub, i, "moved/" + _path(i), 7)
            for i in added:
                _found(hub, i)
            for i in sample[SAMPLE // 2 :]:
                _found(hub, i)

        await anyio.to_thread.run_sync(check_delta)
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            await ws.aclose()

    # The child left: everything it brought is gone, and the memory with it. Dropping
    # ten million ids keeps the hub busy for a while (one pass over the child's log,
    # the table rebuilt smaller): finds wait meanwhile.
    def gone() -> bool:
        try:
            return find_json(hub, _sha1(sample[-1]))["found"] is False
        except OSError:  # timed out while the hub is busy
            return False

    left_at = time.monotonic()
    await anyio.to_thread.run_sync(lambda: wait_for(gone, 900, "the child's ids to go"))
    print(f"{n:,} ids: {grown:.0f} bytes per id; dropped in {time.monotonic() - left_at:.1f} s")

    def check_gone() -> None:
        for i in sample[SAMPLE // 2 :]:
            _missing(hub, _sha1(i))
        for i in added:
            _missing(hub, _sha1(i))

    await anyio.to_thread.run_sync(check_gone)
    left = (rss_mb(pid) - before) * 1024 * 1024 / n
    assert left < grown / 2 + 20, (left, grown)
    assert hub.proc.popen.poll() is None


async def test_a_hub_fed_200k_ids_finds_applies_deltas_and_forgets_a_child(
    procs: Procs, tmp_path: Path
) -> None:
    # Small n: the process's fixed costs (decoders, allocator slack) weigh more per id.
    await _scale(procs, tmp_path, 200_000, 400)


@pytest.mark.slow
@pytest.mark.timeout(3600)
async def test_a_hub_fed_10m_ids_finds_applies_deltas_and_forgets_a_child(
    procs: Procs, tmp_path: Path
) -> None:
    # A direct share's ids carry their path (~25 characters here) and size.
    await _scale(procs, tmp_path, 10_000_000, 120)
