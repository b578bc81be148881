"""A test-only stand-in for a kbucket network's HTTP side, used only by ``test_web_ui_states.py``.

The browser tests' ``web_network`` fixture (``conftest.py``) runs REAL ``kbucket-hub`` and
``kbucket-host`` processes. This module remains for the UI states real processes show only
transiently (a file listed before the share has hashed it), which a test cannot hold still
against a real share. It serves, with one stdlib ``http.server`` per node on 127.0.0.1
(port 0, in a thread):

- the web interface through :mod:`kbapps.web`: the pages drawn by
  ``kbapps.web.pages.render_page`` from this module's own answers, and the shipped
  files (``/web/...``), with the CSP header;
- ``GET /ID/api/nodeinfo``, ``/ID/api/readdir/PATH``, ``/ID/download/PATH``,
  ``/ID/prv/PATH`` and ``/find/SHA1`` in docs/http.md's JSON shapes, built from REAL
  directories: real listings (dot-names hidden), real bytes, and real SHA-1 ``.prv``
  objects computed with ``hashlib``.

Shortcut: every node's server answers for every node of the network (a real node routes
such requests through the tree, docs/http.md). Nothing else about routing, websockets or
indexing is imitated.
"""

from __future__ import annotations

import functools
import hashlib
import json
import mimetypes
import os
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio

from kbapps import web
from kbapps.web.pages import Answer, Site, is_page_path, render_page

#: Stand-in public key text (the UI never reads it; real nodes send their PEM).
_PUBLIC_KEY = "-----BEGIN PUBLIC KEY-----\nstand-in\n-----END PUBLIC KEY-----\n"
#: Seconds a thread gets to stop when the network closes.
_JOIN_TIMEOUT = 5.0


@dataclass(frozen=True)
class SpecNode:
    """One node of the stand-in network.

    Attributes:
        node_id: 12 lowercase hex digits.
        node_type: ``"hub"`` or ``"leaf"``.
        parent_id: the parent hub's id, or ``None`` for the top hub.
        root: the shared directory (shares only).
        unindexed: share-relative paths listed without a ``prv`` (not yet indexed).
    """

    node_id: str
    node_type: str
    name: str
    description: str = ""
    owner: str = ""
    owner_email: str = ""
    parent_id: str | None = None
    root: Path | None = None
    unindexed: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class _Indexed:
    share_id: str
    path: str
    size: int
    sha1: str
    head_sha1: str


def _hash_file(path: Path) -> tuple[str, str, int]:
    whole = hashlib.sha1()
    head = hashlib.sha1()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            if size < 1000:
                head.update(chunk[: 1000 - size])
            whole.update(chunk)
            size += len(chunk)
    return whole.hexdigest(), head.hexdigest(), size


def _walk(root: Path) -> Iterator[tuple[str, Path]]:
    stack = [root]
    while stack:
        current = stack.pop()
        with os.scandir(current) as it:
            for entry in it:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir():
                    stack.append(Path(entry.path))
                elif entry.is_file():
                    yield Path(entry.path).relative_to(root).as_posix(), Path(entry.path)


