"""TLS between boxes: the contexts a box's links use, made from its node identity.

Links are TLS 1.3 with the node's own Ed25519 key and certificate (identity.py). OpenSSL
3 on Debian 12 does Ed25519 in TLS 1.3; the phones' TLS (appliance/phone_tls.py) uses
another key because phones seldom do.
- **ca** mode: mutual. Both ends present their node certificate and check the other's
  against the deployment CA during the handshake, so a box the CA did not certify (or one
  of another deployment) cannot complete it. The validity period is not checked
  (X509_V_FLAG_NO_CHECK_TIME): a Pi without a clock may boot in 1970, and the wire codec
  does not check it either (`WireCodec.check_validity`).
- **open** mode: encryption, and the server's certificate checked as a self-signed Node-ID
  certificate; OpenSSL cannot check a self-signed client certificate without trusting it
  first, so the client sends none, and the messages' signatures are what count.
After the handshake `check_peer` gives the peer's Node-ID (the hash of its certificate's
key; None for an open-mode client): the overlay service refuses any message on the link
whose DHT-NodeID is another, so a certified box cannot speak for another.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Callable

from cryptography.hazmat.primitives import serialization

from .identity import IdentityError, NodeIdentity, verify_peer

NO_CHECK_TIME = 0x200000  # X509_V_FLAG_NO_CHECK_TIME (not named by Python's ssl)


def load_key_and_certificate(context: ssl.SSLContext, key_pem: bytes, cert_pem: bytes) -> None:
    """`context.load_cert_chain` from memory: it only reads files, so hand it a memfd
    (a private temporary file where there is no memfd)."""
    data = cert_pem + key_pem
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("meshsip-tls", os.MFD_CLOEXEC)
        try:
            os.write(fd, data)
            context.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory() as private:  # mode 0700
        path = os.path.join(private, "chain.pem")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
            f.write(data)
        context.load_cert_chain(path)


def _context(identity: NodeIdentity, server_side: bool) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False  # boxes are named by Node-ID, not host names
    key_pem = identity.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    load_key_and_certificate(context, key_pem,
                             identity.certificate.public_bytes(serialization.Encoding.PEM))
    ca = identity.ca_certificate
    if ca is None:
        context.verify_mode = ssl.CERT_NONE
        return context
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    flags = int(context.verify_flags) | NO_CHECK_TIME
    context.verify_flags = ssl.VerifyFlags(flags & ~int(ssl.VERIFY_X509_STRICT))
    return context


def link_contexts(identity: NodeIdentity) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts of this box's links."""
    return _context(identity, True), _context(identity, False)


def peer_checker(identity: NodeIdentity) -> Callable[[bytes | None, bool], int | None]:
    """check_peer(der, server_side) -> the peer's Node-ID (None: an open-mode client, which
    sends no certificate); raises IdentityError for a certificate that is not a node's."""
    ca = identity.ca_certificate

    def check(der: bytes | None, server_side: bool) -> int | None:
        if der is None:
            if ca is None and server_side:
                return None
            raise IdentityError("the TLS peer sent no certificate", "certificate")
        return verify_peer(der, ca).node_id

    return check
