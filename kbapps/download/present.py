"""Which targets already hold their content (checked through the per-user hash cache)."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Sequence
from pathlib import Path

from kbapps.hashing import FileKey, HashCache, hash_files
from kbproto.prv import Prv

__all__ = ("present_files",)


def present_files(
    candidates: Sequence[tuple[str, Path, Prv]], hash_cache_path: Path | None
) -> set[str]:
    """Return the relative paths among ``candidates`` whose file already has the content."""
    items: list[tuple[str, FileKey]] = []
    wanted: dict[str, tuple[str, Prv]] = {}
    for rel, target, prv in candidates:
        try:
            st = os.lstat(target)  # a symlink at the name is never taken for the content
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_size == prv.size:
            items.append((str(target), FileKey.from_stat(st)))
            wanted[str(target)] = (rel, prv)
    if not items:
        return set()
    cache: HashCache | None = None
    if hash_cache_path is not None:
        try:
            cache = HashCache(hash_cache_path)
        except (OSError, sqlite3.Error):
            cache = None
    present: set[str] = set()
    try:
        for result in hash_files(items, cache=cache):
            rel, prv = wanted[result.path]
            if result.digest is not None and result.digest.sha1 == prv.sha1:
                present.add(rel)
    finally:
        if cache is not None:
            cache.close()
    return present
