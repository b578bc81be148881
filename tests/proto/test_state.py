"""The transition tables, checked pair by pair, and whole cores under arbitrary input."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kbproto import LinkId, LocalProtocolError, RemoteProtocolError, drain
from kbproto._node import _LINK_EFFECTS, _PARENT_EFFECTS, _TIMER_HANDLERS
from kbproto.codec import encode
from kbproto.events import ChildJoined, Event, LinkClosed
from kbproto.index import _RECEIVE_EFFECTS, _SEND_EFFECTS
from kbproto.messages import ShareIndexUpdate
from kbproto.proxy import _EFFECTS as _STREAM_EFFECTS
from kbproto.state import (
    LINK_TRANSITIONS,
    MACHINES,
    PARENT_TRANSITIONS,
    STREAM_TRANSITIONS,
    IndexReceiveEffect,
    IndexSendEffect,
    LinkEffect,
    LinkInput,
    LinkState,
    LinkStateMachine,
    Machine,
    ParentEffect,
    ParentInput,
    ParentState,
    StateMachine,
    StreamEffect,
    StreamInput,
    StreamRole,
    StreamState,
    Symbol,
    transition,
)
from kbproto.timers import TimerKind
from tests.helpers import Net, sha1_of

LINK_PAIRS = [(state, event) for state in LinkState for event in LinkInput]


@pytest.mark.parametrize(("state", "event"), LINK_PAIRS, ids=lambda v: v.value)
def test_every_link_pair_follows_the_table(state: LinkState, event: LinkInput) -> None:
    machine = LinkStateMachine(state)
    expected = LINK_TRANSITIONS.get((state, event))
    if expected is None:
        with pytest.raises(RemoteProtocolError) as info:
            machine.process(event)
        assert f"unexpected {event.value} in link state {state.value}" == str(info.value)
        assert machine.state is LinkState.CLOSED
    else:
        assert machine.process(event) is expected.effect
        assert machine.state is expected.next


def test_closed_is_terminal_and_goodbyes_always_close() -> None:
    assert not [pair for pair in LINK_TRANSITIONS if pair[0] is LinkState.CLOSED]
    for state in LinkState:
        if state is not LinkState.CLOSED:
            for event in (LinkInput.ERROR, LinkInput.EOF, LinkInput.TIMEOUT):
                assert LINK_TRANSITIONS[(state, event)].next is LinkState.CLOSED


STREAM_CASES = [
    (role, state, event) for role in StreamRole for state in StreamState for event in StreamInput
]


@pytest.mark.parametrize(("role", "state", "event"), STREAM_CASES, ids=lambda v: v.name)
def test_every_stream_triple_follows_its_role_table(
    role: StreamRole, state: StreamState, event: StreamInput
) -> None:
    table = STREAM_TRANSITIONS[role]
    expected = table.get((state, event))
    if expected is None:
        with pytest.raises(LocalProtocolError) as info:
            transition(table, f"{role.value} stream", state, event, LocalProtocolError)
        assert str(info.value) == (
            f"unexpected {event.value} in {role.value} stream state {state.value}"
        )
    else:
        assert transition(table, "stream", state, event, LocalProtocolError) is expected


def test_every_stream_transition_has_an_effect() -> None:
    # ``proxy.Streams`` relies on it: a stream only moves by doing something.
    for table in STREAM_TRANSITIONS.values():
        assert all(step.effect is not None for step in table.values())


def test_stream_roles_differ_where_the_app_or_a_hop_is_missing() -> None:
    origin, target, relay = (STREAM_TRANSITIONS[role] for role in StreamRole)
    # Only a relay drains; no role ever takes credit from its responder or a body
    # from its requester.
    assert {s for (s, _) in relay} >= {StreamState.DRAINING}
    assert not {s for (s, _) in origin} & {StreamState.DRAINING, StreamState.CLOSED}
    never = {
        StreamInput.RESPONDER_CREDIT,
        StreamInput.REQUESTER_RESPONSE,
        StreamInput.REQUESTER_DATA,
        StreamInput.REQUESTER_END,
    }
    for table in (origin, target, relay):
        assert not {event for (_, event) in table} & never
    # The app's commands exist at the origin and the target only.
    app = {
        StreamInput.RESPOND,
        StreamInput.SEND_DATA,
        StreamInput.END_STREAM,
        StreamInput.GRANT_CREDIT,
        StreamInput.RESET_STREAM,
    }
    assert not {event for (_, event) in relay} & app
    assert {event for (_, event) in origin} & app == {
        StreamInput.GRANT_CREDIT,
        StreamInput.RESET_STREAM,
    }


PARENT_PAIRS = [(state, event) for state in ParentState for event in ParentInput]


@pytest.mark.parametrize(("state", "event"), PARENT_PAIRS, ids=lambda v: v.value)
def test_every_parent_pair_follows_the_table(state: ParentState, event: ParentInput) -> None:
    machine = StateMachine("parent link", PARENT_TRANSITIONS, state)
    expected = PARENT_TRANSITIONS.get((state, event))
    if expected is None:
        with pytest.raises(LocalProtocolError, match=f"in parent link state {state.value}$"):
            machine.process(event)
        assert machine.state is state  # a misuse does not move the cycle
    else:
        assert machine.process(event) is expected.effect
        assert machine.state is expected.next


def _reachable(machine: Machine) -> set[Symbol]:
    seen = set(machine.start)
    todo = deque(machine.start)
    while todo:
        state = todo.popleft()
        for source, _, _, target in machine.rows:
            if source is state and target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


@pytest.mark.parametrize("machine", MACHINES, ids=lambda m: m.name)
def test_every_state_is_reachable_and_every_row_well_formed(machine: Machine) -> None:
    assert _reachable(machine) == set(machine.states)
    for state, event, _effect, target in machine.rows:
        assert state in machine.states
        assert target in machine.states
        assert event in machine.inputs


@pytest.mark.parametrize(
    ("effects", "bound"),
    [
        (LinkEffect, _LINK_EFFECTS),
        (StreamEffect, _STREAM_EFFECTS),
        (ParentEffect, _PARENT_EFFECTS),
        (IndexSendEffect, _SEND_EFFECTS),
        (IndexReceiveEffect, _RECEIVE_EFFECTS),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_every_effect_is_used_and_bound_once(
    effects: type[Symbol], bound: dict[Symbol, object]
) -> None:
    used = {row[2] for machine in MACHINES for row in machine.rows if row[2] is not None}
    assert set(effects) <= used
    assert set(bound) == set(effects)


def test_every_timer_kind_has_a_handler() -> None:
    assert set(_TIMER_HANDLERS) == set(TimerKind)


def _hub_events(stream: bytes, cuts: list[int]) -> list[str]:
    """Feed ``stream`` to a fresh hub in pieces; return a summary of its events."""
    # The same hub (key, seeded nonces) as in ``_registration_stream``, so the
    # recorded registration answers this hub's first challenge.
    hub = Net().add_hub("H", key=1)
    hub.link_opened(LinkId(1), 0.0)
    events: list[Event] = []
    drain(hub, events.append)
    pos = 0
    for cut in [*cuts, len(stream)]:
        piece = stream[pos : pos + cut]
        pos += cut
        if piece:
            hub.receive_data(LinkId(1), piece, 0.0)
            drain(hub, events.append)
    return [
        type(e).__name__ + (f":{e.reason}" if isinstance(e, LinkClosed) else "") for e in events
    ]


def _registration_stream() -> bytes:
    """What a child sends on the hub's first link: register, then an index batch."""
    net = Net()
    net.add_hub("H", key=1)
    peer = net.connect_raw("H", seed=3)
    body = encode(peer.register_message())
    body += encode(ShareIndexUpdate(seq=0, reset=True, put=((sha1_of(b"x"), "x", 1),), drop=()))
    return body


STREAM = _registration_stream()


@given(st.lists(st.integers(1, 40), max_size=40))
@settings(max_examples=60, deadline=None)
def test_a_hub_gives_the_same_events_for_any_chunking(cuts: list[int]) -> None:
    whole = _hub_events(STREAM, [])
    assert whole == [ChildJoined.__name__]
    assert _hub_events(STREAM, cuts) == whole


@given(st.binary(max_size=400), st.lists(st.integers(1, 60), max_size=10))
@settings(max_examples=100, deadline=None)
def test_a_hub_never_raises_on_arbitrary_bytes(noise: bytes, cuts: list[int]) -> None:
    events = _hub_events(STREAM[:120] + noise, cuts)
    # No exception escaped; a broken frame ends in exactly one LinkClosed, never more.
    closed = [e for e in events if e.startswith("LinkClosed")]
    assert closed == [] or closed == events[-1:]
