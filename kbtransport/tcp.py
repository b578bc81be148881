"""Reaching the asyncio transport under an anyio TCP stream, for what anyio does not expose.

Two uses: the HTTP server's ``sendfile`` path, and larger socket reads on bulk
connections. asyncio's selector transport reads at most ``max_size`` bytes (256 KiB)
per ``recv`` and anyio hands over one such piece per ``receive`` call, each call a
task wake-up plus two ``epoll_ctl`` calls (anyio pauses reading between calls). A
proxying hub reads a GiB from its child's uplink in 4,096 of those; with 1 MiB reads
the socket's backlog comes over in a quarter of the passes (measured: the hub's CPU
per proxied GiB fell by a fifth).
"""

from __future__ import annotations

import asyncio
import socket

from anyio.abc import ByteStream

__all__ = ("asyncio_transport", "set_read_size")


def asyncio_transport(stream: ByteStream) -> asyncio.Transport | None:
    """The asyncio transport under a plain anyio TCP stream, else None (TLS, memory...)."""
    # anyio keeps the transport in a private attribute of its asyncio SocketStream; we
    # check the exact module so a wrapper (TLSStream) or another stream type is never
    # mistaken for it, and callers fall back to the portable path otherwise. (A stream
    # of that module exists only on the asyncio backend: no separate backend check.)
    if type(stream).__module__ != "anyio._backends._asyncio":
        return None
    transport = getattr(stream, "_transport", None)
    if not isinstance(transport, asyncio.Transport) or transport.get_extra_info("sslcontext"):
        return None
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    return transport


def set_read_size(stream: ByteStream, size: int) -> bool:
    """Let each socket read of ``stream`` take up to ``size`` bytes; False if not possible.

    Only for streams read with ``receive(size)`` or larger: a smaller ``receive`` limit
    makes anyio split (copy) every oversized piece.
    """
    transport = asyncio_transport(stream)
    # ``max_size`` is the selector transport's per-recv limit (a class attribute that an
    # instance may override); other transports simply do not have it.
    if transport is None or not isinstance(getattr(transport, "max_size", None), int):
        return False
    transport.max_size = size  # type: ignore[attr-defined]
    return True
