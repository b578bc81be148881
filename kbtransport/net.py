"""Opening outgoing connections: URL parsing, TCP (+TLS) connect with a deadline.

Certificates are verified against the system store; ``ssl.create_default_context``
loads OpenSSL's default paths, which honour ``SSL_CERT_FILE`` and ``SSL_CERT_DIR``
(docs/commands.md, kbucket-hub). Tests pass their own context (trustme).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import anyio
from anyio.abc import ByteStream

from kbtransport.errors import CONNECT_ERRORS, ConnectError, TransportTimeout, map_exceptions

__all__ = ("Url", "default_ssl_context", "open_stream", "parse_url")

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
#: URLs longer than this are refused outright (they come from config files and peers).
_MAX_URL = 8192


@dataclass(frozen=True, slots=True)
class Url:
    """A parsed ``http``/``https``/``ws``/``wss`` URL.

    Attributes:
        scheme: lower-case scheme.
        host: host name or address (IPv6 without brackets).
        port: explicit or default port.
        target: the request target: path (``/`` if empty) plus ``?query``.
    """

    scheme: str
    host: str
    port: int
    target: str

    @property
    def secure(self) -> bool:
        """True for ``https`` and ``wss``."""
        return self.scheme in ("https", "wss")

    @property
    def host_header(self) -> str:
        """The ``Host`` header value (port omitted when it is the scheme's default)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if _DEFAULT_PORTS[self.scheme] == self.port:
            return host
        return f"{host}:{self.port}"


def parse_url(url: str) -> Url:
    """Parse ``url``; raise ``ConnectError`` with one clear line if it is unusable."""
    if len(url) > _MAX_URL:
        raise ConnectError("URL is too long")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConnectError(f"invalid URL {url!r}: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ConnectError(f"unsupported URL scheme in {url!r} (use http, https, ws or wss)")
    if not parts.hostname:
        raise ConnectError(f"URL has no host: {url!r}")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    if any(ord(c) <= 32 or ord(c) == 127 for c in target):
        raise ConnectError(f"URL path holds spaces or control characters: {url!r}")
    return Url(scheme, parts.hostname, port or _DEFAULT_PORTS[scheme], target)


def default_ssl_context() -> ssl.SSLContext:
    """A verifying client context: system store, or ``SSL_CERT_FILE``/``SSL_CERT_DIR``."""
    return ssl.create_default_context()


async def open_stream(
    url: Url, *, timeout: float, ssl_context: ssl.SSLContext | None = None
) -> ByteStream:
    """Connect to ``url``'s host and port, with TLS for ``https``/``wss``.

    Args:
        url: where to connect.
        timeout: seconds for TCP connect plus TLS handshake together.
        ssl_context: the client context for TLS; ``default_ssl_context()`` if None.

    Raises:
        ConnectError: refused, unreachable, DNS failure, TLS or certificate failure.
        TransportTimeout: ``timeout`` passed.
    """
    with map_exceptions(CONNECT_ERRORS):
        try:
            with anyio.fail_after(timeout):
                if url.secure:
                    return await anyio.connect_tcp(
                        url.host,
                        url.port,
                        ssl_context=ssl_context or default_ssl_context(),
                        tls_hostname=url.host,
                        tls_standard_compatible=False,
                    )
                return await anyio.connect_tcp(url.host, url.port)
        except TimeoutError as exc:
            raise TransportTimeout(
                f"connecting to {url.host}:{url.port} timed out after {timeout:g} s"
            ) from exc
        except OSError as exc:
            raise ConnectError(f"cannot connect to {url.host}:{url.port}: {exc}") from exc
