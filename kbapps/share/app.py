"""The share's own HTTP routes (docs/http.md, "on a share"), backed by its ``FileIndex``.

``ShareApp.router`` serves, for this share's node id only (other ids answer 404; the
node runtime routes them through the tree before they get here):

* ``GET, HEAD /ID/download/PATH`` (``kbapps.share.server``) with ``ETag`` = the quoted
  SHA-1 when the file is indexed and unchanged;
* ``GET /ID/api/readdir/PATH``, each file entry with ``prv`` (the docs/formats.md §1 object)
  when the file is indexed and unchanged, and without it otherwise;
* ``GET /ID/prv/PATH``: the file's ``.prv``, byte for byte as ``kb-prv-create`` writes
  it (``original_path`` = the file name); 404 if the file is not indexed or changed;
* ``GET, HEAD /ID/sha1/SHA1``: this share's own copy of content ``SHA1`` (Range,
  ETag), which the runtime's ``/sha1/SHA1`` should use for local content (also
  ``ShareApp.content_response``);
* ``GET, HEAD /ID/sha1/SHA1/chunks``: the digest list of content ``SHA1`` as computed
  while indexing (``kbproto.chunks``; ``application/octet-stream``), 404 while the
  share has none (not indexed yet); the runtime's ``/sha1/SHA1/chunks`` uses it. The
  list is not to be trusted by anyone: a reader checks it against its ``.prv``'s root.

``.prv`` stand-ins (``kbapps.share.standins``) are listed by readdir like files;
``/ID/prv/X`` answers a stand-in's pointer, and ``/ID/download/X`` (GET, HEAD, Range)
is answered by the node's own ``/sha1/SHA1`` route through ``network``, which finds
the content anywhere in the tree and streams it (this share's own copy first).

Every SHA-1 handed out goes through ``FileIndex.current``: the open file's ``fstat``
(device, inode, size, mtime, ctime) must equal the stamp recorded when it was hashed,
and the entry must be outside the racy window, so a file changed after it was hashed
is never served or described under its old SHA-1 (docs/security.md). When a route meets a
changed file it calls ``on_stale`` (the command connects ``Indexer.request_rescan``),
so the change reaches the index and the hub without waiting for the next walk.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import anyio.to_thread

from kbapps.nodeapp import NodeApp
from kbapps.share.index import FileIndex, IndexEntry, stamp_of
from kbapps.share.paths import NotFoundError, ShareDir, SharePathError
from kbapps.share.server import build_share_router
from kbapps.share.standins import Standin, Standins
from kbproto.ids import is_sha1
from kbproto.prv import serialize_prv
from kbtransport.http import Request, Response, error_response
from kbtransport.ranges import file_response
from kbtransport.routing import Match, Router

__all__ = ("ShareApp", "build_share_app")


class ShareApp:
    """The local routes of one share (see the module docstring).

    Args:
        share: the shared directory (path safety lives there).
        index: the share's index.
        node_id: this share's node id.
        on_stale: called (no arguments, on the event loop) when a route finds an
            indexed file changed; must not block.
        network: the node's whole app, which serves stand-in downloads by SHA-1;
            without it a stand-in is listed but its download answers 404.

    Attributes:
        router: the route table; the command may add more routes (web pages) to it.
    """

    def __init__(
        self,
        share: ShareDir,
        index: FileIndex,
        node_id: str,
        *,
        on_stale: Callable[[], None] | None = None,
        network: NodeApp | None = None,
    ) -> None:
        self.share = share
        self.index = index
        self.node_id = node_id
        self._on_stale = on_stale
        self._network = network
        self.standins = Standins(share)
        self.router: Router = build_share_router(
            share,
            node_id,
            etag_for=self.etag_for,
            file_extras=self.file_extras,
            standins=self.standins,
            serve_standin=self._serve_standin,
        )
        self.router.add(("GET",), "/{node_id}/prv/{path*}", self._prv)
        self.router.add(("GET", "HEAD"), "/{node_id}/sha1/{sha1}", self._sha1)
        self.router.add(("GET", "HEAD"), "/{node_id}/sha1/{sha1}/chunks", self._chunks)

    def _current(self, relpath: str, st: os.stat_result) -> IndexEntry | None:
        """``index.current``, and ``on_stale`` when the file changed since hashed (not
        merely racy: the indexer already waits for those)."""
        known = self.index.get(relpath)
        return self._check(known, st) if known is not None else None

    def _check(self, known: IndexEntry, st: os.stat_result) -> IndexEntry | None:
        """``known`` if ``st`` is the version hashed and it is trusted (what
        ``FileIndex.current`` checks), else None; ``on_stale`` if the file changed."""
        if known.stamp != stamp_of(st):
            if self._on_stale is not None:
                self._on_stale()
            return None
        return known if self.index.trusted(known) else None

    # --- hooks of build_share_router -------------------------------------------------

    def etag_for(self, relpath: str, st: os.stat_result) -> str | None:
        """The quoted SHA-1 of the open file ``relpath`` if indexed and unchanged."""
        entry = self._current(relpath, st)
        return f'"{entry.sha1}"' if entry is not None else None

    async def file_extras(self, files: Sequence[tuple[str, int]]) -> list[dict[str, object]]:
        """``{"prv": {...}}`` for each readdir entry indexed and unchanged, else ``{}``.

        The entries and their ``stat`` are read in a worker thread (a folder of
        10,000 files is 20 queries and 10,000 ``stat`` calls: the event loop, and the
        node's heartbeats, must not wait for them).
        """
        looked = await anyio.to_thread.run_sync(self._look_up, [relpath for relpath, _ in files])
        extras: list[dict[str, object]] = []
        for known, st in looked:
            entry = self._check(known, st) if known is not None and st is not None else None
            extras.append({"prv": entry.prv().to_json_object()} if entry is not None else {})
        return extras

    def _look_up(
        self, relpaths: list[str]
    ) -> list[tuple[IndexEntry | None, os.stat_result | None]]:
        """Each path's index entry and current ``stat`` (worker thread)."""
        known = self.index.get_many(relpaths)
        looked: list[tuple[IndexEntry | None, os.stat_result | None]] = []
        for relpath in relpaths:
            entry = known.get(relpath)
            st = None
            if entry is not None:
                try:
                    st = os.stat(self.share.root / relpath)
                except OSError:
                    entry = None
            looked.append((entry, st))
        return looked

    # --- routes ----------------------------------------------------------------------

    async def _prv(self, request: Request, match: Match) -> Response:
        if match.params["node_id"] != self.node_id:
            return error_response(404, "Unknown node id")
        try:
            real, _ = self.share.resolve(match.rest)
        except NotFoundError as exc:
            standin = self.standins.find(match.rest)
            if standin is None:
                return error_response(exc.status, str(exc))
            return Response(
                status=200,
                headers=(("Content-Type", "application/json"),),
                body=serialize_prv(standin.prv),
            )
        except SharePathError as exc:
            return error_response(exc.status, str(exc))
        relpath = "/".join(match.rest)
        if self.index.get(relpath) is None:
            return error_response(404, "File not indexed yet")
        try:
            st = os.stat(real)
        except OSError:
            return error_response(404, "No such file in this share")
        entry = self._current(relpath, st)
        if entry is None:
            return error_response(404, "File changed since it was indexed; not indexed yet")
        return Response(
            status=200,
            headers=(("Content-Type", "application/json"),),
            body=serialize_prv(entry.prv()),
        )

    async def _serve_standin(self, request: Request, standin: Standin) -> Response:
        """A stand-in's bytes: the node's ``/sha1/SHA1`` answer (GET or HEAD, Range
        and conditionals passed on), wherever in the network the content is."""
        if self._network is None:
            return error_response(404, f"{standin.name} points elsewhere; not resolvable here")
        headers = tuple(
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers
        )
        return await self._network.request(request.method, f"/sha1/{standin.prv.sha1}", headers)

    async def _sha1(self, request: Request, match: Match) -> Response:
        if match.params["node_id"] != self.node_id:
            return error_response(404, "Unknown node id")
        return await self.content_response(request, match.params["sha1"])

    async def _chunks(self, request: Request, match: Match) -> Response:
        if match.params["node_id"] != self.node_id:
            return error_response(404, "Unknown node id")
        return await self.chunks_response(match.params["sha1"])

    async def chunks_response(self, sha1: str) -> Response:
        """The digest list of this share's content ``sha1`` (GET or HEAD).

        Returns:
            200 ``application/octet-stream`` with the list (32 bytes per 1 MiB
            chunk; empty for empty content); 400 for a malformed SHA-1; 404 if this
            share has no list for it (not held, or not indexed yet).
        """
        sha1 = sha1.lower()
        if not is_sha1(sha1):
            return error_response(400, "Malformed SHA-1 (40 hex digits expected)")
        if not self.index.paths_for(sha1):
            return error_response(404, "Content not found on this share")
        # The list is read from the index's database (up to 32 KiB per GiB).
        digests = await anyio.to_thread.run_sync(self.index.chunk_list, sha1)
        if digests is None:
            return error_response(404, "No chunk digests for this content yet")
        return Response(
            status=200,
            headers=(("Content-Type", "application/octet-stream"),),
            body=digests,
        )

    async def content_response(self, request: Request, sha1: str) -> Response:
        """Serve this share's own copy of ``sha1`` (GET or HEAD, with Range and ETag).

        Tries each indexed path holding it and serves the first whose open file is
        still the version hashed; never a changed file (docs/security.md).

        Returns:
            200/206/304/416 with the bytes; 400 for a malformed SHA-1; 404 if no
            unchanged copy is here.
        """
        sha1 = sha1.lower()
        if not is_sha1(sha1):
            return error_response(400, "Malformed SHA-1 (40 hex digits expected)")
        for relpath in self.index.paths_for(sha1):
            try:
                shared = self.share.open_file(tuple(relpath.split("/")))
            except SharePathError:
                continue  # gone or unsafe now: the next walk forgets it
            entry = self._current(relpath, shared.stat)
            if entry is None or entry.sha1 != sha1:
                shared.file.close()
                continue
            return file_response(
                request,
                shared.file,
                shared.stat.st_size,
                name=relpath.rsplit("/", 1)[-1],
                etag=f'"{sha1}"',
            )
        return error_response(404, "Content not found on this share")


def build_share_app(
    share: ShareDir,
    index: FileIndex,
    node_id: str,
    *,
    on_stale: Callable[[], None] | None = None,
    network: NodeApp | None = None,
) -> ShareApp:
    """Return the ``ShareApp`` of ``share`` (its ``router`` goes to ``serve_node``)."""
    return ShareApp(share, index, node_id, on_stale=on_stale, network=network)
