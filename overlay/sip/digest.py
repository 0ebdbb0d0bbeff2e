"""SIP digest authentication (RFC 3261 §22, RFC 8760, RFC 7616): server side, sans-IO.

Nonces are stateless, "<issue time in ms, hex>.<HMAC-SHA256(secret, that text), 128 bits>", so
the node that issued one checks it without storage. A restart (new secret) turns outstanding
nonces into BAD_NONCE; the caller answers that, like any failure, with a fresh challenge.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from enum import StrEnum

from .errors import SipParseError

_HASHES = {"MD5": "md5", "SHA-256": "sha256"}
ALGORITHMS = ("SHA-256", "MD5")  # offer order: RFC 8760 §2.4 wants SHA-256 first

_SWS = re.compile(r"[ \t\r\n]*")
_TOKEN = re.compile(r"[A-Za-z0-9.!%*_+`'~-]+")  # RFC 3261 §25.1 token
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)  # linear: branches never overlap
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_NC = re.compile(r"[0-9A-Fa-f]{8}")


class DigestError(SipParseError):
    """A digest header that is malformed or asks for what we do not support (status 400)."""


class Verdict(StrEnum):
    OK = "ok"
    STALE_NONCE = "stale nonce"
    WRONG_RESPONSE = "wrong response"
    BAD_NONCE = "bad nonce"
    UNSUPPORTED_ALGORITHM = "unsupported algorithm"
    REALM_MISMATCH = "realm mismatch"


@dataclass(frozen=True, slots=True)
class DigestCredentials:
    """The parameters of an Authorization / Proxy-Authorization header, unescaped."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"  # absent means MD5 (RFC 7616 §3.4)
    qop: str | None = None  # None: RFC 2069-style client, no cnonce/nc
    cnonce: str | None = None
    nc: str | None = None
    opaque: str | None = None


def _bytes(text: str) -> bytes:
    # surrogateescape gives back the original bytes if the SIP parser decoded with it.
    return text.encode("utf-8", "surrogateescape")


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _parse_digest(value: str) -> dict[str, str]:
    """Parse `Digest name=value, ...` into {lower-case name: unescaped value}."""
    try:
        _bytes(value)
    except UnicodeEncodeError:
        raise DigestError("header is not encodable text") from None
    scheme = _TOKEN.match(value, _SWS.match(value).end())
    if scheme is None or scheme.group().lower() != "digest":
        raise DigestError("scheme is not Digest")
    pos = _SWS.match(value, scheme.end()).end()
    if pos == scheme.end():
        raise DigestError("no parameters after Digest")
    params: dict[str, str] = {}
    while True:
        name = _TOKEN.match(value, pos)
        if name is None:
            raise DigestError(f"expected a parameter name at offset {pos}")
        pos = _SWS.match(value, name.end()).end()
        if not value.startswith("=", pos):
            raise DigestError(f"expected '=' after {name.group()!r}")
        pos = _SWS.match(value, pos + 1).end()
        if quoted := _QUOTED.match(value, pos):
            param, end = _ESCAPE.sub(r"\1", quoted.group(1)), quoted.end()
        elif token := _TOKEN.match(value, pos):
            param, end = token.group(), token.end()
        else:
            raise DigestError(f"bad value for {name.group()!r}")
        key = name.group().lower()
        if key in params:  # two answers to one question: refuse rather than pick one
            raise DigestError(f"duplicate parameter {key!r}")
        params[key] = param
        pos = _SWS.match(value, end).end()
        if pos == len(value):
            return params
        if value[pos] != ",":
            raise DigestError(f"expected ',' at offset {pos}")
        pos = _SWS.match(value, pos + 1).end()


def parse_credentials(value: str) -> DigestCredentials:
    """Parse an Authorization header value; raises only DigestError."""
    p = _parse_digest(value)
    missing = [k for k in ("username", "realm", "nonce", "uri", "response") if k not in p]
    if missing:
        raise DigestError("missing " + ", ".join(missing))
    qop = p.get("qop")
    if qop is not None:
        if qop.lower() != "auth":  # we only ever offer qop="auth"
            raise DigestError(f"unsupported qop {qop!r}")
        if "cnonce" not in p or "nc" not in p:
            raise DigestError("qop=auth needs cnonce and nc")
        if not _NC.fullmatch(p["nc"]):
            raise DigestError("nc must be 8 hex digits")
    return DigestCredentials(
        username=p["username"],
        realm=p["realm"],
        nonce=p["nonce"],
        uri=p["uri"],
        response=p["response"],
        algorithm=p.get("algorithm", "MD5"),
        qop=qop,
        cnonce=p.get("cnonce") if qop else None,
        nc=p.get("nc") if qop else None,
        opaque=p.get("opaque"),
    )


def _hash(algorithm: str, text: str) -> str:
    return hashlib.new(_HASHES[algorithm], _bytes(text)).hexdigest()


