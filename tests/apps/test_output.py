"""kbapps.output and kbapps.cachedir: one-line errors, progress display, cache location."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kbapps.cachedir import ensure_user_cache_dir, user_cache_dir
from kbapps.output import (
    BACKEND_VARIABLE,
    Progress,
    UsageError,
    format_bytes,
    run_async,
    run_command,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _run(body: object) -> tuple[int, str]:
    stream = io.StringIO()
    code = run_command(body, stream=stream)  # type: ignore[arg-type]
    return code, stream.getvalue()


def test_run_command_maps_outcomes_to_one_line_and_an_exit_code() -> None:
    def usage() -> None:
        raise UsageError("bad\ninput", exit_code=2)

    def missing() -> None:
        raise FileNotFoundError(2, "No such file or directory", "x.dat")

    def interrupted() -> None:
        raise KeyboardInterrupt

    def bug() -> None:
        raise ValueError("oops")

    assert _run(lambda: 0) == (0, "")
    assert _run(lambda: None) == (0, "")
    assert _run(lambda: 3) == (3, "")
    assert _run(usage) == (2, "Error: bad input\n")
    assert _run(missing) == (2, "Error: x.dat: No such file or directory\n")
    assert _run(interrupted) == (130, "Interrupted.\n")
    assert _run(bug) == (70, "Error: internal error: ValueError: oops\n")


_EXIT_SCRIPT = """
import atexit, sys, threading
from kbapps.output import exit_process
atexit.register(lambda: print("atexit ran"))
sys.stdout.write("buffered, no newline")
if sys.argv[1] == "thread":
    gate = threading.Event()
    threading.Thread(target=gate.wait, args=(5,)).start()
    code = exit_process(3)
    print(f" returned {code}")
    gate.set()
    sys.exit(code)
exit_process(3)
print("not reached")
"""


def _exit_script(mode: str) -> subprocess.CompletedProcess[str]:
    root = str(Path(__file__).resolve().parents[2])
    return subprocess.run(
        [sys.executable, "-c", _EXIT_SCRIPT, mode],
        env={**os.environ, "PYTHONPATH": root},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_exit_process_flushes_runs_atexit_and_ends_with_the_code() -> None:
    done = _exit_script("plain")
    assert done.returncode == 3, done.stderr
    assert done.stdout == "buffered, no newlineatexit ran\n"


def test_exit_process_leaves_the_usual_exit_to_a_process_with_threads() -> None:
    done = _exit_script("thread")
    assert done.returncode == 3, done.stderr
    # It returned: the interpreter's exit then waited for the thread and ran atexit.
    assert done.stdout == "buffered, no newline returned 3\natexit ran\n"


def test_progress_log_mode_prints_milestones_only_after_the_delay() -> None:
    clock = FakeClock()
    stream = io.StringIO()
    with Progress(
        "Hashing", total_files=10, total_bytes=1000, stream=stream, tty=False, clock=clock
    ) as progress:
        progress.update(1, 100)  # inside the delay: silent
        assert stream.getvalue() == ""
        clock.now = 1.0
        for _ in range(9):
            progress.update(1, 100)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "Hashing: 20% (2/10 files, 200 B of 1.0 kB)"
    assert lines[-2] == "Hashing: 90% (9/10 files, 900 B of 1.0 kB)"
    assert lines[-1] == "Hashing: done (10/10 files, 1.0 kB of 1.0 kB) in 1.0 s"
    assert len(lines) == 9


def test_progress_failed_job_prints_no_done_line() -> None:
    clock = FakeClock()
    stream = io.StringIO()
    with Progress(
        "Downloading", total_files=1, total_bytes=1000, stream=stream, tty=False, clock=clock
    ) as progress:
        clock.now = 1.0
        progress.update(0, 300)
        progress.close(success=False)  # the caller saw the failure inside the block
    assert stream.getvalue() == "Downloading: 30% (0/1 file, 300 B of 1.0 kB)\n"


def test_progress_quick_job_prints_nothing() -> None:
    stream = io.StringIO()
    with Progress("Hashing", total_files=2, stream=stream, tty=False, clock=FakeClock()) as p:
        p.update(2, 0)
    assert stream.getvalue() == ""


def test_progress_terminal_mode_draws_a_rich_bar() -> None:
    clock = FakeClock()
    stream = io.StringIO()
    with Progress(
        "Hashing", total_files=4, total_bytes=4000, stream=stream, tty=True, clock=clock
    ) as progress:
        clock.now = 1.0
        progress.update(2, 2000)
        assert "2/4 files" in stream.getvalue()
        progress.update(2, 2000)  # within 0.1 s of the last draw: not drawn yet
        assert "4/4 files" not in stream.getvalue()
    text = stream.getvalue()
    assert "Hashing" in text
    assert "4/4 files" in text  # the final draw at close shows completion


def test_format_bytes() -> None:
    assert [format_bytes(n) for n in (0, 999, 1000, 1_500_000, 2 * 10**12, 5 * 10**15)] == [
        "0 B",
        "999 B",
        "1.0 kB",
        "1.5 MB",
        "2.0 TB",
        "5000.0 TB",
    ]


def test_user_cache_dir_precedence(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    assert user_cache_dir({"HOME": home}) == Path(home, ".cache", "kbucket")
    assert user_cache_dir({"HOME": home, "XDG_CACHE_HOME": "relative"}) == Path(
        home, ".cache", "kbucket"
    )
    assert user_cache_dir({"HOME": home, "XDG_CACHE_HOME": "/xdg"}) == Path("/xdg/kbucket")
    env = {"HOME": home, "XDG_CACHE_HOME": "/xdg", "KBUCKET_CACHE_DIR": str(tmp_path / "kb")}
    assert user_cache_dir(env) == tmp_path / "kb"
    made = ensure_user_cache_dir(env)
    assert made.is_dir()
    assert made.stat().st_mode & 0o777 == 0o700


def test_user_cache_dir_defaults_to_the_real_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KBUCKET_CACHE_DIR", "/some/where")
    assert user_cache_dir() == Path("/some/where")
    assert sys.stderr is not None


async def _current_backend() -> str:
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return "not asyncio"
    return "asyncio"


def test_run_async_runs_on_the_backend_the_environment_names(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(BACKEND_VARIABLE, raising=False)
    assert run_async(_current_backend) == "asyncio"
    assert capsys.readouterr().err == ""
    monkeypatch.setenv(BACKEND_VARIABLE, "trio")
    assert run_async(_current_backend) == "not asyncio"
    assert capsys.readouterr().err == "Note: running on trio ($KBUCKET_ANYIO_BACKEND)\n"
    monkeypatch.setenv(BACKEND_VARIABLE, "curio")
    with pytest.raises(UsageError, match="KBUCKET_ANYIO_BACKEND must be one of asyncio, trio"):
        run_async(_current_backend)
