"""The five commands' surface (issue 16, item 4), run as real processes: ``--version``,
``--help`` with meaningful metavars, ``kb-prv-create``'s summary line and ``-q``, the
one table of exit codes (``docs/commands.md``), and counts that agree with their noun.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import time
from importlib.metadata import version
from pathlib import Path

from kbapps.output import format_bytes
from kbproto.chunks import chunk_digests, digest_list_root
from kbproto.prv import PrvDir, make_prv, serialize_prv, serialize_prvdir
from tests.e2e.procs import Procs, command, free_port, wait_for
from tests.hostile.client_net import FakeSource, Served, fake_source, prv_of

__all__ = ("fake_source",)  # the fixture the tests below use

ROOT = Path(__file__).resolve().parent.parent.parent
COMMANDS = ("kb-prv-create", "kb-prv-find", "kb-prv-download", "kbucket-host", "kbucket-hub")
#: Each command's usage line: every argument by its metavar, optional ones bracketed.
USAGE = {
    "kb-prv-create": "Usage: kb-prv-create [OPTIONS] PATH [OUT]",
    "kb-prv-find": "Usage: kb-prv-find [OPTIONS] PRV",
    "kb-prv-download": "Usage: kb-prv-download [OPTIONS] [PRV] [OUT]",
    "kbucket-host": "Usage: kbucket-host [OPTIONS] [DIR]",
    "kbucket-hub": "Usage: kbucket-hub [OPTIONS] [DIR]",
}
RUN_TIMEOUT = 120.0
#: The options that take no value.
FLAGS = frozenset(
    {
        "--json",
        "--force",
        "--auto",
        "--cache-info",
        "--clear-cache",
        "--quiet",
        "--uri",
        "--version",
        "--help",
    }
)


def _env(tmp_path: Path) -> dict[str, str]:
    values = {k: v for k, v in os.environ.items() if k not in ("KBUCKET_URL", "KBUCKET_DEBUG")}
    values["KBUCKET_CACHE_DIR"] = str(tmp_path / "cache")
    return values


def _run(env: dict[str, str], name: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(name, *map(str, args)),
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def _run_all(
    tmp_path: Path, runs: dict[str, tuple[str | Path, ...]]
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Run independent commands at once (``key: (command, *args)``), each with a cache
    directory of its own; their results by key. Every process is stopped on the way out."""
    started: dict[str, subprocess.Popen[str]] = {}
    results: dict[str, subprocess.CompletedProcess[str]] = {}
    try:
        for key, (name, *args) in runs.items():
            env = _env(tmp_path)
            env["KBUCKET_CACHE_DIR"] = str(_cache_dir(tmp_path, key))
            started[key] = subprocess.Popen(
                command(str(name), *map(str, args)),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        for key, proc in started.items():
            stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT)
            results[key] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    finally:
        for proc in started.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    return results


def _cache_dir(tmp_path: Path, key: str) -> Path:
    """The cache directory of ``_run_all``'s run ``key``."""
    return tmp_path / "caches" / re.sub(r"\W+", "-", key)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_every_command_prints_its_version_and_help_names_what_to_give(tmp_path: Path) -> None:
    runs: dict[str, tuple[str | Path, ...]] = {}
    for name in COMMANDS:
        runs[f"{name} --version"] = (name, "--version")
        runs[f"{name} --help"] = (name, "--help")
    done = _run_all(tmp_path, runs)
    for name in COMMANDS:
        shown = done[f"{name} --version"]
        assert (shown.returncode, shown.stderr) == (0, ""), name
        assert shown.stdout == f"{name} {version('kbucket')}\n"

        helped = done[f"{name} --help"]
        assert helped.returncode == 0, helped.stderr
        assert helped.stdout.splitlines()[0] == USAGE[name]
        # No value types where a metavar belongs, no typer placeholders.
        for placeholder in ("<str>", "<bool>", "<int>", "<float>", "<path>", "{", "}"):
            assert placeholder not in helped.stdout, (name, placeholder)
        listed = helped.stdout.split("\nOptions:\n", 1)[1]
        options = re.findall(r"^  (-[^\s,]+(?:, --\S+)?)(?: (\S+))?\s", listed, re.MULTILINE)
        assert options, name
        for option, metavar in options:
            if option.split(", ")[-1] in FLAGS:
                assert metavar == "", (name, option)  # a flag takes nothing
            else:
                assert re.fullmatch(r"[A-Z]+|yes\|no", metavar), (name, option, metavar)
        assert "--version" in helped.stdout


