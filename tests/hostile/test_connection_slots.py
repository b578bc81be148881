"""Connection slots shared among clients (issue 11, class 7; ``docs/security.md`` §2
"Connection slots").

A real ``kbucket-host`` with its default budgets. 1,100 connections that send nothing,
then 200 that send only part of a request head, from one address and then from eleven
(raw sockets from 127.0.0.2 and up). A normal client is still served within seconds,
from another address and from the attacker's own. Before: the share's 1,024 slots were
all taken and the normal client waited in the backlog for a minute (the idle timeout).

The test process holds up to 1,300 sockets: its soft descriptor limit is raised toward
the hard one if it is lower than that needs (``ensure_descriptors``).
"""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path

import pytest

from tests.e2e.procs import Node, Procs
from tests.hostile.helpers import connect_from, ensure_descriptors, held, http_get

#: How long a normal client may wait for its answer while the attack runs (seconds);
#: before the fix it waited about a minute (the idle timeout).
PROMPT = 5.0


@pytest.fixture
def share_node(procs: Procs, tmp_path: Path) -> Node:
    (tmp_path / "share").mkdir()
    (tmp_path / "share" / "small.txt").write_bytes(b"small file\n")
    return procs.node("kbucket-host", tmp_path / "share", name="slots-share")


@pytest.mark.parametrize("sources", [1, 11], ids=["one-address", "eleven-addresses"])
def test_idle_and_slow_connections_do_not_lock_out_clients(share_node: Node, sources: int) -> None:
    ensure_descriptors(1300 + 200)
    url = f"{share_node.url}/{share_node.node_id}/download/small.txt"
    idle: list[socket.socket] = []
    with held(idle):
        for i in range(1300):
            sock = connect_from(share_node.port, f"127.0.0.{2 + i % sources}", timeout=2.0)
            if sock is None:
                break  # the share accepts no more (before the fix: all its slots taken)
            idle.append(sock)
            if i >= 1100:
                # A slow request head that never ends (slowloris).
                with contextlib.suppress(OSError):
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        assert len(idle) >= 1100
        time.sleep(1.0)
        # A normal client from another address, then from the attacker's own.
        for source in ("127.0.0.1", "127.0.0.2"):
            start = time.monotonic()
            sock = connect_from(share_node.port, source)
            assert sock is not None
            with sock:
                sock.settimeout(PROMPT)
                sock.sendall(
                    f"GET /{share_node.node_id}/download/small.txt HTTP/1.1\r\n"
                    "Host: x\r\nConnection: close\r\n\r\n".encode()
                )
                answer = b""
                with contextlib.suppress(OSError):
                    while chunk := sock.recv(65536):
                        answer += chunk
            assert answer.startswith(b"HTTP/1.1 200"), (source, answer[:200])
            assert answer.endswith(b"small file\n")
            assert time.monotonic() - start < PROMPT
    status, body = http_get(url)
    assert (status, body) == (200, b"small file\n")
    assert share_node.proc.popen.poll() is None
    assert "Traceback" not in share_node.proc.stderr()
