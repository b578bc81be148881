"""The async twin of ``kbapps.api``, for asyncio and trio programs (anyio underneath).

Same functions, same arguments, same errors, awaited on the caller's own loop::

    from kbapps.api import aio

    path = await aio.load_file("sha1://0123...")
    async with await aio.open_file("kbucket://a1b2c3d4e5f6/data/x.bin") as f:
        f.seek(1 << 30)
        block = await f.read(65536)

``hub`` is the hub to ask: the argument, else ``$KBUCKET_URL``, else
``http://localhost:3240``, as for the commands. ``options`` overrides everything else
(``kbapps.download.ClientOptions``; its ``hub_url`` wins over ``hub``).
"""

from __future__ import annotations

import os
from pathlib import Path

from kbapps.api.asyncfile import AsyncRemoteFile
from kbapps.api.ranged import DEFAULT_READ_OPTIONS, RangeReader, ReadOptions
from kbapps.api.remote import DirEntry, read_dir
from kbapps.api.sources import Source, parse_source, resolve_source
from kbapps.cachedir import user_cache_dir
from kbapps.download import (
    BadInputError,
    ClientOptions,
    DownloadResult,
    FindResult,
    NotFoundError,
    PrvDirResult,
    default_options,
    download_prv,
    download_prvdir,
    download_sources,
    find_content,
    make_http_client,
)
from kbapps.uris import KBucketUri, Sha1Uri, UriError, parse_uri
from kbproto.prv import Prv, PrvDir, is_valid_entry_name

__all__ = (
    "FILES_DIRNAME",
    "find",
    "get_prv",
    "list_dir",
    "load_dir",
    "load_file",
    "open_file",
)

#: Sub-directory of the per-user cache directory where ``load_file`` puts files when
#: no ``out`` is given: ``<cache dir>/files/<sha1>/<name>``.
FILES_DIRNAME = "files"


def _options(hub: str | None, options: ClientOptions | None) -> ClientOptions:
    return options if options is not None else default_options(hub)


def _file_name(source: Source, prv: Prv) -> str:
    named = parse_source(source) if isinstance(source, str) else None
    if isinstance(named, Sha1Uri | KBucketUri) and named.name:
        return named.name
    name = prv.path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return name if is_valid_entry_name(name) else prv.sha1


async def get_prv(
    source: Source, *, hub: str | None = None, options: ClientOptions | None = None
) -> Prv | PrvDir:
    """The ``.prv`` of a file (the ``.prvdir`` of a directory) that ``source`` names.

    Raises:
        BadInputError: ``source`` is malformed (exit code 2 of the commands).
        NotFoundError: the network has no such content, node, file or directory (1).
        HubUnreachableError: the hub or a node on the way failed (3).
    """
    opts = _options(hub, options)
    async with make_http_client(opts) as client:
        return await resolve_source(source, client, opts.hub_url)


async def _prv_of(source: Source, opts: ClientOptions) -> Prv:
    async with make_http_client(opts) as client:
        document = await resolve_source(source, client, opts.hub_url)
    if isinstance(document, PrvDir):
        raise BadInputError(f"{_label(source)} is a directory, not a file")
    return document


def _label(source: Source) -> str:
    return os.fspath(source) if isinstance(source, str | os.PathLike) else "the .prv"


async def find(
    source: Source, *, hub: str | None = None, options: ClientOptions | None = None
) -> FindResult:
    """Where the network has a file's content: the hub's find answer (``urls`` best
    first, and ``response``, the JSON as received). A ``sha1://`` URI needs no ``.prv``.

    Raises:
        BadInputError, NotFoundError, HubUnreachableError: as ``get_prv`` (a find that
            finds nothing is not an error: ``found`` is False).
    """
    opts = _options(hub, options)
    named = parse_source(source)
    async with make_http_client(opts) as client:
        if isinstance(named, Sha1Uri):
            sha1 = named.sha1
        else:
            document = await resolve_source(source, client, opts.hub_url)
            if isinstance(document, PrvDir):
                raise BadInputError(f"{_label(source)} is a directory, not a file")
            sha1 = document.sha1
        return await find_content(client, opts.hub_url, sha1)