class SpecNetwork:
    """Serve a small kbucket network's HTTP side from real directories (test only)."""

    def __init__(self, nodes: list[SpecNode]) -> None:
        self.nodes = {node.node_id: node for node in nodes}
        self.index: dict[tuple[str, str], _Indexed] = {}
        self.by_sha1: dict[str, list[_Indexed]] = {}
        for node in nodes:
            if node.root is None:
                continue
            for rel, path in _walk(node.root):
                sha1, head_sha1, size = _hash_file(path)
                item = _Indexed(node.node_id, rel, size, sha1, head_sha1)
                self.index[(node.node_id, rel)] = item
                self.by_sha1.setdefault(sha1, []).append(item)
        self._servers: dict[str, ThreadingHTTPServer] = {}
        self._threads: list[threading.Thread] = []

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start one HTTP server per node on 127.0.0.1, each on a free port."""
        for node_id in self.nodes:
            server = _NodeServer(("127.0.0.1", 0), _Handler, self, node_id)
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
            )
            thread.start()
            self._servers[node_id] = server
            self._threads.append(thread)

    def close(self) -> None:
        """Stop every server and join its thread."""
        for server in self._servers.values():
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(_JOIN_TIMEOUT)
        self._servers.clear()
        self._threads.clear()

    def url(self, node_id: str) -> str:
        """The base URL (``http://127.0.0.1:PORT``) of a node's own server."""
        host, port = self._servers[node_id].server_address[:2]
        return f"http://{host!s}:{port}"

    # -- docs/http.md answers ----------------------------------------------------------------

    def _info(self, node: SpecNode) -> dict[str, Any]:
        return {
            "node_id": node.node_id,
            "node_type": node.node_type,
            "name": node.name,
            "description": node.description,
            "owner": node.owner,
            "owner_email": node.owner_email,
            "listen_url": self.url(node.node_id),
            "public_key": _PUBLIC_KEY,
        }

    def nodeinfo(self, node: SpecNode) -> dict[str, Any]:
        """``GET /ID/api/nodeinfo`` for ``node``."""
        body: dict[str, Any] = {"success": True, "info": self._info(node)}
        if node.parent_id is not None:
            body["parent_hub_info"] = self._info(self.nodes[node.parent_id])
        if node.node_type == "hub":
            children = [n for n in self.nodes.values() if n.parent_id == node.node_id]
            for key, kind in (("child_hubs", "hub"), ("child_leaf_nodes", "leaf")):
                body[key] = {
                    c.node_id: {"name": c.name, "listen_url": self.url(c.node_id)}
                    for c in children
                    if c.node_type == kind
                }
        return body

    def prv(self, item: _Indexed) -> dict[str, Any]:
        """The ``.prv`` object of an indexed file (``original_path`` share-relative)."""
        return {
            "original_checksum": item.sha1,
            "original_size": item.size,
            "original_fcs": f"head1000-{item.head_sha1}",
            "original_path": item.path,
            "prv_version": "0.11",
        }

    def readdir(self, node: SpecNode, rel: str, directory: Path) -> dict[str, Any]:
        """``GET /ID/api/readdir/PATH`` from the real directory (dot-names hidden)."""
        files: list[dict[str, Any]] = []
        dirs: list[dict[str, Any]] = []
        with os.scandir(directory) as it:
            for entry in it:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir():
                    dirs.append({"name": entry.name})
                elif entry.is_file():
                    path = f"{rel}/{entry.name}" if rel else entry.name
                    record: dict[str, Any] = {"name": entry.name, "size": entry.stat().st_size}
                    item = self.index.get((node.node_id, path))
                    if item is not None and path not in node.unindexed:
                        record["prv"] = self.prv(item)
                    files.append(record)
        return {"success": True, "files": files, "dirs": dirs}

    def find(self, queried: str, sha1: str) -> dict[str, Any]:
        """``GET /find/SHA1`` as asked of node ``queried``."""
        items = [i for i in self.by_sha1.get(sha1, []) if i.path not in self._unindexed(i)]
        if not items:
            return {"success": True, "found": False}
        urls: list[str] = []
        for item in items:
            chain = [item.share_id]
            parent = self.nodes[item.share_id].parent_id
            while parent is not None:
                chain.append(parent)
                parent = self.nodes[parent].parent_id
            chain.append(queried)
            quoted = urllib.parse.quote(item.path)
            for node_id in chain:
                url = f"{self.url(node_id)}/{item.share_id}/download/{quoted}"
                if url not in urls:
                    urls.append(url)
        return {
            "success": True,
            "found": True,
            "size": items[0].size,
            "urls": urls,
            "results": [{"kbshare_id": i.share_id, "size": i.size, "path": i.path} for i in items],
        }

    def _unindexed(self, item: _Indexed) -> frozenset[str]:
        return self.nodes[item.share_id].unindexed

    def __enter__(self) -> SpecNetwork:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _NodeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        network: SpecNetwork,
        node_id: str,
    ) -> None:
        super().__init__(address, handler)
        self.network = network
        self.node_id = node_id


