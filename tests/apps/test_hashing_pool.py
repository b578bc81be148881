"""kbapps.hashing.pool: worker processes forked only while the process runs one
thread; a pool started before the threads serves jobs from them; a job whose workers
die or are killed still gets every result."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from kbapps.hashing import (
    PARALLEL_MIN_FILES,
    FileKey,
    ForkedTask,
    HashCache,
    HashResult,
    ProcessPool,
    digest,
    hash_files,
)

HOUR_NS = 3600 * 10**9
#: Bound on every wait of these tests.
WAIT = 60.0


def _files(root: Path, count: int = 2 * PARALLEL_MIN_FILES) -> dict[str, bytes]:
    """``count`` small files, dated an hour ago (cacheable); path -> content."""
    root.mkdir(parents=True, exist_ok=True)
    past = time.time_ns() - HOUR_NS
    files: dict[str, bytes] = {}
    for i in range(count):
        path = root / f"f{i:04d}"
        files[str(path)] = b"%d\n" % i * (i % 5 + 1)
        path.write_bytes(files[str(path)])
        os.utime(path, ns=(past, past))
    return files


def _items(files: dict[str, bytes]) -> list[tuple[str, FileKey | None]]:
    return [(path, FileKey.from_stat(os.stat(path))) for path in files]


def _check(results: list[HashResult], files: dict[str, bytes]) -> None:
    assert sorted(r.path for r in results) == sorted(files)
    for result in results:
        assert result.error is None, result
        assert result.digest is not None
        assert result.digest.sha1 == hashlib.sha1(files[result.path]).hexdigest()


@contextmanager
def _another_thread() -> Iterator[None]:
    """A second thread that runs until the block ends."""
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, args=(WAIT,))
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        # join() returns once Python is done with the thread; the kernel may count its
        # task a moment longer, and the pool (rightly) looks at the kernel's count too.
        deadline = time.monotonic() + WAIT
        while len(os.listdir("/proc/self/task")) > 1 and time.monotonic() < deadline:
            time.sleep(0.001)


def _log_opens(monkeypatch: pytest.MonkeyPatch, log: Path, delay: float = 0.0) -> None:
    """Every file hashed by path writes the pid of its process and the path to
    ``log`` (workers forked after this inherit it; ``_openers`` reads it); ``delay``:
    worker processes sleep that long per file (the caller's process does not)."""
    real = digest.open_for_hashing
    parent = os.getpid()

    def open_for_hashing(path: str | os.PathLike[str]) -> int:
        with log.open("a") as handle:  # (appends of a line are atomic)
            handle.write(f"{os.getpid()} {os.fspath(path)}\n")
        if delay and os.getpid() != parent:
            time.sleep(delay)
        return real(path)

    monkeypatch.setattr(digest, "open_for_hashing", open_for_hashing)


def _openers(log: Path, under: Path | None = None) -> list[str]:
    """The pids (as text) that opened files, one per open, of the files under
    ``under`` only if given."""
    if not log.exists():
        return []
    lines = [line.split(" ", 1) for line in log.read_text().splitlines()]
    return [pid for pid, path in lines if under is None or path.startswith(f"{under}/")]


def test_hashing_beside_another_thread_never_forks(tmp_path: Path, forks: list[int]) -> None:
    files = _files(tmp_path / "t")
    with _another_thread():
        results = list(hash_files(_items(files), workers=2))
    _check(results, files)
    assert forks == []  # done in this process instead
    # One thread again: the same call forks its worker.
    _check(list(hash_files(_items(files), workers=2)), files)
    assert len(forks) == 1


def test_a_pool_does_not_start_beside_another_thread(forks: list[int]) -> None:
    pool = ProcessPool(3)
    try:
        with _another_thread():
            assert not pool.start()
        assert pool.workers == 0
        assert forks == []
        assert pool.start()
        assert pool.workers == 2
    finally:
        pool.close()
    assert pool.workers == 0
    for pid in forks:  # reaped
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def test_a_started_pool_serves_jobs_from_threads_with_their_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forks: list[int]
) -> None:
    log = tmp_path / "opened-by"
    _log_opens(monkeypatch, log)
    db = tmp_path / "c.db"
    trees = {name: _files(tmp_path / name) for name in ("t1", "t2")}
    pool = ProcessPool(2)
    try:
        assert pool.start()  # before any thread, as kbucket-host does
        (worker,) = forks
        for files in trees.values():  # two jobs, each from a thread of its own
            found: list[HashResult] = []

            def job(files: dict[str, bytes] = files, found: list[HashResult] = found) -> None:
                with HashCache(db) as cache:
                    found.extend(hash_files(_items(files), cache=cache, pool=pool))

            thread = threading.Thread(target=job)
            thread.start()
            thread.join(WAIT)
            _check(found, files)
            assert pool.workers == 1
    finally:
        pool.close()
    assert forks == [worker]  # forked once, at the start, and used by both jobs
    assert _openers(log).count(str(worker)) >= 2 * 64
    # Each job's context (the cache's path) reached the worker, which stored the
    # digests of what it hashed through a connection of its own.
    with HashCache(db) as cache:
        for files in trees.values():
            keys = [FileKey.from_stat(os.stat(path)) for path in files]
            assert len(cache.lookup_many(keys)) == len(keys)


