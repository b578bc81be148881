"""The link state table, checked pair by pair, and whole cores under arbitrary input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kbproto import LinkId, RemoteProtocolError, drain
from kbproto.codec import encode
from kbproto.events import ChildJoined, Event, LinkClosed
from kbproto.messages import ShareIndexUpdate
from kbproto.state import TRANSITIONS, LinkInput, LinkState, LinkStateMachine
from tests.helpers import Net, sha1_of

PAIRS = [(state, event) for state in LinkState for event in LinkInput]


@pytest.mark.parametrize(("state", "event"), PAIRS, ids=lambda v: v.value)
def test_every_state_input_pair_follows_the_table(state: LinkState, event: LinkInput) -> None:
    machine = LinkStateMachine(state)
    expected = TRANSITIONS.get((state, event))
    if expected is None:
        with pytest.raises(RemoteProtocolError) as info:
            machine.process(event)
        assert state.value in str(info.value)
        assert event.value in str(info.value)
        assert machine.state is LinkState.CLOSED
    else:
        assert machine.process(event) is expected
        assert machine.state is expected


def test_closed_is_terminal_and_errors_always_close() -> None:
    assert not [pair for pair in TRANSITIONS if pair[0] is LinkState.CLOSED]
    for state in LinkState:
        if state is not LinkState.CLOSED:
            for event in (LinkInput.ERROR, LinkInput.EOF, LinkInput.TIMEOUT):
                assert TRANSITIONS[(state, event)] is LinkState.CLOSED


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
