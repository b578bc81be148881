"""Errors raised and reported by the kbucket protocol core.

Strategy
--------
We follow h11's split (``h11/_util.py``): an error is either *local* (our own code
called the core in a way the protocol does not allow) or *remote* (the peer, or a
file we were given, broke the protocol). ``ProtocolError`` is the abstract parent and
cannot be raised directly, so every ``except ProtocolError`` sees one of the two.

Only ``LocalProtocolError`` is ever raised out of a core. On the receive path the core
turns a ``RemoteProtocolError`` into the ``reason`` of a ``LinkClosed`` event (a
misbehaving peer costs one link, not the node). Parsers that are not tied to a link
(``.prv`` files, codec helpers used by tools) raise ``RemoteProtocolError`` so a caller
can catch the whole family with one clause.

Every error carries ``reply_hint``: the short text (or code) to send back to the peer,
or to print for a user, when the error ends an exchange.
"""

from __future__ import annotations

__all__ = (
    "LimitExceeded",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
)


class ProtocolError(Exception):
    """Abstract base of every kbproto error; raise a subclass instead.

    Attributes:
        reply_hint: what to tell the other side (or the user) about this error.
    """

    def __init__(self, msg: str, reply_hint: str | None = None) -> None:
        if type(self) is ProtocolError:
            raise TypeError("ProtocolError is abstract; raise Local- or RemoteProtocolError")
        super().__init__(msg)
        self.reply_hint: str = reply_hint if reply_hint is not None else msg


class LocalProtocolError(ProtocolError):
    """Our own code used the core or a model in a way the protocol forbids."""


class RemoteProtocolError(ProtocolError):
    """The peer (or an input document such as a ``.prv`` file) broke the protocol."""


class LimitExceeded(RemoteProtocolError):
    """The peer crossed one of the configured bounds (frame size, table size...).

    Attributes:
        limit: the name of the configured limit that was crossed.
    """

    def __init__(self, msg: str, limit: str, reply_hint: str | None = None) -> None:
        super().__init__(msg, reply_hint)
        self.limit = limit