def test_the_worker_of_a_started_pool_hashes_its_share(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forks: list[int]
) -> None:
    files = _files(tmp_path / "t")
    log = tmp_path / "opened-by"
    _log_opens(monkeypatch, log)
    pool = ProcessPool(2)
    try:
        assert pool.start()
        found: list[HashResult] = []
        thread = threading.Thread(target=lambda: found.extend(hash_files(_items(files), pool=pool)))
        thread.start()
        thread.join(WAIT)
    finally:
        pool.close()
    _check(found, files)
    pids = _openers(log)
    assert len(pids) == len(files)
    assert str(forks[0]) in pids


def test_a_second_job_at_the_same_time_runs_in_its_callers_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forks: list[int]
) -> None:
    files = _files(tmp_path / "t")
    others = _files(tmp_path / "u")
    log = tmp_path / "opened-by"
    _log_opens(monkeypatch, log)
    pool = ProcessPool(2)
    try:
        assert pool.start()
        first = hash_files(_items(files), pool=pool)
        next(first)  # a job holds the pool's workers...
        second = list(hash_files(_items(others), pool=pool))  # ...so this one has none
        _check(second, others)
        first.close()
    finally:
        pool.close()
    assert _openers(log, tmp_path / "u") == [str(os.getpid())] * len(others)


def test_closing_a_started_pool_during_a_job_kills_its_workers_and_the_job_ends_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forks: list[int]
) -> None:
    # The share's shutdown: the pool is closed while an abandoned indexer thread is
    # still in a job.
    files = _files(tmp_path / "t")
    log = tmp_path / "opened-by"
    _log_opens(monkeypatch, log, delay=0.005)  # a slow worker
    pool = ProcessPool(2)
    found: list[HashResult] = []
    thread = threading.Thread(target=lambda: found.extend(hash_files(_items(files), pool=pool)))
    try:
        assert pool.start()
        (worker,) = forks
        thread.start()
        deadline = time.monotonic() + WAIT
        while str(worker) not in _openers(log):
            assert time.monotonic() < deadline, "the worker never started on the job"
            time.sleep(0.01)
    finally:
        pool.close()
        thread.join(WAIT)
    assert not thread.is_alive()
    _check(found, files)
    assert pool.workers == 0
    with pytest.raises(ChildProcessError):  # killed and reaped
        os.waitpid(worker, os.WNOHANG)


def test_a_worker_killed_in_a_job_leaves_its_units_to_the_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forks: list[int]
) -> None:
    files = _files(tmp_path / "t")
    log = tmp_path / "opened-by"
    _log_opens(monkeypatch, log, delay=0.005)
    pool = ProcessPool(2)
    try:
        assert pool.start()
        (worker,) = forks
        results = hash_files(_items(files), pool=pool)
        found = [next(results)]
        deadline = time.monotonic() + WAIT
        while str(worker) not in _openers(log):
            assert time.monotonic() < deadline, "the worker never started on the job"
            time.sleep(0.01)
        os.kill(worker, 9)  # out of memory, say
        found += results
        _check(found, files)
        assert pool.workers == 0  # it is gone: later jobs run here
        _check(list(hash_files(_items(files), pool=pool)), files)
    finally:
        pool.close()


def test_a_forked_task_returns_its_value(forks: list[int]) -> None:
    numbers = list(range(1000))  # seen by the task as it was at the fork
    for body, value in ((lambda: sum(numbers), sum(numbers)), (lambda: None, None)):
        task = ForkedTask.start(body)
        assert task is not None
        try:
            assert task.result() == (True, value)
        finally:
            task.close()
    assert len(forks) == 2


def test_a_forked_task_that_dies_or_cannot_start(forks: list[int]) -> None:
    task = ForkedTask.start(lambda: os._exit(3))
    assert task is not None
    try:
        assert task.result() == (False, None)
    finally:
        task.close()
    with _another_thread():
        assert ForkedTask.start(lambda: 1) is None
    assert len(forks) == 1


class _BigReports:
    """A job's worker whose every unit reports ~200 KB: (pid, when done, filler)."""

    def process(self, unit: int) -> list[tuple[int, float, bytes]]:
        return [(os.getpid(), time.monotonic(), bytes(200_000))]

    def finish(self) -> list[tuple[int, float, bytes]]:
        return []


def _big_reports(context: object) -> _BigReports:
    return _BigReports()


def test_a_worker_reports_units_bigger_than_a_pipe_without_waiting_for_the_caller(
    forks: list[int],
) -> None:
    # A tree's unit of 128 files reports ~70 KB, more than a default pipe holds: the
    # worker must go on with its next unit while the caller is busy, not wait for it.
    pool = ProcessPool(2)
    got: list[tuple[int, float, bytes]] = []
    run = pool.run(_BigReports(), _big_reports, None, got.extend, fork_at=1)
    try:
        run.add([0, 1], 2)
        run.pump()  # forks the worker and hands it both units
        handed = time.monotonic()
        time.sleep(1.0)  # busy: no pump, nothing read
        run.finish()
    finally:
        run.close()
        pool.close()
    done = [when for pid, when, _ in got if pid != os.getpid()]
    assert len(done) == 2, "both units went to the worker"
    assert max(done) < handed + 0.8  # both reports written while the caller slept
