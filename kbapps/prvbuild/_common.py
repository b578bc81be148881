"""What every part of ``kbapps.prvbuild`` shares: the error, the callbacks, the
options of a build, and ``kbproto.prv``'s constants."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from kbapps.hashing import default_workers

if TYPE_CHECKING:
    from kbapps.hashing import HashCache

# kbproto.prv's constants, repeated here so that a kb-prv-create of a directory never
# imports kbproto.prv (and, through it, dataclasses, json and re: ~25 ms of start-up,
# a tenth of a cached run over 20,000 files). A test checks they are equal.
#: ``kbproto.prv.PrvLimits().max_depth``.
MAX_DEPTH = 256
#: ``kbproto.prv.PRV_VERSION`` and ``FCS_PREFIX``.
PRV_VERSION = "0.11"
FCS_PREFIX = "head1000-"
#: ``kbproto.chunks.CHUNK_ALGORITHM`` and ``CHUNK_SIZE``: the ``chunks`` field written.
CHUNK_ALGORITHM = "sha256"
CHUNK_SIZE = 1 << 20
#: Hex digits a fragment keeps per file: its SHA-1, its head's SHA-1, its chunk root.
DIGESTS_HEX = 40 + 40 + 64

#: Called with one line per warning (a skipped entry, a cache problem).
Warn = Callable[[str], None]
#: Called with ``(files, bytes)`` deltas, for a progress bar.
ProgressCallback = Callable[[int, int], None]
#: Called with a number of files (a delta).
CountCallback = Callable[[int], None]
#: A file's identity in the hash cache: (st_dev, st_ino, st_size, st_mtime_ns).
Key = tuple[int, int, int, int]
#: A file's stored digests: (sha1, head_sha1, root of its chunk digests), hex.
Stored = tuple[str, str, str]


class PrvBuildError(Exception):
    """A ``.prv``/``.prvdir`` cannot be built; the message names the file."""


class BuildOptions(NamedTuple):
    """How to build: the same for every step of one ``.prv``/``.prvdir``.

    A NamedTuple, immutable like a frozen dataclass: ``dataclasses`` (with
    ``inspect``) would add ~15 ms to every ``kb-prv-create`` start-up, which nothing
    else in it imports.

    Attributes:
        cache: the hash cache, or None.
        workers: processes to hash on (None: one per core).
        on_progress: ``(files, bytes)`` deltas, for a progress bar.
        on_warning: one line per skipped entry or cache problem.
        exclude: ``(st_dev, st_ino)`` of files to leave out (the output file, when it
            is written inside the tree).
        on_cached: files whose digests came from the hash cache, no byte read
            (deltas; for ``kb-prv-create``'s summary line).
    """

    cache: HashCache | None = None
    workers: int | None = None
    on_progress: ProgressCallback | None = None
    on_warning: Warn | None = None
    exclude: frozenset[tuple[int, int]] = frozenset()
    on_cached: CountCallback | None = None

    def nworkers(self) -> int:
        """The number of processes to use (at least 1)."""
        return default_workers() if self.workers is None else max(1, self.workers)

    def warn(self) -> Warn:
        """``on_warning``, or a function that drops the line."""
        return self.on_warning or _ignore

    def report(self) -> ProgressCallback:
        """``on_progress``, or a function that drops the counts."""
        return self.on_progress or _ignore_counts

    def cached(self) -> CountCallback:
        """``on_cached``, or a function that drops the count."""
        return self.on_cached or _ignore_count


#: Build options when none are given.
DEFAULT_OPTIONS = BuildOptions()


def _ignore(message: str) -> None:
    pass


def _ignore_counts(files: int, nbytes: int) -> None:
    pass


def _ignore_count(files: int) -> None:
    pass


def show(name: str) -> str:
    """Return ``name`` as typed, except characters that would break the line."""
    return name.encode("utf-8", "backslashreplace").decode("utf-8").replace("\n", "\\n")


def rel(base: str, name: str) -> str:
    """Join a ``/``-separated relative directory path ("" for the root) and a name."""
    return f"{base}/{name}" if base else name
