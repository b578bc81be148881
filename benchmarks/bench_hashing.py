"""Benchmark: ``kb-prv-create`` against openssl, sha1sum and a bare directory walk.

Not part of the test run. Creates, in a scratch directory:

* a 1 GiB file of random bytes, and
* a tree of 20,000 files of 4 KiB (40 directories of 500),

then times whole processes (interpreter start-up included), interleaved A B A B ...
so the noise of a shared machine hits every command alike, and prints median
[min-max] wall times, throughput, and per-repeat ratios:

1. ``kb-prv-create BIG BIG.prv`` (empty hash cache each time) vs ``openssl dgst -sha1
   BIG`` vs ``sha1sum BIG``;
2. ``kb-prv-create TREE T.prvdir`` (empty cache) vs ``find TREE -type f -print0 |
   xargs -0 sha1sum``;
3. ``kb-prv-create TREE T.prvdir`` with a warm hash cache vs a bare ``os.scandir`` +
   ``stat`` walk of TREE in a small Python script.

Every file is in the page cache (one warm-up run of each command first).

``--baseline PYTHON`` also times the ``kb-prv-create`` installed beside another
interpreter (say, a venv holding the code before a change) in every group, interleaved
with the rest, so a before/after comparison comes from one run on one machine state.

``--pause SECONDS`` sleeps before each timed command. On a machine others load, a run
under ``chrt -f 1`` (real-time priority: the commands get both cores, as on a quiet
machine) needs it: the kernel keeps 5 % of every second from real-time tasks, and a
command that ran into that pause would be timed with it.

Usage: ``python3 benchmarks/bench_hashing.py [--repeats 5] [--dir SCRATCH] [--keep]
[--baseline PYTHON] [--pause 0.2]``
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

WALK_SCRIPT = """\
import os, sys
stack, files = [sys.argv[1]], 0
while stack:
    with os.scandir(stack.pop()) as listing:
        for entry in listing:
            if entry.name.startswith("."):
                continue
            st = entry.stat()
            if entry.is_dir():
                stack.append(entry.path)
            else:
                files += 1
