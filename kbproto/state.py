"""Every lifecycle of a kbucket node, as transition tables in one place (STYLE rule 6).

Theory of operation
-------------------
A node's protocol life is five small state machines. Each one is an ``Enum`` of
states, an ``Enum`` of inputs, an ``Enum`` of side effects, and one table mapping
``(state, input)`` to ``Transition(effect, next)``, after h11's ``_state.py`` (one
table per machine) and h2's ``stream.py`` (each transition names a side effect):

``LINK_TRANSITIONS``
    One connection between a child and its parent, seen from one end: opened,
    challenged, registered, joined, closed (docs/protocol.md §4.1). Its inputs are
    what the peer sends (one per message family), EOF, and a timeout.
``STREAM_TRANSITIONS``
    One request stream at one node (§4.2), with one table per role: the *origin*
    (our app asked), the *target* (our app serves) and the *relay* (a hub in
    between). Inputs are frames from either side, the app's commands and the node's
    own verdicts (a deadline passed, a link was lost, no route).
``PARENT_TRANSITIONS``
    The child side's cycle toward its parent hub (§4.3): dial, join, and after any
    loss back off and dial again; a parent that closed us for a crossed limit makes
    the next dial wait longer.
``INDEX_SEND_TRANSITIONS``
    A child reporting its index to its parent (§4.4): a full sync that starts with
    a reset, coalesced changes after it, and a report when everything is
    acknowledged.
``INDEX_RECEIVE_TRANSITIONS``
    A parent applying one child's index reports (§4.4): in step, or ignoring them
    after a gap until the reset it asked for arrives.

The machine's owner (``kbproto._node`` for links and the parent cycle,
``proxy.Streams``, ``index.UplinkSync``, ``index.HubIndex``) looks up the pair with
``transition`` (or holds a ``StateMachine``), stores the next state, and then runs
the named effect with the input's payload. The effects are the owner's methods,
bound to the effect names in one dictionary beside the owner; a test checks that
every effect has exactly one binding. ``scripts/make_state_diagrams.py`` renders
every table to ``docs/state-diagrams/`` and a test keeps those files in step.

House rules:

1. All transitions live here. Code elsewhere moves a machine only through
   ``transition``/``StateMachine.process``; it may read a state, never assign one.
   A table does not say whether the node is a hub or a share: where the two sides
   of a link differ, the state says which side we are (``DIALED`` is the child's).
2. A pair missing from a table is an error that names the machine, the state and
   the input: ``RemoteProtocolError`` when the peer sent the input (it loses its
   link), ``LocalProtocolError`` when our own code made it (a command at the wrong
   time, or a bug). The link machine then moves to ``CLOSED`` (its link is failed at
   once); the others stay where they were, since what follows (the link's loss, the
   caller's exception) decides their fate.
3. The state moves *before* the effect runs, as in h2: an effect that feeds its
   machine another input (a relay whose buffer just drained) sees the new state.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from kbproto.errors import LocalProtocolError, ProtocolError, RemoteProtocolError

__all__ = (
    "INDEX_RECEIVE_TRANSITIONS",
    "INDEX_SEND_TRANSITIONS",
    "LINK_TRANSITIONS",
    "MACHINES",
    "PARENT_TRANSITIONS",
    "STREAM_TRANSITIONS",
    "IndexReceiveEffect",
    "IndexReceiveInput",
    "IndexReceiveState",
    "IndexSendEffect",
    "IndexSendInput",
    "IndexSendState",
    "LinkEffect",
    "LinkInput",
    "LinkState",
    "LinkStateMachine",
    "Machine",
    "ParentEffect",
    "ParentInput",
    "ParentState",
    "Row",
    "StateMachine",
    "StreamEffect",
    "StreamInput",
    "StreamRole",
    "StreamState",
    "Symbol",
    "Transition",
    "transition",
)


class Symbol(enum.Enum):
    """Base of every state, input and effect enum here.

    Members are singletons compared by identity, so identity hashing is exact; it
    spares the table lookups on the receive path ``Enum.__hash__``'s Python-level
    call (one lookup per frame received; about 4 times faster per lookup).
    """

    __hash__ = object.__hash__


StateT = TypeVar("StateT", bound=Symbol)
InputT = TypeVar("InputT", bound=Symbol)
EffectT = TypeVar("EffectT", bound=Symbol)


@dataclass(frozen=True, slots=True)
class Transition(Generic[StateT, EffectT]):
    """What one ``(state, input)`` pair does: run ``effect`` (if any), move to ``next``."""

    effect: EffectT | None
    next: StateT


def transition(
    table: Mapping[tuple[StateT, InputT], Transition[StateT, EffectT]],
    machine: str,
    state: StateT,
    event: InputT,
    error: type[ProtocolError],
) -> Transition[StateT, EffectT]:
    """The transition of ``(state, event)`` in ``table``.

    Raises:
        ProtocolError: ``error`` (see house rule 2), naming ``machine``, the state
            and the input, when the pair is not in the table.
    """
    step = table.get((state, event))
    if step is None:
        raise error(f"unexpected {event.value} in {machine} state {state.value}", "protocol")
    return step


class StateMachine(Generic[StateT, InputT, EffectT]):
    """One machine's current state, moved only through its table.

    Args:
        machine: the name errors use (``"parent link"``).
        table: the machine's transitions.
        state: where it starts.
    """

    __slots__ = ("_machine", "_table", "state")

    def __init__(
        self,
        machine: str,
        table: Mapping[tuple[StateT, InputT], Transition[StateT, EffectT]],
        state: StateT,
    ) -> None:
        self._machine = machine
        self._table = table
        self.state = state

    def process(
        self, event: InputT, error: type[ProtocolError] = LocalProtocolError
    ) -> EffectT | None:
        """Apply ``event``: move to the next state and return the effect to run.

        Raises:
            ProtocolError: ``error``, if the pair is not in the table (the state
                does not change).
        """
        # The table lookup inline (one per frame received); ``transition`` raises.
        step = self._table.get((self.state, event)) or transition(
            self._table, self._machine, self.state, event, error
        )
        self.state = step.next
        return step.effect


# --- the link (docs/protocol.md §4.1) -------------------------------------------------


class LinkState(Symbol):
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


class LinkInput(Symbol):
    """What can happen to a link: one input per received message family, EOF, timeout."""

    CHALLENGE = "challenge"
    REGISTER = "register"
    WELCOME = "welcome"
    ERROR = "error"
    PING = "ping"
    #: ``ShareIndexUpdate`` / ``HubIndexUpdate``: only children report an index.
    INDEX_REPORT = "index_report"
    #: ``IndexAck``: only parents acknowledge.
    INDEX_ACK = "index_ack"
    #: ``Resync``: only parents ask for a whole index again.
    RESYNC = "resync"
    FIND = "find"
    FIND_REPLY = "find_reply"
    #: ``Open``, ``Response``, ``Data``, ``End``, ``Credit``, ``Reset``: the stream
    #: machine (``STREAM_TRANSITIONS``) says which of them fits the stream.
    STREAM = "stream"
    #: The peer closed the connection.
    EOF = "eof"
    #: The handshake did not finish in time, or the peer fell silent.
    TIMEOUT = "timeout"


class LinkEffect(Symbol):
    """What the node does for a link input (``_node._LINK_EFFECTS`` binds them)."""

    #: Child: sign a placement for the challenge's nonce and send ``Register``.
    REGISTER = "register"
    #: Parent: check the registration; send ``Welcome``, or refuse and close.
    ADMIT = "admit"
    #: Child: the parent welcomed us; the parent cycle joins (``PARENT_TRANSITIONS``).
    JOIN = "join"
    #: Parent: apply one index report (``INDEX_RECEIVE_TRANSITIONS``), acknowledge it.
    APPLY_INDEX = "apply_index"
    #: Child: an index message was acknowledged (``INDEX_SEND_TRANSITIONS``).
    INDEX_ACKED = "index_acked"
    #: Child: send the whole index again.
    RESEND_INDEX = "resend_index"
    #: ``routing.Lookups`` takes a find or a reply.
    FIND = "find"
    FIND_REPLY = "find_reply"
    #: ``proxy.Streams`` takes a stream frame.
    STREAM = "stream"
    #: Our parent said goodbye: tell the parent cycle (a refusal, a limit), close.
    PARENT_CLOSED = "parent_closed"
    #: A child said goodbye: close.
    CHILD_CLOSED = "child_closed"
    #: The peer went away: close.
    PEER_GONE = "peer_gone"
    #: Say ``Error(timeout)`` and close.
    TIME_OUT = "time_out"


_LS = LinkState
_LI = LinkInput
_LE = LinkEffect

#: The child's states and the parent's states of a live link.
_CHILD_SIDE = (_LS.DIALED, _LS.REGISTERING, _LS.PARENT_UP)
_PARENT_SIDE = (_LS.ACCEPTED, _LS.CHILD_UP)

#: (state, input) -> Transition. Anything missing is a protocol error by the peer.
LINK_TRANSITIONS: dict[tuple[LinkState, LinkInput], Transition[LinkState, LinkEffect]] = {
    (_LS.DIALED, _LI.CHALLENGE): Transition(_LE.REGISTER, _LS.REGISTERING),
    # ADMIT may refuse: the link then closes from CHILD_UP at once, before any
    # other input (nothing the refused child sent after its Register is read).
    (_LS.ACCEPTED, _LI.REGISTER): Transition(_LE.ADMIT, _LS.CHILD_UP),
    (_LS.REGISTERING, _LI.WELCOME): Transition(_LE.JOIN, _LS.PARENT_UP),
    (_LS.PARENT_UP, _LI.INDEX_ACK): Transition(_LE.INDEX_ACKED, _LS.PARENT_UP),
    (_LS.PARENT_UP, _LI.RESYNC): Transition(_LE.RESEND_INDEX, _LS.PARENT_UP),
    (_LS.CHILD_UP, _LI.INDEX_REPORT): Transition(_LE.APPLY_INDEX, _LS.CHILD_UP),
}
for _state in (_LS.PARENT_UP, _LS.CHILD_UP):
    LINK_TRANSITIONS[(_state, _LI.FIND)] = Transition(_LE.FIND, _state)
    LINK_TRANSITIONS[(_state, _LI.FIND_REPLY)] = Transition(_LE.FIND_REPLY, _state)
    LINK_TRANSITIONS[(_state, _LI.STREAM)] = Transition(_LE.STREAM, _state)
for _state in (*_CHILD_SIDE, *_PARENT_SIDE):
    # A peer may start pinging before the handshake has finished at our end. A ping
    # has no effect of its own: any bytes received already proved the peer alive.
    LINK_TRANSITIONS[(_state, _LI.PING)] = Transition(None, _state)
    LINK_TRANSITIONS[(_state, _LI.EOF)] = Transition(_LE.PEER_GONE, _LS.CLOSED)
    LINK_TRANSITIONS[(_state, _LI.TIMEOUT)] = Transition(_LE.TIME_OUT, _LS.CLOSED)
    LINK_TRANSITIONS[(_state, _LI.ERROR)] = Transition(
        _LE.PARENT_CLOSED if _state in _CHILD_SIDE else _LE.CHILD_CLOSED, _LS.CLOSED
    )


class LinkStateMachine(StateMachine[LinkState, LinkInput, LinkEffect]):
    """One link's state; a pair missing from ``LINK_TRANSITIONS`` closes it."""

    __slots__ = ()

    def __init__(self, state: LinkState) -> None:
        super().__init__("link", LINK_TRANSITIONS, state)

    def process(
        self, event: LinkInput, error: type[ProtocolError] = RemoteProtocolError
    ) -> LinkEffect | None:
        """Apply ``event`` and return the effect to run.

        Raises:
            RemoteProtocolError: the pair is not in the table (the machine is CLOSED).
        """
        # The table lookup inline: this runs once per frame received.
        step = self._table.get((self.state, event))
        if step is not None:
            self.state = step.next
            return step.effect
        try:
            # The pair is missing: this raises, naming the state and the input.
            return transition(self._table, self._machine, self.state, event, error).effect
        finally:
            self.state = LinkState.CLOSED

    def close(self) -> None:
        """Move to CLOSED for a reason of our own (hangup, local error, refusal)."""
        self.state = LinkState.CLOSED


