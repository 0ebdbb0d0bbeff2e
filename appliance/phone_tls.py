"""SIP over TLS for phones (RFC 3261 26): the certificate the TLS port serves, and the
TLS settings of the node's transport (phones' TLS and the box links of overlay/link_tls.py).

Phones get their own certificate, not the node's Ed25519 one: many phones' TLS stacks
(older mbedTLS, wolfSSL, OpenSSL 1.0 builds in desk phones) know no Ed25519 and would fail
the handshake. On first start the box makes an ECDSA P-256 key (`tls.key`, mode 0600) and
a self-signed certificate for it (`tls.crt`) in its data directory; an operator may put a
key and certificate of their own there instead (any type the phones accept, e.g. one
issued by a CA the phones trust), and the box uses them as they are. A phone must accept
the certificate: trust `tls.crt`, or not verify the server. Its validity runs from 1970 to
2049 so that neither a box nor a phone without a clock refuses it. TLS 1.2 is the least
phones get (many desk phones have no TLS 1.3); links between boxes are TLS 1.3 only.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from overlay.identity import NodeIdentity, write_new_file
from overlay.link_tls import link_contexts, peer_checker
from overlay.sip.tls import TlsSettings

KEY_FILE = "tls.key"
CERT_FILE = "tls.crt"
_NOT_BEFORE = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_NOT_AFTER = dt.datetime(2049, 12, 31, 23, 59, 59, tzinfo=dt.UTC)  # UTCTime's last year


class PhoneTlsError(Exception):
    """The TLS key or certificate cannot be used; the message is fit for an operator."""


def _self_signed(key: ec.EllipticCurvePrivateKey, node_id_hex: str) -> x509.Certificate:
    host = socket.gethostname().split(".")[0] or "meshsip"
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshsip"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"meshsip box {node_id_hex[:16]}"),
    ])
    return (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_NOT_BEFORE).not_valid_after(_NOT_AFTER)
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName(host), x509.DNSName(f"{host}.local")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


def phone_certificate(data_dir: Path, node_id_hex: str) -> tuple[Path, Path]:
    """(certificate, key) files of the TLS port, made on first start."""
    key_path, cert_path = data_dir / KEY_FILE, data_dir / CERT_FILE
    if key_path.exists() != cert_path.exists():
        have, lack = (key_path, cert_path) if key_path.exists() else (cert_path, key_path)
        raise PhoneTlsError(f"{have} exists but {lack} does not: put both, or neither "
                            "(the box then makes a self-signed pair)")
    if not key_path.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        try:
            if write_new_file(key_path, key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption()), 0o600):  # else another start made both
                write_new_file(cert_path, _self_signed(key, node_id_hex).public_bytes(
                    serialization.Encoding.PEM), 0o644)
        except OSError as exc:
            raise PhoneTlsError(f"cannot write {key_path}: {exc.strerror or exc}") from None
    return cert_path, key_path


def _phone_contexts(data_dir: Path, node_id_hex: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    cert, key = phone_certificate(data_dir, node_id_hex)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        server.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise PhoneTlsError(f"cannot use {cert} and {key} for TLS: {exc}") from None
    # Toward phones (requests to a phone on TLS with no connection open): phones' own
    # certificates are self-signed or absent, so they are not checked.
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.minimum_version = ssl.TLSVersion.TLSv1_2
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    return server, client


def tls_settings(identity: NodeIdentity, data_dir: Path, phones: bool) -> TlsSettings:
    """The transport's TLS: box links always, phones' TLS when `phones`."""
    link_server, link_client = link_contexts(identity)
    settings = TlsSettings(link_server=link_server, link_client=link_client,
                           check_link_peer=peer_checker(identity))
    if phones:
        settings.server, settings.client = _phone_contexts(data_dir, identity.node_id_hex)
    return settings
