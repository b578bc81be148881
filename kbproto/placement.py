"""Placements: what a node signs when it joins, and how every hub checks it.

Strategy
--------
A hub routes a node id only if the id rests on proof from the key's owner
(docs/protocol.md §5, docs/security.md §2). That proof is the node's *placement*: at
every join the node signs, with its own key, its ``NodeInfo``, the id of the hub it
joins, that hub's challenge nonce and a *stamp*, a number that only grows for this
node. Its parent checks the signature as the join's proof of key (the nonce is fresh
on the link, so a recorded registration cannot be replayed) and then forwards the
same signed object upward in ``hub_index``; every hub above checks it again with its
own ``Verifier`` (no hub takes another hub's word for an identity) and orders two
placements of one node by stamp: the newer is where the node is now.

The transcript is the ASCII bytes of this compact JSON array, written with Python's
``json.dumps(items, separators=(",", ":"), ensure_ascii=True)`` so that every
implementation produces identical bytes::

    ["kbucket-placement-v1", <nonce hex>, <parent node id>, <stamp>, <scheme>,
     <node_id>, <node_type>, <name>, <description>, <owner>, <owner_email>,
     <listen_url>, <public_key>, <scientific_research>, <confirm_share>]

The tag separates these signatures from anything else a key might sign; version 3's
join transcript (tag ``kbucket-join-v1``, no stamp) can never verify as a placement.

``VerifiedPlacements`` remembers the placements that verified, by a digest of their
transcript and signature: a child hub's full resync, or a child hub rejoining after a
network blip, re-sends every placement of its subtree, and one Ed25519 check costs
about 50-100 µs, so a resync of 1,000 placements would otherwise cost ~0.1 s of CPU
at every hub on the way up. Only successes are remembered (an attacker's garbage
must not evict good entries), in insertion order, the oldest forgotten first.
"""

from __future__ import annotations

import hashlib
import json

from kbproto.auth import SignatureScheme, Signer, Verifier, node_id_from_public_pem
from kbproto.ids import NodeId
from kbproto.messages import MAX_SEQ, NodeInfo, Placement

__all__ = (
    "PLACEMENT_TAG",
    "VERIFIED_CACHE_SIZE",
    "VerifiedPlacements",
    "check_placement",
    "placement_transcript",
    "sign_placement",
)

#: Domain separation: a placement signature can never be mistaken for anything else.
PLACEMENT_TAG = "kbucket-placement-v1"
#: Placements a hub remembers as verified (a 32-byte digest and a dict slot each,
#: ~2.5 MB): several times the 1,000 children of a full hub and their subtrees.
VERIFIED_CACHE_SIZE = 16_384

_SCHEMES = frozenset(s.value for s in SignatureScheme)
#: ``json.dumps`` with options builds a new encoder per call; one is enough.
_TRANSCRIPT_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)


def placement_transcript(
    info: NodeInfo, *, parent: NodeId, nonce: str, stamp: int, scheme: str
) -> bytes:
    """Return the exact bytes a node signs to be placed under hub ``parent``."""
    items = [
        PLACEMENT_TAG,
        nonce,
        parent,
        stamp,
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
    return _TRANSCRIPT_ENCODER.encode(items).encode("ascii")


def sign_placement(
    signer: Signer, info: NodeInfo, *, parent: NodeId, nonce: str, stamp: int
) -> Placement:
    """Sign ``info``'s placement under ``parent`` on the link challenged with ``nonce``.

    Raises:
        ValueError: ``stamp`` outside ``[0, 2**53 - 1]`` (the caller keeps it in range).
    """
    if not 0 <= stamp <= MAX_SEQ:
        raise ValueError(f"stamp {stamp} is outside [0, {MAX_SEQ}]")
    scheme = signer.scheme.value
    data = placement_transcript(info, parent=parent, nonce=nonce, stamp=stamp, scheme=scheme)
    return Placement(
        info=info,
        parent=parent,
        nonce=nonce,
        stamp=stamp,
        scheme=scheme,
        signature=signer.sign(data).hex(),
    )


def _transcript_of(placement: Placement) -> bytes:
    return placement_transcript(
        placement.info,
        parent=placement.parent,
        nonce=placement.nonce,
        stamp=placement.stamp,
        scheme=placement.scheme,
    )


def check_placement(placement: Placement, verifier: Verifier) -> str | None:
    """Return why ``placement`` proves nothing, or None if its key's owner signed it.

    Checks, in order: the node id is the one its public key gives (a forged id), the
    scheme is known, and the signature verifies over the transcript with that key.
    Where the node sits (its parent, the stamp's order) is the caller's to judge.
    """
    info = placement.info
    if node_id_from_public_pem(info.public_key) != info.node_id:
        return f"node id {info.node_id} does not match its public key"
    if placement.scheme not in _SCHEMES:
        return f"unknown signature scheme {placement.scheme!r}"
    signature = bytes.fromhex(placement.signature)  # Placement checked it is hex
    scheme = SignatureScheme(placement.scheme)
    if not verifier.verify(info.public_key, scheme, signature, _transcript_of(placement)):
        return f"bad signature on the placement of node {info.node_id}"
    return None


class VerifiedPlacements:
    """``check_placement`` with a memory of the placements that passed.

    Args:
        verifier: checks signatures (``kbproto.auth.Verifier``).
        capacity: placements remembered at most.
    """

    def __init__(self, verifier: Verifier, capacity: int = VERIFIED_CACHE_SIZE) -> None:
        self._verifier = verifier
        self._capacity = capacity
        self._passed: dict[bytes, None] = {}

    def __len__(self) -> int:
        """Placements remembered as verified."""
        return len(self._passed)

    def check(self, placement: Placement) -> str | None:
        """Return why ``placement`` proves nothing, or None (see ``check_placement``)."""
        # The transcript holds the id and the key, so a remembered digest is a placement
        # that passed every check of ``check_placement``, the id check included.
        digest = hashlib.sha256(
            _transcript_of(placement) + b"\x00" + placement.signature.encode("ascii")
        ).digest()
        if digest in self._passed:
            return None
        reason = check_placement(placement, self._verifier)
        if reason is None:
            if len(self._passed) >= self._capacity:
                del self._passed[next(iter(self._passed))]
            self._passed[digest] = None
        return reason
