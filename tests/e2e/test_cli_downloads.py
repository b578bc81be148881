"""``kb-prv-download`` as a user at a terminal meets it (issue 16, items 2, 3 and 10),
with real processes against the tests' own slow HTTP source (``FakeSource``), and a
real pseudo-terminal where the item is about one:

* Ctrl+C says what was kept and that the same command resumes; the next run says
  it resumes and where, and its progress (bar, events) starts there, for a ``.prv``
  and a ``.prvdir``;
* ``--json`` on an 80-column terminal: every JSON line whole, no progress drawn;
* an OUT whose name is 255 bytes long downloads, and resumes.

Everything listens on 127.0.0.1; every process is stopped and every wait bounded.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from kbapps.output import format_bytes
from kbproto.prv import PrvDir, serialize_prv, serialize_prvdir
from tests.e2e.procs import command, default_sigint, wait_for, write_pattern
from tests.e2e.terminal import Terminal, lines_of
from tests.hostile.client_net import FakeSource, Served, fake_source, prv_of

__all__ = ("fake_source",)  # the fixture the tests below use

#: Bound on a whole download run.
RUN_TIMEOUT = 120.0
#: Where a ``.prvdir`` download keeps its partial files.
PARTIAL = ".kbucket-partial"


def _env(tmp_path: Path) -> dict[str, str]:
    """A client with a cache of its own and no hub from the caller's environment."""
    values = {k: v for k, v in os.environ.items() if k not in ("KBUCKET_URL", "KBUCKET_DEBUG")}
    values["KBUCKET_CACHE_DIR"] = str(tmp_path / "cache")
    values["KBUCKET_CACHE_SIZE"] = "0"  # every run goes to the network
    return values


def _slow(data: bytes) -> Served:
    """A slow but steady source: 4 KiB every 50 ms (about 80 kB/s)."""
    return Served(data, step=4096, interval=0.05)


def _whole(data: bytes) -> Served:
    """A source that sends the whole (ranged) body at once."""
    return Served(data, fast=len(data))


def _serve(source: FakeSource, mode: str, served: Served) -> str:
    """Serve ``served`` as ``mode`` and make it the only source the fake hub names."""
    url = source.add(mode, served)
    source.urls[url.rsplit("/", 1)[-1]] = [url]
    return url


