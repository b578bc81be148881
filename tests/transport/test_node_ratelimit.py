"""A share's upload rate limit covers what its hub proxies from it (in-process nodes on
127.0.0.1): the bodies it sends up its parent link, over the raw uplink or the
websocket, wait for the same token bucket as its direct downloads."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

from kbtransport.http_client import HttpClient
from kbtransport.http_server import ServerConfig
from kbtransport.ratelimit import UploadLimiter
from tests.transport.node_helpers import tree, wait_until, write_file

pytestmark = pytest.mark.anyio

RATE = 1024 * 1024
SIZE = 1024 * 1024 + 5


@pytest.mark.parametrize("uplink", [True, False])
async def test_proxied_and_direct_downloads_share_the_share_limit(
    tmp_path: Path, uplink: bool
) -> None:
    data = write_file(tmp_path / "s" / "f.bin", SIZE, seed=7)
    limit = UploadLimiter(RATE)
    async with tree() as net:
        hub = await net.hub("H")
        share = await net.share(
            "S", tmp_path / "s", "H", uplink=uplink, server_config=ServerConfig(upload_limit=limit)
        )

        async def joined() -> bool:
            return "S: connected H" in net.lines.lines

        await wait_until(joined, what="S joined H")
        tail = f"/{share.node.node_id}/download/f.bin"
        bodies: list[bytes] = []

        async def fetch(base: str) -> None:
            async with HttpClient() as client:
                _, body = await client.request("GET", base + tail, max_body_bytes=SIZE)
            bodies.append(body)

        # Through the hub alone: paced.
        started = time.monotonic()
        with anyio.fail_after(30):
            await fetch(hub.local_url)
        alone = time.monotonic() - started
        assert bodies == [data]
        assert alone >= 0.6 * (SIZE - limit.burst) / RATE
        # Through the hub and directly at once: one bucket for both.
        await anyio.sleep(limit.burst / RATE)
        started = time.monotonic()
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(fetch, hub.local_url)
                tg.start_soon(fetch, share.local_url)
        both = time.monotonic() - started
        assert bodies == [data] * 3
        assert both >= 0.6 * (2 * SIZE - limit.burst) / RATE