print(files)
"""


@dataclass
class Command:
    """One command line and its timings."""

    name: str
    argv: Sequence[str]
    env: dict[str, str] | None = None
    shell: bool = False
    before: list[str] = field(default_factory=list)  # dirs to empty before each run
    pause: float = 0.0  # seconds to sleep before each run (--pause)
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)

    def run(self, record: bool) -> None:
        for path in self.before:
            shutil.rmtree(path, ignore_errors=True)
        time.sleep(self.pause)
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run(
            self.argv if not self.shell else " ".join(self.argv),
            shell=self.shell,
            env=self.env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
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


def _make_big(path: Path, size: int) -> None:
    chunk = 1 << 20
    with path.open("wb") as handle:
        for _ in range(size // chunk):
            handle.write(os.urandom(chunk))


def _make_tree(root: Path, files: int, size: int, per_dir: int = 500) -> None:
    noise = os.urandom(size)
    for i in range(files):
        folder = root / f"d{i // per_dir:03d}"
        if i % per_dir == 0:
            folder.mkdir(parents=True)
        # A distinct prefix so every file has its own SHA-1.
        (folder / f"f{i:05d}.dat").write_bytes(i.to_bytes(8, "big") + noise[8:])


def _group(
    title: str,
    commands: list[Command],
    repeats: int,
    unit_bytes: int | None,
    subjects: int = 1,
    pause: float = 0.0,
) -> list[str]:
    for command in commands:
        command.pause = pause
    for command in commands:  # warm-up: page cache, and fills the hash cache if used
        command.run(record=False)
    for _ in range(repeats):
        for command in commands:
            command.run(record=True)
    lines = [
        f"### {title}",
        "",
        "| command | wall s, median [min-max] | CPU s (median) | "
        + ("MB/s (median) |" if unit_bytes else "|"),
        "|---|---|---|" + ("---|" if unit_bytes else ""),
    ]
    for command in commands:
        row = (
            f"| {command.name} | {_median_range(command.walls)} "
            f"| {statistics.median(command.cpus):.3f} |"
        )
        if unit_bytes:
            row += f" {unit_bytes / 1e6 / statistics.median(command.walls):.0f} |"
        lines.append(row)
    lines.append("")
    # The first ``subjects`` commands (kb-prv-create, and its baseline if any) are
    # compared with every command after them.
    for index, first in enumerate(commands[:subjects]):
        for other in commands[index + 1 :]:
            # Per-repeat ratios (A and B ran back to back), then their median [min-max].
            times = [a / b for a, b in zip(first.walls, other.walls, strict=True)]
            speeds = [1 / t for t in times]
            cpus = [a / b for a, b in zip(first.cpus, other.cpus, strict=True) if b > 0]
            lines.append(
                f"- time {first.name} / {other.name}: {_median_range(times, '{:.2f}')};"
                f" throughput ratio: {_median_range(speeds, '{:.2f}')}"
                + (f"; CPU ratio: {_median_range(cpus, '{:.2f}')}" if cpus else "")
            )
    lines.append("")
    return lines


def main() -> int:
    """Build the data, run the three groups, print markdown."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="scratch directory")
    parser.add_argument("--big-mib", type=int, default=1024)
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--file-size", type=int, default=4096)
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--only", choices=["big", "tree", "cached"], action="append")
    parser.add_argument(
        "--pause",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="sleep before each timed command (for runs under chrt -f)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        metavar="PYTHON",
        help="also time the kb-prv-create installed beside this interpreter",
    )
    args = parser.parse_args()

    # The console script installed beside this interpreter, not whatever is first on
    # PATH: a pyenv shim there is a bash script that costs ~0.1 s per run by itself.
    kb = str(Path(sys.executable).parent / "kb-prv-create")
    base_kb = str(args.baseline.parent / "kb-prv-create") if args.baseline else None
    for script in (kb, base_kb):
        if script is not None and not Path(script).exists():
            print(f"{script} is not installed (python3 -m pip install .)", file=sys.stderr)
            return 2
    scratch = Path(tempfile.mkdtemp(prefix="kbbench-", dir=args.dir))
    try:
        big = scratch / "big.bin"
        tree = scratch / "tree"
        walk = scratch / "walk.py"
        walk.write_text(WALK_SCRIPT)
        groups = args.only or ["big", "tree", "cached"]
        print(f"Creating data in {scratch} ...", file=sys.stderr)
        if "big" in groups:
            _make_big(big, args.big_mib << 20)
        if "tree" in groups or "cached" in groups:
            _make_tree(tree, args.files, args.file_size)
            # Files modified in the last 2 s are hashed but not cached (racy mtime
            # window, see kbapps/hashing/cache.py): let the new files age past it.
            time.sleep(2.5)

        # A pip install compiles bytecode at install time, but this machine's
        # environment sets PYTHONDONTWRITEBYTECODE=1 and the package may be an
        # editable install: without a bytecode cache every run would recompile every
        # module it imports (~0.1-0.2 s). Give Python processes a private one.
        base_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        base_env["PYTHONPYCACHEPREFIX"] = str(scratch / "pycache")

        def env_with(cache: Path) -> dict[str, str]:
            return {**base_env, "KBUCKET_CACHE_DIR": str(cache)}

        def kb_commands(
            name: str, source: Path, out: str, cache: str, empty: bool
        ) -> list[Command]:
            # kb-prv-create, then the baseline's if asked; each with a cache of its own
            # (emptied before each run if ``empty``).
            made: list[Command] = []
            for script, suffix in ((kb, ""), (base_kb, "-baseline")):
                if script is None:
                    continue
                where = scratch / f"{cache}{suffix}"
                made.append(
                    Command(
                        f"{name} (baseline)" if suffix else name,
                        [script, str(source), str(scratch / f"{suffix}{out}")],
                        env_with(where),
                        before=[str(where)] if empty else [],
                    )
                )
            return made

        nkb = 2 if base_kb is not None else 1
        out: list[str] = [
            f"Machine: {os.cpu_count()} CPUs; Python {sys.version.split()[0]}; "
            f"{args.repeats} interleaved repeats after one warm-up; page cache warm"
            + (f"; {args.pause} s pause before each command." if args.pause else "."),
            "",
        ]
        if "big" in groups:
            size = big.stat().st_size
            out += _group(
                f"One {size >> 20} MiB file",
                [
                    *kb_commands("kb-prv-create", big, "big.prv", "cache-cold", empty=True),
                    Command("openssl dgst -sha1", ["openssl", "dgst", "-sha1", str(big)]),
                    Command("sha1sum", ["sha1sum", str(big)]),
                ],
                args.repeats,
                size,
                nkb,
                args.pause,
            )
        if "tree" in groups:
            total = sum(f.stat().st_size for f in tree.rglob("*.dat"))
            out += _group(
                f"{args.files} files of {args.file_size} B (empty hash cache)",
                [
                    *kb_commands("kb-prv-create", tree, "t.prvdir", "cache-cold", empty=True),
                    Command(
                        "find \\| xargs sha1sum",
                        [
                            "find",
                            str(tree),
                            "-type",
                            "f",
                            "-print0",
                            "|",
                            "xargs",
                            "-0",
                            "sha1sum",
                            ">",
                            "/dev/null",
                        ],
                        shell=True,
                    ),
                ],
                args.repeats,
                total,
                nkb,
                args.pause,
            )
        if "cached" in groups:
            out += _group(
                f"{args.files} files, second run (warm hash cache) vs a bare walk",
                [
                    *kb_commands(
                        "kb-prv-create (cached)", tree, "t2.prvdir", "cache-warm", empty=False
                    ),
                    Command(
                        "scandir+stat walk (python3)",
                        [sys.executable, str(walk), str(tree)],
                        base_env,
                    ),
                ],
                args.repeats,
                None,
                nkb,
                args.pause,
            )
        print("\n".join(out))
    finally:
        if args.keep:
            print(f"kept {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
