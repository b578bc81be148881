"""The per-user content cache: downloaded content by SHA-1, verified on every use."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from kbapps.download import safefs
from kbapps.download.errors import BadInputError

__all__ = ("ContentCache",)


class ContentCache:
    """Downloaded content by SHA-1 under ``root`` (``ab/<sha1>``), verified on every use.

    Entries are added by hard-linking the installed file (no copy, no extra space) or,
    across file systems, by copying it. Since OUT may later be edited in place, an
    entry is re-hashed each time it is used and removed if it no longer matches.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, sha1: str) -> Path:
        """Where the content ``sha1`` is kept."""
        return self.root / sha1[:2] / sha1

    def open_entry(self, sha1: str, size: int) -> int | None:
        """Open the entry of ``sha1`` for reading if it is a regular file of ``size``
        bytes (its bytes are checked on use); the caller closes the descriptor."""
        try:
            base = safefs.open_dir(self.root.parent)
        except OSError:
            return None
        try:
            content = safefs.open_subdir(base, self.root.name, str(self.root), create=False)
            try:
                sub = safefs.open_subdir(content, sha1[:2], sha1[:2], create=False)
                try:
                    fd = safefs.open_readable(sub, sha1)
                finally:
                    os.close(sub)
            finally:
                os.close(content)
        except (OSError, BadInputError):
            return None
        finally:
            os.close(base)
        if fd is not None and os.fstat(fd).st_size != size:
            os.close(fd)
            return None
        return fd

    def remove(self, sha1: str) -> None:
        """Drop an entry (it did not verify)."""
        with contextlib.suppress(OSError):
            os.unlink(self.path_for(sha1))

    def add(self, sha1: str, source: Path) -> None:
        """Keep ``source`` (verified content ``sha1``) in the cache; failures are ignored.

        The cache is an optimisation: a full disk or a read-only cache directory must
        not fail a download that succeeded.
        """
        target = self.path_for(sha1)
        if target.exists():
            return
        tmp = target.with_name(f"{sha1}.tmp{os.getpid()}")
        try:
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            try:
                os.link(source, tmp)
            except OSError:
                import shutil

                shutil.copyfile(source, tmp)
            os.replace(tmp, target)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
