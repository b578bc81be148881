"""Deterministic stand-ins for node keys, so a simulated network needs no crypto.

Strategy
--------
kbproto never touches key material: joining goes through the injected ``Signer`` and
``Verifier`` (``kbproto.auth``). In a simulation we want thousands of joins per
second, the same node ids on every run, and nothing from the OS. ``SimSigner`` makes
a PEM-shaped public text from the node's name and "signs" with SHA-512 over that text
and the data; ``SimVerifier`` recomputes it. That is *not* a signature scheme (anyone
who knows the public text can forge), which is fine inside a closed simulation: what
the simulator exercises is the protocol around the signature (a fresh challenge per
link, the node id bound to the key text, a replayed or tampered registration
refused), and those checks run exactly as with Ed25519. Real keys are tested in
``tests/proto`` and used by ``kbapps``.
"""

from __future__ import annotations

import hashlib
import hmac

from kbproto.auth import SignatureScheme, node_id_from_public_pem
from kbproto.ids import NodeId

__all__ = ("SimSigner", "SimVerifier", "sim_node_id")

_TAG = b"kbproto.sim signature v1\x00"


def _pem_for(name: str) -> str:
    body = hashlib.sha256(f"kbproto.sim key {name}".encode()).hexdigest()
    return f"-----BEGIN SIM PUBLIC KEY-----\n{body}\n-----END SIM PUBLIC KEY-----\n"


def sim_node_id(name: str) -> NodeId:
    """The node id a ``SimSigner(name)`` gives (first 12 hex of SHA-1 of its PEM)."""
    return node_id_from_public_pem(_pem_for(name))


class SimSigner:
    """A deterministic, insecure ``Signer`` for node ``name`` (simulation only)."""

    def __init__(self, name: str) -> None:
        self._pem = _pem_for(name)

    @property
    def public_pem(self) -> str:
        """The PEM-shaped public text (its SHA-1 gives the node id)."""
        return self._pem

    @property
    def scheme(self) -> SignatureScheme:
        """Claims Ed25519, the scheme new nodes use; ``SimVerifier`` checks it."""
        return SignatureScheme.ED25519

    def sign(self, data: bytes) -> bytes:
        """SHA-512 over the public text and ``data`` (64 bytes, like Ed25519)."""
        return hashlib.sha512(_TAG + self._pem.encode() + b"\x00" + data).digest()


class SimVerifier:
    """Checks ``SimSigner`` signatures; everything else is simply False."""

    def verify(
        self, public_pem: str, scheme: SignatureScheme, signature: bytes, data: bytes
    ) -> bool:
        """True only if ``signature`` is what ``SimSigner`` with ``public_pem`` makes."""
        if scheme is not SignatureScheme.ED25519:
            return False
        expected = hashlib.sha512(_TAG + public_pem.encode() + b"\x00" + data).digest()
        return hmac.compare_digest(expected, signature)
