"""Revocation: the deployment CA's certificate revocation list, and who it drops.

`meshsip ca revoke` writes `revoked.crl`, an X.509 CRL signed by the CA. It is
cumulative and carries a CRL number one higher than the last: which CRL is newer is
decided by that number, never by a clock (boxes have none). Nodes hold the highest-
numbered CRL they have seen that the CA signed, and spread it through the overlay.

A CRL names certificate serial numbers. Serials of CA-issued node certificates embed the
node's Node-ID (`identity.node_serial`), so a CRL names the boxes it drops: a node refuses any
message from a revoked Node-ID, whatever certificate it presents, and forgets what it
knows of it (ring entries, records it owns). Revoking a certificate therefore revokes the
box's key: a revoked box needs a new key (a new Node-ID) to be certified again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .identity import CertificateAuthority, IdentityError, node_id_of_serial

CRL_FILE = "revoked.crl"
MAX_CRL_BYTES = 48_000  # what a box accepts (a CRL entry is ~40 bytes: ~1,000 boxes)
# A CRL's dates are required by X.509 and read by nobody here (no clocks in the field).
_NEVER = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)


class CrlError(IdentityError):
    """A CRL that cannot be used (the message says why; `reason` counts it)."""


def make_crl(ca: CertificateAuthority, serials: Iterable[int], number: int,
             now: dt.datetime | None = None) -> x509.CertificateRevocationList:
    """A CRL by `ca` revoking `serials`, with CRL number `number`."""
    now = now or dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.certificate.subject)
        .last_update(now)
        .next_update(_NEVER)
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    for serial in sorted(set(serials)):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
        )
    return builder.sign(ca.private_key, None)


def _parse(data: bytes) -> x509.CertificateRevocationList:
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except Exception as exc:  # ValueError; other types in older versions
        raise CrlError("not a valid X.509 CRL", "crl_malformed") from exc


@dataclass(frozen=True)
class Crl:
    """A CRL checked against the deployment CA."""

    number: int
    serials: frozenset[int]
    der: bytes
    node_ids: frozenset[int] = field(init=False)

    def __post_init__(self) -> None:
        ids = (node_id_of_serial(s) for s in self.serials)
        object.__setattr__(self, "node_ids", frozenset(i for i in ids if i is not None))

    @classmethod
    def verified(cls, data: bytes, ca: x509.Certificate) -> Crl:
        """Parse `data` (PEM or DER) and check the CA signed it; CrlError otherwise
        (reason "crl_malformed" or "crl_foreign")."""
        if len(data) > MAX_CRL_BYTES:
            raise CrlError(f"CRL is larger than {MAX_CRL_BYTES} bytes", "crl_malformed")
        crl = _parse(data)
        try:
            key = ca.public_key()
            if crl.issuer != ca.subject or not isinstance(key, Ed25519PublicKey) \
                    or not crl.is_signature_valid(key):
                raise CrlError("CRL is not signed by this deployment's CA", "crl_foreign")
            number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
            serials = frozenset(r.serial_number for r in crl)
        except CrlError:
            raise
        except Exception as exc:  # lazily parsed: a damaged field shows when read
            raise CrlError("CRL is malformed or has no CRL number", "crl_malformed") from exc
        return cls(number, serials, crl.public_bytes(serialization.Encoding.DER))

    def revokes(self, node_id: int, serial: int | None = None) -> bool:
        return node_id in self.node_ids or (serial is not None and serial in self.serials)


class Revocations:
    """The highest-numbered CRL of the deployment CA this node holds.

    One per box, shared by every overlay service it runs (a new one per address change)
    and by the file watcher. Open mode (`ca` None) holds none. `on_adopted` is told each
    newer CRL (to drop the boxes it names and keep it on disk).
    """

    def __init__(self, ca: x509.Certificate | None) -> None:
        self.ca = ca
        self.crl: Crl | None = None
        self.counters = dict.fromkeys(
            ("crl_adopted", "crl_older", "crl_foreign", "crl_malformed"), 0)
        self.on_adopted: Callable[[Crl], None] | None = None
        self._refused: tuple[str, bytes] | None = None  # (reason, digest) of the last refused

    @property
    def number(self) -> int:
        """The CRL number held (0: none)."""
        return self.crl.number if self.crl is not None else 0

    def revokes(self, node_id: int) -> bool:
        return self.crl is not None and node_id in self.crl.node_ids

    def offer(self, data: bytes) -> Crl | None:
        """A CRL from the network: adopted if the CA signed it and it is newer; anything
        else is counted and dropped. Returns the CRL if adopted."""
        if self.ca is None:
            return None
        digest = hashlib.sha256(data).digest()
        if self._refused is not None and self._refused[1] == digest:
            self.counters[self._refused[0]] += 1  # the same bad list again: not re-checked
            return None
        try:
            crl = Crl.verified(data, self.ca)
        except CrlError as exc:
            self.counters[exc.reason] += 1
            self._refused = (exc.reason, digest)
            return None
        return crl if self.adopt(crl) else None

    def adopt(self, crl: Crl) -> bool:
        """Hold `crl` if its number is higher than the one held (the number decides)."""
        if crl.number <= self.number:
            self.counters["crl_older"] += 1
            return False
        self.crl = crl
        self.counters["crl_adopted"] += 1
        if self.on_adopted is not None:
            self.on_adopted(crl)
        return True
