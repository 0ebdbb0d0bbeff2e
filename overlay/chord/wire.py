"""The overlay wire codec: abstract Chord messages <-> signed SIP (SOSIMPLE) messages.

Overlay messages are real SIP (draft-bryan-sipping-p2p, "SOSIMPLE"): `parse_message` parses
them and sngrep / Wireshark show them as SIP. `WireCodec.encode` turns a message of
`overlay.chord.messages` into bytes; `WireCodec.decode` turns bytes back into a message
after checking its signature, certificate, time stamp, nonce, overlay and destination.
Anything malformed, forged, replayed, stale, foreign or misdirected raises one exception
type, `WireError(reason)`, and is counted in `WireCodec.counters[reason]`.

Sans-IO: the current time (`now`, Unix seconds) is passed in; there is no clock inside.

## Mapping

Every node is named by a node URI, `sip:<Node-ID, 32 hex>@<host>:<port>;user=node`
(IPv6 hosts in brackets). A request goes to the next hop's node URI with the overlay
name as a parameter; its `To` URI names the operation (`op`) and its arguments:

    REGISTER sip:<dst id>@<dst host>:<port>;user=node;overlay=<name> SIP/2.0
    Via: SIP/2.0/UDP <src host>:<port>;branch=z9hG4bK-<src id, 16 hex>-<txn hex>
    Max-Forwards: 70
    From: <sip:<src id>@<src host>:<port>;user=node>;tag=<txn hex>
    To: <sip:<dst id>@<dst host>:<port>;user=node;op=find;resource-id=<key>;hops=2;recursive>
    Call-ID: <txn hex>@<src id>
    CSeq: <txn mod 2^31> REGISTER
    DHT-NodeID: <sip:<src id>@<src host>:<port>;user=node>;algorithm=sha256;overlay=<name>
    DHT-Link: <sip:<origin id>@<host>:<port>;user=node>;link=O
    DHT-Cert-Id: <sender's certificate id>;peer=<the receiver's certificate id>
    DHT-Certificate: <sender's X.509 certificate, DER, base64url> (first contact only)
    DHT-Signature: alg=ed25519;ts=<Unix ms>;nonce=<16 hex>;sig=<base64url>

When the next hop's Node-ID is not known yet (bootstrap from an address), the node
URIs of the Request-URI and To have no user part.

| message | SIP | carries |
| --- | --- | --- |
| Ping | OPTIONS, op=ping | |
| GetNeighbors | REGISTER, op=neighbors, no Contact (a binding query) | |
| Notify | REGISTER, op=notify | Contact: the sender's node URI |
| FindSuccessor | REGISTER, op=find | resource-id=key, hops, `recursive` flag, DHT-Link O (origin) |
| Store | REGISTER, op=store | `replica` flag; body: records |
| Transfer | REGISTER, op=transfer | body: records |
| Fetch | REGISTER, op=fetch | resource-id |
| Leave | REGISTER, op=leave | Contact: sender;expires=0, DHT-Link P and S1..Sn |
| Learn | REGISTER, op=learn | Contact: the candidate, hops |
| Pong | 200 to OPTIONS | |
| Ack | 200 (op notify / leave / learn) | |
| Neighbors | 200 (op neighbors) | DHT-Link P and S1..Sn |
| Found | 200 (op find) | resource-id=key, hops, DHT-Link S1..Sn |
| Redirect | 302 (op find) | resource-id=key, hops, Contact: closer nodes, best first |
| Stored | 200 (op store / transfer) | accepted, rejected |
| Records | 200 (op fetch) | resource-id; body: records |
| Error | its code (300-699 but 302) and reason | |

A response copies Via, From, Call-ID and CSeq of the request it answers (the codec keeps
what it needs of each decoded request for a while, keyed by requester and txn; without it
they are rebuilt, identically for requests this codec made). Its To keeps the request's
To URI but carries the response's own op and arguments, plus a To tag, and the response
type is read from the status and that op. `src` of any message is its DHT-NodeID (the
hop that signed it); `txn` is the Call-ID's first part.

Where this differs from the draft: Node-IDs are 128 bits of SHA-256 of the node's
Ed25519 key (the draft hashes an address with SHA-1); `resource-id` is written in lower
case, as our parser stores parameter names (SIP parameter names are case-insensitive);
the operation is named by an `op` To-URI parameter rather than inferred; the link type
O (lookup origin) is new; lookups, neighbour queries and records use REGISTER as the
draft does, pings OPTIONS.

Record bodies (`Content-Type: application/x-meshsip-records`) hold one line per record:
`<resource-id hex> <owner hex> <sequence> <lifetime> <remaining> <aor> <contact>
<public key> <signature>`, the AOR and contact %-escaped, key and signature base64url.
Each record is signed by its owner (`overlay.chord.records.signing_bytes`); the codec
carries it unchanged and the receiving node checks it with its `RecordSigner`, whoever
relayed it.

## Signature

`DHT-Signature` covers, as a sequence of netstrings (`<length>:<bytes>,`):
`meshsip-dht-sig/1`, alg, ts, nonce; then for a request `REQ`, the method and the
Request-URI as the parser serialises it, for a response `RES`, the status code and the
reason phrase; then every header except the hop-by-hop ones (Via, Max-Forwards, Route,
Record-Route, Content-Length) and DHT-Signature itself, as (lower-case name, value)
pairs, stably sorted by name (so values of one header keep their order); then the body.
So the certificate, DHT-NodeID, DHT-Link, From, To (op and arguments), Call-ID, CSeq,
Contact, Content-Type and body are all covered, and headers a hop may change are not.

A receiver accepts a message only if: it parses as SIP and as an overlay message
(`malformed`); it names this overlay (`overlay`); it is signed (`unsigned`); its
certificate (carried, or held from an earlier message: see below; `certificate_needed`
when neither) is acceptable: issued by the deployment CA (or self-signed in open mode)
for the key that hashes to the DHT-NodeID (`certificate`); the signature verifies
(`signature`); its time stamp is within `window` seconds of now (`stale`); it is
addressed to this node: a Request-URI user part naming another Node-ID, or a response to
another node's request (`misdirected`); and its (sender, nonce) was not seen within the
window (`replay`). Only fully verified messages enter the replay cache. Identical bytes
sent twice are a replay: a retransmission must be encoded afresh.

## Certificates: on first contact only

A certificate is about 490 bytes (650 in base64): more than the rest of a typical
message. So it travels only until the receiver has it. Every message carries
`DHT-Cert-Id: <id>` (the sender's certificate id: base64url of the first 12 bytes of the
SHA-256 of its DER) and, when the sender holds the receiver's certificate, `;peer=<id>`
naming it. Both are signed. The sender includes `DHT-Certificate` unless the receiver
has told it, in an authentic message, that it holds the sender's current certificate
(`peer=` equal to the sender's id); the receiver's next message without that `peer=`
(it restarted, or dropped the certificate from its bounded cache) makes the sender
include it again. Peers that know nothing of `DHT-Cert-Id` never send `peer=`, so they
always get the certificate.

A receiver checks a message that has no certificate against the certificate it holds
for the DHT-NodeID (verified earlier, when it came with a message whose signature
verified): it must be the one `DHT-Cert-Id` names, and the signature must verify with
its key. A message whose signer's certificate is unknown is never accepted: it is
refused with the reason `certificate_needed` (no `DHT-Cert-Id` either: `certificate`).
For a request, `WireError.message` then holds what the message claims (NOT authentic:
only good to address an answer) and `WireCodec.refusal_answer` makes the answer, an
Error 428 "Certificate Needed" (rate-limited, as it answers an unverified message, and
sent to the address the message came from, not to the one it claims). The requester's
codec sees that answer without `peer=`, so the requester's node only has to send the
request again (ChordNode does so, once per request) for it to go with the certificate.
A response that cannot be verified cannot be answered; but the requester's
retransmission lacks `peer=` (it does not hold the answerer's certificate), so the next
answer carries the certificate. Unless an unverifiable message claims to hold ours, the
receiver also stops leaving its own certificate out of what it sends that node (this
costs only bytes, so an unverified claim may decide it). Finally, a peer that was sent
a request without the certificate and has not been heard from for
`certificate_again_after` seconds (0.4: less than a node's retransmission timeout) gets
it with the next message: a retransmission carries it even when the 428 was lost,
rate-limited or never sent (a peer whose service does not answer with one).
A certificate whose bytes do not hash to the `DHT-Cert-Id` beside it is refused
(`certificate`), as is a `DHT-Cert-Id` naming a certificate of another Node-ID. The
certificate cache (`certificate_cache` entries, least recently used first out) and the
list of peers known to hold ours are bounded.

## Clocks

Boxes have no RTC and no common clock. With `follow_clock` (the default) the codec
keeps an offset added to `now` and moves it forward, never back, to the time stamp of any
authentic message that is ahead by more than the window; that message itself is still
refused as stale and its nonce remembered (so a replayed old message can advance the
clock but is not accepted itself), and the sender's next message is accepted. Clocks
thereby converge on the fastest box's. As with any replay window, a node accepts a
replayed message that is at most `window` older than the newest time it has seen and
whose nonce it has not seen (e.g. after a restart emptied its cache).
A box whose clock is behind is refused until it hears from one that is ahead: a node
that answers a `stale` WireError whose `message` is a request (authentic, only late)
with an Error (403 "Stale Date") lets the sender catch up at once. A stale message
that does not name our certificate in `peer=` makes that answer carry it: a box that
restarted with its clock behind has lost the certificates of its old neighbours, and
could otherwise check neither their messages nor the 403. (Never answer a
stale response: two nodes would bounce errors.)
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from ..identity import IdentityError, NodeIdentity, PeerIdentity, verify_peer
from ..names import check_overlay_name
from ..sip.errors import SipParseError
from ..sip.message import Request, Response, parse_message
from ..sip.uri import NameAddr, Uri, check_host, parse_name_addr, parse_params, uri_host
from . import messages as m

REASONS = (
    "malformed", "overlay", "unsigned", "certificate", "signature", "stale", "misdirected",
    "replay", "certificate_needed",
)
SIG_HEADER = "DHT-Signature"
CERT_HEADER = "DHT-Certificate"
CERT_ID_HEADER = "DHT-Cert-Id"
CERT_NEEDED = 428  # Error code: "send that again with your certificate"
CERT_NEEDED_REASON = "Certificate Needed"
STALE = 403
STALE_REASON = "Stale Date"
NODEID_HEADER = "DHT-NodeID"
LINK_HEADER = "DHT-Link"
RECORDS_TYPE = "application/x-meshsip-records"
ALGORITHM = "sha256"  # the Node-ID hash (of the Ed25519 public key)
SIG_ALG = "ed25519"
# Not covered by the signature: headers a hop may add, remove or change.
UNSIGNED = frozenset({
    "via", "max-forwards", "route", "record-route", "content-length", SIG_HEADER.lower(),
})
MAX_MESSAGE = 1 << 20
MAX_TXN = 1 << 64
MAX_COUNT = 1 << 32
MAX_RECORD_INT = 1 << 64
_ID_LIMIT = 1 << m.ID_BITS
_HEX_ID = re.compile(r"[0-9a-fA-F]{1,32}\Z")
_CALL_ID = re.compile(r"([0-9a-f]{1,16})@([0-9a-f]{32})\Z")
_DIGITS = re.compile(r"[0-9]{1,20}\Z")
_B64 = re.compile(r"[A-Za-z0-9_-]*\Z")
_NONCE = re.compile(r"[0-9a-f]{16}\Z")
_CERT_ID = re.compile(r"[A-Za-z0-9_-]{16,64}\Z")
_LINK_S = re.compile(r"S([1-9][0-9]{0,3})\Z")
_REC_SAFE = "!$&'()*+,/:;=?@"  # printable ASCII left unescaped in record fields, but ' ' and %

# op names in To URIs, per request type.
_REQUEST_OPS: dict[type, str] = {
    m.Ping: "ping", m.GetNeighbors: "neighbors", m.Notify: "notify", m.FindSuccessor: "find",
    m.Store: "store", m.Transfer: "transfer", m.Fetch: "fetch", m.Leave: "leave",
    m.Learn: "learn",
}
# Ops a response type may answer; the first is used when no request is remembered.
_RESPONSE_OPS: dict[type, tuple[str, ...]] = {
    m.Pong: ("ping",), m.Ack: ("notify", "leave", "learn"), m.Neighbors: ("neighbors",),
    m.Found: ("find",), m.Redirect: ("find",), m.Stored: ("store", "transfer"),
    m.Records: ("fetch",), m.Error: (),
}
_OK_TYPES = {
    "ping": m.Pong, "neighbors": m.Neighbors, "notify": m.Ack, "leave": m.Ack, "learn": m.Ack,
    "find": m.Found, "store": m.Stored, "transfer": m.Stored, "fetch": m.Records,
}
_OPS = frozenset(_OK_TYPES)


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


@dataclass(slots=True)
class _Cert:
    """A peer certificate whose key has verified a message: its id, bytes and key."""

    cert_id: str
    der: bytes
    peer: PeerIdentity


@dataclass(slots=True)
class _Remembered:
    """What a response needs from the request it answers."""

    at: float
    op: str
    vias: list[str]
    from_: str
    to_uri: Uri
    call_id: str
    cseq: str


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    if not _B64.match(text) or len(text) % 4 == 1:
        raise ValueError("bad base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def certificate_id(der: bytes) -> str:
    """The `DHT-Cert-Id` of a certificate: base64url of the first 12 bytes of SHA-256(DER)."""
    return _b64e(hashlib.sha256(der).digest()[:12])


def _parse_cert_id(value: str) -> tuple[str, str | None]:
    """`<id>[;peer=<id>]` -> (id, peer id or None)."""
    own, sep, rest = value.partition(";")
    own = own.strip()
    params = parse_params(rest, CERT_ID_HEADER) if sep else {}
    peer = params.get("peer")
    if not _CERT_ID.match(own) or (peer is not None and not _CERT_ID.match(peer)):
        raise ValueError(f"bad {CERT_ID_HEADER}")
    return own, peer


def _netstrings(parts: list[bytes]) -> bytes:
    return b"".join(b"%d:%s," % (len(p), p) for p in parts)


def signing_input(msg: Request | Response, alg: str, ts: str, nonce: str) -> bytes:
    """The bytes DHT-Signature signs (see the module docstring)."""
    parts = [b"meshsip-dht-sig/1", alg.encode(), ts.encode(), nonce.encode()]
    if isinstance(msg, Request):
        parts += [b"REQ", msg.method.encode(), str(msg.uri).encode("utf-8", "surrogateescape")]
    else:
        parts += [b"RES", str(msg.status).encode(), msg.reason.encode("utf-8", "surrogateescape")]
    signed = sorted(
        ((n.lower(), v) for n, v in msg.headers if n.lower() not in UNSIGNED),
        key=lambda h: h[0],
    )
    for name, value in signed:
        parts += [name.encode(), value.encode("utf-8", "surrogateescape")]
    parts.append(msg.body)
    return _netstrings(parts)


# ---------------------------------------------------------------- node URIs and values


def _uri_host(host: str) -> str:
    host = uri_host(host)
    check_host(host, "node address")
    return host


def _check_id(value: int, what: str) -> int:
    if not isinstance(value, int) or not 0 <= value < _ID_LIMIT:
        raise ValueError(f"{what} {value!r} is not a {m.ID_BITS}-bit identifier")
    return value


def _check_count(value: int, what: str, limit: int = MAX_COUNT) -> int:
    if not isinstance(value, int) or not 0 <= value < limit:
        raise ValueError(f"{what} {value!r} out of range")
    return value


def node_uri(ref: m.NodeRef | tuple[str, int], **params: str | None) -> Uri:
    """`sip:<id>@<host>:<port>;user=node` (no user part for an (host, port) address)."""
    if isinstance(ref, m.NodeRef):
        user: str | None = f"{_check_id(ref.id, 'Node-ID'):032x}"
        host, port = ref.host, ref.port
    else:
        user, (host, port) = None, ref
    _check_count(port, "port", 65536)
    return Uri("sip", user, _uri_host(host), port, {"user": "node", **params})


def _ref_from_uri(uri: Uri, what: str) -> m.NodeRef:
    if uri.scheme != "sip" or uri.params.get("user") != "node":
        raise ValueError(f"{what} is not a node URI")
    if uri.user is None or not _HEX_ID.match(uri.user) or uri.port is None:
        raise ValueError(f"{what} lacks a Node-ID or port")
    host = uri.host[1:-1] if uri.host.startswith("[") else uri.host
    return m.NodeRef(int(uri.user, 16), host, uri.port)


def _link(ref: m.NodeRef, link: str) -> str:
    return f"<{node_uri(ref)}>;link={link}"


def _int_param(params: dict[str, str | None], name: str, limit: int = MAX_COUNT) -> int:
    value = params.get(name)
    if value is None:
        return 0
    if not _DIGITS.match(value) or int(value) >= limit:
        raise ValueError(f"bad {name}")
    return int(value)


def _key_param(params: dict[str, str | None]) -> int:
    value = params.get("resource-id")
    if value is None or not _HEX_ID.match(value):
        raise ValueError("missing or bad resource-id")
    return int(value, 16)


# ---------------------------------------------------------------------- record bodies


def _q(text: str) -> str:
    return quote(text, safe=_REC_SAFE, encoding="utf-8", errors="surrogatepass")


def encode_records(records: tuple[m.Record, ...]) -> bytes:
    lines = []
    for r in records:
        _check_id(r.resource_id, "resource_id")
        _check_id(r.owner, "owner")
        for name in ("sequence", "lifetime", "remaining"):
            _check_count(getattr(r, name), name, MAX_RECORD_INT)
        lines.append(
            f"{r.resource_id:032x} {r.owner:032x} {r.sequence} {r.lifetime} {r.remaining} "
            f"{_q(r.aor)} {_q(r.contact)} {_b64e(r.public_key)} {_b64e(r.signature)}\n"
        )
    return "".join(lines).encode("ascii")


def decode_records(body: bytes) -> tuple[m.Record, ...]:
    text = body.decode("ascii")
    if not text:
        return ()
    if not text.endswith("\n"):
        raise ValueError("record body does not end with a line end")
    out = []
    for line in text[:-1].split("\n"):
        f = line.split(" ")
        if len(f) != 9 or not (_HEX_ID.match(f[0]) and _HEX_ID.match(f[1])):
            raise ValueError("bad record line")
        if not all(_DIGITS.match(x) and int(x) < MAX_RECORD_INT for x in f[2:5]):
            raise ValueError("bad record number")
        out.append(m.Record(
            resource_id=int(f[0], 16), owner=int(f[1], 16), sequence=int(f[2]),
            lifetime=int(f[3]), remaining=int(f[4]),
            aor=unquote(f[5], encoding="utf-8", errors="strict"),
            contact=unquote(f[6], encoding="utf-8", errors="strict"),
            public_key=_b64d(f[7]), signature=_b64d(f[8]),
        ))
    return tuple(out)


# ------------------------------------------------------------------------------ codec


class WireCodec:
    """Encoder and verifying decoder of one node's overlay messages.

    `identity` signs what this node sends and, through its CA certificate (None: open
    mode), decides which peers are acceptable. `window` (seconds) bounds time-stamp skew
    and how long nonces are remembered; `replay_capacity` bounds the nonce cache (when
    it is full the oldest entries go and `counters["replay_cache_full"]` counts them).
    `check_validity` also checks certificates' validity periods against the (followed)
    clock: off by default, since boxes without an RTC may start with any date.
    `certificate_cache` bounds the peer certificates kept (and the peers remembered to
    hold ours); `answer_rate` bounds the 428 answers to unverifiable requests per second;
    `certificate_again_after` (seconds): a peer silent that long since a message we sent it
    without our certificate gets the certificate with the next one (a retransmission).
    """

    def __init__(
        self,
        identity: NodeIdentity,
        overlay: str,
        *,
        window: float = 60.0,
        replay_capacity: int = 16384,
        follow_clock: bool = True,
        check_validity: bool = False,
        remember: int = 2048,
        remember_for: float = 64.0,
        certificate_cache: int = 1024,
        answer_rate: float = 20.0,
        certificate_again_after: float = 0.4,
    ) -> None:
        check_overlay_name(overlay)
        self.identity = identity
        self.overlay = overlay
        self.ca = identity.ca_certificate
        self.window_ms = int(window * 1000)
        self.replay_capacity = replay_capacity
        self.follow_clock = follow_clock
        self.check_validity = check_validity
        self.remember_capacity = remember
        self.remember_for = remember_for
        self.certificate_cache_size = certificate_cache
        self.clock_offset = 0.0  # seconds added to `now` (see "Clocks")
        self.answer_rate = answer_rate
        self.certificate_again_after = certificate_again_after
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "accepted", *REASONS, "clock_adjusted", "replay_cache_full",
                "certificates_sent", "certificates_omitted", "answers_limited",
            ),
            0,
        )
        self._seen: OrderedDict[bytes, int] = OrderedDict()  # (id, nonce) -> expiry, ms
        # Node-ID -> the certificate that verified its latest message (least recent first)
        self._certs: OrderedDict[int, _Cert] = OrderedDict()
        # Node-IDs of peers that told us they hold our certificate (least recent first) ->
        # when we first sent one a message without it since we last heard from it (inf: no
        # such message unanswered)
        self._known_by: OrderedDict[int, float] = OrderedDict()
        self._requests: OrderedDict[tuple[int, int], _Remembered] = OrderedDict()
        self._cert_value = _b64e(identity.certificate_der)
        self.cert_id = certificate_id(identity.certificate_der)
        self._answer_tokens = answer_rate
        self._answer_at = -float("inf")

    # ----------------------------------------------------------------------- encoding

    def encode(
        self,
        msg: m.Message,
        dst: m.NodeRef | tuple[str, int],
        now: float,
        *,
        nonce: bytes | None = None,
    ) -> bytes:
        """Sign and serialise `msg` for `dst` (the next hop; for a response, the requester).

        `dst` may be a bare (host, port) for a request to a node whose Node-ID is not known.
        Raises ValueError for a message this codec cannot express (wrong sender, overlay
        or field values out of range): those are programming errors, not wire errors.
        """
        if msg.src.id != self.identity.node_id:
            raise ValueError("a message's src must be this node")
        if msg.overlay and msg.overlay != self.overlay:
            raise ValueError(f"message is for overlay {msg.overlay!r}, not {self.overlay!r}")
        _check_count(msg.txn, "txn", MAX_TXN)
        if isinstance(msg, m.REQUEST_TYPES):
            sip: Request | Response = self._request(msg, dst, now)
        else:
            if not isinstance(dst, m.NodeRef):
                raise ValueError("a response goes to a NodeRef (the requester)")
            sip = self._response(msg, dst, now)
        ts = str(int((now + self.clock_offset) * 1000))
        nonce_hex = (nonce if nonce is not None else secrets.token_bytes(8)).hex()
        if not _NONCE.match(nonce_hex):
            raise ValueError("nonce must be 8 bytes")
        signature = self.identity.sign(signing_input(sip, SIG_ALG, ts, nonce_hex))
        sip.headers.append(
            (SIG_HEADER, f"alg={SIG_ALG};ts={ts};nonce={nonce_hex};sig={_b64e(signature)}")
        )
        return sip.encode()

    def _cert_headers(
        self, dst: m.NodeRef | tuple[str, int], now: float, request: bool
    ) -> list[tuple[str, str]]:
        """DHT-Cert-Id (ours; `peer=` the id of dst's certificate when we hold it) and,
        unless dst told us it holds ours, DHT-Certificate."""
        value = self.cert_id
        node_id = dst.id if isinstance(dst, m.NodeRef) else None
        theirs = self._certs.get(node_id) if node_id is not None else None
        if theirs is not None:
            value += f";peer={theirs.cert_id}"
        headers = [(CERT_ID_HEADER, value)]
        if node_id is not None and self._omit_certificate(node_id, now, request):
            self.counters["certificates_omitted"] += 1
        else:
            headers.append((CERT_HEADER, self._cert_value))
            self.counters["certificates_sent"] += 1
        return headers

    def _omit_certificate(self, node_id: int, now: float, request: bool) -> bool:
        """Whether dst holds our certificate, as far as we know. When it has not answered
        a request we sent it without the certificate for `certificate_again_after`
        seconds (it may have lost it and could not, or did not, say so: an Error 428 may
        be lost, or rate-limited), we stop assuming it: this message (likely a
        retransmission) carries it, as do the next until it says it holds it again."""
        since = self._known_by.get(node_id)
        if since is None:
            return False
        if since == float("inf") or now < since:  # none unanswered (or the clock went back)
            if request:  # a response expects no answer
                self._known_by[node_id] = now
            return True
        if now - since < self.certificate_again_after:
            return True
        del self._known_by[node_id]
        return False

    def peer_has_certificate(self, node_id: int) -> bool:
        """Whether `node_id` told us it holds our certificate (so ours is left out)."""
        return node_id in self._known_by

    def refusal_answer(
        self, exc: WireError, me: m.NodeRef, now: float, source: tuple[str, int] | None = None,
    ) -> tuple[bytes, tuple[str, int]] | None:
        """The answer to send for a refused message, if any: (bytes, (host, port)).

        A request refused as `stale` (authentic, only late) gets an Error 403 "Stale
        Date", sent to its sender's address, whose time stamp lets the sender's clock
        catch up. A request refused as `certificate_needed` gets an Error 428
        "Certificate Needed", on which the sender sends it again with its certificate;
        as nothing of that request could be verified, the answer goes to `source` (the
        transport address it came from; without it there is no answer), never to the
        address it claims, and at most `answer_rate` are made per second. Nothing else
        is answered, and a response never is (two nodes would bounce errors).
        `me` is this node (the Error's src).
        """
        msg = exc.message
        if msg is None or not isinstance(msg, m.REQUEST_TYPES) or msg.src.id == me.id:
            return None
        to = (msg.src.host, msg.src.port)
        if exc.reason == "stale":
            code, reason = STALE, STALE_REASON
        elif exc.reason == "certificate_needed":
            if source is None:
                return None
            to = source
            self._answer_tokens = min(
                self.answer_rate,
                self._answer_tokens + (now - self._answer_at) * self.answer_rate,
            )
            self._answer_at = now
            if self._answer_tokens < 1:
                self.counters["answers_limited"] += 1
                return None
            self._answer_tokens -= 1
            code, reason = CERT_NEEDED, CERT_NEEDED_REASON
        else:
            return None
        error = m.Error(src=me, txn=msg.txn, overlay=self.overlay, code=code, reason=reason)
        return self.encode(error, msg.src, now), to

    def _common(self, src: m.NodeRef) -> list[tuple[str, str]]:
        return [(NODEID_HEADER, f"<{node_uri(src)}>;algorithm={ALGORITHM};overlay={self.overlay}")]

    def _request(self, msg: m.Message, dst: m.NodeRef | tuple[str, int], now: float) -> Request:
        op = _REQUEST_OPS[type(msg)]
        method = "OPTIONS" if op == "ping" else "REGISTER"
        src, txn = msg.src, msg.txn
        to_params: dict[str, str | None] = {"op": op}
        extra: list[tuple[str, str]] = []
        body = b""
        if isinstance(msg, m.Notify):
            extra.append(("Contact", f"<{node_uri(src)}>"))
        elif isinstance(msg, m.FindSuccessor):
            to_params["resource-id"] = f"{_check_id(msg.key, 'key'):032x}"
            if msg.hops:
                to_params["hops"] = str(_check_count(msg.hops, "hops"))
            if msg.recursive:
                to_params["recursive"] = None
            if msg.origin is not None:
                extra.append((LINK_HEADER, _link(msg.origin, "O")))
        elif isinstance(msg, m.Store | m.Transfer):
            if isinstance(msg, m.Store) and msg.replica:
                to_params["replica"] = None
            body = encode_records(msg.records)
        elif isinstance(msg, m.Fetch):
            to_params["resource-id"] = f"{_check_id(msg.resource_id, 'resource_id'):032x}"
        elif isinstance(msg, m.Leave):
            extra.append(("Contact", f"<{node_uri(src)}>;expires=0"))
            extra += self._links(msg.predecessor, msg.successors)
        elif isinstance(msg, m.Learn):
            if msg.hops:
                to_params["hops"] = str(_check_count(msg.hops, "hops"))
            extra.append(("Contact", f"<{node_uri(msg.candidate)}>"))
        headers = [
            ("Via", f"SIP/2.0/UDP {_hostport(src)};branch={_branch(src.id, txn)}"),
            ("Max-Forwards", "70"),
            ("From", f"<{node_uri(src)}>;tag={txn:x}"),
            ("To", f"<{node_uri(dst, **to_params)}>"),
            ("Call-ID", f"{txn:x}@{src.id:032x}"),
            ("CSeq", f"{txn & 0x7FFFFFFF} {method}"),
            *self._common(src),
            *extra,
            *self._cert_headers(dst, now, request=True),
        ]
        if body:
            headers.append(("Content-Type", RECORDS_TYPE))
        return Request(method, node_uri(dst, overlay=self.overlay), headers, body)

    @staticmethod
    def _links(pred: m.NodeRef | None, succs: tuple[m.NodeRef, ...]) -> list[tuple[str, str]]:
        links = [] if pred is None else [(LINK_HEADER, _link(pred, "P"))]
        if len(succs) > 9999:
            raise ValueError("too many successors")
        links += [(LINK_HEADER, _link(s, f"S{i}")) for i, s in enumerate(succs, 1)]
        return links

    def _response(self, msg: m.Message, dst: m.NodeRef, now: float) -> Response:
        src, txn = msg.src, msg.txn
        remembered = self._requests.pop((dst.id, txn), None)
        allowed = _RESPONSE_OPS[type(msg)]
        op: str | None
        if remembered is not None and (not allowed or remembered.op in allowed):
            op = remembered.op
        elif allowed:
            op = allowed[0]
        else:
            op = None
        status, reason = 200, "OK"
        to_params: dict[str, str | None] = {} if op is None else {"op": op}
        extra: list[tuple[str, str]] = []
        body = b""
        if isinstance(msg, m.Neighbors):
            extra += self._links(msg.predecessor, msg.successors)
        elif isinstance(msg, m.Found | m.Redirect):
            to_params["resource-id"] = f"{_check_id(msg.key, 'key'):032x}"
            if msg.hops:
                to_params["hops"] = str(_check_count(msg.hops, "hops"))
            if isinstance(msg, m.Found):
                extra += self._links(None, msg.successors)
            else:
                status, reason = 302, "Moved Temporarily"
                extra += [("Contact", f"<{node_uri(c)}>") for c in msg.closer]
        elif isinstance(msg, m.Stored):
            if msg.accepted:
                to_params["accepted"] = str(_check_count(msg.accepted, "accepted"))
            if msg.rejected:
                to_params["rejected"] = str(_check_count(msg.rejected, "rejected"))
        elif isinstance(msg, m.Records):
            to_params["resource-id"] = f"{_check_id(msg.resource_id, 'resource_id'):032x}"
            body = encode_records(msg.records)
        elif isinstance(msg, m.Error):
            if not (300 <= msg.code <= 699) or msg.code == 302:
                raise ValueError(f"Error code {msg.code} must be 300-699 and not 302")
            status = msg.code
            reason = re.sub(r"[\x00-\x1f\x7f]", " ", msg.reason)
        if remembered is not None:
            to_uri = remembered.to_uri.copy(params={"user": "node", **to_params})
            vias, from_ = remembered.vias, remembered.from_
            call_id, cseq = remembered.call_id, remembered.cseq
        else:
            method = "OPTIONS" if op == "ping" else "REGISTER"
            to_uri = node_uri(src, **to_params)
            vias = [f"SIP/2.0/UDP {_hostport(dst)};branch={_branch(dst.id, txn)}"]
            from_ = f"<{node_uri(dst)}>;tag={txn:x}"
            call_id, cseq = f"{txn:x}@{dst.id:032x}", f"{txn & 0x7FFFFFFF} {method}"
        headers = [
            *[("Via", v) for v in vias],
            ("From", from_),
            ("To", f"<{to_uri}>;tag={src.id >> 96:08x}"),
            ("Call-ID", call_id),
            ("CSeq", cseq),
            *self._common(src),
            *extra,
            *self._cert_headers(dst, now, request=False),
        ]
        if body:
            headers.append(("Content-Type", RECORDS_TYPE))
        return Response(status, reason, headers, body)

    # ----------------------------------------------------------------------- decoding

    def decode(self, data: bytes, now: float) -> m.Message:
        """Verify and decode one message; raise WireError (and count it) if refused."""
        try:
            message = self._decode(data, now)
        except WireError as exc:
            self.counters[exc.reason] += 1
            raise
        self.counters["accepted"] += 1
        return message

    def _decode(self, data: bytes, now: float) -> m.Message:
        if len(data) > MAX_MESSAGE:
            raise WireError("malformed", "message too large")
        try:
            sip = parse_message(data)
            sig_params, node = self._envelope(sip)
        except WireError:
            raise
        except (SipParseError, ValueError, UnicodeError, IndexError, KeyError) as exc:
            raise WireError("malformed", str(exc)[:120]) from None
        src_uri, node_params = node
        if node_params.get("overlay") != self.overlay or (
            isinstance(sip, Request) and sip.uri.params.get("overlay") != self.overlay
        ):
            raise WireError("overlay", "message of another overlay")
        if sig_params is None:
            raise WireError("unsigned")
        try:
            src = _ref_from_uri(src_uri, NODEID_HEADER)
            alg, ts, nonce, sig = (sig_params.get(k) for k in ("alg", "ts", "nonce", "sig"))
            if alg != SIG_ALG:
                raise WireError("signature", f"unknown signature algorithm {alg!r}")
            if ts is None or not _DIGITS.match(ts) or len(ts) > 15:
                raise ValueError("bad ts")
            if nonce is None or not _NONCE.match(nonce) or sig is None:
                raise ValueError("bad nonce or sig")
            signature = _b64d(sig)
            cert_values = sip.get_all(CERT_HEADER)
            if len(cert_values) > 1:
                raise WireError("certificate", "more than one certificate")
            id_values = sip.get_all(CERT_ID_HEADER)
            if len(id_values) > 1:
                raise WireError("certificate", f"more than one {CERT_ID_HEADER}")
            cert_id, peer_id = _parse_cert_id(id_values[0]) if id_values else (None, None)
            cert_der = _b64d(cert_values[0]) if cert_values else None
        except WireError:
            raise
        except (SipParseError, ValueError, UnicodeError) as exc:
            raise WireError("malformed", str(exc)[:120]) from None
        if cert_der is not None:
            peer = self._peer(cert_der, cert_id, src.id, now)
        elif cert_id is None:
            raise WireError("certificate", "no certificate")
        else:
            peer = self._known_peer(sip, src, cert_id, peer_id, now)
        if not peer.verify(signing_input(sip, alg, ts, nonce), signature):
            raise WireError("signature", "bad signature")
        # The certificate is in use by its key's holder: keep it (most recent last).
        self._keep_certificate(src.id, cert_der, peer)
        try:
            message = self._build(sip, src)
        except (SipParseError, ValueError, UnicodeError, IndexError, KeyError) as exc:
            raise WireError("malformed", str(exc)[:120]) from None
        # Authentic from here on: what follows may carry the message.
        now_ms = int((now + self.clock_offset) * 1000)
        ts_ms = int(ts)
        skew = ts_ms - now_ms
        key = src.id.to_bytes(16, "big") + bytes.fromhex(nonce)
        if abs(skew) > self.window_ms:
            if skew > 0 and self.follow_clock:
                self.clock_offset += skew / 1000
                self.counters["clock_adjusted"] += 1
                # Refused, but remembered: sent again it is now in the window, and must
                # not be accepted then (it may be an old message replayed).
                self._see(key, ts_ms, ts_ms)
            if peer_id != self.cert_id:
                # authentic, only late: its sender (restarted with its clock behind) lacks
                # our certificate, and must be able to check our 403 Stale Date to catch up
                self._known_by.pop(src.id, None)
            raise WireError("stale", f"time stamp {skew / 1000:+.1f} s off", message,
                            skew / 1000)
        self._check_destination(sip, message)
        self._expire(now_ms)
        if key in self._seen:
            raise WireError("replay", "nonce seen before", message)
        self._see(key, ts_ms, now_ms)
        if isinstance(sip, Request):
            self._remember(sip, message, now)
        self._note_peer_claim(src.id, peer_id)
        return message

    def _envelope(
        self, sip: Request | Response
    ) -> tuple[dict[str, str | None] | None, tuple[Uri, dict[str, str | None]]]:
        values = sip.get_all(NODEID_HEADER)
        if len(values) != 1:
            raise ValueError(f"need exactly one {NODEID_HEADER}")
        node = parse_name_addr(values[0], NODEID_HEADER)
        if node.params.get("algorithm") != ALGORITHM:
            raise ValueError(f"{NODEID_HEADER} algorithm is not {ALGORITHM}")
        sigs = sip.get_all(SIG_HEADER)
        if len(sigs) > 1:
            raise ValueError(f"more than one {SIG_HEADER}")
        sig_params = parse_params(sigs[0], SIG_HEADER) if sigs else None
        return sig_params, (node.uri, node.params)

    def _peer(
        self, cert_der: bytes, cert_id: str | None, node_id: int, now: float
    ) -> PeerIdentity:
        """The identity of a certificate carried in a message (checked, or cached)."""
        if cert_id is not None and certificate_id(cert_der) != cert_id:
            raise WireError("certificate", f"certificate does not match its {CERT_ID_HEADER}")
        entry = self._certs.get(node_id)
        if entry is not None and entry.der == cert_der and not self.check_validity:
            return entry.peer
        try:
            peer = verify_peer(
                cert_der, self.ca, now + self.clock_offset if self.check_validity else None,
            )
        except IdentityError as exc:
            raise WireError("certificate", str(exc)) from None
        if peer.node_id != node_id:
            raise WireError("certificate", "certificate key does not hash to the DHT-NodeID")
        return peer

    def _known_peer(
        self, sip: Request | Response, src: m.NodeRef, cert_id: str, peer_id: str | None,
        now: float,
    ) -> PeerIdentity:
        """The identity for a message that came without its certificate: the one we hold
        for its Node-ID, if that is the certificate DHT-Cert-Id names; else refused."""
        entry = self._certs.get(src.id)
        if entry is not None and entry.cert_id == cert_id:
            if self.check_validity:
                return self._peer(entry.der, None, src.id, now)
            return entry.peer
        # Unverifiable. Nothing of it is trusted; only, unless it claims to hold our
        # certificate, ours goes with our next message to that node (costs only bytes).
        if peer_id != self.cert_id:
            self._known_by.pop(src.id, None)
        self._check_destination(sip, None)
        try:
            claimed: m.Message | None = self._build(sip, src)
        except (SipParseError, ValueError, UnicodeError, IndexError, KeyError):
            claimed = None
        raise WireError(
            "certificate_needed",
            "no certificate held for this sender" if entry is None else
            f"{CERT_ID_HEADER} names another certificate than the one held",
            claimed,
        )

    def _keep_certificate(self, node_id: int, cert_der: bytes | None, peer: PeerIdentity) -> None:
        certs = self._certs
        if cert_der is None:
            certs.move_to_end(node_id)
            return
        entry = certs.get(node_id)
        if entry is None or entry.der != cert_der:
            certs[node_id] = _Cert(certificate_id(cert_der), cert_der, peer)
        certs.move_to_end(node_id)
        while len(certs) > self.certificate_cache_size:
            certs.popitem(last=False)

    def _note_peer_claim(self, node_id: int, peer_id: str | None) -> None:
        """An accepted message says (`peer=`) which certificate of ours its sender holds."""
        known = self._known_by
        if peer_id != self.cert_id:
            known.pop(node_id, None)
            return
        known[node_id] = float("inf")  # heard from it: nothing of ours is unanswered
        known.move_to_end(node_id)
        while len(known) > self.certificate_cache_size:
            known.popitem(last=False)

    def _check_destination(self, sip: Request | Response, message: m.Message) -> None:
        me = self.identity.node_id
        if isinstance(sip, Request):
            user = sip.uri.user
            if user is not None and (not _HEX_ID.match(user) or int(user, 16) != me):
                raise WireError("misdirected", "request for another node", message)
        else:
            requester = _CALL_ID.match(sip.call_id)
            if requester is None or int(requester.group(2), 16) != me:
                raise WireError("misdirected", "response to another node's request", message)

    def _see(self, key: bytes, ts_ms: int, now_ms: int) -> None:
        self._expire(now_ms)
        self._seen[key] = ts_ms + self.window_ms
        if len(self._seen) > self.replay_capacity:
            self._seen.popitem(last=False)
            self.counters["replay_cache_full"] += 1

    def _expire(self, now_ms: int) -> None:
        seen = self._seen
        while seen:
            key, expiry = next(iter(seen.items()))
            if expiry >= now_ms:
                break
            del seen[key]

    def _remember(self, sip: Request, message: m.Message, now: float) -> None:
        reqs = self._requests
        while reqs:
            oldest = next(iter(reqs.values()))
            if oldest.at + self.remember_for >= now and len(reqs) < self.remember_capacity:
                break
            reqs.popitem(last=False)
        to = parse_name_addr(sip.get("To") or "", "To")
        reqs[(message.src.id, message.txn)] = _Remembered(
            now, _REQUEST_OPS[type(message)], sip.get_all("Via"), sip.get("From") or "",
            to.uri, sip.call_id, sip.get("CSeq") or "",
        )

    # ------------------------------------------------------------------ message building

    def _build(self, sip: Request | Response, src: m.NodeRef) -> m.Message:
        call = _CALL_ID.match(sip.call_id)
        if call is None:
            raise ValueError("Call-ID is not <txn>@<requester Node-ID>")
        txn = int(call.group(1), 16)
        to = parse_name_addr(sip.get("To") or "", "To")
        params = to.uri.params
        op = params.get("op")
        base: dict[str, Any] = {"src": src, "txn": txn, "overlay": self.overlay}
        links = self._parse_links(sip)
        contacts = [c for c in sip.contacts() if c is not None]
        if len(contacts) != len(sip.get_all("Contact")):
            raise ValueError("Contact: * in an overlay message")
        if isinstance(sip, Request):
            if int(call.group(2), 16) != src.id:
                raise ValueError("Call-ID names another node than DHT-NodeID")
            if op not in _OPS or (sip.method == "OPTIONS") != (op == "ping") or (
                sip.method not in ("OPTIONS", "REGISTER")
            ):
                raise ValueError(f"bad op {op!r} for {sip.method}")
            if sip.cseq[1] != sip.method:
                raise ValueError("CSeq method")
            return self._build_request(sip, op, params, base, links, contacts)
        if op is not None and op not in _OPS:
            raise ValueError(f"bad op {op!r}")
        if sip.status == 302:
            if op != "find":
                raise ValueError("302 to something else than a lookup")
            _only(links, ())
            return m.Redirect(**base, key=_key_param(params), hops=_int_param(params, "hops"),
                              closer=tuple(_ref_from_uri(c.uri, "Contact") for c in contacts))
        if 300 <= sip.status <= 699:
            return m.Error(**base, code=sip.status, reason=sip.reason)
        if sip.status != 200 or op is None:
            raise ValueError(f"unexpected status {sip.status}")
        kind = _OK_TYPES[op]
        if kind is m.Neighbors:
            _only(links, ("P", "S"))
            return m.Neighbors(**base, predecessor=links.get("P"), successors=links["S"])
        if kind is m.Found:
            _only(links, ("S",))
            return m.Found(**base, key=_key_param(params), successors=links["S"],
                           hops=_int_param(params, "hops"))
        if kind is m.Stored:
            return m.Stored(**base, accepted=_int_param(params, "accepted"),
                            rejected=_int_param(params, "rejected"))
        if kind is m.Records:
            return m.Records(**base, resource_id=_key_param(params),
                             records=self._records(sip))
        return kind(**base)  # Pong, Ack

    def _build_request(
        self, sip: Request, op: str, params: dict[str, str | None], base: dict[str, Any],
        links: dict[str, Any], contacts: list[NameAddr],
    ) -> m.Message:
        if op == "find":
            _only(links, ("O",))
            return m.FindSuccessor(
                **base, key=_key_param(params), recursive="recursive" in params,
                hops=_int_param(params, "hops"), origin=links.get("O"),
            )
        if op == "leave":
            _only(links, ("P", "S"))
            return m.Leave(**base, predecessor=links.get("P"), successors=links["S"])
        _only(links, ())
        if op == "learn":
            if len(contacts) != 1:
                raise ValueError("learn needs one Contact")
            return m.Learn(**base, candidate=_ref_from_uri(contacts[0].uri, "Contact"),
                           hops=_int_param(params, "hops"))
        if op == "store":
            return m.Store(**base, records=self._records(sip), replica="replica" in params)
        if op == "transfer":
            return m.Transfer(**base, records=self._records(sip))
        if op == "fetch":
            return m.Fetch(**base, resource_id=_key_param(params))
        return {"ping": m.Ping, "neighbors": m.GetNeighbors, "notify": m.Notify}[op](**base)

    @staticmethod
    def _records(sip: Request | Response) -> tuple[m.Record, ...]:
        if not sip.body:
            return ()
        ctype = (sip.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        if ctype != RECORDS_TYPE:
            raise ValueError(f"records in a {ctype or 'missing'} Content-Type")
        return decode_records(sip.body)

    @staticmethod
    def _parse_links(sip: Request | Response) -> dict[str, Any]:
        links: dict[str, Any] = {}
        succs: list[m.NodeRef] = []
        for value in sip.get_all(LINK_HEADER):
            na = parse_name_addr(value, LINK_HEADER)
            kind = na.params.get("link") or ""
            ref = _ref_from_uri(na.uri, LINK_HEADER)
            s = _LINK_S.match(kind)
            if s:
                if int(s.group(1)) != len(succs) + 1:
                    raise ValueError("successor links out of order")
                succs.append(ref)
            elif kind in ("P", "O") and kind not in links:
                links[kind] = ref
            else:
                raise ValueError(f"bad or repeated link {kind!r}")
        links["S"] = tuple(succs)
        return links


def _only(links: dict[str, Any], allowed: tuple[str, ...]) -> None:
    present = {k for k, v in links.items() if v}
    if present - set(allowed):
        raise ValueError(f"unexpected links {sorted(present - set(allowed))}")


def _hostport(ref: m.NodeRef) -> str:
    return f"{_uri_host(ref.host)}:{ref.port}"


def _branch(requester: int, txn: int) -> str:
    return f"z9hG4bK-{requester >> 64:016x}-{txn:x}"
