"""Building ``.prv`` and ``.prvdir`` documents from files on disk (docs/formats.md, §3.3).

Two steps, so a command can show a progress bar with known totals:

1. ``scan_directory`` walks the tree (``_scan``): no recursion limit, dot-names
   skipped, symlinks followed only inside the tree and never in a loop, special files
   and names a ``.prvdir`` cannot hold skipped with a warning.
2. ``build_prvdir`` hashes what the scan found with ``kbapps.hashing`` (cache, all
   cores) and assembles the tree bottom-up (``_model``). Every ``original_path`` is
   the file's path relative to the directory, never absolute. That is the model;
   ``kb-prv-create`` uses the fast path, ``write_tree`` (or ``plan_prvdir`` then
   ``write_planned``, or ``write_prvdir``/``build_prvdir_bytes`` for a scan), which
   writes the same bytes straight from the digests (a hypothesis test compares
   them):

   * ``_scan``: the walk, which lists directories in the document's order;
   * ``_plan``: which directories are unchanged since their fragment was stored (on
     a re-run the walk and those checks are shared by two processes);
   * ``_worker``: the files to hash, cut into chunks, read, hashed and turned into
     finished ``.prvdir`` text by one process (the job ``kbapps.hashing.pool`` runs
     on this process and its workers, fed while the walk still runs);
   * ``_collect``: what the workers report, per directory, and the big files they
     leave to this process;
   * ``_fragments``: per tree, one checksummed file in the cache directory keeps
     every directory's text, the key of each of its files (name, dev, ino, size,
     mtime_ns) and their digests: an unchanged directory costs one ``stat`` per file
     and a comparison, and a changed one reads only the files whose key is new;
   * ``_text``: the ``.prvdir`` text from digests;
   * ``_write``: the entry points. ``write_tree`` plans a tree described before; a
     tree never described is hashed while it is walked, and written out (document
     and fragment file) a directory at a time as they complete (``_emit``);
   * ``_model``: ``build_prv`` and the model path; ``_common``: ``BuildOptions``,
     the error and the constants.

Every step takes one ``BuildOptions`` (cache, workers, callbacks, files to leave
out). Everything is linear in the number of entries: 100,000 files is a list of
100,000 tuples, chunks of 128 files and one pass to assemble.
"""

from __future__ import annotations

from kbapps.prvbuild._common import BuildOptions, PrvBuildError
from kbapps.prvbuild._model import build_prv, build_prvdir
from kbapps.prvbuild._plan import TreePlan, plan_prvdir
from kbapps.prvbuild._scan import ScannedDir, ScannedFile, TreeScan, scan_directory
from kbapps.prvbuild._text import files_fragment
from kbapps.prvbuild._write import build_prvdir_bytes, write_planned, write_prvdir, write_tree

__all__ = (
    "BuildOptions",
    "PrvBuildError",
    "ScannedDir",
    "ScannedFile",
    "TreePlan",
    "TreeScan",
    "build_prv",
    "build_prvdir",
    "build_prvdir_bytes",
    "files_fragment",
    "plan_prvdir",
    "scan_directory",
    "write_planned",
    "write_prvdir",
    "write_tree",
)