def test_kb_prv_create_prints_one_summary_line_and_nothing_with_q(tmp_path: Path) -> None:
    env = _env(tmp_path)
    tree = tmp_path / "data"
    tree.mkdir()
    for i in range(3):
        (tree / f"f{i}.bin").write_bytes(b"x" * (1000 + i))
    old = time.time_ns() - 3600 * 10**9  # older than the hash cache's racy window
    for path in [*tree.iterdir(), tree]:
        os.utime(path, ns=(old, old))
    seconds = r"\d+\.\d s"

    first = _run(env, "kb-prv-create", tree, tmp_path / "d.prvdir")
    assert (first.returncode, first.stdout) == (0, "")
    assert re.fullmatch(
        rf"Wrote {re.escape(str(tmp_path / 'd.prvdir'))}: 3 files, 3\.0 kB, {seconds}\n",
        first.stderr,
    )
    again = _run(env, "kb-prv-create", tree, tmp_path / "d.prvdir")
    assert again.stderr.endswith(" (3 from the hash cache)\n"), again.stderr

    one = _run(env, "kb-prv-create", tree / "f0.bin", tmp_path / "f0.prv")
    wrote = re.escape(f"Wrote {tmp_path / 'f0.prv'}: 1 file, 1.0 kB, ")
    assert re.fullmatch(rf"{wrote}{seconds} \(1 from the hash cache\)\n", one.stderr)
    to_stdout = _run(env, "kb-prv-create", tree / "f1.bin")
    data = b"x" * 1001
    expected = make_prv(
        sha1=hashlib.sha1(data).hexdigest(),
        size=len(data),
        head_sha1=hashlib.sha1(data[:1000]).hexdigest(),
        path="f1.bin",
        chunks_root=digest_list_root(chunk_digests(data)),
    )
    assert to_stdout.stdout == serialize_prv(expected).decode()
    assert to_stdout.stderr.startswith(f"Wrote the .prv of {tree / 'f1.bin'} to stdout: 1 file, ")

    for quiet in ("-q", "--quiet"):
        silent = _run(env, "kb-prv-create", quiet, tree, tmp_path / "q.prvdir")
        assert (silent.returncode, silent.stdout, silent.stderr) == (0, "", "")
        assert (tmp_path / "q.prvdir").read_bytes() == (tmp_path / "d.prvdir").read_bytes()


