"""Node keys: Ed25519 for new nodes, the original's RSA keys kept, modes, and the Verifier."""

from __future__ import annotations

import hashlib
import pickle
import shutil
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from kbapps.config import SetupError
from kbapps.keys import (
    MAX_PUBLIC_PEM_CHARS,
    MAX_SIGNED_BYTES,
    CryptoVerifier,
    NodeSigner,
    legacy_rsa_pem_pair,
    load_or_create_signer,
    load_signer,
)
from kbproto.auth import SignatureScheme, Signer, Verifier, node_id_from_public_pem

FIXTURE = Path(__file__).resolve().parent.parent / "data" / "legacy_node" / "dot-kbucket"
ED = SignatureScheme.ED25519
RSA = SignatureScheme.RSA_PKCS1V15_SHA256


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _kbdir(tmp_path: Path) -> Path:
    kb = tmp_path / ".kbucket"
    kb.mkdir(mode=0o700)
    return kb


def test_new_node_gets_ed25519_keys_with_safe_modes(tmp_path: Path) -> None:
    kb = _kbdir(tmp_path)
    signer, created = load_or_create_signer(kb)
    assert created is True
    assert signer.scheme is ED
    private_text = (kb / "private.pem").read_text()
    public_text = (kb / "public.pem").read_text()
    assert private_text.startswith("-----BEGIN PRIVATE KEY-----\n")  # PKCS#8
    assert public_text.startswith("-----BEGIN PUBLIC KEY-----\n")  # SubjectPublicKeyInfo
    assert stat.S_IMODE((kb / "private.pem").stat().st_mode) == 0o600
    assert signer.public_pem == public_text
    assert signer.node_id == hashlib.sha1(public_text.encode()).hexdigest()[:12]
    # The second start loads the same identity and creates nothing.
    again, created_again = load_or_create_signer(kb)
    assert created_again is False
    assert again.node_id == signer.node_id
    assert again.public_pem == public_text


def test_private_key_is_created_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    import os

    kb = _kbdir(tmp_path)
    old = os.umask(0)
    try:
        load_or_create_signer(kb)
    finally:
        os.umask(old)
    assert stat.S_IMODE((kb / "private.pem").stat().st_mode) == 0o600


def test_ed25519_round_trip_and_forgeries(tmp_path: Path) -> None:
    signer, _ = load_or_create_signer(_kbdir(tmp_path))
    verifier = CryptoVerifier()
    data = b"join transcript"
    signature = signer.sign(data)
    assert verifier.verify(signer.public_pem, ED, signature, data) is True
    assert verifier.verify(signer.public_pem, ED, signature, data + b"!") is False
    forged = bytes([signature[0] ^ 1]) + signature[1:]
    assert verifier.verify(signer.public_pem, ED, forged, data) is False
    assert verifier.verify(signer.public_pem, RSA, signature, data) is False  # wrong scheme
    other = ed25519.Ed25519PrivateKey.generate().sign(data)
    assert verifier.verify(signer.public_pem, ED, other, data) is False


def test_signer_satisfies_the_kbproto_protocols(tmp_path: Path) -> None:
    signer: Signer = load_or_create_signer(_kbdir(tmp_path))[0]
    verifier: Verifier = CryptoVerifier()
    assert verifier.verify(signer.public_pem, signer.scheme, signer.sign(b"x"), b"x")


def test_legacy_fixture_keeps_its_node_id_and_signs_with_rsa(tmp_path: Path) -> None:
    kb = tmp_path / ".kbucket"
    shutil.copytree(FIXTURE, kb)
    (kb / "private.pem").chmod(0o644)  # the original wrote it with the umask
    signer, created = load_or_create_signer(kb)
    assert created is False
    assert signer.node_id == "a6d46d66a159"  # sha1sum of the fixture's public.pem
    assert signer.scheme is RSA
    assert stat.S_IMODE((kb / "private.pem").stat().st_mode) == 0o600  # tightened
    # The files are not rewritten: the id depends on their exact text.
    assert (kb / "public.pem").read_bytes() == (FIXTURE / "public.pem").read_bytes()
    data = b"challenge"
    signature = signer.sign(data)
    assert len(signature) == 256
    assert CryptoVerifier().verify(signer.public_pem, RSA, signature, data) is True
    assert CryptoVerifier().verify(signer.public_pem, ED, signature, data) is False
    # RSA PKCS#1 v1.5 + SHA-256, checked independently of our Verifier.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    public = serialization.load_pem_public_key(signer.public_pem.encode())
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())


