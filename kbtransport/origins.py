"""Which web pages may open a websocket or an uplink to a node: the ``Origin`` check.

A web page on any site can open a websocket to any address its browser reaches, and
script on it can sign a join with WebCrypto: without a check, any page a node's
operator (or anyone) opens could make its browser join the network as a share. The
browser always names the page's origin in the handshake's ``Origin`` header, and page
script can neither remove nor change it; kbucket's own dialers (wsproto's handshake, the
uplink upgrade in ``kbtransport.uplink``) send none. Nothing in kbucket's web interface
opens a websocket. So an upgrade that carries an ``Origin`` comes from a web page, and
a node refuses it (403) unless the operator listed that origin as allowed
(``allowed_origins`` in ``kbnode.json``; docs/security.md, "Cross-site joins").
A page's own node is no exception: its web interface needs no websocket either.

Origins are compared in their serialized form (RFC 6454 §6.2): lowercase
``scheme://host`` plus ``:port`` when it is not the scheme's default, as browsers send
them; ``null`` (a sandboxed frame, a ``file:`` page) is never allowed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = ("OriginPolicy", "canonical_origin")

_DEFAULT_PORTS = {"http": 80, "https": 443}
#: What a host may hold once bracketed IPv6 is set aside (names and IPv4).
_HOST_RE = re.compile(r"[a-z0-9.-]+")


def canonical_origin(value: str) -> str:
    """The serialized origin ``scheme://host[:port]`` that ``value`` names.

    Scheme and host are lowercased and a default port (80 for http, 443 for https) is
    left out, so ``HTTPS://Example.org:443`` gives ``https://example.org``.

    Raises:
        ValueError: ``value`` is not an http(s) origin: another scheme, ``null``, a
            path, query, fragment or user name, a malformed host or port.
    """
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        raise ValueError(f"not an origin: {value!r}") from None
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    if (
        scheme not in _DEFAULT_PORTS
        or not host
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username is not None
        or parts.password is not None
    ):
        raise ValueError(f"not an http(s) origin: {value!r}")
    if ":" in host:
        host = f"[{host}]"  # IPv6, as it appears in a URL
    elif not _HOST_RE.fullmatch(host):
        raise ValueError(f"not an http(s) origin: {value!r}")
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


@dataclass(frozen=True, slots=True)
class OriginPolicy:
    """The web origins whose pages may open a websocket or an uplink (none by default).

    Attributes:
        allowed: serialized origins (``canonical_origin``'s form).
    """

    allowed: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def of(cls, origins: Iterable[str]) -> OriginPolicy:
        """A policy allowing ``origins`` (any spelling ``canonical_origin`` accepts).

        Raises:
            ValueError: one of them is not an http(s) origin.
        """
        return cls(frozenset(canonical_origin(origin) for origin in origins))

    def allows(self, origin: str | None) -> bool:
        """True if an upgrade whose ``Origin`` header is ``origin`` may proceed.

        No header (a node's own dialer) is allowed; a header naming an origin outside
        ``allowed``, or not an origin at all (``null``), is not.
        """
        if origin is None:
            return True
        try:
            return canonical_origin(origin) in self.allowed
        except ValueError:
            return False
