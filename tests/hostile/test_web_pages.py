"""A hostile share against the hub's web pages, which now draw its answers on the server.

The hub (a real ``kbucket-hub``) shows any node of its network as HTML it writes itself
(``kbapps.web.pages``): every string a node reports is text, and no answer a node can
send (markup, wrong types, nesting, a body past the budget, no JSON at all) makes the
hub fail, hang or put a node's text in the page as markup. The attacker is our own
share: a real ``ShareCore`` joined over a real websocket, whose routes answer what a
malicious share would (``kbtransport.serve.serve_node`` with a hand-written router).
"""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from anyio.from_thread import start_blocking_portal

from kbproto import ShareConfig, ShareCore
from kbproto.ids import SeededIdSource
from kbtransport.errors import ReadError
from kbtransport.http import Request, Response, StreamBody, json_response
from kbtransport.listener import ListenConfig
from kbtransport.routing import Match, Router
from kbtransport.serve import NodeHandle, serve_node
from tests.e2e.procs import LINE_TIMEOUT, Node, Procs, wait_for
from tests.helpers import Ed25519Signer
from tests.hostile.helpers import http_get
from tests.web.html_audit import audit

#: A listing this long is past what the hub reads for one page (16 MiB,
#: ``kbapps.web.pages.MAX_ANSWER_BYTES``), twice over.
ATTACK_BYTES = 32 * 1024 * 1024
PAYLOAD = '"><img src=x onerror=alert(1)><script>alert(2)</script>'
NAMES = [
    PAYLOAD,
    "'><svg onload=alert(3)>.dat",
    "javascript:alert(4)",
    "\ud800 lone",
    "a" * 5000,
    "..",
    "x/../../etc/passwd",
]