# --- a stream at one node (docs/protocol.md §4.2) -------------------------------------


class StreamRole(Symbol):
    """What this node is for one stream."""

    #: The app opened it and consumes the response.
    ORIGIN = "origin"
    #: The app serves it.
    TARGET = "target"
    #: A hub in between; invisible to the app.
    RELAY = "relay"


class StreamState(Symbol):
    """Where one stream is at this node."""

    #: Open; the response head has not passed this node yet (at a target: the app
    #: has not called ``respond``).
    AWAITING_HEAD = "awaiting_head"
    #: The head passed; body bytes flow within the requester's credit.
    STREAMING = "streaming"
    #: Relay only: the responder sent ``End``. Bytes still buffered here go on as
    #: downstream credit allows; ``End`` follows them.
    DRAINING = "draining"
    #: Ended, reset, timed out or failed. Terminal: the stream is forgotten.
    CLOSED = "closed"


class StreamInput(Symbol):
    """What can happen to a stream at one node."""

    # Frames from the side that serves the stream (toward the target).
    RESPONSE = "response"
    DATA = "data"
    END = "end"
    RESPONDER_RESET = "reset from the responder"
    #: Never legal: credit flows toward the responder only.
    RESPONDER_CREDIT = "credit from the responder"
    # Frames from the side that asked (toward the origin).
    CREDIT = "credit"
    REQUESTER_RESET = "reset from the requester"
    #: Never legal: only the responder sends a response, body bytes and ``End``.
    REQUESTER_RESPONSE = "response from the requester"
    REQUESTER_DATA = "data from the requester"
    REQUESTER_END = "end from the requester"
    # The app's commands (an origin's or a target's).
    RESPOND = "respond()"
    SEND_DATA = "send_data()"
    END_STREAM = "end_stream()"
    GRANT_CREDIT = "grant_credit()"
    RESET_STREAM = "reset_stream()"
    # The node's own verdicts.
    #: A draining relay forwarded its last buffered byte.
    DRAINED = "drained"
    #: No route to the target, or no room for another stream (404 or 503).
    REFUSED = "refused"
    #: The response deadline or the idle deadline passed (504).
    TIMEOUT = "timeout"
    #: The link toward the responder closed (502).
    RESPONDER_LOST = "responder link lost"
    #: The link toward the requester closed (499).
    REQUESTER_LOST = "requester link lost"


