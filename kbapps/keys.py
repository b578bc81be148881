"""Node keys: ``.kbucket/private.pem`` and ``public.pem`` (docs/formats.md §3): signing, checking.

Strategy
--------
kbproto decides what a node signs and checks (``kbproto.handshake``) but holds no key
material; it talks to the ``kbproto.auth.Signer`` and ``Verifier`` protocols. This
module implements both with the ``cryptography`` package:

- New nodes get an Ed25519 key pair: ``private.pem`` is PKCS#8 PEM, ``public.pem`` is
  SubjectPublicKeyInfo PEM. ``private.pem`` is created with ``O_CREAT | O_EXCL`` and
  mode 0600 in the same system call, so it is never readable by others, not even for a
  moment, and two processes starting at once cannot overwrite each other's key.
- A ``.kbucket/`` made by the original tool holds 2048-bit RSA PKCS#1 PEM keys written
  by the npm ``keypair`` package (base64 wrapped at 72 columns, LF, final newline).
  They are loaded as they are, never rewritten, so the node id (the first 12 hex
  digits of the SHA-1 of the exact ``public.pem`` text) stays the same; such a node
  signs with RSA PKCS#1 v1.5 + SHA-256.
- Keys are generated only when neither file exists. A missing half, an unreadable or
  corrupt key, or a pair that does not belong together is one clear line
  (``SetupError``, exit 2), never a traceback and never the key text.
- The ``Verifier`` never raises on what a peer sends: a bad PEM, a key type that does
  not match the scheme, an oversized input or a wrong signature are all just False.
"""

from __future__ import annotations

import base64
import contextlib
import os
import stat
from pathlib import Path
from typing import NoReturn

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from kbapps.config import SetupError
from kbproto.auth import SignatureScheme, node_id_from_public_pem
from kbproto.ids import NodeId

__all__ = (
    "MAX_KEY_FILE_BYTES",
    "MAX_PUBLIC_PEM_CHARS",
    "MAX_SIGNATURE_BYTES",
    "MAX_SIGNED_BYTES",
    "PRIVATE_KEY_FILE",
    "PUBLIC_KEY_FILE",
    "CryptoVerifier",
    "NodeSigner",
    "legacy_rsa_pem_pair",
    "load_or_create_signer",
    "load_signer",
)

PRIVATE_KEY_FILE = "private.pem"
PUBLIC_KEY_FILE = "public.pem"

#: A 4096-bit RSA private key in PEM is about 3.3 KB; 64 KiB bounds what a wrong file
#: (say, a data file copied over the key) can make us read.
MAX_KEY_FILE_BYTES = 64 * 1024
#: Public keys arrive from peers; a 4096-bit RSA public PEM is about 800 characters.
#: Same bound as kbproto's ``MAX_PEM`` for the ``public_key`` field.
MAX_PUBLIC_PEM_CHARS = 8192
#: RSA-8192 signatures are 1024 bytes; anything longer is garbage.
MAX_SIGNATURE_BYTES = 1024
#: What nodes sign is a join transcript of a few KiB; 1 MiB bounds hashing work per call.
MAX_SIGNED_BYTES = 1024 * 1024
#: The original's keys are 2048-bit; smaller RSA keys are too weak to accept, larger
#: than 4096 bits only cost verification time.
_RSA_MIN_BITS = 2048
_RSA_MAX_BITS = 4096
#: The npm ``keypair`` package wraps PEM base64 at 72 columns (the original's fixtures).
_LEGACY_PEM_COLUMNS = 72

_PrivateKey = ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