async def list_dir(
    uri: str | KBucketUri, *, hub: str | None = None, options: ClientOptions | None = None
) -> list[DirEntry]:
    """The entries of a share's directory, ``kbucket://NODE_ID/PATH`` (directories
    first; each file with its size and, once hashed, its ``.prv``).

    Raises:
        BadInputError: not a ``kbucket://`` URI.
        NotFoundError: no such node or directory.
        HubUnreachableError: the hub or a node on the way failed.
    """
    if isinstance(uri, str):
        try:
            parsed = parse_uri(uri)
        except UriError as exc:
            raise BadInputError(str(exc)) from None
        if not isinstance(parsed, KBucketUri):
            raise BadInputError(f"{uri}: list_dir takes a kbucket://NODE_ID/PATH URI")
        uri = parsed
    opts = _options(hub, options)
    async with make_http_client(opts) as client:
        return await read_dir(client, opts.hub_url, uri)


async def load_file(
    source: Source,
    out: str | os.PathLike[str] | None = None,
    *,
    hub: str | None = None,
    options: ClientOptions | None = None,
) -> Path:
    """Download a file's content, verified, and return where it is.

    As ``kb-prv-download`` does: the content cache first, a ``.part`` is resumed, every
    byte is checked against the SHA-1, and a file at ``out`` holding other content is
    not replaced unless ``options.force``. Without ``out`` the file goes to
    ``<user cache dir>/files/<sha1>/<name>``, and a second call finds it there.

    Raises:
        BadInputError, NotFoundError, HubUnreachableError: as ``get_prv``.
        ConflictError: ``out`` holds other content.
        DownloadFailedError: no source delivered the right bytes (each listed).
    """
    opts = _options(hub, options)
    prv = await _prv_of(source, opts)
    if out is None:
        where = user_cache_dir() / FILES_DIRNAME / prv.sha1
        where.mkdir(parents=True, exist_ok=True)
        out = where / _file_name(source, prv)
    result: DownloadResult = await download_prv(prv, out, opts)
    return result.path


async def load_dir(
    source: Source,
    out: str | os.PathLike[str],
    *,
    hub: str | None = None,
    options: ClientOptions | None = None,
) -> PrvDirResult:
    """Download every file of a directory (a ``.prvdir`` or ``kbucket://NODE_ID/DIR``)
    into ``out``, verified, as ``kb-prv-download`` does for a ``.prvdir``.

    Raises:
        BadInputError, NotFoundError, HubUnreachableError: as ``get_prv``.
        ConflictError: files in ``out`` hold other content.
    """
    opts = _options(hub, options)
    async with make_http_client(opts) as client:
        document = await resolve_source(source, client, opts.hub_url)
    if isinstance(document, Prv):
        raise BadInputError(f"{_label(source)} is a file, not a directory")
    return await download_prvdir(document, out, opts)


async def open_file(
    source: Source,
    *,
    hub: str | None = None,
    options: ClientOptions | None = None,
    read_options: ReadOptions = DEFAULT_READ_OPTIONS,
) -> AsyncRemoteFile:
    """Open a remote file for reading: only the byte ranges read are fetched (block
    cache and read-ahead bounded by ``read_options``), and the bytes are checked as
    ``kbapps.api.verify`` says. Close it (``aclose`` or ``async with``).

    Raises:
        BadInputError, NotFoundError, HubUnreachableError: as ``get_prv``.
    """
    opts = _options(hub, options)
    client = make_http_client(opts)
    try:
        prv = await resolve_source(source, client, opts.hub_url)
        if isinstance(prv, PrvDir):
            raise BadInputError(f"{_label(source)} is a directory, not a file")
        found = await find_content(client, opts.hub_url, prv.sha1)
        if not found.found and prv.size:
            raise NotFoundError(f"{_label(source)}: no node of the network has {prv.sha1}")
    except BaseException:
        await client.aclose()
        raise
    sources = download_sources(found, opts.hub_url, prv.sha1)
    reader = RangeReader(prv, sources, client, read_options)
    return AsyncRemoteFile(reader, client, _file_name(source, prv))
