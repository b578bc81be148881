"""Fixtures of the kbapps tests."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kbapps.hashing.pool import single_threaded

#: Bound on the wait for threads that earlier tests left (anyio's idle worker threads
#: end within seconds of their event loop).
_QUIET_TIMEOUT = 30.0


#: Set in the worker processes of pytest-xdist, which run a thread of their own.
_XDIST_WORKER = "PYTEST_XDIST_WORKER"
_ROOT = Path(__file__).resolve().parents[2]


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run a test that uses ``forks`` in a fresh single-threaded interpreter when this
    process is a pytest-xdist worker: the worker's own thread (execnet's) would keep
    kbapps from ever forking, so what the test checks could not happen here."""
    if "forks" not in pyfuncitem.fixturenames or not os.environ.get(_XDIST_WORKER):
        return None  # pytest calls the test here, as usual
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "0", "--no-cov", pyfuncitem.nodeid],
        cwd=_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        pytest.fail(f"in a fresh interpreter:\n{done.stdout[-6000:]}{done.stderr[-2000:]}")
    return True


@pytest.fixture
def forks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The pids of the processes forked during the test, once this process runs one
    thread (kbapps never forks beside other threads: a test of its worker processes
    first waits, bounded, for the threads of earlier tests to end). In a pytest-xdist
    worker the test runs in a fresh interpreter instead (``pytest_pyfunc_call``)."""
    if os.environ.get(_XDIST_WORKER):
        return []
    deadline = time.monotonic() + _QUIET_TIMEOUT
    while not single_threaded():
        if time.monotonic() > deadline:
            pytest.fail(f"other threads still run: {threading.enumerate()}")
        time.sleep(0.05)
    pids: list[int] = []
    real_fork = os.fork

    def fork() -> int:
        pid = real_fork()
        if pid:
            pids.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", fork)
    return pids