class NodeSigner:
    """A node's private key, implementing ``kbproto.auth.Signer``.

    The private key is held in this object only; ``repr`` shows the node id and the
    scheme, never key material, and the object refuses to be pickled.
    """

    __slots__ = ("_key", "_node_id", "_public_pem", "_scheme")

    def __init__(self, private_key: _PrivateKey, public_pem: str) -> None:
        """Wrap ``private_key`` whose public half is the exact text ``public_pem``.

        Raises:
            ValueError: ``public_pem`` is not the public half of ``private_key``, or the
                key type or size is not supported.
        """
        if isinstance(private_key, ed25519.Ed25519PrivateKey):
            self._scheme = SignatureScheme.ED25519
        elif isinstance(private_key, rsa.RSAPrivateKey):
            if not _RSA_MIN_BITS <= private_key.key_size <= _RSA_MAX_BITS:
                raise ValueError(
                    f"RSA keys must have {_RSA_MIN_BITS} to {_RSA_MAX_BITS} bits,"
                    f" not {private_key.key_size}"
                )
            self._scheme = SignatureScheme.RSA_PKCS1V15_SHA256
        else:
            raise ValueError("only Ed25519 and RSA keys are supported")
        public = _parse_public_pem(public_pem)
        if public is None or _spki(public) != _spki(private_key.public_key()):
            raise ValueError("the public key does not belong to the private key")
        self._key = private_key
        self._public_pem = public_pem
        self._node_id = node_id_from_public_pem(public_pem)

    @property
    def public_pem(self) -> str:
        """The exact text of ``public.pem`` (the node id derives from it)."""
        return self._public_pem

    @property
    def scheme(self) -> SignatureScheme:
        """Ed25519 for new nodes; RSA PKCS#1 v1.5 + SHA-256 for the original's keys."""
        return self._scheme

    @property
    def node_id(self) -> NodeId:
        """The node id: first 12 hex digits of the SHA-1 of ``public_pem``."""
        return self._node_id

    def sign(self, data: bytes) -> bytes:
        """Return the signature of ``data`` with this node's private key."""
        if isinstance(self._key, ed25519.Ed25519PrivateKey):
            return self._key.sign(data)
        return self._key.sign(data, padding.PKCS1v15(), hashes.SHA256())

    def __repr__(self) -> str:
        return f"NodeSigner(node_id={self._node_id!r}, scheme={self._scheme.value!r})"

    def __reduce__(self) -> NoReturn:
        # Pickling would copy the private key out of the process (logs, caches...).
        raise TypeError("NodeSigner holds a private key and cannot be pickled")


class CryptoVerifier:
    """Checks other nodes' signatures; implements ``kbproto.auth.Verifier``."""

    __slots__ = ()

    def verify(
        self, public_pem: str, scheme: SignatureScheme, signature: bytes, data: bytes
    ) -> bool:
        """Return True only if ``signature`` is ``public_pem``'s signature of ``data``.

        Never raises: a malformed or oversized PEM, a key whose type does not match
        ``scheme``, an RSA key outside 2048-4096 bits, an oversized signature or
        message, or a wrong signature all return False.
        """
        # Typed as bytes, but callers decode these from the network: check at runtime.
        raw: tuple[object, object] = (signature, data)
        if not all(isinstance(item, bytes) for item in raw):
            return False
        if len(signature) > MAX_SIGNATURE_BYTES or len(data) > MAX_SIGNED_BYTES:
            return False
        key = _parse_public_pem(public_pem)
        try:
            if scheme is SignatureScheme.ED25519 and isinstance(key, ed25519.Ed25519PublicKey):
                key.verify(signature, data)
                return True
            if (
                scheme is SignatureScheme.RSA_PKCS1V15_SHA256
                and isinstance(key, rsa.RSAPublicKey)
                and _RSA_MIN_BITS <= key.key_size <= _RSA_MAX_BITS
            ):
                key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
                return True
        except (InvalidSignature, ValueError, TypeError):
            return False
        return False


def _parse_public_pem(
    public_pem: object,
) -> ed25519.Ed25519PublicKey | rsa.RSAPublicKey | None:
    """The public key in ``public_pem`` (SPKI, or RSA PKCS#1), or None if it is not one."""
    if not isinstance(public_pem, str) or len(public_pem) > MAX_PUBLIC_PEM_CHARS:
        return None
    try:
        key = serialization.load_pem_public_key(public_pem.encode("ascii"))
    except (ValueError, TypeError, UnsupportedAlgorithm, UnicodeError):
        return None
    if isinstance(key, ed25519.Ed25519PublicKey | rsa.RSAPublicKey):
        return key
    return None


def _spki(key: ed25519.Ed25519PublicKey | rsa.RSAPublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def legacy_rsa_pem_pair(private_key: rsa.RSAPrivateKey) -> tuple[str, str]:
    """Return ``(private_pem, public_pem)`` as the original tool's npm ``keypair`` wrote them.

    PKCS#1 (``RSA PRIVATE KEY`` / ``RSA PUBLIC KEY``), base64 wrapped at 72 columns,
    LF line endings, a final newline. Used to build legacy fixtures; kbucket itself
    never writes RSA keys.
    """
    private_der = private_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public_der = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.PKCS1
    )
    return _pem("RSA PRIVATE KEY", private_der), _pem("RSA PUBLIC KEY", public_der)


