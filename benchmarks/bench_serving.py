"""Serving and the HTTP client: a 1 GiB file over loopback (not part of the test run).

Servers (all single-process, 127.0.0.1, taken in turn in each round):
  ours    the share file server (kbapps.share router on kbtransport.serve_http)
  nginx   nginx with sendfile on, one worker (temp config; needs the nginx binary:
          ``apt-get install -y nginx-light``, or pass ``--install-nginx``)
  pyhttp  ``python -m http.server``
Fetched by ``curl -s -o /dev/null``; per download we record wall time and the server's
CPU time (utime+stime from /proc). Then our HTTP client downloads the same file from our
server, writing it and hashing it with SHA-1 as ``kb-prv-download`` will, next to
``curl -o FILE``.

With ``--upload-rate BYTES`` our server with that upload rate limit (a rate above what
loopback carries measures what pacing the file out in ``sendfile`` slices costs) is one
more server, ``ours limited``. With ``--also-code DIR`` the share file server of the
code in DIR (e.g. a checkout of an older commit) is one more server in the same rounds,
``ours@DIR``.

Usage: python benchmarks/bench_serving.py [--rounds 5] [--size-mib 1024] [--dir /tmp/x]
       [--upload-rate BYTES] [--also-code DIR]
Prints median [min-max] tables in Markdown.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _peers import NGINX_CONF, cpu_seconds, fmt, free_port, wait_port

NODE = "0123456789ab"
ROOT = Path(__file__).resolve().parent.parent

SERVER_CODE = """
import sys, anyio
from kbtransport import ListenConfig, ServerConfig, serve_http
from kbapps.share import ShareDir, build_share_router

async def main() -> None:
    router = build_share_router(ShareDir(sys.argv[1]), sys.argv[2])
    config = None
    if len(sys.argv) > 3:  # an upload rate limit (bytes per second)
        from kbtransport.ratelimit import UploadLimiter
        config = ServerConfig(upload_limit=UploadLimiter(int(sys.argv[3])))
    listen = ListenConfig(host="127.0.0.1", port=0)
    async with anyio.create_task_group() as tg:
        bound = await tg.start(serve_http, router.app, listen, config)
        print(bound.port, flush=True)

anyio.run(main)
"""

CLIENT_CODE = """
import hashlib, sys, time, anyio
from kbtransport import HttpClient, ClientConfig

async def main() -> None:
    url, out, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    start = time.perf_counter()
    digest = hashlib.sha1()
    total = 0
    async with HttpClient(ClientConfig(raw_sockets=mode != "anyio")) as client:
        async with client.stream("GET", url) as response:
            assert response.status == 200, response.status
            if out == "-":
                async for chunk in response.iter_bytes():
                    total += len(chunk)
            elif mode == "thread":
                # Hash and write in a worker thread while the loop receives the next
                # chunks (hashlib and file writes release the GIL on large buffers).
                send, receive = anyio.create_memory_object_stream[bytes](8)
                with open(out, "wb") as f:

                    def consume(chunk: bytes) -> None:
                        digest.update(chunk)
                        f.write(chunk)

                    async def writer() -> None:
                        async with receive:
                            async for chunk in receive:
                                await anyio.to_thread.run_sync(consume, chunk)

                    async with anyio.create_task_group() as tg:
                        tg.start_soon(writer)
                        async with send:
                            async for chunk in response.iter_bytes():
                                total += len(chunk)
                                await send.send(chunk)
            else:
                with open(out, "wb") as f:
                    async for chunk in response.iter_bytes():
                        digest.update(chunk)
                        f.write(chunk)
                        total += len(chunk)
    print(total, time.perf_counter() - start, digest.hexdigest(), flush=True)

