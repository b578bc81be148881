"""The share's HTTP routes that touch files: download (Range/ETag/HEAD) and readdir.

``build_share_router`` returns a ``kbtransport.routing.Router`` so the node integration
can add its other routes (nodeinfo, find, prv, web) to the same table. Wrong node ids
answer 404 here; routing requests to other nodes is the node's job, not this module's.
With ``standins``, listings show ``.prv`` stand-ins as files and a download of one is
handed to ``serve_standin`` (``kbapps.share.standins``).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Sequence

from kbapps.share.paths import NotFoundError, ShareDir, SharePathError
from kbapps.share.standins import Standin, Standins
from kbtransport.http import Request, Response, error_response, json_response
from kbtransport.ranges import file_response
from kbtransport.routing import Match, Router

__all__ = ("EtagLookup", "FileExtras", "StandinServer", "build_share_router")

#: ``(relative path, stat of the open file) -> quoted SHA-1 ETag or None``. The lookup
#: must answer None when the file changed since it was hashed (docs/security.md: never serve
#: changed bytes under an old SHA-1), e.g. by comparing size and mtime_ns.
EtagLookup = Callable[[str, os.stat_result], str | None]
#: ``[(relative path, size), ...] -> [extra JSON fields, ...]`` for the file entries of
#: one readdir (e.g. "prv"), in order: one call per listing, so the lookups of a big
#: folder can be a few queries, off the event loop.
FileExtras = Callable[[Sequence[tuple[str, int]]], Awaitable[Sequence[dict[str, object]]]]
#: ``(request, stand-in) -> response``: answers a download of a stand-in.
StandinServer = Callable[[Request, Standin], Awaitable[Response]]


def build_share_router(
    share: ShareDir,
    node_id: str,
    *,
    etag_for: EtagLookup | None = None,
    file_extras: FileExtras | None = None,
    standins: Standins | None = None,
    serve_standin: StandinServer | None = None,
) -> Router:
    """Return a router serving ``share`` as node ``node_id``.

    Routes:
        ``GET, HEAD /ID/download/PATH``: the file's bytes, with Range, ETag, HEAD.
        ``GET /ID/api/readdir/PATH``: ``{"success": true, "files": [...], "dirs": [...]}``.

    Args:
        share: the shared directory.
        node_id: this share's node id; other ids answer 404.
        etag_for: gives the quoted SHA-1 of a file when it is indexed and unchanged.
        file_extras: adds fields to the readdir file entries (one call per listing).
        standins: lists ``.prv`` stand-ins as files (``{"name", "size", "prv"}``).
        serve_standin: answers a download of a stand-in (with ``standins``).
    """
    router = Router()

    async def download(request: Request, match: Match) -> Response:
        if match.params["node_id"] != node_id:
            return error_response(404, "Unknown node id")
        try:
            shared = share.open_file(match.rest)
        except NotFoundError as exc:
            if standins is not None and serve_standin is not None:
                standin = standins.find(match.rest)
                if standin is not None:
                    return await serve_standin(request, standin)
            return error_response(exc.status, str(exc))
        except SharePathError as exc:
            return error_response(exc.status, str(exc))
        etag = etag_for(shared.relpath, shared.stat) if etag_for is not None else None
        return file_response(
            request,
            shared.file,
            shared.stat.st_size,
            name=match.rest[-1],
            etag=etag,
        )

    async def readdir(request: Request, match: Match) -> Response:
        if match.params["node_id"] != node_id:
            return error_response(404, "Unknown node id")
        try:
            listing = share.list_dir(match.rest)
        except SharePathError as exc:
            return error_response(exc.status, str(exc))
        found: tuple[Standin, ...] = ()
        if standins is not None:
            listing, found = standins.apply(tuple(s for s in match.rest if s), listing)
        payload = listing.to_json()
        if file_extras is not None:
            base = "/".join(s for s in match.rest if s)
            asked: list[tuple[str, int]] = []
            for entry in payload["files"]:
                name = str(entry["name"])
                size = entry["size"]
                assert isinstance(size, int)
                asked.append((f"{base}/{name}" if base else name, size))
            for entry, extra in zip(payload["files"], await file_extras(asked), strict=True):
                entry.update(extra)
        if found:
            payload["files"].extend(
                {
                    "name": standin.name,
                    "size": standin.prv.size,
                    "prv": standin.prv.to_json_object(),
                }
                for standin in found
            )
            payload["files"].sort(key=lambda entry: str(entry["name"]))
        return json_response(200, {"success": True, **payload})

    router.add(("GET", "HEAD"), "/{node_id}/download/{path*}", download)
    router.add(("GET",), "/{node_id}/api/readdir/{path*}", readdir)
    return router
