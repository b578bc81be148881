"""Secrets and permissions (issue 6 part 5, docs/formats.md §3 and §6).

A small network of real processes: a hub with a passcode, a share joined with that
passcode, a second share presenting a wrong passcode (refused). Every docs/http.md route is
exercised through the share and through the hub (nodeinfo, readdir, prv, download,
HEAD, Range, find, api/find, sha1, web pages, OPTIONS, errors), the clients run
(``kb-prv-create``, ``kb-prv-find``, ``kb-prv-download`` with ``--json``), and then
everything produced — every response, every console line on stdout and stderr of
every process, every ``.prv`` written, every log file under ``.kbucket/`` — is
grepped for the private keys' PEM bodies, both passcodes (right and wrong) and the
absolute temporary paths.

One exemption, by the contract itself (docs/commands.md, kbucket-host): its first-run
line ``Creating new kbucket share configuration in <abs DIR>/.kbucket ...`` names the
directory on the owner's own console; that exact line is the only place an absolute
path may appear.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from pathlib import Path

from tests.e2e.procs import Node, Procs, command
from tests.hostile.helpers import raw_exchange, status_of

PASSCODE = "hub-passcode-7f3a9c1e"
WRONG_PASSCODE = "wrong-passcode-0b8d2e44"
CONTENT = b"secret-free content for the secrets test\n" * 50
#: docs/commands.md, kbucket-host requires this console line to name the absolute directory.
FIRST_RUN_LINE = "Creating new kbucket "


def _key_body(node: Node) -> list[str]:
    pem = (node.directory / ".kbucket" / "private.pem").read_text()
    body = [line for line in pem.splitlines() if line and "-----" not in line]
    assert body
    return body


def _check_permissions(node: Node) -> None:
    kb = node.directory / ".kbucket"
    assert stat.S_IMODE(os.stat(kb).st_mode) == 0o700, oct(os.stat(kb).st_mode)
    mode = stat.S_IMODE(os.stat(kb / "private.pem").st_mode)
    assert mode == 0o600, oct(mode)


def _requests(hub: Node, share: Node, sha1: str) -> list[tuple[int, str, str]]:
    """(port, method, target) of every route, on both nodes."""
    h, s = hub.node_id, share.node_id
    targets = [
        ("GET", f"/{h}/api/nodeinfo"),
        ("GET", f"/{s}/api/nodeinfo"),
        ("GET", f"/{s}/api/readdir/"),
        ("GET", f"/{s}/api/readdir/sub"),
        ("GET", f"/{s}/prv/data.bin"),
        ("GET", f"/{s}/download/data.bin"),
        ("HEAD", f"/{s}/download/data.bin"),
        ("GET", f"/{s}/download/sub/small.txt"),
        ("GET", f"/find/{sha1}"),
        ("GET", f"/find/{sha1}/data.bin"),
        ("GET", f"/{s}/api/find/{sha1}"),
        ("GET", f"/find/{'0' * 40}"),
        ("GET", f"/sha1/{sha1}"),
        ("HEAD", f"/sha1/{sha1}"),
        ("GET", "/"),
        ("GET", "/web/"),
        ("GET", "/web/config.json"),
        ("GET", "/web/app.js"),
        ("GET", "/web/style.css"),
        ("GET", f"/web/?node={s}"),
        ("OPTIONS", f"/{s}/download/data.bin"),
        # errors
        ("GET", "/ffffffffffff/api/nodeinfo"),
        ("GET", f"/{s}/download/nope.bin"),
        ("GET", f"/{s}/download/../../etc/passwd"),
        ("GET", f"/{s}/download/.kbucket/private.pem"),
        ("GET", f"/{s}/prv/.kbucket/kbnode.json"),
        ("GET", f"/{s}/api/readdir/.kbucket"),
        ("GET", f"/{s}/api/readdir/nope"),
        ("GET", "/find/not-a-sha1"),
        ("GET", "/sha1/" + "1" * 40),
        ("GET", "/no/such/route"),
        ("POST", "/find/" + sha1),
    ]
    out = []
    for node in (share, hub):
        for method, target in targets:
            out.append((node.port, method, target))
        out.append((node.port, "GET", f"/{s}/download/data.bin|Range: bytes=3-40"))
    return out


def _send(port: int, method: str, target: str) -> bytes:
    target, _, extra = target.partition("|")
    headers = f"{extra}\r\n" if extra else ""
    request = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Connection: close\r\n\r\n"
    return raw_exchange(port, request.encode())


def test_keys_passcodes_and_paths_never_leak(procs: Procs, tmp_path: Path) -> None:
    work = tmp_path.resolve()
    share_dir = work / "share"
    (share_dir / "sub").mkdir(parents=True)
    (share_dir / "data.bin").write_bytes(CONTENT)
    (share_dir / "sub" / "small.txt").write_text("small\n")
    sha1 = hashlib.sha1(CONTENT).hexdigest()

    hub = procs.node("kbucket-hub", work / "hub", "--passcode", PASSCODE, name="secret-hub")
    share = procs.node(
        "kbucket-host",
        share_dir,
        "--parent-hub-passcode",
        PASSCODE,
        name="secret-share",
        parent=hub,
    )
    intruder = procs.node(
        "kbucket-host",
        work / "intruder",
        "--parent-hub-passcode",
        WRONG_PASSCODE,
        name="intruder",
        parent=hub,
        wait_joined=False,
    )
    for node in (hub, share, intruder):
        _check_permissions(node)

    responses: list[bytes] = []
    statuses = []
    for port, method, target in _requests(hub, share, sha1):
        response = _send(port, method, target)
        assert response, (port, method, target)
        statuses.append(status_of(response))
        responses.append(response)
    # The routes did answer (not one error for everything).
    assert statuses.count(200) >= 30, statuses
    assert 404 in statuses
    assert 400 in statuses

    # The clients, run from the work directory with relative paths.
    env = procs.env
    client_out: list[str] = []

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, cwd=work)
        client_out.extend([result.stdout, result.stderr])
        return result

    assert run(*command("kb-prv-create", "share/data.bin", "data.prv")).returncode == 0
    assert run(*command("kb-prv-create", "share", "share.prvdir")).returncode == 0
    assert run(*command("kb-prv-find", "data.prv", "--hub", hub.url, "--json")).returncode == 0
    got = run(*command("kb-prv-download", "data.prv", "out.bin", "--hub", hub.url, "--json"))
    assert got.returncode == 0, got.stderr
    assert (work / "out.bin").read_bytes() == CONTENT
    got = run(*command("kb-prv-download", "share.prvdir", "outdir", "--hub", hub.url))
    assert got.returncode == 0, got.stderr

    # The intruder was refused (one clear line) and never joined.
    intruder.proc.wait_line(r".*(passcode|refused|Refused)")
    assert not intruder.proc.has_line(r"Connected to parent hub")

    # Stop the nodes, so every console line and log is complete.
    for node in (intruder, share, hub):
        assert node.proc.stop() == 0

    keys = [line for node in (hub, share, intruder) for line in _key_body(node)]
    texts: dict[str, str] = {}
    for i, response in enumerate(responses):
        texts[f"response {i}"] = response.decode("latin-1")
    for i, text in enumerate(client_out):
        texts[f"client output {i}"] = text
    for name in ("data.prv", "share.prvdir"):
        texts[name] = (work / name).read_text()
    for proc in procs.all:
        stdout = [line for line in proc.lines if not line.startswith(FIRST_RUN_LINE)]
        texts[f"{proc.name} stdout"] = "\n".join(stdout)
        assert proc.stderr_path is not None
        texts[f"{proc.name} stderr"] = proc.stderr_path.read_text(errors="replace")
    for node in (hub, share, intruder):
        for path in (node.directory / ".kbucket").rglob("*"):
            if path.is_file() and path.suffix in (".log", ".txt"):
                texts[str(path.relative_to(work))] = path.read_text(errors="replace")

    forbidden = [*keys, PASSCODE, WRONG_PASSCODE, str(work), str(Path(str(work)).parent)]
    for name, text in texts.items():
        for bad in forbidden:
            assert bad not in text, f"{name} holds {bad[:30]!r}: ...{text[:500]}"
    # No answer carries a passcode field at all (nodeinfo, web config...).
    for response in responses:
        assert b"passcode" not in response.lower(), response[:300]
    assert json.loads((work / "data.prv").read_text())["original_path"] == "data.bin"