def _answers() -> dict[str, Response]:
    """What the hostile share answers for ``readdir/<case>``."""

    async def huge() -> AsyncIterator[bytes]:
        yield b'{"success": true, "files": ['
        entry = json.dumps({"name": PAYLOAD, "size": 1}).encode() + b","
        piece = entry * (1024 * 1024 // len(entry))  # ~1 MiB of entries at a time
        for _ in range(ATTACK_BYTES // len(piece)):
            yield piece
        yield b'{"name": "last", "size": 1}], "dirs": []}'

    async def cut() -> AsyncIterator[bytes]:
        yield b'{"success": true, "files": [{"name": "a", "size": 1},'
        raise ReadError("the share's disk went away mid-answer")

    markup = b"<html><script>alert(5)</script></html>"
    prv = {"original_checksum": PAYLOAD}
    return {
        "names": _json(
            {
                "success": True,
                "files": [{"name": n, "size": 1, "prv": prv} for n in NAMES],
                "dirs": [{"name": n} for n in NAMES],
            }
        ),
        "types": _json({"success": True, "files": {"a": 1}, "dirs": "x", "size": 10**400}),
        "sizes": _json(
            {
                "success": True,
                "files": [{"name": "big", "size": 10**400}, {"name": "f", "size": 0.5}],
            }
        ),
        "array": _json([1, 2, 3]),
        "nested": Response(status=200, body=b"[" * 200_000 + b"]" * 200_000),
        "markup": Response(status=200, headers=(("Content-Type", "text/html"),), body=markup),
        "utf8": Response(status=200, body=b'{"success": true, "files": [{"name": "\xff\xfe"}]}'),
        "error": Response(status=500, body=markup),
        "huge": Response(status=200, body=StreamBody(chunks=huge())),
        "cut": Response(status=200, body=StreamBody(chunks=cut(), length=1 << 20)),
    }


def _json(value: object) -> Response:
    # ASCII JSON: a lone surrogate goes out as the escape "\ud800", as a share could send.
    return Response(status=200, body=json.dumps(value).encode("ascii"))


@dataclass
class Hostile:
    hub: Node
    share_id: str


def _router(node_id: str) -> Router:
    answers = _answers()
    router = Router()

    async def readdir(request: Request, match: Match) -> Response:
        if match.params["node_id"] != node_id:
            return json_response(404, {"success": False, "error": "no"})
        case = match.rest[0] if match.rest else "names"
        if case in ("huge", "cut"):
            return _answers()[case]  # a fresh stream each time
        return answers.get(case, answers["names"])

    router.add(("GET",), "/{node_id}/api/readdir/{path*}", readdir)
    return router


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    work = tmp_path_factory.mktemp("hostile-web")
    procs = Procs(work)
    try:
        hub = procs.node("kbucket-hub", work / "hub", name="web-hub")
        signer = Ed25519Signer(7101)
        config = ShareConfig(
            name=PAYLOAD,
            description="<iframe src=javascript:alert(6)>",
            owner="</td></tr></table><h1>owned</h1>",
            owner_email="a@b.c",
            listen_url="javascript:alert(7)",
            parent_url=hub.url,
        )
        core = ShareCore(config, signer=signer, ids=SeededIdSource("hostile-web"))
        with start_blocking_portal() as portal:
            listen = ListenConfig(host="127.0.0.1", port=0)
            manager = portal.wrap_async_context_manager(
                serve_node(core, _router(core.node_id), listen)
            )
            with manager as handle:
                assert isinstance(handle, NodeHandle)
                wait_for(
                    lambda: (
                        core.node_id
                        in http_get(f"{hub.url}/{hub.node_id}/api/nodeinfo")[1].decode()
                    ),
                    LINE_TIMEOUT,
                    "the hub to list the hostile share",
                )
                yield Hostile(hub, core.node_id)  # leaving the block stops the share
    finally:
        procs.close()


def _assert_hub_fine(hub: Node) -> None:
    assert hub.proc.popen.poll() is None, hub.proc.stderr()
    assert hub.proc.stderr_path is not None
    logged = hub.proc.stderr_path.read_text(errors="replace")
    assert "Traceback" not in logged, logged[-3000:]


def test_hub_page_shows_the_hostile_registration_as_text(hostile: Hostile) -> None:
    status, body = http_get(f"{hostile.hub.url}/")
    assert status == 200
    audit(body)
    status, body = http_get(f"{hostile.hub.url}/?node={hostile.share_id}&path=names")
    assert status == 200, body[-2000:]
    parsed = audit(body)
    text = "".join(parsed.text)
    assert PAYLOAD in text
    assert "</td></tr></table><h1>owned</h1>" in text
    assert "<iframe src=javascript:alert(6)>" in text
    hrefs = [a.get("href") or "" for tag, a in parsed.tags if tag == "a"]
    assert not any(h.lower().startswith("javascript:") for h in hrefs), hrefs
    # Names that cannot be one path segment are not listed; the others are text.
    assert "'><svg onload=alert(3)>.dat" in text
    assert "x/../../etc/passwd" not in text
    _assert_hub_fine(hostile.hub)


NOT_JSON = "the answer was not the expected JSON (HTTP 200)"


@pytest.mark.parametrize(
    ("case", "status", "shown"),
    [
        ("types", 200, "This folder is empty."),
        ("sizes", 200, "0 folders, 2 files"),
        ("array", 502, NOT_JSON),
        ("nested", 502, NOT_JSON),
        ("markup", 502, NOT_JSON),
        ("utf8", 502, NOT_JSON),
        ("error", 502, "failed (HTTP 500)"),
        ("huge", 200, "the answer is larger than 16 MiB"),
        ("cut", 502, "the answer was cut short"),
    ],
)
def test_no_answer_breaks_the_page(hostile: Hostile, case: str, status: int, shown: str) -> None:
    started = time.monotonic()
    got, body = http_get(f"{hostile.hub.url}/?node={hostile.share_id}&path={case}", 60)
    assert got == status, (got, body[-2000:])
    text = " ".join(audit(body).text)
    # The share's page, with what went wrong with its listing, as text.
    assert PAYLOAD in text
    assert shown in text, text[-2000:]
    if case == "huge":
        assert b'data-load="script"' in body  # the page's script may list it itself
    assert time.monotonic() - started < 30
    _assert_hub_fine(hostile.hub)
    # The hub still serves its own page.
    assert http_get(f"{hostile.hub.url}/")[0] == 200


def test_oversized_listings_at_once_are_each_cut_at_the_budget(hostile: Hostile) -> None:
    url = f"{hostile.hub.url}/?node={hostile.share_id}&path=huge"
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: http_get(url, 60), range(4)))
    for status, body in results:
        assert status == 200
        assert b"the answer is larger than 16 MiB" in body
    _assert_hub_fine(hostile.hub)
