"""A hostile share as a real process: kbproto's ``ShareCore`` behind kbtransport, joined
to a real hub, answering every request with whatever its script says.

Run as ``python -m tests.hostile.fake_share SCRIPT.json``; ``FakeShareScript.write``
makes the script. The share indexes the ``files`` it is told (any content id for any
path: it can lie) and answers a request ``/<its id>/REST`` with the ``routes[REST]``
entry: status, headers (any, ``Set-Cookie`` and friends included) and body, sent with
a ``Content-Length`` or, for ``chunked`` routes, without one. It advertises an
unreachable listen URL, so clients reach it only through the hub. Once it joined and
the hub acknowledged its index, it prints ``joined <node id>`` on stdout.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from kbproto import SeededIdSource, ShareConfig, ShareCore
from kbproto.auth import node_id_from_public_pem
from kbtransport.http import Request, Response, StreamBody, error_response
from kbtransport.listener import ListenConfig
from kbtransport.node import NodeHooks
from kbtransport.serve import serve_node
from tests.e2e.procs import Procs
from tests.helpers import Ed25519Signer

__all__ = ("FakeRoute", "FakeShareScript", "start_fake_share")

#: The listen URL the fake share advertises: nothing answers there.
UNREACHABLE = "http://127.0.0.1:9"


@dataclass(frozen=True)
class FakeRoute:
    """One scripted answer.

    Attributes:
        status: the HTTP status.
        headers: every header to send, as given.
        body: the body.
        chunked: send no ``Content-Length`` (the hub then answers chunked).
    """

    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    chunked: bool = False


@dataclass(frozen=True)
class FakeShareScript:
    """What the fake share says and answers.

    Attributes:
        hub_url: the hub to join.
        seed: its key (``tests.helpers.Ed25519Signer``), hence its node id.
        files: ``(sha1, path, size)`` index entries, true or not.
        routes: answers by the request path after ``/<node id>/`` (query left out).
    """

    hub_url: str
    seed: int
    files: tuple[tuple[str, str, int], ...] = ()
    routes: dict[str, FakeRoute] = field(default_factory=dict)

    @property
    def node_id(self) -> str:
        """The fake share's node id."""
        return node_id_from_public_pem(Ed25519Signer(self.seed).public_pem)

    def write(self, path: Path) -> Path:
        """Write the script as JSON to ``path``."""
        routes = {
            rest: {
                "status": route.status,
                "headers": [list(pair) for pair in route.headers],
                "body": base64.b64encode(route.body).decode(),
                "chunked": route.chunked,
            }
            for rest, route in self.routes.items()
        }
        data = {
            "hub_url": self.hub_url,
            "seed": self.seed,
            "files": [list(entry) for entry in self.files],
            "routes": routes,
        }
        path.write_text(json.dumps(data))
        return path

    @classmethod
    def read(cls, path: Path) -> FakeShareScript:
        """The script written by ``write``."""
        data = json.loads(path.read_text())
        routes = {
            rest: FakeRoute(
                status=int(route["status"]),
                headers=tuple((str(n), str(v)) for n, v in route["headers"]),
                body=base64.b64decode(route["body"]),
                chunked=bool(route["chunked"]),
            )
            for rest, route in data["routes"].items()
        }
        files = tuple((str(s), str(p), int(n)) for s, p, n in data["files"])
        return cls(hub_url=data["hub_url"], seed=int(data["seed"]), files=files, routes=routes)


def start_fake_share(procs: Procs, script: FakeShareScript, directory: Path) -> str:
    """Start the fake share of ``script`` under ``procs``; wait until it joined its
    hub and return its node id."""
    directory.mkdir(parents=True, exist_ok=True)
    path = script.write(directory / f"fake-share-{script.seed}.json")
    proc = procs.start(
        f"fake-share-{script.seed}", [sys.executable, "-m", "tests.hostile.fake_share", str(path)]
    )
    proc.wait_line(rf"joined {script.node_id}$")
    return script.node_id


async def _pieces(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 65536):
        yield body[start : start + 65536]


async def _run(script: FakeShareScript) -> None:
    signer = Ed25519Signer(script.seed)
    config = ShareConfig(
        name=f"fake-share-{script.seed}", listen_url=UNREACHABLE, parent_url=script.hub_url
    )
    core = ShareCore(config, signer=signer, ids=SeededIdSource(script.seed))

    async def app(request: Request) -> Response:
        rest = "/".join(request.segments[1:])
        route = script.routes.get(rest)
        if route is None:
            return error_response(404, "Not scripted")
        if route.chunked:
            body = StreamBody(chunks=_pieces(route.body), length=None)
            return Response(status=route.status, headers=route.headers, body=body)
        return Response(status=route.status, headers=route.headers, body=route.body)

    def synced(entries: int) -> None:
        # Joined, and the hub acknowledged the index: finds there see our files.
        print(f"joined {script.node_id}", flush=True)

    hooks = NodeHooks(on_index_synced=synced)
    async with serve_node(core, app, ListenConfig(host="127.0.0.1", port=0), hooks=hooks) as h:
        await h.set_files(script.files)
        await h.wait()


def main() -> None:
    """Run the fake share of the script named on the command line until killed."""
    anyio.run(_run, FakeShareScript.read(Path(sys.argv[1])))


if __name__ == "__main__":
    main()
