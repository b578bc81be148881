"""Which download URLs a browser can reach, best first.

A find answers URLs in the network's order (the share's own listen URL, then each hub
between it and the node asked, ``docs/protocol.md`` §6). That order suits a program on the
share's own network; a browser showing the find page can tell more:

* a URL on the page's own origin works: the browser just loaded the page from there
  (so the page lists, first, each copy's URL through the node that served it, even
  when that node advertises another name for itself);
* ``localhost``/``127.0.0.1``/``[::1]`` names the viewer's own computer, not the node
  that advertised it, unless the page itself came from such an address;
* an ``http`` URL cannot be fetched by an ``https`` page (mixed content is blocked).

``rank_sources`` keeps the network's order within each group. The page's script then
tries each URL from the browser itself and marks the ones that do not answer
(``app.js``), which no server can know.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ("Origin", "Source", "origin_of", "rank_sources")

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Origin:
    """A web origin: scheme, lower-case host and port."""

    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        """``https://host:port``, the port left out when it is the scheme's default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if _DEFAULT_PORTS.get(self.scheme) == self.port else f":{self.port}"
        return f"{self.scheme}://{host}{port}"

    @property
    def loopback(self) -> bool:
        """True for ``localhost`` names and loopback or unspecified addresses."""
        host = self.host
        if host == "localhost" or host.endswith(".localhost"):
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return address.is_loopback or address.is_unspecified


@dataclass(frozen=True, slots=True)
class Source:
    """A download URL and what the page can say about reaching it.

    Attributes:
        url: the URL as the find answered it.
        rank: 0 same origin, 1 nothing known against it, 2 the viewer's own
            computer, 3 blocked (http from an https page).
        note: a few words for ranks 0, 2 and 3; empty otherwise.
    """

    url: str
    rank: int
    note: str


def origin_of(url: str) -> Origin | None:
    """The origin of an ``http``/``https`` URL, or None (another scheme, no host, a
    malformed port)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return Origin(scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme])


def _rank(origin: Origin, page: Origin | None) -> tuple[int, str]:
    if page is None:
        return 1, ""
    if origin == page:
        return 0, "this node"
    if page.scheme == "https" and origin.scheme == "http":
        return 3, "blocked: an https page cannot download over http"
    if origin.loopback and not page.loopback:
        return 2, "names the viewer's own computer"
    return 1, ""


def rank_sources(urls: Sequence[str], page: Origin | None) -> list[Source]:
    """The ``http``/``https`` URLs of ``urls``, best first for a page on ``page``.

    Args:
        urls: URLs as a find answered them (others schemes are left out).
        page: the origin the browser loaded the page from (None: unknown, keep order).
    """
    sources: list[Source] = []
    for url in urls:
        origin = origin_of(url)
        if origin is None:
            continue
        rank, note = _rank(origin, page)
        sources.append(Source(url, rank, note))
    sources.sort(key=lambda source: source.rank)  # stable: the network's order within
    return sources
