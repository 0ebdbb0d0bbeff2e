import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlay.sip.digest import (
    DigestCredentials,
    DigestError,
    DigestServer,
    Verdict,
    build_authorization,
    compute_response,
    parse_credentials,
)

# RFC 7616 §3.9.1 worked example (password has a lower-case "of", erratum 4495).
RFC = dict(
    username="Mufasa",
    realm="http-auth@example.org",
    password="Circle of Life",
    method="GET",
    uri="/dir/index.html",
    nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
)
RFC_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC_RESPONSES = {
    "MD5": "8ca523f5e9506fed4657c9700eebdbec",
    "SHA-256": "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
}

SECRET = bytes(range(32))
REALM = "mesh.example"
T0 = 1_700_000_000.25


def server(**kw) -> DigestServer:
    return DigestServer(REALM, SECRET, **kw)


def answer(challenge: str, password: str = "pw", method: str = "REGISTER", user: str = "1001"):
    value = build_authorization(challenge, user, password, method, "sip:mesh.example", "c0ffee")
    return parse_credentials(value)


# --- test vectors -------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_rfc7616_vector_compute(algorithm):
    got = compute_response(algorithm=algorithm, qop="auth", cnonce=RFC_CNONCE, nc="00000001", **RFC)
    assert got == RFC_RESPONSES[algorithm]


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_rfc7616_vector_client_and_parser(algorithm):
    challenge = (
        f'Digest realm="{RFC["realm"]}", qop="auth, auth-int", algorithm={algorithm}, '
        f'nonce="{RFC["nonce"]}", opaque="{RFC_OPAQUE}"'
    )
    value = build_authorization(
        challenge, "Mufasa", "Circle of Life", "GET", "/dir/index.html", RFC_CNONCE, 1
    )
    creds = parse_credentials(value)
    assert creds == DigestCredentials(
        username="Mufasa",
        realm=RFC["realm"],
        nonce=RFC["nonce"],
        uri="/dir/index.html",
        response=RFC_RESPONSES[algorithm],
        algorithm=algorithm,
        qop="auth",
        cnonce=RFC_CNONCE,
        nc="00000001",
        opaque=RFC_OPAQUE,
    )


def test_rfc7616_header_as_printed_in_the_rfc():
    value = (
        'Digest username="Mufasa",\r\n    realm="http-auth@example.org",\r\n'
        '    uri="/dir/index.html",\r\n    algorithm=SHA-256,\r\n'
        f'    nonce="{RFC["nonce"]}",\r\n    nc=00000001,\r\n    cnonce="{RFC_CNONCE}",\r\n'
        f'    qop=auth,\r\n    response="{RFC_RESPONSES["SHA-256"]}",\r\n'
        f'    opaque="{RFC_OPAQUE}"'
    )
    creds = parse_credentials(value)
    assert (creds.username, creds.algorithm, creds.nc) == ("Mufasa", "SHA-256", "00000001")
    assert creds.response == RFC_RESPONSES["SHA-256"]


def test_rfc2069_vector_without_qop():
    # RFC 2069 §2.4 example; its printed response is wrong, erratum 749 gives this one.
    got = compute_response(
        algorithm="MD5",
        username="Mufasa",
        realm="testrealm@host.com",
        password="CircleOfLife",
        method="GET",
        uri="/dir/index.html",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
    )
    assert got == "1949323746fe6a43ef61f9606e7febea"


# --- challenges ---------------------------------------------------------------------------------


def test_challenge_offers_sha256_then_md5():
    sha, md5 = server().challenge(T0)
    assert sha.startswith('Digest realm="mesh.example", nonce="')
    assert sha.endswith(', algorithm=SHA-256, qop="auth"')
    assert md5.endswith(', algorithm=MD5, qop="auth"')
    assert "stale" not in sha
    assert all(v.endswith(", stale=true") for v in server().challenge(T0, stale=True))


def test_challenge_quotes_realm():
    value = DigestServer('a "b" \\ c', SECRET).challenge(T0)[0]
    assert value.startswith('Digest realm="a \\"b\\" \\\\ c", ')


