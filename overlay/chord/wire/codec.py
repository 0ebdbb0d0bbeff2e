"""The overlay wire codec: encode (sign) and decode (verify) one node's overlay messages.

`WireCodec` puts the parts together in the order the checks must run: mapping, record
bodies, signature, certificates, freshness (each in its module of this package). It also
answers what it refuses (403 Stale Date, 428 Certificate Needed) and sends a request
again when a 428 answers it, so the node above sees neither: `WireCodec.receive`.
Sans-IO: the current time (`now`, Unix seconds) is passed in. The format and its rules:
docs/overlay-wire-format.md.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from functools import partial

from ...identity import NodeIdentity, PeerIdentity
from ...names import check_overlay_name
from ...revocation import Revocations
from ...sip.message import Request, Response, parse_message
from .. import messages as m
from .certificates import CertificateExchange, Claim, Unverifiable
from .freshness import Freshness
from .mapping import Mapping
from .revocations import CrlExchange
from .signature import Signature, sign, signature_params
from .values import (
    CERT_NEEDED,
    CERT_NEEDED_REASON,
    MAX_MESSAGE,
    MAX_TXN,
    NODEID_HEADER,
    PARSE_ERRORS,
    REASONS,
    STALE,
    STALE_REASON,
    WireError,
    check_count,
    ref_from_uri,
)


@dataclass(slots=True, frozen=True)
class Outgoing:
    """Bytes the codec wants sent: to `to` (host, port), or, when `back`, back the way
    the message being answered came (its connection: the answer to an unverifiable
    message never goes to the address it claims)."""

    data: bytes
    to: tuple[str, int]
    back: bool = False


@dataclass(slots=True, frozen=True)
class Received:
    """What came of received bytes: `message` for the node (None: refused, or handled
    by the codec), `refused` the WireError if refused, `send` what to send now."""

    message: m.Message | None
    refused: WireError | None = None
    send: tuple[Outgoing, ...] = ()


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
    `remember` and `remember_for` bound the requests kept for their answers (and for a
    resend on a 428). `revocations`: the box's CRL (shared across its codecs; by default
    a new, empty one): messages from revoked Node-IDs are refused, CRLs spread.
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
        revocations: Revocations | None = None,
    ) -> None:
        check_overlay_name(overlay)
        self.identity = identity
        self.overlay = overlay
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "accepted", *REASONS, "clock_adjusted", "replay_cache_full",
                "certificates_sent", "certificates_omitted", "answers_limited",
                "certificate_resends", "crl_sent",
            ),
            0,
        )
        self.mapping = Mapping(overlay, remember, remember_for)
        self.freshness = Freshness(window, replay_capacity, follow_clock, self.counters)
        self.certificates = CertificateExchange(
            identity, self.counters, check_validity=check_validity,
            cache_size=certificate_cache, again_after=certificate_again_after,
            answer_rate=answer_rate, remember=remember, remember_for=remember_for,
        )
        self.cert_id = self.certificates.cert_id
        self.revocations = revocations or Revocations(identity.ca_certificate)
        self.crls = CrlExchange(self.revocations, self.counters, certificate_cache)

    @property
    def clock_offset(self) -> float:
        """Seconds added to `now`: the followed clock (docs: "Freshness and replay")."""
        return self.freshness.offset

    @clock_offset.setter
    def clock_offset(self, value: float) -> None:
        self.freshness.offset = value

    def peer_has_certificate(self, node_id: int) -> bool:
        """Whether `node_id` told us it holds our certificate (so ours is left out)."""
        return self.certificates.peer_has_certificate(node_id)

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
        check_count(msg.txn, "txn", MAX_TXN)
        certs = partial(self._headers, msg, dst, now)
        if isinstance(msg, m.REQUEST_TYPES):
            sip: Request | Response = self.mapping.request(msg, dst, certs)
        else:
            if not isinstance(dst, m.NodeRef):
                raise ValueError("a response goes to a NodeRef (the requester)")
            sip = self.mapping.response(msg, dst, certs)
        sign(sip, self.identity, self.freshness.stamp(now),
             nonce if nonce is not None else secrets.token_bytes(8))
        return sip.encode()

    def _headers(
        self, msg: m.Message, dst: m.NodeRef | tuple[str, int], now: float,
    ) -> list[tuple[str, str]]:
        return self.certificates.headers(msg, dst, now) + self.crls.headers(dst)

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
            src_uri, node_params = self.mapping.sender(sip)
            sig_params = signature_params(sip)
        except PARSE_ERRORS as exc:
            raise WireError("malformed", str(exc)[:120]) from None
        if not self.mapping.names_overlay(sip, node_params):
            raise WireError("overlay", "message of another overlay")
        if sig_params is None:
            raise WireError("unsigned")
        try:
            src = ref_from_uri(src_uri, NODEID_HEADER)
            sig = Signature.read(sig_params)
            claim = Claim.read(sip)
        except WireError:
            raise
        except PARSE_ERRORS as exc:
            raise WireError("malformed", str(exc)[:120]) from None
        if self.crls.revoked(src.id):  # nothing else of it is worth checking
            raise WireError("revoked", "sender's certificate is revoked")
        peer = self._signer(sip, src, claim, now)
        if not sig.verifies(sip, peer):
            raise WireError("signature", "bad signature")
        self.certificates.keep(src.id, claim, peer)
        self.crls.read(sip, src.id)
        message = self._build(sip, src)
        # Authentic from here on: what follows may carry the message.
        try:
            self.freshness.check_time(src.id, sig, now, message)
        except WireError:
            # authentic, only late: its sender (restarted with its clock behind) may lack
            # our certificate, and must be able to check our 403 Stale Date to catch up
            self.certificates.lost_by(src.id, claim)
            raise
        self.mapping.check_destination(sip, message, self.identity.node_id)
        self.freshness.check_replay(src.id, sig, now, message)
        if isinstance(sip, Request):
            self.mapping.remember(sip, message, now)
        self.certificates.heard(src.id, claim)
        return message

    def _signer(
        self, sip: Request | Response, src: m.NodeRef, claim: Claim, now: float,
    ) -> PeerIdentity:
        """The key that must verify the message; `certificate_needed` when we hold none
        (then the WireError carries what the message claims, to address a 428)."""
        try:
            return self.certificates.identify(src.id, claim, self.freshness.clock(now))
        except Unverifiable as exc:
            self.mapping.check_destination(sip, None, self.identity.node_id)
            try:
                claimed: m.Message | None = self.mapping.build(sip, src)
            except PARSE_ERRORS:
                claimed = None
            raise WireError("certificate_needed", str(exc), claimed) from None

    def _build(self, sip: Request | Response, src: m.NodeRef) -> m.Message:
        try:
            return self.mapping.build(sip, src)
        except PARSE_ERRORS as exc:
            raise WireError("malformed", str(exc)[:120]) from None

    # ------------------------------------------------------------- answers and resends

    def receive(
        self, data: bytes, now: float, me: m.NodeRef, source: tuple[str, int] | None = None,
    ) -> Received:
        """Decode `data` (from transport address `source`) for node `me`, with what the
        codec itself must send: the answer to a refused request (`refusal_answer`), or,
        for an Error 428 answering a request we sent without our certificate, that
        request again with it (once; the node does not see that 428)."""
        try:
            message = self.decode(data, now)
        except WireError as exc:
            answer = self._answer(exc, me, now, source)
            return Received(None, exc, () if answer is None else (answer,))
        again = self.certificates.request_again(message)
        if again is not None:
            request, dst = again
            out = Outgoing(self.encode(request, dst, now), (dst.host, dst.port))
            return Received(None, None, (out,))
        return Received(message)

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
        answer = self._answer(exc, me, now, source)
        return None if answer is None else (answer.data, answer.to)

    def _answer(
        self, exc: WireError, me: m.NodeRef, now: float, source: tuple[str, int] | None,
    ) -> Outgoing | None:
        msg = exc.message
        if msg is None or not isinstance(msg, m.REQUEST_TYPES) or msg.src.id == me.id:
            return None
        if exc.reason == "stale":
            code, reason, to, back = STALE, STALE_REASON, (msg.src.host, msg.src.port), False
        elif exc.reason == "certificate_needed":
            if source is None or not self.certificates.may_answer(now):
                return None
            code, reason, to, back = CERT_NEEDED, CERT_NEEDED_REASON, source, True
        else:
            return None
        error = m.Error(src=me, txn=msg.txn, overlay=self.overlay, code=code, reason=reason)
        return Outgoing(self.encode(error, msg.src, now), to, back)
