"""Every speed path that needs more than anyio's portable API, in one place.

kbtransport runs on any anyio backend (asyncio or trio). A few measured speed-ups need
what anyio does not expose: asyncio's transport under an anyio TCP stream (its private
``_transport``), or readiness waits on a raw socket. Each lives here behind a capability
check, and each has the portable path as its fallback, taken whenever the check fails
(trio, TLS, in-memory streams, an event loop without ``add_reader``). Callers never
reach into private APIs themselves. ``docs/benchmarks.md`` lists what each one gains.

* ``sendfile``: a file body goes out by ``loop.sendfile`` (the kernel copies it) on
  plain asyncio TCP; elsewhere the caller reads and sends (``sendfile`` returns False).
* ``set_read_size``: a bulk connection's asyncio transport reads up to 1 MiB per
  ``recv`` instead of 256 KiB, so a hub reads its children's uplinks in a quarter of
  the passes; elsewhere reads keep their size (returns False).
* ``open_tcp``: an outgoing plain TCP connection as a ``RawSocketStream``, which calls
  ``recv`` itself and waits for readability only when the socket is empty, so a 1 MiB
  ``receive`` returns up to 1 MiB with one system call (a download client's receive
  path); where readiness waits are not available, ``anyio.connect_tcp``.
* ``direct_writer``: a small response goes straight into an empty asyncio transport
  buffer, skipping ``send``'s cancel scope and event-loop pass; elsewhere (None) the
  server awaits ``send`` under its write deadline.
* ``IdleWatch``: one re-armed loop timer per server connection closes it when idle,
  instead of a cancel scope with a deadline around every wait for a request; elsewhere
  (None) the server opens that scope per wait.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

import anyio
import anyio.lowlevel
from anyio.abc import ByteStream, SocketAttribute

__all__ = (
    "IdleWatch",
    "RawSocketStream",
    "direct_writer",
    "open_tcp",
    "raw_sockets_supported",
    "sendfile",
    "set_read_size",
)

#: anyio's asyncio socket stream: the only stream type whose transport we may reach.
_ASYNCIO_STREAM_MODULE = "anyio._backends._asyncio"


def _asyncio_transport(stream: ByteStream) -> asyncio.Transport | None:
    """The asyncio transport under a plain anyio TCP stream, else None (TLS, memory, trio...)."""
    # anyio keeps the transport in a private attribute of its asyncio SocketStream; we
    # check the exact module so a wrapper (TLSStream) or another stream type is never
    # mistaken for it. (A stream of that module exists only on the asyncio backend: no
    # separate backend check.)
    if type(stream).__module__ != _ASYNCIO_STREAM_MODULE:
        return None
    transport = getattr(stream, "_transport", None)
    if not isinstance(transport, asyncio.Transport) or transport.get_extra_info("sslcontext"):
        return None
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    return transport


async def sendfile(stream: ByteStream, file: BinaryIO, offset: int, length: int) -> bool:
    """Send ``length`` bytes of ``file`` from ``offset`` on ``stream`` by the kernel's
    ``sendfile``, if ``stream`` is plain TCP on asyncio; False (nothing sent) otherwise.

    sendfile costs ~0.20 s CPU per GiB served against 0.35 s for reading and sending
    (``docs/benchmarks.md``). asyncio's ``loop.sendfile`` first waits for the
    transport's write buffer to drain (so what was written before goes out first).

    Raises:
        OSError, RuntimeError: the connection failed while sending (map them).
        EOFError: the file ended before ``length`` bytes (it shrank).
    """
    transport = _asyncio_transport(stream) if hasattr(os, "sendfile") else None
    if transport is None:
        return False
    loop = asyncio.get_running_loop()
    sent = await loop.sendfile(transport, file, offset, length)
    if sent != length:
        raise EOFError(f"file shrank while being sent ({sent} of {length} bytes)")
    return True


def set_read_size(stream: ByteStream, size: int) -> bool:
    """Let each socket read of ``stream`` take up to ``size`` bytes; False if not possible.

    asyncio's selector transport reads at most 256 KiB per ``recv``, and anyio hands
    over one such piece per ``receive`` call, each a task wake-up and two ``epoll_ctl``
    calls. Only for streams read with ``receive(size)`` or larger: a smaller
    ``receive`` limit makes anyio split (copy) every oversized piece.
    """
    transport = _asyncio_transport(stream)
    # ``max_size`` is the selector transport's per-recv limit (a class attribute that an
    # instance may override); other transports simply do not have it.
    if transport is None or not isinstance(getattr(transport, "max_size", None), int):
        return False
    transport.max_size = size  # type: ignore[attr-defined]
    return True


def direct_writer(stream: ByteStream, limit: int) -> Callable[[bytes], bool] | None:
    """A function that writes at most ``limit`` bytes on ``stream`` at once when that
    cannot block (True), or declines (False: the caller awaits ``stream.send``); None
    where ``stream`` is not plain TCP on asyncio.

    On asyncio a transport write never blocks: what the kernel does not take at once
    waits in the transport's buffer. Writing only into an empty buffer, and at most
    ``limit`` bytes, bounds what a client that stops reading can make us hold to one
    small response; with anything buffered the caller's ``send`` waits under its
    deadline. anyio's ``send`` adds a shielded cancel scope and a pass of the event loop
    (its checkpoint) to every response, more Python than the rest of a small response:
    a hub's CPU per find was 1.2-1.3 times higher without this (``docs/benchmarks.md``).
    """
    transport = _asyncio_transport(stream)
    if transport is None:
        return None

    def write(data: bytes) -> bool:
        if len(data) > limit or transport.is_closing() or transport.get_write_buffer_size():
            return False
        transport.write(data)
        return True

    return write


class IdleWatch:
    """Cancels ``scope`` once the connection has waited ``timeout`` seconds on its client.

    ``since()`` says when the connection started waiting for a request (event-loop
    time; None while a request is being served). One loop timer, re-armed lazily,
    checks it: when it fires and the connection has been waiting ``timeout`` seconds, it
    cancels ``scope``; otherwise it re-arms for ``since + timeout`` (or ``now +
    timeout`` while a request is being served). A connection still closes exactly
    ``timeout`` after it went idle, with at most one extra timer wake-up per
    ``timeout``. The portable way, a cancel scope with a deadline around each wait,
    arms and cancels a loop timer per request: ~10-25 µs, as much as h11's parsing of
    a small request (``docs/benchmarks.md``).
    """

    __slots__ = ("_handle", "_loop", "_scope", "_since", "_timeout")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        timeout: float,
        since: Callable[[], float | None],
        scope: anyio.CancelScope,
    ) -> None:
        self._loop = loop
        self._timeout = timeout
        self._since = since
        self._scope = scope
        self._handle: asyncio.TimerHandle | None = loop.call_at(loop.time() + timeout, self._fire)

    @classmethod
    def start(
        cls, timeout: float, since: Callable[[], float | None], scope: anyio.CancelScope
    ) -> IdleWatch | None:
        """A watch on the running asyncio loop, or None on another event loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        return cls(loop, timeout, since, scope)

    def now(self) -> float:
        """The event loop's time (``anyio.current_time`` there, minus its lookups)."""
        return self._loop.time()

    def _fire(self) -> None:
        since = self._since()
        now = self._loop.time()
        if since is not None and now - since >= self._timeout:
            self._handle = None
            self._scope.cancel()
            return
        due = (now if since is None else since) + self._timeout
        self._handle = self._loop.call_at(due, self._fire)

    def stop(self) -> None:
        """Never fire again (the connection ended or left HTTP)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


def raw_sockets_supported() -> bool:
    """True if the running event loop can wait for a raw socket's readiness
    (``anyio.wait_readable``): trio, and asyncio loops with ``add_reader``."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return True  # not asyncio (trio): readiness waits always work
    # Windows' proactor loop has ``add_reader`` but cannot watch sockets with it.
    return not isinstance(loop, getattr(asyncio, "ProactorEventLoop", ()))


