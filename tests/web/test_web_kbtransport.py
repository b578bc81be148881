"""``kbapps.web.add_web_routes`` on kbtransport's real HTTP server, over 127.0.0.1."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable

import anyio
import pytest

from kbapps import web
from kbtransport.listener import BoundAddress, ListenConfig, serve_http
from kbtransport.routing import Router

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


async def _with_server(check: Callable[[int], None]) -> None:
    router = Router()
    web.add_web_routes(router, node_id=NODE_ID, node_type="leaf")
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
        index = web.static_file("index.html")
        assert index is not None
        for target in ("/", "/?node=aaaaaaaaaaaa&path=x/y", "/web", "/web/", "/web/index.html"):
            status, headers, body = _fetch(port, "GET", target)
            assert (status, body) == (200, index.body), target
            assert headers["content-security-policy"] == web.CONTENT_SECURITY_POLICY
            assert headers["content-type"] == "text/html; charset=utf-8"
            assert headers["content-length"] == str(len(index.body))
        status, headers, body = _fetch(port, "GET", "/web/app.js")
        assert status == 200
        assert headers["content-type"] == "text/javascript; charset=utf-8"
        assert headers["x-content-type-options"] == "nosniff"
        status, headers, body = _fetch(port, "HEAD", "/web/style.css")
        assert (status, body) == (200, b"")
        assert headers["content-type"] == "text/css; charset=utf-8"
        status, headers, body = _fetch(port, "GET", "/web/config.json")
        assert status == 200
        assert json.loads(body) == {"node_id": NODE_ID, "node_type": "leaf"}

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
        ):
            status, _, body = _fetch(port, "GET", target)
            assert status == 404, target
            assert json.loads(body)["success"] is False
        status, _, _ = _fetch(port, "GET", "/index.html")
        assert status == 404

    await _with_server(check)


def test_add_web_routes_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="node id"):
        web.add_web_routes(Router(), node_id="nope", node_type="hub")
