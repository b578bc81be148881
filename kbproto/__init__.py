"""kbproto: the sans-IO kbucket protocol core.

Pure state machines (node handshake, index sync, lookup routing, proxy framing,
timers) and the ``.prv`` models. No I/O, no clock, no entropy: bytes and ``now`` in,
events and actions out. See ``docs/protocol.md``.

The public surface: ``HubCore`` and ``ShareCore`` (both ``NodeCore``), their frozen
configuration (``HubConfig``, ``ShareConfig``, ``Limits``, ``Timeouts``), the events
they emit (``kbproto.events``), the actions they ask for (``Transmit``, ``Dial``,
``Hangup``), the drain helper (``drain``), the errors, the ids and the injected
interfaces (``Signer``, ``Verifier``, ``IdSource``, ``TraceSink``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # The names as mypy and editors see them; at run time __getattr__ provides them.
    from kbproto._exports import *  # noqa: F403

# ruff: noqa: F405  (the __all__ names come from the star import above, or lazily)

__version__ = "0.1.0"

__all__ = (
    "Action",
    "Dial",
    "Drained",
    "Event",
    "FindResult",
    "Hangup",
    "HubConfig",
    "HubCore",
    "IdSource",
    "LimitExceeded",
    "Limits",
    "LinkId",
    "LocalProtocolError",
    "LookupId",
    "NodeCore",
    "NodeId",
    "NodeInfo",
    "ProtocolError",
    "RemoteProtocolError",
    "SeededIdSource",
    "Sha1",
    "ShareConfig",
    "ShareCore",
    "SignatureScheme",
    "Signer",
    "StreamId",
    "Timeouts",
    "TraceRecord",
    "TraceSink",
    "Transmit",
    "Verifier",
    "__version__",
    "drain",
    "node_id_from_public_pem",
)


def __getattr__(name: str) -> Any:
    # PEP 562: the first public name asked for loads them all, from kbproto._exports.
    if name not in __all__:
        raise AttributeError(f"module 'kbproto' has no attribute {name!r}")
    from kbproto import _exports

    value = getattr(_exports, name)
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
