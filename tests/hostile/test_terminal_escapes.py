"""Terminal escapes in untrusted text (issue 11, class 10; ``docs/security.md`` §2
"Text printed to a terminal").

A child's name, a ``.prvdir``'s file names and a shared file's name carry ESC/CSI/OSC
sequences, C1 controls, a bidi override and line breaks. Before the fix they reached
the hub operator's console and the client's error lines raw: the OSC retitled the
terminal, the CSI cleared the screen, the CR/LF forged a console line. Every line the
commands print is now inert (each such character shown as ``\\uXXXX``), and
``--json`` output stays valid JSON carrying the same text.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from tests.e2e.procs import Node, Procs, command
from tests.helpers import Ed25519Signer
from tests.hostile.helpers import run_share_core

#: OSC (retitle, ended by BEL), CSI (clear screen, then red), a C1 CSI, DEL, a bidi
#: override, and CR/LF followed by a forged console line.
EVIL = (
    "\x1b]0;owned\x07\x1b[2J\x1b[31mred\x9b1m\x7f\u202eevil\u2066"
    "\r\nChild share joined: forged (000000000000)"
)
#: What a terminal may act on (``kbapps.output``): C0 but LF, DEL, C1, bidi, LS/PS.
_UNSAFE = {
    *map(chr, range(0x20)),
    *map(chr, range(0x7F, 0xA0)),
    "\u061c",
    "\u200e",
    "\u200f",
    "\u2028",
    "\u2029",
    *map(chr, range(0x202A, 0x202F)),
    *map(chr, range(0x2066, 0x206A)),
} - {"\n"}


def _raw_controls(text: str) -> list[str]:
    return sorted({hex(ord(c)) for c in text if c in _UNSAFE})


@pytest.fixture
def guarded_hub(procs: Procs, tmp_path: Path) -> Node:
    return procs.node("kbucket-hub", tmp_path / "hub", "--passcode", "sesame", name="escapes")


def test_a_child_named_with_escapes_reaches_the_hub_console_inert(guarded_hub: Node) -> None:
    hub = guarded_hub

    async def attack() -> None:
        joined = await run_share_core(
            hub.url, Ed25519Signer(501), name=EVIL, passcode="sesame", seconds=10
        )
        assert joined.joined
        refused = await run_share_core(
            hub.url, Ed25519Signer(502), name=EVIL, passcode="wrong", seconds=10
        )
        assert refused.refused is not None

    anyio.run(attack)
    hub.proc.wait_line(r"Child share joined: ")
    hub.proc.wait_line(r"Child share left: ")
    for line in list(hub.proc.lines):
        assert not _raw_controls(line), (line, _raw_controls(line))
    # The refused join's line names the child too (``Join from ... failed``).
    hub.proc.wait_line(r"Join from 127\.0\.0\.1 failed: incorrect passcode for node ")
    lines = list(hub.proc.lines)
    for line in lines:
        assert not _raw_controls(line), (line, _raw_controls(line))
    # The name's line break did not forge a line of its own: the whole name, made
    # visible, stays on the line it belongs to, before the real node id.
    assert not any(line.startswith("Child share joined: forged") for line in lines), lines
    (joined_line,) = [line for line in lines if line.startswith("Child share joined: ")]
    assert "\\u001b]0;owned\\u0007\\u001b[2J" in joined_line
    assert "\\u009b1m\\u007f\\u202eevil\\u2066" in joined_line
    assert "  Child share joined: forged (000000000000) (" in joined_line
    assert "Traceback" not in hub.proc.stderr()


#: The ``.prvdir``'s top file name (a file name holds no line break).
NAME = EVIL.replace("\r\n", " ") + ".dat"


def _write_prvdir(path: Path) -> None:
    def prv(data: bytes, name: str) -> dict[str, object]:
        return {
            "original_checksum": hashlib.sha1(data).hexdigest(),
            "original_size": len(data),
            "original_fcs": "head1000-" + hashlib.sha1(data[:1000]).hexdigest(),
            "original_path": name,
            "prv_version": "0.11",
        }

    document = {
        "files": {NAME: prv(b"content nobody has\n", NAME)},
        "dirs": {"\x1b[2Jdir\u202e": {"files": {"b.dat": prv(b"neither\n", "b.dat")}, "dirs": {}}},
    }
    path.write_text(json.dumps(document, ensure_ascii=False, sort_keys=True), encoding="utf-8")


def test_prvdir_names_with_escapes_give_inert_error_lines(
    guarded_hub: Node, procs: Procs, tmp_path: Path
) -> None:
    prvdir = tmp_path / "evil.prvdir"
    _write_prvdir(prvdir)
    for extra in ((), ("--json",)):
        argv = command(
            "kb-prv-download", str(prvdir), str(tmp_path / "out"), "--hub", guarded_hub.url
        )
        result = subprocess.run([*argv, *extra], capture_output=True, timeout=120, env=procs.env)
        stderr = result.stderr.decode("utf-8")
        stdout = result.stdout.decode("utf-8")
        assert result.returncode == 1, stderr  # found nowhere
        assert "Traceback" not in stderr
        assert "\\u001b[2Jdir\\u202e" in stderr, stderr
        assert not _raw_controls(stderr), _raw_controls(stderr)
        assert not _raw_controls(stdout), _raw_controls(stdout)
        if extra:
            # Machine output: valid JSON Lines that carry the names as they are.
            events = [json.loads(line) for line in stdout.splitlines() if line.strip()]
            assert any(event.get("path") == NAME for event in events), events


@pytest.fixture
def hostile_hub() -> Iterator[str]:
    """A fake hub on 127.0.0.1 answering every find with paths and URLs full of escapes."""
    answer = json.dumps(
        {
            "success": True,
            "found": True,
            "size": 16,
            "urls": [f"http://127.0.0.1:9/{'0' * 12}/download/{EVIL}"],
            "results": [{"kbshare_id": "0" * 12, "size": 16, "path": EVIL}],
        },
        ensure_ascii=False,
    ).encode("utf-8")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn, contextlib.suppress(OSError):
                conn.settimeout(5)
                conn.recv(65536)
                head = (
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(answer)}\r\nConnection: close\r\n\r\n"
                )
                conn.sendall(head.encode() + answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_escapes_from_a_local_name_or_a_hostile_hub_print_inert(
    procs: Procs, tmp_path: Path, hostile_hub: str
) -> None:
    name = "evil\x1b]0;owned\x07\x1b[2J\x9b31m\u202etxt.dat"
    (tmp_path / name).write_bytes(b"escaped content\n")
    made = subprocess.run(
        command("kb-prv-create", str(tmp_path / name)), capture_output=True, env=procs.env
    )
    assert made.returncode == 0, made.stderr
    # The .prv printed on stdout is inert, and still JSON holding the name as it is.
    assert not _raw_controls(made.stdout.decode("utf-8"))
    assert json.loads(made.stdout)["original_path"] == name
    prv = tmp_path / "evil.prv"
    prv.write_bytes(made.stdout)
    for extra in ((), ("--json",)):
        found = subprocess.run(
            command("kb-prv-find", str(prv), "--hub", hostile_hub, *extra),
            capture_output=True,
            env=procs.env,
            timeout=60,
        )
        assert found.returncode == 0, found.stderr
        out = found.stdout.decode("utf-8")
        assert not _raw_controls(out), _raw_controls(out)
        if extra:
            assert json.loads(out)["results"][0]["path"] == EVIL
        else:
            assert out.count("\n") == 1, out  # one URL, one line: no forged line
            assert "\\u001b]0;owned" in out
