"""Where a downloaded file goes: a name in a directory below an open directory descriptor.

A ``Place`` never holds a path to re-resolve later: it holds the descriptor of the
directory the user named and the components below it, each opened with ``O_NOFOLLOW``
when the file is written (``kbapps.download.safefs``).
"""

from __future__ import annotations

import enum
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from kbapps.download import safefs
from kbapps.download.errors import BadInputError
from kbproto.prv import is_valid_entry_name

__all__ = ("Occupant", "Place", "split_relpath")


class Occupant(enum.Enum):
    """What ``Place.inspect`` found at a place."""

    #: The name is free (directories on the way may be missing).
    NOTHING = "nothing"
    #: A regular file (it may or may not hold the content).
    FILE = "file"
    #: A directory at the name.
    DIRECTORY = "directory"
    #: A symlink or a special file at the name.
    OTHER = "other"
    #: A directory on the way is a symlink or not a directory.
    BLOCKED = "blocked"


def split_relpath(relpath: str) -> tuple[tuple[str, ...], str]:
    """Split a ``.prvdir`` entry's path into ``(directories, file name)``.

    Every component must be a valid ``.prvdir`` entry name: no ``..``, no absolute
    path, no empty component, no separator, no dot-name.

    Raises:
        BadInputError: the path is unsafe.
    """
    parts = relpath.split("/")
    if not all(is_valid_entry_name(p) for p in parts):
        raise BadInputError(f"unsafe path in .prvdir: {relpath!r}")
    return tuple(parts[:-1]), parts[-1]


@dataclass(frozen=True, slots=True)
class Place:
    """The file ``name`` in the directories ``dirs`` below the open directory ``root_fd``.

    Attributes:
        root_fd: the directory the user named, opened once (borrowed, not owned).
        root: its path, for messages.
        dirs: the components from ``root`` to the file's directory (may be empty).
        name: the file's name.
    """

    root_fd: int
    root: Path
    dirs: tuple[str, ...]
    name: str

    @property
    def path(self) -> Path:
        """The file's path, for messages and results (never opened by path)."""
        return self.root.joinpath(*self.dirs, self.name)

    def open_dir(self, *, create: bool) -> int:
        """Open the file's directory, creating missing directories if ``create``.

        Returns a new descriptor the caller closes.

        Raises:
            UnsafeEntry: a component is a symlink or not a directory.
            FileNotFoundError: a component is missing and ``create`` is false.
            OSError: a directory cannot be made or opened.
        """
        fd = os.dup(self.root_fd)
        current = self.root
        try:
            for name in self.dirs:
                current = current / name
                child = safefs.open_subdir(fd, name, str(current), create=create)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def inspect(self) -> tuple[Occupant, str]:
        """What is at this place now, and a reason to quote when it is in the way.

        Nothing is created or followed.
        """
        try:
            fd = self.open_dir(create=False)
        except FileNotFoundError:
            return Occupant.NOTHING, ""
        except safefs.UnsafeEntry as exc:
            return Occupant.BLOCKED, f"{exc.label} is {exc.what}"
        try:
            st = safefs.lstat_at(fd, self.name)
        finally:
            os.close(fd)
        if st is None:
            return Occupant.NOTHING, ""
        what = safefs.describe(st)
        if stat.S_ISREG(st.st_mode):
            return Occupant.FILE, f"{self.path} is {what}"
        if stat.S_ISDIR(st.st_mode):
            return Occupant.DIRECTORY, f"{self.path} is {what}"
        return Occupant.OTHER, f"{self.path} is {what}"
