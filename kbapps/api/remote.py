"""What a hub says about a share's files: ``.prv`` by path, listings, ``.prv`` by SHA-1.

Every answer comes from the network and is read bounded (``MAX_PRV_BYTES``,
``MAX_LISTING_BYTES``, ``MAX_WALK_ENTRIES``) and type-checked: a wrong type is as if
the field were absent, a name that could not be one path component is left out. None
of it is trusted for content: a ``.prv`` only says which bytes to fetch, and those
bytes are checked against its SHA-1 (``docs/security.md``, "The Python API").
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from kbapps.download import (
    BadInputError,
    FindResult,
    HubUnreachableError,
    NotFoundError,
    find_content,
)
from kbapps.download.find import error_text, short
from kbapps.uris import KBucketUri, Sha1Uri, UriError
from kbproto.prv import Prv, PrvDir, PrvFormatError, is_valid_entry_name, parse_prv
from kbtransport.errors import TransportError
from kbtransport.http_client import HttpClient

__all__ = (
    "MAX_LISTING_BYTES",
    "MAX_PRV_BYTES",
    "MAX_WALK_ENTRIES",
    "DirEntry",
    "fetch_prv",
    "prv_by_sha1",
    "read_dir",
    "walk_dir",
)

#: A ``.prv`` is under 5 KiB; an answer past this is not one.
MAX_PRV_BYTES = 64 * 1024
#: One directory listing (about 200 bytes an entry: some 300,000 entries).
MAX_LISTING_BYTES = 64 * 1024 * 1024
#: Files and directories one ``walk_dir`` visits before it gives up.
MAX_WALK_ENTRIES = 1_000_000
#: Results of a find tried for a ``.prv`` of content named only by its SHA-1.
_PRV_CANDIDATES = 8


@dataclass(frozen=True, slots=True, kw_only=True)
class DirEntry:
    """One entry of a share's directory (``ls``).

    Attributes:
        name: its name in the directory.
        uri: its ``kbucket://NODE_ID/PATH``.
        is_dir: a directory (``size`` and ``prv`` are then None).
        size: a file's size, as the share reports it.
        prv: a file's ``.prv`` if the share has hashed it (None while it indexes).
    """

    name: str
    uri: KBucketUri
    is_dir: bool
    size: int | None = None
    prv: Prv | None = None

    @property
    def sha1(self) -> str | None:
        """The file's SHA-1 if known."""
        return self.prv.sha1 if self.prv is not None else None


async def _get_json(client: HttpClient, url: str, what: str, limit: int) -> object:
    """GET ``url`` and parse its JSON; 404 is ``NotFoundError``, anything else unusable
    is ``HubUnreachableError`` (both naming ``what``)."""
    try:
        async with client.stream("GET", url) as response:
            if response.status == 404:
                raise NotFoundError(f"{what}: {await error_text(response)}")
            if response.status != 200:
                raise HubUnreachableError(f"{what}: {await error_text(response)}")
            body = await response.read(limit)
    except TransportError as exc:
        raise HubUnreachableError(f"{what}: {short(str(exc))}") from None
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise HubUnreachableError(f"{what}: the answer is not JSON") from None


async def fetch_prv(client: HttpClient, hub_url: str, uri: KBucketUri) -> Prv:
    """The ``.prv`` of the file ``uri`` (``GET <hub>/NODE_ID/prv/PATH``).

    Raises:
        NotFoundError: the node or the file is unknown (or not hashed yet).
        HubUnreachableError: the hub or a node on the way failed, or answered garbage.
    """
    if not uri.path:
        raise BadInputError(f"{uri} is a share's top directory, not a file")
    value = await _get_json(client, hub_url + uri.url_path("prv"), str(uri), MAX_PRV_BYTES)
    try:
        return parse_prv(json.dumps(value))
    except PrvFormatError as exc:
        raise HubUnreachableError(f"{uri}: the node sent an invalid .prv: {exc}") from None


