"""The first-contact certificate exchange: DHT-Cert-Id, the certificates cache, the 428.

A certificate (~650 bytes in base64) travels only until the receiver holds it: each side
says in `DHT-Cert-Id ...;peer=<id>` which certificate of the other it holds. A receiver
that lacks the signer's certificate refuses (`certificate_needed`) and answers 428
"Certificate Needed"; the sender's codec then sends the same request again, with its
certificate, once (`request_again`): the Chord node never sees that 428. Rules:
docs/overlay-wire-format.md, "Certificates on first contact".
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from dataclasses import dataclass

from ...identity import IdentityError, NodeIdentity, PeerIdentity, verify_peer
from ...sip.message import Request, Response
from ...sip.uri import parse_params
from .. import messages as m
from .values import CERT_HEADER, CERT_ID_HEADER, CERT_NEEDED, WireError, b64d, b64e, make_room

_CERT_ID = re.compile(r"[A-Za-z0-9_-]{16,64}\Z")


def certificate_id(der: bytes) -> str:
    """The `DHT-Cert-Id` of a certificate: base64url of the first 12 bytes of SHA-256(DER)."""
    return b64e(hashlib.sha256(der).digest()[:12])


def _parse_cert_id(value: str) -> tuple[str, str | None]:
    """`<id>[;peer=<id>]` -> (id, peer id or None)."""
    own, sep, rest = value.partition(";")
    own = own.strip()
    params = parse_params(rest, CERT_ID_HEADER) if sep else {}
    peer = params.get("peer")
    if not _CERT_ID.match(own) or (peer is not None and not _CERT_ID.match(peer)):
        raise ValueError(f"bad {CERT_ID_HEADER}")
    return own, peer


@dataclass(slots=True, frozen=True)
class Claim:
    """What a message says of certificates: the one it carries (DER), the id of its
    sender's (DHT-Cert-Id) and the id of ours its sender holds (`peer=`)."""

    der: bytes | None
    cert_id: str | None
    peer_id: str | None

    @classmethod
    def read(cls, sip: Request | Response) -> Claim:
        """WireError("certificate") for a doubled header; ValueError if malformed."""
        cert_values = sip.get_all(CERT_HEADER)
        if len(cert_values) > 1:
            raise WireError("certificate", "more than one certificate")
        id_values = sip.get_all(CERT_ID_HEADER)
        if len(id_values) > 1:
            raise WireError("certificate", f"more than one {CERT_ID_HEADER}")
        cert_id, peer_id = _parse_cert_id(id_values[0]) if id_values else (None, None)
        return cls(b64d(cert_values[0]) if cert_values else None, cert_id, peer_id)


class Unverifiable(Exception):
    """A message whose signer's certificate we do not hold (nor does it carry it)."""


@dataclass(slots=True)
class _Cert:
    """A peer certificate whose key has verified a message: its id, bytes and key."""

    cert_id: str
    der: bytes
    peer: PeerIdentity


@dataclass(slots=True)
class _Unanswered:
    """A request sent without our certificate: sent again with it on a 428."""

    at: float
    msg: m.Message
    dst: m.NodeRef


