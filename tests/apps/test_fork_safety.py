"""No process of kbucket forks while it has other threads (issue 15: the share's
indexer hashed in anyio worker threads and forked its hashing processes from there).

A child forked from a threaded process holds a copy of every lock another thread held
at that instant (the allocator's, the import lock, logging's...) with nobody left to
release it. Each test runs the real code in a fresh interpreter whose
``os.register_at_fork(before=...)`` hook writes, at every fork, the number of Python
threads and of kernel threads of the forking process; none may be above one.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.e2e.procs import Procs

#: Enough small files that hashing uses worker processes (``PARALLEL_MIN_FILES`` is 500).
FILES = 1200
HOUR_NS = 3600 * 10**9
#: Bound on the runs below (a loaded 2-core machine included).
TIMEOUT = 120.0

#: Prepended to the code each test runs: records every fork. The affinity is widened
#: to two CPUs so the hashing pool has a worker process on any machine (one CPU would
#: make it hash in-process, and the test prove nothing).
_RECORD_FORKS = """\
import os, sys, threading
_log = os.environ["KB_FORK_LOG"]
def _before_fork():
    kernel_threads = len(os.listdir("/proc/self/task"))
    with open(_log, "a") as handle:
        handle.write(f"{threading.active_count()} {kernel_threads}\\n")
os.register_at_fork(before=_before_fork)
os.sched_getaffinity = lambda pid: {0, 1}
"""


def _make_share(root: Path) -> dict[str, str]:
    """``FILES`` small files in a few directories, dated an hour ago (outside the racy
    window, so they are hashed at once); returns path -> SHA-1."""
    digests: dict[str, str] = {}
    past = time.time_ns() - HOUR_NS
    for i in range(FILES):
        relpath = f"d{i % 6}/f{i:04d}.txt"
        data = b"file %d\n" % i * (i % 9)
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, ns=(past, past))
        digests[relpath] = hashlib.sha1(data).hexdigest()
    return digests


def _forks(log: Path) -> list[tuple[int, int]]:
    """``(python threads, kernel threads)`` of the process at each fork it made."""
    if not log.exists():
        return []
    return [
        (int(python), int(kernel))
        for python, kernel in (line.split() for line in log.read_text().splitlines())
    ]


def test_kbucket_host_hashes_in_worker_processes_forked_before_any_thread(
    tmp_path: Path,
) -> None:
    share = tmp_path / "share"
    _make_share(share)
    log = tmp_path / "forks.log"
    procs = Procs(tmp_path)
    procs.env["KB_FORK_LOG"] = str(log)
    code = _RECORD_FORKS + "from kbapps.cli.host import main\nsys.exit(main(sys.argv[1:]))\n"
    argv = [sys.executable, "-c", code, str(share), "--auto", "--name", "forks"]
    argv += ["--scientific-research", "yes", "--confirm-share", "yes"]
    argv += ["--port", "0", "--host", "127.0.0.1", "--parent-hub", "."]
    try:
        proc = procs.start("kbucket-host", argv)
        proc.wait_line(rf"Indexed {FILES} files\.$", timeout=TIMEOUT)
        assert proc.stop() == 0
    finally:
        procs.close()
    forks = _forks(log)
    assert forks, "the share hashed 1,200 files without a worker process"
    assert all(counts == (1, 1) for counts in forks), f"forked beside threads: {forks}"


#: The share's indexer run as ``kbapps.noderun`` runs it (under ``anyio.run``, its
#: walks and hashing in anyio worker threads), but without any pool started before
#: the loop: whatever a caller does, hashing must not fork from a worker thread.
_INDEXER = """\
import json
import anyio
from kbapps.share.index import FileIndex
from kbapps.share.indexer import Indexer, IndexerConfig

class Sink:
    async def content_changed(self, sha1s):
        pass

async def main():
    sink = Sink()
    config = IndexerConfig(min_interval=0.05, max_interval=0.2, settle=0.1, workers=2)
    index = FileIndex(None, racy_window_ns=50_000_000)
    indexer = Indexer(sys.argv[1], index, config=config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(indexer.run, sink)
        with anyio.fail_after(float(sys.argv[2])):
            await indexer.initial_done.wait()
        tg.cancel_scope.cancel()
    print(json.dumps({e.path: e.sha1 for e in index.entries()}))

anyio.run(main)
"""


def test_the_indexer_never_forks_from_its_worker_threads(tmp_path: Path) -> None:
    share = tmp_path / "share"
    digests = _make_share(share)
    log = tmp_path / "forks.log"
    done = subprocess.run(
        [sys.executable, "-c", _RECORD_FORKS + _INDEXER, str(share), str(TIMEOUT / 2)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "KB_FORK_LOG": str(log)},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout) == digests
    forks = _forks(log)
    assert all(counts == (1, 1) for counts in forks), f"forked beside threads: {forks}"
