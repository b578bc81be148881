"""What a new user meets in the first hour (issue 16), with real processes on 127.0.0.1:
the web page's line, one node per directory, nothing written before the user agreed."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.procs import UNREACHABLE, Procs, command


def test_web_interface_line_opens_the_page_when_the_listen_url_is_unreachable(
    procs: Procs, tmp_path: Path
) -> None:
    (tmp_path / "S").mkdir()
    (tmp_path / "S" / "x.txt").write_text("x\n")
    share = procs.node("kbucket-host", tmp_path / "S", "--listen-url", UNREACHABLE)
    web = share.proc.wait_line(r"Web interface: (\S+)$").group(1)
    assert web == f"http://127.0.0.1:{share.port}/"
    with urllib.request.urlopen(web, timeout=10) as response:
        assert response.status == 200
        assert b"<html" in response.read().lower()
    advertised = share.proc.wait_line(r"Advertised URL: (\S+) ").group(1)
    assert advertised == f"{UNREACHABLE}/"


@pytest.mark.parametrize("kind", ["kbucket-host", "kbucket-hub"])
def test_a_second_node_on_the_same_directory_refuses_at_once(
    procs: Procs, tmp_path: Path, kind: str
) -> None:
    first = procs.node(kind, tmp_path / "N", name="first")
    web = first.proc.wait_line(r"Web interface: (\S+)$").group(1)
    argv = ["--auto", "--port", "0", "--host", "127.0.0.1"]
    second = procs.start("second", command(kind, str(tmp_path / "N"), *argv))
    assert second.popen.wait(30) == 2
    error = second.stderr().strip()
    assert len(error.splitlines()) == 1, error
    assert f"{kind} (pid {first.proc.popen.pid}, web interface {web})" in error
    assert "Traceback" not in error
    assert not second.lines  # nothing asked, nothing served
    # The running node is untouched and keeps serving.
    assert first.proc.popen.poll() is None
    with urllib.request.urlopen(f"{first.url}/{first.node_id}/api/nodeinfo", timeout=10) as r:
        assert json.loads(r.read())["info"]["name"] == "first"
    # Once it stopped (even killed), the directory is free again.
    first.proc.popen.kill()
    first.proc.popen.wait(10)
    again = procs.node(kind, tmp_path / "N", name="again")
    assert again.node_id == first.node_id


@pytest.mark.parametrize(
    ("argv", "stdin"),
    [
        (["--auto", "--scientific-research", "no", "--confirm-share", "yes"], None),
        (["--auto", "--scientific-research", "yes", "--confirm-share", "no"], None),
        ([], "\nno\n"),  # answered at the prompt
        ([], "\nyes\n\n\n\nno\n"),  # the share question, at the prompt
        ([], "\nyes\n"),  # input ends while asking
    ],
)
def test_declining_or_stopping_a_first_run_writes_nothing(
    procs: Procs, tmp_path: Path, argv: list[str], stdin: str | None
) -> None:
    share_dir = tmp_path / "d"
    share_dir.mkdir()
    (share_dir / "data.txt").write_text("data\n")
    proc = procs.start(
        "declined", command("kbucket-host", str(share_dir), *argv, "--port", "0"), stdin=stdin
    )
    assert proc.popen.wait(30) in (1, 2)
    assert "Traceback" not in proc.stderr()
    assert sorted(os.listdir(share_dir)) == ["data.txt"]


def test_a_share_says_once_that_its_hub_is_down_and_rejoins_within_seconds_of_its_return(
    procs: Procs, tmp_path: Path
) -> None:
    hub = procs.node("kbucket-hub", tmp_path / "H", name="hub")
    (tmp_path / "S").mkdir()
    (tmp_path / "S" / "x.txt").write_text("x\n")
    # Default timers (no --heartbeat-timeout): what a user gets.
    argv = ["--auto", "--name", "S", "--scientific-research", "yes", "--confirm-share", "yes"]
    argv += ["--port", "0", "--host", "127.0.0.1", "--parent-hub", hub.url]
    share = procs.start("S", command("kbucket-host", str(tmp_path / "S"), *argv))
    share.wait_line(r"Connected to parent hub: hub$")
    lost_at = len(share.lines)
    hub.proc.popen.kill()
    hub.proc.popen.wait(10)
    share.wait_line(r"Lost the parent hub: ", start=lost_at)
    # The first three redials wait at most 1 + 2 + 4 s: by now the backoff is at its
    # cap, and a cap over 7 s (the old one was 60 s) shows in the wait below.
    time.sleep(10)
    during = share.lines[lost_at:]
    assert len([line for line in during if "parent hub" in line]) <= 3, during
    restarted = procs.node("kbucket-hub", tmp_path / "H", name="hub", port=hub.port)
    back = time.monotonic()
    share.wait_line(r"Connected to parent hub: hub$", start=lost_at)
    assert time.monotonic() - back < 7.0
    restarted.proc.wait_line(r"Child share joined: S ")