class StreamEffect(Symbol):
    """What ``proxy.Streams`` does for a stream input (``proxy._EFFECTS`` binds them)."""

    #: Origin: ``ResponseStarted`` / ``ResponseData`` / ``ResponseEnded`` /
    #: ``StreamReset`` for the app (data within the window we granted).
    EMIT_HEAD = "emit_head"
    EMIT_DATA = "emit_data"
    EMIT_END = "emit_end"
    #: Origin or target: the peer reset the stream; tell the app.
    EMIT_RESET = "emit_reset"
    #: Origin: the app returns credit; send ``Credit``.
    GRANT = "grant"
    #: Origin: the app gave up; send ``Reset(499)`` toward the responder.
    CANCEL = "cancel"
    #: Target: send the app's response head / body bytes (within credit) / ``End``.
    SEND_HEAD = "send_head"
    SEND_BODY = "send_body"
    SEND_END = "send_end"
    #: Target: the requester granted credit; ``StreamWritable`` for the app.
    EMIT_WRITABLE = "emit_writable"
    #: Target: the app gave up; send ``Reset(502)`` toward the requester.
    ABANDON = "abandon"
    #: Relay: pass the head on toward the requester.
    FORWARD_HEAD = "forward_head"
    #: Relay: buffer body bytes (within the window we granted), pass on what
    #: downstream credit allows, return credit upstream for what went on.
    BUFFER = "buffer"
    #: Relay: take downstream credit; pass buffered bytes on; return credit upstream.
    PUMP = "pump"
    #: Relay: the responder ended; pass on what credit allows, ``DRAINED`` when empty.
    DRAIN = "drain"
    #: Relay, draining: take downstream credit; pass bytes on; ``DRAINED`` when empty.
    PUMP_DRAINING = "pump_draining"
    #: Relay: pass a reset on toward the requester / toward the responder.
    RESET_REQUESTER = "reset_requester"
    RESET_RESPONDER = "reset_responder"
    #: Origin or target: tell the app (``StreamReset``) and reset the hop still there.
    ABORT = "abort"
    #: Relay: reset every hop still there.
    ABORT_RELAY = "abort_relay"


