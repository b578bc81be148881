"""Node identity and the injected signing interface.

Strategy
--------
A node proves it owns its node id by signing a fresh challenge from its parent
(docs/protocol.md "Joining"). kbproto decides *what* is signed and checks the result, but holds
no key material: the private key stays behind a ``Signer`` that kbapps builds from
``.kbucket/private.pem``, and signatures are checked through a ``Verifier`` (backed by
the ``cryptography`` package outside kbproto). That keeps the core pure and keeps keys
inside ``.kbucket/``.

The node id is the first 12 hex digits of the SHA-1 of the exact text of
``public.pem`` (docs/protocol.md §3.1; the original tool, ``src/hemlock/hemlocknode.js``), so the id
depends on the PEM formatting, not only on the key.
"""

from __future__ import annotations

import enum
import hashlib
from typing import Protocol

from kbproto.ids import NodeId

__all__ = (
    "SignatureScheme",
    "Signer",
    "Verifier",
    "node_id_from_public_pem",
)


class SignatureScheme(enum.Enum):
    """How a node signs: Ed25519 for new nodes, RSA for keys made by the original tool."""

    #: Ed25519 over the raw message bytes.
    ED25519 = "ed25519"
    #: RSA PKCS#1 v1.5 with SHA-256 (legacy 2048-bit keys from the original tool).
    RSA_PKCS1V15_SHA256 = "rsa-pkcs1v15-sha256"


def node_id_from_public_pem(public_pem: str) -> NodeId:
    """Return the node id for the exact text of a ``public.pem`` file."""
    return NodeId(hashlib.sha1(public_pem.encode("utf-8")).hexdigest()[:12])


class Signer(Protocol):
    """Signs on behalf of the local node; the private key never leaves it."""

    @property
    def public_pem(self) -> str:
        """The exact text of the node's ``public.pem``."""
        ...

    @property
    def scheme(self) -> SignatureScheme:
        """The scheme ``sign`` uses."""
        ...

    def sign(self, data: bytes) -> bytes:
        """Return the signature of ``data``."""
        ...


class Verifier(Protocol):
    """Checks signatures made by other nodes."""

    def verify(
        self, public_pem: str, scheme: SignatureScheme, signature: bytes, data: bytes
    ) -> bool:
        """Return True only if ``signature`` is ``public_pem``'s signature of ``data``.

        Never raises for a bad key, a bad signature or a scheme that does not match the
        key: all of those are simply False.
        """
        ...
