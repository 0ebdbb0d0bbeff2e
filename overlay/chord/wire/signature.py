"""What `DHT-Signature` signs, and signing and checking it.

Every header but the hop-by-hop ones is covered, with the start line and the body, as
netstrings (docs/overlay-wire-format.md, "Signature"). Which key checks a signature is
the certificate exchange's business (`certificates.py`); this module only says what the
bytes are and whether they verify.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...identity import NodeIdentity, PeerIdentity
from ...sip.message import Request, Response
from ...sip.uri import parse_params
from .values import DIGITS, NONCE, SIG_ALG, SIG_HEADER, WireError, b64d, b64e

# Not covered by the signature: headers a hop may add, remove or change.
UNSIGNED = frozenset({
    "via", "max-forwards", "route", "record-route", "content-length", SIG_HEADER.lower(),
})


def _netstrings(parts: list[bytes]) -> bytes:
    return b"".join(b"%d:%s," % (len(p), p) for p in parts)


def signing_input(msg: Request | Response, alg: str, ts: str, nonce: str) -> bytes:
    """The bytes DHT-Signature signs (docs/overlay-wire-format.md, "Signature")."""
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


def sign(sip: Request | Response, identity: NodeIdentity, ts_ms: int, nonce: bytes) -> None:
    """Append the DHT-Signature of `sip` (time stamp `ts_ms`, Unix ms) by `identity`."""
    ts, nonce_hex = str(ts_ms), nonce.hex()
    if not NONCE.match(nonce_hex):
        raise ValueError("nonce must be 8 bytes")
    signature = identity.sign(signing_input(sip, SIG_ALG, ts, nonce_hex))
    sip.headers.append(
        (SIG_HEADER, f"alg={SIG_ALG};ts={ts};nonce={nonce_hex};sig={b64e(signature)}")
    )


def signature_params(sip: Request | Response) -> dict[str, str | None] | None:
    """The parameters of the one DHT-Signature header (None: unsigned); ValueError if
    there are several."""
    sigs = sip.get_all(SIG_HEADER)
    if len(sigs) > 1:
        raise ValueError(f"more than one {SIG_HEADER}")
    return parse_params(sigs[0], SIG_HEADER) if sigs else None


@dataclass(slots=True, frozen=True)
class Signature:
    """A DHT-Signature read from a message (not yet checked)."""

    alg: str
    ts: str  # Unix milliseconds, as written
    nonce: str  # 16 hex digits
    value: bytes

    @classmethod
    def read(cls, params: dict[str, str | None]) -> Signature:
        """WireError("signature") for an unknown algorithm; ValueError if malformed."""
        alg, ts, nonce, sig = (params.get(k) for k in ("alg", "ts", "nonce", "sig"))
        if alg != SIG_ALG:
            raise WireError("signature", f"unknown signature algorithm {alg!r}")
        if ts is None or not DIGITS.match(ts) or len(ts) > 15:
            raise ValueError("bad ts")
        if nonce is None or not NONCE.match(nonce) or sig is None:
            raise ValueError("bad nonce or sig")
        return cls(alg, ts, nonce, b64d(sig))

    def verifies(self, sip: Request | Response, peer: PeerIdentity) -> bool:
        return peer.verify(signing_input(sip, self.alg, self.ts, self.nonce), self.value)
