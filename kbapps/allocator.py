"""Keep glibc's malloc from giving back, then faulting in again, the memory of big buffers.

Why: kbucket moves bodies in 1 MiB pieces (a socket read, a data frame, a joined
chunk), each a fresh ``bytes``. glibc serves such sizes from the heap only after its
"dynamic mmap threshold" rose past them, and its trim threshold then follows at twice
that: whenever 2 MiB at the top of the heap are free, it returns them to the kernel,
and the next pieces fault the pages in again (zeroed) — about 1.5 ms per MiB. Measured
on this machine: decoding 1 MiB data frames cost 2.2 s of CPU per GiB, 0.2 s with the
thresholds below; a proxied download (hub, share and client on one host) spent a
quarter less CPU in every process.

What: at start-up the node commands and ``kb-prv-download`` fix the mmap threshold at
4 MiB (pieces up to that come from the heap) and the trim threshold at 32 MiB (each
malloc arena keeps at most that much freed heap for reuse; our commands run one or
two allocating threads, so a few arenas at most). Only on glibc, and never over a
choice the user made with glibc's ``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_``
variables or the same settings in ``GLIBC_TUNABLES``.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ("MMAP_THRESHOLD", "TRIM_THRESHOLD", "tune_allocator")

#: Allocations below this come from the heap (our pieces are 1 MiB and a little more).
MMAP_THRESHOLD = 4 * 1024 * 1024
#: Free memory at the top of the heap kept for reuse before it is given back.
TRIM_THRESHOLD = 32 * 1024 * 1024

# mallopt parameter numbers (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
_USER_TUNABLES = ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold")


def tune_allocator() -> bool:
    """Set both thresholds; True if glibc took them, False where nothing was done."""
    if not sys.platform.startswith("linux") or any(name in os.environ for name in _USER_SETTINGS):
        return False
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if any(name in tunables for name in _USER_TUNABLES):
        return False
    try:
        libc = ctypes.CDLL(None)  # the C library the interpreter already runs on
    except OSError:
        return False
    # ``gnu_get_libc_version`` exists only in glibc: musl's mallopt ignores everything.
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return False
    mallopt = libc.mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
