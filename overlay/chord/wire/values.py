"""Values on the overlay wire: header names, limits, node URIs, identifiers, base64url,
and `WireError`, the one exception the codec raises for a refused message.

Shared by every module of the codec (mapping, record bodies, signatures, certificates,
freshness); see docs/overlay-wire-format.md for what each value means on the wire.
"""

from __future__ import annotations

import base64
import re
from collections import OrderedDict
from typing import Any

from ...sip.uri import Uri, check_host, uri_host
from .. import messages as m

REASONS = (
    "malformed", "overlay", "unsigned", "certificate", "signature", "stale", "misdirected",
    "replay", "certificate_needed", "revoked",
)
SIG_HEADER = "DHT-Signature"
CERT_HEADER = "DHT-Certificate"
CERT_ID_HEADER = "DHT-Cert-Id"
NODEID_HEADER = "DHT-NodeID"
LINK_HEADER = "DHT-Link"
RECORDS_TYPE = "application/x-meshsip-records"
ALGORITHM = "sha256"  # the Node-ID hash (of the Ed25519 public key)
SIG_ALG = "ed25519"
CERT_NEEDED = 428  # Error code: "send that again with your certificate"
CERT_NEEDED_REASON = "Certificate Needed"
STALE = 403
STALE_REASON = "Stale Date"
MAX_MESSAGE = 1 << 20
MAX_TXN = 1 << 64
MAX_COUNT = 1 << 32
MAX_RECORD_INT = 1 << 64
ID_LIMIT = 1 << m.ID_BITS
HEX_ID = re.compile(r"[0-9a-fA-F]{1,32}\Z")
CALL_ID = re.compile(r"([0-9a-f]{1,16})@([0-9a-f]{32})\Z")
DIGITS = re.compile(r"[0-9]{1,20}\Z")
NONCE = re.compile(r"[0-9a-f]{16}\Z")
_B64 = re.compile(r"[A-Za-z0-9_-]*\Z")


class WireError(Exception):
    """A message refused by the codec. `reason` is one of REASONS.

    For `stale` (and `misdirected`, `replay`) the message was authentic: `message` holds
    what it said and `skew` how far (seconds) its time stamp was from now, so the node may
    answer it (e.g. 403 "Stale Date"). For `certificate_needed` the message could NOT be
    verified (we do not hold its signer's certificate): `message` holds what it claims,
    only to address an answer (see `WireCodec.refusal_answer`); None when it claims to be
    a request for another node or does not parse.
    """

    def __init__(
        self, reason: str, detail: str = "", message: m.Message | None = None,
        skew: float | None = None,
    ) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.message = message
        self.skew = skew


# Errors of parsing a message's text; the codec turns them into WireError("malformed").
PARSE_ERRORS: tuple[type[Exception], ...] = (ValueError, UnicodeError, IndexError, KeyError)


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64d(text: str) -> bytes:
    if not _B64.match(text) or len(text) % 4 == 1:
        raise ValueError("bad base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def check_id(value: int, what: str) -> int:
    if not isinstance(value, int) or not 0 <= value < ID_LIMIT:
        raise ValueError(f"{what} {value!r} is not a {m.ID_BITS}-bit identifier")
    return value


def check_count(value: int, what: str, limit: int = MAX_COUNT) -> int:
    if not isinstance(value, int) or not 0 <= value < limit:
        raise ValueError(f"{what} {value!r} out of range")
    return value


def _uri_host(host: str) -> str:
    host = uri_host(host)
    check_host(host, "node address")
    return host


def hostport(ref: m.NodeRef) -> str:
    return f"{_uri_host(ref.host)}:{ref.port}"


def node_uri(ref: m.NodeRef | tuple[str, int], **params: str | None) -> Uri:
    """`sip:<id>@<host>:<port>;user=node` (no user part for an (host, port) address)."""
    if isinstance(ref, m.NodeRef):
        user: str | None = f"{check_id(ref.id, 'Node-ID'):032x}"
        host, port = ref.host, ref.port
    else:
        user, (host, port) = None, ref
    check_count(port, "port", 65536)
    return Uri("sip", user, _uri_host(host), port, {"user": "node", **params})


def ref_from_uri(uri: Uri, what: str) -> m.NodeRef:
    if uri.scheme != "sip" or uri.params.get("user") != "node":
        raise ValueError(f"{what} is not a node URI")
    if uri.user is None or not HEX_ID.match(uri.user) or uri.port is None:
        raise ValueError(f"{what} lacks a Node-ID or port")
    host = uri.host[1:-1] if uri.host.startswith("[") else uri.host
    return m.NodeRef(int(uri.user, 16), host, uri.port)


def make_room(entries: OrderedDict[Any, Any], now: float, capacity: int, age: float) -> None:
    """Drop the oldest of `entries` (values with an `at`, oldest first) until the rest are
    at most `age` seconds old and there is room for one more under `capacity`."""
    while entries:
        oldest = next(iter(entries.values()))
        if oldest.at + age >= now and len(entries) < capacity:
            break
        entries.popitem(last=False)
