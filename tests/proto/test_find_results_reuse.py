"""A hub reuses the ``FindResult`` it built for a place (share, URL, path, size).

Reuse must never change an answer: the same place gives the same object, a place that
changed (renamed file, other size) gives a new, right result, and a tiny memo that keeps
starting over still answers exactly what ``find`` answers.
"""

from __future__ import annotations

import pytest

import kbproto.routing
from kbproto.events import LookupResolved
from kbproto.hub import HubCore
from kbproto.messages import FindResult
from kbproto.share import ShareCore
from tests.helpers import Net, sha1_of


def _tree() -> tuple[Net, HubCore, ShareCore]:
    net = Net()
    net.add_hub("A")
    s1 = net.add_share("S1", parent="A", files={"x": b"x", "y": b"y"})
    net.add_share("S2", parent="A", files={"x2": b"x"})
    hub = net.cores["A"]
    assert isinstance(hub, HubCore)
    return net, hub, s1


def _find(net: Net, hub: HubCore, sha1: str) -> tuple[FindResult, ...]:
    hub.find(sha1, net.now)
    resolved = [e for e in iter(hub.next_event, None) if isinstance(e, LookupResolved)]
    assert len(resolved) == 1
    return resolved[0].results


def test_the_same_place_gives_the_same_result_object() -> None:
    net, hub, _ = _tree()
    x = sha1_of(b"x")
    first = hub.answer_now(x)
    again = hub.answer_now(x)
    assert first is not None
    assert again is not None
    assert len(first) == 2
    assert all(a is b for a, b in zip(first, again, strict=True))
    assert _find(net, hub, x) == first


def test_a_changed_place_gives_a_new_right_result() -> None:
    net, hub, s1 = _tree()
    x = sha1_of(b"x")
    before = hub.answer_now(x)
    assert before is not None
    assert [r.path for r in before] == ["x", "x2"]
    # S1 renames its copy of x: the hub must answer the new path, not the old result.
    s1.remove_file("x", net.now)
    s1.put_file(x, "renamed/x", 1, net.now)
    net.pump()
    after = hub.answer_now(x)
    assert after is not None
    assert sorted(r.path for r in after) == ["renamed/x", "x2"]
    assert sorted(r.path for r in _find(net, hub, x)) == ["renamed/x", "x2"]
    # The unchanged place (S2's x2) is still the very same object.
    old_x2 = next(r for r in before if r.path == "x2")
    assert any(r is old_x2 for r in after)


def test_a_memo_that_keeps_starting_over_still_answers_exactly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kbproto.routing, "_RESULT_MEMO", 1)
    net, hub, _ = _tree()
    x, y = sha1_of(b"x"), sha1_of(b"y")
    for _ in range(3):
        for sha1 in (x, y):
            answer = hub.answer_now(sha1)
            assert answer is not None
            assert answer == _find(net, hub, sha1)
    answer_y = hub.answer_now(y)
    assert answer_y is not None
    assert [(r.path, r.size) for r in answer_y] == [("y", 1)]
