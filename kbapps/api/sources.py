"""What the API accepts as "a file": a ``.prv`` path, a ``.prv`` dict, a ``Prv``, or a
``sha1://``/``kbucket://`` URI; and how each becomes a ``.prv`` (or ``.prvdir``)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, TypeAlias

from kbapps.api.remote import fetch_prv, prv_by_sha1, walk_dir
from kbapps.download import BadInputError, HubUnreachableError, NotFoundError, load_prv_file
from kbapps.uris import KBucketUri, Sha1Uri, UriError, is_uri, parse_uri
from kbproto.prv import Prv, PrvDir, PrvFormatError, parse_document
from kbtransport.http_client import HttpClient

__all__ = ("Source", "content_sha1", "parse_source", "resolve_source")

#: A file or directory for the API: a path to a ``.prv``/``.prvdir`` file, the parsed
#: ``.prv``/``.prvdir`` (or its JSON object as a dict), or a ``sha1://``/``kbucket://``
#: URI string.
Source: TypeAlias = "str | os.PathLike[str] | Prv | PrvDir | Mapping[str, Any]"


def parse_source(source: Source) -> Prv | PrvDir | Sha1Uri | KBucketUri:
    """What ``source`` names, without the network: a parsed document or a URI.

    Raises:
        BadInputError: an unreadable or malformed ``.prv``, or a malformed URI.
    """
    if isinstance(source, Prv | PrvDir):
        return source
    if isinstance(source, Mapping):
        try:
            return parse_document(json.dumps(dict(source)))
        except (PrvFormatError, TypeError, ValueError) as exc:
            raise BadInputError(f"not a .prv or .prvdir object: {exc}") from None
    text = os.fspath(source)
    if is_uri(text):
        try:
            return parse_uri(text)
        except UriError as exc:
            raise BadInputError(str(exc)) from None
    return load_prv_file(text)


async def resolve_source(source: Source, client: HttpClient, hub_url: str) -> Prv | PrvDir:
    """The ``.prv`` (or, for a directory, the ``.prvdir``) of ``source``, asking the hub
    ``hub_url`` for a URI's.

    Raises:
        BadInputError: as ``parse_source``.
        NotFoundError: the network has no such content, node, file or directory.
        HubUnreachableError: the hub or a node on the way failed.
    """
    named = parse_source(source)
    if isinstance(named, Sha1Uri):
        return await prv_by_sha1(client, hub_url, named)
    if isinstance(named, KBucketUri):
        if not named.path:
            return await walk_dir(client, hub_url, named)
        try:
            return await fetch_prv(client, hub_url, named)
        except NotFoundError as not_a_file:
            # Not a hashed file: perhaps a directory (its listing answers then).
            try:
                return await walk_dir(client, hub_url, named)
            except (NotFoundError, HubUnreachableError):
                raise not_a_file from None
    return named


async def content_sha1(source: Source, client: HttpClient, hub_url: str) -> str:
    """The SHA-1 of the file ``source`` names (a ``sha1://`` URI needs no network).

    Raises:
        BadInputError: ``source`` is malformed or names a directory.
        NotFoundError, HubUnreachableError: as ``resolve_source``.
    """
    named = parse_source(source)
    if isinstance(named, Sha1Uri):
        return named.sha1
    document = await resolve_source(source, client, hub_url)
    if isinstance(document, PrvDir):
        label = source if isinstance(source, str) else "the .prvdir"
        raise BadInputError(f"{label} is a directory, not a file")
    return document.sha1
