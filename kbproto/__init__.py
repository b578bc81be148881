"""kbproto: the sans-IO kbucket protocol core.

Pure state machines (node handshake, index sync, lookup routing, proxy framing,
timers) and the ``.prv`` models. No I/O, no clock, no entropy: bytes and ``now`` in,
events and actions out. See ``docs/protocol.md``.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ("__version__",)
