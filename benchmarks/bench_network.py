"""Network benchmark: share serving, downloads direct and proxied, finds at a hub.

Not part of the test run. Everything runs on 127.0.0.1 with real processes
(``kbucket-host``, ``kbucket-hub``, ``kb-prv-download``), every wait is bounded, and
every process started here is stopped at the end (SIGTERM, bounded wait, SIGKILL).

In ONE run, with interleaved repeats (one of each variant per round, after a warm-up
round), median [min-max] and ratios computed from the same round:

(i)   curl fetching a 1 GiB file from a ``kbucket-host`` share, from nginx (sendfile,
      one worker; installed with ``apt-get install -y nginx-light`` if missing) and from
      ``python -m http.server``. Target: share >= 0.9x nginx throughput.
(ii)  ``kb-prv-download`` (find, SHA-1 verify, write; whole process) straight from the
      share, next to ``curl -o`` of the same URL. Target >= 0.2x curl.
(iii) ``kb-prv-download`` through one hub from a share whose own listen URL is
      unreachable (``--listen-url http://127.0.0.1:9``). Target >= 0.5x (ii).
(v)   ``curl`` of ``<hub>/sha1/SHA1`` (checked against its SHA-1 while it streams)
      next to ``<hub>/ID/download/PATH`` (not checked) from a share whose listen URL is
      unreachable, with the hub's CPU per GiB; with ``--also-code DIR`` the same through
      another hub and share running the code in DIR (e.g. an older checkout), in the
      same rounds. ``--only sha1`` runs this part alone.
(iv)  ``GET /find/SHA1`` at that hub, which holds the index of ``--find-shares`` real
      shares x ``--files-per-share`` files (default 10 x 3,000 = 30,000 entries, i.e.
      10,000 shares x 3 files), measured with ``wrk --latency`` (1, 16, 64 connections,
      rotating through 1,000 known SHA-1s) next to a bare h11+anyio server answering a
      constant JSON. Targets: finds/s >= 0.8x bare, p50 < 1 ms at one connection.
      With ``--pinned`` and ``--also-code``, then also every hub at once on one CPU,
      each under its own wrk, printing the ratio of their requests (the inverse ratio
      of their CPU per find, robust to other load on the machine).

Usage: python benchmarks/bench_network.py [--rounds 3] [--size-mib 1024]
       [--wrk-seconds 5] [--wrk-repeats 3] [--dir DIR]
Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _peers import (
    NGINX_CONF,
    cpu_seconds,
    fmt,
    free_port,
    print_machine,
    process_env,
    wait_port,
)

ROOT = Path(__file__).resolve().parent.parent
UNREACHABLE = "http://127.0.0.1:9"
BIG = "big.bin"

# The bare reference for (iv): h11 on anyio (asyncio backend, like our nodes), keep-alive,
# one constant JSON body of the same shape and about the same size as a find answer.
BARE_SERVER = r"""
import sys, anyio, h11

BODY = (b'{"success":true,"found":true,"size":1024,"urls":["http://127.0.0.1:9/'
        + b"0" * 12 + b'/download/d000/f00000.dat"],"results":[{"kbshare_id":"'
        + b"0" * 12 + b'","size":1024,"path":"d000/f00000.dat"}]}')
HEADERS = [("content-type", "application/json"), ("content-length", str(len(BODY)))]

async def handle(stream):
    conn = h11.Connection(h11.SERVER)
    async with stream:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = await stream.receive(65536)
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                continue
            if isinstance(event, h11.EndOfMessage):
                out = conn.send(h11.Response(status_code=200, headers=HEADERS))
                out += conn.send(h11.Data(data=BODY)) + conn.send(h11.EndOfMessage())
                try:
                    await stream.send(out)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    return
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
                continue
            return  # ConnectionClosed or anything else: done with this connection

async def main():
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    print(listener.extra(anyio.abc.SocketAttribute.local_port), flush=True)
    await listener.serve(handle)

