"""``answer_now``: the pure, immediate form of ``find``, checked against ``find`` itself.

The property: on random trees of hubs and shares (random files, duplicate contents,
some links cut so a parent is down), for every node, content and share filter,
``answer_now`` is None exactly when ``find`` would send a message (or refuse), and
otherwise equals the answer ``find`` gives at once (same results, same order), and
calling it changes nothing (no event, no action, no pending find, no lookup id used).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kbproto import Limits, LocalProtocolError
from kbproto.events import LookupFailed, LookupResolved
from kbproto.hub import HubCore
from kbproto.messages import HubIndexUpdate
from kbproto.share import ShareCore
from tests.helpers import FAST, SMALL, Net, sha1_of

#: A small pool of contents, so shares often hold the same content (several results).
CONTENTS = [b"alpha", b"beta", b"gamma", b"delta"]
UNKNOWN = "0" * 40


@st.composite
def _trees(draw: st.DrawFn) -> dict[str, object]:
    """Hubs (each under an earlier hub, or a root), shares under hubs or standalone."""
    hubs = draw(st.integers(1, 4))
    hub_parents = [None] + [
        draw(st.one_of(st.none(), st.integers(0, i - 1))) for i in range(1, hubs)
    ]
    shares = draw(st.integers(0, 5))
    share_specs = []
    for _ in range(shares):
        parent = draw(st.one_of(st.none(), st.integers(0, hubs - 1)))
        files = draw(
            st.dictionaries(
                st.sampled_from(["a", "b", "d/c", "d/e"]),
                st.sampled_from(CONTENTS),
                max_size=3,
            )
        )
        share_specs.append((parent, files))
    cuts = draw(st.lists(st.integers(0, 20), max_size=2))
    return {"hub_parents": hub_parents, "shares": share_specs, "cuts": cuts}


def _build(spec: dict[str, object]) -> Net:
    net = Net(chunking=False)
    hub_parents = spec["hub_parents"]
    assert isinstance(hub_parents, list)
    for i, parent in enumerate(hub_parents):
        net.add_hub(f"H{i}", parent=None if parent is None else f"H{parent}")
    shares = spec["shares"]
    assert isinstance(shares, list)
    for j, (parent, files) in enumerate(shares):
        net.add_share(f"S{j}", parent=None if parent is None else f"H{parent}", files=files)
    # Cut some parent links (no time passes: they stay down), so some nodes have a
    # parent configured but not up, and some hubs lost a subtree.
    children = [n for n in net.cores if n != "H0"]
    cuts = spec["cuts"]
    assert isinstance(cuts, list)
    for cut in cuts:
        if children:
            name = children[cut % len(children)]
            parent_name = _parent_of(net, spec, name)
            if parent_name is not None:
                net.cut(name, parent_name)
    return net


def _parent_of(net: Net, spec: dict[str, object], name: str) -> str | None:
    hub_parents = spec["hub_parents"]
    shares = spec["shares"]
    assert isinstance(hub_parents, list)
    assert isinstance(shares, list)
    parent = hub_parents[int(name[1:])] if name.startswith("H") else shares[int(name[1:])][0]
    return None if parent is None else f"H{parent}"


def _check(net: Net, name: str, sha1: str, share_id: str | None, next_id: int) -> int:
    """Compare ``answer_now`` with ``find`` at ``name``; returns the next lookup id."""
    core = net.cores[name]
    assert isinstance(core, HubCore | ShareCore)
    pending = core.pending_lookups()
    quick = core.answer_now(sha1, share_id=share_id)
    # Pure: nothing queued, nothing pending, no lookup id used (checked below).
    assert core.next_event() is None
    assert core.next_action() is None
    assert core.pending_lookups() == pending
    lookup_id = core.find(sha1, net.now, share_id=share_id)
    assert lookup_id == next_id
    action = core.next_action()
    events = []
    while (event := core.next_event()) is not None:
        events.append(event)
    if quick is None:
        # find had to ask a peer (a message queued), or refused for lack of room.
        refused = [e for e in events if isinstance(e, LookupFailed) and "pending" in e.reason]
        assert action is not None or refused, (name, sha1, share_id, events)
    else:
        assert action is None, (name, sha1, share_id, action)
        (answer,) = events
        if quick:
            assert isinstance(answer, LookupResolved)
            assert answer.results == quick
        else:
            assert isinstance(answer, LookupFailed)
            assert answer.reason == "not found"
    # Put back whatever was taken so the network settles (replies, hangups...).
    if action is not None:
        net._perform(name, action)
    net.events[name].extend(events)
    net.pump()
    assert core.pending_lookups() == 0 or quick is None
    return next_id + 1


@given(_trees())
@settings(max_examples=40, deadline=None)
def test_answer_now_agrees_with_find(spec: dict[str, object]) -> None:
    net = _build(spec)
    sha1s = [sha1_of(c) for c in CONTENTS] + [UNKNOWN]
    ids = [core.node_id for core in net.cores.values()] + ["ffffffffffff"]
    next_ids = dict.fromkeys(net.cores, 0)
    # A freshly built network has started no find: every core's lookup ids start at 0.
    for name in list(net.cores):
        for sha1 in sha1s:
            for share_id in [None, *ids]:
                next_ids[name] = _check(net, name, sha1, share_id, next_ids[name])


def test_answer_now_cases_on_a_fixed_tree() -> None:
    """A hub answers its direct shares at once; a child hub below means a real find."""
    net = Net()
    net.add_hub("A")
    net.add_hub("B", parent="A")
    s1 = net.add_share("S1", parent="A", files={"x": b"x", "y": b"y"})
    net.add_share("S2", parent="A", files={"x2": b"x"})
    net.add_share("S3", parent="B", files={"y": b"y"})
    a, b = net.cores["A"], net.cores["B"]
    assert isinstance(a, HubCore)
    assert isinstance(b, HubCore)
    x, y = sha1_of(b"x"), sha1_of(b"y")
    results = a.answer_now(x)
    assert results is not None
    assert [(r.kbshare_id, r.path, r.hops) for r in results] == [
        (s1.node_id, "x", ()),
        (net.cores["S2"].node_id, "x2", ()),
    ]
    assert results[0].share_url == "http://S1:2000"
    assert a.answer_now(y) is None  # B's subtree holds it too: B must be asked
    only_s1 = a.answer_now(y, share_id=s1.node_id)
    assert only_s1 is not None
    assert [r.kbshare_id for r in only_s1] == [s1.node_id]
    assert a.answer_now(UNKNOWN) == ()  # top hub, nothing anywhere: "not found" at once
    assert b.answer_now(UNKNOWN) is None  # B has a parent to ask
    assert b.answer_now(x) is None  # B holds nothing of x: it asks A
    assert s1.answer_now(x) is not None
    assert s1.answer_now(sha1_of(b"z")) is None  # a share asks its hub
    assert s1.answer_now(x, share_id=net.cores["S2"].node_id) is None


def test_answer_now_is_none_when_find_would_refuse() -> None:
    """At ``max_pending_lookups`` find fails at once; answer_now leaves that to find."""
    net = Net()
    net.add_hub("A", limits=Limits(stream_window=4096, data_chunk=1024, max_pending_lookups=1))
    share = net.add_share("S", parent="A", files={"x": b"x"}, limits=SMALL, timeouts=FAST)
    hub = net.cores["A"]
    assert isinstance(hub, HubCore)
    assert share.answer_now(sha1_of(b"q")) is None
    share.find(sha1_of(b"q"), net.now)  # goes up to A: pending at the share
    assert share.pending_lookups() == 1
    assert hub.answer_now(sha1_of(b"x")) is not None
    # Make A hold one pending find: a raw child hub is asked and never answers.
    raw = net.connect_raw("A")
    raw.join(info=raw.info(node_type="hub", confirm_share=""))
    raw.send(
        HubIndexUpdate(
            seq=0,
            reset=True,
            content_put=(sha1_of(b"w"),),
            content_drop=(),
            nodes_put=(),
            nodes_drop=(),
        )
    )
    hub.find(sha1_of(b"w"), net.now)
    assert hub.pending_lookups() == 1
    assert hub.answer_now(sha1_of(b"x")) is None
    hub.find(sha1_of(b"x"), net.now)
    failed = [e for e in iter(hub.next_event, None) if isinstance(e, LookupFailed)]
    assert failed
    assert failed[-1].reason == "too many pending finds"


def test_answer_now_rejects_bad_input_like_find() -> None:
    net = Net()
    net.add_hub("A")
    hub = net.cores["A"]
    with pytest.raises(LocalProtocolError):
        hub.answer_now("xyz")
    with pytest.raises(LocalProtocolError):
        hub.answer_now(UNKNOWN, share_id="not-an-id")
