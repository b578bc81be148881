"""``kbapps.web.add_web_routes`` on kbtransport's real HTTP server, over 127.0.0.1.

The pages' data comes from a small stand-in API (a ``Router`` answering nodeinfo and
readdir) attached as the node's app; real nodes are in ``test_web_browser.py``.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable

import anyio
import pytest

from kbapps import web
from kbapps.nodeapp import NodeApp
from kbtransport.http import Request, Response, json_response
from kbtransport.listener import BoundAddress, ListenConfig, serve_http
from kbtransport.routing import Match, Router

NODE_ID = "0123456789ab"
#: Seconds a request may take before the test fails rather than hangs.
REQUEST_TIMEOUT = 10.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _fetch(port: int, method: str, target: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    try:
        conn.request(method, target)
        response = conn.getresponse()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return response.status, headers, response.read()
    finally:
        conn.close()


def _api() -> Router:
    """The node's own API, as far as the pages need it."""
    api = Router()

    async def nodeinfo(request: Request, match: Match) -> Response:
        info = {"node_id": NODE_ID, "node_type": "leaf", "name": "Stand-in <share>"}
        return json_response(200, {"success": True, "info": info})

    async def readdir(request: Request, match: Match) -> Response:
        files = [{"name": "a&b.txt", "size": 1234}]
        return json_response(200, {"success": True, "files": files, "dirs": [{"name": "sub"}]})

    api.add(("GET",), f"/{NODE_ID}/api/nodeinfo", nodeinfo)
    api.add(("GET",), f"/{NODE_ID}/api/readdir/{{path*}}", readdir)
    return api


async def _with_server(check: Callable[[int], None]) -> None:
    router = Router()
    network = NodeApp()
    web.add_web_routes(router, node_id=NODE_ID, node_type="leaf", network=network)
    network.attach(_api().app)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            bound: BoundAddress = await tg.start(
                serve_http, router.app, ListenConfig(host="127.0.0.1", port=0)
            )
            await anyio.to_thread.run_sync(check, bound.port)
            tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_routes_serve_the_interface() -> None:
    def check(port: int) -> None:
        for target in ("/", "/web", "/web/", "/web/index.html", f"/?node={NODE_ID}&path=sub"):
            status, headers, body = _fetch(port, "GET", target)
            assert status == 200, (target, body[-500:])
            assert headers["content-security-policy"] == web.CONTENT_SECURITY_POLICY
            assert headers["content-type"] == "text/html; charset=utf-8"
            assert headers["content-length"] == str(len(body))
            assert b'<span class="node-name">Stand-in &lt;share&gt;</span>' in body
            assert f'href="/{NODE_ID}/download/'.encode() in body
            assert b">a&amp;b.txt</a>" in body
        status, _, body = _fetch(port, "GET", "/?node=aaaaaaaaaaaa&path=x/y")
        assert status == 404
        assert b"No such route (HTTP 404)" in body
        status, headers, body = _fetch(port, "HEAD", "/")
        assert (status, body) == (200, b"")
        status, headers, body = _fetch(port, "GET", "/web/app.js")
        assert status == 200
        assert headers["content-type"] == "text/javascript; charset=utf-8"
        assert headers["x-content-type-options"] == "nosniff"
        status, headers, body = _fetch(port, "HEAD", "/web/style.css")
        assert (status, body) == (200, b"")
        assert headers["content-type"] == "text/css; charset=utf-8"

    await _with_server(check)


@pytest.mark.anyio
async def test_routes_refuse_everything_else() -> None:
    def check(port: int) -> None:
        for target in (
            "/web/nothing.js",
            "/web/../pyproject.toml",
            "/web/%2e%2e/__init__.py",
            "/web/static/app.js",
            "/web/__init__.py",
            "/web/config.json",
        ):
            status, _, body = _fetch(port, "GET", target)
            assert status == 404, target
            assert json.loads(body)["success"] is False
        status, _, _ = _fetch(port, "GET", "/index.html")
        assert status == 404

    await _with_server(check)


def test_add_web_routes_checks_its_arguments() -> None:
    for node_id, node_type, scheme in [
        ("nope", "hub", "http"),
        ("0123456789AB", "hub", "http"),
        (NODE_ID, "share", "http"),
        (NODE_ID, "hub", "ftp"),
    ]:
        with pytest.raises(ValueError, match="must be"):
            web.add_web_routes(
                Router(), node_id=node_id, node_type=node_type, network=NodeApp(), scheme=scheme
            )


@pytest.mark.anyio
async def test_pages_wait_for_the_node() -> None:
    router = Router()
    web.add_web_routes(router, node_id=NODE_ID, node_type="hub", network=NodeApp())
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            bound: BoundAddress = await tg.start(
                serve_http, router.app, ListenConfig(host="127.0.0.1", port=0)
            )
            status, _, body = await anyio.to_thread.run_sync(_fetch, bound.port, "GET", "/")
            tg.cancel_scope.cancel()
    assert status == 503
    assert b"Node is starting (HTTP 503)" in body