anyio.run(main)
"""

# wrk: rotate through the paths in PATHS (one per line), one per request.
WRK_LUA = """
local paths = {}
for line in io.lines("%s") do paths[#paths + 1] = line end
local i = 0
request = function()
  i = i %% #paths + 1
  return wrk.format("GET", paths[i])
end
"""

MODULES = {
    "kbucket-host": "kbapps.cli.host",
    "kbucket-hub": "kbapps.cli.hub",
    "kb-prv-download": "kbapps.cli.prv_download",
}


def command(name: str, *args: str) -> list[str]:
    return [sys.executable, "-m", MODULES[name], *args]


def wait_gone(pid: int, timeout: float) -> None:
    """Wait until process ``pid`` (not our child) has ended, at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                if handle.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return
        except FileNotFoundError:
            return
        time.sleep(0.02)
    raise RuntimeError(f"process {pid} still running after {timeout} s")


class Procs:
    """Started processes; ``close`` stops every one of them."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.all: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self, name: str, argv: list[str], env: dict[str, str], cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        out = (self.logs / f"{name}.out").open("wb")
        err = (self.logs / f"{name}.err").open("wb")
        popen = subprocess.Popen(
            argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=cwd
        )
        self.all.append((name, popen))
        return popen

    def wait_line(self, name: str, pattern: str, timeout: float = 120.0) -> re.Match[str]:
        regex = re.compile(pattern, re.MULTILINE)
        path = self.logs / f"{name}.out"
        popen = dict(self.all)[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = regex.search(path.read_text(errors="replace"))
            if m:
                return m
            if popen.poll() is not None:
                break
            time.sleep(0.1)
        err = (self.logs / f"{name}.err").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{name}: no line {pattern!r} (exit {popen.poll()}); stderr: {err}")

    def close(self) -> None:
        for name, popen in reversed(self.all):
            if popen.poll() is None:
                popen.send_signal(signal.SIGQUIT if name == "nginx" else signal.SIGTERM)
        for _, popen in reversed(self.all):
            try:
                popen.wait(15)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait(10)


def node_args(name: str, port: int, listen_url: str, parent: str) -> list[str]:
    return [
        "--auto",
        "--name",
        name,
        "--scientific-research",
        "yes",
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--listen-url",
        listen_url,
        "--parent-hub",
        parent,
    ]


def proxy_only(code: Path) -> list[str]:
    """``kbucket-hub`` options that make a hub of ``code`` proxy every download: its relay
    cache (issue 12) would otherwise answer every round after the first from disk, and
    the proxied figures would measure the cache (``bench_relay_cache.py`` does that)."""
    return ["--cache-size", "0"] if (code / "kbtransport" / "relaycache.py").exists() else []


def make_big(path: Path, size_mib: int) -> str:
    if not path.exists() or path.stat().st_size != size_mib << 20:
        block = os.urandom(1 << 20)
        with path.open("wb") as f:
            for i in range(size_mib):
                f.write(block[i % 4096 :] + block[: i % 4096])
    digest = hashlib.sha1()
    with path.open("rb") as f:
        while chunk := f.read(1 << 16):
            digest.update(chunk)
    return digest.hexdigest()


def make_small_share(directory: Path, index: int, files: int) -> list[str]:
    """``files`` distinct 1 KiB files in folders of 500; their SHA-1s."""
    sha1s = []
    for j in range(files):
        sub = directory / f"d{j // 500:03d}"
        if j % 500 == 0:
            sub.mkdir(parents=True, exist_ok=True)
        data = (f"kbucket benchmark share {index} file {j}\n".encode() * 40)[:1024]
        (sub / f"f{j:05d}.dat").write_bytes(data)
        sha1s.append(hashlib.sha1(data).hexdigest())
    return sha1s


def parse_wrk(text: str) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) from ``wrk --latency`` output."""

    def ms(value: str) -> float:
        m = re.fullmatch(r"([\d.]+)(us|ms|s)", value)
        if not m:
            raise ValueError(value)
        scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
        return float(m.group(1)) * scale

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    p50 = ms(re.search(r"^\s+50%\s+(\S+)", text, re.MULTILINE).group(1))  # type: ignore[union-attr]
    p99 = ms(re.search(r"^\s+99%\s+(\S+)", text, re.MULTILINE).group(1))  # type: ignore[union-attr]
    if "Non-2xx" in text or "Socket errors" in text:
        raise RuntimeError(f"wrk saw errors:\n{text}")
    return rps, p50, p99


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--find-shares", type=int, default=10)
    parser.add_argument("--files-per-share", type=int, default=3000)
    parser.add_argument("--wrk-seconds", type=int, default=5)
    parser.add_argument("--wrk-repeats", type=int, default=3)
    parser.add_argument(
        "--find-conns",
        type=int,
        action="append",
        default=[],
        help="(iv): wrk connection counts (repeatable; default 1, 16 and 64)",
    )
    parser.add_argument("--only", choices=["downloads", "finds", "sha1"], default=None)
    parser.add_argument(
        "--pinned",
        action="store_true",
        help="(iv) with --also-code: also measure the hubs side by side, all pinned to one"
        " CPU, each under its own wrk pinned to another (robust to other load)",
    )
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument(
        "--also-code",
        type=Path,
        action="append",
        default=[],
        help="(iv), (v): also measure a hub and shares running the code in this directory"
        " (repeatable; e.g. a checkout of an older commit)",
    )
    args = parser.parse_args()

    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        subprocess.run(["apt-get", "install", "-y", "-q", "nginx-light"], check=True)
    if shutil.which("wrk") is None:
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"

    work = args.dir or Path(tempfile.mkdtemp(prefix="kbbench-net-"))
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)  # nginx workers run unprivileged and must read the share
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    env = process_env(work, ROOT)
    print_machine()
    procs = Procs(logs)
    try:
        downloads = args.only in (None, "downloads")
        finds = args.only in (None, "finds")
        sha1_route = args.only in (None, "sha1")
        hub_port = free_port()
        hub_url = f"http://127.0.0.1:{hub_port}"
        (work / "hub").mkdir(exist_ok=True)
        procs.start(
            "hub",
            command(
                "kbucket-hub",
                str(work / "hub"),
                *node_args("bench-hub", hub_port, hub_url, "."),
                *proxy_only(ROOT),
            ),
            env,
        )
        procs.wait_line("hub", r"kbucket-hub is running http on port")

        if downloads:
            share = work / "share"
            share.mkdir(exist_ok=True)
            share.chmod(0o755)
            print("Writing and hashing the big file ...", file=sys.stderr, flush=True)
            big_sha1 = make_big(share / BIG, args.size_mib)
            size = args.size_mib << 20
            # The firewalled share holds the same content (a hard link: same page cache).
            hidden = work / "hidden"
            hidden.mkdir(exist_ok=True)
            if not (hidden / BIG).exists():
                os.link(share / BIG, hidden / BIG)
            share_port = free_port()
            share_url = f"http://127.0.0.1:{share_port}"
            procs.start(
                "share",
                command(
                    "kbucket-host",
                    str(share),
                    *node_args("bench-share", share_port, share_url, "."),
                    "--confirm-share",
                    "yes",
                ),
                env,
            )
            procs.start(
                "hidden",
                command(
                    "kbucket-host",
                    str(hidden),
                    *node_args("bench-hidden", free_port(), UNREACHABLE, hub_url),
                    "--confirm-share",
                    "yes",
                ),
                env,
            )
            for name in ("share", "hidden"):
                procs.wait_line(name, r"^Indexed \d+ files?\.$", timeout=300)
            procs.wait_line("hidden", r"^Connected to parent hub: ")
            share_id = json.loads((share / ".kbucket" / "kbnode.json").read_text())["node_id"]
            prv = work / "big.prv"
            with urllib.request.urlopen(f"{share_url}/{share_id}/prv/{BIG}", timeout=30) as r:
                prv.write_bytes(r.read())
            assert json.loads(prv.read_bytes())["original_checksum"] == big_sha1

            ndir = work / "nginx"
            (ndir / "tmp").mkdir(parents=True, exist_ok=True)
            nport = free_port()
            (ndir / "nginx.conf").write_text(NGINX_CONF.format(dir=ndir, port=nport, root=share))
            procs.start("nginx", [nginx, "-p", str(ndir), "-c", str(ndir / "nginx.conf")], env)
            pport = free_port()
            procs.start(
                "pyhttp",
                [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(pport)],
                env,
                cwd=share,
            )
            wait_port(nport)
            wait_port(pport)
            pids = {name: p.pid for name, p in procs.all}

            def cpu_of(name: str) -> float:
                pid = pids[name]
                if name != "nginx":
                    return cpu_seconds(pid)
                kids = subprocess.run(
                    ["pgrep", "-P", str(pid)], capture_output=True, text=True
                ).stdout
                return sum(cpu_seconds(p) for p in [pid, *map(int, kids.split())])

            fetch = {
                "share (kbucket-host)": ("share", f"{share_url}/{share_id}/download/{BIG}"),
                "nginx": ("nginx", f"http://127.0.0.1:{nport}/{BIG}"),
                "python -m http.server": ("pyhttp", f"http://127.0.0.1:{pport}/{BIG}"),
            }
            out = work / "out.bin"
            cache = work / "dl-cache"

            def clean() -> None:
                for p in (out, out.with_name(out.name + ".part")):
                    p.unlink(missing_ok=True)
                shutil.rmtree(cache, ignore_errors=True)

            def kb_download(hub: str, check: bool) -> float:
                clean()
                start = time.perf_counter()
                done = subprocess.run(
                    command("kb-prv-download", str(prv), str(out), "--hub", hub, "--json"),
                    capture_output=True,
                    text=True,
                    env={**env, "KBUCKET_CACHE_DIR": str(cache)},
                    timeout=600,
                )
                wall = time.perf_counter() - start
                if done.returncode != 0 or out.stat().st_size != size:
                    raise RuntimeError(
                        f"kb-prv-download via {hub}: {done.returncode} {done.stderr[-2000:]}"
                    )
                events = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
                # The copy into the content cache runs after the command, in a process
                # of its own: let it end before the next measurement (and before the
                # next clean(), which it would otherwise race).
                for pid in [e["pid"] for e in events if e.get("event") == "caching"]:
                    wait_gone(pid, timeout=120)
                if check:
                    assert make_big(out, args.size_mib) == big_sha1
                    urls = [e["url"] for e in events if e.get("event") == "source"]
                    print(
                        f"  sources via {hub}: {urls}",
                        file=sys.stderr,
                    )
                return wall

            walls: dict[str, list[float]] = {k: [] for k in fetch}
            cpus: dict[str, list[float]] = {k: [] for k in fetch}
            dl: dict[str, list[float]] = {"curl -o": [], "direct": [], "proxied": []}
            hub_cpu: list[float] = []
            hidden_cpu: list[float] = []
            for round_no in range(args.rounds + 1):  # round 0 warms up (and checks bytes)
                print(f"download round {round_no}", file=sys.stderr, flush=True)
                for label, (name, url) in fetch.items():
                    before = cpu_of(name)
                    start = time.perf_counter()
                    got = subprocess.run(
                        ["curl", "-s", "-o", "/dev/null", "-w", "%{size_download}", url],
                        capture_output=True,
                        text=True,
                        check=True,
                        timeout=300,
                    )
                    wall = time.perf_counter() - start
                    assert int(got.stdout) == size, (label, got.stdout)
                    if round_no:
                        walls[label].append(wall)
                        cpus[label].append(cpu_of(name) - before)
                clean()
                start = time.perf_counter()
                subprocess.run(
                    ["curl", "-s", "-o", str(out), fetch["share (kbucket-host)"][1]],
                    check=True,
                    timeout=300,
                )
                curl_o = time.perf_counter() - start
                direct = kb_download(share_url, check=round_no == 0)
                h0, s0 = cpu_of("hub"), cpu_of("hidden")
                proxied = kb_download(hub_url, check=round_no == 0)
                if round_no:
                    dl["curl -o"].append(curl_o)
                    dl["direct"].append(direct)
                    dl["proxied"].append(proxied)
                    hub_cpu.append(cpu_of("hub") - h0)
                    hidden_cpu.append(cpu_of("hidden") - s0)
            clean()

            mb = size / 1e6
            gib = size / (1 << 30)
            print(f"\n### (i) curl -o /dev/null, {args.size_mib} MiB file, {args.rounds} rounds\n")
            print("| server | MB/s | wall s | server CPU s per GiB | throughput ratio to nginx |")
            print("|---|---|---|---|---|")
            for label in fetch:
                ratio = [n / w for n, w in zip(walls["nginx"], walls[label], strict=True)]
                print(
                    f"| {label} | {fmt([mb / w for w in walls[label]])} | {fmt(walls[label], 3)} "
                    f"| {fmt([c / gib for c in cpus[label]], 2)} | {fmt(ratio, 2)} |"
                )
            print(
                f"\n### (ii)/(iii) writing the {args.size_mib} MiB file (whole process), "
                f"{args.rounds} rounds\n"
            )
            print("| client | MB/s | wall s | ratio | target |")
            print("|---|---|---|---|---|")
            r_direct = [c / d for c, d in zip(dl["curl -o"], dl["direct"], strict=True)]
            r_proxy = [d / p for d, p in zip(dl["direct"], dl["proxied"], strict=True)]
            print(
                f"| curl -o OUT (from the share) | {fmt([mb / w for w in dl['curl -o']])} "
                f"| {fmt(dl['curl -o'], 3)} | 1 | |"
            )
            print(
                f"| kb-prv-download, direct from the share | {fmt([mb / w for w in dl['direct']])} "
                f"| {fmt(dl['direct'], 3)} | {fmt(r_direct, 2)} x curl -o | >= 0.2 |"
            )
            print(
                "| kb-prv-download through one hub (share unreachable) "
                f"| {fmt([mb / w for w in dl['proxied']])} "
                f"| {fmt(dl['proxied'], 3)} | {fmt(r_proxy, 2)} x direct | >= 0.5 |"
            )
            print(
                "\nDuring the proxied downloads: "
                f"hub CPU {fmt([c / gib for c in hub_cpu], 2)} s per GiB, "
                f"hidden share CPU {fmt([c / gib for c in hidden_cpu], 2)} s per GiB."
            )

        if sha1_route:
            proxied_sha1(args, work, env, procs)
        if finds:
            find_hub_finds(args, work, env, procs, hub_url, logs)
    finally:
        procs.close()
        load_after = os.getloadavg()
        print(
            "\nLoad average at the end: "
            f"{load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}"
        )
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def proxied_sha1(args: argparse.Namespace, work: Path, env: dict[str, str], procs: Procs) -> None:
    """(v): ``/sha1/SHA1`` (checked) and ``/ID/download/PATH`` (not) through one hub."""
    codes = {"this code": ROOT}
    for other in args.also_code:
        codes[f"code in {other.name}"] = other.resolve()
    source = work / "sha1-source"
    source.mkdir(exist_ok=True)
    print("Writing and hashing the big file ...", file=sys.stderr, flush=True)
    big_sha1 = make_big(source / BIG, args.size_mib)
    size = args.size_mib << 20
    urls: dict[str, tuple[str, str]] = {}  # label -> (hub process name, URL)
    # Every share holds the same file (hard links: one page cache). All links exist
    # before any share starts: a new link changes the inode's ctime, and a share
    # re-hashes a file whose ctime changed.
    for index in range(len(codes)):
        hidden = work / f"sha1-hidden{index}"
        hidden.mkdir(exist_ok=True)
        if not (hidden / BIG).exists():
            os.link(source / BIG, hidden / BIG)
    for index, (code_label, code) in enumerate(codes.items()):
        # ``python -m`` puts the working directory first on sys.path: run from ``code``.
        code_env = {**env, "PYTHONPATH": str(code)}
        hub_name, hidden_name = f"sha1-hub{index}", f"sha1-hidden{index}"
        hub_port = free_port()
        hub_url = f"http://127.0.0.1:{hub_port}"
        (work / hub_name).mkdir(exist_ok=True)
        procs.start(
            hub_name,
            command(
                "kbucket-hub",
                str(work / hub_name),
                *node_args(hub_name, hub_port, hub_url, "."),
                *proxy_only(code),
            ),
            code_env,
            cwd=code,
        )
        procs.wait_line(hub_name, r"kbucket-hub is running http on port")
        hidden = work / hidden_name
        procs.start(
            hidden_name,
            command(
                "kbucket-host",
                str(hidden),
                *node_args(hidden_name, free_port(), UNREACHABLE, hub_url),
                "--confirm-share",
                "yes",
            ),
            code_env,
            cwd=code,
        )
        procs.wait_line(hidden_name, r"^Indexed \d+ files?\.$", timeout=300)
        procs.wait_line(hidden_name, r"^Connected to parent hub: ")
        hidden_id = json.loads((hidden / ".kbucket" / "kbnode.json").read_text())["node_id"]
        deadline = time.monotonic() + 120
        while True:
            with urllib.request.urlopen(f"{hub_url}/find/{big_sha1}", timeout=10) as r:
                if json.loads(r.read())["found"]:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{big_sha1} not findable at {hub_url} after 120 s")
            time.sleep(0.2)
        urls[f"{code_label}: /sha1/SHA1"] = (hub_name, f"{hub_url}/sha1/{big_sha1}")
        download = f"{hub_url}/{hidden_id}/download/{BIG}"
        urls[f"{code_label}: /ID/download/PATH"] = (hub_name, download)
    pids = {name: p.pid for name, p in procs.all}
    walls: dict[str, list[float]] = {label: [] for label in urls}
    cpus: dict[str, list[float]] = {label: [] for label in urls}
    loop_cpus: dict[str, list[float]] = {label: [] for label in urls}
    share_cpus: dict[str, list[float]] = {label: [] for label in urls}
    for round_no in range(args.rounds + 1):  # round 0 warms up (and checks the bytes)
        print(f"sha1 round {round_no}", file=sys.stderr, flush=True)
        for label, (hub_name, url) in urls.items():
            share_name = hub_name.replace("hub", "hidden")
            before = cpu_seconds(pids[hub_name])
            share_before = cpu_seconds(pids[share_name])
            loop_before = cpu_seconds(pids[hub_name], main_thread=True)
            start = time.perf_counter()
            if round_no == 0:
                got = subprocess.run(
                    ["sh", "-c", f"curl -sf {url} | sha1sum"],
                    capture_output=True,
                    text=True,
                    check=True,
                    timeout=600,
                )
                assert got.stdout.split()[0] == big_sha1, (label, got.stdout)
                continue
            got = subprocess.run(
                ["curl", "-sf", "-o", "/dev/null", "-w", "%{size_download}", url],
                capture_output=True,
                text=True,
                check=True,
                timeout=600,
            )
            wall = time.perf_counter() - start
            assert int(got.stdout) == size, (label, got.stdout)
            walls[label].append(wall)
            cpus[label].append(cpu_seconds(pids[hub_name]) - before)
            loop_cpus[label].append(cpu_seconds(pids[hub_name], main_thread=True) - loop_before)
            share_cpus[label].append(cpu_seconds(pids[share_name]) - share_before)
    mb = size / 1e6
    gib = size / (1 << 30)
    first = next(iter(urls))
    print(
        f"\n### (v) curl through one hub, {args.size_mib} MiB from a share it proxies, "
        f"{args.rounds} interleaved rounds\n"
    )
    print(
        "| route | MB/s | wall s | hub CPU s per GiB | of it, the event loop's "
        "| share CPU s per GiB | throughput ratio |"
    )
    print("|---|---|---|---|---|---|---|")
    for label in urls:
        ratio = [f / w for f, w in zip(walls[first], walls[label], strict=True)]
        print(
            f"| {label} | {fmt([mb / w for w in walls[label]])} | {fmt(walls[label], 3)} "
            f"| {fmt([c / gib for c in cpus[label]], 2)} "
            f"| {fmt([c / gib for c in loop_cpus[label]], 2)} "
            f"| {fmt([c / gib for c in share_cpus[label]], 2)} | {fmt(ratio, 2)} x {first} |"
        )


