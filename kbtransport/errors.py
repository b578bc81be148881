"""The transport error hierarchy and the one place foreign exceptions are translated.

Strategy
--------
Following httpcore's ``_exceptions.py`` (STYLE rule 12), every I/O call in kbtransport
runs inside ``map_exceptions(mapping)``: anyio's stream errors, ``OSError``, ``ssl``
errors, timeouts, and h11's and wsproto's remote-protocol errors become one of five
``TransportError`` subclasses, so kbapps catches only kbproto and kbtransport errors.
The mapping is chosen *at the line where the error can occur* (``READ_ERRORS`` around a
``receive``, ``WRITE_ERRORS`` around a ``send``...), because the same ``OSError`` means
"could not connect" at one place and "peer went away while we wrote" at another.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import anyio
import h11
import wsproto.utilities

__all__ = (
    "CONNECT_ERRORS",
    "READ_ERRORS",
    "WRITE_ERRORS",
    "ConnectError",
    "PeerProtocolError",
    "ReadError",
    "TransportError",
    "TransportTimeout",
    "WriteError",
    "map_exceptions",
)


class TransportError(Exception):
    """Base of every error kbtransport raises to its callers."""


class ConnectError(TransportError):
    """Could not open a connection (DNS, refused, TLS handshake, certificate, HTTP upgrade)."""


class ReadError(TransportError):
    """The connection failed or closed while we were reading from it."""


class WriteError(TransportError):
    """The connection failed or closed while we were writing to it."""


class TransportTimeout(TransportError):
    """A connect, read or idle deadline passed."""


class PeerProtocolError(TransportError):
    """The peer broke HTTP/1.1 or the websocket protocol, or crossed one of our limits.

    Attributes:
        status_hint: the HTTP status to answer with, when there is still a chance to answer.
    """

    def __init__(self, msg: str, status_hint: int = 400) -> None:
        super().__init__(msg)
        self.status_hint = status_hint


ExceptionMapping = Mapping[type[BaseException], type[TransportError]]

#: Around ``connect_tcp`` and TLS handshakes of outgoing connections.
CONNECT_ERRORS: ExceptionMapping = {
    TimeoutError: TransportTimeout,
    OSError: ConnectError,  # includes ssl.SSLError and certificate failures
    anyio.BrokenResourceError: ConnectError,
    anyio.EndOfStream: ConnectError,
    anyio.ClosedResourceError: ConnectError,
}

#: Around ``receive`` (and the parsers fed by it).
READ_ERRORS: ExceptionMapping = {
    TimeoutError: TransportTimeout,
    anyio.EndOfStream: ReadError,
    anyio.BrokenResourceError: ReadError,
    anyio.ClosedResourceError: ReadError,
    ssl.SSLError: ReadError,
    OSError: ReadError,
    h11.RemoteProtocolError: PeerProtocolError,
    wsproto.utilities.RemoteProtocolError: PeerProtocolError,
}

#: Around ``send``.
WRITE_ERRORS: ExceptionMapping = {
    TimeoutError: TransportTimeout,
    anyio.BrokenResourceError: WriteError,
    anyio.ClosedResourceError: WriteError,
    anyio.EndOfStream: WriteError,
    ssl.SSLError: WriteError,
    OSError: WriteError,
}


def _describe(exc: BaseException) -> str:
    text = str(exc)
    name = type(exc).__name__
    if isinstance(exc, anyio.EndOfStream):
        return "connection closed by peer"
    if isinstance(exc, anyio.BrokenResourceError):
        cause = exc.__cause__
        return f"connection broken ({cause})" if cause else "connection broken"
    if isinstance(exc, anyio.ClosedResourceError):
        return "connection already closed"
    return f"{name}: {text}" if text else name


@contextmanager
def map_exceptions(mapping: ExceptionMapping) -> Iterator[None]:
    """Re-raise any exception matching ``mapping`` as its ``TransportError`` class.

    The first key (in mapping order) that the exception is an instance of wins, so put
    subclasses before their bases. ``TransportError`` itself passes through untouched,
    and so do cancellation and everything not in the mapping.

    Raises:
        TransportError: the translated error, chained to the original.
    """
    try:
        yield
    except TransportError:
        raise
    except Exception as exc:
        for from_exc, to_exc in mapping.items():
            if isinstance(exc, from_exc):
                if to_exc is PeerProtocolError:
                    hint = getattr(exc, "error_status_hint", 400)
                    raise PeerProtocolError(_describe(exc), status_hint=hint) from exc
                raise to_exc(_describe(exc)) from exc
        raise
