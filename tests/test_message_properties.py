"""Property tests of the SIP message parser and serialiser.

(a) Generated messages survive encode -> parse unchanged, also when the wire form uses
    compact names, odd case, LWS around the colon, line folding, comma-joined list values and
    bare LF line ends.
(b) Arbitrary bytes and mutations of valid messages raise nothing but SipParseError, and
    whatever parses re-encodes to bytes that parse back to the same message.
"""

import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overlay.sip.errors import SipParseError
from overlay.sip.message import (
    CANONICAL,
    COMPACT,
    LIST_HEADERS,
    Message,
    Request,
    Response,
    Via,
    parse_message,
)
from overlay.sip.uri import NameAddr, Uri, parse_name_addr, parse_uri, quote

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

ALNUM = string.ascii_letters + string.digits
TOKEN = ALNUM + "-.!%*_+`'~"
PARAMCHAR = ALNUM + "-_.!~*'()" + "[]/:&+$"  # RFC 3261 paramchar, escapes aside
HNVCHAR = ALNUM + "-_.!~*'()" + "[]/?:+$"  # hname / hvalue characters
WORDCHAR = TOKEN + "()<>:\\\"/[]?{}"
# Any text but lone surrogates (not encodable) and CR/LF (no place in a header line).
ANY = st.characters(blacklist_categories=("Cs",))
LINE = st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n")
LONG_NAME = {v: k for k, v in COMPACT.items()}

tokens = st.text(TOKEN, min_size=1, max_size=10)
labels = st.text(ALNUM + "-", min_size=1, max_size=8).map(lambda s: s.strip("-") or "a")
hostnames = st.builds(
    lambda ls, dot: ".".join(ls) + dot, st.lists(labels, min_size=1, max_size=4),
    st.sampled_from(["", "", "."]),
)
hosts = st.one_of(
    hostnames,
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
)
ports = st.none() | st.integers(0, 65535)
uri_params = st.dictionaries(
    tokens.map(str.lower), st.none() | st.text(PARAMCHAR + "%", min_size=1, max_size=8),
    max_size=3,
)
gen_params = st.dictionaries(  # header parameters: token, host or quoted-string values
    tokens.map(str.lower).filter(lambda k: k != "expires"),  # Contact's must be a number
    st.none() | tokens | hosts | st.text(ANY, max_size=8).map(quote),
    max_size=3,
)


@st.composite
def sip_uris(draw, headers=True):
    user = draw(st.none() | st.text(ANY, min_size=1, max_size=12))
    return Uri(
        scheme=draw(st.sampled_from(["sip", "sips"])),
        user=user,
        host=draw(hosts),
        port=draw(ports),
        params=draw(uri_params),
        headers=draw(st.dictionaries(st.text(HNVCHAR, min_size=1, max_size=6),
                                     st.text(HNVCHAR, max_size=6), max_size=2))
        if headers else {},
        password=draw(st.none() | st.text(ANY, max_size=8)) if user is not None else None,
    )


opaque_uris = st.builds(
    lambda scheme, rest: Uri(scheme=scheme, opaque=rest),
    st.sampled_from(["tel", "urn", "http", "isbn"]),
    st.text(ALNUM + "-+.;=/:?&%,()", min_size=1, max_size=16),
)
any_uris = sip_uris() | opaque_uris


@st.composite
def name_addrs(draw, tag=False):
    params = draw(gen_params)
    if tag:
        params["tag"] = draw(tokens)
    display = draw(st.none() | st.text(LINE, max_size=12))
    return NameAddr(draw(any_uris), display, params)


vias = st.builds(
    lambda transport, host, port, branch, params: Via(
        transport, host, port, {"branch": "z9hG4bK" + branch, **params}
    ),
    st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "WS"]) | tokens.map(str.upper),
    hosts, ports, tokens,
    st.dictionaries(st.sampled_from(["rport", "received", "ttl", "x-y"]),
                    st.none() | tokens, max_size=2)
    .map(lambda p: p | {"rport": str(len(p["rport"]))} if p.get("rport") else p),  # a port
)
call_ids = st.builds(
    lambda a, b: a if b is None else f"{a}@{b}",
    st.text(WORDCHAR, min_size=1, max_size=12), st.none() | st.text(WORDCHAR, min_size=1),
)
extra_names = tokens.filter(lambda n: n.lower() not in CANONICAL)
extra_values = st.text(LINE, max_size=20).map(lambda v: v.strip(" \t"))