class CertificateExchange:
    """One codec's certificates: ours (sent until a peer says it holds it), the peers'
    (`cache`: Node-ID -> the certificate that verified its latest message, least recent
    first) and `known_by` (peers that told us they hold ours -> when we first sent one a
    request without it since we last heard from it; inf: none unanswered).
    Parameters: see `WireCodec`."""

    def __init__(
        self, identity: NodeIdentity, counters: dict[str, int], *, check_validity: bool,
        cache_size: int, again_after: float, answer_rate: float, remember: int,
        remember_for: float,
    ) -> None:
        self.ca = identity.ca_certificate
        self.cert_id = certificate_id(identity.certificate_der)
        self._cert_value = b64e(identity.certificate_der)
        self.counters = counters
        self.check_validity = check_validity
        self.cache_size = cache_size
        self.again_after = again_after
        self.answer_rate = answer_rate
        self.remember = remember
        self.remember_for = remember_for
        self.cache: OrderedDict[int, _Cert] = OrderedDict()
        self.known_by: OrderedDict[int, float] = OrderedDict()
        self._unanswered: OrderedDict[tuple[int, int], _Unanswered] = OrderedDict()
        self._answer_tokens = answer_rate
        self._answer_at = -float("inf")

    # ------------------------------------------------------------------ sending

    def headers(
        self, msg: m.Message, dst: m.NodeRef | tuple[str, int], now: float,
    ) -> list[tuple[str, str]]:
        """DHT-Cert-Id (ours; `peer=` the id of dst's certificate when we hold it) and,
        unless dst told us it holds ours, DHT-Certificate."""
        request = isinstance(msg, m.REQUEST_TYPES)
        value = self.cert_id
        node_id = dst.id if isinstance(dst, m.NodeRef) else None
        theirs = self.cache.get(node_id) if node_id is not None else None
        if theirs is not None:
            value += f";peer={theirs.cert_id}"
        headers = [(CERT_ID_HEADER, value)]
        if isinstance(dst, m.NodeRef) and self._omit(dst.id, now, request):
            self.counters["certificates_omitted"] += 1
            if request:
                self._sent_without(msg, dst, now)
        else:
            headers.append((CERT_HEADER, self._cert_value))
            self.counters["certificates_sent"] += 1
        return headers

    def _omit(self, node_id: int, now: float, request: bool) -> bool:
        """Whether dst holds our certificate, as far as we know. When it has not answered
        a request we sent it without the certificate for `again_after` seconds (it may
        have lost it and could not, or did not, say so: an Error 428 may be lost, or
        rate-limited), we stop assuming it: this message (likely a retransmission)
        carries it, as do the next until it says it holds it again."""
        since = self.known_by.get(node_id)
        if since is None:
            return False
        if since == float("inf") or now < since:  # none unanswered (or the clock went back)
            if request:  # a response expects no answer
                self.known_by[node_id] = now
            return True
        if now - since < self.again_after:
            return True
        del self.known_by[node_id]
        return False

    def peer_has_certificate(self, node_id: int) -> bool:
        """Whether `node_id` told us it holds our certificate (so ours is left out)."""
        return node_id in self.known_by

    # ------------------------------------------------------------------ the 428

    def _sent_without(self, msg: m.Message, dst: m.NodeRef, now: float) -> None:
        make_room(self._unanswered, now, self.remember, self.remember_for)
        self._unanswered[(dst.id, msg.txn)] = _Unanswered(now, msg, dst)

    def request_again(self, answer: m.Message) -> tuple[m.Message, m.NodeRef] | None:
        """For an authentic Error 428 answering a request we sent without our certificate:
        that request and its destination, to send again (now with the certificate). Once
        per request: the second 428 is an answer like any Error."""
        if not (isinstance(answer, m.Error) and answer.code == CERT_NEEDED):
            return None
        sent = self._unanswered.pop((answer.src.id, answer.txn), None)
        if sent is None:
            return None
        self.known_by.pop(sent.dst.id, None)  # it said so: ours goes with what follows
        self.counters["certificate_resends"] += 1
        return sent.msg, sent.dst

    def may_answer(self, now: float) -> bool:
        """Whether a 428 may answer an unverifiable request now (at most `answer_rate` a
        second: they answer messages nothing of which is verified)."""
        self._answer_tokens = min(
            self.answer_rate, self._answer_tokens + (now - self._answer_at) * self.answer_rate,
        )
        self._answer_at = now
        if self._answer_tokens < 1:
            self.counters["answers_limited"] += 1
            return False
        self._answer_tokens -= 1
        return True

    # ------------------------------------------------------------------ receiving

    def identify(self, src: int, claim: Claim, clock: float) -> PeerIdentity:
        """The identity whose key must verify a message from Node-ID `src` (`clock`: the
        followed clock, for validity checks). WireError("certificate") for a bad or
        missing certificate; Unverifiable when we do not hold the one DHT-Cert-Id names."""
        if claim.der is not None:
            return self._peer(claim.der, claim.cert_id, src, clock)
        if claim.cert_id is None:
            raise WireError("certificate", "no certificate")
        entry = self.cache.get(src)
        if entry is not None and entry.cert_id == claim.cert_id:
            if self.check_validity:
                return self._peer(entry.der, None, src, clock)
            return entry.peer
        # Unverifiable. Nothing of it is trusted; only, unless it claims to hold our
        # certificate, ours goes with our next message to that node (costs only bytes).
        self.lost_by(src, claim)
        raise Unverifiable(
            "no certificate held for this sender" if entry is None else
            f"{CERT_ID_HEADER} names another certificate than the one held"
        )

    def _peer(self, der: bytes, cert_id: str | None, node_id: int, clock: float) -> PeerIdentity:
        """The identity of a certificate carried in a message (checked, or cached)."""
        if cert_id is not None and certificate_id(der) != cert_id:
            raise WireError("certificate", f"certificate does not match its {CERT_ID_HEADER}")
        entry = self.cache.get(node_id)
        if entry is not None and entry.der == der and not self.check_validity:
            return entry.peer
        try:
            peer = verify_peer(der, self.ca, clock if self.check_validity else None)
        except IdentityError as exc:
            raise WireError("certificate", str(exc)) from None
        if peer.node_id != node_id:
            raise WireError("certificate", "certificate key does not hash to the DHT-NodeID")
        return peer

    def keep(self, node_id: int, claim: Claim, peer: PeerIdentity) -> None:
        """The certificate verified a message: it is in use by its key's holder (kept,
        most recent last)."""
        certs = self.cache
        if claim.der is not None:
            entry = certs.get(node_id)
            if entry is None or entry.der != claim.der:
                certs[node_id] = _Cert(certificate_id(claim.der), claim.der, peer)
        certs.move_to_end(node_id)
        while len(certs) > self.cache_size:
            certs.popitem(last=False)

    def lost_by(self, node_id: int, claim: Claim) -> None:
        """Unless the message claims (`peer=`) to hold our certificate, its sender may
        lack it: ours goes with our next message to it."""
        if claim.peer_id != self.cert_id:
            self.known_by.pop(node_id, None)

    def heard(self, node_id: int, claim: Claim) -> None:
        """An accepted message says (`peer=`) which certificate of ours its sender holds."""
        known = self.known_by
        if claim.peer_id != self.cert_id:
            known.pop(node_id, None)
            return
        known[node_id] = float("inf")  # heard from it: nothing of ours is unanswered
        known.move_to_end(node_id)
        while len(known) > self.cache_size:
            known.popitem(last=False)