def test_secret_must_be_long_enough():
    with pytest.raises(ValueError):
        DigestServer(REALM, b"short")


# --- verification -------------------------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 1], ids=["SHA-256", "MD5"])
def test_round_trip(index):
    challenge = server().challenge(T0)[index]
    creds = answer(challenge)
    assert creds.algorithm == ("SHA-256", "MD5")[index]
    assert server().verify(creds, "REGISTER", "pw", T0 + 1) is Verdict.OK


def test_round_trip_rfc2069_style_client():
    # Older phones and sipp's MD5 [authentication] ignore qop and omit algorithm.
    challenge = server().challenge(T0)[1].replace(', algorithm=MD5, qop="auth"', "")
    creds = answer(challenge)
    assert (creds.qop, creds.cnonce, creds.nc, creds.algorithm) == (None, None, None, "MD5")
    assert server().verify(creds, "REGISTER", "pw", T0) is Verdict.OK
    assert server().verify(creds, "REGISTER", "nope", T0) is Verdict.WRONG_RESPONSE


def test_upper_case_hex_response_accepted():
    creds = answer(server().challenge(T0)[0])
    creds = dataclasses.replace(creds, response=creds.response.upper())
    assert server().verify(creds, "REGISTER", "pw", T0) is Verdict.OK


def test_wrong_password_method_or_user():
    creds = answer(server().challenge(T0)[0])
    s = server()
    assert s.verify(creds, "REGISTER", "wrong", T0) is Verdict.WRONG_RESPONSE
    assert s.verify(creds, "INVITE", "pw", T0) is Verdict.WRONG_RESPONSE
    other_user = dataclasses.replace(creds, username="1002")
    assert s.verify(other_user, "REGISTER", "pw", T0) is Verdict.WRONG_RESPONSE


def test_stale_nonce():
    s = server(nonce_lifetime=60)
    creds = answer(s.challenge(T0)[0])
    assert s.verify(creds, "REGISTER", "pw", T0 + 60) is Verdict.OK
    assert s.verify(creds, "REGISTER", "pw", T0 + 61) is Verdict.STALE_NONCE
    assert s.verify(creds, "REGISTER", "pw", T0 - 5) is Verdict.STALE_NONCE  # clock went back
    # A stale nonce with a wrong password is not "stale": stale=true would mislead the phone.
    assert s.verify(creds, "REGISTER", "wrong", T0 + 61) is Verdict.WRONG_RESPONSE


def test_forged_nonces():
    s = server()
    creds = answer(s.challenge(T0)[0])
    stamp, mac = creds.nonce.split(".")
    later = format(int(stamp, 16) + 10**9, "x")
    flipped = mac[:-1] + ("0" if mac[-1] != "0" else "1")
    foreign = answer(DigestServer(REALM, b"x" * 32).challenge(T0)[0])
    for nonce in [f"{later}.{mac}", f"{stamp}.{flipped}", stamp, "", "garbage", f"{stamp}."]:
        forged = dataclasses.replace(creds, nonce=nonce)
        assert s.verify(forged, "REGISTER", "pw", T0) is Verdict.BAD_NONCE, nonce
    assert s.verify(foreign, "REGISTER", "pw", T0) is Verdict.BAD_NONCE


def test_realm_mismatch():
    challenge = server().challenge(T0)[0].replace('"mesh.example"', '"elsewhere"')
    assert server().verify(answer(challenge), "REGISTER", "pw", T0) is Verdict.REALM_MISMATCH


@pytest.mark.parametrize("algorithm", ["MD5-sess", "SHA-512-256", "SHA-256-sess", "x"])
def test_unsupported_algorithm(algorithm):
    creds = dataclasses.replace(answer(server().challenge(T0)[0]), algorithm=algorithm)
    assert server().verify(creds, "REGISTER", "pw", T0) is Verdict.UNSUPPORTED_ALGORITHM


def test_algorithm_name_is_case_insensitive():
    creds = dataclasses.replace(answer(server().challenge(T0)[0]), algorithm="sha-256")
    assert server().verify(creds, "REGISTER", "pw", T0) is Verdict.OK


