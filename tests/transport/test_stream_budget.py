"""Sharing a node's proxied streams among its HTTP clients (``kbtransport.stream_budget``):
the ledger alone, and a node refusing a hog with 429 while serving the others."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from anyio.abc import ByteStream

from kbproto.ids import LinkId
from kbproto.proxy import HopStreams
from kbtransport.http_client import HttpClient
from kbtransport.stream_budget import StreamBudget, StreamLedger
from kbtransport.testing import parse_raw_responses, raw_http
from tests.transport.node_helpers import UNREACHABLE, tree, wait_until, write_file

pytestmark = pytest.mark.anyio

LINK = LinkId(7)


# --- the stream ledger ------------------------------------------------------------------


def _hop(open_streams: int, limit: int = 16) -> HopStreams:
    return HopStreams(link_id=LINK, limit=limit, open=open_streams)


def test_stream_ledger_caps_a_client_in_all_and_per_link() -> None:
    ledger = StreamLedger(StreamBudget(per_client=6, link_share=0.25, link_reserve=0.25))
    tickets = [ledger.record("a", LINK) for _ in range(4)]
    # A quarter of the link's 16 slots is 4: a's share of this link is used up...
    assert ledger.refusal("a", _hop(4)) == (
        "too many proxied requests open from your address to this node (4)"
    )
    # ...another link still has room for a, up to a's 6 in all.
    other = HopStreams(link_id=LinkId(8), limit=16, open=0)
    assert ledger.refusal("a", other) is None
    tickets += [ledger.record("a", LinkId(8)) for _ in range(2)]
    assert ledger.refusal("a", other) == "too many proxied requests open from your address (6)"
    assert ledger.refusal("b", _hop(6)) is None  # b is another client
    for ticket in tickets:
        ledger.release(ticket)
    assert ledger.held("a") == ledger.held("a", LINK) == 0
    assert ledger.refusal("a", _hop(0)) is None


def test_stream_ledger_keeps_a_links_last_slots_for_light_clients() -> None:
    ledger = StreamLedger(
        StreamBudget(per_client=100, link_share=0.5, link_reserve=0.25, light_streams=2)
    )
    for _ in range(3):
        ledger.record("heavy", LINK)
    # 12 of 16 open (by many heavy clients): only the reserve of 4 is left.
    assert ledger.refusal("heavy", _hop(12)) == (
        "the link to this node is busy; its last slots are kept for light clients"
    )
    assert ledger.refusal("heavy", _hop(11)) is None
    ledger.record("light", LINK)
    assert ledger.refusal("light", _hop(12)) is None  # 1 stream: light
    ledger.record("light", LINK)
    assert ledger.refusal("light", _hop(12)) is not None  # 2 streams: heavy now


def test_stream_budget_validates() -> None:
    for bad in (
        {"per_client": 0},
        {"light_streams": 0},
        {"link_share": 0.0},
        {"link_share": 1.5},
        {"link_reserve": 1.0},
        {"link_reserve": -0.1},
    ):
        with pytest.raises(ValueError, match="StreamBudget"):
            StreamBudget(**bad)


# --- in a real network ------------------------------------------------------------------


async def _hog(port: int, target: str, source: str) -> ByteStream:
    stream = await anyio.connect_tcp("127.0.0.1", port, local_host=source)
    await stream.send(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return stream


async def test_a_client_gets_429_past_its_share_and_others_are_still_served(
    tmp_path: Path,
) -> None:
    data = write_file(tmp_path / "s" / "big.dat", 4 * 1024 * 1024, 5)
    budget = StreamBudget(per_client=3)
    async with tree() as t:
        hub = await t.hub("A", stream_budget=budget)
        share = await t.share("S", tmp_path / "s", "A", listen_url=UNREACHABLE)
        target = f"/{share.node.node_id}/download/big.dat"

        async def joined() -> bool:
            return await hub.node.can_route(share.node.node_id)

        await wait_until(joined, what="the share joined")
        hogs = [await _hog(hub.port, target, "127.0.0.2") for _ in range(3)]
        for hog in hogs:  # each got its head: the stream is open, and never read
            with anyio.fail_after(10):
                assert (await hog.receive()).startswith(b"HTTP/1.1 200")
        extra = await anyio.connect_tcp("127.0.0.1", hub.port, local_host="127.0.0.2")
        (refused,) = parse_raw_responses(
            await raw_http(
                extra,
                f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(),
                timeout=5,
            )
        )
        assert refused.status == 429
        assert refused.headers["retry-after"] == "5"
        assert json.loads(refused.body)["error"] == (
            "too many proxied requests open from your address (3)"
        )
        async with HttpClient() as client:  # another address: served
            response, body = await client.request(
                "GET", f"{hub.local_url}{target}", max_body_bytes=len(data) + 1
            )
            assert response.status == 200
            assert body == data
        # The hog goes away: its streams end, and its share is free again.
        for hog in (*hogs, extra):
            await hog.aclose()

        async def hog_served_again() -> bool:
            stream = await anyio.connect_tcp("127.0.0.1", hub.port, local_host="127.0.0.2")
            head = f"HEAD {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            answer = await raw_http(stream, head.encode(), timeout=5)
            await stream.aclose()
            return answer.startswith(b"HTTP/1.1 200")

        await wait_until(hog_served_again, what="the hog's streams released")
