"""Digest registration policy (RFC 8760): challenges, SHA-256 and MD5 answers, refusals."""

import pytest

from appliance.auth import DigestPolicy
from appliance.registrar import Location
from overlay.sip.digest import build_authorization
from overlay.sip.message import Request, parse_message

PHONE = ("UDP", "10.99.0.11", 5062)
USERS = {"1001": "correct horse", "1002": "battery staple"}


def register(auth: str | None = None, ext: str = "1001", cseq: int = 1) -> Request:
    text = (
        "REGISTER sip:10.99.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.99.0.11:5062;branch=z9hG4bKa"
        f"{cseq}\r\nFrom: <sip:{ext}@10.99.0.1>;tag=f\r\nTo: <sip:{ext}@10.99.0.1>\r\n"
        f"Call-ID: c1\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{ext}@10.99.0.11:5062>\r\n"
        + (f"Authorization: {auth}\r\n" if auth else "") + "\r\n"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, Request)
    return msg


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_challenge_then_answer(algorithm: str) -> None:
    policy = DigestPolicy(USERS, "meshsip", b"k" * 32, ("SHA-256", "MD5"))
    loc = Location(open_policy=False, auth=policy)
    first = loc.register(register(), PHONE, 10.0)
    assert first.status == 401
    challenges = first.get_all("WWW-Authenticate")
    assert [c.split("algorithm=")[1].split(",")[0] for c in challenges] == ["SHA-256", "MD5"]
    (chosen,) = [c for c in challenges if f"algorithm={algorithm}," in c]
    auth = build_authorization(chosen, "1001", "correct horse", "REGISTER", "sip:10.99.0.1",
                               cnonce="abc")
    ok = loc.register(register(auth, cseq=2), PHONE, 11.0)
    assert ok.status == 200 and loc.lookup("1001", 12.0)


def test_wrong_password_wrong_user_and_garbage() -> None:
    policy = DigestPolicy(USERS, "meshsip", b"k" * 32, ("MD5",))
    loc = Location(open_policy=False, auth=policy)
    (challenge,) = loc.register(register(), PHONE, 0.0).get_all("WWW-Authenticate")
    bad = build_authorization(challenge, "1001", "wrong", "REGISTER", "sip:10.99.0.1", "c")
    assert loc.register(register(bad, cseq=2), PHONE, 1.0).status == 401
    other = build_authorization(challenge, "1002", "battery staple", "REGISTER",
                                "sip:10.99.0.1", "c")
    assert loc.register(register(other, cseq=3), PHONE, 1.0).status == 403
    assert loc.register(register('Digest username="1001', cseq=4), PHONE, 1.0).status == 400
    assert loc.lookup("1001", 2.0) == []


def test_stale_nonce_is_rechallenged_with_stale_flag() -> None:
    policy = DigestPolicy(USERS, "meshsip", b"k" * 32, ("MD5",))
    loc = Location(open_policy=False, auth=policy)
    (challenge,) = loc.register(register(), PHONE, 0.0).get_all("WWW-Authenticate")
    auth = build_authorization(challenge, "1001", "correct horse", "REGISTER",
                               "sip:10.99.0.1", "c")
    late = loc.register(register(auth, cseq=2), PHONE, 10_000.0)
    assert late.status == 401 and "stale=true" in late.get("WWW-Authenticate")
