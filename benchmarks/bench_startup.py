"""Benchmark: what parsing a command line with typer costs the ``kb-prv-*`` commands.

Not part of the test run. ``kbapps.cli._args.parse_plain`` parses the common
invocations without importing typer; this script measures, in one run, each command's
common invocation (the fast path) against the same work parsed by typer, so the
fast path is kept only where it pays (``docs/benchmarks.md``, "Start-up without
typer"). The typer variant of each command line asks for the same work in a form the
fast path leaves to typer: ``--`` before the arguments (``kb-prv-create``), or the
option ``--hub`` given twice with the same URL (typer keeps the last).

It creates, in a scratch directory, a tree of ``--files`` files of ``--file-size``
bytes (dated an hour back, so the hash cache keeps them) and a file of
``--download-kib`` KiB shared by a real ``kbucket-host`` on 127.0.0.1, then times
whole processes (interpreter start-up included), A B A B ... after one warm-up:

1. ``kb-prv-create TREE OUT`` with a warm hash cache (the user-visible figure of
   a re-run);
2. ``kb-prv-create FILE OUT`` (one file, cold cache);
3. ``kb-prv-find PRV --hub SHARE``;
4. ``kb-prv-download PRV OUT --hub SHARE`` (OUT removed and no content cache, so
   every run downloads).

It prints median [min-max] wall and CPU times, and per-pair ratios typer / fast.

Usage: ``python3 benchmarks/bench_startup.py [--repeats 10] [--files 20000]
[--download-kib 1024] [--dir SCRATCH] [--no-warm-up]``
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = {
    "kbucket-host": "kbapps.cli.host",
    "kb-prv-create": "kbapps.cli.prv_create",
    "kb-prv-find": "kbapps.cli.prv_find",
    "kb-prv-download": "kbapps.cli.prv_download",
}
#: Bound on the share's start-up and on any single command.
TIMEOUT = 300.0


def command(name: str, *args: str) -> list[str]:
    """The argv running console command ``name`` with this interpreter."""
    return [sys.executable, "-m", MODULES[name], *args]


@dataclass
class Timed:
    """One command line and its timings."""

    name: str
    argv: Sequence[str]
    env: dict[str, str]
    remove: list[Path] = field(default_factory=list)  # removed before each run
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)

    def run(self, record: bool) -> None:
        for path in self.remove:
            path.unlink(missing_ok=True)
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run(
            list(self.argv),
            env=self.env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=TIMEOUT,
        )
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if record:
            self.walls.append(wall)
            self.cpus.append(after.ru_utime - usage.ru_utime + after.ru_stime - usage.ru_stime)


def _median_range(values: Sequence[float], fmt: str = "{:.3f}") -> str:
    return (
        f"{fmt.format(statistics.median(values))} "
        f"[{fmt.format(min(values))}-{fmt.format(max(values))}]"
    )


def _pair(title: str, fast: Timed, typer: Timed, repeats: int, warm_up: bool) -> list[str]:
    if warm_up:
        for timed in (fast, typer):
            timed.run(record=False)  # warm-up: page cache, bytecode, hash cache
    for index in range(repeats):
        for timed in (fast, typer) if index % 2 == 0 else (typer, fast):
            timed.run(record=True)
    walls = [t / f for t, f in zip(typer.walls, fast.walls, strict=True)]
    cpus = [t / f for t, f in zip(typer.cpus, fast.cpus, strict=True) if f > 0]
    lines = [
        f"### {title}",
        "",
        "| parsed by | wall s, median [min-max] | CPU s, median [min-max] |",
        "|---|---|---|",
    ]
    for timed in (fast, typer):
        lines.append(
            f"| {timed.name} | {_median_range(timed.walls)} | {_median_range(timed.cpus)} |"
        )
    lines += [
        "",
        f"- typer / fast path, per pair: wall {_median_range(walls, '{:.2f}')}; "
        f"CPU {_median_range(cpus, '{:.2f}')}",
        "",
    ]
    return lines


def _make_tree(root: Path, files: int, size: int, per_dir: int = 500) -> None:
    noise = os.urandom(size)
    past = time.time_ns() - 3600 * 10**9  # outside the hash cache's racy window
    for i in range(files):
        folder = root / f"d{i // per_dir:03d}"
        if i % per_dir == 0:
            folder.mkdir(parents=True)
        path = folder / f"f{i:05d}.dat"
        path.write_bytes(i.to_bytes(8, "big") + noise[8:])
        os.utime(path, ns=(past, past))


def _start_share(
    directory: Path, env: dict[str, str], logs: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """Start a share of ``directory``; return it and its URL once it has indexed."""
    argv = command(
        "kbucket-host",
        str(directory),
        "--auto",
        "--scientific-research",
        "yes",
        "--confirm-share",
        "yes",
        "--port",
        "0",
        "--host",
        "127.0.0.1",
    )
    console = logs / "share.stdout"
    with console.open("wb") as out, (logs / "share.stderr").open("wb") as err:
        share = subprocess.Popen(argv, env=env, stdout=out, stderr=err)
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and share.poll() is None:
        text = console.read_text(errors="replace")
        found = re.search(r"^kbucket-share is running http on port (\d+)$", text, re.MULTILINE)
        if found and re.search(r"^Indexed \d+ files?\.$", text, re.MULTILINE):
            return share, f"http://127.0.0.1:{found.group(1)}"
        time.sleep(0.1)
    share.kill()
    share.wait(10)
    raise SystemExit(f"the share did not start; see {logs}")


def main() -> int:
    """Build the data, start the share, time the four pairs, print markdown."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--file-size", type=int, default=4096)
    parser.add_argument("--download-kib", type=int, default=1024)
    parser.add_argument("--dir", type=Path, default=None, help="scratch directory")
    parser.add_argument(
        "--no-warm-up",
        dest="warm_up",
        action="store_false",
        help="time the first run of each command too (the test suite's smoke run: "
        "its figures include compiling the bytecode and a cold hash cache)",
    )
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="kbbench-startup-", dir=args.dir))
    # The environment may set PYTHONDONTWRITEBYTECODE=1: give every process a bytecode
    # cache, so each start-up is what a user of an installed package sees.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONDONTWRITEBYTECODE", "KBUCKET_URL", "KBUCKET_DEBUG")
    }
    env["PYTHONPYCACHEPREFIX"] = str(scratch / "pycache")
    env["PYTHONPATH"] = str(ROOT)
    env["KBUCKET_CACHE_DIR"] = str(scratch / "cache")
    env["KBUCKET_CACHE_SIZE"] = "0"  # every download goes to the network
    share: subprocess.Popen[bytes] | None = None
    try:
        tree, shared = scratch / "tree", scratch / "shared"
        print(f"Creating data in {scratch} ...", file=sys.stderr)
        _make_tree(tree, args.files, args.file_size)
        shared.mkdir()
        (shared / "file.bin").write_bytes(os.urandom(args.download_kib * 1024))
        share, url = _start_share(shared, env, scratch)
        prv = scratch / "file.prv"
        subprocess.run(
            command("kb-prv-create", str(shared / "file.bin"), str(prv)),
            env=env,
            check=True,
            capture_output=True,
            timeout=TIMEOUT,
        )
        out, one = scratch / "out.bin", scratch / "one.prv"
        load = os.getloadavg()
        lines = [
            f"Machine: {os.cpu_count()} CPUs; Python {sys.version.split()[0]}; load average "
            f"at start {load[0]:.2f}; {args.repeats} interleaved pairs"
            + (" after one warm-up." if args.warm_up else ", no warm-up."),
            "",
        ]
        tree_out = str(scratch / "t.prvdir")
        lines += _pair(
            f"kb-prv-create of {args.files} files of {args.file_size} B, warm hash cache",
            Timed("fast path", command("kb-prv-create", str(tree), tree_out), env),
            Timed("typer", command("kb-prv-create", "--", str(tree), tree_out), env),
            args.repeats,
            args.warm_up,
        )
        big = str(shared / "file.bin")
        lines += _pair(
            f"kb-prv-create of one file of {args.download_kib} KiB",
            Timed("fast path", command("kb-prv-create", big, str(one)), env),
            Timed("typer", command("kb-prv-create", "--", big, str(one)), env),
            args.repeats,
            args.warm_up,
        )
        lines += _pair(
            "kb-prv-find, the share as hub",
            Timed("fast path", command("kb-prv-find", str(prv), "--hub", url), env),
            Timed("typer", command("kb-prv-find", str(prv), "--hub", url, "--hub", url), env),
            args.repeats,
            args.warm_up,
        )
        lines += _pair(
            f"kb-prv-download of a file of {args.download_kib} KiB from the share",
            Timed(
                "fast path",
                command("kb-prv-download", str(prv), str(out), "--hub", url),
                env,
                remove=[out],
            ),
            Timed(
                "typer",
                command("kb-prv-download", str(prv), str(out), "--hub", url, "--hub", url),
                env,
                remove=[out],
            ),
            args.repeats,
            args.warm_up,
        )
        print("\n".join(lines))
    finally:
        if share is not None:
            share.send_signal(signal.SIGTERM)
            try:
                share.wait(30)
            except subprocess.TimeoutExpired:
                share.kill()
                share.wait(10)
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
