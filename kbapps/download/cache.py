"""The per-user content cache: downloaded content by SHA-1, bounded, least recently used out.

Where: ``<cache dir>/content/ab/<sha1>`` (``<cache dir>``: ``$KBUCKET_CACHE_DIR``, else
``$XDG_CACHE_HOME/kbucket``, else ``~/.cache/kbucket``; see ``kbapps.cachedir``).

Rules (``docs/security.md``, README "Downloading"):

* **Never the user's inode.** An entry is a copy (``kbapps.download.copying``: a
  reflink where the file system has them, else ``copy_file_range``, else a plain
  copy) made from a downloaded file, and a file made from an entry is a copy again:
  editing or appending to a downloaded file never changes the cache, nor the reverse.
* **Verified on use.** An entry is hashed as it is copied out; one that does not
  verify is removed. An entry is only added if the file it is copied from is still the
  verified download (same device, inode, size and modification time before and after
  the copy): a file edited since is not cached.
* **Bounded.** The entries' total size stays within ``bound`` bytes (``--cache-size``,
  ``$KBUCKET_CACHE_SIZE``; 0 turns the cache off): after adding, the least recently
  used entries (oldest modification time; using an entry sets it to now) are removed
  until the total fits. A file larger than the bound is not cached, and neither is a
  file that would leave its file system less than 5 % free.
* **Safe with several clients at once.** The bookkeeping is the directory itself: an
  entry appears by an atomic rename of a complete private temporary file and leaves by
  ``unlink``; a reader holding an entry open keeps reading it even if another process
  evicts it. Two processes evicting at once may remove a little more than needed, never
  leave a partial entry. Nothing is followed through a symlink (``safefs``).
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from kbapps.download import safefs
from kbapps.download.copying import copy_bytes
from kbapps.download.errors import BadInputError

__all__ = (
    "CACHE_SIZE_ENV",
    "DEFAULT_CACHE_SIZE",
    "CacheUsage",
    "ContentCache",
    "FillRequest",
    "open_cache",
)

#: The default bound: room for a few datasets, small next to today's disks.
DEFAULT_CACHE_SIZE = 10 * 1024**3
#: Environment variable for the bound (``--cache-size`` wins over it).
CACHE_SIZE_ENV = "KBUCKET_CACHE_SIZE"
#: A temporary file older than this was left by a process that died: removed.
_STALE_TEMP_SECONDS = 24 * 3600
#: Never leave the cache's file system with less than this fraction free.
_MIN_FREE_FRACTION = 0.05
_ENTRY_RE = re.compile(r"[0-9a-f]{40}")
_SUBDIR_RE = re.compile(r"[0-9a-f]{2}")


@dataclass(frozen=True, slots=True)
class FillRequest:
    """A verified download to copy into the cache.

    Attributes:
        sha1: its content id.
        path: the downloaded file (absolute).
        key: ``(device, inode, size, mtime_ns)`` it had when it was verified; the copy
            is kept only if the file still has it.
    """

    sha1: str
    path: str
    key: tuple[int, int, int, int]

    @staticmethod
    def key_of(st: os.stat_result) -> tuple[int, int, int, int]:
        """The ``key`` of a ``stat`` result."""
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True, slots=True)
class CacheUsage:
    """What the cache holds.

    Attributes:
        entries: the number of entries.
        size: their total size in bytes.
    """

    entries: int
    size: int


class ContentCache:
    """Downloaded content by SHA-1 under ``root`` (``ab/<sha1>``), within ``bound`` bytes.

    Args:
        root: the cache directory (``<user cache dir>/content``); its parent is the
            user's (followed as named), ``root`` and everything below it are the
            cache's own (never reached through a symlink).
        bound: the most bytes the entries may hold together; 0 means no cache.
    """

    def __init__(self, root: Path, bound: int) -> None:
        self.root = root
        self.bound = bound

    def path_for(self, sha1: str) -> Path:
        """Where the entry of ``sha1`` is (for messages and tests; it is always opened
        through ``O_NOFOLLOW`` descriptors, never by this path)."""
        return self.root / sha1[:2] / sha1

    # -- directories -----------------------------------------------------------------

    def _open_root(self, *, create: bool) -> int:
        if create:
            # 0700: cached content is the user's own business.
            os.makedirs(self.root.parent, mode=0o700, exist_ok=True)
        parent = safefs.open_dir(self.root.parent)
        try:
            return safefs.open_subdir(
                parent, self.root.name, str(self.root), create=create, mode=0o700
            )
        finally:
            os.close(parent)

    def _open_subdir(self, root_fd: int, sha1: str, *, create: bool) -> int:
        label = str(self.root / sha1[:2])
        return safefs.open_subdir(root_fd, sha1[:2], label, create=create, mode=0o700)

    # -- using entries ---------------------------------------------------------------

    def open_entry(self, sha1: str, size: int) -> int | None:
        """Open the entry of ``sha1`` for reading if it holds ``size`` bytes, and mark
        it used (least recently used goes first). The caller checks its bytes and
        closes the descriptor; None when there is no usable entry."""
        if self.bound <= 0:
            return None
        try:
            root = self._open_root(create=False)
        except (OSError, BadInputError):
            return None
        try:
            sub = self._open_subdir(root, sha1, create=False)
            try:
                fd = safefs.open_readable(sub, sha1)
            finally:
                os.close(sub)
        except (OSError, BadInputError):
            return None
        finally:
            os.close(root)
        if fd is None:
            return None
        if os.fstat(fd).st_size != size:
            os.close(fd)
            return None
        with contextlib.suppress(OSError):
            os.utime(fd)  # used now: the last to be evicted
        return fd

    def remove(self, sha1: str) -> None:
        """Drop the entry of ``sha1`` (it did not verify)."""
        with contextlib.suppress(OSError, BadInputError):
            root = self._open_root(create=False)
            try:
                sub = self._open_subdir(root, sha1, create=False)
                try:
                    safefs.unlink_at(sub, sha1)
                finally:
                    os.close(sub)
            finally:
                os.close(root)

    # -- adding ----------------------------------------------------------------------

    def fill(self, requests: Sequence[FillRequest]) -> int:
        """Copy each verified download into the cache, then evict down to the bound.

        Failures are skipped: the cache is an optimisation, and a full disk or a
        read-only cache directory must not fail a download that succeeded.

        Returns:
            The number of entries added.
        """
        if self.bound <= 0 or not requests:
            return 0
        try:
            root = self._open_root(create=True)
        except (OSError, BadInputError):
            return 0
        added = 0
        try:
            for request in requests:
                with contextlib.suppress(OSError, BadInputError):
                    added += self._add(root, request)
            self._evict(root)
        finally:
            os.close(root)
        return added

    def _add(self, root: int, request: FillRequest) -> int:
        size = request.key[2]
        if size > self.bound or not _room_for(root, size):
            return 0
        source = os.open(request.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            st = os.fstat(source)
            if not stat.S_ISREG(st.st_mode) or FillRequest.key_of(st) != request.key:
                return 0  # changed since it was verified: not the content any more
            sub = self._open_subdir(root, request.sha1, create=True)
            try:
                fd, tmp = safefs.create_temp(sub, request.sha1, safefs.PRIVATE_MODE)
                try:
                    try:
                        copy_bytes(source, fd, size)
                    finally:
                        os.close(fd)
                    if FillRequest.key_of(os.fstat(source)) != request.key:
                        raise OSError("the downloaded file changed while it was copied")
                    os.replace(tmp, request.sha1, src_dir_fd=sub, dst_dir_fd=sub)
                except BaseException:
                    safefs.unlink_at(sub, tmp)
                    raise
            finally:
                os.close(sub)
        finally:
            os.close(source)
        return 1

    # -- the bound -------------------------------------------------------------------

    def _scan(self, root: int) -> Iterator[tuple[int, int, str, str]]:
        """Yield ``(mtime_ns, size, subdir, name)`` of every entry; stale temporary
        files left by dead processes are removed on the way."""
        stale = time.time_ns() - _STALE_TEMP_SECONDS * 1_000_000_000
        for subname in sorted(os.listdir(root)):
            if not _SUBDIR_RE.fullmatch(subname):
                continue
            try:
                sub = self._open_subdir(root, subname, create=False)
            except (OSError, BadInputError):
                continue
            try:
                for name in os.listdir(sub):
                    st = safefs.lstat_at(sub, name)
                    if st is None or not stat.S_ISREG(st.st_mode):
                        continue
                    if _ENTRY_RE.fullmatch(name):
                        yield st.st_mtime_ns, st.st_size, subname, name
                    elif name.startswith(".") and st.st_mtime_ns < stale:
                        with contextlib.suppress(OSError):
                            safefs.unlink_at(sub, name)
            finally:
                os.close(sub)

    def _evict(self, root: int) -> None:
        entries = sorted(self._scan(root))
        total = sum(size for _, size, _, _ in entries)
        for _mtime, size, subname, name in entries:
            if total <= self.bound:
                break
            with contextlib.suppress(OSError, BadInputError):
                sub = self._open_subdir(root, subname, create=False)
                try:
                    safefs.unlink_at(sub, name)
                finally:
                    os.close(sub)
            total -= size

    def usage(self) -> CacheUsage:
        """The entries and their total size (an empty cache if it does not exist)."""
        try:
            root = self._open_root(create=False)
        except FileNotFoundError:
            return CacheUsage(0, 0)
        try:
            entries = list(self._scan(root))
        finally:
            os.close(root)
        return CacheUsage(len(entries), sum(size for _, size, _, _ in entries))

    def clear(self) -> CacheUsage:
        """Remove every entry; return what was removed.

        Raises:
            OSError: the cache directory cannot be read.
            BadInputError: it is a symlink or not a directory.
        """
        try:
            root = self._open_root(create=False)
        except FileNotFoundError:
            return CacheUsage(0, 0)
        removed = CacheUsage(0, 0)
        try:
            for _mtime, size, subname, name in list(self._scan(root)):
                sub = self._open_subdir(root, subname, create=False)
                try:
                    safefs.unlink_at(sub, name)
                finally:
                    os.close(sub)
                removed = CacheUsage(removed.entries + 1, removed.size + size)
        finally:
            os.close(root)
        return removed


def _room_for(root: int, size: int) -> bool:
    """True if adding ``size`` bytes leaves the file system at least 5 % free."""
    try:
        vfs = os.statvfs(root)
    except OSError:
        return True
    free = vfs.f_bavail * vfs.f_frsize
    return free - size >= vfs.f_blocks * vfs.f_frsize * _MIN_FREE_FRACTION


def open_cache(root: Path | None, bound: int) -> ContentCache | None:
    """The content cache at ``root`` within ``bound`` bytes; None when it is off."""
    if root is None or bound <= 0:
        return None
    return ContentCache(root, bound)
