"""``.prv`` stand-ins: a share publishes pointers to content stored elsewhere.

The original share did this (``docs/protocol.md`` §11, "Stand-ins"; its readdir's
"virtual files"): a file ``X.prv`` with no ``X`` beside it is listed as a file ``X``
whose size and ``prv`` come from the pointer, so a lab can list data that lives on
another share (or nowhere yet) next to its own files, and clients locate ``X`` by its
SHA-1. The rules, per directory:

* ``X.prv`` next to an entry ``X`` (file or folder) is left out of the listing: ``X``
  stands for itself.
* ``X.prv`` alone, when it is a valid ``.prv`` of at most ``MAX_STANDIN_BYTES``, is
  listed as the file ``X`` (``size`` = ``original_size``, ``prv`` = the pointer with
  ``original_path`` = ``X``, as the share's own files are described).
* Anything else (not JSON, a bad checksum, too large, not a regular file) is not a
  stand-in: ``X.prv`` is listed as the plain file it is.

Stand-ins are never put in the share's index: the share does not hold their bytes, so
a find must never name it as a source. A download of ``X`` is resolved through the
network by SHA-1 (``ShareApp``); ``/ID/prv/X`` answers the pointer.

Every file is opened through ``ShareDir.open_file``, so a stand-in obeys the same
path rules as any served file (no dot-names, nothing outside the share).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from kbapps.share.paths import DirListing, ShareDir, SharePathError
from kbproto.prv import Prv, PrvFormatError, PrvLimits, parse_prv

__all__ = ("MAX_STANDIN_BYTES", "STANDIN_SUFFIX", "Standin", "Standins")

#: The suffix that makes a file a pointer.
STANDIN_SUFFIX = ".prv"
#: Larger files are not read as pointers: a ``.prv`` is a few hundred bytes (under
#: 5 KiB even with a 4,096-character ``original_path``), and a listing reads every
#: candidate.
MAX_STANDIN_BYTES = 64 * 1024
_LIMITS = PrvLimits(max_bytes=MAX_STANDIN_BYTES)


@dataclass(frozen=True, slots=True)
class Standin:
    """A file a share lists but does not hold: ``name`` stands for ``name.prv``.

    Attributes:
        name: the listed name (``X`` for ``X.prv``).
        prv: the pointer, with ``original_path`` set to ``name``.
    """

    name: str
    prv: Prv


class Standins:
    """Finds the stand-ins of a share's directories (see the module docstring).

    Args:
        share: the shared directory; every pointer is opened through it.
    """

    def __init__(self, share: ShareDir) -> None:
        self._share = share

    def apply(
        self, segments: Sequence[str], listing: DirListing
    ) -> tuple[DirListing, tuple[Standin, ...]]:
        """Split a directory's listing into what stays listed and its stand-ins.

        Args:
            segments: the directory's decoded segments (``()`` for the root).
            listing: ``ShareDir.list_dir`` of that directory.

        Returns:
            The listing without the ``X.prv`` files that are hidden or replaced, and
            the stand-ins, sorted by name.
        """
        present = {name for name, _ in listing.files}
        present.update(listing.dirs)
        kept: list[tuple[str, int]] = []
        found: list[Standin] = []
        for name, size in listing.files:
            stem = _stem(name)
            if stem is None:
                kept.append((name, size))
            elif stem in present:
                continue  # X is there: X.prv is not shown (the original did the same)
            elif (standin := self._read(segments, stem, size)) is not None:
                found.append(standin)
            else:
                kept.append((name, size))
        if not found and len(kept) == len(listing.files):
            return listing, ()
        return DirListing(files=tuple(kept), dirs=listing.dirs), tuple(found)

    def find(self, segments: Sequence[str]) -> Standin | None:
        """The stand-in a request path names: None when ``X`` itself is there (a file or
        a folder: ``X.prv`` is hidden beside it, as in listings) or ``X.prv`` is not a
        valid pointer.

        Args:
            segments: the decoded request path of ``X`` (not of ``X.prv``).
        """
        if not segments or not segments[-1]:
            return None
        for directory in (False, True):
            try:
                self._share.resolve(segments, directory=directory)
            except SharePathError:
                continue
            return None
        return self._read(segments[:-1], segments[-1], None)

    def _read(self, directory: Sequence[str], stem: str, size: int | None) -> Standin | None:
        if size is not None and size > MAX_STANDIN_BYTES:
            return None
        try:
            shared = self._share.open_file((*directory, stem + STANDIN_SUFFIX))
        except SharePathError:
            return None
        with shared.file:
            if shared.stat.st_size > MAX_STANDIN_BYTES:
                return None
            data = shared.file.read(MAX_STANDIN_BYTES + 1)
        try:
            prv = parse_prv(data, limits=_LIMITS)
        except PrvFormatError:
            return None
        # Described like the share's own files: original_path is the name (never the
        # pointer's own, possibly absolute, path from another machine).
        return Standin(stem, replace(prv, path=stem))


def _stem(name: str) -> str | None:
    """``X`` for ``X.prv`` (a name that could be listed), else None."""
    if not name.endswith(STANDIN_SUFFIX):
        return None
    stem = name[: -len(STANDIN_SUFFIX)]
    return stem if stem and not stem.startswith(".") else None