def _interrupt(argv: list[str], env: dict[str, str], ready: Callable[[], bool]) -> tuple[int, str]:
    """Run ``argv``, send SIGINT (Ctrl+C) once ``ready()`` holds; exit code and stderr."""
    proc = subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    try:
        wait_for(lambda: ready() or proc.poll() is not None, 60, "bytes on disk")
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=RUN_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    return proc.returncode, stderr


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _download(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command("kb-prv-download", *map(str, args)),
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


def test_ctrl_c_says_what_was_kept_and_the_next_run_resumes_from_there(
    fake_source: FakeSource, tmp_path: Path
) -> None:
    env = _env(tmp_path)
    data = write_pattern(tmp_path / "src" / "data.bin", 200_000, 1)
    sha1 = _serve(fake_source, "slow", _slow(data)).rsplit("/", 1)[-1]
    (tmp_path / "data.prv").write_bytes(serialize_prv(prv_of(data, "data.bin")))
    out, part = tmp_path / "out.bin", tmp_path / "out.bin.part"
    argv = command("kb-prv-download", str(tmp_path / "data.prv"), str(out))
    argv += ["--hub", fake_source.base]

    code, stderr = _interrupt(argv, env, lambda: _size(part) >= 40_000)
    assert code == 130
    assert "Traceback" not in stderr
    kept = part.stat().st_size
    assert 40_000 <= kept < len(data)
    assert stderr.splitlines()[-1] == (
        f"Interrupted: kept {part} ({format_bytes(kept)} of {format_bytes(len(data))}); "
        "run the same command again to resume"
    )
    assert not out.exists()

    # The same command again, on a terminal: it says it resumes, and its bar starts
    # where the last run stopped (a slow source, so the bar is drawn).
    with Terminal([*argv], env) as terminal:
        terminal.wait_for(rb"Downloaded ")
        assert terminal.wait() == 0
        screen = terminal.output
    text = "\n".join(lines_of(screen))
    assert f"Resuming {out} at {format_bytes(kept)} of {format_bytes(len(data))}, from {part}" in (
        text
    )
    drawn = re.findall(rb"(\d+\.\d)/200\.0 kB", screen)
    assert drawn, screen
    assert float(drawn[0]) * 1000 >= kept - 100  # the first bar drawn: at least what was kept
    assert out.read_bytes() == data
    assert not part.exists()
    ranged = [rng for path, rng in fake_source.log if path.endswith(sha1) and rng]
    assert ranged[-1] == f"bytes={kept}-"


def test_ctrl_c_of_a_prvdir_keeps_its_partial_files_and_the_next_run_counts_them_first(
    fake_source: FakeSource, tmp_path: Path
) -> None:
    env = _env(tmp_path)
    files = {
        f"f{i}.bin": write_pattern(tmp_path / "src" / f"f{i}.bin", 150_000, 10 + i)
        for i in range(6)
    }
    # Two files come at once and are in place before the Ctrl+C; four come slowly.
    for number, data in enumerate(files.values()):
        if number < 2:
            _serve(fake_source, "whole", _whole(data))
        else:
            _serve(fake_source, "slow", _slow(data))
    tree = PrvDir(files={name: prv_of(data, name) for name, data in files.items()})
    (tmp_path / "d.prvdir").write_bytes(serialize_prvdir(tree))
    out = tmp_path / "out"
    partial = out / PARTIAL
    argv = command("kb-prv-download", str(tmp_path / "d.prvdir"), str(out))
    argv += ["--hub", fake_source.base]

    def parts() -> list[Path]:
        return sorted(partial.glob("*.part")) if partial.is_dir() else []

    def ready() -> bool:
        in_place = sum(1 for name in list(files)[:2] if (out / name).exists())
        return in_place == 2 and sum(1 for p in parts() if _size(p) >= 20_000) >= 2

    code, stderr = _interrupt(argv, env, ready)
    assert code == 130
    assert "Traceback" not in stderr
    kept = [p for p in parts() if _size(p)]
    assert len(kept) >= 2
    sizes = sorted(_size(p) for p in kept)
    total = sum(sizes)
    assert stderr.splitlines()[-1] == (
        f"Interrupted: 2 of 6 files in place, {len(kept)} partial files "
        f"({format_bytes(total)}) kept in {partial}; run the same command again to resume"
    )

    for data in files.values():  # the sources are fast now
        _serve(fake_source, "whole", _whole(data))
    again = _download(env, tmp_path / "d.prvdir", out, "--hub", fake_source.base, "--json")
    assert again.returncode == 0, again.stderr
    events = [json.loads(line) for line in again.stdout.splitlines()]
    progress = [e for e in events if e["event"] == "progress"]
    # Before any byte arrives, the progress counts every byte the last run kept:
    # the two files in place and the partial files.
    assert (progress[0]["files"], progress[0]["bytes"]) == (2, 2 * 150_000 + total)
    resumed = [e for e in events if e["event"] == "resume"]
    assert sorted(e["offset"] for e in resumed) == sizes
    for event in resumed:
        assert f"Resuming {event['path']} at {format_bytes(event['offset'])} of " in again.stderr
    for name, data in files.items():
        assert (out / name).read_bytes() == data
    assert not partial.exists()


def test_json_on_a_terminal_is_whole_lines_and_no_progress(
    fake_source: FakeSource, tmp_path: Path
) -> None:
    env = _env(tmp_path)
    data = write_pattern(tmp_path / "src" / "data.bin", 200_000, 2)
    url = _serve(fake_source, "slow", _slow(data))
    (tmp_path / "data.prv").write_bytes(serialize_prv(prv_of(data, "data.bin")))
    # A long OUT path: every event naming it is longer than the terminal is wide.
    out = tmp_path / ("a-long-directory-name-" * 4) / "out.bin"
    out.parent.mkdir()
    argv = command("kb-prv-download", str(tmp_path / "data.prv"), str(out))
    with Terminal([*argv, "--hub", fake_source.base, "--json"], env, columns=80) as terminal:
        assert terminal.wait() == 0, terminal.output
        screen = terminal.output
    assert b"\x1b" not in screen  # no progress bar drawn, no cursor moved
    assert b"Downloading" not in screen
    lines = [line for line in lines_of(screen) if line]
    events = [json.loads(line) for line in lines if line.startswith("{")]
    human = [line for line in lines if not line.startswith("{")]
    assert human == [f"Downloaded {out} (200.0 kB) from {url}"]
    assert len(events) + len(human) == len(lines)  # nothing else, no piece of a line
    assert max(len(line) for line in lines) > 80
    kinds = [event["event"] for event in events]
    assert kinds[0] == "source"
    assert kinds[-1] == "done"
    assert "progress" in kinds  # the progress is in the events, not drawn
    assert out.read_bytes() == data


def test_an_out_name_of_255_bytes_downloads_and_resumes(
    fake_source: FakeSource, tmp_path: Path
) -> None:
    env = _env(tmp_path)
    data = write_pattern(tmp_path / "src" / "data.bin", 200_000, 3)
    _serve(fake_source, "slow", _slow(data))
    (tmp_path / "data.prv").write_bytes(serialize_prv(prv_of(data, "data.bin")))
    name = "é" * 100 + "x" * 51 + ".bin"  # 255 bytes in UTF-8
    assert len(name.encode()) == 255
    out = tmp_path / "long" / name
    out.parent.mkdir()
    argv = command("kb-prv-download", str(tmp_path / "data.prv"), str(out))
    argv += ["--hub", fake_source.base]

    def partial() -> list[Path]:
        return [p for p in out.parent.iterdir() if p.name.endswith(".part")]

    code, stderr = _interrupt(argv, env, lambda: any(_size(p) >= 40_000 for p in partial()))
    assert code == 130, stderr
    (part,) = partial()
    assert len(part.name.encode()) <= 255
    assert part.name.startswith("é" * 50)  # still recognisable
    assert (part.parent / (part.name + ".json")).exists()  # its sidecar fits too
    kept = part.stat().st_size
    assert f"Interrupted: kept {part} ({format_bytes(kept)} of " in stderr

    _serve(fake_source, "whole", _whole(data))
    again = _download(env, *argv[3:])
    assert again.returncode == 0, again.stderr
    assert f"Resuming {out} at {format_bytes(kept)} of 200.0 kB, from {part}" in again.stderr
    assert out.read_bytes() == data
    assert sorted(p.name for p in out.parent.iterdir()) == [name]


def test_kb_prv_create_writes_an_out_name_of_255_bytes(tmp_path: Path) -> None:
    env = _env(tmp_path)
    (tmp_path / "data.bin").write_bytes(b"some data\n")
    out = tmp_path / ("y" * 251 + ".prv")
    done = subprocess.run(
        command("kb-prv-create", str(tmp_path / "data.bin"), str(out)),
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())["original_path"] == "data.bin"
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".prv") == [out.name]
