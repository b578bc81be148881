"""HTTPS/WSS hubs and first-run prompts, with real processes on 127.0.0.1."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from pathlib import Path

import pytest
import trustme

from tests.e2e.procs import (
    UNREACHABLE,
    Procs,
    command,
    iter_json_lines,
    sha1_of,
    write_pattern,
)


def free_port_ending_in_443() -> int:
    """A port of the form N443 that 127.0.0.1 can bind now."""
    for thousands in range(10, 66):
        port = thousands * 1000 + 443
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.fail("no free port ending in 443")


def test_hub_on_a_443_port_serves_wss_to_a_child_and_https_to_a_client(
    procs: Procs, tmp_path: Path
) -> None:
    ca = trustme.CA()
    server_cert = ca.issue_cert("localhost", "127.0.0.1")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    hub_dir = tmp_path / "H"
    tls_dir = hub_dir / ".kbucket" / "tls"
    tls_dir.mkdir(parents=True)
    (hub_dir / ".kbucket").chmod(0o700)
    server_cert.cert_chain_pems[0].write_to_path(str(tls_dir / "cert.pem"))
    server_cert.private_key_pem.write_to_path(str(tls_dir / "key.pem"))
    env = dict(procs.env, SSL_CERT_FILE=str(ca_file))

    hub = procs.node("kbucket-hub", hub_dir, name="tls-hub", port=free_port_ending_in_443())
    assert hub.scheme == "https"
    hub.proc.wait_line(rf"Web interface: https://localhost:{hub.port}/$")

    data = write_pattern(tmp_path / "S" / "data.bin", 5 * 1024 * 1024, seed=7)
    share = procs.node(
        "kbucket-host",
        tmp_path / "S",
        "--listen-url",
        UNREACHABLE,
        name="share-behind-tls",
        parent=hub,
        env=env,
    )
    share.proc.wait_line(rf"Connecting to parent hub: https://127.0.0.1:{hub.port}$")
    hub.proc.wait_line(rf"Child share joined: share-behind-tls \({share.node_id}\)$")

    prv = tmp_path / "data.prv"
    prv.write_text(
        json.dumps(
            {
                "original_checksum": sha1_of(data),
                "original_size": len(data),
                "original_fcs": "head1000-" + sha1_of(data[:1000]),
                "original_path": "data.bin",
                "prv_version": "0.11",
            },
            indent=4,
        )
        + "\n"
    )
    out = tmp_path / "out.bin"
    done = subprocess.run(
        command("kb-prv-download", str(prv), str(out), "--hub", hub.url, "--json"),
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    finished = [e for e in iter_json_lines(done.stdout) if e["event"] == "done"]
    assert finished[0]["url"] == f"https://localhost:{hub.port}/{share.node_id}/download/data.bin"
    assert out.read_bytes() == data

    # Without the test CA, the client refuses the hub's certificate (exit 3).
    untrusting = dict(procs.env)
    untrusting.pop("SSL_CERT_FILE", None)
    untrusting["KBUCKET_CACHE_DIR"] = str(tmp_path / "other-cache")
    refused = subprocess.run(
        command("kb-prv-download", str(prv), str(tmp_path / "out2.bin"), "--hub", hub.url),
        capture_output=True,
        text=True,
        env=untrusting,
        timeout=120,
    )
    assert refused.returncode == 3, refused.stderr
    assert not (tmp_path / "out2.bin").exists()
    assert hub.proc.stop() == 0
    assert share.proc.stop() == 0


def test_https_port_without_a_certificate_is_one_clear_error(procs: Procs, tmp_path: Path) -> None:
    (tmp_path / "H").mkdir()
    done = subprocess.run(
        command(
            "kbucket-hub",
            str(tmp_path / "H"),
            "--auto",
            "--scientific-research",
            "yes",
            "--port",
            "10443",
        ),
        capture_output=True,
        text=True,
        env=procs.env,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("Error: HTTPS is on (port 10443 ends in 443)")
    assert "Traceback" not in done.stderr


def test_first_run_prompts_from_stdin_then_the_share_runs(procs: Procs, tmp_path: Path) -> None:
    share_dir = tmp_path / "my-data"
    share_dir.mkdir()
    (share_dir / "a.txt").write_text("first file\n")
    (share_dir / "b.txt").write_text("second file\n")
    answers = "\n".join(
        [
            "",  # name: the default, the directory's basename
            "yes",
            "Recordings of day 1",
            "Ada Lovelace",
            "not-an-email",  # asked again
            "ada@example.org",
            "yes",
            "",  # listen url: the default "."
            ".",  # no hub
        ]
    )
    proc = procs.start(
        "prompted",
        command("kbucket-host", str(share_dir), "--port", "0", "--host", "127.0.0.1"),
        stdin=answers + "\n",
    )
    proc.wait_line(r"Indexed 2 files\.$")
    abs_dir = str(share_dir.resolve())
    expected = [
        f"Creating new kbucket share configuration in {abs_dir}/.kbucket ...",
        "? Name for this KBucket share: [my-data]",
        "? Are you sharing this data for scientific research purposes (yes/no)?",
        "? Brief description of this KBucket share:",
        "? Owner's name (i.e., your full name):",
        "? Owner's email (i.e., your email):",
    ]
    lines = [line.rstrip() for line in proc.lines]
    assert lines[: len(expected)] == expected
    # The invalid email: one explanation, then the same question again.
    rest = lines[len(expected) :]
    assert rest[0].startswith("  ")
    assert rest[1:5] == [
        "? Owner's email (i.e., your email):",
        f"? Share all data recursively contained in the directory {abs_dir}? (yes/no)",
        "? Listen url for this share (use . for http://localhost:[port]): [.]",
        "? Connect to hub (use . for none): [.]",
    ]
    running = rest[5]
    assert running.startswith("kbucket-share is running http on port ")
    port = int(running.rsplit(" ", 1)[1])
    assert f"Web interface: http://localhost:{port}/" in rest
    assert "Starting indexing..." in rest
    assert not any(line.startswith("Connecting to parent hub") for line in rest)
    config = json.loads((share_dir / ".kbucket" / "kbnode.json").read_text())
    assert config["name"] == "my-data"
    assert config["owner_email"] == "ada@example.org"
    assert config["description"] == "Recordings of day 1"
    # Standalone, it answers finds for its own files.
    import urllib.request

    sha1 = sha1_of(b"first file\n")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/find/{sha1}", timeout=10) as r:
        answer = json.loads(r.read())
    assert answer["urls"] == [f"http://localhost:{port}/{config['node_id']}/download/a.txt"]
    # Ctrl+C: exit 0, no traceback.
    proc.signal(signal.SIGINT)
    assert proc.popen.wait(15) == 0
    assert "Traceback" not in proc.stderr()


def test_hub_prompts_from_stdin_then_the_hub_runs(procs: Procs, tmp_path: Path) -> None:
    hub_dir = tmp_path / "hub"
    hub_dir.mkdir()
    answers = ["", "yes", "A test hub", "Grace Hopper", "grace@example.org", "0", "", "."]
    proc = procs.start(
        "hub-prompted",
        command("kbucket-hub", str(hub_dir), "--host", "127.0.0.1"),
        stdin="\n".join(answers) + "\n",
    )
    proc.wait_line(r"Web interface: ")
    lines = [line.rstrip() for line in proc.lines]
    assert lines[:9] == [
        f"Creating new kbucket hub configuration in {hub_dir.resolve()}/.kbucket ...",
        "? Name for this KBucket hub: [hub]",
        "? Are you hosting this hub for scientific research purposes (yes/no)?",
        "? Brief description of this KBucket hub:",
        "? Owner's name (i.e., your full name):",
        "? Owner's email (i.e., your email):",
        "? Listen port for this hub: [3240]",
        "? Listen url for this hub (use . for http://localhost:[port]): [.]",
        "? Parent hub url (use . for none): [.]",
    ]
    assert lines[9].startswith("kbucket-hub is running http on port ")
    assert proc.stop() == 0


def test_no_to_the_research_question_exits_1_without_sharing(procs: Procs, tmp_path: Path) -> None:
    share_dir = tmp_path / "d"
    share_dir.mkdir()
    proc = procs.start(
        "said-no",
        command("kbucket-host", str(share_dir), "--port", "0", "--host", "127.0.0.1"),
        stdin="\nno\n",
    )
    assert proc.popen.wait(30) == 1
    proc.wait_line(r"\? Are you sharing this data")
    assert not proc.has_line(r"kbucket-share is running")
    assert "Traceback" not in proc.stderr()


def test_wrong_passcode_is_one_refusal_line_and_the_share_keeps_serving(
    procs: Procs, tmp_path: Path
) -> None:
    hub = procs.node("kbucket-hub", tmp_path / "H", "--passcode", "open-sesame", name="locked")
    (tmp_path / "S").mkdir()
    (tmp_path / "S" / "x.txt").write_text("x\n")
    share = procs.node(
        "kbucket-host",
        tmp_path / "S",
        "--parent-hub-passcode",
        "wrong",
        name="intruder",
        parent=hub,
        wait_joined=False,
    )
    m = share.proc.wait_line(r"Parent hub refused this node: (.+)$")
    assert "passcode" in m.group(1)
    assert not share.proc.has_line(r"Lost the parent hub")
    assert not share.proc.has_line(r"Connected to parent hub")
    assert not hub.proc.has_line(r"Child share joined")
    # Refused, it still serves its own files.
    import urllib.request

    with urllib.request.urlopen(f"{share.url}/{share.node_id}/download/x.txt", timeout=10) as r:
        assert r.read() == b"x\n"
    assert share.proc.stop() == 0
    # With the right passcode (saved from the option), it joins.
    again = procs.node(
        "kbucket-host",
        tmp_path / "S",
        "--parent-hub-passcode",
        "open-sesame",
        name="intruder",
        parent=hub,
    )
    hub.proc.wait_line(rf"Child share joined: intruder \({again.node_id}\)$")
