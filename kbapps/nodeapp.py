"""The running node's whole HTTP app, for kbapps code that asks the network.

The share's routes and the web pages are part of the app ``serve_node`` builds, yet
some of them must themselves ask the network: a stand-in's download is served by the
node's ``/sha1/SHA1`` route (content found anywhere in the tree, ``kbapps.share.
standins``), and a web page shows any node of the network by asking its own
``/ID/api/...`` routes (``kbapps.web``). Going through the node's own app, rather than
calling the routing code directly, keeps one implementation of routing, proxying and
content checks.

The app exists only once the node runs, after the local routes were built, so
``NodeApp`` is created first, handed to those routes, and ``attach``-ed to the node's
app when ``serve_node`` has started it (``kbapps.noderun``).
"""

from __future__ import annotations

from collections.abc import Iterable

from kbtransport.http import App, Request, Response, error_response
from kbtransport.served_streams import request_from_target

__all__ = ("NodeApp",)


class NodeApp:
    """A late-bound reference to the node's whole HTTP app (see the module docstring)."""

    def __init__(self) -> None:
        self._app: App | None = None

    def attach(self, app: App) -> None:
        """Route requests to ``app`` from now on (the node's ``NodeHandle.node.http_app``)."""
        self._app = app

    @property
    def attached(self) -> bool:
        """True once ``attach`` was called."""
        return self._app is not None

    async def request(
        self, method: str, target: str, headers: Iterable[tuple[str, str]] = ()
    ) -> Response:
        """Answer ``method target`` as the node would answer an HTTP client.

        Args:
            method: ``GET`` or ``HEAD``.
            target: an absolute request target, ASCII, percent-encoded
                (``/0123456789ab/api/nodeinfo``).
            headers: request headers to pass on (``Range``, ``If-None-Match``...).

        Returns:
            The node's response; the caller sends or discards it
            (``kbtransport.served_streams.discard_response``). 503 before ``attach``.

        Raises:
            ValueError: ``target`` is not a valid request target (our own bug).
        """
        request = request_from_target(method, target, headers)
        return await self(request)

    async def __call__(self, request: Request) -> Response:
        """The node app's answer to ``request`` (503 before ``attach``)."""
        if self._app is None:
            return error_response(503, "Node is starting")
        return await self._app(request)
