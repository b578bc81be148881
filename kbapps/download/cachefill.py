"""Copying finished downloads into the content cache, now or in a process of their own.

A copy of a 1 GiB file costs 0.3 to 1 s on a file system without reflinks: more than
a fifth of what ``kb-prv-download`` takes to fetch it over a fast link
(``docs/benchmarks.md``). So the command does not wait for it: once every file is in
place and reported, it starts ``python -m kbapps.download.cachefill`` in a session of
its own (niced, its standard streams closed) with the list of files on its standard
input, and exits. That process copies each file whose device, inode, size and
modification time are still those verified (``ContentCache.fill``), evicts down to
the bound, and ends. The JSON event ``caching`` names its process id.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio.to_thread

from kbapps.download.cache import ContentCache, FillRequest
from kbapps.download.results import EventSink

__all__ = ("fill_cache", "main", "start_filler")

#: Niceness of the background copy: it yields the CPU to whatever the user runs next.
_NICENESS = 10


async def fill_cache(
    cache: ContentCache | None,
    requests: Sequence[FillRequest],
    *,
    background: bool,
    emit: EventSink,
) -> None:
    """Copy ``requests`` into ``cache``: before returning, or (``background``) in a
    process started for it, announced by a ``caching`` event."""
    if cache is None or not requests:
        return
    if not background:
        await anyio.to_thread.run_sync(cache.fill, requests)
        return
    pid = start_filler(cache, requests)
    if pid is not None:
        emit(
            {
                "event": "caching",
                "files": len(requests),
                "bytes": sum(r.key[2] for r in requests),
                "pid": pid,
            }
        )


def start_filler(cache: ContentCache, requests: Sequence[FillRequest]) -> int | None:
    """Start the background copy; return its process id (None if it could not start:
    the download succeeded, the content is merely not cached)."""
    job = {
        "root": str(cache.root),
        "bound": cache.bound,
        "files": [{"sha1": r.sha1, "path": r.path, "key": list(r.key)} for r in requests],
    }
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kbapps.download.cachefill"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl+C in the terminal is for the command only
        )
    except OSError:
        return None
    assert proc.stdin is not None
    try:
        with proc.stdin:
            proc.stdin.write(json.dumps(job).encode())
    except OSError:
        return None
    return proc.pid


def main() -> int:
    """The background process: read the job on stdin, fill the cache, exit 0."""
    try:
        os.nice(_NICENESS)
        job = json.load(sys.stdin.buffer)
        cache = ContentCache(Path(job["root"]), int(job["bound"]))
        requests = []
        for item in job["files"]:
            device, inode, size, mtime_ns = (int(x) for x in item["key"])
            key = (device, inode, size, mtime_ns)
            requests.append(FillRequest(str(item["sha1"]), str(item["path"]), key))
        cache.fill(requests)
    except (OSError, ValueError, KeyError, TypeError):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