_SS = StreamState
_SI = StreamInput
_SE = StreamEffect
_StreamTable = dict[tuple[StreamState, StreamInput], Transition[StreamState, StreamEffect]]


def _origin_table() -> _StreamTable:
    table: _StreamTable = {
        (_SS.AWAITING_HEAD, _SI.RESPONSE): Transition(_SE.EMIT_HEAD, _SS.STREAMING),
        (_SS.STREAMING, _SI.DATA): Transition(_SE.EMIT_DATA, _SS.STREAMING),
        (_SS.STREAMING, _SI.END): Transition(_SE.EMIT_END, _SS.CLOSED),
        # Born refused: no route, or no room here or on the next hop.
        (_SS.AWAITING_HEAD, _SI.REFUSED): Transition(_SE.ABORT, _SS.CLOSED),
    }
    for state in (_SS.AWAITING_HEAD, _SS.STREAMING):
        # The app may return credit before the head arrives (it read nothing yet,
        # but it may want a larger window).
        table[(state, _SI.GRANT_CREDIT)] = Transition(_SE.GRANT, state)
        table[(state, _SI.RESPONDER_RESET)] = Transition(_SE.EMIT_RESET, _SS.CLOSED)
        table[(state, _SI.RESET_STREAM)] = Transition(_SE.CANCEL, _SS.CLOSED)
        table[(state, _SI.TIMEOUT)] = Transition(_SE.ABORT, _SS.CLOSED)
        table[(state, _SI.RESPONDER_LOST)] = Transition(_SE.ABORT, _SS.CLOSED)
    return table


