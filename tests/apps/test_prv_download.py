"""``kb-prv-download`` as users run it: real processes against a stand-in network.

Exit codes 0/1/2/3 and 130, the one-line errors (and one line per failed source), the
JSON Lines events on stdout, Ctrl+C leaving a resumable ``.part``, the content cache
serving a second download with the server gone, and ``.prvdir`` downloads.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import trustme

from kbapps.cli import prv_download
from kbproto.prv import PrvDir
from tests.apps.test_download_support import (
    SLOW_PREFIX,
    FakeNetwork,
    closed_port,
    content,
    events_of,
    fake_network,
    prv_of,
    wait_for_caching,
    write_prv,
    write_prvdir,
)
from tests.e2e.procs import default_sigint

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture
def net(tmp_path: Path) -> Iterator[FakeNetwork]:
    with fake_network(tmp_path) as network:
        yield network


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A private cache directory, no hub from the caller's environment."""
    values = {k: v for k, v in os.environ.items() if k not in ("KBUCKET_URL", "KBUCKET_DEBUG")}
    values.update({"KBUCKET_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)})
    return values


def command(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "kbapps.cli.prv_download", *map(str, args)]


def kb(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(*args), env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_console_script_entry_point() -> None:
    (entry,) = entry_points(group="console_scripts", name="kb-prv-download")
    assert entry.load() is prv_download.main


def test_download_prints_json_events_and_writes_the_file(
    net: FakeNetwork, env: dict[str, str], tmp_path: Path
) -> None:
    data = content(200_000, 1)
    down = f"http://127.0.0.1:{closed_port()}/x/download/f"
    sha1 = net.add(data, [down, "good"])
    write_prv(tmp_path / "f.prv", data)
    out = tmp_path / "f.out"
    run = kb(env, tmp_path / "f.prv", out, "--hub", net.base, "--json")
    assert run.returncode == 0, run.stderr
    assert out.read_bytes() == data
    events = events_of(run.stdout)  # stdout is nothing but JSON Lines
    kinds = [e["event"] for e in events]
    assert kinds[:3] == ["source", "error", "source"]
    assert kinds[-1] == "done"
    assert events[1]["url"] == down
    assert events[-1]["from"] == "network"
    assert events[-1]["sha1"] == sha1
    assert "Traceback" not in run.stderr


def test_hub_from_the_environment(net: FakeNetwork, env: dict[str, str], tmp_path: Path) -> None:
    data = content(1000, 2)
    net.add(data, ["good"])
    write_prv(tmp_path / "f.prv", data)
    run = kb({**env, "KBUCKET_URL": net.base}, tmp_path / "f.prv", tmp_path / "out")
    assert run.returncode == 0, run.stderr
    assert "Downloaded" in run.stderr


def test_exit_1_not_found(net: FakeNetwork, env: dict[str, str], tmp_path: Path) -> None:
    write_prv(tmp_path / "f.prv", content(1000, 3))
    run = kb(env, tmp_path / "f.prv", tmp_path / "out", "--hub", net.base)
    assert run.returncode == 1
    assert run.stderr.startswith("Error: ")
    assert "no node of the network has it" in run.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("not json at all", "not JSON"),
        ('{"original_size": 3, "original_fcs": "head1000-x", "prv_version": "0.11"}', "files"),
        (
            '{"original_checksum": "abc", "original_size": 3, "original_fcs": "head1000-'
            + "a" * 40
            + '", "original_path": "x", "prv_version": "0.11"}',
            "original_checksum",
        ),
        (
            '{"original_checksum": "'
            + "a" * 40
            + '", "original_size": -1, "original_fcs": "head1000-'
            + "a" * 40
            + '", "original_path": "x", "prv_version": "0.11"}',
            "original_size",
        ),
        (
            json.dumps({"files": {"../evil": prv_of(b"x").to_json_object()}, "dirs": {}}),
            "invalid name",
        ),
    ],
)
def test_exit_2_bad_prv_names_file_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, field: str
) -> None:
    # In-process (main() is what the console script calls): these need no server.
    bad = tmp_path / "bad.prv"
    bad.write_text(text)
    assert prv_download.main([str(bad), str(tmp_path / "out")]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("Error: ")
    assert str(bad) in line
    assert field in line


@pytest.mark.parametrize(
    "args",
    [
        ("missing.prv", "out"),
        ("f.prv", "out", "--hub", "ftp://nowhere"),
        ("f.prv",),
        ("f.prv", "out", "--bogus"),
    ],
)
def test_exit_2_bad_arguments(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: tuple[str, ...],
) -> None:
    write_prv(tmp_path / "f.prv", b"abc")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KBUCKET_CACHE_DIR", str(tmp_path / "cache"))
    assert prv_download.main(list(args)) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert err.startswith("Error: ")


def test_exit_3_hub_unreachable(env: dict[str, str], tmp_path: Path) -> None:
    write_prv(tmp_path / "f.prv", content(1000, 4))
    hub = f"http://127.0.0.1:{closed_port()}"
    run = kb(env, tmp_path / "f.prv", tmp_path / "out", "--hub", hub, "--json")
    assert run.returncode == 3
    assert "cannot reach hub" in run.stderr
    (event,) = events_of(run.stdout)
    assert event["event"] == "error"
    assert event["fatal"] is True
    assert event["exit_code"] == 3


def test_exit_3_lists_every_source_one_line_each(
    net: FakeNetwork, env: dict[str, str], tmp_path: Path
) -> None:
    data = content(100_000, 5)
    net.serve_sha1 = False
    down = f"http://127.0.0.1:{closed_port()}/x/download/f"
    sha1 = net.add(data, [down, "wrong", "missing"])
    write_prv(tmp_path / "f.prv", data)
    out = tmp_path / "out"
    run = kb(env, tmp_path / "f.prv", out, "--hub", net.base)
    assert run.returncode == 3
    first, *sources = run.stderr.splitlines()
    assert first.startswith("Error: ")
    assert "no source delivered" in first
    urls = [down, net.url("wrong", sha1), net.url("missing", sha1), f"{net.base}/sha1/{sha1}"]
    assert [line.split(": ", 1)[0].strip() for line in sources] == urls
    assert "original_fcs" in sources[1]
    assert not out.exists()


def test_ctrl_c_leaves_a_resumable_part(
    net: FakeNetwork, env: dict[str, str], tmp_path: Path
) -> None:
    data = content(1_000_000, 6)
    sha1 = net.add(data, ["slow"])
    write_prv(tmp_path / "f.prv", data)
    out = tmp_path / "out"
    part = tmp_path / "out.part"
    proc = subprocess.Popen(
        command(tmp_path / "f.prv", out, "--hub", net.base),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    try:
        deadline = time.monotonic() + 60
        while not (part.exists() and part.stat().st_size == SLOW_PREFIX):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the slow source's bytes never reached OUT.part"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert f"Interrupted: kept {part} " in stderr
    assert not out.exists()
    assert part.read_bytes() == data[:SLOW_PREFIX]

    net.sources[sha1] = ["good"]
    run = kb(env, tmp_path / "f.prv", out, "--hub", net.base)
    assert run.returncode == 0, run.stderr
    assert f"Resuming {out} at " in run.stderr
    assert out.read_bytes() == data
    (good,) = net.requests("good")
    assert good.range == f"bytes={SLOW_PREFIX}-"
    assert good.body_bytes == len(data) - SLOW_PREFIX


def test_second_download_comes_from_the_cache_with_the_server_stopped(
    env: dict[str, str], tmp_path: Path
) -> None:
    data = content(300_000, 7)
    write_prv(tmp_path / "f.prv", data)
    with fake_network(tmp_path) as network:
        network.add(data, ["good"])
        hub = network.base
        first = kb(env, tmp_path / "f.prv", tmp_path / "one", "--hub", hub, "--json")
        assert first.returncode == 0, first.stderr
        assert wait_for_caching(first.stdout) == 1  # the copy runs after the command
    # Same hub URL, nothing listening there any more.
    second = kb(env, tmp_path / "f.prv", tmp_path / "two", "--hub", hub, "--json")
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "two").read_bytes() == data
    assert [e["event"] for e in events_of(second.stdout)][-1] == "done"
    assert events_of(second.stdout)[-1]["from"] == "cache"


def test_prvdir_download_and_rerun_skips_everything(
    net: FakeNetwork, env: dict[str, str], tmp_path: Path
) -> None:
    files = {"a.dat": content(3000, 8), "b.dat": content(4000, 9), "c.dat": content(10, 10)}
    prvs = {name: prv_of(data, name) for name, data in files.items()}
    for data in files.values():
        net.add(data, ["good"])
    write_prvdir(tmp_path / "d.prvdir", PrvDir(files=prvs, dirs={"sub": PrvDir(files=prvs)}))
    out = tmp_path / "out"
    run = kb(env, tmp_path / "d.prvdir", out, "--hub", net.base, "--json")
    assert run.returncode == 0, run.stderr
    for name, data in files.items():
        assert (out / name).read_bytes() == data
        assert (out / "sub" / name).read_bytes() == data
    finished = events_of(run.stdout)[-1]
    assert finished["event"] == "finished"
    assert finished["done"] == 6
    assert len(net.requests("good")) == 3

    again = kb(env, tmp_path / "d.prvdir", out, "--hub", net.base, "--json")
    assert again.returncode == 0, again.stderr
    assert events_of(again.stdout)[-1]["skipped"] == 6
    assert len(net.requests("good")) == 3  # nothing fetched the second time
    assert "skipped 6 already present" in again.stderr


def test_prvdir_partial_failure_exit_code(
    net: FakeNetwork, env: dict[str, str], tmp_path: Path
) -> None:
    ok, gone = content(2000, 11), content(2000, 12)
    net.add(ok, ["good"])
    tree = PrvDir(files={"ok.dat": prv_of(ok), "gone.dat": prv_of(gone)})
    write_prvdir(tmp_path / "d.prvdir", tree)
    run = kb(env, tmp_path / "d.prvdir", tmp_path / "out", "--hub", net.base)
    assert run.returncode == 1
    assert "gone.dat" in run.stderr
    assert (tmp_path / "out" / "ok.dat").read_bytes() == ok


def test_https_hub_and_source_verified_with_ssl_cert_file(
    env: dict[str, str], tmp_path: Path
) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    data = content(200_000, 14)
    write_prv(tmp_path / "f.prv", data)
    with fake_network(tmp_path, ssl_context=server_context) as network:
        network.add(data, ["good"])
        untrusted = kb(env, tmp_path / "f.prv", tmp_path / "o", "--hub", network.base)
        assert untrusted.returncode == 3
        assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
        trusted_env = {**env, "SSL_CERT_FILE": str(ca_file)}
        run = kb(trusted_env, tmp_path / "f.prv", tmp_path / "o", "--hub", network.base)
        assert run.returncode == 0, run.stderr
        assert network.base.startswith("https://")
        assert f"from {network.base}/good/" in run.stderr
    assert (tmp_path / "o").read_bytes() == data


def test_help_exits_0(env: dict[str, str]) -> None:
    run = subprocess.run(
        command("--help"), env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0
    assert "--hub" in run.stdout
    assert "--json" in run.stdout


def test_json_flag_in_any_position(net: FakeNetwork, env: dict[str, str], tmp_path: Path) -> None:
    data = content(1000, 13)
    net.add(data, ["good"])
    write_prv(tmp_path / "f.prv", data)
    run = kb(env, "--json", f"--hub={net.base}", tmp_path / "f.prv", tmp_path / "o")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.splitlines()[-1])["event"] == "done"


@pytest.mark.parametrize("chunks", [5, {"algorithm": "md5", "root": "00"}, {"root": "zz"}])
def test_a_malformed_chunks_field_is_one_warning_and_the_file_is_checked_whole(
    net: FakeNetwork, env: dict[str, str], tmp_path: Path, chunks: object
) -> None:
    data = content(300_000, 13)
    net.add(data, ["good"])
    write_prv(tmp_path / "f.prv", data)
    prv = json.loads((tmp_path / "f.prv").read_text())
    prv["chunks"] = chunks
    (tmp_path / "f.prv").write_text(json.dumps(prv))
    run = kb(env, tmp_path / "f.prv", tmp_path / "a.out", "--hub", net.base, "--json")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "a.out").read_bytes() == data
    warnings = [e for e in events_of(run.stdout) if e["event"] == "warning"]
    assert len(warnings) == 1
    assert warnings[0]["path"] == str(tmp_path / "f.prv")
    assert str(warnings[0]["message"]).startswith("chunks ignored (whole-file check only): ")
    run = kb(env, tmp_path / "f.prv", tmp_path / "b.out", "--hub", net.base, "--cache-size", "0")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "b.out").read_bytes() == data
    lines = [line for line in run.stderr.splitlines() if line.startswith("Warning: ")]
    assert lines == [f"Warning: {tmp_path / 'f.prv'}: {warnings[0]['message']}"]
    # A well-formed .prv warns about nothing.
    write_prv(tmp_path / "g.prv", data)
    run = kb(env, tmp_path / "g.prv", tmp_path / "c.out", "--hub", net.base, "--cache-size", "0")
    assert run.returncode == 0, run.stderr
    assert "Warning" not in run.stderr
