"""Configuration validation, the small value types, the drain helper and timers."""

from __future__ import annotations

from typing import Any

import pytest

from kbproto import (
    Dial,
    Hangup,
    HubConfig,
    HubCore,
    Limits,
    LinkId,
    NodeId,
    ProtocolError,
    RemoteProtocolError,
    SeededIdSource,
    ShareConfig,
    ShareCore,
    Timeouts,
    Transmit,
    drain,
)
from kbproto.events import ChildJoined, LinkClosed
from kbproto.messages import Open
from kbproto.timers import Deadlines
from kbproto.trace import ListTraceSink
from tests.helpers import CryptoVerifier, Ed25519Signer, Net


def _wrong(config: object) -> Any:
    """Hide a deliberately wrong config type from mypy."""
    return config


@pytest.mark.parametrize(
    "kwargs",
    [
        {"data_chunk": 0},
        {"data_chunk": True},
        {"max_control_frame": 1000},
        {"max_control_frame": 2 << 20},
        {"data_chunk": 70000},
        {"stream_window": 2**31},
        {"index_batch_bytes": 600_000},
        {"max_streams_per_link": 70000},
    ],
)
def test_limits_validation(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"Limits|must|at most"):
        Limits(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"heartbeat_interval": 0},
        {"heartbeat_interval": "1"},
        {"heartbeat_interval": 40.0},
        {"reconnect_min": 100.0},
    ],
)
def test_timeouts_validation(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"Timeouts|must"):
        Timeouts(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": 1},
        {"name": "n", "listen_url": "u" * 3000},
        {"name": "n", "parent_url": ""},
        {"name": "n", "parent_passcode": 1},
        {"name": "n", "passcode": 1},
    ],
)
def test_hub_config_validation(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must"):
        HubConfig(**kwargs)


def test_share_config_validation_and_core_types() -> None:
    with pytest.raises(ValueError, match="must"):
        ShareConfig(name="n", owner="o" * 5000)
    signer = Ed25519Signer(1)
    with pytest.raises(TypeError):
        HubCore(
            _wrong(ShareConfig(name="x")),
            signer=signer,
            verifier=CryptoVerifier(),
            ids=SeededIdSource(1),
        )
    with pytest.raises(TypeError):
        ShareCore(_wrong(HubConfig(name="x")), signer=signer, ids=SeededIdSource(1))


def test_actions_validate() -> None:
    with pytest.raises(ValueError, match="byte"):
        Transmit(link_id=LinkId(1), data=b"")
    with pytest.raises(ValueError, match="address"):
        Dial(address="")
    assert Hangup(link_id=LinkId(1), reason="r").reason == "r"


def test_protocol_error_is_abstract() -> None:
    with pytest.raises(TypeError, match="abstract"):
        ProtocolError("x")
    assert RemoteProtocolError("x").reply_hint == "x"
    assert RemoteProtocolError("x", "hint").reply_hint == "hint"


def test_deadlines() -> None:
    deadlines = Deadlines()
    deadlines.set("a", 5.0)
    deadlines.set("a", 5.0)  # unchanged: no new heap entry
    deadlines.set("b", 1.0)
    deadlines.set("b", 3.0)  # re-armed later: the old entry goes stale
    assert len(deadlines) == 2
    assert "a" in deadlines
    assert deadlines.get("b") == 3.0
    assert deadlines.earliest() == 3.0
    deadlines.cancel("b")
    deadlines.cancel("nope")
    assert deadlines.earliest() == 5.0
    assert deadlines.pop_due(4.9) == []
    assert deadlines.pop_due(5.0) == ["a"]
    assert deadlines.earliest() is None
    for i in range(200):  # many re-arms: the heap is compacted, order kept
        deadlines.set("c", float(i))
    assert deadlines.pop_due(1000.0) == ["c"]


def test_drain_hands_events_first_and_returns_actions_in_order() -> None:
    trace = ListTraceSink()
    hub = HubCore(
        HubConfig(name="h"),
        signer=Ed25519Signer(1),
        verifier=CryptoVerifier(),
        ids=SeededIdSource(1),
        trace=trace,
    )
    hub.start(0.0)
    hub.link_opened(LinkId(7), 0.0)
    hub.receive_data(LinkId(7), b"\x09", 0.0)
    seen: list[object] = []
    drained = drain(hub, seen.append)
    assert [type(a) for a in drained.actions] == [Transmit]  # the challenge; 1 byte is no frame
    hub.receive_data(LinkId(7), b"\x09\x09\x09\x09\x09", 0.0)
    drained = drain(hub, seen.append)
    assert isinstance(seen[-1], LinkClosed)
    assert [type(a) for a in drained.actions] == [Transmit, Hangup]
    assert drained.timer is None
    assert any(r.category == "error" for r in trace.records)
    assert drain(hub).actions == ()


def test_outbox_splits_large_output_into_several_transmits() -> None:
    limits = Limits(transmit_bytes=1000, index_batch_bytes=500)
    net = Net()
    net.add_hub("H")
    files = {f"file{i}": str(i).encode() for i in range(100)}
    net.add_share("S", parent="H", files=files, limits=limits)
    sizes = [len(data) for _, data in net.transmitted["S"]]
    assert max(sizes) <= 1000 + 600
    assert net.cores["H"].content_count() == 100  # type: ignore[union-attr]


def test_request_back_down_the_branch_it_came_from_is_refused() -> None:
    net = Net()
    hub = net.add_hub("H")
    peer = net.connect_raw("H")
    peer.join(info=peer.info(node_type="hub", confirm_share=""))
    from kbproto.messages import HubIndexUpdate, Reset

    below = NodeId("aaaaaaaaaaaa")
    peer.send(
        HubIndexUpdate(
            seq=0, reset=True, content_put=(), content_drop=(), nodes_put=(below,), nodes_drop=()
        )
    )
    assert hub.knows_node(below)
    peer.send(Open(stream=1, target=below, method="GET", path="/", headers=(), credit=1))
    assert peer.of(Reset) == [Reset(stream=1, status=404, reason="unknown node aaaaaaaaaaaa")]


def test_find_limited_to_the_hub_itself_does_not_go_up() -> None:
    net = Net()
    net.add_hub("A")
    hub = net.add_hub("B", parent="A")
    hub.find("0" * 40, net.now, share_id=hub.node_id)
    net.pump()
    from kbproto.events import LookupFailed

    assert net.of("B", LookupFailed)[0].reason == "not found"
    assert net.of("A", ChildJoined)
    assert hub.link_ids() != ()