@given(user=st.text(), password=st.text(), index=st.sampled_from([0, 1]))
def test_round_trip_any_username_and_password(user, password, index):
    s = server()
    creds = answer(s.challenge(T0)[index], password=password, user=user)
    assert creds.username == user
    assert s.verify(creds, "REGISTER", password, T0) is Verdict.OK


# --- parsing ------------------------------------------------------------------------------------


def test_parse_escapes_case_and_whitespace():
    creds = parse_credentials(
        'digest  USERNAME = "a\\"b\\\\c" ,Realm="r",nonce="n",  uri="sip:x"'
        ',response="00",Algorithm=SHA-256 , QOP="auth",nc="0000000A",cnonce=c,extra=1  '
    )
    assert creds == DigestCredentials(
        username='a"b\\c',
        realm="r",
        nonce="n",
        uri="sip:x",
        response="00",
        algorithm="SHA-256",
        qop="auth",
        cnonce="c",
        nc="0000000A",
    )


def test_parse_ignores_cnonce_and_nc_without_qop():
    creds = parse_credentials(
        'Digest username="u", realm="r", nonce="n", uri="u", response="0", cnonce="c", nc=zz'
    )
    assert (creds.qop, creds.cnonce, creds.nc) == (None, None, None)


VALID = 'Digest username="u", realm="r", nonce="n", uri="sip:r", response="00"'


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "Digest",
        "Digest ",
        "Basic dXNlcjpwYXNz",
        'Digestusername="u"',
        'Digest username="u',
        "Digest username",
        "Digest username=",
        'Digest username="u" realm="r"',
        'Digest =u, realm="r"',
        'Digest username=sip:u, realm="r"',
        VALID + ",",
        VALID + ",,",
        VALID + ', username="v"',
        VALID.replace('username="u", ', ""),
        VALID.replace(', response="00"', ""),
        VALID + ", qop=auth-int, nc=00000001, cnonce=c",
        VALID + ", qop=auth, nc=00000001",
        VALID + ", qop=auth, cnonce=c",
        VALID + ", qop=auth, cnonce=c, nc=1",
        VALID + ", qop=auth, cnonce=c, nc=0000000g",
        VALID + ', opaque="\ud800"',
    ],
)
def test_parse_rejects_malformed(value):
    with pytest.raises(DigestError) as info:
        parse_credentials(value)
    assert info.value.reason


def test_build_authorization_rejects_bad_challenges():
    for challenge in ['Digest nonce="n"', 'Digest realm="r", nonce="n", algorithm=MD5-sess']:
        with pytest.raises(DigestError):
            build_authorization(challenge, "u", "p", "REGISTER", "sip:r", "c")


def _parse_or_error(value: str) -> None:
    try:
        creds = parse_credentials(value)
    except DigestError:
        return
    # Whatever parses must also verify without crashing.
    assert isinstance(server().verify(creds, "REGISTER", "pw", T0), Verdict)


@given(st.text())
def test_fuzz_arbitrary_text(value):
    _parse_or_error(value)


_PIECES = st.sampled_from(
    'Digest | |\t|\r\n |,|=|"|\\|username|realm|nonce|uri|response|qop|auth|nc|00000001'
    "|cnonce|algorithm|SHA-256|x|é".split("|")
)


@given(st.lists(_PIECES | st.text(max_size=3), max_size=40))
def test_fuzz_near_grammar(pieces):
    _parse_or_error("Digest " + "".join(pieces))


_NAMES = st.sampled_from("username realm nonce uri response algorithm qop nc cnonce".split())


@given(st.lists(st.tuples(_NAMES, st.text()), max_size=10))
def test_fuzz_well_formed_params(params):
    _parse_or_error("Digest " + ", ".join(f'{k}="{v}"' for k, v in params))


def test_digest_error_is_a_400_parse_error():
    with pytest.raises(DigestError) as info:
        parse_credentials("Basic x")
    assert (info.value.reason, info.value.status) == ("scheme is not Digest", 400)