class RawSocketStream(ByteStream):
    """A connected TCP socket as an ``anyio.abc.ByteStream`` (the stream owns the socket).

    ``receive`` calls ``recv`` itself and waits (``anyio.wait_readable``) only when the
    socket is empty; socket errors become anyio's stream exceptions, as on anyio's own
    streams. TLS can wrap it.
    """

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._closed = False

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        """``SocketAttribute`` values: family, addresses and the raw socket."""
        sock = self._sock
        return {
            SocketAttribute.family: lambda: sock.family,
            SocketAttribute.local_address: lambda: sock.getsockname(),
            SocketAttribute.remote_address: lambda: sock.getpeername(),
            SocketAttribute.raw_socket: lambda: sock,
        }

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """Return up to ``max_bytes`` bytes; ``anyio.EndOfStream`` at the peer's EOF."""
        if max_bytes < 1:
            raise ValueError("max_bytes must be a positive integer")
        # One checkpoint per call keeps cancellation working and lets other tasks run
        # even when data is always ready.
        await anyio.lowlevel.checkpoint()
        while True:
            if self._closed:
                raise anyio.ClosedResourceError
            try:
                data = self._sock.recv(max_bytes)
            except (BlockingIOError, InterruptedError):
                await anyio.wait_readable(self._sock)
                continue
            except OSError as exc:
                raise anyio.BrokenResourceError from exc
            if not data:
                raise anyio.EndOfStream
            return data

    async def send(self, item: bytes) -> None:
        """Send all of ``item``, waiting for writability as needed."""
        await anyio.lowlevel.checkpoint()
        view = memoryview(item)
        while view:
            if self._closed:
                raise anyio.ClosedResourceError
            try:
                sent = self._sock.send(view)
            except (BlockingIOError, InterruptedError):
                await anyio.wait_writable(self._sock)
                continue
            except OSError as exc:
                raise anyio.BrokenResourceError from exc
            view = view[sent:]

    async def send_eof(self) -> None:
        """Shut down the sending direction (TCP FIN)."""
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            raise anyio.BrokenResourceError from exc

    async def aclose(self) -> None:
        """Close the socket (waking any task waiting on it). Idempotent."""
        if not self._closed:
            self._closed = True
            anyio.notify_closing(self._sock)
            self._sock.close()
        await anyio.lowlevel.checkpoint()


async def open_tcp(host: str, port: int, *, raw: bool = True) -> ByteStream:
    """Connect to ``host:port``: a ``RawSocketStream`` when ``raw`` and the event loop
    supports it (``raw_sockets_supported``), else ``anyio.connect_tcp``'s stream.

    Raises:
        OSError: no address could be connected (the last error), or resolution failed.
    """
    if not raw or not raw_sockets_supported():
        return await anyio.connect_tcp(host, port)
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    last: OSError = OSError(f"no address found for {host}")
    for family, kind, proto, _name, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            err = sock.connect_ex(address)
            if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
                raise OSError(err, f"connect to {host}:{port}: {os.strerror(err)}")
            if err:
                await anyio.wait_writable(sock)
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, f"connect to {host}:{port}: {os.strerror(err)}")
        except OSError as exc:
            sock.close()
            last = exc
            continue
        except BaseException:
            sock.close()
            raise
        return RawSocketStream(sock)
    raise last
