"""JSON nested 100,000 deep, wherever kbucket parses JSON (issue 6 "Hostile input").

- in a ``.prv``/``.prvdir`` given to ``kb-prv-find`` and ``kb-prv-download``: one
  ``Error:`` line naming the file, exit 2, no traceback;
- in a hub's answer to a client (a hostile hub): the client fails cleanly (no
  traceback, no hang) with exit 3 (no usable hub), and a real hub still works after;
- in a control frame sent to a running hub: see ``test_websocket_attacks``.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.procs import command
from tests.hostile.conftest import NORMAL, Net

DEEP_OBJECT = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
DEEP_ARRAY = b"[" * 100_000 + b"]" * 100_000


def _run(
    procs_env: dict[str, str], *argv: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=procs_env)


def _assert_clean_failure(result: subprocess.CompletedProcess[str], code: int) -> None:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-2000:]
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines, "no error message"
    assert len(lines[-1]) < 500


@pytest.mark.parametrize("body", [DEEP_OBJECT, DEEP_ARRAY], ids=["object", "array"])
def test_deep_prv_is_bad_input(net: Net, tmp_path: Path, body: bytes) -> None:
    env = net.procs.env
    for suffix in (".prv", ".prvdir"):
        prv = tmp_path / f"deep{suffix}"
        prv.write_bytes(body)
        found = _run(env, *command("kb-prv-find", str(prv), "--hub", net.hub.url))
        _assert_clean_failure(found, 2)
        assert prv.name in found.stderr
        out = tmp_path / ("out.bin" if suffix == ".prv" else "outdir")
        got = _run(env, *command("kb-prv-download", str(prv), str(out), "--hub", net.hub.url))
        _assert_clean_failure(got, 2)
        assert not out.exists()
    net.assert_serving()


@pytest.fixture
def hostile_hub() -> Iterator[int]:
    """A fake hub on 127.0.0.1 answering every request with 100,000-deep JSON."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                try:
                    conn.recv(65536)
                    head = (
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(DEEP_OBJECT)}\r\nConnection: close\r\n\r\n"
                    )
                    conn.sendall(head.encode() + DEEP_OBJECT)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_deep_json_from_a_hostile_hub(net: Net, tmp_path: Path, hostile_hub: int) -> None:
    prv = tmp_path / "normal.prv"
    share = net.share.node_id
    got = _run(
        net.procs.env, *command("kb-prv-create", str(net.share.directory / "normal.txt"), str(prv))
    )
    assert got.returncode == 0, got.stderr
    hub = f"http://127.0.0.1:{hostile_hub}"
    # Regression: the client raised RecursionError ("internal error", exit 1); a hub
    # that answers garbage is an unusable hub: exit 3, one line naming it.
    found = _run(net.procs.env, *command("kb-prv-find", str(prv), "--hub", hub))
    _assert_clean_failure(found, 3)
    assert "internal error" not in found.stderr
    assert hub in found.stderr
    out = tmp_path / "out.bin"
    got = _run(net.procs.env, *command("kb-prv-download", str(prv), str(out), "--hub", hub))
    _assert_clean_failure(got, 3)
    assert "internal error" not in got.stderr
    assert not out.exists()
    # The same client against the real hub still works.
    got = _run(net.procs.env, *command("kb-prv-download", str(prv), str(out), "--hub", net.hub.url))
    assert got.returncode == 0, got.stderr
    assert out.read_bytes() == NORMAL
    assert json.loads(prv.read_text())["original_path"] == "normal.txt", share
    net.assert_serving()
