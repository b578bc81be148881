"""The test suite cleans up after itself: a passing test's files do not stay behind
(the whole suite writes gigabytes of shares, downloads and caches)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import LONGEST_FIRST

ROOT = Path(__file__).resolve().parent.parent

_TESTS = """
def test_passes(tmp_path):
    (tmp_path / "big.bin").write_bytes(b"x" * 1_000_000)

def test_fails(tmp_path):
    (tmp_path / "evidence.txt").write_text("look at me")
    assert False
"""


def test_only_failed_tests_keep_their_tmp_path(tmp_path: Path) -> None:
    (tmp_path / "test_sample.py").write_text(_TESTS)
    base = tmp_path / "basetemp"
    # The project's own pytest configuration, without its coverage options.
    argv = [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml")]
    argv += ["--rootdir", str(tmp_path), "-o", "addopts=", "-p", "no:cacheprovider"]
    argv += ["--basetemp", str(base), "-q", str(tmp_path / "test_sample.py")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert "1 failed, 1 passed" in done.stdout, done.stdout + done.stderr
    kept = sorted(p.name for p in base.rglob("*") if p.is_file())
    assert kept == ["evidence.txt"]


def _shim(folder: Path, name: str, log: Path) -> None:
    script = folder / name
    script.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\n')
    script.chmod(0o755)


def test_setup_script_says_what_it_installs(tmp_path: Path) -> None:
    # Stand-ins for python3, apt-get and sudo record their calls: the script's own
    # logic runs for real, nothing is installed.
    shims, log = tmp_path / "bin", tmp_path / "calls.log"
    shims.mkdir()
    for name in ("python3", "apt-get", "sudo"):
        _shim(shims, name, log)
    # Only these tools are on PATH, so chromium, wrk and openssl count as missing here.
    for tool in ("bash", "dirname", "id", "env"):
        found = next(p for p in (Path("/usr/bin") / tool, Path("/bin") / tool) if p.exists())
        (shims / tool).symlink_to(found)
    env = {"PATH": str(shims), "HOME": str(tmp_path)}
    done = subprocess.run(
        ["/bin/bash", str(ROOT / "scripts" / "setup-tests.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    said = done.stdout.splitlines()
    assert any("installing kbucket" in line and "pytest" in line for line in said), said
    assert any("chromium" in line and "installing" in line for line in said), said
    assert any("wrk" in line and "installing" in line for line in said), said
    assert said[-1] == "setup-tests: done"
    calls = log.read_text()
    assert "python3 -m pip install" in calls
    assert "-e .[test]" in calls
    assert "apt-get install" in calls
    # (nginx counts as present where /usr/sbin/nginx exists: sbin is not on every PATH)
    assert "chromium" in calls
    assert "wrk openssl" in calls


def test_no_merge_conflict_markers_are_committed() -> None:
    # A marker inside a docstring or a Markdown file breaks nothing a linter sees.
    listed = subprocess.run(
        ["git", "ls-files", "-z"], capture_output=True, cwd=ROOT, timeout=60, check=True
    ).stdout.split(b"\0")
    marked = []
    for name in filter(None, listed):
        path = ROOT / os.fsdecode(name)
        if not path.is_file() or path.suffix in {".png", ".gz", ".sqlite"}:
            continue
        for line in path.read_bytes().splitlines():
            if line.startswith((b"<<<<<<< ", b">>>>>>> ")) or line == b"=======":
                marked.append(str(path.relative_to(ROOT)))
                break
    assert marked == []


def test_every_module_the_workers_get_first_exists() -> None:
    # tests/conftest.py hands these to the xdist workers first; a module renamed or
    # removed would silently leave a long one to start last again.
    missing = [name for name in LONGEST_FIRST if not (ROOT / name).is_file()]
    assert missing == []