def _entries(value: object, uri: KBucketUri) -> list[DirEntry]:
    if not isinstance(value, dict) or value.get("success") is not True:
        error = value.get("error") if isinstance(value, dict) else None
        detail = f": {short(error)}" if isinstance(error, str) else ""
        raise HubUnreachableError(f"{uri}: the node could not list it{detail}")
    out: list[DirEntry] = []
    dirs, files = value.get("dirs"), value.get("files")
    for item in dirs if isinstance(dirs, list) else ():
        name = item.get("name") if isinstance(item, dict) else None
        if is_valid_entry_name(name):
            assert isinstance(name, str)
            out.append(DirEntry(name=name, uri=uri.child(name), is_dir=True))
    for item in files if isinstance(files, list) else ():
        if not isinstance(item, dict) or not is_valid_entry_name(item.get("name")):
            continue
        name = item["name"]
        size = item.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            size = None
        prv: Prv | None = None
        if isinstance(item.get("prv"), dict):
            try:
                prv = parse_prv(json.dumps(item["prv"]))
            except PrvFormatError:
                prv = None
        out.append(DirEntry(name=name, uri=uri.child(name), is_dir=False, size=size, prv=prv))
    return out


async def read_dir(client: HttpClient, hub_url: str, uri: KBucketUri) -> list[DirEntry]:
    """The entries of the directory ``uri`` (``GET <hub>/NODE_ID/api/readdir/PATH``),
    directories first, each group in the node's order.

    Raises:
        NotFoundError: the node or the directory is unknown.
        HubUnreachableError: the hub or a node on the way failed, or answered garbage.
    """
    url = hub_url + uri.url_path("api/readdir")
    return _entries(await _get_json(client, url, str(uri), MAX_LISTING_BYTES), uri)


async def walk_dir(
    client: HttpClient, hub_url: str, uri: KBucketUri, *, max_entries: int = MAX_WALK_ENTRIES
) -> PrvDir:
    """The ``.prvdir`` of the directory ``uri``: its hashed files, every level below.

    Files the share has not hashed yet are left out (they have no ``.prv``).

    Raises:
        NotFoundError, HubUnreachableError: as ``read_dir``.
        BadInputError: the tree holds more than ``max_entries`` entries.
    """
    seen = 0

    async def visit(where: KBucketUri, depth: int) -> PrvDir:
        nonlocal seen
        if depth > 256:  # kbproto.prv.PrvLimits.max_depth
            raise BadInputError(f"{where}: directories nested deeper than 256 levels")
        files: dict[str, Prv] = {}
        dirs: dict[str, PrvDir] = {}
        for entry in await read_dir(client, hub_url, where):
            seen += 1
            if seen > max_entries:
                raise BadInputError(f"{uri}: more than {max_entries} entries")
            if entry.is_dir:
                dirs[entry.name] = await visit(entry.uri, depth + 1)
            elif entry.prv is not None:
                files[entry.name] = entry.prv
        return PrvDir(files=files, dirs=dirs)

    return await visit(uri, 0)


async def prv_by_sha1(
    client: HttpClient, hub_url: str, uri: Sha1Uri, found: FindResult | None = None
) -> Prv:
    """A ``.prv`` for the content ``uri``: asked of the shares the find names
    (``/KBSHARE_ID/prv/PATH``), keeping the first whose SHA-1 and size are the
    content's. Its ``original_fcs`` lets a reader check the first 1000 bytes early; the
    whole content is checked against the SHA-1 of the URI whatever a share says.

    Raises:
        NotFoundError: no node of the network has the content.
        HubUnreachableError: the hub failed, or no share gave a matching ``.prv``.
    """
    if found is None:
        found = await find_content(client, hub_url, uri.sha1)
    if not found.found:
        raise NotFoundError(f"{uri}: no node of the network has it")
    results = found.response.get("results")
    problems: list[str] = []
    for item in (results if isinstance(results, list) else [])[:_PRV_CANDIDATES]:
        share, path = (
            (item.get("kbshare_id"), item.get("path")) if isinstance(item, dict) else ("", "")
        )
        if not isinstance(share, str) or not isinstance(path, str) or not path:
            continue
        try:
            where = KBucketUri(node_id=share, path=path.strip("/"))
        except UriError as exc:
            problems.append(str(exc))
            continue
        try:
            prv = await fetch_prv(client, hub_url, where)
        except (NotFoundError, HubUnreachableError, BadInputError) as exc:
            problems.append(exc.message)
            continue
        if prv.sha1 == uri.sha1 and (found.size is None or found.size == prv.size):
            return prv
        problems.append(f"{where}: its .prv names other content")
    detail = f" ({short('; '.join(problems))})" if problems else ""
    raise HubUnreachableError(f"{uri}: no share holding it gave its .prv{detail}")
