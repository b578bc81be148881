"""kbtransport: drives kbproto cores over the network with anyio, h11 and wsproto."""

from __future__ import annotations

__all__ = ()
