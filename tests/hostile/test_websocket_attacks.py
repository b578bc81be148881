"""Websocket attacks on a running hub (issue 6 "Hostile input", docs/protocol.md, docs/security.md).

The attacker speaks kbproto's framing (docs/protocol.md §2: version, kind, u32 length,
payload) over a real websocket to the ``kbucket-hub`` process: oversized messages and
frames, garbage, frames out of order, a replayed registration transcript, a child
claiming the share's node id with another key, JSON nested 100,000 deep. Each costs
only the attacker's link; afterwards the real share is still joined and a normal
client is served.
"""

from __future__ import annotations

import hashlib
import struct

import anyio
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from kbproto.auth import SignatureScheme
from kbproto.framing import KIND_CONTROL, KIND_DATA, encode_frame
from kbproto.messages import PROTOCOL_VERSION
from kbtransport.websocket import WebSocketLink
from tests.helpers import Ed25519Signer
from tests.hostile.conftest import Net
from tests.hostile.helpers import dial_from, fresh_source, run_share_core

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _closed_by_hub(ws: WebSocketLink, seconds: float = 15.0) -> bool:
    """True once the hub closes ``ws`` (reads and drops whatever it sends first:
    the challenge)."""
    with anyio.move_on_after(seconds):
        while True:
            try:
                await ws.receive()
            except Exception:
                return True
    return False


async def _attack(net: Net, payloads: list[bytes], *, max_message: int = 1 << 24) -> bool:
    # Each attack from an address of its own: the hub slows down failed joins per
    # address (docs/security.md), and these tests are about what one attempt costs.
    ws = await dial_from(net.hub.url, fresh_source(), timeout=10, max_message_bytes=max_message)
    try:
        for payload in payloads:
            try:
                await ws.send(payload)
            except Exception:
                return True  # the hub hung up while we were still sending
        return await _closed_by_hub(ws)
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(2):
            await ws.aclose()


def _header(kind: int, length: int) -> bytes:
    return struct.pack("!BBI", PROTOCOL_VERSION, kind, length)


async def test_oversized_messages_and_frames_cost_only_the_link(net: Net) -> None:
    # A websocket message over the hub's 16 MiB cap.
    assert await _attack(net, [b"\x00" * (17 << 20)])
    # kbproto frame headers announcing more than one maximal frame (control 1 MiB).
    assert await _attack(net, [_header(KIND_CONTROL, (1 << 20) + 1)])
    assert await _attack(net, [_header(KIND_DATA, 0xFFFFFFFF)])
    # A legal-size control frame that never completes is caught by the handshake
    # deadline: send half and stop.
    assert await _attack(net, [_header(KIND_CONTROL, 1000) + b"{" * 500])
    await anyio.to_thread.run_sync(net.assert_serving)


async def test_malformed_frames_cost_only_the_link(net: Net) -> None:
    garbage = [
        b"GET / HTTP/1.1\r\n\r\n",
        _header(KIND_CONTROL, 4) + b"\xff\xfe\xfd\xfc",  # not UTF-8
        encode_frame(KIND_CONTROL, b'{"t":"nope"}'),
        encode_frame(KIND_CONTROL, b"[]"),
        bytes([99, KIND_CONTROL, 0, 0, 0, 2]) + b"{}",  # unknown version
        bytes([PROTOCOL_VERSION, 7, 0, 0, 0, 0]),  # unknown kind
        encode_frame(KIND_CONTROL, b"{" * 100_000 + b"}" * 100_000),  # deep JSON
        encode_frame(KIND_CONTROL, b"[" * 100_000 + b"]" * 100_000),
    ]
    for payload in garbage:
        assert await _attack(net, [payload]), payload[:40]
    await anyio.to_thread.run_sync(net.assert_serving)


async def test_replayed_and_reordered_registration_transcripts_fail(net: Net) -> None:
    # A genuine child joins once; its bytes are recorded.
    signer = Ed25519Signer(6001)
    first = await run_share_core(
        net.hub.url, signer, files=[("a" * 40, "x.bin", 1)], source=fresh_source()
    )
    assert first.joined, first.events
    assert len(first.sent) >= 2, first.sent
    # Replaying the same bytes on a new link: the hub's challenge is fresh, so the
    # old signature fails and the link is closed.
    assert await _attack(net, first.sent)
    # The same frames out of order (index before registration).
    assert await _attack(net, list(reversed(first.sent)))
    # Only the genuine join was announced on the hub's console.
    node_id = hashlib.sha1(signer.public_pem.encode()).hexdigest()[:12]
    joins = [line for line in net.hub.proc.lines if node_id in line and "join" in line.lower()]
    assert len(joins) <= 1, joins
    await anyio.to_thread.run_sync(net.assert_serving)


class _Impostor:
    """Presents the share's ``public.pem`` (so its node id) but signs with another key."""

    def __init__(self, public_pem: str) -> None:
        self._pem = public_pem
        self._key = ed25519.Ed25519PrivateKey.generate()

    @property
    def public_pem(self) -> str:
        return self._pem

    @property
    def scheme(self) -> SignatureScheme:
        return SignatureScheme.ED25519

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)


async def test_child_claiming_another_nodes_id_is_refused(net: Net) -> None:
    pem = (net.share.directory / ".kbucket" / "public.pem").read_text()
    impostor = _Impostor(pem)
    run = await run_share_core(
        net.hub.url, impostor, files=[("b" * 40, "evil.bin", 666)], source=fresh_source()
    )
    assert not run.joined, run.events
    assert run.refused is not None or run.closed, run.events
    # The real share is still the one the hub routes to, and the impostor's index
    # never reached the hub.
    await anyio.to_thread.run_sync(net.assert_serving)
    from tests.hostile.helpers import find_json

    found = await anyio.to_thread.run_sync(find_json, net.hub, "b" * 40)
    assert found["found"] is False, found
