"""Regression (issue 6 load test): a hub full of children still has room for clients.

A child's websocket holds one of the listener's connection slots while it is joined;
with the listener's default of 1024 slots, a hub with its 1000 children (kbproto's
``max_children``) served only 24 HTTP clients at once and queued the rest for as
long as those stayed connected. ``kbapps.noderun`` now gives a hub room for its
children (two connections each: websocket and uplink) plus 1024 clients and raises
the descriptor limit to match.
"""

from __future__ import annotations

import resource
from types import SimpleNamespace
from typing import Any

from kbapps import noderun
from kbproto.config import Limits


def _capacity(kind: str) -> int:
    setup: Any = SimpleNamespace(kind=kind)
    return noderun._connection_capacity(setup)


def test_hub_has_room_for_all_children_and_clients() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        hub = _capacity("hub")
        share = _capacity("leaf")
        now_soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard >= 4096:
            assert hub >= 2 * Limits().max_children + 1024  # websocket + uplink each
            assert now_soft > hub  # descriptors for every slot, and files besides
        assert share >= 1024 or share == now_soft - 512
        assert hub > share
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_low_descriptor_limit_is_raised_or_respected() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        hub = _capacity("hub")
        now_soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        # Raised toward what the hub needs (up to the hard limit); never more slots
        # than descriptors.
        assert now_soft > 256 or hard <= 256
        assert hub <= now_soft
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
