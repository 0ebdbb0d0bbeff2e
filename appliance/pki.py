"""`meshsip ca`: the deployment CA on the operator's laptop.

    meshsip ca init DIR [--name NAME]           DIR/ca.key (0600) and DIR/ca.crt
    meshsip ca issue DIR --out NODEDIR [--name NAME]
                                                NODEDIR/node.key (kept if there), node.crt, ca.crt
    meshsip ca revoke DIR CERT                  DIR/revoked.crl, one CRL number higher

Exit 0 with a one-line summary; exit 1 with a plain message for anything the operator
must fix (never a traceback); exit 2 for a usage error.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from overlay.identity import (
    CA_CERT_FILE,
    CA_KEY_FILE,
    CERT_FILE,
    KEY_FILE,
    CertificateAuthority,
    IdentityError,
    NodeIdentity,
    certificate_name,
    create_ca,
    issue_node_certificate,
    load_certificate,
    load_or_create_key,
    node_id_from_public_key,
    node_id_hex,
    node_id_of_serial,
    raw_public_key,
    verify_peer,
)
from overlay.revocation import CRL_FILE, Crl, make_crl

DEFAULT_CA_NAME = "meshsip deployment CA"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meshsip ca",
                                     description="the deployment CA (keep DIR on the laptop)")
    sub = parser.add_subparsers(dest="action", required=True)
    init = sub.add_parser("init", help="make a deployment CA in DIR")
    init.add_argument("dir", type=Path, metavar="DIR")
    init.add_argument("--name", default=DEFAULT_CA_NAME, help="the CA's name (in status)")
    issue = sub.add_parser("issue", help="certify a box: write its data directory's files")
    issue.add_argument("dir", type=Path, metavar="DIR")
    issue.add_argument("--out", type=Path, required=True, metavar="NODEDIR",
                       help="the box's data directory (its node.key is kept if there)")
    issue.add_argument("--name", help="a human name for the box (shown in status)")
    revoke = sub.add_parser("revoke", help="revoke a box's certificate (DIR/revoked.crl)")
    revoke.add_argument("dir", type=Path, metavar="DIR")
    revoke.add_argument("cert", type=Path, metavar="CERT",
                        help="the box's node.crt (or its data directory)")
    return parser


def deployment_ca(config: Any) -> Path | None:
    """The CA certificate a node checks peers with: `[overlay] ca_cert`, else
    DATA_DIR/ca.crt when `meshsip ca issue` put one there; None: open mode."""
    if config.ca_cert is not None:
        return Path(config.ca_cert)
    default = Path(config.data_dir) / CA_CERT_FILE
    return default if default.exists() else None


def trust_summary(identity: NodeIdentity) -> str:
    """The node's mode in plain words (start log line, status)."""
    if identity.ca_certificate is None:
        return "open: any box on the link may join"
    return f"CA: only boxes certified by {certificate_name(identity.ca_certificate)!r} may join"


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    action = {"init": _init, "issue": _issue, "revoke": _revoke}[args.action]
    try:
        print(action(args))
    except IdentityError as exc:
        print(f"meshsip ca: {exc}", file=sys.stderr)
        return 1
    return 0


def _init(args: argparse.Namespace) -> str:
    directory: Path = args.dir
    for name in (CA_KEY_FILE, CA_CERT_FILE):
        if (directory / name).exists():
            raise IdentityError(f"{directory / name} exists: refusing to overwrite a CA")
    name = args.name.strip()
    if not name:
        raise IdentityError("the CA name must not be empty")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise IdentityError(f"cannot create {directory}: {exc.strerror or exc}") from None
    create_ca(name).save(directory)
    return (f"CA {name!r} made: {directory / CA_KEY_FILE} (secret: keep it on this laptop), "
            f"{directory / CA_CERT_FILE}")


def _issue(args: argparse.Namespace) -> str:
    ca = CertificateAuthority.load(args.dir)
    out: Path = args.out
    key = load_or_create_key(out / KEY_FILE)  # makes the directory and a key if none
    node_id = node_id_from_public_key(raw_public_key(key.public_key()))
    crl = _current_crl(args.dir, ca)
    if crl is not None and crl.revokes(node_id):
        raise IdentityError(f"box {node_id_hex(node_id)} ({out / KEY_FILE}) is revoked; "
                            "move its node.key away to give it a new key")
    cert = issue_node_certificate(ca, key.public_key(), name=args.name)
    NodeIdentity(key, cert, ca.certificate)  # the files make a working CA-mode node
    _replace(out / CERT_FILE, cert.public_bytes(serialization.Encoding.PEM))
    _replace(out / CA_CERT_FILE, ca.certificate.public_bytes(serialization.Encoding.PEM))
    named = f" ({args.name})" if args.name else ""
    return (f"box {node_id_hex(node_id)}{named} certified by {certificate_name(ca.certificate)!r}:"
            f" {out / KEY_FILE}, {out / CERT_FILE}, {out / CA_CERT_FILE}")


def _revoke(args: argparse.Namespace) -> str:
    ca = CertificateAuthority.load(args.dir)
    path: Path = args.cert / CERT_FILE if args.cert.is_dir() else args.cert
    try:
        cert = load_certificate(path.read_bytes(), f"certificate {path}")
    except OSError as exc:
        raise IdentityError(f"cannot read certificate {path}: {exc.strerror or exc}") from None
    if not _signed_by_ca(cert, ca):
        raise IdentityError(f"{path} was not issued by the CA in {args.dir}")
    node_id = node_id_of_serial(cert.serial_number)
    if node_id is None:  # boxes drop Node-IDs: a serial of another layout names none
        raise IdentityError(f"{path} does not name its box in its serial number (made by "
                            "another tool?): certify the box again with `meshsip ca issue`")
    who = f"box {node_id_hex(node_id)}"
    crl = _current_crl(args.dir, ca)
    serials = crl.serials if crl is not None else frozenset()
    if cert.serial_number in serials:
        return f"{who} is already revoked (CRL number {crl.number if crl else 0} unchanged)"
    number = (crl.number if crl is not None else 0) + 1
    new = make_crl(ca, serials | {cert.serial_number}, number)
    _replace(args.dir / CRL_FILE, new.public_bytes(serialization.Encoding.PEM))
    return (f"{who} revoked: {args.dir / CRL_FILE}, CRL number {number}, "
            f"{len(serials) + 1} revoked; give it to any one box (it spreads to the others)")


def _signed_by_ca(cert: x509.Certificate, ca: CertificateAuthority) -> bool:
    try:
        verify_peer(cert, ca.certificate)
    except IdentityError:
        return False
    return True


def _current_crl(directory: Path, ca: CertificateAuthority) -> Crl | None:
    path = directory / CRL_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise IdentityError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return Crl.verified(data, ca.certificate)
    except IdentityError as exc:
        raise IdentityError(f"{path}: {exc}") from None


def _replace(path: Path, data: bytes) -> None:
    """Write a public file (0644) atomically, replacing any old one."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise IdentityError(f"cannot write {path}: {exc.strerror or exc}") from None
