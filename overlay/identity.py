"""Node identity: the Ed25519 key a node signs with, its certificate, and peer checks.

Files in the data directory:
- `node.key`: the node's Ed25519 private key (PKCS#8 PEM, mode 0600), made on first start
  and reused after. Its public key fixes the Node-ID: the first 128 bits of SHA-256 of the
  raw 32-byte public key, so a node cannot choose where it sits on the ring.
- `node.crt`: only with a deployment CA. The CA-issued certificate for that key (PEM or DER).
- `ca.crt`: the deployment CA's certificate; `meshsip ca issue` writes all three, and the
  node runs in CA mode when it is there (appliance/pki.py). Revocation: overlay/revocation.py.

Trust modes:
- **open** (no CA configured): a node's certificate is self-signed and made from its key
  on every start. It is deterministic (fixed serial, validity and Ed25519 signature), so a
  node presents the same bytes across restarts. Peers accept any self-signed certificate
  whose subject names the Node-ID its key hashes to: anyone may join, but nobody can speak
  for another node's Node-ID or forge what it signed.
- **ca**: the node loads its CA-issued certificate and the CA certificate; peers accept
  only certificates issued directly by that CA, for a non-CA Ed25519 key whose hash is
  the Node-ID named in the subject.

Every certificate carries the Node-ID (32 hex digits) as its subject Common Name.

Works with cryptography >= 38 (Debian 12 ships 38.0.4): no API newer than that is used.
Everything an operator can get wrong (unreadable, corrupt or foreign files) raises
IdentityError with a one-line message, never a bare traceback.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.x509.oid import NameOID

NODE_ID_BITS = 128
KEY_FILE = "node.key"
CERT_FILE = "node.crt"
CA_CERT_FILE = "ca.crt"
CA_KEY_FILE = "ca.key"
OPEN = "open"
CA = "ca"
_ORG = "meshsip"
# Self-signed certificates are deterministic: RFC 5280 4.1.2.5 "no well-defined expiration".
_SELF_NOT_BEFORE = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_SELF_NOT_AFTER = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)
# CA-issued serials: marker bit, Node-ID, random tag (see node_serial).
_TAG_BITS = 24
_MARK = 1 << (NODE_ID_BITS + _TAG_BITS)


class IdentityError(Exception):
    """A key or certificate that cannot be used; the message is fit for an operator."""

    def __init__(self, message: str, reason: str = "identity") -> None:
        super().__init__(message)
        self.reason = reason


def node_id_from_public_key(raw: bytes) -> int:
    """Node-ID of a raw 32-byte Ed25519 public key: first 128 bits of its SHA-256."""
    return int.from_bytes(hashlib.sha256(raw).digest()[: NODE_ID_BITS // 8], "big")


def node_serial(node_id: int) -> int:
    """The serial number of a CA-issued node certificate: a marker bit, the Node-ID and
    24 random bits (153 bits, within RFC 5280's 20 octets). A CRL listing it thereby
    names the box it drops (overlay/revocation.py)."""
    return _MARK | node_id << _TAG_BITS | secrets.randbits(_TAG_BITS)


def node_id_of_serial(serial: int) -> int | None:
    """The Node-ID a `node_serial` embeds; None for a serial of another layout."""
    if serial >> (NODE_ID_BITS + _TAG_BITS) != 1:
        return None
    return serial >> _TAG_BITS & ((1 << NODE_ID_BITS) - 1)


def node_id_hex(node_id: int) -> str:
    return f"{node_id:032x}"


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def verify(data: bytes, signature: bytes, public_key: bytes | Ed25519PublicKey) -> bool:
    """True if `signature` is a valid Ed25519 signature of `data` by `public_key`."""
    try:
        if isinstance(public_key, bytes | bytearray):
            public_key = Ed25519PublicKey.from_public_bytes(bytes(public_key))
        public_key.verify(signature, data)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """Who a verified certificate speaks for."""

    node_id: int
    public_key: bytes  # raw 32 bytes

    def verify(self, data: bytes, signature: bytes) -> bool:
        return verify(data, signature, self.public_key)


def _utc(cert: x509.Certificate, which: str) -> dt.datetime:
    aware = getattr(cert, f"{which}_utc", None)  # cryptography >= 42
    if aware is not None:
        return aware
    return getattr(cert, which).replace(tzinfo=dt.UTC)


def load_certificate(data: bytes, what: str = "certificate") -> x509.Certificate:
    """Parse a PEM or DER certificate."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except Exception as exc:  # ValueError; other types in older versions
        raise IdentityError(f"{what} is not a valid X.509 certificate", "certificate") from exc


def _common_name(cert: x509.Certificate) -> str | None:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1:
        return None
    value = names[0].value
    return value if isinstance(value, str) else None


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    key = issuer.public_key()
    if not isinstance(key, Ed25519PublicKey):
        return False
    try:
        key.verify(cert.signature, cert.tbs_certificate_bytes)
    except InvalidSignature:
        return False
    return True


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except Exception:  # not found, or damaged (lazily parsed: see verify_peer)
        return False


def verify_peer(
    cert: bytes | x509.Certificate,
    ca: x509.Certificate | None,
    now: float | None = None,
    expected_node_id: int | None = None,
) -> PeerIdentity:
    """Check a peer's certificate (DER, PEM or parsed) and return who it speaks for.

    With a CA: the certificate must be issued directly by `ca` and not be a CA itself.
    Open mode (`ca` None): it must be self-signed. In both modes the key must be Ed25519,
    the subject CN must be the Node-ID the key hashes to, and it must equal
    `expected_node_id` when given. `now` (Unix seconds) checks the validity period;
    None skips that check. Raises IdentityError (reason "certificate") otherwise.
    """
    if not isinstance(cert, x509.Certificate):
        cert = load_certificate(cert, "peer certificate")
    try:
        return _verify_peer(cert, ca, now, expected_node_id)
    except IdentityError:
        raise
    except Exception as exc:
        # Certificates are parsed lazily: a damaged field shows only when it is read, and
        # as whatever the installed version raises (ValueError; KeyError in 38.x).
        raise IdentityError("peer certificate is malformed", "certificate") from exc


def _verify_peer(
    cert: x509.Certificate,
    ca: x509.Certificate | None,
    now: float | None,
    expected_node_id: int | None,
) -> PeerIdentity:
    key = cert.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise IdentityError("peer certificate key is not Ed25519", "certificate")
    raw = raw_public_key(key)
    node_id = node_id_from_public_key(raw)
    if _common_name(cert) != node_id_hex(node_id):
        raise IdentityError(
            "peer certificate subject does not name the Node-ID of its key", "certificate"
        )
    if expected_node_id is not None and expected_node_id != node_id:
        raise IdentityError(
            f"certificate key is Node-ID {node_id_hex(node_id)}, "
            f"not the claimed {node_id_hex(expected_node_id)}",
            "certificate",
        )
    if ca is None:
        if not _signed_by(cert, cert):
            raise IdentityError("peer certificate is not self-signed (open mode)", "certificate")
    else:
        if not _signed_by(cert, ca):
            raise IdentityError("peer certificate is not issued by this overlay's CA",
                                "certificate")
        if _is_ca(cert):
            raise IdentityError("peer certificate is a CA certificate", "certificate")
    if now is not None:
        moment = dt.datetime.fromtimestamp(now, dt.UTC)
        if not _utc(cert, "not_valid_before") <= moment <= _utc(cert, "not_valid_after"):
            raise IdentityError("peer certificate is outside its validity period",
                                "certificate")
    return PeerIdentity(node_id, raw)


def _node_name(node_id: int, name: str | None = None) -> x509.Name:
    attributes = [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORG),
        x509.NameAttribute(NameOID.COMMON_NAME, node_id_hex(node_id)),
    ]
    if name:
        attributes.append(x509.NameAttribute(NameOID.PSEUDONYM, name))
    return x509.Name(attributes)


