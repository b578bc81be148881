"""``RemoteFile``: the synchronous, ``io``-compatible face of ``AsyncRemoteFile``.

A ``io.RawIOBase`` (read-only, seekable, ``readinto``), so ``io.BufferedReader``,
``pandas``, ``h5py`` and ``zipfile`` take it as any binary file. Every read is run on
the API's loop thread (``kbapps.api.loop``), where the file's HTTP client lives.
"""

from __future__ import annotations

import io
from typing import Any

from kbapps.api.asyncfile import AsyncRemoteFile
from kbapps.api.loop import loop_stopped, run_in_loop

__all__ = ("RemoteFile",)


class RemoteFile(io.RawIOBase):
    """A remote file opened by ``kbapps.api.open_file`` (see ``AsyncRemoteFile``).

    Attributes:
        name: the file's name.
        size: its size in bytes.
        remote: the ``AsyncRemoteFile`` underneath (``remote.reader.prv``, ...).
    """

    def __init__(self, remote: AsyncRemoteFile) -> None:
        super().__init__()
        self.remote = remote
        self.name = remote.name
        self.size = remote.size
        self.mode = "rb"
        self._pos = 0

    def readable(self) -> bool:
        """True."""
        return True

    def seekable(self) -> bool:
        """True."""
        return True

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes from the position (the rest of the file if negative)."""
        self._check_open()
        if size is None or size < 0:
            size = self.size - self._pos
        data = run_in_loop(self.remote.reader.read, self._pos, size)
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        """The rest of the file, in one read."""
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        """Read into ``buffer`` (a writable bytes-like object); return the byte count."""
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move the position (``io.SEEK_SET``, ``SEEK_CUR``, ``SEEK_END``)."""
        self._check_open()
        self._pos = self.remote.seek(self._pos, io.SEEK_SET)
        self._pos = self.remote.seek(offset, whence)
        return self._pos

    def tell(self) -> int:
        """The position."""
        return self._pos

    def close(self) -> None:
        """Close the file and its connections."""
        if not self.closed and not loop_stopped():
            run_in_loop(self.remote.aclose)
        super().close()

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on a closed file")
