"""Benchmark: a share of many small files (issue 17, "a lean share").

Not part of the test run. In one run, on one tree of ``--files`` tiny files (created
once under ``--tree`` and reused: a million files take a while, and inodes), it times
whole processes, A B A B ... for ``--repeats`` rounds:

1. ``kb-prv-create TREE OUT`` with an empty hash cache (the peer: describing the same
   tree, every file read once);
2. a real ``kbucket-host TREE`` (no ``.kbucket/`` yet) until it prints
   ``Indexed N files.``: its first index; then its RSS (``VmRSS`` in
   ``/proc/PID/status``), the figure per file, and its peak (``VmHWM``);
3. the same share stopped (SIGINT) and started again: its restart, no file changed,
   until ``Indexed N files.`` (and the RSS then), with the number of files it hashed
   (must be 0).

With ``--compare PATH`` step 2 also runs with ``PYTHONPATH=PATH`` (a checkout of the
previous code), so the RSS and times of both are measured side by side.

It prints markdown tables: median [min-max] of each, and the ratios first index /
``kb-prv-create`` and new / previous.

Before the rounds, each command runs once untimed on a 10-file tree (``--no-warm-up``
skips it): the bytecode of the standard library and the dependencies is written on
first import to the run's fresh ``PYTHONPYCACHEPREFIX``, which would otherwise be
charged to whichever timed run came first. CPU seconds (user + system, worker
processes included) are reported beside the times: on a shared machine they move far
less than the times.

Usage: ``python3 benchmarks/bench_share_scale.py [--files 200000] [--tree DIR]
[--repeats 1] [--compare PATH] [--no-warm-up]``
"""

from __future__ import annotations

import argparse
import contextlib
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
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Bound on one command or one share's start (a million files, a loaded machine).
TIMEOUT = 3600.0
PER_DIR = 1000