def certificate_name(cert: x509.Certificate) -> str | None:
    """The human name `meshsip ca issue --name` put in a node certificate (or a CA's CN)."""
    oid = NameOID.COMMON_NAME if _is_ca(cert) else NameOID.PSEUDONYM
    try:
        values = cert.subject.get_attributes_for_oid(oid)
    except Exception:  # lazily parsed: see verify_peer
        return None
    value = values[0].value if values else None
    return value if isinstance(value, str) else None


def _leaf_extensions(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    return builder.add_extension(
        x509.BasicConstraints(ca=False, path_length=None), critical=True
    ).add_extension(
        x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False,
            crl_sign=False, encipher_only=False, decipher_only=False,
        ),
        critical=True,
    )


def self_signed_certificate(key: Ed25519PrivateKey) -> x509.Certificate:
    """The open-mode certificate of `key`: the same bytes every time for one key."""
    node_id = node_id_from_public_key(raw_public_key(key.public_key()))
    name = _node_name(node_id)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(node_id | 1 << 128)  # positive, non-zero, unique per key
        .not_valid_before(_SELF_NOT_BEFORE)
        .not_valid_after(_SELF_NOT_AFTER)
    )
    return _leaf_extensions(builder).sign(key, None)


@dataclass(frozen=True)
class CertificateAuthority:
    """A deployment CA: its certificate and private key (for `meshsip ca` and tests)."""

    certificate: x509.Certificate
    private_key: Ed25519PrivateKey

    def save(self, directory: Path) -> None:
        """Write ca.crt (0644) and ca.key (0600) into `directory`; never overwrites."""
        directory.mkdir(parents=True, exist_ok=True)
        key_pem = self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_new_file(directory / CA_KEY_FILE, key_pem, 0o600)
        write_new_file(directory / CA_CERT_FILE,
                   self.certificate.public_bytes(serialization.Encoding.PEM), 0o644)

    @classmethod
    def load(cls, directory: Path) -> CertificateAuthority:
        certificate = load_certificate(_read(directory / CA_CERT_FILE, "CA certificate"),
                                       f"CA certificate {directory / CA_CERT_FILE}")
        key = _load_private_key(directory / CA_KEY_FILE, "CA key")
        if raw_public_key(key.public_key()) != _raw_of(certificate):
            raise IdentityError(f"{directory / CA_KEY_FILE} does not match "
                                f"{directory / CA_CERT_FILE}")
        return cls(certificate, key)


