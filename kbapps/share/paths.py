"""Mapping request paths to files inside a share directory, safely (docs/security.md).

Strategy
--------
The HTTP layer (``kbtransport.http_server``) splits the raw request path on ``/`` and
*then* percent-decodes each segment, so an encoded ``%2f`` or ``%5c`` can only land
inside one segment. Here every segment is checked before the file system is touched:

1. refused outright (``UnsafePathError``, answered 400): an empty segment (``//``, a
   leading ``/`` that made the path absolute), any segment starting with ``.`` (so
   ``.``, ``..``, ``.kbucket``, ``.git``), any ``/``, ``\\`` or NUL or other control
   character inside a segment, a segment over 255 bytes, more than 64 segments, or
   more than 4096 bytes in all;
2. then the path is resolved (``os.path.realpath``, following every symlink) and must
   still lie inside the share's real root, with no dot-component in the resolved
   relative path either (a symlink to ``.kbucket/private.pem`` is refused too), and
   must be a regular file (or a directory, for listings); otherwise ``NotFoundError``
   (404), which does not reveal whether something exists outside the share;
3. the file is opened with ``O_NOFOLLOW`` and ``O_NONBLOCK`` (a FIFO swapped in cannot
   block us) and ``fstat``-checked to be the same regular file that was resolved.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

__all__ = (
    "MAX_PATH_BYTES",
    "MAX_SEGMENTS",
    "MAX_SEGMENT_BYTES",
    "UNLISTED_DIR_NAMES",
    "DirListing",
    "NotFoundError",
    "ShareDir",
    "SharePathError",
    "SharedFile",
    "UnsafePathError",
    "check_segments",
)

#: Linux PATH_MAX; no sane share path is longer.
MAX_PATH_BYTES = 4096
#: NAME_MAX on common Linux file systems.
MAX_SEGMENT_BYTES = 255
#: Directory depth accepted in a request; deeper trees are not realistic shares.
MAX_SEGMENTS = 64
#: Folders never listed nor indexed, as the original share did: ``node_modules`` holds
#: a JavaScript project's dependencies, not data (``docs/protocol.md`` §11, "Listings").
#: Their files are still served by explicit path, like any unindexed file.
UNLISTED_DIR_NAMES = frozenset({"node_modules"})


class SharePathError(Exception):
    """Base of path refusals.

    Attributes:
        status: the HTTP status to answer with.
    """

    status = 400


class UnsafePathError(SharePathError):
    """The request path is malformed or names something never served (dot-names...)."""

    status = 400


class NotFoundError(SharePathError):
    """No regular file (or directory) by that path inside the share."""

    status = 404


def check_segments(segments: Sequence[str]) -> tuple[str, ...]:
    """Check decoded request path segments; return them as a tuple.

    Raises:
        UnsafePathError: one of the refusals of step 1 in the module docstring.
    """
    if len(segments) > MAX_SEGMENTS:
        raise UnsafePathError("Unsafe path: too many components")
    total = 0
    for segment in segments:
        if segment == "":
            raise UnsafePathError("Unsafe path: empty component")
        if segment.startswith("."):
            raise UnsafePathError("Unsafe path: component starts with '.'")
        if "/" in segment or "\\" in segment:
            raise UnsafePathError("Unsafe path: slash or backslash inside a component")
        if any(ord(c) < 32 or ord(c) == 127 for c in segment):
            raise UnsafePathError("Unsafe path: control character")
        try:
            size = len(segment.encode("utf-8"))
        except UnicodeEncodeError:
            raise UnsafePathError("Unsafe path: not valid UTF-8") from None
        if size > MAX_SEGMENT_BYTES:
            raise UnsafePathError("Unsafe path: component too long")
        total += size + 1
    if total > MAX_PATH_BYTES:
        raise UnsafePathError("Unsafe path: too long")
    return tuple(segments)


@dataclass(frozen=True, slots=True)
class SharedFile:
    """An open regular file of the share.

    Attributes:
        file: open for binary reading; the caller closes it (or hands it to a
            ``FileBody``, whose server closes it).
        stat: ``fstat`` of the open file (size, mtime for cache keys).
        relpath: the path relative to the share root, ``/``-separated.
    """

    file: BinaryIO
    stat: os.stat_result
    relpath: str


@dataclass(frozen=True, slots=True)
class DirListing:
    """A directory's visible entries, sorted by name.

    Attributes:
        files: ``(name, size)`` of regular files.
        dirs: names of sub-directories.
    """

    files: tuple[tuple[str, int], ...]
    dirs: tuple[str, ...]

    def to_json(self) -> dict[str, list[dict[str, object]]]:
        """``{"files": [{"name", "size"}], "dirs": [{"name"}]}`` (docs/http.md readdir)."""
        return {
            "files": [{"name": name, "size": size} for name, size in self.files],
            "dirs": [{"name": name} for name in self.dirs],
        }


class ShareDir:
    """A shared directory: the only door from request paths to the file system.

    Args:
        root: the share directory (resolved once, here).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(os.path.realpath(root))
        if not self.root.is_dir():
            raise NotADirectoryError(f"share directory does not exist: {root}")
        self._prefix = str(self.root).rstrip(os.sep) + os.sep

    def _inside(self, real: str) -> str | None:
        """The ``/``-joined path of ``real`` relative to the root, if visible; else None."""
        if real == str(self.root):
            return ""
        if not real.startswith(self._prefix):
            return None
        relative = real[len(self._prefix) :]
        parts = relative.split(os.sep)
        if any(part.startswith(".") for part in parts):
            return None
        return "/".join(parts)

    def resolve(self, segments: Sequence[str], *, directory: bool = False) -> tuple[str, str]:
        """Resolve request segments to ``(real path, relative path)``.

        Args:
            segments: decoded request path segments (no empty ones).
            directory: want a directory (listings) instead of a regular file.

        Raises:
            UnsafePathError: the segments fail ``check_segments``.
            NotFoundError: nothing suitable inside the share by that path.
        """
        parts = check_segments(segments)
        real = os.path.realpath(os.path.join(self.root, *parts))
        relative = self._inside(real)
        if relative is None:
            raise NotFoundError("No such file in this share")
        try:
            st = os.stat(real)
        except OSError:
            raise NotFoundError("No such file in this share") from None
        wanted = stat.S_ISDIR if directory else stat.S_ISREG
        if not wanted(st.st_mode):
            kind = "directory" if directory else "regular file"
            raise NotFoundError(f"Not a {kind} in this share")
        return real, relative

    def open_file(self, segments: Sequence[str]) -> SharedFile:
        """Open the regular file the segments name, for reading.

        Raises:
            UnsafePathError, NotFoundError: see ``resolve``.
        """
        real, relative = self.resolve(segments)
        flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
        flags |= getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(real, flags)
        except OSError:
            raise NotFoundError("No such file in this share") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise NotFoundError("Not a regular file in this share")
            # The resolved path may have been swapped since realpath(); the file we hold
            # must still be the one inside the share.
            if os.path.realpath(real) != real:
                raise NotFoundError("No such file in this share")
            file = cast(BinaryIO, os.fdopen(fd, "rb", buffering=0))
        except BaseException:
            os.close(fd)
            raise
        return SharedFile(file=file, stat=st, relpath=relative)

    def list_dir(self, segments: Sequence[str]) -> DirListing:
        """List a directory of the share: no dot-names, no symlinks leading out, no
        ``UNLISTED_DIR_NAMES`` folders.

        Args:
            segments: the directory's decoded segments; ``()`` is the root, and one
                trailing empty segment (``readdir/sub/``) is allowed.

        Raises:
            UnsafePathError, NotFoundError: see ``resolve``.
        """
        parts = tuple(segments)
        if parts and parts[-1] == "":
            parts = parts[:-1]
        real, _ = self.resolve(parts, directory=True)
        files: list[tuple[str, int]] = []
        dirs: list[str] = []
        try:
            entries = list(os.scandir(real))
        except OSError:
            raise NotFoundError("Directory cannot be read") from None
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_symlink() and self._inside(os.path.realpath(entry.path)) is None:
                    continue  # a link leading out of the share (or into a dot-dir)
                st = entry.stat()
            except OSError:
                continue  # vanished or dangling: not listed
            if stat.S_ISREG(st.st_mode):
                files.append((entry.name, st.st_size))
            elif stat.S_ISDIR(st.st_mode) and entry.name not in UNLISTED_DIR_NAMES:
                dirs.append(entry.name)
        files.sort()
        dirs.sort()
        return DirListing(files=tuple(files), dirs=tuple(dirs))
