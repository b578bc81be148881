"""``AsyncRemoteFile``: a read-only, seekable view of remote content for async code."""

from __future__ import annotations

import io

import anyio

from kbapps.api.ranged import RangeReader
from kbtransport.http_client import HttpClient

__all__ = ("AsyncRemoteFile",)


class AsyncRemoteFile:
    """Reads remote content by byte ranges (``kbapps.api.aio.open_file`` makes one).

    Only the ranges read are fetched (``kbapps.api.ranged``); which bytes are verified
    before they are returned is in ``kbapps.api.verify``. Use it as an async context
    manager, or call ``aclose``.

    Attributes:
        name: the file's name (from the URI or the ``.prv``).
        reader: the underlying ``RangeReader`` (its ``prv``, ``transferred``, ``verifier``).
    """

    def __init__(self, reader: RangeReader, client: HttpClient, name: str) -> None:
        self.reader = reader
        self.name = name
        self._client = client
        self._pos = 0
        self.closed = False

    @property
    def size(self) -> int:
        """The file's size in bytes."""
        return self.reader.size

    async def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes from the current position (all the rest if negative).

        Raises:
            ValueError: the file is closed.
            ContentReadError: no source delivered the bytes, or they did not verify.
        """
        self._check_open()
        if size is None or size < 0:
            size = self.size - self._pos
        data = await self.reader.read(self._pos, size)
        self._pos += len(data)
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move the position as ``io.IOBase.seek`` does; return the new position."""
        self._check_open()
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}.get(whence)
        if base is None:
            raise ValueError(f"invalid whence {whence!r}")
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        """The current position."""
        return self._pos

    async def aclose(self) -> None:
        """Close the file and its HTTP connections (again: no effect)."""
        if not self.closed:
            self.closed = True
            with anyio.CancelScope(shield=True):
                await self._client.aclose()

    async def __aenter__(self) -> AsyncRemoteFile:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on a closed file")
