"""The link state machine: every legal (state, input) pair, in one table (rule 6).

Theory of operation
-------------------
A link is one parent-child connection seen from one end. It starts in ``DIALED``
(we opened it toward our parent) or ``ACCEPTED`` (a child opened it toward us and we
sent our ``Challenge``). The child answers the challenge with ``Register``
(``REGISTERING``); the parent checks it and answers ``Welcome``, after which the link
is ``PARENT_UP`` at the child and ``CHILD_UP`` at the parent. Any state ends in
``CLOSED`` on an ``Error`` frame, EOF, a timeout or a protocol error.

House rules:

1. All link transitions live in ``TRANSITIONS``; code elsewhere calls
   ``LinkStateMachine.process`` and never assigns a state.
2. The table is about *received* inputs: what a peer may send us in each state. What
   we send is decided by the node, which only sends what the table lets the peer
   receive. A pair missing from the table is a protocol error by the peer: the machine
   moves to ``CLOSED`` and the error names the state and the input.
"""

from __future__ import annotations

import enum

from kbproto.errors import RemoteProtocolError

__all__ = ("TRANSITIONS", "LinkInput", "LinkState", "LinkStateMachine")


class LinkState(enum.Enum):
    """Where one link is in its life."""

    #: We dialed our parent; waiting for its ``Challenge``.
    DIALED = "dialed"
    #: A child dialed us; we sent ``Challenge``; waiting for ``Register``.
    ACCEPTED = "accepted"
    #: We sent ``Register``; waiting for ``Welcome``.
    REGISTERING = "registering"
    #: Joined: this is the link to our parent.
    PARENT_UP = "parent_up"
    #: Joined: this is the link to one of our children.
    CHILD_UP = "child_up"
    #: Finished (error, EOF, timeout, hangup). Terminal.
    CLOSED = "closed"


class LinkInput(enum.Enum):
    """What can arrive on a link (message families, plus EOF and timeouts)."""

    CHALLENGE = "challenge"
    REGISTER = "register"
    WELCOME = "welcome"
    ERROR = "error"
    PING = "ping"
    #: ``ShareIndexUpdate`` / ``HubIndexUpdate``: only children report an index.
    INDEX_REPORT = "index_report"
    #: ``IndexAck`` / ``Resync``: only parents acknowledge.
    INDEX_CONTROL = "index_control"
    #: ``Find`` / ``FindReply``.
    LOOKUP = "lookup"
    #: ``Open``, ``Response``, ``Data``, ``End``, ``Credit``, ``Reset``.
    STREAM = "stream"
    EOF = "eof"
    TIMEOUT = "timeout"


_S = LinkState
_I = LinkInput

#: (state, input) -> next state. Anything missing is a protocol error.
TRANSITIONS: dict[tuple[LinkState, LinkInput], LinkState] = {
    (_S.DIALED, _I.CHALLENGE): _S.REGISTERING,
    (_S.ACCEPTED, _I.REGISTER): _S.CHILD_UP,
    (_S.REGISTERING, _I.WELCOME): _S.PARENT_UP,
    # A peer may start pinging before the handshake has finished at our end.
    (_S.DIALED, _I.PING): _S.DIALED,
    (_S.ACCEPTED, _I.PING): _S.ACCEPTED,
    (_S.REGISTERING, _I.PING): _S.REGISTERING,
    (_S.PARENT_UP, _I.PING): _S.PARENT_UP,
    (_S.PARENT_UP, _I.INDEX_CONTROL): _S.PARENT_UP,
    (_S.PARENT_UP, _I.LOOKUP): _S.PARENT_UP,
    (_S.PARENT_UP, _I.STREAM): _S.PARENT_UP,
    (_S.CHILD_UP, _I.PING): _S.CHILD_UP,
    (_S.CHILD_UP, _I.INDEX_REPORT): _S.CHILD_UP,
    (_S.CHILD_UP, _I.LOOKUP): _S.CHILD_UP,
    (_S.CHILD_UP, _I.STREAM): _S.CHILD_UP,
}
for _state in LinkState:
    if _state is not LinkState.CLOSED:
        for _input in (_I.ERROR, _I.EOF, _I.TIMEOUT):
            TRANSITIONS[(_state, _input)] = _S.CLOSED


class LinkStateMachine:
    """Holds one link's state and moves it only through ``TRANSITIONS``."""

    def __init__(self, state: LinkState) -> None:
        self.state = state

    def process(self, event: LinkInput) -> LinkState:
        """Apply ``event`` and return the new state.

        Raises:
            RemoteProtocolError: the pair is not in the table (the machine is CLOSED).
        """
        new = TRANSITIONS.get((self.state, event))
        if new is None:
            old = self.state
            self.state = LinkState.CLOSED
            raise RemoteProtocolError(
                f"unexpected {event.value} in link state {old.value}", "protocol"
            )
        self.state = new
        return new

    def close(self) -> None:
        """Move to CLOSED for a reason of our own (hangup, local error)."""
        self.state = LinkState.CLOSED
