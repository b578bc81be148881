"""Work on one stream's chunks off the event loop, in order, with bounded memory.

A hub hashes the bodies it proxies (``kbtransport.contentcheck``) and writes those it
caches (``kbtransport.relaycache``). Both calls release the GIL on large buffers
(``hashlib``, ``os.writev``), so the event loop hands the chunks to ``OrderedWork``:
a small pool of threads (``WORK_THREADS``, shared by every stream of the process)
calls the stream's ``work`` with the chunks in the order they were put, several at
once when several wait (one ``writev`` instead of one ``write`` each). At most one
thread works for one stream at a time, and at most ``max_queued`` chunks of a stream
wait: ``put`` waits beyond that, so a stream's memory stays bounded and the loop never
waits otherwise. ``finish`` waits until every chunk put was worked on.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import anyio

__all__ = ("WORK_THREADS", "OrderedWork")

#: Threads working for every stream at once: a core each at most, however many streams.
WORK_THREADS = min(4, os.cpu_count() or 1)

_pool: ThreadPoolExecutor | None = None


def _work_pool() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=WORK_THREADS, thread_name_prefix="kbucket-work")
    return _pool


class OrderedWork:
    """``work`` called by the shared threads with the chunks put, in order, in batches.

    Args:
        work: called in a pool thread with the chunks queued since its last call (a
            non-empty list). If it raises, the exception is kept in ``error`` and the
            chunks put afterwards are dropped unworked.
        max_queued: chunks that may wait at once (``put`` waits beyond).

    Attributes:
        error: what ``work`` raised, or None.
    """

    def __init__(self, work: Callable[[list[bytes]], None], max_queued: int) -> None:
        self.error: Exception | None = None
        self._work = work
        self._chunks: deque[bytes] = deque()
        self._lock = threading.Lock()
        self._draining = False
        self._idle = threading.Event()
        self._idle.set()
        self._room = threading.Semaphore(max_queued)

    def _drain(self) -> None:
        """Work on what is queued, in order, until nothing is (runs in a pool thread)."""
        while True:
            with self._lock:
                if not self._chunks:
                    self._draining = False
                    self._idle.set()
                    return
                batch = list(self._chunks)
                self._chunks.clear()
            if self.error is None:
                try:
                    self._work(batch)
                except Exception as exc:  # kept for the loop: a pool thread cannot raise
                    self.error = exc
            self._room.release(len(batch))

    async def put(self, chunk: bytes) -> None:
        """Queue ``chunk``; waits only while ``max_queued`` chunks are already queued."""
        if not self._room.acquire(blocking=False):
            # The queue drains (a pool thread holds this stream's work), so this returns.
            await anyio.to_thread.run_sync(self._room.acquire)
        with self._lock:
            self._chunks.append(chunk)
            if self._draining:
                return
            self._draining = True
            self._idle.clear()
        _work_pool().submit(self._drain)

    async def finish(self) -> None:
        """Wait until every chunk put was worked on."""
        if not self._idle.is_set():
            await anyio.to_thread.run_sync(self._idle.wait)
