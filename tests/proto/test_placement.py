"""Placements: the signed statement of where a node joined (docs/protocol.md §3.2)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kbproto.auth import SignatureScheme
from kbproto.ids import NodeId
from kbproto.placement import (
    PLACEMENT_TAG,
    VerifiedPlacements,
    check_placement,
    placement_transcript,
    sign_placement,
)
from tests.helpers import CryptoVerifier, Ed25519Signer, RsaSigner, make_placement, node_info

PARENT = NodeId("0123456789ab")


class _CountingVerifier:
    """The real verifier, counting the signatures it checks."""

    def __init__(self) -> None:
        self.calls = 0
        self._real = CryptoVerifier()

    def verify(
        self, public_pem: str, scheme: SignatureScheme, signature: bytes, data: bytes
    ) -> bool:
        self.calls += 1
        return self._real.verify(public_pem, scheme, signature, data)


def test_transcript_bytes_are_pinned() -> None:
    info = replace(node_info(Ed25519Signer(1)), name="caf\u00e9 \U0001f600", public_key="PEM")
    data = placement_transcript(
        info, parent=PARENT, nonce="ab" * 32, stamp=1_700_000_000_123, scheme="ed25519"
    )
    assert data == (
        b'["kbucket-placement-v1","' + b"ab" * 32 + b'","0123456789ab",1700000000123,'
        b'"ed25519","' + info.node_id.encode() + b'","leaf","caf\\u00e9 \\ud83d\\ude00","",'
        b'"","","http://raw:1","PEM","yes","yes"]'
    )
    assert PLACEMENT_TAG == "kbucket-placement-v1"


@pytest.mark.parametrize("signer", [Ed25519Signer(1), RsaSigner(1)], ids=["ed25519", "rsa"])
def test_a_signed_placement_checks_out(signer: Ed25519Signer | RsaSigner) -> None:
    info = node_info(signer)
    placement = sign_placement(signer, info, parent=PARENT, nonce="cd" * 32, stamp=42)
    assert placement.scheme == signer.scheme.value
    assert placement.node_id == info.node_id
    assert check_placement(placement, CryptoVerifier()) is None
    # Any field changed after signing breaks it.
    for changed in (
        replace(placement, parent=NodeId("ba9876543210")),
        replace(placement, stamp=43),
        replace(placement, nonce="ef" * 32),
        replace(placement, info=replace(info, listen_url="http://evil:1")),
    ):
        assert "bad signature" in (check_placement(changed, CryptoVerifier()) or "")


def test_a_legacy_rsa_key_cannot_pass_for_ed25519() -> None:
    signer = RsaSigner(1)
    placement = make_placement(signer, PARENT)
    assert check_placement(replace(placement, scheme="ed25519"), CryptoVerifier()) == (
        f"bad signature on the placement of node {placement.node_id}"
    )


def test_stamps_stay_in_range() -> None:
    signer = Ed25519Signer(1)
    with pytest.raises(ValueError, match="outside"):
        sign_placement(signer, node_info(signer), parent=PARENT, nonce="00" * 32, stamp=2**53)


def test_verified_placements_are_remembered_by_their_bytes() -> None:
    verifier = _CountingVerifier()
    checks = VerifiedPlacements(verifier, capacity=2)
    placements = [make_placement(Ed25519Signer(i), PARENT) for i in range(3)]
    forged = make_placement(Ed25519Signer(9), PARENT, info=placements[0].info, stamp=2)
    assert checks.check(placements[0]) is None
    assert checks.check(placements[0]) is None  # remembered: no second signature check
    assert verifier.calls == 1
    # Failures are not remembered (an attacker must not evict good entries).
    assert checks.check(forged) is not None
    assert checks.check(forged) is not None
    assert verifier.calls == 3
    assert len(checks) == 1
    # A placement differing in any byte is checked anew.
    assert checks.check(replace(placements[0], stamp=2)) is not None
    assert verifier.calls == 4
    # Bounded: the oldest is forgotten first.
    for placement in placements[1:]:
        assert checks.check(placement) is None
    assert len(checks) == 2
    assert checks.check(placements[0]) is None
    assert verifier.calls == 7
    # An id that does not match its key never reaches the verifier.
    wrong_id = replace(placements[1], info=replace(placements[1].info, node_id=PARENT))
    assert checks.check(wrong_id) == f"node id {PARENT} does not match its public key"
    assert verifier.calls == 7
