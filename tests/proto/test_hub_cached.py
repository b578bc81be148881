"""Content a hub holds itself (its relay cache, docs/protocol.md §13): found and reported."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kbproto import LocalProtocolError
from kbproto.events import LookupFailed, LookupResolved, RequestReceived
from kbproto.hub import HubCore
from tests.helpers import SMALL, Net, sha1_of

X, Y = b"content x", b"content y"


def _tree() -> Net:
    """Hub A over hub B over share S (holding x); share T under A."""
    net = Net()
    net.add_hub("A")
    net.add_hub("B", parent="A")
    net.add_share("S", parent="B", files={"x": X})
    net.add_share("T", parent="A")
    net.pump()
    return net


def _hub(net: Net, name: str) -> HubCore:
    core = net.cores[name]
    assert isinstance(core, HubCore)
    return core


def _found(
    net: Net, at: str, sha1: str, share_id: str | None = None
) -> list[tuple[str, str, int, tuple[str, ...]]]:
    net.cores[at].find(sha1, net.now, share_id=share_id)
    net.pump()
    event = net.events[at][-1]
    assert isinstance(event, LookupResolved | LookupFailed)
    if isinstance(event, LookupFailed):
        return []
    names = {core.node_id: n for n, core in net.cores.items()}
    return [
        (names[r.kbshare_id], r.path, r.size, tuple(names[h[0]] for h in r.hops))
        for r in event.results
    ]


def test_a_hub_holding_content_is_found_first_and_by_every_node() -> None:
    net = _tree()
    x = sha1_of(X)
    b = _hub(net, "B")
    b.put_cached(x, len(X), net.now)
    net.pump()
    assert b.cached_count() == 1
    # At B itself: B first (path: the content id), then its share; answered at once.
    assert b.answer_now(x) is not None
    assert _found(net, "B", x) == [("B", x, len(X), ()), ("S", "x", len(X), ())]
    assert _found(net, "A", x) == [("B", x, len(X), ("B",)), ("S", "x", len(X), ("B",))]
    assert _found(net, "T", x) == [
        ("B", x, len(X), ("B", "A")),
        ("S", "x", len(X), ("B", "A")),
    ]
    # A find limited to B's id finds B's own copy; one limited to S, S's.
    assert _found(net, "A", x, share_id=b.node_id) == [("B", x, len(X), ("B",))]
    assert _found(net, "A", x, share_id=net.cores["S"].node_id) == [("S", "x", len(X), ("B",))]


def test_cached_content_stays_findable_with_its_share_gone_and_leaves_when_dropped() -> None:
    net = _tree()
    y = sha1_of(Y)  # nobody shares y: only the cache of A holds it
    a = _hub(net, "A")
    count = a.content_count()
    a.put_cached(y, len(Y), net.now)
    a.put_cached(y, len(Y), net.now)  # again: nothing changes
    net.pump()
    assert a.content_count() == count + 1
    assert _found(net, "T", y) == [("A", y, len(Y), ("A",))]
    assert [r.kbshare_id for r in a.answer_now(y) or ()] == [a.node_id]
    x = sha1_of(X)
    b = _hub(net, "B")
    b.put_cached(x, len(X), net.now)
    net.pump()
    net.crash("S")
    net.advance(30)
    assert _found(net, "A", x) == [("B", x, len(X), ("B",))]
    b.drop_cached(x, net.now)
    b.drop_cached(x, net.now)  # no-op
    b.drop_cached("not a sha1", net.now)  # no-op
    net.pump()
    assert b.cached_count() == 0
    assert _found(net, "A", x) == []


def test_a_hub_with_a_parent_reports_its_cached_content_before_and_after_joining() -> None:
    net = Net()
    net.add_hub("A")
    net.add_hub("B", parent="A", start=False)
    b = _hub(net, "B")
    b.put_cached(sha1_of(Y), len(Y), net.now)  # not joined yet: reported by the full sync
    net.cores["B"].start(net.now)
    net.pump()
    assert _found(net, "A", sha1_of(Y)) == [("B", sha1_of(Y), len(Y), ("B",))]
    # Held by a child's share and by the hub itself: dropping one keeps the other.
    net.add_share("S", parent="B", files={"y": Y})
    net.pump()
    b.drop_cached(sha1_of(Y), net.now)
    net.pump()
    assert _found(net, "A", sha1_of(Y)) == [("S", "y", len(Y), ("B",))]


def test_bad_cached_entries_are_refused_and_the_number_is_bounded() -> None:
    net = Net()
    hub = net.add_hub("A", limits=replace(SMALL, max_own_content=2))
    with pytest.raises(LocalProtocolError, match="not a sha1"):
        hub.put_cached("xyz", 1, net.now)
    for size in (-1, True, 2**63):
        with pytest.raises(LocalProtocolError, match="not a size"):
            hub.put_cached(sha1_of(X), size, net.now)
    hub.put_cached(sha1_of(X), 1, net.now)
    hub.put_cached(sha1_of(Y), 1, net.now)
    hub.put_cached(sha1_of(Y), 2, net.now)  # a known id may change its size
    with pytest.raises(LocalProtocolError, match="max_own_content"):
        hub.put_cached("0" * 40, 1, net.now)
    assert hub.cached_count() == 2


def test_a_hub_taking_content_requests_answers_them_itself() -> None:
    net = _tree()
    x = sha1_of(X)
    a, b = _hub(net, "A"), _hub(net, "B")
    s_id = net.cores["S"].node_id
    b.take_content_requests(True)
    a.open_request(s_id, "GET", f"/{s_id}/sha1/{x}", now=net.now)
    net.pump()
    assert [e.path for e in net.of("B", RequestReceived)] == [f"/{s_id}/sha1/{x}"]
    assert net.of("S", RequestReceived) == []
    # Off again: relayed to the share as before.
    b.take_content_requests(False)
    a.open_request(s_id, "GET", f"/{s_id}/sha1/{x}", now=net.now)
    net.pump()
    assert len(net.of("B", RequestReceived)) == 1
    assert [e.path for e in net.of("S", RequestReceived)] == [f"/{s_id}/sha1/{x}"]