def test_generated_legacy_pair_has_the_npm_keypair_format(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    private_pem, public_pem = legacy_rsa_pem_pair(rsa_key)
    assert private_pem.startswith("-----BEGIN RSA PRIVATE KEY-----\n")
    assert private_pem.endswith("\n-----END RSA PRIVATE KEY-----\n")
    assert public_pem.startswith("-----BEGIN RSA PUBLIC KEY-----\n")
    body = public_pem.splitlines()[1:-1]
    assert all(len(line) == 72 for line in body[:-1])
    assert 0 < len(body[-1]) <= 72
    assert "\r" not in public_pem + private_pem
    kb = _kbdir(tmp_path)
    (kb / "private.pem").write_text(private_pem)
    (kb / "public.pem").write_text(public_pem)
    signer = load_signer(kb)
    assert signer.node_id == node_id_from_public_pem(public_pem)
    assert signer.public_pem == public_pem


def test_crlf_public_pem_is_kept_byte_for_byte(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    private_pem, public_pem = legacy_rsa_pem_pair(rsa_key)
    crlf = public_pem.replace("\n", "\r\n")
    kb = _kbdir(tmp_path)
    (kb / "private.pem").write_text(private_pem)
    (kb / "public.pem").write_bytes(crlf.encode())
    signer = load_signer(kb)
    assert signer.public_pem == crlf
    assert signer.node_id == hashlib.sha1(crlf.encode()).hexdigest()[:12]


def test_repr_and_pickle_never_reveal_the_private_key(tmp_path: Path) -> None:
    kb = _kbdir(tmp_path)
    signer, _ = load_or_create_signer(kb)
    private_body = "".join((kb / "private.pem").read_text().splitlines()[1:-1])
    text = repr(signer) + str(signer)
    assert signer.node_id in text
    assert private_body not in text
    assert "PRIVATE" not in text
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(signer)


@pytest.mark.parametrize("present", ["private.pem", "public.pem"])
def test_missing_half_is_an_error(tmp_path: Path, present: str) -> None:
    kb = _kbdir(tmp_path)
    load_or_create_signer(kb)
    missing = "public.pem" if present == "private.pem" else "private.pem"
    (kb / missing).unlink()
    with pytest.raises(SetupError) as info:
        load_or_create_signer(kb)
    assert info.value.exit_code == 2
    assert missing in info.value.message
    assert not (kb / missing).exists()  # never silently regenerated


def test_keys_gone_but_node_id_saved_is_refused(tmp_path: Path) -> None:
    kb = _kbdir(tmp_path)
    with pytest.raises(SetupError, match="key files of node 0123456789ab are missing"):
        load_or_create_signer(kb, node_id_in_config="0123456789ab")
    assert list(kb.iterdir()) == []


def test_corrupt_private_key_error_does_not_echo_it(tmp_path: Path) -> None:
    kb = _kbdir(tmp_path)
    load_or_create_signer(kb)
    secret = (kb / "private.pem").read_text()
    (kb / "private.pem").write_text(secret[:60] + "GARBAGE" + secret[60:])
    with pytest.raises(SetupError) as info:
        load_signer(kb)
    assert "private.pem: not a PEM Ed25519 or RSA private key" in info.value.message
    assert secret[30:60] not in info.value.message


@pytest.mark.parametrize(
    ("public_text", "expected"),
    [
        ("hello", "public.pem: not a PEM Ed25519 or RSA public key"),
        ("\xe9t\xe9", "not ASCII"),
    ],
)
def test_corrupt_public_key(tmp_path: Path, public_text: str, expected: str) -> None:
    kb = _kbdir(tmp_path)
    load_or_create_signer(kb)
    (kb / "public.pem").write_text(public_text, encoding="latin-1")
    with pytest.raises(SetupError, match=expected):
        load_signer(kb)


def test_mismatched_pair_and_unsupported_keys(tmp_path: Path) -> None:
    kb = _kbdir(tmp_path)
    load_or_create_signer(kb)
    other = ed25519.Ed25519PrivateKey.generate().public_key()
    (kb / "public.pem").write_bytes(
        other.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(SetupError, match="does not belong to the private key"):
        load_signer(kb)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    (kb / "private.pem").write_bytes(
        ec_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(SetupError, match="only Ed25519 and RSA"):
        load_signer(kb)


def test_encrypted_and_oversized_private_keys(tmp_path: Path) -> None:
    kb = _kbdir(tmp_path)
    key = ed25519.Ed25519PrivateKey.generate()
    (kb / "public.pem").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    (kb / "private.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    with pytest.raises(SetupError, match="encrypted private keys are not supported"):
        load_signer(kb)
    (kb / "private.pem").write_bytes(b"A" * 70_000)
    with pytest.raises(SetupError, match="larger than"):
        load_signer(kb)


def test_weak_rsa_key_is_refused(tmp_path: Path) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    private_pem, public_pem = legacy_rsa_pem_pair(weak)
    kb = _kbdir(tmp_path)
    (kb / "private.pem").write_text(private_pem)
    (kb / "public.pem").write_text(public_pem)
    with pytest.raises(SetupError, match="2048 to 4096 bits"):
        load_signer(kb)
    with pytest.raises(ValueError, match="2048 to 4096"):
        NodeSigner(weak, public_pem)


def test_verifier_rejects_bad_inputs(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = CryptoVerifier()
    _, public_pem = legacy_rsa_pem_pair(rsa_key)
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    data = b"payload"
    good = rsa_key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    assert verifier.verify(public_pem, RSA, good, data) is True
    pss = rsa_key.sign(data, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
    assert verifier.verify(public_pem, RSA, pss, data) is False
    sha1_sig = rsa_key.sign(data, padding.PKCS1v15(), hashes.SHA1())
    assert verifier.verify(public_pem, RSA, sha1_sig, data) is False
    assert verifier.verify(public_pem, RSA, good[:-1], data) is False
    assert verifier.verify(public_pem, RSA, b"", data) is False
    assert verifier.verify(public_pem, RSA, good * 10, data) is False  # oversized signature
    assert verifier.verify(public_pem, RSA, good, b"x" * (MAX_SIGNED_BYTES + 1)) is False
    assert verifier.verify("x" * (MAX_PUBLIC_PEM_CHARS + 1), RSA, good, data) is False
    assert verifier.verify("not a pem", RSA, good, data) is False
    assert verifier.verify("\u00e9" + public_pem, RSA, good, data) is False
    assert verifier.verify(public_pem, ED, good, data) is False
    # Garbage of the wrong types (decoded from the network) is False too, never raised.
    assert verifier.verify(None, RSA, good, data) is False  # type: ignore[arg-type]
    assert verifier.verify(public_pem, RSA, "sig", data) is False  # type: ignore[arg-type]
    assert verifier.verify(public_pem, "rsa", good, data) is False  # type: ignore[arg-type]
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    assert verifier.verify(ec_pem, ED, good, data) is False
    assert verifier.verify(ec_pem, RSA, good, data) is False


@settings(max_examples=200, deadline=None)
@given(
    pem=st.one_of(
        st.text(max_size=300),
        st.binary(max_size=200).map(
            lambda b: "-----BEGIN PUBLIC KEY-----\n" + b.hex() + "\n-----END PUBLIC KEY-----\n"
        ),
    ),
    scheme=st.sampled_from(list(SignatureScheme)),
    signature=st.binary(max_size=600),
    data=st.binary(max_size=64),
)
def test_verifier_never_raises_on_garbage(
    pem: str, scheme: SignatureScheme, signature: bytes, data: bytes
) -> None:
    assert CryptoVerifier().verify(pem, scheme, signature, data) is False
