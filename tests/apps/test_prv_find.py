"""``kb-prv-find`` as users run it: URLs best first, ``--json``, exit codes 0/1/2/3."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from kbapps.cli import prv_find
from kbproto.prv import PrvDir
from tests.apps.test_download_support import (
    FakeNetwork,
    closed_port,
    content,
    fake_network,
    prv_of,
    write_prv,
    write_prvdir,
)

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture
def net(tmp_path: Path) -> Iterator[FakeNetwork]:
    with fake_network(tmp_path) as network:
        yield network


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    values = {k: v for k, v in os.environ.items() if k not in ("KBUCKET_URL", "KBUCKET_DEBUG")}
    values.update({"KBUCKET_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)})
    return values


def kb(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kbapps.cli.prv_find", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_console_script_entry_point() -> None:
    (entry,) = entry_points(group="console_scripts", name="kb-prv-find")
    assert entry.load() is prv_find.main


def test_prints_urls_best_first(net: FakeNetwork, env: dict[str, str], tmp_path: Path) -> None:
    data = content(5000, 1)
    direct = "http://10.1.2.3:2000/0123456789ab/download/f.dat"
    sha1 = net.add(data, [direct, "good", "cut"])
    write_prv(tmp_path / "f.prv", data)
    run = kb(env, tmp_path / "f.prv", "--hub", net.base)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [direct, net.url("good", sha1), net.url("cut", sha1)]
    assert run.stderr == ""
    (find,) = net.requests("find")
    assert find.sha1 == sha1


def test_json_prints_the_find_answer(net: FakeNetwork, env: dict[str, str], tmp_path: Path) -> None:
    data = content(5000, 2)
    sha1 = net.add(data, ["good"])
    write_prv(tmp_path / "f.prv", data)
    run = kb({**env, "KBUCKET_URL": net.base}, tmp_path / "f.prv", "--json")
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout)
    assert answer["success"] is True
    assert answer["found"] is True
    assert answer["size"] == 5000
    assert answer["urls"] == [net.url("good", sha1)]


def test_exit_1_not_found(net: FakeNetwork, env: dict[str, str], tmp_path: Path) -> None:
    write_prv(tmp_path / "f.prv", content(10, 3))
    run = kb(env, tmp_path / "f.prv", "--hub", net.base)
    assert run.returncode == 1
    assert run.stdout == ""
    assert run.stderr.startswith("Error: not found")
    as_json = kb(env, tmp_path / "f.prv", "--hub", net.base, "--json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout) == {"success": True, "found": False}


def test_exit_2_bad_input(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.prv"
    bad.write_text('{"original_checksum": 12}')
    run = kb(env, bad)
    assert run.returncode == 2
    (line,) = run.stderr.splitlines()
    assert str(bad) in line
    assert "original_checksum" in line
    write_prvdir(tmp_path / "d.prvdir", PrvDir(files={"a": prv_of(b"a")}))
    assert kb(env, tmp_path / "d.prvdir").returncode == 2
    assert kb(env, tmp_path / "missing.prv").returncode == 2
    write_prv(tmp_path / "f.prv", b"abc")
    assert kb(env, tmp_path / "f.prv", "--hub", "nonsense").returncode == 2


def test_exit_3_hub_unreachable_or_failing(
    net: FakeNetwork, env: dict[str, str], tmp_path: Path
) -> None:
    write_prv(tmp_path / "f.prv", content(10, 4))
    run = kb(env, tmp_path / "f.prv", "--hub", f"http://127.0.0.1:{closed_port()}")
    assert run.returncode == 3
    (line,) = run.stderr.splitlines()
    assert "cannot reach hub" in line
    net.find_status = 502
    run = kb(env, tmp_path / "f.prv", "--hub", net.base)
    assert run.returncode == 3
    assert "502" in run.stderr
