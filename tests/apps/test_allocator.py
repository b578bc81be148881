"""``kbapps.allocator``: big pieces reuse heap memory instead of faulting it in again."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from kbapps import allocator

# Allocates and frees 1 MiB pieces the way a node does (a read, then a frame joined
# from two reads), and prints the page faults per MiB after a warm-up.
_CHURN = """
import resource, sys
from kbapps.allocator import tune_allocator
if sys.argv[1] == "tuned" and not tune_allocator():
    raise SystemExit("not tuned")
MIB = 1 << 20
def churn(rounds):
    previous = bytes(MIB)
    for i in range(rounds):
        current = bytes([i % 256]) * MIB
        frame = b"".join([memoryview(previous)[10:], memoryview(current)[:10]])
        body = frame[4:]
        previous = current
        del frame, body
churn(50)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
churn(400)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 400)
"""


def _faults_per_mib(mode: str) -> float:
    result = subprocess.run(
        [sys.executable, "-c", _CHURN, mode], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return float(result.stdout)


def test_tuned_process_reuses_heap_memory_for_1_mib_pieces() -> None:
    if platform.libc_ver()[0] != "glibc":
        # Nothing to tune elsewhere: the call must say so, not pretend.
        result = subprocess.run(
            [sys.executable, "-c", _CHURN, "tuned"], capture_output=True, text=True, timeout=120
        )
        assert "not tuned" in result.stderr
        return
    # Untuned, this machine's glibc gives the memory back and faults ~600 pages in
    # per MiB of this loop; tuned, the pieces live in heap memory that stays mapped.
    assert _faults_per_mib("tuned") < 8


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MALLOC_TRIM_THRESHOLD_", "131072"),
        ("MALLOC_MMAP_THRESHOLD_", "131072"),
        ("GLIBC_TUNABLES", "glibc.malloc.arena_max=2:glibc.malloc.trim_threshold=131072"),
    ],
)
def test_a_choice_made_in_the_environment_is_left_alone(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    assert allocator.tune_allocator() is False


def test_nothing_is_done_off_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert allocator.tune_allocator() is False
