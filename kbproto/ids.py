"""Identifier types and the injected source of fresh ids and nonces.

Strategy
--------
Ids are ``NewType`` strings so mypy keeps a node id from being passed where a content
id is expected, at no run-time cost. The core never draws entropy itself (STYLE rule 1):
whoever builds a core hands it an ``IdSource``. Real drivers use one backed by the OS
(``kbtransport``); the simulator and tests use ``SeededIdSource`` so a seed fixes a run.
"""

from __future__ import annotations

import random
import re
from typing import NewType, Protocol

__all__ = (
    "IdSource",
    "LinkId",
    "LookupId",
    "NodeId",
    "RequestId",
    "SeededIdSource",
    "Sha1",
    "StreamId",
    "is_node_id",
    "is_sha1",
)

#: 12 lowercase hex digits: the first 12 of SHA-1(public.pem text) (docs/protocol.md §3.1).
NodeId = NewType("NodeId", str)
#: 40 lowercase hex digits: the SHA-1 of a file's bytes (docs/protocol.md §3.1).
Sha1 = NewType("Sha1", str)
#: A driver-local handle for one peer connection; never sent on the wire.
LinkId = NewType("LinkId", int)
#: A per-link request/stream number chosen by the side that opens the request.
RequestId = NewType("RequestId", int)
#: A node-local handle the core gives the app for one proxied request stream (the
#: stream's wire number differs on every hop); never sent on the wire.
StreamId = NewType("StreamId", int)
#: A node-local handle the core gives the app for one pending find; never on the wire.
LookupId = NewType("LookupId", int)

_NODE_ID_RE = re.compile(r"[0-9a-f]{12}")
_SHA1_RE = re.compile(r"[0-9a-f]{40}")


def is_node_id(value: object) -> bool:
    """Return True if ``value`` is a well-formed node id (12 lowercase hex digits)."""
    return isinstance(value, str) and _NODE_ID_RE.fullmatch(value) is not None


def is_sha1(value: object) -> bool:
    """Return True if ``value`` is a well-formed content id (40 lowercase hex digits)."""
    return isinstance(value, str) and _SHA1_RE.fullmatch(value) is not None


class IdSource(Protocol):
    """Where a core gets fresh nonces and random choices from."""

    def nonce(self, nbytes: int) -> bytes:
        """Return ``nbytes`` unpredictable bytes (challenges, request tokens)."""
        ...

    def uniform(self, low: float, high: float) -> float:
        """Return a number in ``[low, high]`` (backoff jitter)."""
        ...


class SeededIdSource:
    """A deterministic ``IdSource`` for the simulator and tests.

    Args:
        seed: anything ``random.Random`` accepts; the same seed gives the same ids.
    """

    def __init__(self, seed: int | str) -> None:
        self._random = random.Random(seed)

    def nonce(self, nbytes: int) -> bytes:
        """Return ``nbytes`` bytes drawn from the seeded generator."""
        return self._random.randbytes(nbytes)

    def uniform(self, low: float, high: float) -> float:
        """Return a seeded number in ``[low, high]``."""
        return self._random.uniform(low, high)