def create_ca(
    name: str = "meshsip deployment CA",
    valid_days: int = 20 * 365,
    now: dt.datetime | None = None,
    key: Ed25519PrivateKey | None = None,
) -> CertificateAuthority:
    """Make a new Ed25519 CA (self-signed, path length 0)."""
    key = key or Ed25519PrivateKey.generate()
    now = now or dt.datetime.now(dt.UTC)
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORG),
        x509.NameAttribute(NameOID.COMMON_NAME, name),
    ])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, None)
    )
    return CertificateAuthority(cert, key)


def issue_node_certificate(
    ca: CertificateAuthority,
    node_public_key: bytes | Ed25519PublicKey,
    valid_days: int = 10 * 365,
    now: dt.datetime | None = None,
    name: str | None = None,
) -> x509.Certificate:
    """A CA-issued certificate for a node's key (raw 32 bytes or key object).

    The subject CN is the Node-ID the key hashes to: the CA decides nothing about where
    the node sits, it only vouches that the key belongs to the deployment. `name` (a
    human name for status pages) goes in the subject as a pseudonym.
    """
    if isinstance(node_public_key, bytes | bytearray):
        try:
            node_public_key = Ed25519PublicKey.from_public_bytes(bytes(node_public_key))
        except ValueError as exc:
            raise IdentityError("node public key is not a raw Ed25519 key") from exc
    now = now or dt.datetime.now(dt.UTC)
    node_id = node_id_from_public_key(raw_public_key(node_public_key))
    builder = (
        x509.CertificateBuilder()
        .subject_name(_node_name(node_id, name))
        .issuer_name(ca.certificate.subject)
        .public_key(node_public_key)
        .serial_number(node_serial(node_id))
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=valid_days))
    )
    return _leaf_extensions(builder).sign(ca.private_key, None)


