"""Node identity: key persistence, Node-IDs, certificates in open and CA mode."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from overlay.chord.messages import Record
from overlay.chord.records import sign_record, verify_record
from overlay.identity import (
    CertificateAuthority,
    IdentityError,
    NodeIdentity,
    create_ca,
    issue_node_certificate,
    node_id_from_public_key,
    self_signed_certificate,
    verify,
    verify_peer,
)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def deploy(tmp_path: Path) -> tuple[CertificateAuthority, Path]:
    """A CA with its certificate written to tmp_path/ca.crt."""
    ca = create_ca()
    ca_path = tmp_path / "ca.crt"
    ca_path.write_bytes(pem(ca.certificate))
    return ca, ca_path


# ------------------------------------------------------------------------ key files


def test_key_created_private_and_reused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = NodeIdentity.load(data)
    key_file = data / "node.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    second = NodeIdentity.load(data)
    assert second.node_id == first.node_id
    assert second.public_key_bytes == first.public_key_bytes
    assert [p.name for p in data.iterdir()] == ["node.key"]  # no temporary files left


def test_key_created_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        NodeIdentity.load(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "node.key").stat().st_mode) == 0o600


def test_loose_permissions_are_tightened(tmp_path: Path) -> None:
    NodeIdentity.load(tmp_path)
    (tmp_path / "node.key").chmod(0o644)
    NodeIdentity.load(tmp_path)
    assert stat.S_IMODE((tmp_path / "node.key").stat().st_mode) == 0o600


def test_node_id_is_hash_of_public_key(tmp_path: Path) -> None:
    ident = NodeIdentity.load(tmp_path)
    raw = ident.private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert raw == ident.public_key_bytes and len(raw) == 32
    assert ident.node_id == int.from_bytes(hashlib.sha256(raw).digest()[:16], "big")
    assert ident.node_id == node_id_from_public_key(raw)
    assert ident.node_id_hex == f"{ident.node_id:032x}"


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"garbage\n",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        ),
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    ],
    ids=["empty", "garbage", "bad-pem", "encrypted", "not-ed25519"],
)
def test_corrupt_key_file_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "node.key").write_bytes(content)
    with pytest.raises(IdentityError) as info:
        NodeIdentity.load(tmp_path)
    assert str(tmp_path / "node.key") in str(info.value)
    assert (tmp_path / "node.key").read_bytes() == content  # never overwritten


def test_unreadable_key_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "node.key").mkdir()  # unreadable as a file, even for root
    with pytest.raises(IdentityError, match="cannot read node key"):
        NodeIdentity.load(tmp_path)


def test_unwritable_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(IdentityError, match="cannot create data directory"):
        NodeIdentity.load(blocker / "data")


# ---------------------------------------------------------------------- signatures


def test_sign_and_verify() -> None:
    ident = NodeIdentity.generate()
    sig = ident.sign(b"hello")
    assert verify(b"hello", sig, ident.public_key_bytes)
    assert verify(b"hello", sig, ident.private_key.public_key())
    assert not verify(b"hellO", sig, ident.public_key_bytes)
    assert not verify(b"hello", sig, NodeIdentity.generate().public_key_bytes)
    assert not verify(b"hello", sig[:-1], ident.public_key_bytes)
    assert not verify(b"hello", sig, b"short key")


def test_record_signer_binds_owner_to_key() -> None:
    ident, other = NodeIdentity.generate(), NodeIdentity.generate()
    record = Record(resource_id=5, aor="sip:alice@meshsip", owner=0,
                    contact="sip:alice@10.0.0.9:5060", sequence=1, lifetime=3600)
    signed = sign_record(record, ident.node_id, ident.record_signer)
    assert signed.public_key == ident.public_key_bytes
    assert verify_record(signed, other.record_signer)  # anyone can check it
    # The owner's key signing in another node's name: refused.
    forged = sign_record(record, other.node_id, ident.record_signer)
    assert not verify_record(forged, other.record_signer)
    # Rewritten after signing: refused.
    assert not verify_record(replace(signed, contact="sip:mallory@10.0.0.66"),
                             other.record_signer)
    # `remaining` is not signed (it shrinks on the way).
    assert verify_record(replace(signed, remaining=17), other.record_signer)


# ------------------------------------------------------------------------ open mode


def test_open_mode_certificate_is_self_signed_and_stable(tmp_path: Path) -> None:
    a = NodeIdentity.load(tmp_path)
    b = NodeIdentity.load(tmp_path)
    assert a.mode == "open" and a.ca_certificate is None
    assert a.certificate_der == b.certificate_der  # same bytes across restarts
    peer = verify_peer(a.certificate_der, None)
    assert peer.node_id == a.node_id and peer.public_key == a.public_key_bytes
    assert verify_peer(pem(a.certificate), None, now=1.7e9) == peer  # PEM, with a clock
    assert len(a.certificate_der) < 400


def test_open_mode_refuses_a_certificate_that_is_not_self_signed() -> None:
    ca = create_ca()
    node = NodeIdentity.generate(ca)
    with pytest.raises(IdentityError, match="not self-signed"):
        verify_peer(node.certificate_der, None)


def test_open_mode_still_binds_key_and_node_id() -> None:
    a, b = NodeIdentity.generate(), NodeIdentity.generate()
    with pytest.raises(IdentityError, match="not the claimed"):
        verify_peer(a.certificate_der, None, expected_node_id=b.node_id)
    # A self-signed certificate whose subject names another Node-ID than its key's.
    key = Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{b.node_id:032x}")])
    lying = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(dt.datetime(2000, 1, 1)).not_valid_after(dt.datetime(2100, 1, 1))
        .sign(key, None)
    )
    with pytest.raises(IdentityError, match="subject does not name"):
        verify_peer(lying.public_bytes(serialization.Encoding.DER), None)


def test_garbage_certificates() -> None:
    junks = [b"", b"\x30\x03\x02\x01\x01", b"-----BEGIN CERTIFICATE-----\nxx\n", os.urandom(300)]
    for junk in junks:
        with pytest.raises(IdentityError):
            verify_peer(junk, None)


def test_non_ed25519_certificate_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(dt.datetime(2000, 1, 1)).not_valid_after(dt.datetime(2100, 1, 1))
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(IdentityError, match="not Ed25519"):
        verify_peer(cert.public_bytes(serialization.Encoding.DER), None)


# -------------------------------------------------------------------------- CA mode


def test_ca_issued_certificate_accepted(tmp_path: Path) -> None:
    ca, ca_path = deploy(tmp_path)
    data = tmp_path / "data"
    # First start without a certificate: a clear error naming the Node-ID to certify.
    with pytest.raises(IdentityError, match="no node certificate") as info:
        NodeIdentity.load(data, ca_cert=ca_path)
    key = NodeIdentity.load(data)  # the key exists now
    assert key.node_id_hex in str(info.value)
    (data / "node.crt").write_bytes(pem(issue_node_certificate(ca, key.public_key_bytes)))
    ident = NodeIdentity.load(data, ca_cert=ca_path)
    assert ident.mode == "ca" and ident.node_id == key.node_id
    peer = verify_peer(ident.certificate_der, ca.certificate, now=dt.datetime.now().timestamp())
    assert peer.node_id == ident.node_id
    assert verify_peer(ident.certificate, ca.certificate).node_id == ident.node_id
    # DER node.crt works too.
    (data / "node.crt").write_bytes(ident.certificate_der)
    assert NodeIdentity.load(data, ca_cert=ca_path).node_id == ident.node_id


def test_foreign_ca_refused() -> None:
    ours, theirs = create_ca(), create_ca()
    stranger = NodeIdentity.generate(theirs)
    with pytest.raises(IdentityError, match="not issued by this overlay's CA"):
        verify_peer(stranger.certificate_der, ours.certificate)
    # Same CA name, other key: still refused (the signature is checked, not the name).
    twin = create_ca(name=ours.certificate.subject.get_attributes_for_oid(
        NameOID.COMMON_NAME)[0].value)
    with pytest.raises(IdentityError):
        verify_peer(NodeIdentity.generate(twin).certificate_der, ours.certificate)
    # And a self-signed (open-mode) certificate is refused in CA mode.
    with pytest.raises(IdentityError):
        verify_peer(NodeIdentity.generate().certificate_der, ours.certificate)


def test_ca_mode_key_and_node_id_must_match() -> None:
    ca = create_ca()
    a, b = NodeIdentity.generate(ca), NodeIdentity.generate(ca)
    with pytest.raises(IdentityError, match="not the claimed"):
        verify_peer(a.certificate_der, ca.certificate, expected_node_id=b.node_id)


def test_ca_certificate_itself_is_not_a_node() -> None:
    ca = create_ca()
    # A CA certificate signed by the CA whose subject names its own key's Node-ID.
    node_id = node_id_from_public_key(ca.private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{node_id:032x}")]))
        .issuer_name(ca.certificate.subject).public_key(ca.private_key.public_key())
        .serial_number(7)
        .not_valid_before(dt.datetime(2000, 1, 1)).not_valid_after(dt.datetime(2100, 1, 1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca.private_key, None)
    )
    with pytest.raises(IdentityError, match="is a CA certificate"):
        verify_peer(cert, ca.certificate)


def test_validity_period_checked_when_asked() -> None:
    ca = create_ca()
    issued = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    node = NodeIdentity.generate()
    cert = issue_node_certificate(ca, node.public_key_bytes, valid_days=10, now=issued)
    verify_peer(cert, ca.certificate)  # no clock: not checked
    verify_peer(cert, ca.certificate, now=issued.timestamp())
    with pytest.raises(IdentityError, match="validity"):
        verify_peer(cert, ca.certificate, now=(issued + dt.timedelta(days=11)).timestamp())
    with pytest.raises(IdentityError, match="validity"):
        verify_peer(cert, ca.certificate, now=(issued - dt.timedelta(days=2)).timestamp())


def test_ca_mode_load_errors(tmp_path: Path) -> None:
    ca, ca_path = deploy(tmp_path)
    other_ca = create_ca()
    data = tmp_path / "data"
    me = NodeIdentity.load(data)
    crt = data / "node.crt"
    # Certificate for another key.
    crt.write_bytes(pem(issue_node_certificate(ca, NodeIdentity.generate().public_key_bytes)))
    with pytest.raises(IdentityError, match="another key"):
        NodeIdentity.load(data, ca_cert=ca_path)
    # From another CA.
    crt.write_bytes(pem(issue_node_certificate(other_ca, me.public_key_bytes)))
    with pytest.raises(IdentityError, match="not issued by this overlay's CA"):
        NodeIdentity.load(data, ca_cert=ca_path)
    # Corrupt.
    crt.write_bytes(b"junk")
    with pytest.raises(IdentityError, match="not a valid X.509"):
        NodeIdentity.load(data, ca_cert=ca_path)
    # CA file missing, corrupt, or not a CA.
    crt.write_bytes(pem(issue_node_certificate(ca, me.public_key_bytes)))
    with pytest.raises(IdentityError, match="does not exist"):
        NodeIdentity.load(data, ca_cert=tmp_path / "nope.crt")
    bad = tmp_path / "bad.crt"
    bad.write_bytes(b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    with pytest.raises(IdentityError, match="not a valid X.509"):
        NodeIdentity.load(data, ca_cert=bad)
    bad.write_bytes(pem(me.certificate))
    with pytest.raises(IdentityError, match="not an Ed25519 CA"):
        NodeIdentity.load(data, ca_cert=bad)
    assert NodeIdentity.load(data, ca_cert=ca_path).mode == "ca"


def test_ca_save_and_load(tmp_path: Path) -> None:
    ca = create_ca(name="field exercise")
    ca.save(tmp_path / "ca")
    assert stat.S_IMODE((tmp_path / "ca" / "ca.key").stat().st_mode) == 0o600
    loaded = CertificateAuthority.load(tmp_path / "ca")
    assert loaded.certificate == ca.certificate
    node = NodeIdentity.generate(loaded)
    assert verify_peer(node.certificate_der, ca.certificate).node_id == node.node_id
    # Never overwrites an existing CA.
    create_ca().save(tmp_path / "ca")
    assert CertificateAuthority.load(tmp_path / "ca").certificate == ca.certificate
    (tmp_path / "ca" / "ca.key").write_bytes(b"broken")
    with pytest.raises(IdentityError):
        CertificateAuthority.load(tmp_path / "ca")


def test_identity_refuses_a_certificate_for_another_key() -> None:
    key = Ed25519PrivateKey.generate()
    with pytest.raises(IdentityError):
        NodeIdentity(key, self_signed_certificate(Ed25519PrivateKey.generate()))
    with pytest.raises(IdentityError):
        NodeIdentity(key, None, create_ca().certificate)  # CA mode without a certificate


def test_damaged_certificates_only_raise_identity_error(tmp_path: Path) -> None:
    """Every single-byte change of a certificate: refused cleanly, never a traceback."""
    ca, ca_path = deploy(tmp_path)
    data = tmp_path / "data"
    me = NodeIdentity.load(data)
    der = issue_node_certificate(ca, me.public_key_bytes).public_bytes(
        serialization.Encoding.DER)
    for i in range(len(der)):
        bad = bytearray(der)
        bad[i] ^= 0x01
        try:
            verify_peer(bytes(bad), ca.certificate, now=1.8e9)
        except IdentityError:
            pass
        (data / "node.crt").write_bytes(bytes(bad))
        try:
            NodeIdentity.load(data, ca_cert=ca_path)
        except IdentityError:
            pass
        (tmp_path / "bad-ca.crt").write_bytes(bytes(bad))
        with pytest.raises(IdentityError):
            NodeIdentity.load(data, ca_cert=tmp_path / "bad-ca.crt")