class _Handler(BaseHTTPRequestHandler):
    server: _NodeServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_GET(self) -> None:
        self._dispatch(head=False)

    # -- responses ----------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str, *, head: bool) -> None:
        self.send_response(status)
        for name, value in web.response_headers(content_type):
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Access-Control-Allow-Origin", "*")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, status: int, obj: dict[str, Any], *, head: bool) -> None:
        body = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        self._send(status, body, "application/json", head=head)

    def _error(self, status: int, text: str, *, head: bool) -> None:
        self._json(status, {"success": False, "error": text}, head=head)

    # -- routing ------------------------------------------------------------------------

    def _dispatch(self, *, head: bool) -> None:
        network = self.server.network
        me = network.nodes[self.server.node_id]
        split = urllib.parse.urlsplit(self.path)
        raw_path = split.path
        if is_page_path(raw_path):
            self._page(me, urllib.parse.parse_qsl(split.query), head=head)
            return
        if raw_path.startswith("/web/"):
            reply = web.web_response(raw_path)
            if reply is None:
                self._error(404, "no such page", head=head)
            else:
                self._send(200, reply.body, reply.content_type, head=head)
            return
        segments = [urllib.parse.unquote(s) for s in raw_path.split("/")[1:]]
        if (
            len(segments) > 2
            and segments[1] in ("download", "prv")
            and segments[0] in network.nodes
        ):
            self._file(network.nodes[segments[0]], segments[1], segments[2:], head=head)
            return
        status, obj = self._api(me, segments)
        self._json(status, obj, head=head)

    def _api(self, me: SpecNode, segments: list[str]) -> tuple[int, dict[str, Any]]:
        """The JSON routes: ``(status, body)``."""
        network = self.server.network
        if len(segments) >= 2 and segments[0] == "find":
            return 200, network.find(me.node_id, segments[1].lower())
        node = network.nodes.get(segments[0])
        if node is None:
            return 404, {"success": False, "error": f"unknown node: {segments[0]}"}
        if segments[1:] == ["api", "nodeinfo"]:
            return 200, network.nodeinfo(node)
        if segments[1:3] == ["api", "readdir"]:
            resolved = self._resolve(node, segments[3:])
            if resolved is None or not resolved[1].is_dir():
                return 404, {"success": False, "error": "no such directory"}
            return 200, network.readdir(node, *resolved)
        return 404, {"success": False, "error": "no such route"}

    def _page(self, me: SpecNode, query: list[tuple[str, str]], *, head: bool) -> None:
        """A page, drawn by kbapps.web from this node's own answers."""

        async def fetch(target: str) -> Answer:
            path = urllib.parse.urlsplit(target).path
            status, obj = self._api(me, [urllib.parse.unquote(s) for s in path.split("/")[1:]])
            return Answer(status, obj)

        site = Site(node_id=me.node_id, node_type=me.node_type)
        page = anyio.run(
            functools.partial(
                render_page, query, host=self.headers.get("Host"), site=site, fetch=fetch
            )
        )
        self._send(page.status, page.html, web.HTML_TYPE, head=head)

    def _resolve(self, node: SpecNode, parts: list[str]) -> tuple[str, Path] | None:
        parts = [p for p in parts if p != ""]
        if node.root is None or any(p.startswith(".") or "/" in p or "\\" in p for p in parts):
            return None
        path = node.root.joinpath(*parts)
        if not path.resolve().is_relative_to(node.root.resolve()):
            return None
        return "/".join(parts), path

    def _file(self, node: SpecNode, kind: str, parts: list[str], *, head: bool) -> None:
        resolved = self._resolve(node, parts)
        if resolved is None or not resolved[1].is_file():
            self._error(404, "no such file", head=head)
            return
        rel, path = resolved
        if kind == "download":
            content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            self._send(200, path.read_bytes(), content_type, head=head)
            return
        item = self.server.network.index.get((node.node_id, rel))
        if item is None or rel in node.unindexed:
            self._error(404, "file is not yet indexed", head=head)
            return
        text = json.dumps(self.server.network.prv(item), indent=4, ensure_ascii=False) + "\n"
        self._send(200, text.encode("utf-8"), "application/json", head=head)
