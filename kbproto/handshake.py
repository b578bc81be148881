"""The joining handshake: what the parent checks of a child's registration (docs/protocol.md §3.3).

Strategy
--------
The parent opens every link with a ``Challenge`` holding 32 fresh bytes from its
``IdSource`` and its own node id. The child answers with ``Register`` carrying its
signed ``Placement`` (``kbproto.placement``): the signature covers that nonce, the
parent's id, a stamp and everything the child claims about itself. Because the nonce
is new for every link, a recorded ``Register`` replayed on another link fails;
because the parent's id is inside, a signature obtained by one hub cannot be relayed
to another; because ``info`` is inside, no one can change the claims without the key.
The same placement is what the parent then forwards upward, so every hub above can
check the child's id too (docs/protocol.md §3.2 and §5).

The original tool signed each message's ``JSON.stringify`` with no nonce
(``src/hemlock/hemlockconnectiontoparenthub.js``), so registrations were replayable;
we keep only its checks (passcode, research and share confirmations, duplicate ids).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from kbproto.ids import NodeId
from kbproto.messages import Placement, Register

__all__ = ("check_registration",)


def check_registration(
    message: Register,
    *,
    nonce: str,
    parent_id: NodeId,
    passcode: str,
    check: Callable[[Placement], str | None],
) -> str | None:
    """Return why ``message`` must be refused, or None if it proves who it claims to be.

    Args:
        message: the child's registration.
        nonce: the challenge sent on this link.
        parent_id: this hub's node id.
        passcode: what children must present ("" = open).
        check: checks a placement's id and signature (``VerifiedPlacements.check``).

    Checks, in order: the placement answers this link's challenge (nonce and parent
    id), its id and signature hold (``check``), the passcode matches, the node says
    ``scientific_research == "yes"`` and (shares) ``confirm_share == "yes"``.
    Duplicate ids and capacity are the hub's to check (they depend on its state).
    """
    placement = message.placement
    info = placement.info
    if placement.nonce != nonce or placement.parent != parent_id:
        return "the registration does not answer this hub's challenge (a replay?)"
    reason = check(placement)
    if reason is not None:
        return reason
    if not hmac.compare_digest(message.passcode.encode(), passcode.encode()):
        return f"incorrect passcode for node {info.name or info.node_id}"
    if info.scientific_research != "yes":
        return "scientific_research must be 'yes': kbucket is for sharing scientific data"
    if info.node_type == "leaf" and info.confirm_share != "yes":
        return "confirm_share must be 'yes' for a share"
    return None