def test_exit_codes_follow_the_one_table_and_counts_agree_with_their_noun(
    fake_source: FakeSource, procs: Procs, tmp_path: Path
) -> None:
    for directory in ("h1", "h2", "one"):
        (tmp_path / directory).mkdir()
    (tmp_path / "f.bin").write_bytes(b"content\n")
    prv = tmp_path / "f.prv"
    prv.write_bytes(serialize_prv(prv_of(b"content\n", "f.bin")))
    (tmp_path / "bad.prv").write_text("not json")
    # A share of one file: its console counts one file, and its port is taken.
    (tmp_path / "one" / "only.txt").write_text("the only file\n")
    # (A port of our choosing: kbucket-hub on a port ending in 443 would want a
    # certificate, exit 2, before it tried to bind.)
    share = procs.node("kbucket-host", tmp_path / "one", port=free_port())
    # A .prvdir of one file that the fake hub can deliver.
    data = b"one file in a .prvdir\n"
    url = fake_source.add("whole", Served(data, fast=len(data)))
    fake_source.urls[url.rsplit("/", 1)[-1]] = [url]
    (tmp_path / "d.prvdir").write_bytes(
        serialize_prvdir(PrvDir(files={"a.txt": prv_of(data, "a.txt")}))
    )
    down = f"http://127.0.0.1:{_closed_port()}"
    hub = fake_source.base
    done = _run_all(
        tmp_path,
        {
            # 0: done
            "create": ("kb-prv-create", tmp_path / "f.bin", tmp_path / "g.prv"),
            "download a .prvdir": (
                "kb-prv-download",
                tmp_path / "d.prvdir",
                tmp_path / "out",
                "--hub",
                hub,
            ),
            # 1: the answer is no (not found; the user declined)
            "find, not found": ("kb-prv-find", prv, "--hub", hub),
            "download, not found": ("kb-prv-download", prv, tmp_path / "o", "--hub", hub),
            "hub, declined": (
                "kbucket-hub",
                tmp_path / "h1",
                "--auto",
                "--scientific-research",
                "no",
            ),
            # 2: bad input, including a file that cannot be written
            "create, unwritable OUT": ("kb-prv-create", tmp_path / "f.bin", tmp_path / "no/x.prv"),
            "create, missing PATH": ("kb-prv-create", tmp_path / "nope"),
            "find, bad .prv": ("kb-prv-find", tmp_path / "bad.prv"),
            "download, no OUT": ("kb-prv-download", prv),
            "host, bad option": ("kbucket-host", tmp_path / "s", "--port", "x"),
            # 3: the network failed
            "find, hub unreachable": ("kb-prv-find", prv, "--hub", down),
            "download, hub unreachable": ("kb-prv-download", prv, tmp_path / "o", "--hub", down),
            "hub, port taken": (
                "kbucket-hub",
                tmp_path / "h2",
                *("--auto", "--scientific-research", "yes"),
                *("--host", "127.0.0.1", "--port", str(share.port)),
            ),
        },
    )
    codes = {key: result.returncode for key, result in done.items()}
    # 141: the reader of stdout went away (| head)
    reader_gone = subprocess.Popen(
        command("kb-prv-create", str(tmp_path / "f.bin")),
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert reader_gone.stdout is not None
    reader_gone.stdout.close()
    try:
        _, stderr = reader_gone.communicate(timeout=RUN_TIMEOUT)
    finally:
        if reader_gone.poll() is None:
            reader_gone.kill()
            reader_gone.wait(10)
    assert stderr == b""
    codes["create, stdout closed"] = reader_gone.returncode
    assert codes == {
        "create": 0,
        "download a .prvdir": 0,
        "find, not found": 1,
        "download, not found": 1,
        "hub, declined": 1,
        "create, unwritable OUT": 2,
        "create, missing PATH": 2,
        "find, bad .prv": 2,
        "download, no OUT": 2,
        "host, bad option": 2,
        "find, hub unreachable": 3,
        "download, hub unreachable": 3,
        "hub, port taken": 3,
        "create, stdout closed": 141,
    }, {key: result.stderr for key, result in done.items()}
    # The same table is the documented one.
    table = (ROOT / "docs" / "commands.md").read_text()
    for code in (0, 1, 2, 3, 70, 130, 141):
        assert re.search(rf"^\| {code} \|", table, re.MULTILINE), code

    # Counts agree with their noun.
    assert share.proc.has_line(r"Indexed 1 file\.$")
    share.proc.wait_line(r"Hashed 1 file; 0 unchanged since the last run\.$")
    assert done["download a .prvdir"].stderr.splitlines()[-1] == (
        f"Downloaded 1 file, skipped 0 already present, 0 failed, into {tmp_path / 'out'}"
    )
    # The content cache is filled after the command, by a process of its own.
    env = _env(tmp_path)
    env["KBUCKET_CACHE_DIR"] = str(_cache_dir(tmp_path, "download a .prvdir"))
    cached = f": 1 entry, {format_bytes(len(data))}; "
    wait_for(
        lambda: cached in _run(env, "kb-prv-download", "--cache-info").stderr,
        60,
        "the content cache to hold the file",
        step=0.5,
    )
