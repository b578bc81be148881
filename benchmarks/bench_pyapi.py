"""Python API benchmark: the remote file object against ``kb-prv-download`` and fsspec's HTTP.

Not part of the test run. A ``kbucket-hub`` and a ``kbucket-host`` share on 127.0.0.1
(real processes, bounded waits, all stopped at the end) and one big file. In ONE run,
interleaved (one of each variant per round, after a warm-up round), median [min-max]
and ratios from the same rounds:

(a) Sequential read of the whole file through ``kbapps.api.open_file`` (8 MiB reads,
    verified: the head against ``original_fcs``, the whole against the SHA-1) next to
    ``kb-prv-download kbucket://ID/big.bin OUT`` (whole process: find, fetch, hash,
    write). Target: file object >= 0.7x the command's throughput.
(b) ``--reads`` random 64 KiB reads (the same offsets for both) through
    ``kbapps.api.open_file`` next to fsspec's own HTTP file system (``aiohttp``) on the
    share's download URL, each with its default block cache. Target: >= 1.0x reads/s.

Usage: python benchmarks/bench_pyapi.py [--rounds 3] [--size-mib 1024] [--reads 200]
Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _peers import fmt, free_port, wait_port

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kbapps import api  # noqa: E402
from kbapps.download import ClientError  # noqa: E402

BIG = "big.bin"
READ = 8 << 20
RANDOM_READ = 64 << 10


def node(
    kind: str, directory: Path, name: str, port: int, parent: str, env: dict[str, str], logs: Path
) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable,
        "-m",
        f"kbapps.cli.{kind}",
        str(directory),
        "--auto",
        "--name",
        name,
        "--scientific-research",
        "yes",
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--parent-hub",
        parent,
    ]
    if kind == "host":
        argv += ["--confirm-share", "yes"]
    out = (logs / f"{name}.out").open("wb")
    return subprocess.Popen(
        argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
    )


def wait_found(hub: str, uri: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if api.find(uri, hub=hub).found:
                return
        except ClientError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{uri} not found at {hub} within {timeout} s")


def read_sequential(uri: str, hub: str, size: int) -> float:
    start = time.perf_counter()
    total = 0
    with api.open_file(uri, hub=hub) as f:
        while chunk := f.read(READ):
            total += len(chunk)
        assert f.remote.reader.verifier.fully_verified
    assert total == size
    return time.perf_counter() - start


def download(uri: str, hub: str, out: Path, env: dict[str, str]) -> float:
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "kbapps.cli.prv_download",
            uri,
            str(out),
            "--hub",
            hub,
            "--cache-size",
            "0",
        ],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=600,
    )
    took = time.perf_counter() - start
    out.unlink()
    return took


def random_reads(opener: Callable[[], Any], offsets: list[int]) -> float:
    start = time.perf_counter()
    with opener() as f:
        for offset in offsets:
            f.seek(offset)
            assert len(f.read(RANDOM_READ)) == RANDOM_READ
    return len(offsets) / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--reads", type=int, default=200)
    args = parser.parse_args()
    import fsspec

    work = Path(tempfile.mkdtemp(prefix="kbbench-pyapi-"))
    logs = work / "logs"
    logs.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "KBUCKET_URL"}
    env["PYTHONPATH"] = str(ROOT)
    env["KBUCKET_CACHE_DIR"] = str(work / "user-cache")
    os.environ["KBUCKET_CACHE_DIR"] = env["KBUCKET_CACHE_DIR"]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        size = args.size_mib << 20
        share = work / "share"
        share.mkdir()
        block = os.urandom(1 << 20)
        with (share / BIG).open("wb") as f:
            for i in range(args.size_mib):
                f.write(block[i % 4096 :] + block[: i % 4096])
        hub_port, share_port = free_port(), free_port()
        hub = f"http://127.0.0.1:{hub_port}"
        (work / "hub").mkdir()
        procs.append(node("hub", work / "hub", "bench-hub", hub_port, ".", env, logs))
        wait_port(hub_port)
        procs.append(node("host", share, "bench-share", share_port, hub, env, logs))
        wait_port(share_port)
        import json

        deadline = time.monotonic() + 60
        while not (share / ".kbucket" / "kbnode.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        node_id = json.loads((share / ".kbucket" / "kbnode.json").read_text())["node_id"]
        uri = f"kbucket://{node_id}/{BIG}"
        wait_found(hub, uri)
        http_url = f"http://127.0.0.1:{share_port}/{node_id}/download/{BIG}"
        rng = random.Random(14)
        offsets = [rng.randrange(0, size - RANDOM_READ) for _ in range(args.reads)]
        http_fs = fsspec.filesystem("http")

        seq: dict[str, list[float]] = {"file object": [], "kb-prv-download": []}
        rand: dict[str, list[float]] = {"kbapps.api": [], "fsspec http": []}
        for round_ in range(args.rounds + 1):
            read_s = read_sequential(uri, hub, size)
            down_s = download(uri, hub, work / "out.bin", env)
            ours = random_reads(lambda: api.open_file(uri, hub=hub), offsets)
            theirs = random_reads(lambda: http_fs.open(http_url, "rb"), offsets)
            if round_ == 0:
                continue  # warm-up
            seq["file object"].append(size / read_s / 2**20)
            seq["kb-prv-download"].append(size / down_s / 2**20)
            rand["kbapps.api"].append(ours)
            rand["fsspec http"].append(theirs)

        load = os.getloadavg()
        print(f"Machine: {os.cpu_count()} CPUs; load average {load[0]:.2f}; {args.rounds} rounds\n")
        print(f"## (a) Sequential read of {args.size_mib} MiB (MiB/s)\n")
        print("| variant | MiB/s |\n|---|---|")
        for name, values in seq.items():
            print(f"| {name} | {fmt(values)} |")
        ratios = [a / b for a, b in zip(seq["file object"], seq["kb-prv-download"], strict=True)]
        print(
            "\nfile object / kb-prv-download throughput ratio: "
            f"{statistics.median(ratios):.2f}x (target >= 0.7x)\n"
        )
        print(f"## (b) Random {RANDOM_READ >> 10} KiB reads ({args.reads} per round, reads/s)\n")
        print("| variant | reads/s |\n|---|---|")
        for name, values in rand.items():
            print(f"| {name} | {fmt(values)} |")
        ratios = [a / b for a, b in zip(rand["kbapps.api"], rand["fsspec http"], strict=True)]
        print(
            "\nkbapps.api / fsspec http reads/s ratio: "
            f"{statistics.median(ratios):.2f}x (target >= 1.0x)"
        )
    finally:
        for popen in procs:
            if popen.poll() is None:
                popen.send_signal(signal.SIGTERM)
        for popen in procs:
            try:
                popen.wait(15)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
