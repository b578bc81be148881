"""The README's walk-through ("A hub, a share and a download, in three terminals") runs
as written: its shell blocks, taken from README.md itself, in a scratch copy of the
repository's example with a scratch HOME, and the lines it promises appear.

Two things differ from a user's machine, both so that the test cannot collide with
anything else running here: the hub's port (the README's 3240 becomes a free port, in
the URLs and as ``--port`` on the hub's command) and the share's port (``--port 0``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.e2e.procs import Proc, Procs, free_port

ROOT = Path(__file__).resolve().parent.parent.parent
SECTION = "## A hub, a share and a download, in three terminals"


def _blocks() -> list[str]:
    """The ``bash`` blocks of the walk-through section, in order."""
    text = (ROOT / "README.md").read_text()
    start = text.index(SECTION)
    end = text.index("\n## ", start + len(SECTION))
    return re.findall(r"```bash\n(.*?)```", text[start:end], re.S)


def test_the_readme_walk_through_runs_as_written(procs: Procs, tmp_path: Path) -> None:
    blocks = _blocks()
    assert len(blocks) == 6, blocks
    hub_cmd, share_cmd, first_download, firewalled, proxied, whole_dir = blocks
    port = free_port()
    home, repo = tmp_path / "home", tmp_path / "repo"
    home.mkdir()
    shutil.copytree(ROOT / "examples" / "dataset_01", repo / "examples" / "dataset_01")
    # The console scripts of this interpreter's environment, and this code.
    bin_dir = str(Path(sys.executable).parent)
    env = dict(procs.env, HOME=str(home), PATH=f"{bin_dir}:{os.environ['PATH']}")
    env["PYTHONPATH"] = str(ROOT)

    def adapt(block: str) -> str:
        block = block.replace("localhost:3240", f"localhost:{port}").rstrip("\n")
        if block.startswith("kbucket-hub "):
            block += f" --port {port}"
        elif block.startswith("kbucket-host "):
            block += " --port 0 --host 127.0.0.1"
        return block + "\n"

    def start(name: str, block: str) -> Proc:
        return procs.start(
            name, ["bash", "-c", f"cd {repo} && exec {adapt(block).strip()}"], env=env
        )

    def shell(block: str) -> str:
        done = subprocess.run(
            ["bash", "-euc", f"cd {repo}\n{adapt(block)}"],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + done.stderr

    hub_block = hub_cmd.replace("mkdir -p ~/kbucket-hub && ", "")
    (home / "kbucket-hub").mkdir()
    # The README's hub listens on a fixed port (here a free one in its place): another
    # process of the parallel suite may take it between ``free_port`` and the bind,
    # and the hub then exits 3 ("Address already in use"). Try another, a few times.
    for _ in range(5):
        hub = start("hub", hub_block)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and hub.popen.poll() is None:
            if hub.has_line(rf"kbucket-hub is running http on port {port}$"):
                break
            time.sleep(0.05)
        if hub.popen.poll() != 3 or "Address already in use" not in hub.stderr():
            break
        port = free_port()
    hub.wait_line(rf"kbucket-hub is running http on port {port}$")
    share = start("share", share_cmd)
    share.wait_line(r"Connected to parent hub: kbucket-hub$")
    hub.wait_line(r"Child share joined: dataset_01 \([0-9a-f]{12}\)$")
    # The README waits for this line too: the files were copied a moment ago, and a
    # share announces a file only once it hashed it (after the racy window).
    share.wait_line(r"Indexed 5 files\.$")

    scratch = home / "kbucket-walkthrough"
    out = shell(first_download)
    lines = out.splitlines()
    urls = [line for line in lines if line.startswith("http://")]
    assert urls[0].startswith("http://localhost:")  # the share's own URL first
    assert urls[-1].startswith(f"http://localhost:{port}/")  # then the hub's
    assert any(line.startswith("Downloaded readme-copy.txt") for line in lines), out
    original = (repo / "examples" / "dataset_01" / "README.txt").read_bytes()
    assert (scratch / "readme-copy.txt").read_bytes() == original

    # Terminal 2: the share restarted behind a "firewall".
    share.popen.send_signal(signal.SIGINT)
    assert share.popen.wait(20) == 0
    hidden = start("hidden", firewalled)
    hidden.wait_line(r"Connected to parent hub: kbucket-hub$")
    hidden.wait_line(r"Indexed \d+ files?\.$")

    setup = first_download.splitlines()[0]  # export DATA=... && mkdir ... && cd ...
    out = shell(setup + "\n" + proxied)
    raw = repo / "examples" / "dataset_01" / "recording" / "raw.mda"
    m = re.search(r"^Downloaded raw\.mda \(.*\) from (\S+)$", out, re.M)
    assert m is not None, out
    assert m.group(1).startswith(f"http://localhost:{port}/")
    assert m.group(1).endswith("/download/recording/raw.mda")
    assert (scratch / "raw.mda").read_bytes() == raw.read_bytes()

    shell(setup + "\n" + whole_dir)
    copy = scratch / "dataset_01_copy"
    for path in (repo / "examples" / "dataset_01").rglob("*"):
        if path.is_file() and ".kbucket" not in path.parts:
            relative = path.relative_to(repo / "examples" / "dataset_01")
            assert (copy / relative).read_bytes() == path.read_bytes(), relative
    # What the walk-through made stays in the scratch folder, not in the repository.
    assert sorted(p.name for p in (repo / "examples" / "dataset_01").iterdir()) == sorted(
        [".kbucket", *os.listdir(ROOT / "examples" / "dataset_01")]
    )
    assert sorted(os.listdir(repo)) == ["examples"]