def find_hub_finds(
    args: argparse.Namespace,
    work: Path,
    env: dict[str, str],
    procs: Procs,
    hub_url: str,
    logs: Path,
) -> None:
    """(iv): finds at ``hub_url`` next to the bare server; with ``--also-code DIR`` also
    at a hub running the code in DIR, with shares of its own running that code too
    (the same files), all measured in the same interleaved repeats."""
    print("Creating the small-file shares ...", file=sys.stderr, flush=True)
    sha1s: list[tuple[str, str]] = []
    for i in range(args.find_shares):
        d = work / f"small{i:02d}"
        if (d / ".sha1s").exists():
            names = json.loads((d / ".sha1s").read_text())
        else:
            names = make_small_share(d, i, args.files_per_share)
            (d / ".sha1s").write_text(json.dumps(names))
        sha1s += [(s, f"small{i:02d}") for s in names]
    # One hub per code: this code's is ``hub_url``; every other code gets a hub and
    # shares of its own (a copy of each share's files, so each share has its own
    # ``.kbucket``), so every process of a variant runs the variant's code.
    hubs: dict[str, tuple[str, str]] = {"hub /find (kbucket-hub)": ("hub", hub_url)}
    shares: list[tuple[str, Path, dict[str, str], str, Path | None]] = [
        (f"small{i:02d}", work / f"small{i:02d}", env, hub_url, None)
        for i in range(args.find_shares)
    ]
    for index, other in enumerate(args.also_code):
        code = other.resolve()
        code_env = {**env, "PYTHONPATH": str(code)}
        name = f"findhub{index}"
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        (work / name).mkdir(exist_ok=True)
        procs.start(
            name,
            command("kbucket-hub", str(work / name), *node_args(name, port, url, ".")),
            code_env,
            cwd=code,
        )
        procs.wait_line(name, r"kbucket-hub is running http on port")
        hubs[f"hub /find, code in {other.name}"] = (name, url)
        for i in range(args.find_shares):
            copy = work / f"{name}-small{i:02d}"
            if not copy.exists():
                shutil.copytree(work / f"small{i:02d}", copy, ignore=shutil.ignore_patterns(".*"))
            shares.append((f"{name}-small{i:02d}", copy, code_env, url, code))
    for name, directory, share_env, parent, cwd in shares:
        procs.start(
            name,
            command(
                "kbucket-host",
                str(directory),
                *node_args(name, free_port(), UNREACHABLE, parent),
                "--confirm-share",
                "yes",
            ),
            share_env,
            cwd=cwd,
        )
    for name, *_ in shares:
        procs.wait_line(name, r"^Indexed \d+ files?\.$", timeout=300)
        procs.wait_line(name, r"^Connected to parent hub: ")
    # 1,000 known SHA-1s spread over all shares, every one checked findable at each hub.
    step = max(1, len(sha1s) // 1000)
    sample = [s for s, _ in sha1s[::step]][:1000]
    deadline = time.monotonic() + 120
    for _, url in hubs.values():
        for sha1 in sample:
            while True:
                with urllib.request.urlopen(f"{url}/find/{sha1}", timeout=10) as r:
                    if json.loads(r.read())["found"]:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{sha1} not findable at {url} after 120 s")
                time.sleep(0.2)
    paths = work / "paths.txt"
    paths.write_text("".join(f"/find/{s}\n" for s in sample))
    lua = work / "rotate.lua"
    lua.write_text(WRK_LUA % paths)

    procs.start("bare", [sys.executable, "-c", BARE_SERVER], env)
    bare_port = int(procs.wait_line("bare", r"^(\d+)$").group(1))
    bare = "bare h11+anyio, constant JSON"
    targets = {label: url for label, (_, url) in hubs.items()}
    targets[bare] = f"http://127.0.0.1:{bare_port}"
    pids = {name: p.pid for name, p in procs.all}
    cpu_name = {label: name for label, (name, _) in hubs.items()}
    cpu_name[bare] = "bare"
    conns = args.find_conns or [1, 16, 64]
    res: dict[tuple[str, int], list[tuple[float, float, float, float]]] = {}
    for rep in range(args.wrk_repeats + 1):  # repeat 0 warms up
        print(f"wrk repeat {rep}", file=sys.stderr, flush=True)
        for c in conns:
            for label, url in targets.items():
                secs = 1 if rep == 0 else args.wrk_seconds
                before = cpu_seconds(pids[cpu_name[label]])
                done = subprocess.run(
                    [
                        "wrk",
                        "-t1",
                        f"-c{c}",
                        f"-d{secs}s",
                        "--latency",
                        "--timeout",
                        "5s",
                        "-s",
                        str(lua),
                        url + "/",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=secs + 30,
                    check=True,
                )
                cpu = cpu_seconds(pids[cpu_name[label]]) - before
                rps, p50, p99 = parse_wrk(done.stdout)
                if rep:
                    res.setdefault((label, c), []).append((rps, p50, p99, cpu / (rps * secs) * 1e6))
    if args.pinned and len(hubs) > 1 and (os.cpu_count() or 1) >= 2:
        pinned_finds(args, hubs, pids, lua, conns)
    entries = args.find_shares * args.files_per_share
    print(
        f"\n### (iv) finds at one hub holding {entries:,} index entries "
        f"({args.find_shares} shares x {args.files_per_share:,} files), "
        f"wrk -t1 -d{args.wrk_seconds}s, "
        f"{args.wrk_repeats} interleaved repeats\n"
    )
    first = next(iter(hubs))
    print(
        "| server | conns | req/s | p50 ms | p99 ms | server CPU µs/req "
        "| req/s ratio hub/bare | CPU µs/req ratio to this code |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for c in conns:
        bare_r = res[(bare, c)]
        mine = res[(first, c)]
        for label in targets:
            rows = res[(label, c)]
            ratio = [h[0] / b[0] for h, b in zip(rows, bare_r, strict=True)]
            cpu_ratio = [r[3] / m[3] for r, m in zip(rows, mine, strict=True)]
            hub = label in hubs
            print(
                f"| {label} | {c} | {fmt([r[0] for r in rows])} | {fmt([r[1] for r in rows], 3)} "
                f"| {fmt([r[2] for r in rows], 3)} | {fmt([r[3] for r in rows])} "
                f"| {fmt(ratio, 2) if hub else ''} | {fmt(cpu_ratio, 2) if hub else ''} |"
            )


def _pin(pid: int, cpu: int) -> None:
    """Pin every thread of process ``pid`` to ``cpu``."""
    for task in os.listdir(f"/proc/{pid}/task"):
        subprocess.run(["taskset", "-p", "-c", str(cpu), task], check=True, capture_output=True)


def pinned_finds(
    args: argparse.Namespace,
    hubs: dict[str, tuple[str, str]],
    pids: dict[str, int],
    lua: Path,
    conns: list[int],
) -> None:
    """(iv), pinned: every hub on CPU 1 at once, each under its own ``wrk`` on CPU 0.

    The scheduler splits CPU 1 evenly between hubs that are all busy, so the ratio of
    their requests is the inverse ratio of their CPU per find, whatever else runs on the
    machine (sequential runs swing by 15 % on a loaded machine; these by a few %).
    """
    for name, _ in hubs.values():
        _pin(pids[name], 1)
    labels = list(hubs)
    ratios: dict[tuple[str, int], list[float]] = {}
    idle = 0  # repeats in which a hub answered nothing (CPU 1 taken by other load)
    for rep in range(args.wrk_repeats + 1):  # repeat 0 warms up
        secs = 1 if rep == 0 else args.wrk_seconds
        for c in conns:
            runs = {
                label: subprocess.Popen(
                    [
                        *("taskset", "-c", "0", "wrk", "-t1", f"-c{c}", f"-d{secs}s"),
                        *("--latency", "--timeout", "5s", "-s", str(lua), url + "/"),
                    ],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for label, (_, url) in hubs.items()
            }
            rps = {}
            for label, run in runs.items():
                out, _ = run.communicate(timeout=secs + 30)
                if run.returncode != 0:
                    raise RuntimeError(f"wrk failed against {label}")
                rps[label] = parse_wrk(out)[0]
            if rep and 0 in rps.values():
                idle += 1
            elif rep:
                for label in labels[1:]:
                    ratios.setdefault((label, c), []).append(rps[labels[0]] / rps[label])
    print(
        f"\n### (iv) finds, pinned: the hubs side by side on one CPU, wrk -t1 -d{args.wrk_seconds}s"
        f", {args.wrk_repeats} repeats\n"
    )
    print(f"| conns | hub | requests of {labels[0]} / requests of this hub |")
    print("|---|---|---|")
    for (label, c), values in ratios.items():
        print(f"| {c} | {label} | {fmt(values, 3)} |")
    if idle:
        print(f"\n{idle} pinned run(s) left out: a hub answered no find in it (CPU 1 too busy).")


if __name__ == "__main__":
    sys.exit(main())
