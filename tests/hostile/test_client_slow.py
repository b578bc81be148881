"""A slow source never holds a download forever (issue 11, class 11).

The attacker's hub (``FakeSource``) lists a source that sends its first 100 kB, then
one byte every 0.2 s (or its headers one byte every 0.2 s): under the read timeout,
but far under any real link. With a 2 s window (``$KBUCKET_SPEED_WINDOW``) and the
default 1 KiB/s minimum, ``kb-prv-download`` drops it after the window, says why in
its error list and its ``--json`` events, and the next source continues from the
bytes already on disk: a slow but real link (50 kB/s, the attacker's too), or the real
``kbucket-host``, delivers the exact bytes. ``--min-speed``/``--speed-window`` set the
same deadline; a hub trickling its find answer is given up after one window.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.hostile.client_net import (
    ClientNet,
    FakeSource,
    Served,
    client_net,
    fake_source,
    run_download,
)

__all__ = ("client_net", "fake_source")  # fixtures used by the tests below

#: A window short enough for a test, with the default minimum speed.
WINDOW = "2"
#: Longer than any honest run of these tests, far shorter than the trickle would take.
LIMIT = 40.0


def events(run: subprocess.CompletedProcess[str]) -> list[dict[str, object]]:
    """The ``--json`` events of ``run``."""
    return [json.loads(line) for line in run.stdout.splitlines()]


def download_within_limit(
    env: dict[str, str], *args: str | Path
) -> subprocess.CompletedProcess[str]:
    """Run ``kb-prv-download``; fail the test if it is still running after ``LIMIT`` s."""
    try:
        return run_download(env, *args, timeout=LIMIT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"kb-prv-download still waiting on a trickling source after {LIMIT} s")


def test_a_trickling_source_is_dropped_and_a_slow_but_real_one_finishes(
    client_net: ClientNet, fake_source: FakeSource, tmp_path: Path
) -> None:
    data = client_net.data["tree/sub/z.bin"]  # 300 kB
    sha1 = client_net.sha1("tree/sub/z.bin")
    trickle = fake_source.add("trickle", Served(data, fast=100_000, interval=0.2))
    # 5 kB every 0.1 s (50 kB/s): slow, but a real link.
    slow = fake_source.add("slow", Served(data, interval=0.1, step=5_000))
    fake_source.urls[sha1] = [trickle, slow, client_net.download_url("tree/sub/z.bin")]
    client_net.write_prv(tmp_path / "z.prv", "tree/sub/z.bin")
    env = client_net.env(tmp_path / "cache", KBUCKET_SPEED_WINDOW=WINDOW)
    out = tmp_path / "z.bin"
    run = download_within_limit(env, tmp_path / "z.prv", out, "--hub", fake_source.base, "--json")
    assert run.returncode == 0, run.stderr
    assert out.read_bytes() == data
    seen = events(run)
    (dropped,) = [e for e in seen if e["event"] == "error"]
    assert dropped["url"] == trickle
    assert str(dropped["message"]).startswith("too slow: ")
    sources = [(e["url"], e["offset"]) for e in seen if e["event"] == "source"]
    assert sources[0] == (trickle, 0)
    assert sources[1][0] == slow
    assert isinstance(sources[1][1], int)
    assert sources[1][1] >= 100_000  # the trickled bytes stayed on disk
    assert [e["url"] for e in seen if e["event"] == "done"] == [slow]
    assert [r for r in fake_source.log if r[0].startswith("/blob/slow/")] == [
        (f"/blob/slow/{sha1}", f"bytes={sources[1][1]}-")
    ]


def test_a_source_trickling_its_headers_is_dropped_and_the_real_share_finishes(
    client_net: ClientNet, fake_source: FakeSource, tmp_path: Path
) -> None:
    data = client_net.data["big.bin"]
    sha1 = client_net.sha1("big.bin")
    trickle = fake_source.add("trickle-head", Served(data, interval=0.2))
    share = client_net.download_url("big.bin")
    fake_source.urls[sha1] = [trickle, share]
    client_net.write_prv(tmp_path / "b.prv", "big.bin")
    env = client_net.env(tmp_path / "cache", KBUCKET_SPEED_WINDOW=WINDOW)
    out = tmp_path / "big.bin"
    run = download_within_limit(env, tmp_path / "b.prv", out, "--hub", fake_source.base)
    assert run.returncode == 0, run.stderr
    assert out.read_bytes() == data
    assert f"from {share}" in run.stderr


def test_the_options_set_the_deadline_and_the_error_list_says_why(
    client_net: ClientNet, fake_source: FakeSource, tmp_path: Path
) -> None:
    data = client_net.data["small.csv"]
    sha1 = client_net.sha1("small.csv")
    trickle = fake_source.add("trickle", Served(data, fast=500, interval=0.2))
    fake_source.urls[sha1] = [trickle]
    client_net.write_prv(tmp_path / "s.prv", "small.csv")
    env = client_net.env(tmp_path / "cache")
    out = tmp_path / "s.csv"
    run = download_within_limit(
        env,
        *(tmp_path / "s.prv", out, "--hub", fake_source.base),
        *("--speed-window", "1.5", "--min-speed", "2K"),
    )
    assert run.returncode == 3, run.stderr
    lines = run.stderr.strip().splitlines()
    errors = [i for i, line in enumerate(lines) if line.startswith("Error: ")]
    first, *sources = lines[errors[0] :]  # after the progress milestones
    assert "no source delivered" in first
    assert sources[0].strip().startswith(f"{trickle}: too slow: ")
    assert "(--min-speed 2048 B/s over --speed-window 1.5 s)" in sources[0]
    assert not out.exists()
    assert (tmp_path / "s.csv.part").stat().st_size >= 500  # kept for a later resume


def test_a_hub_trickling_its_find_answer_is_given_up(
    client_net: ClientNet, fake_source: FakeSource, tmp_path: Path
) -> None:
    sha1 = client_net.sha1("small.csv")
    fake_source.urls[sha1] = [client_net.download_url("small.csv")]
    fake_source.find_interval = 0.2
    client_net.write_prv(tmp_path / "s.prv", "small.csv")
    env = client_net.env(tmp_path / "cache", KBUCKET_SPEED_WINDOW=WINDOW)
    out = tmp_path / "s.csv"
    run = download_within_limit(env, tmp_path / "s.prv", out, "--hub", fake_source.base)
    assert run.returncode == 3, run.stderr
    assert f"hub {fake_source.base} did not answer the find within 2 s" in run.stderr