def _pem(label: str, der: bytes) -> str:
    body = base64.b64encode(der).decode("ascii")
    lines = [body[i : i + _LEGACY_PEM_COLUMNS] for i in range(0, len(body), _LEGACY_PEM_COLUMNS)]
    return f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----\n"


def _read_key_file(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise SetupError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise SetupError(f"{path}: larger than {MAX_KEY_FILE_BYTES} bytes; not a PEM key")
    return data


def load_signer(kbucket_dir: Path) -> NodeSigner:
    """Load the node's key pair from ``kbucket_dir`` (``DIR/.kbucket``).

    A ``private.pem`` readable by others (the original wrote it with the umask) is
    tightened to 0600.

    Raises:
        SetupError: a file is missing, unreadable, not a supported unencrypted PEM key,
            or the two files do not belong together (exit 2). Messages never contain
            key text.
    """
    private_path = kbucket_dir / PRIVATE_KEY_FILE
    public_path = kbucket_dir / PUBLIC_KEY_FILE
    for path in (private_path, public_path):
        if not path.is_file():
            raise SetupError(
                f"{path}: missing (the other key file exists); restore it from a backup,"
                " or remove both key files and node_id from kbnode.json to make a new"
                " node identity"
            )
    _restrict_mode(private_path)
    private_raw = _read_key_file(private_path)
    public_raw = _read_key_file(public_path)
    try:
        public_pem = public_raw.decode("ascii")
    except UnicodeDecodeError:
        raise SetupError(f"{public_path}: not a PEM public key (not ASCII text)") from None
    if _parse_public_pem(public_pem) is None:
        raise SetupError(f"{public_path}: not a PEM Ed25519 or RSA public key")
    try:
        private_key = serialization.load_pem_private_key(private_raw, password=None)
    except TypeError:
        raise SetupError(f"{private_path}: encrypted private keys are not supported") from None
    except (ValueError, UnsupportedAlgorithm):
        # Deliberately not the library's message: it must never echo key material.
        raise SetupError(f"{private_path}: not a PEM Ed25519 or RSA private key") from None
    if not isinstance(private_key, ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey):
        raise SetupError(f"{private_path}: only Ed25519 and RSA keys are supported")
    try:
        return NodeSigner(private_key, public_pem)
    except ValueError as exc:
        raise SetupError(f"{kbucket_dir}: {exc}") from None


def _restrict_mode(path: Path) -> None:
    with contextlib.suppress(OSError):  # not our file to chmod: keep going
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            path.chmod(0o600)


def _write_new(path: Path, text: str, mode: int) -> None:
    """Create ``path`` with ``mode`` in one call; fail if it exists (never overwrite)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    with os.fdopen(fd, "w", encoding="ascii", newline="\n") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def load_or_create_signer(
    kbucket_dir: Path, *, node_id_in_config: str = ""
) -> tuple[NodeSigner, bool]:
    """Load the node's keys, generating an Ed25519 pair when neither file exists.

    Args:
        kbucket_dir: the node's ``DIR/.kbucket`` (must exist).
        node_id_in_config: the ``node_id`` already saved in ``kbnode.json``, if any.
            When it is set and both key files are gone, we refuse to make new keys
            (the node's identity would silently change), as the original did.

    Returns:
        The signer and True if the keys were created by this call.

    Raises:
        SetupError: see ``load_signer``; also when keys cannot be written (exit 2).
    """
    private_path = kbucket_dir / PRIVATE_KEY_FILE
    public_path = kbucket_dir / PUBLIC_KEY_FILE
    if private_path.exists() or public_path.exists() or private_path.is_symlink():
        return load_signer(kbucket_dir), False
    if node_id_in_config:
        raise SetupError(
            f"{kbucket_dir}: the key files of node {node_id_in_config} are missing; restore"
            " private.pem and public.pem, or remove node_id from kbnode.json to make a new"
            " node identity"
        )
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )
    try:
        # Private first: if we crash between the two writes, the next start reports the
        # missing public half instead of silently making a different identity.
        _write_new(private_path, private_pem, 0o600)
        _write_new(public_path, public_pem, 0o644)
    except FileExistsError:
        # Another process created the keys at the same moment: use theirs.
        return load_signer(kbucket_dir), False
    except OSError as exc:
        raise SetupError(
            f"{kbucket_dir}: cannot write the node keys: {exc.strerror or exc}"
        ) from None
    return NodeSigner(key, public_pem), True
