"""A share's files read from a store the app keeps (``ShareFiles``), not copied into the core.

Strategy
--------
``kbproto.index.ShareIndex`` holds every file of a share in dicts: ~400 B of Python
objects per file, 400 MB for a million files, beside the app's own index of the same
files. A share whose app already keeps its files in a store (``kbapps.share.index``:
SQLite) hands the core that store instead (``ShareCore(..., files=store)``), and the
core keeps nothing per file: ``StoreView`` reads a content id's representative
(``(path, size)``) when it reports it to the parent or answers a find, and streams
the content ids for a full sync (``UplinkSync`` holds an iterator, not a snapshot).
The app tells the core which content ids changed (``ShareCore.content_changed``);
the uplink reports each one's state *at the time it is sent*, as for ``ShareIndex``.

The core stays sans-IO: it only calls the store's methods; whatever I/O they do is
the app's (a point query in SQLite's page cache, microseconds). A representative the
wire could not carry (a path longer than ``MAX_PATH``, a size out of range) is treated
as absent, so a store cannot make the core send a malformed message.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from kbproto.messages import MAX_PATH, MAX_SIZE, ShareIndexUpdate

__all__ = ("ShareFiles", "StoreView")


class ShareFiles(Protocol):
    """What a share's core reads of its files (the app's index implements it)."""

    def representative(self, raw: bytes) -> tuple[str, int] | None:
        """``(path, size)`` reported for content ``raw`` (20 raw bytes), or None."""
        ...

    def content_keys(self) -> Iterable[bytes]:
        """Every content id (raw), for a full sync; may be read lazily."""
        ...

    @property
    def content_count(self) -> int:
        """Number of distinct content ids."""
        ...

    def __len__(self) -> int:
        """Number of files."""
        ...


class StoreView:
    """The core's view of a ``ShareFiles`` store: what ``kbproto.index.ShareIndex``
    offers the node and its ``UplinkSync``, with nothing kept per file.

    Args:
        files: the app's store.
    """

    def __init__(self, files: ShareFiles) -> None:
        self._files = files
        # Representatives read by ``report_cost`` for the message ``report`` builds
        # next (the uplink costs a batch's keys, then builds it, in one step).
        self._read: dict[bytes, tuple[str, int] | None] = {}

    def __len__(self) -> int:
        """Number of files."""
        return len(self._files)

    @property
    def content_count(self) -> int:
        """Number of distinct content ids."""
        return self._files.content_count

    def keys(self) -> Iterable[bytes]:
        """The content ids for a full sync, as the store yields them."""
        return self._files.content_keys()

    def representative(self, raw: bytes) -> tuple[str, int] | None:
        """The ``(path, size)`` reported for content ``raw``, or None."""
        rep = self._files.representative(raw)
        if rep is None:
            return None
        path, size = rep
        if not path or len(path) > MAX_PATH or "\x00" in path or not 0 <= size <= MAX_SIZE:
            return None
        return rep

    def report_cost(self, raw: bytes) -> int:
        """The worst-case encoded size of content ``raw``'s entry in a report."""
        rep = self._read[raw] = self.representative(raw)
        # Worst case: every path character escaped as \u00XX by the JSON encoder.
        return 64 + (6 * len(rep[0]) if rep is not None else 0)

    def report(self, reset: bool, seq: int, keys: list[bytes]) -> ShareIndexUpdate:
        """One index message for content ids ``keys``, from their state now."""
        read, self._read = self._read, {}
        put: list[tuple[str, str, int]] = []
        drop: list[str] = []
        for key in keys:
            rep = read[key] if key in read else self.representative(key)
            if rep is None:
                drop.append(key.hex())
            else:
                put.append((key.hex(), rep[0], rep[1]))
        return ShareIndexUpdate(seq=seq, reset=reset, put=tuple(put), drop=tuple(drop))