anyio.run(main)
"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--install-nginx", action="store_true")
    parser.add_argument("--upload-rate", type=int, default=None)
    parser.add_argument(
        "--also-code",
        type=Path,
        action="append",
        default=[],
        help="also serve with the code in this directory (repeatable)",
    )
    args = parser.parse_args()

    if shutil.which("nginx") is None and args.install_nginx:
        subprocess.run(["apt-get", "install", "-y", "-q", "nginx-light"], check=True)
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )

    work = args.dir or Path(tempfile.mkdtemp(prefix="kbbench-"))
    share = work / "share"
    share.mkdir(parents=True, exist_ok=True)
    # nginx workers run as an unprivileged user: they must be able to read the share.
    work.chmod(0o755)
    share.chmod(0o755)
    big = share / "big.bin"
    size = args.size_mib * 1024 * 1024
    if not big.exists() or big.stat().st_size != size:
        block = os.urandom(1 << 20)
        with big.open("wb") as f:
            for i in range(args.size_mib):
                f.write(block[i % 4096 :] + block[: i % 4096])
    expected = hashlib.sha1()
    with big.open("rb") as f:
        while chunk := f.read(1 << 20):
            expected.update(chunk)
    expected_sha1 = expected.hexdigest()

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs: dict[str, subprocess.Popen[str]] = {}
    urls: dict[str, str] = {}
    try:
        ours = subprocess.Popen(
            [sys.executable, "-c", SERVER_CODE, str(share), NODE],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert ours.stdout is not None
        port = int(ours.stdout.readline())
        procs["ours"] = ours
        urls["ours"] = f"http://127.0.0.1:{port}/{NODE}/download/big.bin"
        if args.upload_rate is not None:
            limited = subprocess.Popen(
                [sys.executable, "-c", SERVER_CODE, str(share), NODE, str(args.upload_rate)],
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
            assert limited.stdout is not None
            procs["ours limited"] = limited
            port = int(limited.stdout.readline())
            urls["ours limited"] = f"http://127.0.0.1:{port}/{NODE}/download/big.bin"
        for code in args.also_code:
            other = subprocess.Popen(
                [sys.executable, "-c", SERVER_CODE, str(share), NODE],
                stdout=subprocess.PIPE,
                text=True,
                env=dict(env, PYTHONPATH=str(code.resolve())),
            )
            assert other.stdout is not None
            name = f"ours@{code}"
            procs[name] = other
            urls[name] = f"http://127.0.0.1:{int(other.stdout.readline())}/{NODE}/download/big.bin"
        if nginx:
            ndir = work / "nginx"
            (ndir / "tmp").mkdir(parents=True, exist_ok=True)
            nport = free_port()
            conf = ndir / "nginx.conf"
            conf.write_text(NGINX_CONF.format(dir=ndir, port=nport, root=share))
            procs["nginx"] = subprocess.Popen([nginx, "-p", str(ndir), "-c", str(conf)], text=True)
            wait_port(nport)
            urls["nginx"] = f"http://127.0.0.1:{nport}/big.bin"
        pport = free_port()
        procs["pyhttp"] = subprocess.Popen(
            [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(pport)],
            cwd=share,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        wait_port(pport)
        urls["pyhttp"] = f"http://127.0.0.1:{pport}/big.bin"

        def nginx_cpu() -> float:
            # The worker does the sending: count the master and its workers.
            pids = [procs["nginx"].pid]
            out = subprocess.run(
                ["pgrep", "-P", str(procs["nginx"].pid)], capture_output=True, text=True
            ).stdout
            pids += [int(p) for p in out.split()]
            return sum(cpu_seconds(p) for p in pids)

        def cpu_of(name: str) -> float:
            return nginx_cpu() if name == "nginx" else cpu_seconds(procs[name].pid)

        names = list(urls)
        walls: dict[str, list[float]] = {n: [] for n in names}
        cpus: dict[str, list[float]] = {n: [] for n in names}
        for round_no in range(args.rounds + 1):  # round 0 warms up
            for name in names:
                before = cpu_of(name)
                start = time.perf_counter()
                result = subprocess.run(
                    ["curl", "-s", "-o", "/dev/null", "-w", "%{size_download}", urls[name]],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                wall = time.perf_counter() - start
                cpu = cpu_of(name) - before
                assert int(result.stdout) == size, (name, result.stdout)
                if round_no:
                    walls[name].append(wall)
                    cpus[name].append(cpu)
        gib = size / (1 << 30)
        print(f"\n### curl fetching a {args.size_mib} MiB file ({args.rounds} rounds)\n")
        print("| server | MB/s | wall s | server CPU s per GiB | ratio to nginx (wall) |")
        print("|---|---|---|---|---|")
        for name in names:
            mbps = [size / 1e6 / w for w in walls[name]]
            per_gib = [c / gib for c in cpus[name]]
            ratio = ""
            if "nginx" in walls:
                ratios = [n / w for n, w in zip(walls["nginx"], walls[name], strict=True)]
                ratio = fmt(ratios, 2)
            print(f"| {name} | {fmt(mbps)} | {fmt(walls[name], 3)} | {fmt(per_gib, 2)} | {ratio} |")

        # Our client against curl -o, both writing the file; ours hashes too.
        out = work / "out.bin"
        kinds = {
            "curl -o FILE": None,
            "HttpClient -> FILE + SHA-1 (raw socket)": "raw",
            "HttpClient -> FILE + SHA-1 (anyio stream)": "anyio",
            "HttpClient -> FILE + SHA-1 in a worker thread (raw socket)": "thread",
            "HttpClient, discard (raw socket)": "raw-discard",
            "HttpClient, discard (anyio stream)": "anyio-discard",
        }
        cwalls: dict[str, list[float]] = {k: [] for k in kinds}
        inproc: dict[str, list[float]] = {k: [] for k in kinds}
        for round_no in range(args.rounds + 1):
            for label, mode in kinds.items():
                if out.exists():
                    out.unlink()
                start = time.perf_counter()
                if mode is None:
                    subprocess.run(["curl", "-s", "-o", str(out), urls["ours"]], check=True)
                    wall = time.perf_counter() - start
                    internal = wall
                else:
                    target = "-" if mode.endswith("discard") else str(out)
                    result = subprocess.run(
                        [
                            sys.executable,
                            "-c",
                            CLIENT_CODE,
                            urls["ours"],
                            target,
                            mode.split("-")[0],
                        ],
                        capture_output=True,
                        text=True,
                        check=True,
                        env=env,
                    )
                    wall = time.perf_counter() - start
                    total, seconds, digest = result.stdout.split()
                    assert int(total) == size
                    if target != "-":
                        assert digest == expected_sha1, "client hashed the wrong bytes"
                    internal = float(seconds)
                if round_no:
                    cwalls[label].append(wall)
                    inproc[label].append(internal)
        print(f"\n### Downloading the {args.size_mib} MiB file from our server\n")
        print("| client | MB/s (in-process) | wall s (process) | ratio to curl -o (wall) |")
        print("|---|---|---|---|")
        for label in kinds:
            mbps = [size / 1e6 / s for s in inproc[label]]
            ratios = [c / w for c, w in zip(cwalls["curl -o FILE"], cwalls[label], strict=True)]
            print(f"| {label} | {fmt(mbps)} | {fmt(cwalls[label], 3)} | {fmt(ratios, 2)} |")
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM if proc is not procs.get("nginx") else signal.SIGQUIT)
        for proc in procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
