"""Fetching a file's chunk digest list from its sources, trusting none of them.

A ``.prv`` with a ``chunks`` field (``docs/formats.md``, "Chunk digests") holds only
the root; the list itself is served by the nodes holding the content
(``BASE/ID/sha1/SHA1/chunks`` for a source ``BASE/ID/download/PATH``,
``BASE/sha1/SHA1/chunks`` for ``BASE/sha1/SHA1``). ``fetch_digest_list`` asks the
sources in order and keeps the first list that ``DigestList.check`` accepts against
the reader's own ``.prv`` (``docs/security.md``, "Chunk digests"). Both the
downloader (``kbapps.download.parallel``) and the Python API's ranged reads
(``kbapps.api.ranged``) use it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from kbproto.chunks import ChunkListError, DigestList
from kbproto.prv import Prv
from kbtransport.errors import TransportError
from kbtransport.http_client import HttpClient

__all__ = ("digest_list_url", "fetch_digest_list")

_DOWNLOAD_URL_RE = re.compile(r"(.*/)([0-9a-f]{12})/download/.*")
#: Lists asked for before giving up: each may cost a connect timeout.
_MAX_TRIES = 8


def digest_list_url(source: str, sha1: str) -> str | None:
    """Where the node behind a download URL serves the digest list of ``sha1``."""
    if source.endswith(f"/sha1/{sha1}"):
        return f"{source}/chunks"
    match = _DOWNLOAD_URL_RE.fullmatch(source)
    return f"{match[1]}{match[2]}/sha1/{sha1}/chunks" if match else None


async def fetch_digest_list(
    client: HttpClient, prv: Prv, sources: Sequence[str]
) -> DigestList | None:
    """The digest list of ``prv`` from the first source whose list matches its root.

    Returns None when the ``.prv`` has no ``chunks`` field or no source served a list
    that matched (the file is then verified whole). Never raises for a source's fault:
    a source that fails or lies is skipped (its bytes are still checked later).
    """
    spec = prv.chunks
    if spec is None:
        return None
    length = spec.list_length(prv.size)
    asked: set[str] = set()
    for url in sources:
        list_url = digest_list_url(url, prv.sha1)
        if list_url is None or list_url in asked:
            continue
        asked.add(list_url)
        if len(asked) > _MAX_TRIES:
            break
        try:
            async with client.stream("GET", list_url) as response:
                if response.status != 200:
                    continue
                data = bytearray()
                async for part in response.iter_bytes():
                    data += part
                    if len(data) > length:
                        break
            return DigestList.check(spec, prv.size, data)
        except (TransportError, ChunkListError):
            continue
    return None
