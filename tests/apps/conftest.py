"""Fixtures of the kbapps tests."""

from __future__ import annotations

import os
import threading
import time

import pytest

from kbapps.hashing.pool import single_threaded

#: Bound on the wait for threads that earlier tests left (anyio's idle worker threads
#: end within seconds of their event loop).
_QUIET_TIMEOUT = 30.0


@pytest.fixture
def forks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The pids of the processes forked during the test, once this process runs one
    thread (kbapps never forks beside other threads: a test of its worker processes
    first waits, bounded, for the threads of earlier tests to end)."""
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