def _target_table() -> _StreamTable:
    table: _StreamTable = {
        (_SS.AWAITING_HEAD, _SI.RESPOND): Transition(_SE.SEND_HEAD, _SS.STREAMING),
        (_SS.STREAMING, _SI.SEND_DATA): Transition(_SE.SEND_BODY, _SS.STREAMING),
        (_SS.STREAMING, _SI.END_STREAM): Transition(_SE.SEND_END, _SS.CLOSED),
    }
    for state in (_SS.AWAITING_HEAD, _SS.STREAMING):
        table[(state, _SI.CREDIT)] = Transition(_SE.EMIT_WRITABLE, state)
        table[(state, _SI.REQUESTER_RESET)] = Transition(_SE.EMIT_RESET, _SS.CLOSED)
        table[(state, _SI.RESET_STREAM)] = Transition(_SE.ABANDON, _SS.CLOSED)
        table[(state, _SI.TIMEOUT)] = Transition(_SE.ABORT, _SS.CLOSED)
        table[(state, _SI.REQUESTER_LOST)] = Transition(_SE.ABORT, _SS.CLOSED)
    return table


def _relay_table() -> _StreamTable:
    table: _StreamTable = {
        (_SS.AWAITING_HEAD, _SI.RESPONSE): Transition(_SE.FORWARD_HEAD, _SS.STREAMING),
        (_SS.STREAMING, _SI.DATA): Transition(_SE.BUFFER, _SS.STREAMING),
        (_SS.STREAMING, _SI.END): Transition(_SE.DRAIN, _SS.DRAINING),
        (_SS.DRAINING, _SI.DRAINED): Transition(_SE.SEND_END, _SS.CLOSED),
        (_SS.AWAITING_HEAD, _SI.CREDIT): Transition(_SE.PUMP, _SS.AWAITING_HEAD),
        (_SS.STREAMING, _SI.CREDIT): Transition(_SE.PUMP, _SS.STREAMING),
        (_SS.DRAINING, _SI.CREDIT): Transition(_SE.PUMP_DRAINING, _SS.DRAINING),
        # The next hop has no room for another stream: 503 toward the requester.
        (_SS.AWAITING_HEAD, _SI.REFUSED): Transition(_SE.ABORT_RELAY, _SS.CLOSED),
    }
    # Draining, the responder has ended its side: a frame from it other than a
    # reset breaks the protocol (data after its own End).
    for state in (_SS.AWAITING_HEAD, _SS.STREAMING, _SS.DRAINING):
        table[(state, _SI.RESPONDER_RESET)] = Transition(_SE.RESET_REQUESTER, _SS.CLOSED)
        table[(state, _SI.REQUESTER_RESET)] = Transition(_SE.RESET_RESPONDER, _SS.CLOSED)
        for lost in (_SI.TIMEOUT, _SI.RESPONDER_LOST, _SI.REQUESTER_LOST):
            table[(state, lost)] = Transition(_SE.ABORT_RELAY, _SS.CLOSED)
    return table


#: role -> (state, input) -> Transition. Every stream starts in ``AWAITING_HEAD``.
#: Anything missing is an error: remote for a frame, local for anything else.
STREAM_TRANSITIONS: dict[StreamRole, _StreamTable] = {
    StreamRole.ORIGIN: _origin_table(),
    StreamRole.TARGET: _target_table(),
    StreamRole.RELAY: _relay_table(),
}


# --- the child's cycle toward its parent (docs/protocol.md §4.3) ----------------------


