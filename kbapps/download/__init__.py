"""The download client: find content by SHA-1, fetch it verified, resume, cache (docs/commands.md).

Strategy
--------
A ``.prv`` names bytes by SHA-1 and size; nothing a source says is trusted until every
byte has been hashed. The rules, in the order a download applies them:

* **Local first.** A file of size 0 needs no network; an OUT that already holds the
  content (size, then SHA-1 through the per-user hash cache) is kept as it is. Then
  the per-user content cache
  (``<cache dir>/content/ab/<sha1>``), copied out *with* hashing, so a corrupted cache
  entry is dropped rather than installed. Then an existing ``OUT.part`` whose sidecar
  (``OUT.part.json``: expected SHA-1 and size) matches is resumed: its prefix is
  re-hashed from disk (64 KiB reads, bounded memory) so the final check covers every
  byte. A ``.part`` without a matching sidecar belongs to other content and is
  discarded, never resumed.
* **Find, then sources in order.** ``GET <hub>/find/<sha1>`` gives ``urls`` best first
  (docs/http.md: the share's own URL, then the hubs nearest the share, then the queried
  node); the client adds ``<hub>/sha1/<sha1>`` last, the one address it knows it can
  reach. Each source is asked with ``Range: bytes=<offset>-`` when bytes are already
  on disk, so a later source continues where an earlier one stopped; what makes a
  source be dropped is in ``transfer``.
* **Several sources at once for large files.** A file of ``parallel_min_size`` or more
  held by two nodes or more (``sources``: URLs grouped by node) starts from the best
  one alone (``probe``) and, when ``ramp`` finds the client mostly idle (the source,
  not the client, sets the pace), goes on in pieces
  from up to ``max_sources`` of them at once (``parallel``, ``pieces``), each unit
  checked against the ``.prv``'s chunk digests when it has them (``digests``) and
  written in place; finished pieces are listed in the sidecar for a resume.
* **Nothing wrong is ever at OUT.** Bytes go to ``OUT.part``; ``OUT`` appears only by an
  atomic rename after the SHA-1 and size matched. On failure OUT is untouched, and a
  file already at OUT is replaced only with ``--force`` (``conflicts``).
* **The cache holds copies.** Once every file is in place, the downloaded files are
  copied into the content cache (``cache``: a reflink, else ``copy_file_range``; never a
  hard link), by ``kb-prv-download`` in a background process (``cachefill``) so the
  user does not wait for the copy; the cache stays within its bound, least recently
  used content evicted first.
* **Directories.** A ``.prvdir`` is fanned out over a few concurrent workers (``prvdir``).
* **Never through a link.** Every file the client writes is reached from an open
  directory descriptor with ``O_NOFOLLOW`` at each step (``safefs``, ``places``): a
  symlink planted at ``OUT.part``, at a partial file, at ``.kbucket-partial`` or at a
  directory below a ``.prvdir``'s OUT is refused, never followed (``docs/security.md``).

One job per module: ``errors`` (exceptions and exit codes), ``options`` (``ClientOptions``,
the hub URL), ``inputs`` (reading the ``.prv``), ``find`` (the hub's answer, the source
order), ``partfile`` (``OUT.part`` and its sidecar), ``cache`` (the content cache),
``copying`` (reflinks and kernel copies), ``cachefill`` (the cache's background copy),
``progress`` (counting for the progress bar), ``transfer`` (one content from its
sources, the writer thread), ``job`` (one content to one target, local first),
``present`` (files already in place), ``conflicts`` (what is in a target's way),
``safefs`` (file operations that never follow a
symlink), ``places`` (where a file goes, below an open directory), ``single``
(``download_prv``), ``prvdir`` (``download_prvdir``) and ``results`` (what a download
returns, and its events).
"""

from __future__ import annotations

from kbapps.download.cache import CACHE_SIZE_ENV as CACHE_SIZE_ENV
from kbapps.download.cache import DEFAULT_CACHE_SIZE as DEFAULT_CACHE_SIZE
from kbapps.download.cache import CacheUsage as CacheUsage
from kbapps.download.cache import ContentCache as ContentCache
from kbapps.download.errors import EXIT_BAD_INPUT as EXIT_BAD_INPUT
from kbapps.download.errors import EXIT_NOT_FOUND as EXIT_NOT_FOUND
from kbapps.download.errors import EXIT_OK as EXIT_OK
from kbapps.download.errors import EXIT_UNREACHABLE as EXIT_UNREACHABLE
from kbapps.download.errors import BadInputError as BadInputError
from kbapps.download.errors import ClientError as ClientError
from kbapps.download.errors import ConflictError as ConflictError
from kbapps.download.errors import DownloadFailedError as DownloadFailedError
from kbapps.download.errors import HubUnreachableError as HubUnreachableError
from kbapps.download.errors import NotFoundError as NotFoundError
from kbapps.download.errors import SourceFailure as SourceFailure
from kbapps.download.find import FindResult as FindResult
from kbapps.download.find import download_sources as download_sources
from kbapps.download.find import find_content as find_content
from kbapps.download.inputs import load_prv_file as load_prv_file
from kbapps.download.job import EMPTY_SHA1 as EMPTY_SHA1
from kbapps.download.options import CONTENT_CACHE_DIRNAME as CONTENT_CACHE_DIRNAME
from kbapps.download.options import DEFAULT_HUB_URL as DEFAULT_HUB_URL
from kbapps.download.options import HUB_URL_ENV as HUB_URL_ENV
from kbapps.download.options import ClientOptions as ClientOptions
from kbapps.download.options import default_options as default_options
from kbapps.download.options import make_http_client as make_http_client
from kbapps.download.options import parse_size as parse_size
from kbapps.download.options import resolve_hub_url as resolve_hub_url
from kbapps.download.prvdir import PARTIAL_DIRNAME as PARTIAL_DIRNAME
from kbapps.download.prvdir import download_prvdir as download_prvdir
from kbapps.download.results import DownloadResult as DownloadResult
from kbapps.download.results import EventSink as EventSink
from kbapps.download.results import PrvDirResult as PrvDirResult
from kbapps.download.single import download_prv as download_prv

__all__ = (
    "CACHE_SIZE_ENV",
    "CONTENT_CACHE_DIRNAME",
    "DEFAULT_CACHE_SIZE",
    "DEFAULT_HUB_URL",
    "EMPTY_SHA1",
    "EXIT_BAD_INPUT",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "HUB_URL_ENV",
    "PARTIAL_DIRNAME",
    "BadInputError",
    "CacheUsage",
    "ClientError",
    "ClientOptions",
    "ConflictError",
    "ContentCache",
    "DownloadFailedError",
    "DownloadResult",
    "EventSink",
    "FindResult",
    "HubUnreachableError",
    "NotFoundError",
    "PrvDirResult",
    "SourceFailure",
    "default_options",
    "download_prv",
    "download_prvdir",
    "download_sources",
    "find_content",
    "load_prv_file",
    "make_http_client",
    "parse_size",
    "resolve_hub_url",
)
