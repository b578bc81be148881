"""Copying a file's bytes between open descriptors as cheaply as the file system allows.

A reflink (``FICLONE``: the copy shares the blocks copy-on-write, so it costs nothing
and writing either file never changes the other) on file systems that have them
(btrfs, XFS, bcachefs...); else ``os.copy_file_range`` (the kernel copies, no trip
through user space); else reads and writes. Never a hard link: the two files are two
inodes, whatever happens to one later.
"""

from __future__ import annotations

import errno
import os
import sys

__all__ = ("FICLONE", "clone", "copy_bytes")

#: ``_IOW(0x94, 9, int)`` from ``linux/fs.h``: make the target share the source's
#: extents (the ioctl ``cp --reflink`` uses).
FICLONE = 0x40049409
#: Largest piece copied per call: big enough to cost few calls, small enough to stop
#: soon when interrupted.
_PIECE = 64 * 1024 * 1024
#: copy_file_range errors that mean "not here": cross-device, unsupported, too old.
_NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM}


def clone(src_fd: int, dst_fd: int) -> bool:
    """Make ``dst_fd`` a reflink of ``src_fd``; False where the file system cannot.

    ``dst_fd`` must be an empty regular file opened for writing.
    """
    if not sys.platform.startswith("linux"):
        return False
    import fcntl

    try:
        fcntl.ioctl(dst_fd, FICLONE, src_fd)
    except OSError:
        return False
    return True


def copy_bytes(src_fd: int, dst_fd: int, size: int) -> None:
    """Give the empty file ``dst_fd`` the first ``size`` bytes of ``src_fd``.

    Raises:
        OSError: reading or writing failed, or ``src_fd`` has fewer than ``size`` bytes.
    """
    if clone(src_fd, dst_fd):
        os.ftruncate(dst_fd, size)
        return
    done = 0
    kernel_copy = getattr(os, "copy_file_range", None)  # Linux only
    try:
        while kernel_copy is not None and done < size:
            n = kernel_copy(src_fd, dst_fd, min(_PIECE, size - done), done, done)
            if n == 0:
                break
            done += n
    except OSError as exc:
        if exc.errno not in _NO_KERNEL_COPY:
            raise
    while done < size:  # where the kernel could not copy: through user space
        data = os.pread(src_fd, min(1024 * 1024, size - done), done)
        if not data:
            break
        view = memoryview(data)
        while view:
            written = os.pwrite(dst_fd, view, done)
            view = view[written:]
            done += written
    if done != size:
        raise OSError(errno.EIO, f"source ended after {done} of {size} bytes")
