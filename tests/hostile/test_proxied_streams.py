"""Proxied streams shared among clients (issue 11, class 7; ``docs/security.md`` §2
"Proxied streams").

Real ``kbucket-hub``/``kbucket-host`` processes with their default budgets. One client
opens 300 proxied downloads of a share's file through the hub and never reads them,
from one address and then from five (raw sockets from 127.0.0.2 and up: Linux routes
all of 127/8 to the loopback interface). Another client still downloads that file
through the same hub. Before: the hog's streams took every slot of the hub's link to
the share, and everyone else got 503 until they timed out, about a minute later; and
with the slots shared, the hog's unread downloads still queued their windows (up to
768 MiB from five addresses) in the share's link ahead of everyone else's response
heads, which timed out (504).
"""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path

import pytest

from tests.e2e.procs import UNREACHABLE, Node, Procs, write_pattern
from tests.hostile.helpers import connect_from, ensure_descriptors, held, http_get

#: Bigger than a stream's window (4 MiB) plus what the sockets on the way buffer for a
#: client reading nothing, so an unread download keeps its stream open.
BIG = 8 * 1024 * 1024
#: How long a small request may take during the flood (seconds; about 0.2 s on an idle
#: machine, the bound leaves room for a loaded one). Before the link's queue was shared
#: it waited behind up to 768 MiB of the hog's windows: 504 after 30 s from five
#: addresses (4 s from one).
PROMPT = 15.0


def _first_bytes(sock: socket.socket, timeout: float = 0.5) -> bytes:
    sock.settimeout(timeout)
    try:
        return sock.recv(4096)
    except OSError:
        return b""


def _timed_get(url: str) -> tuple[float, int, bytes]:
    start = time.monotonic()
    status, body = http_get(url, timeout=60)
    return time.monotonic() - start, status, body


@pytest.fixture
def proxied(procs: Procs, tmp_path: Path) -> tuple[Node, Node, bytes]:
    """A hub, and a share behind a "firewall" (only reachable through the hub)
    holding ``big.bin``."""
    data = write_pattern(tmp_path / "share" / "big.bin", BIG, 11)
    (tmp_path / "share" / "small.txt").write_bytes(b"small\n")
    hub = procs.node("kbucket-hub", tmp_path / "hub", name="budget-hub")
    share = procs.node(
        "kbucket-host",
        tmp_path / "share",
        "--listen-url",
        UNREACHABLE,
        name="budget-share",
        parent=hub,
    )
    return hub, share, data


@pytest.mark.parametrize("sources", [1, 5], ids=["one-address", "five-addresses"])
def test_unread_proxied_downloads_do_not_starve_other_clients(
    proxied: tuple[Node, Node, bytes], sources: int
) -> None:
    hub, share, data = proxied
    ensure_descriptors(300 + 200)
    target = f"/{share.node_id}/download/big.bin"
    request = f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    hogs: list[socket.socket] = []
    with held(hogs):
        # All connected first, then all asked at once: the hub, busy moving the first
        # downloads, must not make the later connections time out.
        for i in range(300):
            sock = connect_from(hub.port, f"127.0.0.{2 + i % sources}", rcvbuf=4096)
            if sock is not None:
                hogs.append(sock)
        assert len(hogs) == 300
        for sock in hogs:
            with contextlib.suppress(OSError):
                sock.sendall(request)
        # While the hog's downloads pour their first windows into the link, another
        # client's small request is answered promptly: its head and body do not wait
        # behind those windows.
        time.sleep(0.5)
        elapsed, status, body = _timed_get(f"{hub.url}/{share.node_id}/download/small.txt")
        assert (status, body) == (200, b"small\n")
        assert elapsed < PROMPT, elapsed
        time.sleep(1.5)  # the hub opens what it will of the hog's streams
        # Another client downloads the same file through the same hub, more than once.
        for _ in range(3):
            elapsed, status, body = _timed_get(f"{hub.url}{target}")
            assert status == 200, body[:300]
            assert body == data
            assert elapsed < 60  # a loaded machine moves the hog's 0.3-0.8 GiB meanwhile
        # The hog was told why it got no more: 429 with a reason, not a silent stall.
        answers = [_first_bytes(sock, 0.05) for sock in hogs]
        refused = [a for a in answers if a.startswith(b"HTTP/1.1 429")]
        assert refused, "no hog request was refused"
        assert b"from your address" in refused[0] or b"kept for light clients" in refused[0]
    assert hub.proc.popen.poll() is None
    assert "Traceback" not in hub.proc.stderr()
