"""``routing.Lookups`` alone, on a fake node (``tests/proto/fakes.py``).

The fake answers what the node's own index holds (``local_answer``), where its
parent is and which ids are below it; the tests check the finds sent, the replies
and the app's events.
"""

from __future__ import annotations

import hashlib

import pytest

from kbproto.config import Limits, Timeouts
from kbproto.errors import LimitExceeded, LocalProtocolError, RemoteProtocolError
from kbproto.events import LookupFailed, LookupResolved
from kbproto.ids import NodeId
from kbproto.messages import Find, FindReply, FindResult
from kbproto.routing import Lookups
from kbproto.timers import TimerKey, TimerKind
from tests.proto.fakes import NODE_ID, FakePort, make_link

SHA1 = hashlib.sha1(b"content").hexdigest()
RAW = bytes.fromhex(SHA1)
SHARE = NodeId("cccccccccccc")
OTHER = NodeId("dddddddddddd")


def _result(share: NodeId = SHARE, path: str = "f.dat") -> FindResult:
    return FindResult(kbshare_id=share, share_url="http://s:1", path=path, size=3, hops=())


def test_a_local_answer_resolves_at_once() -> None:
    port = FakePort()
    port.answers[RAW] = ([_result(), _result()], [])  # a duplicate is kept once
    lookups = Lookups(port)
    assert lookups.answer_now(SHA1) == (_result(), _result())
    lookup = lookups.find(SHA1, 0.0)
    assert port.events == [
        LookupResolved(lookup_id=lookup, sha1=SHA1, share_id=None, results=(_result(),))
    ]
    assert (len(lookups), port.timers) == (0, {})
    assert port.traces == [f"find {SHA1} share=None as #0"]


def test_nothing_anywhere_fails_at_once_and_bad_input_raises() -> None:
    port = FakePort()
    lookups = Lookups(port)
    assert lookups.answer_now(SHA1) == ()
    lookup = lookups.find(SHA1, 0.0, share_id=SHARE)
    assert port.events == [
        LookupFailed(lookup_id=lookup, sha1=SHA1, share_id=SHARE, reason="not found")
    ]
    for bad in (lambda: lookups.find("xyz", 0.0), lambda: lookups.answer_now("xyz")):
        with pytest.raises(LocalProtocolError, match="not a sha1"):
            bad()
    for bad in (
        lambda: lookups.find(SHA1, 0.0, share_id="nope"),
        lambda: lookups.answer_now(SHA1, share_id="nope"),
    ):
        with pytest.raises(LocalProtocolError, match="not a node id"):
            bad()


def test_child_hubs_are_asked_down_and_answer() -> None:
    port = FakePort()
    hub_a, hub_b = make_link(2), make_link(3)
    port.answers[RAW] = ([], [hub_a, hub_b])
    lookups = Lookups(port)
    assert lookups.answer_now(SHA1) is None  # it would ask a peer
    lookup = lookups.find(SHA1, 0.0)
    assert port.sent_on(hub_a) == [Find(query=0, sha1=SHA1, share_id=None, up=False, ttl_ms=8000)]
    assert hub_b.our_lookups == 1
    assert port.timers == {TimerKey(TimerKind.LOOKUP, 0): port.timeouts.lookup_timeout}
    lookups.on_reply(hub_a, FindReply(query=0, results=(_result(),)), 1.0)
    assert port.events == []  # hub_b has not answered yet
    lookups.on_reply(hub_b, FindReply(query=0, results=(_result(OTHER),)), 1.0)
    assert port.events == [
        LookupResolved(
            lookup_id=lookup, sha1=SHA1, share_id=None, results=(_result(), _result(OTHER))
        )
    ]
    assert (hub_a.our_lookups, hub_b.our_lookups, port.timers) == (0, 0, {})
    lookups.on_reply(hub_a, FindReply(query=0, results=()), 2.0)  # late: ignored
    with pytest.raises(RemoteProtocolError, match="never sent"):
        lookups.on_reply(hub_a, FindReply(query=5, results=()), 2.0)


def test_a_share_limited_find_keeps_only_that_share() -> None:
    port = FakePort()
    hub = make_link(2)
    port.answers[RAW] = ([], [hub])
    lookups = Lookups(port)
    lookup = lookups.find(SHA1, 0.0, share_id=SHARE)
    lookups.on_reply(hub, FindReply(query=0, results=(_result(OTHER), _result(SHARE))), 1.0)
    (resolved,) = port.of(LookupResolved)
    assert (resolved.lookup_id, resolved.results) == (lookup, (_result(SHARE),))


def test_nothing_below_asks_the_parent_unless_the_share_is_below() -> None:
    port = FakePort()
    parent = make_link(1, dialed=True)
    port.parent = parent
    port.subtree.add(SHARE)
    lookups = Lookups(port)
    lookups.find(SHA1, 0.0, share_id=SHARE)  # below us, yet not found: not asked up
    assert port.sent_on(parent) == []
    assert lookups.answer_now(SHA1) is None  # would ask the parent
    lookups.find(SHA1, 0.0)
    assert port.sent_on(parent) == [Find(query=0, sha1=SHA1, share_id=None, up=True, ttl_ms=8000)]


