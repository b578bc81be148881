"""SHA-1 of files, on every core, remembered in a per-user hash cache.

One job per module:

* ``digest``: one pass over one file (``FileHasher``, ``hash_file``): the whole-file
  SHA-1, the SHA-1 of its first 1000 bytes (``original_fcs``) and the SHA-256 of each
  1 MiB chunk (the digest list of ``kbproto.chunks``) from one read.
* ``cache``: the SQLite hash cache (``HashCache``), keyed by device, inode, size and
  mtime, so a second run over unchanged files reads no file content.
* ``fragments``: the per-tree fragment files beside it (``HashCache.fragments``), in
  which ``kbapps.prvbuild`` keeps finished ``.prvdir`` texts.
* ``pool``: the one process pool (``ProcessPool``), never forked while the process
  runs other threads; also ``ForkedTask``, one function beside the caller.
* ``batch``: many files at once (``hash_files``, ``hash_records``): small ones on the
  pool, big ones on threads, through the cache.

``kb-prv-create`` (``kbapps.prvbuild``) and the share's indexer (``kbapps.share``) use
what this package exports; the numbers behind the choices are in
``docs/benchmarks.md``.
"""

from __future__ import annotations

from kbapps.hashing.batch import BIG_FILE_BYTES as BIG_FILE_BYTES
from kbapps.hashing.batch import HashResult as HashResult
from kbapps.hashing.batch import RawResult as RawResult
from kbapps.hashing.batch import hash_files as hash_files
from kbapps.hashing.batch import hash_records as hash_records
from kbapps.hashing.cache import HASH_CACHE_FILENAME as HASH_CACHE_FILENAME
from kbapps.hashing.cache import RACY_WINDOW_NS as RACY_WINDOW_NS
from kbapps.hashing.cache import HashCache as HashCache
from kbapps.hashing.cache import RawKey as RawKey
from kbapps.hashing.cache import is_database_error as is_database_error
from kbapps.hashing.digest import BUFFER_SIZE as BUFFER_SIZE
from kbapps.hashing.digest import CHUNK_BYTES as CHUNK_BYTES
from kbapps.hashing.digest import FCS_HEAD_BYTES as FCS_HEAD_BYTES
from kbapps.hashing.digest import FileChangedError as FileChangedError
from kbapps.hashing.digest import FileDigest as FileDigest
from kbapps.hashing.digest import FileHasher as FileHasher
from kbapps.hashing.digest import FileKey as FileKey
from kbapps.hashing.digest import chunks_root as chunks_root
from kbapps.hashing.digest import error_text as error_text
from kbapps.hashing.digest import hash_file as hash_file
from kbapps.hashing.fragments import Buffer as Buffer
from kbapps.hashing.fragments import Fragments as Fragments
from kbapps.hashing.fragments import FragmentWriter as FragmentWriter
from kbapps.hashing.pool import PARALLEL_MIN_FILES as PARALLEL_MIN_FILES
from kbapps.hashing.pool import ForkedTask as ForkedTask
from kbapps.hashing.pool import PoolRun as PoolRun
from kbapps.hashing.pool import ProcessPool as ProcessPool
from kbapps.hashing.pool import default_workers as default_workers

__all__ = (
    "BIG_FILE_BYTES",
    "BUFFER_SIZE",
    "CHUNK_BYTES",
    "FCS_HEAD_BYTES",
    "HASH_CACHE_FILENAME",
    "PARALLEL_MIN_FILES",
    "RACY_WINDOW_NS",
    "Buffer",
    "FileChangedError",
    "FileDigest",
    "FileHasher",
    "FileKey",
    "ForkedTask",
    "FragmentWriter",
    "Fragments",
    "HashCache",
    "HashResult",
    "PoolRun",
    "ProcessPool",
    "RawKey",
    "RawResult",
    "chunks_root",
    "default_workers",
    "error_text",
    "hash_file",
    "hash_files",
    "hash_records",
    "is_database_error",
)
