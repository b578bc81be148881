"""Helpers for the node tests: real cores, real websockets and HTTP on 127.0.0.1.

``Tree`` starts hubs and shares in this process with ``serve_node``; shares serve temp
directories through ``kbapps.share.server.build_share_router`` and get their index
straight from the test (SHA-1s computed here with hashlib).
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from kbapps.share.app import build_share_app
from kbapps.share.index import FileIndex, IndexEntry
from kbapps.share.paths import ShareDir
from kbproto import HubConfig, HubCore, Limits, SeededIdSource, ShareConfig, ShareCore, Timeouts
from kbproto.auth import node_id_from_public_pem
from kbproto.ids import Sha1
from kbproto.messages import NodeInfo
from kbtransport.http_server import ServerConfig
from kbtransport.httpapi import NodeAppConfig
from kbtransport.join_guard import JoinBudget, RefusalSummary
from kbtransport.listener import BoundAddress, ListenConfig
from kbtransport.node import NodeHooks
from kbtransport.routing import Router
from kbtransport.serve import NodeHandle, serve_node
from kbtransport.stream_budget import StreamBudget
from tests.helpers import CryptoVerifier, Ed25519Signer

#: Short heartbeats so a dead peer is noticed within a second or two.
FAST = Timeouts(
    heartbeat_interval=0.3,
    heartbeat_timeout=1.5,
    handshake_timeout=3.0,
    lookup_timeout=3.0,
    request_timeout=10.0,
    # Long, so a test can tell a reset that travelled from one that timed out.
    stream_idle_timeout=30.0,
    reconnect_min=0.1,
    reconnect_max=0.5,
)
#: A window below the test files' sizes, so flow control is exercised on every hop.
LIMITS = Limits(stream_window=128 * 1024, data_chunk=32 * 1024)
#: A URL nothing listens on: the share is "behind a firewall".
UNREACHABLE = "http://127.0.0.1:9"


@dataclass
class Lines:
    """Console lines reported by the hooks, per node name."""

    lines: list[str] = field(default_factory=list)

    def hooks(self, name: str) -> NodeHooks:
        def add(text: str) -> None:
            self.lines.append(f"{name}: {text}")

        def joined(info: NodeInfo) -> None:
            add(f"child joined {info.node_type} {info.name} {info.node_id}")

        def left(info: NodeInfo, reason: str) -> None:
            add(f"child left {info.node_type} {info.name} {info.node_id}")

        def failures(summary: RefusalSummary) -> None:
            add(f"join failures {summary.count} from {summary.addresses}")

        return NodeHooks(
            on_dial=lambda url: add(f"dial {url}"),
            on_parent_connected=lambda info: add(f"connected {info.name}"),
            on_join_refused=lambda reason: add(f"refused {reason}"),
            on_child_joined=joined,
            on_child_left=left,
            on_parent_lost=lambda reason: add(f"parent lost {reason}"),
            on_join_failed=lambda client, reason: add(f"join from {client} failed: {reason}"),
            on_join_failures_summary=failures,
        )


def sha1_file(path: Path) -> str:
    digest = hashlib.sha1()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def write_file(path: Path, size: int, seed: int) -> bytes:
    """Write ``size`` deterministic bytes, each 64 KiB block tagged with its offset."""
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB
    buf = bytearray((block * (size // len(block) + 1))[:size])
    for offset in range(0, size, 65536):
        buf[offset : offset + 8] = offset.to_bytes(8, "big")[: size - offset]
    data = bytes(buf)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


class Tree:
    """Nodes started in this process; every one is stopped when the block ends."""

    def __init__(self, stack: AsyncExitStack, lines: Lines) -> None:
        self._stack = stack
        self.lines = lines
        self.handles: dict[str, NodeHandle] = {}
        self._seed = 100

    def _signer(self) -> Ed25519Signer:
        self._seed += 1
        return Ed25519Signer(self._seed)

    async def hub(
        self,
        name: str,
        parent: str | None = None,
        *,
        passcode: str = "",
        uplink: bool = True,
        stream_budget: StreamBudget | None = None,
        join_budget: JoinBudget | None = None,
        app_config: NodeAppConfig | None = None,
    ) -> NodeHandle:
        signer = self._signer()
        parent_url = self.handles[parent].local_url if parent else None

        def make(bound: BoundAddress) -> HubCore:
            config = HubConfig(
                name=name,
                listen_url=f"http://127.0.0.1:{bound.port}",
                parent_url=parent_url,
                passcode=passcode,
                limits=LIMITS,
                timeouts=FAST,
            )
            return HubCore(
                config, signer=signer, verifier=CryptoVerifier(), ids=SeededIdSource(name)
            )

        handle = await self._stack.enter_async_context(
            serve_node(
                make,
                Router(),
                ListenConfig(host="127.0.0.1", port=0),
                hooks=self.lines.hooks(name),
                uplink=uplink,
                stream_budget=stream_budget,
                join_budget=join_budget,
                app_config=app_config,
            )
        )
        self.handles[name] = handle
        return handle

    async def share(
        self,
        name: str,
        root: Path,
        parent: str | None,
        *,
        listen_url: str | None = None,
        parent_passcode: str = "",
        client_ssl: ssl.SSLContext | None = None,
        uplink: bool = True,
        server_config: ServerConfig | None = None,
    ) -> NodeHandle:
        signer = self._signer()
        parent_url = self.handles[parent].local_url if parent else None
        node_id = node_id_from_public_pem(signer.public_pem)
        index = _index_of(root)
        router = build_share_app(ShareDir(root), index, node_id).router

        def make(bound: BoundAddress) -> ShareCore:
            config = ShareConfig(
                name=name,
                listen_url=listen_url or f"http://127.0.0.1:{bound.port}",
                parent_url=parent_url,
                parent_passcode=parent_passcode,
                limits=LIMITS,
                timeouts=FAST,
            )
            return ShareCore(config, signer=signer, ids=SeededIdSource(name))

        handle = await self._stack.enter_async_context(
            serve_node(
                make,
                router,
                ListenConfig(host="127.0.0.1", port=0),
                hooks=self.lines.hooks(name),
                client_ssl=client_ssl,
                uplink=uplink,
                server_config=server_config,
            )
        )
        await handle.set_files([(e.sha1, e.path, e.size) for e in index.entries()])
        self.handles[name] = handle
        return handle


def _index_of(root: Path) -> FileIndex:
    """An in-memory share index of every file under ``root`` (no dot-names), trusted at once."""
    index = FileIndex(None, racy_window_ns=0)
    entries = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not any(p.startswith(".") for p in path.relative_to(root).parts):
            st = path.stat()
            head = hashlib.sha1(path.read_bytes()[:1000]).hexdigest()
            entries.append(
                IndexEntry(
                    path.relative_to(root).as_posix(),
                    st.st_dev,
                    st.st_ino,
                    st.st_size,
                    st.st_mtime_ns,
                    st.st_ctime_ns,
                    Sha1(sha1_file(path)),
                    Sha1(head),
                    0,
                )
            )
    index.apply(entries)
    return index


@asynccontextmanager
async def tree() -> AsyncIterator[Tree]:
    """A ``Tree`` whose nodes are all stopped (in reverse order) when the block ends."""
    async with AsyncExitStack() as stack:
        yield Tree(stack, Lines())


async def wait_until(predicate: object, timeout: float = 10.0, what: str = "condition") -> None:
    """Poll an async predicate every 20 ms until it holds; fail after ``timeout``."""
    assert callable(predicate)
    with anyio.fail_after(timeout):
        while not await predicate():
            await anyio.sleep(0.02)