class ParentState(Symbol):
    """Where a node is in reaching its parent hub."""

    #: ``start()`` was not called yet.
    NOT_STARTED = "not_started"
    #: Started without a parent: a root hub or a standalone share. Terminal.
    NO_PARENT = "no_parent"
    #: A ``Dial`` is out; the driver answers with ``link_opened(dialed=True)`` or
    #: ``dial_failed()``.
    DIALING = "dialing"
    #: The link is open; the handshake is under way.
    JOINING = "joining"
    #: ``Welcome`` arrived: this node is in the tree.
    JOINED = "joined"
    #: The parent sent ``Error``; the link is closing.
    CLOSING = "closing"
    #: The parent sent ``Error(limit)``; the link is closing and the next dial
    #: waits ``limit_backoff`` (joining at once would resend the same index).
    LIMITED = "limited"
    #: Waiting for the redial deadline.
    BACKING_OFF = "backing_off"


class ParentInput(Symbol):
    """What can happen on the way to the parent."""

    #: ``start()``, with a parent configured / without one.
    START = "start()"
    START_ALONE = "start() without a parent"
    #: ``link_opened(dialed=True)``.
    CONNECTED = "link_opened(dialed=True)"
    #: ``dial_failed()``.
    DIAL_FAILED = "dial_failed()"
    #: The parent's ``Welcome``.
    WELCOME = "welcome"
    #: The parent's ``Error``: with the code ``limit``, or any other.
    ERROR = "error"
    LIMIT_ERROR = "error(limit)"
    #: The link to the parent closed (for any reason).
    LINK_LOST = "link lost"
    #: The redial deadline passed.
    REDIAL_DUE = "redial due"


class ParentEffect(Symbol):
    """What the node does for a parent input (``_node._PARENT_EFFECTS`` binds them)."""

    #: Queue ``Dial(parent_url)``.
    DIAL = "dial"
    #: Arm the redial: capped exponential backoff with jitter (one more attempt).
    BACK_OFF = "back_off"
    #: The same, after telling the trace why the dial failed.
    BACK_OFF_FAILED_DIAL = "back_off_failed_dial"
    #: Arm the redial ``limit_backoff`` away (jittered).
    BACK_OFF_LONG = "back_off_long"
    #: Joined: reset the backoff, ``ParentConnected``, start the index sync.
    ENTER_TREE = "enter_tree"
    #: ``JoinRefused`` for the app (the parent refused us before welcoming us).
    REPORT_REFUSAL = "report_refusal"


_PS = ParentState
_PI = ParentInput
_PE = ParentEffect

#: (state, input) -> Transition. Missing pairs are misuse of the core by its driver
#: (``LocalProtocolError``), e.g. ``dial_failed()`` with no dial out.
PARENT_TRANSITIONS: dict[tuple[ParentState, ParentInput], Transition[ParentState, ParentEffect]] = {
    (_PS.NOT_STARTED, _PI.START): Transition(_PE.DIAL, _PS.DIALING),
    (_PS.NOT_STARTED, _PI.START_ALONE): Transition(None, _PS.NO_PARENT),
    (_PS.DIALING, _PI.CONNECTED): Transition(None, _PS.JOINING),
    (_PS.DIALING, _PI.DIAL_FAILED): Transition(_PE.BACK_OFF_FAILED_DIAL, _PS.BACKING_OFF),
    (_PS.JOINING, _PI.WELCOME): Transition(_PE.ENTER_TREE, _PS.JOINED),
    # An error before Welcome is the parent refusing us; either way the link is
    # lost next, and only then is the redial armed.
    (_PS.JOINING, _PI.ERROR): Transition(_PE.REPORT_REFUSAL, _PS.CLOSING),
    (_PS.JOINING, _PI.LIMIT_ERROR): Transition(_PE.REPORT_REFUSAL, _PS.LIMITED),
    (_PS.JOINED, _PI.ERROR): Transition(None, _PS.CLOSING),
    (_PS.JOINED, _PI.LIMIT_ERROR): Transition(None, _PS.LIMITED),
    (_PS.JOINING, _PI.LINK_LOST): Transition(_PE.BACK_OFF, _PS.BACKING_OFF),
    (_PS.JOINED, _PI.LINK_LOST): Transition(_PE.BACK_OFF, _PS.BACKING_OFF),
    (_PS.CLOSING, _PI.LINK_LOST): Transition(_PE.BACK_OFF, _PS.BACKING_OFF),
    (_PS.LIMITED, _PI.LINK_LOST): Transition(_PE.BACK_OFF_LONG, _PS.BACKING_OFF),
    (_PS.BACKING_OFF, _PI.REDIAL_DUE): Transition(_PE.DIAL, _PS.DIALING),
}