@st.composite
def messages(draw) -> tuple[Message, dict]:
    """A consistent message and the parsed views it should give."""
    method = draw(tokens | st.sampled_from(["INVITE", "REGISTER", "ACK", "BYE", "OPTIONS"]))
    via_list = draw(st.lists(vias, min_size=1, max_size=2))
    from_ = draw(name_addrs(tag=True))
    to = draw(name_addrs())
    contacts = draw(st.just([None]) | st.lists(name_addrs(), max_size=2))
    cseq = (draw(st.integers(0, 2**31 - 1)), method)
    headers = [("Via", str(v)) for v in via_list]
    headers += [("From", str(from_)), ("To", str(to)), ("Call-ID", draw(call_ids)),
                ("CSeq", f"{cseq[0]} {method}")]
    headers += [("Contact", "*" if c is None else str(c)) for c in contacts]
    extras = draw(st.lists(st.one_of(
        st.tuples(extra_names, extra_values),
        st.tuples(st.sampled_from(["Subject", "User-Agent", "Server", "Organization"]),
                  extra_values),
        st.tuples(st.sampled_from(["Allow", "Supported", "Require"]), tokens),
        st.tuples(st.sampled_from(["Route", "Record-Route", "Path"]),
                  name_addrs().map(str)),
    ), max_size=4))
    for name, value in extras:
        headers.insert(draw(st.integers(0, len(headers))), (name, value))
    if draw(st.booleans()):
        headers.append(("Max-Forwards", str(draw(st.integers(0, 255)))))
    body = draw(st.binary(max_size=80))
    if body:
        headers.append(("Content-Type", "application/sdp"))
    headers.append(("Content-Length", str(len(body))))  # encode() writes it last
    message: Message
    if draw(st.booleans()):
        message = Request(method, draw(sip_uris(headers=False) | opaque_uris), headers, body)
    else:
        reason = draw(st.text(LINE, max_size=20))
        message = Response(draw(st.integers(100, 699)), reason, headers, body)
    views = {"vias": via_list, "from_": from_, "to": to, "cseq": cseq, "contacts": contacts}
    return message, views


@st.composite
def wire_forms(draw, message: Message) -> bytes:
    """Another spelling of `message` on the wire that must parse to the same message."""
    lines = [message.start_line()]
    headers = list(message.headers)
    i = 0
    while i < len(headers):
        name, value = headers[i]
        # Runs of a list header may share one line, comma-separated.
        while (name in LIST_HEADERS and i + 1 < len(headers) and headers[i + 1][0] == name
               and draw(st.booleans())):
            i += 1
            value += draw(st.sampled_from([",", ", ", " ,\t", ",\r\n "])) + headers[i][1]
        if name in CANONICAL.values():
            name = draw(st.sampled_from(
                [name, name.lower(), name.upper(), LONG_NAME.get(name, name)]))
        spaces = [j for j, ch in enumerate(value) if ch == " " and j and value[j - 1] != "\n"
                  and value[j + 1 : j + 2] not in (" ", "\t", "")]
        if spaces and draw(st.booleans()):  # fold at a lone space: unfolds to one space
            j = draw(st.sampled_from(spaces))
            value = value[:j] + draw(st.sampled_from(["\r\n ", "\r\n\t", "\r\n \t "])) + \
                value[j + 1 :]
        sep = draw(st.sampled_from([": ", ":", " : ", ":\t", "\t:   ", ":\r\n "]))
        lines.append(f"{name}{sep}{value}")
        i += 1
    head = "\r\n".join(lines) + "\r\n\r\n"
    if draw(st.booleans()):
        head = head.replace("\r\n", "\n")
    prefix = draw(st.sampled_from([b"", b"\r\n", b"\r\n\r\n"]))  # keep-alives
    return prefix + head.encode("utf-8", "surrogateescape") + message.body


@SETTINGS
@given(st.data())
def test_generated_messages_round_trip(data):
    message, views = data.draw(messages())
    wire = message.encode()
    parsed = parse_message(wire)
    assert parsed == message
    for name, expected in views.items():
        got = getattr(parsed, name)
        assert (got() if callable(got) else got) == expected, name
    assert parsed.encode() == wire
    # Other spellings of the same message on the wire.
    assert parse_message(data.draw(wire_forms(message))) == message


@SETTINGS
@given(any_uris)
def test_uri_round_trip(uri):
    assert parse_uri(str(uri)) == uri


