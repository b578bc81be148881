"""The joining handshake: what the child signs, and what the parent checks (SPEC §5).

Strategy
--------
The parent opens every link with a ``Challenge`` holding 32 fresh bytes from its
``IdSource`` and its own node id. The child signs a *transcript* binding that nonce,
the parent's id and everything it claims about itself, and sends it in ``Register``.
Because the nonce is new for every link, a recorded ``Register`` replayed on another
link fails the signature check; because the parent's id is inside, a signature
obtained by a hub cannot be relayed to another hub; because ``info`` is inside, no one
can change the claims without the key.

The transcript is the UTF-8 bytes of a compact JSON array (ASCII-escaped, so every
implementation produces the same bytes)::

    ["kbucket-join-v1", <nonce hex>, <parent node id>, <scheme>,
     <node_id>, <node_type>, <name>, <description>, <owner>, <owner_email>,
     <listen_url>, <public_key>, <scientific_research>, <confirm_share>]

The original tool signed each message's ``JSON.stringify`` with no nonce
(``src/hemlock/hemlockconnectiontoparenthub.js``), so registrations were replayable;
we keep only its checks (passcode, research and share confirmations, duplicate ids).
"""

from __future__ import annotations

import hmac
import json

from kbproto.auth import SignatureScheme, Verifier, node_id_from_public_pem
from kbproto.ids import NodeId
from kbproto.messages import NodeInfo, Register

__all__ = ("TRANSCRIPT_TAG", "check_registration", "transcript")

#: Domain separation: a join signature can never be mistaken for anything else.
TRANSCRIPT_TAG = "kbucket-join-v1"


def transcript(nonce: str, parent_id: NodeId, scheme: str, info: NodeInfo) -> bytes:
    """Return the exact bytes a child signs to join the parent ``parent_id``."""
    items = [
        TRANSCRIPT_TAG,
        nonce,
        parent_id,
        scheme,
        info.node_id,
        info.node_type,
        info.name,
        info.description,
        info.owner,
        info.owner_email,
        info.listen_url,
        info.public_key,
        info.scientific_research,
        info.confirm_share,
    ]
    return json.dumps(items, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def check_registration(
    message: Register,
    *,
    nonce: str,
    parent_id: NodeId,
    passcode: str,
    verifier: Verifier,
) -> str | None:
    """Return why ``message`` must be refused, or None if it proves who it claims to be.

    Checks, in order: the node id is the one its public key gives, the scheme is
    known, the signature over the transcript verifies, the passcode matches, the node
    says ``scientific_research == "yes"`` and (shares) ``confirm_share == "yes"``.
    Duplicate ids and capacity are the hub's to check (they depend on its state).
    """
    info = message.info
    if node_id_from_public_pem(info.public_key) != info.node_id:
        return f"node id {info.node_id} does not match its public key"
    if message.scheme not in {s.value for s in SignatureScheme}:
        return f"unknown signature scheme {message.scheme!r}"
    data = transcript(nonce, parent_id, message.scheme, info)
    signature = bytes.fromhex(message.signature)  # Register checked it is hex
    if not verifier.verify(info.public_key, SignatureScheme(message.scheme), signature, data):
        return "bad signature (wrong key, or a replayed registration)"
    if not hmac.compare_digest(message.passcode.encode(), passcode.encode()):
        return f"incorrect passcode for node {info.name or info.node_id}"
    if info.scientific_research != "yes":
        return "scientific_research must be 'yes': kbucket is for sharing scientific data"
    if info.node_type == "leaf" and info.confirm_share != "yes":
        return "confirm_share must be 'yes' for a share"
    return None