# --- index sync, the child's side (docs/protocol.md §4.4) -----------------------------


class IndexSendState(Symbol):
    """Where a child is in reporting its index to its parent."""

    #: Not joined: nothing is sent, and changes are not recorded (joining starts
    #: with a full sync anyway).
    STOPPED = "stopped"
    #: A full sync is due: the next message carries ``reset: true``.
    RESET_DUE = "reset_due"
    #: The full sync's rest, changes, or acknowledgements are outstanding.
    SENDING = "sending"
    #: Everything was sent and acknowledged (``IndexSynced`` was reported).
    SYNCED = "synced"


class IndexSendInput(Symbol):
    """What can happen to a child's index reporting."""

    #: Joined the parent / lost the link to it.
    START = "start"
    STOP = "stop"
    #: The parent's ``Resync``.
    RESYNC = "resync"
    #: One index message went out.
    SENT = "sent"
    #: The parent's ``IndexAck``.
    ACKED = "index_ack"
    #: Nothing left to send and nothing awaiting an acknowledgement.
    SETTLED = "settled"


class IndexSendEffect(Symbol):
    """What ``index.UplinkSync`` does (``index._SEND_EFFECTS`` binds them)."""

    #: Numbering restarts at 0; snapshot every key for the full sync.
    BEGIN = "begin"
    #: Snapshot every key again (numbering goes on).
    SNAPSHOT = "snapshot"
    #: Forget the snapshot, the changes and the messages in flight.
    FORGET = "forget"
    #: Check the acknowledged seq is the oldest outstanding one; drop it.
    POP_ACK = "pop_ack"
    #: Tell the node (``IndexSynced``).
    REPORT_SYNCED = "report_synced"


_XS = IndexSendState
_XI = IndexSendInput
_XE = IndexSendEffect

#: (state, input) -> Transition. An ``IndexAck`` with nothing outstanding is the
#: parent's error; any other missing pair is ours.
INDEX_SEND_TRANSITIONS: dict[
    tuple[IndexSendState, IndexSendInput], Transition[IndexSendState, IndexSendEffect]
] = {
    (_XS.STOPPED, _XI.START): Transition(_XE.BEGIN, _XS.RESET_DUE),
    # The parent link can close before the join finished: nothing to forget then.
    (_XS.STOPPED, _XI.STOP): Transition(None, _XS.STOPPED),
    (_XS.RESET_DUE, _XI.SENT): Transition(None, _XS.SENDING),
    (_XS.SENDING, _XI.SENT): Transition(None, _XS.SENDING),
    (_XS.SYNCED, _XI.SENT): Transition(None, _XS.SENDING),
    # Acks of messages sent before a resync still arrive, in order.
    (_XS.RESET_DUE, _XI.ACKED): Transition(_XE.POP_ACK, _XS.RESET_DUE),
    (_XS.SENDING, _XI.ACKED): Transition(_XE.POP_ACK, _XS.SENDING),
    (_XS.SENDING, _XI.SETTLED): Transition(_XE.REPORT_SYNCED, _XS.SYNCED),
    (_XS.SYNCED, _XI.SETTLED): Transition(None, _XS.SYNCED),
}
for _send_state in (_XS.RESET_DUE, _XS.SENDING, _XS.SYNCED):
    INDEX_SEND_TRANSITIONS[(_send_state, _XI.RESYNC)] = Transition(_XE.SNAPSHOT, _XS.RESET_DUE)
    INDEX_SEND_TRANSITIONS[(_send_state, _XI.STOP)] = Transition(_XE.FORGET, _XS.STOPPED)


# --- index sync, the parent's side (docs/protocol.md §4.4) ----------------------------


class IndexReceiveState(Symbol):
    """Where a parent is in following one child's index reports."""

    #: Applying every message in order.
    IN_STEP = "in_step"
    #: A gap was seen and ``Resync`` sent: messages are acknowledged but ignored
    #: until one with ``reset: true`` arrives.
    AWAITING_RESET = "awaiting_reset"


class IndexReceiveInput(Symbol):
    """Which kind of index message arrived (every one is acknowledged)."""

    #: ``reset: true``: forget what the child reported, then apply.
    RESET = "reset"
    #: The ``seq`` expected next.
    NEXT = "next"
    #: Any other ``seq``.
    GAP = "gap"


