"""File operations of the download client that never follow a symlink (``docs/security.md``).

Everything the client creates or writes lies below a directory: the directory of a
``.prv``'s OUT, the OUT directory of a ``.prvdir``, or the per-user content cache. That
directory is opened once, as the user named it (symlinks in the user's own path are
the user's choice), and every name below it is reached relative to an open directory
descriptor (``dir_fd=``, the ``openat`` family) from descriptors opened with
``O_NOFOLLOW``. So a symlink planted anywhere below, at a file or at an intermediate
directory, is refused rather than followed, and cannot be swapped in between a check
and a write: the check is the open.

New files are created with ``O_CREAT | O_EXCL | O_NOFOLLOW``; temporary files get
unpredictable names; an existing file is written only if it is a regular file with no
other hard link (truncating a file linked from elsewhere would change that file too).
Renames and unlinks act on the name itself and never follow a symlink.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat

from kbapps.download.errors import BadInputError

__all__ = (
    "FILE_MODE",
    "PRIVATE_MODE",
    "UnsafeEntry",
    "create_temp",
    "describe",
    "install",
    "lstat_at",
    "open_dir",
    "open_readable",
    "open_subdir",
    "open_writable",
    "unlink_at",
)

#: Files that become the user's (OUT, its ``.part``): ``rw-r--r--`` less the umask.
FILE_MODE = 0o644
#: Files and directories of the per-user cache: the owner's only.
PRIVATE_MODE = 0o600
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
#: O_NONBLOCK: opening a FIFO planted at a file's name must not hang the client (a
#: FIFO is then refused as not a regular file; a regular file ignores the flag).
_FILE_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
#: Attempts at an unused random temporary name (64 random bits each).
_TEMP_ATTEMPTS = 16


class UnsafeEntry(BadInputError):
    """An entry the client will not write through or into (a symlink, a file...).

    Attributes:
        label: the entry's path, as the user knows it.
        what: what it is (``a symlink``, ``not a directory``...).
    """

    def __init__(self, label: str, what: str, action: str = "use") -> None:
        super().__init__(f"refusing to {action} {label}: it is {what}")
        self.label = label
        self.what = what


def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    """``lstat`` of ``name`` in ``dir_fd`` (the name itself, never a link's target), or None."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def describe(st: os.stat_result | None) -> str:
    """What kind of entry ``st`` is, for a message (``a symlink``, ``a directory``...)."""
    if st is None:
        return "missing"
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISREG(mode):
        return "a regular file"
    return "a special file"


def open_dir(path: str | os.PathLike[str]) -> int:
    """Open the directory the user named (symlinks in that path are followed).

    Raises:
        OSError: it does not exist, is not a directory or cannot be opened.
    """
    return os.open(path, _DIR_FLAGS)


def open_subdir(dir_fd: int, name: str, label: str, *, create: bool, mode: int = 0o755) -> int:
    """Open (optionally creating) the directory ``name`` in ``dir_fd``, never via a symlink.

    Args:
        dir_fd: the parent directory.
        name: one path component.
        label: how the user knows the directory, for messages.
        create: make the directory if it is missing.
        mode: its mode when created (less the umask).

    Raises:
        UnsafeEntry: ``name`` is a symlink or not a directory.
        FileNotFoundError: it is missing and ``create`` is false.
        OSError: anything else (permissions, disk full).
    """
    for _ in range(2):  # a second pass when another process made it at the same moment
        try:
            return os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=dir_fd)
        except FileNotFoundError:
            if not create:
                raise
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafeEntry(label, describe(lstat_at(dir_fd, name))) from None
            raise
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, mode, dir_fd=dir_fd)
    return os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=dir_fd)


def _refuse_unless_plain(fd: int, label: str) -> None:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise UnsafeEntry(label, describe(st), "write")
    if st.st_nlink > 1:
        os.close(fd)
        raise UnsafeEntry(label, "a file with other hard links", "write")


def open_writable(dir_fd: int, name: str, label: str) -> int:
    """Open the regular file ``name`` in ``dir_fd`` read-write, creating it if missing.

    A new file is created with ``O_EXCL`` and ``FILE_MODE``; an existing one must be a
    regular file with no other hard link, reached without following a symlink.

    Raises:
        UnsafeEntry: ``name`` is a symlink, not a regular file, or has other hard links.
        OSError: anything else.
    """
    for _ in range(2):  # a second pass when another process made it at the same moment
        try:
            fd = os.open(name, os.O_RDWR | _FILE_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafeEntry(label, "a symlink", "write") from None
            raise
        else:
            _refuse_unless_plain(fd, label)
            return fd
        try:
            return os.open(
                name, os.O_RDWR | os.O_CREAT | os.O_EXCL | _FILE_FLAGS, FILE_MODE, dir_fd=dir_fd
            )
        except FileExistsError:
            continue
    raise UnsafeEntry(label, "changing under us", "write")


def open_readable(dir_fd: int, name: str) -> int | None:
    """Open the regular file ``name`` in ``dir_fd`` read-only, never via a symlink.

    Returns None when it is missing, a symlink or not a regular file.

    Raises:
        OSError: it exists but cannot be opened (permissions...).
    """
    try:
        fd = os.open(name, os.O_RDONLY | _FILE_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def create_temp(dir_fd: int, stem: str, mode: int = FILE_MODE) -> tuple[int, str]:
    """Create a new file with an unpredictable dot-name in ``dir_fd``: ``(fd, name)``.

    The name starts with ``.`` (so ``kb-prv-create`` skips a leftover) and ``stem``.
    It is opened read-write with ``O_CREAT | O_EXCL | O_NOFOLLOW``: nothing that was
    there before, a planted symlink included, can be what is written.

    Raises:
        OSError: the file cannot be created.
    """
    for _ in range(_TEMP_ATTEMPTS):
        name = f".{stem}.{secrets.token_hex(8)}.tmp"
        try:
            fd = os.open(
                name, os.O_RDWR | os.O_CREAT | os.O_EXCL | _FILE_FLAGS, mode, dir_fd=dir_fd
            )
        except FileExistsError:
            continue
        return fd, name
    raise FileExistsError(errno.EEXIST, "no unused temporary name", stem)


def install(src_dir_fd: int, src: str, dst_dir_fd: int, dst: str, *, replace: bool) -> None:
    """Move ``src`` to ``dst`` (both names, in their directories) atomically.

    With ``replace`` whatever is at ``dst`` (a file, or a symlink: the link itself, never
    its target) is replaced. Without it, an existing ``dst`` is never replaced: the
    file is hard-linked to the new name (which fails if the name exists) and the old
    name removed; where the file system has no hard links, the name is checked and
    then renamed (a small window in which a file appearing at ``dst`` is replaced).

    Raises:
        FileExistsError: ``dst`` exists and ``replace`` is false.
        OSError: the move failed.
    """
    if replace:
        os.replace(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
        return
    try:
        os.link(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
            raise
        if lstat_at(dst_dir_fd, dst) is not None:
            raise FileExistsError(errno.EEXIST, "exists", dst) from None
        os.replace(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
        return
    unlink_at(src_dir_fd, src)


def unlink_at(dir_fd: int, name: str) -> None:
    """Remove the name ``name`` in ``dir_fd`` (a symlink itself, never its target), if there."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)