def _raw_of(cert: x509.Certificate) -> bytes | None:
    """The raw Ed25519 key of a certificate; None for other or damaged keys."""
    try:
        key = cert.public_key()
    except Exception:  # lazily parsed: see verify_peer
        return None
    return raw_public_key(key) if isinstance(key, Ed25519PublicKey) else None


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise IdentityError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise IdentityError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def _load_private_key(path: Path, what: str) -> Ed25519PrivateKey:
    data = _read(path, what)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise IdentityError(
            f"{what} {path} is corrupt or not an unencrypted PEM private key; move it "
            "away to make a new one (a new node key means a new Node-ID)"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise IdentityError(f"{what} {path} is not an Ed25519 key")
    return key


def write_new_file(path: Path, data: bytes, mode: int) -> bool:
    """Write `data` to a new file atomically, with `mode` whatever the umask; False if
    `path` already exists (it is never replaced)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)  # whatever the umask
        try:
            os.link(tmp, path)  # never replaces a file another process made meanwhile
        except FileExistsError:
            return False
        except OSError:
            if path.exists():
                return False
            os.replace(tmp, path)  # file systems without hard links
        try:
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError:
            pass
        return True
    except OSError as exc:
        raise IdentityError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The node key at `path`, made (mode 0600) if there is none yet."""
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise IdentityError(
                f"cannot create data directory {path.parent}: {exc.strerror or exc}"
            ) from None
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        if write_new_file(path, pem, 0o600):
            return key
        # Another process made one first: use that.
    key = _load_private_key(path, "node key")
    try:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
    except OSError:
        pass
    return key


class NodeIdentity:
    """This node's key pair and certificate, and the trust anchor it checks peers with."""

    def __init__(
        self,
        private_key: Ed25519PrivateKey,
        certificate: x509.Certificate | None = None,
        ca_certificate: x509.Certificate | None = None,
        what: str = "node certificate",  # how errors name the certificate (its file)
    ) -> None:
        self.private_key = private_key
        self.public_key_bytes: bytes = raw_public_key(private_key.public_key())
        self.node_id: int = node_id_from_public_key(self.public_key_bytes)
        self.ca_certificate = ca_certificate
        if certificate is None:
            if ca_certificate is not None:
                raise IdentityError("a CA-mode identity needs its CA-issued certificate")
            certificate = self_signed_certificate(private_key)
        if _raw_of(certificate) != self.public_key_bytes:
            raise IdentityError(
                f"{what} is for another key, not this node's "
                f"(Node-ID {node_id_hex(self.node_id)})"
            )
        try:
            verify_peer(certificate, ca_certificate)
        except IdentityError as exc:
            raise IdentityError(f"{what}: {exc}") from None
        self.certificate = certificate
        self.certificate_der: bytes = certificate.public_bytes(serialization.Encoding.DER)

    @property
    def mode(self) -> str:
        """"ca" with a deployment CA, "open" without (for the status page)."""
        return OPEN if self.ca_certificate is None else CA

    @property
    def node_id_hex(self) -> str:
        return node_id_hex(self.node_id)

    @property
    def peer(self) -> PeerIdentity:
        return PeerIdentity(self.node_id, self.public_key_bytes)

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data)

    @property
    def record_signer(self) -> Ed25519RecordSigner:
        """This node's `RecordSigner` for `overlay.chord.records`."""
        return Ed25519RecordSigner(self)

    @classmethod
    def generate(cls, ca: CertificateAuthority | None = None) -> NodeIdentity:
        """A fresh in-memory identity (tests, simulator), CA-issued if `ca` is given."""
        key = Ed25519PrivateKey.generate()
        if ca is None:
            return cls(key)
        return cls(key, issue_node_certificate(ca, key.public_key()), ca.certificate)

    @classmethod
    def load(
        cls,
        data_dir: Path,
        ca_cert: Path | None = None,
        node_cert: Path | None = None,
    ) -> NodeIdentity:
        """The node's identity from `data_dir` (key made on first start).

        `ca_cert` (the deployment CA certificate) switches to CA mode; the node's own
        certificate is then read from `node_cert` (default `data_dir/node.crt`).
        """
        key = load_or_create_key(data_dir / KEY_FILE)
        if ca_cert is None:
            return cls(key)
        ca = load_certificate(_read(ca_cert, "CA certificate"), f"CA certificate {ca_cert}")
        if not _is_ca(ca) or _raw_of(ca) is None:
            raise IdentityError(f"{ca_cert} is not an Ed25519 CA certificate")
        node_cert = node_cert or data_dir / CERT_FILE
        node_id = node_id_hex(node_id_from_public_key(raw_public_key(key.public_key())))
        try:
            data = node_cert.read_bytes()
        except FileNotFoundError:
            raise IdentityError(
                f"CA mode: no node certificate at {node_cert}; have the CA issue one for "
                f"this node (Node-ID {node_id}, key in {data_dir / KEY_FILE})"
            ) from None
        except OSError as exc:
            raise IdentityError(
                f"cannot read node certificate {node_cert}: {exc.strerror or exc}"
            ) from None
        cert = load_certificate(data, f"node certificate {node_cert}")
        return cls(key, cert, ca, what=f"node certificate {node_cert}")


class Ed25519RecordSigner:
    """The record signer (`overlay.chord.records.RecordSigner`) of a real node.

    `verify` checks the signature and that `owner` is the Node-ID `public_key` hashes to,
    so a node cannot sign records in another node's name with its own key.
    """

    def __init__(self, identity: NodeIdentity) -> None:
        self._identity = identity

    @property
    def public_key(self) -> bytes:
        return self._identity.public_key_bytes

    def sign(self, data: bytes) -> bytes:
        return self._identity.sign(data)

    def verify(self, data: bytes, signature: bytes, owner: int, public_key: bytes) -> bool:
        if len(public_key) != 32 or node_id_from_public_key(public_key) != owner:
            return False
        return verify(data, signature, public_key)