def compute_response(
    *,
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    cnonce: str | None = None,
    nc: str | None = None,
) -> str:
    """The request-digest of RFC 7616 §3.4.1; qop=None gives the RFC 2069 form."""
    alg = algorithm.upper()
    if alg not in _HASHES:
        raise DigestError(f"unsupported algorithm {algorithm!r}")
    ha1 = _hash(alg, f"{username}:{realm}:{password}")
    ha2 = _hash(alg, f"{method}:{uri}")
    if qop is None:
        return _hash(alg, f"{ha1}:{nonce}:{ha2}")
    if qop.lower() != "auth" or cnonce is None or nc is None:
        raise DigestError("only qop=auth is supported, and it needs cnonce and nc")
    return _hash(alg, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


class DigestServer:
    """Issues challenges and checks credentials for one realm; time is always passed in."""

    def __init__(
        self,
        realm: str,
        secret: bytes,
        nonce_lifetime: float = 300.0,
        algorithms: tuple[str, ...] = ALGORITHMS,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("secret must be at least 16 random bytes")
        if not algorithms or any(a not in ALGORITHMS for a in algorithms):
            raise ValueError(f"algorithms must be taken from {ALGORITHMS}")
        self.algorithms = algorithms
        self.realm = realm
        self.nonce_lifetime = nonce_lifetime
        self._secret = secret

    def _sign(self, stamp: str) -> str:
        mac = hmac.new(self._secret, _bytes(stamp), hashlib.sha256).hexdigest()
        return f"{stamp}.{mac[:32]}"

    def _issued_at(self, nonce: str) -> float | None:
        stamp = nonce.partition(".")[0]
        if not hmac.compare_digest(_bytes(self._sign(stamp)), _bytes(nonce)):
            return None
        return int(stamp, 16) / 1000  # only our own canonical hex gets here

    def challenge(self, now: float, stale: bool = False) -> list[str]:
        """WWW-Authenticate / Proxy-Authenticate values, one per offered algorithm."""
        nonce = self._sign(format(int(now * 1000), "x"))
        tail = ", stale=true" if stale else ""
        return [
            f'Digest realm={_quote(self.realm)}, nonce="{nonce}", algorithm={alg}, qop="auth"{tail}'
            for alg in self.algorithms
        ]

    def verify(self, creds: DigestCredentials, method: str, password: str, now: float) -> Verdict:
        """Check credentials; the caller still compares creds.uri with the Request-URI."""
        algorithm = creds.algorithm.upper()
        if algorithm not in _HASHES:
            return Verdict.UNSUPPORTED_ALGORITHM
        if creds.realm != self.realm:
            return Verdict.REALM_MISMATCH
        issued = self._issued_at(creds.nonce)
        if issued is None:
            return Verdict.BAD_NONCE
        expected = compute_response(
            algorithm=algorithm,
            username=creds.username,
            realm=self.realm,
            password=password,
            method=method,
            uri=creds.uri,
            nonce=creds.nonce,
            qop=creds.qop,
            cnonce=creds.cnonce,
            nc=creds.nc,
        )
        if not hmac.compare_digest(_bytes(expected), _bytes(creds.response.lower())):
            return Verdict.WRONG_RESPONSE
        # Stale only once the response is right, so stale=true truly means "password is
        # fine, just retry with the new nonce" (RFC 7616 §3.3).
        if not 0 <= now - issued <= self.nonce_lifetime:
            return Verdict.STALE_NONCE
        # Stateless nonces cannot track nc, so a replay within the nonce lifetime is accepted.
        return Verdict.OK


def build_authorization(
    challenge_value: str,
    username: str,
    password: str,
    method: str,
    uri: str,
    cnonce: str,
    nc: int = 1,
) -> str:
    """Client side (for tests): answer one challenge value with an Authorization value."""
    ch = _parse_digest(challenge_value)
    if "realm" not in ch or "nonce" not in ch:
        raise DigestError("challenge lacks realm or nonce")
    algorithm = ch.get("algorithm", "MD5")
    offered = {q.strip().lower() for q in ch.get("qop", "").split(",")}
    qop = "auth" if "auth" in offered else None  # None: answer RFC 2069-style
    nc_text = f"{nc:08x}"
    response = compute_response(
        algorithm=algorithm,
        username=username,
        realm=ch["realm"],
        password=password,
        method=method,
        uri=uri,
        nonce=ch["nonce"],
        qop=qop,
        cnonce=cnonce,
        nc=nc_text,
    )
    parts = [
        f"username={_quote(username)}",
        f"realm={_quote(ch['realm'])}",
        f"nonce={_quote(ch['nonce'])}",
        f"uri={_quote(uri)}",
        f'response="{response}"',
    ]
    if "algorithm" in ch:
        parts.append(f"algorithm={algorithm}")  # a token: compute_response vetted it
    if qop:
        parts += [f"cnonce={_quote(cnonce)}", f"qop={qop}", f"nc={nc_text}"]
    if "opaque" in ch:
        parts.append(f"opaque={_quote(ch['opaque'])}")
    return "Digest " + ", ".join(parts)