class IndexReceiveEffect(Symbol):
    """What ``index.HubIndex`` does (``index._RECEIVE_EFFECTS`` binds them)."""

    #: Drop everything the child reported, then apply the message.
    REPLACE = "replace"
    #: Apply the message.
    APPLY = "apply"
    #: Ask the child for its whole index (the node sends ``Resync``).
    ASK_RESYNC = "ask_resync"


_RS = IndexReceiveState
_RI = IndexReceiveInput
_RE = IndexReceiveEffect

#: (state, input) -> Transition; every pair is legal. No effect: ignored.
INDEX_RECEIVE_TRANSITIONS: dict[
    tuple[IndexReceiveState, IndexReceiveInput], Transition[IndexReceiveState, IndexReceiveEffect]
] = {
    (_RS.IN_STEP, _RI.RESET): Transition(_RE.REPLACE, _RS.IN_STEP),
    (_RS.IN_STEP, _RI.NEXT): Transition(_RE.APPLY, _RS.IN_STEP),
    (_RS.IN_STEP, _RI.GAP): Transition(_RE.ASK_RESYNC, _RS.AWAITING_RESET),
    (_RS.AWAITING_RESET, _RI.RESET): Transition(_RE.REPLACE, _RS.IN_STEP),
    (_RS.AWAITING_RESET, _RI.NEXT): Transition(None, _RS.AWAITING_RESET),
    (_RS.AWAITING_RESET, _RI.GAP): Transition(None, _RS.AWAITING_RESET),
}


#: One table row for readers: (state, input, effect or None, next state).
Row = tuple[Symbol, Symbol, Symbol | None, Symbol]


def _rows(table: Mapping[tuple[StateT, InputT], Transition[StateT, EffectT]]) -> tuple[Row, ...]:
    """The rows of ``table``, in its order."""
    return tuple((state, event, step.effect, step.next) for (state, event), step in table.items())


@dataclass(frozen=True, slots=True)
class Machine:
    """One table as a reader (and the diagram renderer) sees it.

    Attributes:
        name: file-name style (``"link"``, ``"stream-relay"``).
        title: one line saying what it is, citing docs/protocol.md.
        states: every state the machine can be in, in the enum's order.
        inputs: every input it can be given, in the enum's order.
        start: the states a machine of this kind starts in.
        rows: the table.
    """

    name: str
    title: str
    states: tuple[Symbol, ...]
    inputs: tuple[Symbol, ...]
    start: tuple[Symbol, ...]
    rows: tuple[Row, ...]


def _stream_machine(role: StreamRole) -> Machine:
    """The table of one stream role (only a relay ever drains)."""
    return Machine(
        name=f"stream-{role.value}",
        title=f"A stream at its {role.value} (docs/protocol.md 4.2)",
        states=tuple(s for s in StreamState if role is StreamRole.RELAY or s is not _SS.DRAINING),
        inputs=tuple(StreamInput),
        start=(StreamState.AWAITING_HEAD,),
        rows=_rows(STREAM_TRANSITIONS[role]),
    )


#: Every table, for ``scripts/make_state_diagrams.py`` and the tests that walk them.
MACHINES: tuple[Machine, ...] = (
    Machine(
        name="link",
        title="A link, seen from one end (docs/protocol.md 4.1)",
        states=tuple(LinkState),
        inputs=tuple(LinkInput),
        start=(LinkState.DIALED, LinkState.ACCEPTED),
        rows=_rows(LINK_TRANSITIONS),
    ),
    *(_stream_machine(role) for role in StreamRole),
    Machine(
        name="parent",
        title="A node's way to its parent hub (docs/protocol.md 4.3)",
        states=tuple(ParentState),
        inputs=tuple(ParentInput),
        start=(ParentState.NOT_STARTED,),
        rows=_rows(PARENT_TRANSITIONS),
    ),
    Machine(
        name="index-send",
        title="Index sync at the child (docs/protocol.md 4.4)",
        states=tuple(IndexSendState),
        inputs=tuple(IndexSendInput),
        start=(IndexSendState.STOPPED,),
        rows=_rows(INDEX_SEND_TRANSITIONS),
    ),
    Machine(
        name="index-receive",
        title="Index sync at the parent, for one child (docs/protocol.md 4.4)",
        states=tuple(IndexReceiveState),
        inputs=tuple(IndexReceiveInput),
        start=(IndexReceiveState.IN_STEP,),
        rows=_rows(INDEX_RECEIVE_TRANSITIONS),
    ),
)
