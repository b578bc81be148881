"""Many lightweight shares in one process, each a real ``ShareCore`` on its own real
websocket to a hub (for the load test; no HTTP listeners, no files on disk).

Run: ``python -m tests.load.swarm HUB_URL COUNT FILES_PER_SHARE [SECONDS]``. Each share gets a
distinct Ed25519 key (seeded: the same ids every run) and ``FILES_PER_SHARE`` made-up
content ids (``sha1("swarm/<share>/<file>")``). The process prints ``joined N`` once
every share has joined, then one ``alive N`` line every 5 s with how many are still
joined, and runs until SIGTERM (or for at most ``SECONDS``, default 900, so it never
outlives a test run).

A share that loses its link redials like any share (backoff from the core).
"""

from __future__ import annotations

import functools
import hashlib
import sys

import anyio

from kbproto import SeededIdSource, ShareConfig, ShareCore, Timeouts
from kbproto.events import Event, JoinRefused, LinkClosed, ParentConnected
from kbtransport.driver import NodeDriver
from kbtransport.env import AnyioClock
from kbtransport.websocket import WebSocketLink
from tests.helpers import Ed25519Signer
from tests.hostile.helpers import dial_from

__all__ = ("content_id", "main", "source_address")

#: Joins started at once (the hub's accept backlog is 128).
_BATCH = 50


def source_address(share: int) -> str:
    """The loopback address swarm share ``share`` dials from (127.0.2.2 and up)."""
    return f"127.0.{2 + share // 250}.{2 + share % 250}"


def content_id(share: int, index: int) -> str:
    """The made-up content id of file ``index`` of swarm share ``share``."""
    return hashlib.sha1(f"swarm/{share}/{index}".encode()).hexdigest()


def _set_files(core: ShareCore, entries: list[tuple[str, str, int]], now: float) -> None:
    core.set_files(entries, now)


async def _run(hub_url: str, count: int, files: int, seconds: float) -> None:
    joined: set[int] = set()
    clock = AnyioClock()

    async with anyio.create_task_group() as tg:
        for i in range(count):

            async def dial(url: str, i: int = i) -> WebSocketLink:
                # Each share from a loopback address of its own, as 1,000 labs would
                # be: a hub's per-address budgets (connections, failed joins) are
                # meant for one client, not for a thousand behind one address.
                return await dial_from(url, source_address(i), timeout=30)

            def on_event(event: Event, i: int = i) -> None:
                if isinstance(event, ParentConnected):
                    joined.add(i)
                elif isinstance(event, LinkClosed):
                    joined.discard(i)
                elif isinstance(event, JoinRefused):
                    print(f"share {i} refused: {event.reason}", file=sys.stderr, flush=True)

            config = ShareConfig(
                name=f"swarm-{i}",
                listen_url="http://127.0.0.1:9",
                parent_url=hub_url,
                timeouts=Timeouts(),
            )
            core = ShareCore(config, signer=Ed25519Signer(50_000 + i), ids=SeededIdSource(i))
            driver = NodeDriver(core, clock=clock, dialer=dial, on_event=on_event)
            await tg.start(driver.run)
            entries = [(content_id(i, k), f"f{k}.bin", 1000 + k) for k in range(files)]
            driver.post(functools.partial(_set_files, core, entries))
            if i % _BATCH == _BATCH - 1:
                with anyio.move_on_after(60):
                    while len(joined) < i + 1:
                        await anyio.sleep(0.05)
        with anyio.move_on_after(120):
            while len(joined) < count:
                await anyio.sleep(0.05)
        print(f"joined {len(joined)}", flush=True)

        async def report() -> None:
            while True:
                await anyio.sleep(5)
                print(f"alive {len(joined)}", flush=True)

        tg.start_soon(report)
        await anyio.sleep(seconds)
        tg.cancel_scope.cancel()


def main() -> int:
    """Entry point (see the module docstring)."""
    hub_url, count, files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 900.0
    anyio.run(_run, hub_url, count, files, seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
