"""A small route table for HTTP apps: patterns over decoded path segments.

A pattern is a ``/``-separated string. A literal segment must match exactly; ``{name}``
matches any one segment; a final ``{name*}`` matches the rest of the path (zero or more
segments, joined back with ``/`` in ``params`` and also given as a tuple in
``rest``). Routes are tried in the order they were added; a path that matches a
pattern but not its methods answers 405, no match 404.

Example::

    router = Router()
    router.add(("GET", "HEAD"), "/{node_id}/download/{path*}", download)
    app = router.app      # async (Request) -> Response
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from kbtransport.http import Request, Response, error_response

__all__ = ("Match", "Route", "Router")


@dataclass(frozen=True, slots=True)
class Match:
    """A successful route match.

    Attributes:
        params: captured segments by name (a ``{name*}`` capture joined with ``/``).
        rest: the segments a ``{name*}`` captured, as they were (empty if none).
    """

    params: dict[str, str]
    rest: tuple[str, ...]


Handler = Callable[[Request, Match], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Route:
    """One entry of the table: methods, parsed pattern and handler."""

    methods: frozenset[str]
    parts: tuple[str, ...]
    handler: Handler

    def match(self, segments: tuple[str, ...]) -> Match | None:
        """Return the match of ``segments`` against this route's pattern, or None."""
        params: dict[str, str] = {}
        for index, part in enumerate(self.parts):
            if part.startswith("{") and part.endswith("*}"):
                rest = segments[index:]
                params[part[1:-2]] = "/".join(rest)
                return Match(params, rest)
            if index >= len(segments):
                return None
            if part.startswith("{") and part.endswith("}"):
                params[part[1:-1]] = segments[index]
            elif part != segments[index]:
                return None
        if len(segments) != len(self.parts):
            return None
        return Match(params, ())


class Router:
    """An ordered route table; ``router.app`` is the server-facing app."""

    def __init__(self) -> None:
        self._routes: list[Route] = []

    def add(self, methods: Iterable[str], pattern: str, handler: Handler) -> None:
        """Add a route.

        Args:
            methods: e.g. ``("GET", "HEAD")``.
            pattern: ``/literal/{param}/{rest*}``; must start with ``/``.
            handler: ``async (Request, Match) -> Response``.

        Raises:
            ValueError: the pattern is malformed (``{x*}`` not last, no leading ``/``).
        """
        if not pattern.startswith("/"):
            raise ValueError(f"route pattern must start with '/': {pattern!r}")
        parts = tuple(pattern[1:].split("/"))
        for part in parts[:-1]:
            if part.endswith("*}"):
                raise ValueError(f"'{{name*}}' must be the last segment: {pattern!r}")
        self._routes.append(Route(frozenset(m.upper() for m in methods), parts, handler))

    async def app(self, request: Request) -> Response:
        """Dispatch ``request`` to the first matching route (404/405 otherwise)."""
        allowed = False
        for route in self._routes:
            match = route.match(request.segments)
            if match is None:
                continue
            if request.method in route.methods:
                return await route.handler(request, match)
            allowed = True
        if allowed:
            return error_response(405, f"Method {request.method} not allowed here")
        return error_response(404, "No such route")