@SETTINGS
@given(name_addrs(tag=True))
def test_name_addr_round_trip(na):
    assert parse_name_addr(str(na)) == na


# ---------------------------------------------------------------- robustness

TORTURE = Path(__file__).parent / "data" / "rfc4475"
SEEDS = [
    (b"REGISTER sip:example.net SIP/2.0\r\n"
     b"Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK776asdhds;rport\r\n"
     b"Max-Forwards: 70\r\nTo: <sip:alice@example.net>\r\n"
     b"From: \"Al, \\\"the\\\" ice\" <sip:alice@example.net>;tag=1928301774\r\n"
     b"Call-ID: a84b4c76e66710@10.0.0.5\r\nCSeq: 314159 REGISTER\r\n"
     b"Contact: <sip:alice@10.0.0.5:5060;transport=udp>;expires=3600, sip:a@[::1];q=0.5\r\n"
     b"Expires: 3600\r\nContent-Length: 0\r\n\r\n"),
    (b"SIP/2.0 200 OK\r\nv: SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/TCP b:5070\r\n"
     b"f: <sip:a@b>;tag=1\r\nt: <sip:c@d>;tag=2\r\ni: x@y\r\nCSeq: 1 INVITE\r\n"
     b"Record-Route: <sip:p1;lr>,\r\n <sip:p2;lr>\r\nc: application/sdp\r\nl: 4\r\n\r\nv=0\r\n"),
    *(sorted(p.read_bytes() for p in TORTURE.glob("*.dat")) if TORTURE.is_dir() else []),
]
INSERTS = [b"\r", b"\n", b"\r\n", b"\x00", b'"', b"<", b">", b",", b";", b":", b" ", b"\t",
           b"\\", b"%", b"@", b"?", b"=", b"\r\n ", b"\xff", b"\xc3", b"\xe2\x80\xa8", "²".encode()]


def normalised(message: Message) -> Message:
    """`message` as encode() writes it: one Content-Length, last, equal to the body size."""
    headers = [h for h in message.headers if h[0] != "Content-Length"]
    headers.append(("Content-Length", str(len(message.body))))
    if isinstance(message, Request):
        return Request(message.method, message.uri, headers, message.body)
    return Response(message.status, message.reason, headers, message.body)


def check(data: bytes) -> None:
    """Parse `data`; whatever parses must re-encode to bytes that give the same message."""
    try:
        message = parse_message(data)
    except SipParseError as exc:
        assert exc.reason and exc.status in (400, 505)
        return
    again = parse_message(message.encode())
    assert again == normalised(message)
    assert parse_message(again.encode()) == again
    # The parsed views never fail on a message that parsed.
    message.vias, message.from_, message.to, message.cseq, message.contacts()  # noqa: B018


@st.composite
def mutations(draw, seeds: st.SearchStrategy[bytes] | None = None) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS) if seeds is None else seeds))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "duplicate"]))
        if op == "flip" and pos < len(data):
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[pos:pos] = draw(st.sampled_from(INSERTS) | st.binary(min_size=1, max_size=3))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[pos:]
        elif op == "duplicate":
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 40))]
    return bytes(data)


fragments = st.lists(st.sampled_from([
    b"INVITE", b"SIP/2.0", b"sip:", b"a@b", b"[::1]", b":5060", b" ", b"\r\n", b"\n",
    b"\r\n ", b"Via:", b"v:", b"SIP/2.0/UDP h", b";branch=z9hG4bK1", b"From:", b"To:", b"t:",
    b"Call-ID:", b"CSeq:", b"1 INVITE", b"Contact:", b"*", b"<", b">", b'"', b",", b";",
    b"=", b"tag=x", b"Content-Length:", b"0", b"99", b"\r\n\r\n", b"\xff", b"200", b"OK",
    b"Max-Forwards:", b"\\", b"%", b"%41", b"?", b"&",
]), max_size=40).map(b"".join)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=300) | fragments)
def test_arbitrary_bytes_only_raise_sip_parse_error(data):
    check(data)


@settings(max_examples=1000, deadline=None)
@given(mutations())
def test_mutated_messages_only_raise_sip_parse_error(data):
    check(data)


@SETTINGS
@given(st.data())
def test_mutated_generated_messages(data):
    message, _ = data.draw(messages())
    check(data.draw(mutations(st.just(message.encode()))))


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_seeds_parse(seed):
    check(seed)
    parse_message(seed)