def test_a_relayed_find_is_answered_with_our_hop_and_never_sent_back() -> None:
    port = FakePort()
    child = make_link(2)
    parent = make_link(1, dialed=True)
    port.parent = parent
    port.answers[RAW] = ([], [child])  # the asking child hub itself holds it
    lookups = Lookups(port)
    lookups.on_find(child, Find(query=7, sha1=SHA1, share_id=None, up=True, ttl_ms=5000), 0.0)
    assert port.sent_on(child) == []
    (find,) = port.sent_on(parent)
    assert find == Find(query=0, sha1=SHA1, share_id=None, up=True, ttl_ms=4000)
    assert (child.peer_lookups, len(lookups)) == (1, 1)
    lookups.on_reply(parent, FindReply(query=0, results=(_result(),)), 1.0)
    hop = ((NODE_ID, "http://fake:1"),)
    assert port.sent_on(child) == [
        FindReply(
            query=7,
            results=(
                FindResult(
                    kbshare_id=SHARE, share_url="http://s:1", path="f.dat", size=3, hops=hop
                ),
            ),
        )
    ]
    assert child.peer_lookups == 0


def test_finds_that_break_the_rules() -> None:
    port = FakePort(limits=Limits(max_lookups_per_link=1))
    parent, child = make_link(1, dialed=True), make_link(2)
    lookups = Lookups(port)
    with pytest.raises(RemoteProtocolError, match="going up arrived from the wrong side"):
        lookups.on_find(parent, Find(query=1, sha1=SHA1, share_id=None, up=True, ttl_ms=1), 0.0)
    with pytest.raises(RemoteProtocolError, match="going down arrived from the wrong side"):
        lookups.on_find(child, Find(query=1, sha1=SHA1, share_id=None, up=False, ttl_ms=1), 0.0)
    port.answers[RAW] = ([], [make_link(3)])  # keeps the first find pending
    lookups.on_find(child, Find(query=1, sha1=SHA1, share_id=None, up=True, ttl_ms=9), 0.0)
    with pytest.raises(RemoteProtocolError, match="already pending"):
        lookups.on_find(child, Find(query=1, sha1=SHA1, share_id=None, up=True, ttl_ms=9), 0.0)
    with pytest.raises(LimitExceeded, match="more than 1 finds pending"):
        lookups.on_find(child, Find(query=2, sha1=SHA1, share_id=None, up=True, ttl_ms=9), 0.0)


def test_a_full_node_answers_empty_and_fails_its_app() -> None:
    port = FakePort(limits=Limits(max_pending_lookups=1))
    hub = make_link(3)
    port.answers[RAW] = ([_result()], [hub])
    lookups = Lookups(port)
    lookups.find(SHA1, 0.0)
    assert lookups.answer_now(SHA1) is None
    full = lookups.find(SHA1, 0.0)
    assert port.of(LookupFailed) == [
        LookupFailed(lookup_id=full, sha1=SHA1, share_id=None, reason="too many pending finds")
    ]
    child = make_link(2)
    lookups.on_find(child, Find(query=4, sha1=SHA1, share_id=None, up=True, ttl_ms=9), 0.0)
    assert port.sent_on(child) == [FindReply(query=4, results=())]


def test_a_branch_over_its_limit_is_skipped() -> None:
    port = FakePort()
    hub = make_link(3, max_lookups=0)
    port.answers[RAW] = ([], [hub])
    lookups = Lookups(port)
    lookups.find(SHA1, 0.0)
    assert port.sent_on(hub) == []
    assert port.traces[-1] == "peer's find limit reached: branch skipped"
    assert port.of(LookupFailed)[0].reason == "not found"


def test_the_deadline_answers_with_what_there_is() -> None:
    port = FakePort(timeouts=Timeouts(lookup_timeout=2.0))
    hub_a, hub_b = make_link(2), make_link(3)
    port.answers[RAW] = ([], [hub_a, hub_b])
    lookups = Lookups(port)
    lookup = lookups.find(SHA1, 0.0)
    lookups.on_reply(hub_a, FindReply(query=0, results=(_result(),)), 1.0)
    lookups.on_timer(0, 2.0)
    assert port.events == [
        LookupResolved(lookup_id=lookup, sha1=SHA1, share_id=None, results=(_result(),))
    ]
    assert hub_b.our_lookups == 0  # its sub-query was forgotten
    second = lookups.find(SHA1, 3.0)
    lookups.on_timer(1, 5.0)
    assert port.events[-1] == LookupFailed(
        lookup_id=second, sha1=SHA1, share_id=None, reason="timed out", timed_out=True
    )
    assert port.traces[-1] == f"find {SHA1} deadline"


def test_a_lost_link_is_an_empty_answer_and_drops_its_finds() -> None:
    port = FakePort()
    asker, hub = make_link(2), make_link(3)
    port.answers[RAW] = ([], [hub])
    lookups = Lookups(port)
    lookups.on_find(asker, Find(query=1, sha1=SHA1, share_id=None, up=True, ttl_ms=9000), 0.0)
    own = lookups.find(SHA1, 0.0)
    lookups.link_lost(make_link(8), 1.0)  # unrelated
    assert len(lookups) == 2
    lookups.link_lost(asker, 1.0)  # its find is dropped: no one to answer
    assert len(lookups) == 1
    assert hub.our_lookups == 1
    lookups.link_lost(hub, 1.0)  # our sub-query counts as an empty answer
    assert port.events == [
        LookupFailed(lookup_id=own, sha1=SHA1, share_id=None, reason="not found")
    ]
    assert port.timers == {}
