"""What a core asks its driver to do: the driver-facing vocabulary (STYLE rule 4).

A core never touches a socket. After every call into it, the driver drains
``next_action()`` completely and carries the actions out in order. Bytes always travel
with their destination link.
"""

from __future__ import annotations

from dataclasses import dataclass

from kbproto.ids import LinkId

__all__ = ("Action", "Dial", "Hangup", "Transmit")


@dataclass(frozen=True, slots=True, kw_only=True)
class Transmit:
    """Send ``data`` on link ``link_id``, after everything sent on it before."""

    link_id: LinkId
    data: bytes

    def __post_init__(self) -> None:
        if not self.data:
            raise ValueError("Transmit needs at least one byte")


@dataclass(frozen=True, slots=True, kw_only=True)
class Dial:
    """Open a link to the parent hub at ``address`` (a ``http(s)://`` URL).

    A node has at most one dial in flight. The driver answers with
    ``link_opened(link_id, now, dialed=True)`` on success or ``dial_failed(now, reason)``.
    """

    address: str

    def __post_init__(self) -> None:
        if not self.address:
            raise ValueError("Dial needs an address")


@dataclass(frozen=True, slots=True, kw_only=True)
class Hangup:
    """Close link ``link_id`` once the bytes already queued for it are sent.

    ``reason`` is for logs and traces; the peer already got it in an error frame.
    """

    link_id: LinkId
    reason: str


#: Every action a core can emit.
Action = Transmit | Dial | Hangup
