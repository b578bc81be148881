"""Helpers for the hostile-input tests: raw sockets and kbproto cores (a share, or a
hostile hub) over a real websocket, against real ``kbucket-hub``/``kbucket-host``
processes on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from kbproto import NodeCore, SeededIdSource, ShareConfig, ShareCore
from kbproto.actions import Dial, Hangup, Transmit
from kbproto.auth import Signer
from kbproto.events import Event, JoinRefused, LinkClosed, ParentConnected
from kbproto.ids import LinkId
from kbproto.pump import drain
from kbtransport.websocket import WebSocketLink, connect_websocket
from tests.e2e.procs import Node

__all__ = (
    "CoreRun",
    "drive_core",
    "http_get",
    "raw_exchange",
    "run_share_core",
    "status_of",
)


def raw_exchange(port: int, data: bytes, *, timeout: float = 10.0, limit: int = 1 << 22) -> bytes:
    """Send ``data`` on a fresh TCP connection, then read until the server closes
    (or ``timeout`` passes, or ``limit`` bytes came); return what was read."""
    out = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        deadline = time.monotonic() + timeout
        # The server may close before reading everything: what it sent still counts.
        with contextlib.suppress(OSError):
            sock.sendall(data)
        while len(out) < limit and time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, OSError):
                break
            if not chunk:
                break
            out += chunk
    return bytes(out)


def status_of(response: bytes) -> int | None:
    """The status code of the first response in ``response`` (None if there is none)."""
    if not response.startswith(b"HTTP/1."):
        return None
    return int(response.split(b" ", 2)[1])


def http_get(url: str, timeout: float = 15.0) -> tuple[int, bytes]:
    """A plain client: GET ``url``; returns (status, body), errors included."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def find_json(node: Node, sha1: str) -> dict[str, object]:
    """``GET /find/SHA1`` at ``node`` (JSON)."""
    status, body = http_get(f"{node.url}/find/{sha1}")
    assert status == 200, (status, body[:300])
    value = json.loads(body)
    assert isinstance(value, dict)
    return value


@dataclass
class CoreRun:
    """What one run of a share core over a websocket saw."""

    events: list[Event] = field(default_factory=list)
    sent: list[bytes] = field(default_factory=list)
    joined: bool = False
    refused: str | None = None
    closed: bool = False


async def run_share_core(
    hub_url: str,
    signer: Signer,
    *,
    files: list[tuple[str, str, int]] | None = None,
    seconds: float = 5.0,
    stop_when_joined: bool = True,
) -> CoreRun:
    """Drive a kbproto ``ShareCore`` over one real websocket to ``hub_url`` (one dial,
    no redial) for at most ``seconds``; record its events and every byte it sent."""
    config = ShareConfig(name="hostile", listen_url="http://127.0.0.1:9", parent_url=hub_url)
    core = ShareCore(config, signer=signer, ids=SeededIdSource("hostile"))
    if files:
        core.set_files(files, anyio.current_time())
    run = CoreRun()
    await drive_core(core, run, seconds=seconds, stop=lambda: stop_when_joined and run.joined)
    return run


async def drive_core(
    core: NodeCore,
    run: CoreRun,
    *,
    seconds: float,
    stop: Callable[[], bool] = lambda: False,
) -> None:
    """Start ``core`` (a share, or a hub with a parent) and carry its one parent link
    over a real websocket (one dial, no redial) until ``stop()`` holds, the link ends
    or ``seconds`` pass; ``run`` records its events and every byte it sent. Run it in
    a task to keep a fake node joined while a test talks to the real ones."""
    link_id: LinkId | None = None
    ws: WebSocketLink | None = None
    now = anyio.current_time
    core.start(now())

    def on_event(event: Event) -> None:
        run.events.append(event)
        if isinstance(event, ParentConnected):
            run.joined = True
        elif isinstance(event, JoinRefused):
            run.refused = event.reason
        elif isinstance(event, LinkClosed):
            run.closed = True

    async def act() -> bool:
        nonlocal link_id, ws
        drained = drain(core, on_event)
        for action in drained.actions:
            if isinstance(action, Dial):
                if ws is not None or run.closed:
                    return False  # one dial only: a redial means the first link ended
                ws = await connect_websocket(action.address, timeout=5.0)
                link_id = LinkId(1)
                core.link_opened(link_id, now(), dialed=True)
                return await act()
            if isinstance(action, Transmit):
                assert ws is not None
                run.sent.append(bytes(action.data))
                await ws.send(bytes(action.data))
            elif isinstance(action, Hangup):
                return False
        return True

    with anyio.move_on_after(seconds):
        if await act():
            while ws is not None and not stop():
                timer = core.get_timer()
                wait = max(0.0, timer - now()) if timer is not None else seconds
                with anyio.move_on_after(min(wait, 0.2)):
                    try:
                        data = await ws.receive()
                    except Exception:  # the hub closed the link: what we test for
                        run.closed = True
                        if link_id is not None:
                            core.receive_eof(link_id, now())
                            drain(core, on_event)
                        break
                    assert link_id is not None
                    core.receive_data(link_id, data, now())
                    if not await act():
                        break
                    continue
                timer = core.get_timer()
                if timer is not None and timer <= now():
                    core.handle_timer(now())
                if not await act():
                    break
    if ws is not None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(2):
            await ws.aclose()


def read_text_tree(root: Path) -> str:
    """Every file under ``root`` as text (for greps over what a test produced)."""
    parts = []
    for path in sorted(root.rglob("*")):
        if path.is_file():
            parts.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(parts)
