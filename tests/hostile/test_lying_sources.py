"""A share that lies about content ids, behind a real hub (issue 11, class 8;
docs/security.md "Content named by SHA-1").

The liar (``tests.hostile.fake_share``, joined first, so the hub asks it first) indexes
content ids it does not hold and answers ``/ID/sha1/SHA1`` with other bytes of the right
length, or chunked, or with no bytes at all. A browser or ``curl`` asking the hub for
``/sha1/SHA1`` must never receive a complete response of wrong bytes: the body stops
short of its ``Content-Length`` (or never gets its final chunk) and the connection
closes. The hub then stops asking the liar for that id and serves an honest real share
instead, whole requests and ranges alike.
"""

from __future__ import annotations

import hashlib
import re
import socket
import time
from pathlib import Path

from tests.e2e.procs import Node, Procs, sha1_of, write_pattern
from tests.hostile.fake_share import FakeRoute, FakeShareScript, start_fake_share

#: The honest content: several proxy chunks long, so a cut can come mid-body.
SIZE = 3 * 1024 * 1024 + 12345


def _lie(data: bytes) -> bytes:
    """``data`` with one byte changed in the middle: same length, another SHA-1."""
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


def _get(node: Node, target: str, extra: str = "", timeout: float = 30.0) -> tuple[bytes, bytes]:
    """GET ``target``; read until the hub closes the connection (``Connection: close``
    asks it to once done): return the response head and everything after it."""
    request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Connection: close\r\n\r\n"
    out = bytearray()
    with socket.create_connection(("127.0.0.1", node.port), timeout=timeout) as sock:
        sock.sendall(request.encode())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(1 << 20)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    head, _, rest = bytes(out).partition(b"\r\n\r\n")
    return head, rest


def _status(head: bytes) -> int:
    return int(head.split(b" ", 2)[1])


def _header(head: bytes, name: str) -> str | None:
    match = re.search(rb"(?im)^" + name.encode() + rb":\s*(.*?)\s*$", head)
    return match.group(1).decode() if match else None


def test_wrong_bytes_are_never_a_complete_response(procs: Procs, tmp_path: Path) -> None:
    hub = procs.node("kbucket-hub", tmp_path / "hub", name="checking-hub")
    share_dir = tmp_path / "honest"
    content = write_pattern(share_dir / "data.bin", SIZE, seed=8)
    sha1 = sha1_of(content)
    chunked_content = b"only the liar claims this one\n" * 40000
    chunked_sha1 = sha1_of(chunked_content)
    empty_claim = sha1_of(b"not empty at all\n")
    other = b"another content the liar claims\n" * 70000
    other_sha1 = sha1_of(other)
    binary = (("Content-Type", "application/octet-stream"),)
    liar = FakeShareScript(
        hub_url=hub.url,
        seed=801,
        files=(
            (sha1, "lie.bin", SIZE),
            (chunked_sha1, "chunked.bin", len(chunked_content)),
            (empty_claim, "empty.bin", 17),
            (other_sha1, "other.bin", len(other)),
        ),
        routes={
            f"sha1/{sha1}": FakeRoute(headers=binary, body=_lie(content)),
            f"sha1/{chunked_sha1}": FakeRoute(
                headers=binary, body=_lie(chunked_content), chunked=True
            ),
            f"sha1/{empty_claim}": FakeRoute(headers=binary, body=b""),
            f"sha1/{other_sha1}": FakeRoute(headers=binary, body=_lie(other)),
        },
    )
    liar_id = start_fake_share(procs, liar, tmp_path / "liar")
    procs.node("kbucket-host", share_dir, name="honest-share", parent=hub)

    # The liar is asked first: its bytes stop short of the Content-Length, and the
    # connection closes.
    head, body = _get(hub, f"/sha1/{sha1}")
    assert _status(head) == 200, head
    assert _header(head, "content-length") == str(SIZE)
    assert len(body) < SIZE, "a complete response of wrong bytes"
    assert body == _lie(content)[: len(body)]
    # Never again that source for that id: the honest share serves it, whole and checked.
    head, body = _get(hub, f"/sha1/{sha1}")
    assert _status(head) == 200, head
    assert hashlib.sha1(body).hexdigest() == sha1
    # Asking the liar by its id for that content is refused outright now.
    head, _ = _get(hub, f"/{liar_id}/sha1/{sha1}")
    assert _status(head) == 502, head
    # Ranges come from the honest share too: the whole range is checked, a part is not
    # checkable alone but no longer comes from the liar.
    head, body = _get(hub, f"/sha1/{sha1}", "Range: bytes=0-\r\n")
    assert _status(head) == 206, head
    assert body == content
    head, body = _get(hub, f"/sha1/{sha1}", "Range: bytes=1000-2999\r\n")
    assert _status(head) == 206, head
    assert body == content[1000:3000]

    # Chunked wrong bytes: the final chunk never comes.
    head, body = _get(hub, f"/sha1/{chunked_sha1}")
    assert _status(head) == 200, head
    assert (_header(head, "transfer-encoding") or "").lower() == "chunked"
    assert not body.endswith(b"0\r\n\r\n"), "a complete chunked response of wrong bytes"
    head, _ = _get(hub, f"/sha1/{chunked_sha1}")
    assert _status(head) == 502, head  # its only source lied

    # "The whole content in no bytes" is a lie a Content-Length of 0 would complete:
    # refused before the head.
    head, body = _get(hub, f"/sha1/{empty_claim}")
    assert _status(head) == 502, head

    # /ID/sha1/SHA1 names its content too: checked the same way.
    head, body = _get(hub, f"/{liar_id}/sha1/{other_sha1}")
    assert _status(head) == 200, head
    assert len(body) < len(other)
    head, _ = _get(hub, f"/sha1/{other_sha1}")
    assert _status(head) == 502, head

    assert hub.proc.popen.poll() is None
    assert "Traceback" not in hub.proc.stderr()