def command(module: str, *args: str) -> list[str]:
    """The argv running ``python -m module`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def make_tree(tree: Path, files: int) -> None:
    """Create ``files`` tiny distinct files under ``tree`` (``dNNNN/fNNNN.dat``), dated
    an hour back; reused when ``tree`` already holds them (a marker beside it)."""
    marker = tree.with_name(tree.name + f".complete-{files}")
    if marker.exists():
        return
    if tree.exists():
        shutil.rmtree(tree)
    past = time.time_ns() - 3600 * 10**9
    for i in range(files):
        folder = tree / f"d{i // PER_DIR:04d}"
        if i % PER_DIR == 0:
            folder.mkdir(parents=True)
        path = folder / f"f{i % PER_DIR:04d}.dat"
        path.write_bytes(b"kbucket tiny file %d\n" % i)
        os.utime(path, ns=(past, past))
    marker.touch()


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and of its live child processes (the
    share's hashing workers), from ``/proc``."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            pids += [int(c) for c in (task / "children").read_text().split()]
    for one in pids:
        with contextlib.suppress(OSError):
            # Fields after the command's closing parenthesis: utime, stime are 14, 15.
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def proc_status(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` of ``pid`` in bytes."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


@dataclass
class ShareRun:
    """One start of ``kbucket-host`` until it indexed."""

    seconds: float
    cpu: float
    rss: int
    hwm: int
    indexed: int
    hashed: int


def run_share(tree: Path, env: dict[str, str], logs: Path, label: str) -> ShareRun:
    """Start a share of ``tree``, wait for ``Indexed N files.``, read its memory, stop it."""
    argv = command(
        "kbapps.cli.host",
        str(tree),
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
    out_path, err_path = logs / f"{label}.stdout", logs / f"{label}.stderr"
    started = time.perf_counter()
    with out_path.open("wb") as out, err_path.open("wb") as err:
        # cwd: ``python -m`` puts it first on sys.path, before PYTHONPATH.
        share = subprocess.Popen(argv, env=env, stdout=out, stderr=err, cwd=logs)
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            text = out_path.read_text(errors="replace")
            found = re.search(r"^Indexed (\d+) files?\.$", text, re.MULTILINE)
            if found:
                seconds = time.perf_counter() - started
                cpu = cpu_seconds(share.pid)
                break
            if share.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the share did not index; see {err_path}")
            time.sleep(0.05)
        time.sleep(0.5)  # the "Hashed" line follows; the first-scan objects are freed
        status = proc_status(share.pid)
        text = out_path.read_text(errors="replace")
        hashed = re.search(r"^Hashed (\d+) files?;", text, re.MULTILINE)
        return ShareRun(
            seconds,
            cpu,
            status["VmRSS"],
            status["VmHWM"],
            int(found.group(1)),
            int(hashed.group(1)) if hashed else -1,
        )
    finally:
        share.send_signal(signal.SIGINT)
        try:
            share.wait(60)
        except subprocess.TimeoutExpired:
            share.kill()
            share.wait(10)


def prv_create(tree: Path, env: dict[str, str], scratch: Path) -> tuple[float, float]:
    """Seconds and CPU seconds (its workers included) of ``kb-prv-create TREE OUT``
    with an empty hash cache."""
    cache, out = scratch / "prv-cache", scratch / "tree.prvdir"
    shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        command("kbapps.cli.prv_create", str(tree), str(out)),
        env={**env, "KBUCKET_CACHE_DIR": str(cache)},
        cwd=scratch,
        check=True,
        capture_output=True,
        timeout=TIMEOUT,
    )
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    shutil.rmtree(out, ignore_errors=True)
    return seconds, cpu


@dataclass
class Series:
    """Figures of one kind over the rounds."""

    values: list[float] = field(default_factory=list)

    def median(self) -> float:
        return statistics.median(self.values)

    def show(self, fmt: str = "{:.1f}") -> str:
        if len(self.values) == 1:
            return fmt.format(self.values[0])
        low, high = min(self.values), max(self.values)
        return f"{fmt.format(self.median())} [{fmt.format(low)}-{fmt.format(high)}]"


def _mb(series: Series) -> Series:
    return Series([v / 1e6 for v in series.values])


def main() -> int:
    """Build (or reuse) the tree, run the rounds, print markdown."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=200_000)
    parser.add_argument("--tree", type=Path, default=None, help="the tree (kept for reuse)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--compare", type=Path, default=None, help="previous code's root")
    parser.add_argument(
        "--no-warm-up",
        action="store_true",
        help="skip the untimed first run of each command (the smoke test's tiny trees)",
    )
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="kbbench-share-"))
    tree = args.tree or scratch / "tree"
    env = {k: v for k, v in os.environ.items() if k not in ("KBUCKET_URL", "KBUCKET_DEBUG")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(scratch / "pycache")
    env["KBUCKET_CACHE_DIR"] = str(scratch / "cache")
    new_env = {**env, "PYTHONPATH": str(ROOT)}
    old_env = {**env, "PYTHONPATH": str(args.compare)} if args.compare else None
    try:
        print(f"Tree {tree} ({args.files} files) ...", file=sys.stderr)
        make_tree(tree, args.files)
        for run_env in (new_env, old_env):
            if run_env is not None:  # compile once, outside the timings
                subprocess.run(
                    [sys.executable, "-m", "compileall", "-q", run_env["PYTHONPATH"]],
                    env=run_env,
                    cwd=scratch,
                    check=False,
                    capture_output=True,
                    timeout=TIMEOUT,
                )
                # PYTHONPYCACHEPREFIX is new: the standard library and the
                # dependencies compile on their first import. One untimed run of
                # each command on a tiny tree does that here, not in the first
                # timed run (which was the new code's, by several seconds).
                if args.no_warm_up:
                    continue
                warm = scratch / "warm-up"
                make_tree(warm, 10)
                prv_create(warm, run_env, scratch)
                run_share(warm, run_env, scratch, "warm-up")
                shutil.rmtree(warm / ".kbucket", ignore_errors=True)
        load = os.getloadavg()[0]
        prv, first, restart = Series(), Series(), Series()
        prv_cpu, first_cpu, restart_cpu, old_cpu = Series(), Series(), Series(), Series()
        rss, hwm, rss_restart = Series(), Series(), Series()
        old_first, old_rss = Series(), Series()
        counts: set[tuple[int, int]] = set()
        for round_ in range(args.repeats):
            seconds, cpu = prv_create(tree, new_env, scratch)
            prv.values.append(seconds)
            prv_cpu.values.append(cpu)
            runs = [("new", new_env)] + ([("old", old_env)] if old_env else [])
            for label, run_env in runs:
                shutil.rmtree(tree / ".kbucket", ignore_errors=True)
                assert run_env is not None
                one = run_share(tree, run_env, scratch, f"{label}-first-{round_}")
                if label == "new":
                    first.values.append(one.seconds)
                    first_cpu.values.append(one.cpu)
                    rss.values.append(one.rss)
                    hwm.values.append(one.hwm)
                    again = run_share(tree, run_env, scratch, f"new-restart-{round_}")
                    restart.values.append(again.seconds)
                    restart_cpu.values.append(again.cpu)
                    rss_restart.values.append(again.rss)
                    counts.add((again.indexed, again.hashed))
                else:
                    old_first.values.append(one.seconds)
                    old_cpu.values.append(one.cpu)
                    old_rss.values.append(one.rss)
            shutil.rmtree(tree / ".kbucket", ignore_errors=True)
        n = args.files
        mb = "{:.1f}"
        lines = [
            f"Machine: {os.cpu_count()} CPUs; Python {sys.version.split()[0]}; load average"
            f" at start {load:.2f}; {args.repeats} round(s); {n} files of ~25 B.",
            "",
            "| figure | value |",
            "|---|---|",
            f"| `kb-prv-create TREE OUT`, empty hash cache (s) | {prv.show()} |",
            f"| share's first index until `Indexed {n} files.` (s) | {first.show()} |",
            f"| ratio first index / kb-prv-create | {first.median() / prv.median():.2f} |",
            f"| CPU s: kb-prv-create (its workers too) | {prv_cpu.show()} |",
            f"| CPU s: share until `Indexed` (its workers too) | {first_cpu.show()} |",
            f"| CPU ratio first index / kb-prv-create |"
            f" {first_cpu.median() / prv_cpu.median():.2f} |",
            f"| share RSS after the first index (MB) | {_mb(rss).show(mb)} |",
            f"| share RSS per file (B) | {Series([v / n for v in rss.values]).show('{:.0f}')} |",
            f"| share peak RSS, VmHWM (MB) | {_mb(hwm).show(mb)} |",
            f"| restart until `Indexed {n} files.` (s) | {restart.show()} |",
            f"| CPU s: restart until `Indexed` | {restart_cpu.show()} |",
            f"| RSS after the restart (MB) | {_mb(rss_restart).show(mb)} |",
            f"| restart: (files indexed, files hashed) | {sorted(counts)} |",
        ]
        if old_env:
            lines += [
                f"| previous code: first index (s) | {old_first.show()} |",
                f"| previous code: CPU s until `Indexed` | {old_cpu.show()} |",
                f"| CPU ratio first index new / previous | "
                f"{first_cpu.median() / old_cpu.median():.2f} |",
                f"| previous code: RSS per file (B) | "
                f"{Series([v / n for v in old_rss.values]).show('{:.0f}')} |",
                f"| ratio RSS new / previous | {rss.median() / old_rss.median():.3f} |",
                f"| ratio first index new / previous | {first.median() / old_first.median():.2f} |",
            ]
        print("\n".join(lines))
    except BaseException:
        print(f"logs kept in {scratch}", file=sys.stderr)
        raise
    shutil.rmtree(scratch, ignore_errors=True)  # the tree stays if it was --tree
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
