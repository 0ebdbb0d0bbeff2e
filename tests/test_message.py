"""Unit tests of the SIP message parser (RFC 3261 sections 7, 19.1, 20, 25)."""

import pytest

from overlay.sip.errors import SipParseError
from overlay.sip.message import (
    Request,
    Response,
    Via,
    parse_cseq,
    parse_message,
    parse_via,
)
from overlay.sip.uri import NameAddr, Uri, parse_name_addr, parse_uri, quote, unquote

CRLF = "\r\n"

BASE = [
    "Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds",
    "Max-Forwards: 70",
    "To: Bob <sip:bob@example.com>",
    'From: "Alice" <sip:alice@example.com>;tag=1928301774',
    "Call-ID: a84b4c76e66710@pc33.example.com",
]


def msg(start: str, *headers: str, cseq: str = "314159 INVITE", body: bytes = b"",
        length: int | None = None, base: bool = True) -> bytes:
    """A message from its lines; Content-Length is len(body) unless given (-1: none)."""
    lines = [start, *(BASE if base else []), *([f"CSeq: {cseq}"] if cseq else []), *headers]
    length = len(body) if length is None else length
    if length >= 0:
        lines.append(f"Content-Length: {length}")
    return (CRLF.join(lines) + CRLF + CRLF).encode() + body


def invite(*headers: str, **kw) -> bytes:
    return msg("INVITE sip:bob@example.com SIP/2.0", *headers, **kw)


def bad(data: bytes, *words: str, status: int = 400) -> SipParseError:
    """Assert that `data` is rejected with a reason mentioning every one of `words`."""
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    for word in words:
        assert word.lower() in info.value.reason.lower(), info.value.reason
    assert info.value.status == status
    return info.value


# ---------------------------------------------------------------- start lines


def test_request_basics():
    m = parse_message(invite(body=b"v=0\r\n"))
    assert isinstance(m, Request)
    assert m.method == "INVITE"
    assert m.uri == Uri("sip", "bob", "example.com")
    assert m.cseq == (314159, "INVITE")
    assert m.call_id == "a84b4c76e66710@pc33.example.com"
    assert m.max_forwards == 70
    assert m.body == b"v=0\r\n"
    assert m.get("content-length") == "5"


def test_response_basics():
    m = parse_message(msg("SIP/2.0 180 Ringing"))
    assert isinstance(m, Response)
    assert (m.status, m.reason) == (180, "Ringing")
    assert m.encode().startswith(b"SIP/2.0 180 Ringing\r\n")


@pytest.mark.parametrize("line", ["SIP/2.0 100 ", "SIP/2.0 100"])
def test_response_with_empty_reason(line):
    m = parse_message(msg(line))
    assert (m.status, m.reason) == (100, "")
    # Status-Line = SIP-Version SP Status-Code SP Reason-Phrase: the SP stays.
    assert m.encode().startswith(b"SIP/2.0 100 \r\n")
    assert parse_message(m.encode()) == m


def test_response_reason_keeps_its_spaces():
    m = parse_message(msg("SIP/2.0 200 all  good "))
    assert m.reason == "all  good "
    assert parse_message(m.encode()) == m


def test_utf8_reason_phrase():
    reason = "= 2**3 * 5**2 но сто девяносто девять - простое"
    m = parse_message(msg(f"SIP/2.0 200 {reason}"))
    assert m.reason == reason
    assert reason.encode() in m.encode()


def test_response_status_line_case_insensitive_version():
    m = parse_message(msg("sip/2.0 200 OK"))
    assert isinstance(m, Response) and m.status == 200


@pytest.mark.parametrize("code", ["99", "700", "1000", "2OO", "-20", "4294967301", "²²²", "٢٠٠"])
def test_bad_status_code(code):
    bad(msg(f"SIP/2.0 {code} Weird"), "status code")


def test_sip_3_request_gives_505():
    bad(invite().replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1), "version", status=505)


def test_unsupported_version_wins_over_header_errors():
    # RFC 4475 3.1.2.16: the Via carries SIP/7.0 too, yet the answer is 505.
    data = invite().replace(b"SIP/2.0", b"SIP/7.0")
    bad(data, "version", status=505)


def test_sip_3_response_is_rejected():
    err = bad(msg("SIP/3.0 200 OK"), "version", status=505)
    assert "3.0" in err.reason


@pytest.mark.parametrize(
    "line, word",
    [
        ("INVITE  sip:bob@example.com SIP/2.0", "request line"),
        ("INVITE sip:bob@example.com SIP/2.0 ", "request line"),
        ("INVITE sip:bob@example.com; lr SIP/2.0", "request line"),
        ("INVITE sip:bob@example.com", "request line"),
        ("INVITE <sip:bob@example.com> SIP/2.0", "<>"),
        ("INVITE sip:bob@example.com?Route=%3Csip:x%3E SIP/2.0", "headers"),
        ("INV@TE sip:bob@example.com SIP/2.0", "method"),
        ("INVITE sip:bob@example.com HTTP/1.1", "version"),
        ("INVITE bob@example.com SIP/2.0", "scheme"),
    ],
)
def test_bad_request_line(line, word):
    bad(msg(line, cseq="314159 INVITE"), word)


def test_unknown_uri_scheme_in_request_line_is_kept_opaque():
    m = parse_message(msg("OPTIONS soap.beep://192.0.2.103:3002 SIP/2.0", cseq="1 OPTIONS"))
    assert m.uri.scheme == "soap.beep" and m.uri.opaque == "//192.0.2.103:3002"
    assert not m.uri.is_sip
    assert str(m.uri) == "soap.beep://192.0.2.103:3002"


def test_crlf_keepalives_before_start_line_are_skipped():
    assert parse_message(b"\r\n\r\n" + invite()) == parse_message(invite())


@pytest.mark.parametrize("data", [b"", b"\r\n\r\n", b"\n"])
def test_empty_message(data):
    bad(data, "empty")


def test_garbage():
    bad(b"hello", "request line")
    bad(b"INVITE sip:a@b SIP/2.0\r\nno colon here\r\n\r\n", "header line")


# ---------------------------------------------------------------- CSeq, mandatory headers


def test_cseq_method_mismatch():
    bad(invite(cseq="1 OPTIONS"), "CSeq", "OPTIONS", "INVITE")


def test_cseq_method_is_case_sensitive():
    bad(invite(cseq="1 invite"), "CSeq")


def test_cseq_of_response_may_name_any_method():
    assert parse_message(msg("SIP/2.0 200 OK", cseq="2 BYE")).cseq == (2, "BYE")


@pytest.mark.parametrize("value", ["1", "INVITE", "-1 INVITE", "2147483648 INVITE", "1 IN VITE",
                                   "x INVITE", "¹ INVITE", "١ INVITE"])
def test_bad_cseq(value):
    bad(invite(cseq=value), "CSeq")


def test_cseq_with_lws():
    assert parse_message(invite(cseq="0009\t INVITE")).cseq == (9, "INVITE")
    assert parse_cseq(" 2147483647  BYE ") == (2**31 - 1, "BYE")


@pytest.mark.parametrize("name", ["Via", "From", "To", "Call-ID", "CSeq"])
def test_missing_mandatory_header(name):
    lines = [*BASE, "CSeq: 1 INVITE"]
    lines = [h for h in lines if not h.startswith(name + ":")]
    data = msg("INVITE sip:bob@example.com SIP/2.0", *lines, cseq="", base=False)
    bad(data, "missing", name)


def test_max_forwards_and_content_length_are_optional():
    data = msg("INVITE sip:bob@example.com SIP/2.0", *BASE[:1], *BASE[2:], length=-1,
               base=False)
    m = parse_message(data + b"body")
    assert m.max_forwards == 70 and m.body == b"body"


@pytest.mark.parametrize(
    "header",
    ["To: <sip:carol@example.com>", "From: <sip:carol@example.com>;tag=2",
     "Call-ID: other@host", "CSeq: 314159 INVITE", "Content-Length: 0", "Max-Forwards: 1",
     "Expires: 10", "Content-Type: text/plain", "f: <sip:carol@example.com>;tag=2",
     "i: other@host", "l: 0"],
)
def test_duplicate_single_valued_header(header):
    name = {"f": "From", "i": "Call-ID", "l": "Content-Length"}.get(header[0], header)
    bad(invite(header, header), "more than once", name.split(":")[0])


@pytest.mark.parametrize(
    "header, word",
    [
        ("Max-Forwards: 256", "Max-Forwards"),
        ("Max-Forwards: -1", "Max-Forwards"),
        ("Max-Forwards: ²", "Max-Forwards"),
        ("Expires: 4294967296", "Expires"),
        ("Min-Expires: x", "Min-Expires"),
        ("Retry-After: 949302838503028349304023988", "Retry-After"),
        ("Warning: 1812 overture \"In Progress\"", "Warning"),
        ("Date: Fri, 01 Jan 2010 16:00:00 EST", "Date"),
        ("Content-Type: sdp", "Content-Type"),
        ("Contact: <sip:a@b>;expires=x", "expires"),
    ],
)
def test_bad_scalar_headers(header, word):
    bad(invite(header), word)


def test_good_scalar_headers():
    m = parse_message(invite(
        "Retry-After: 120 (I'm in a meeting);duration=60",
        "Warning: 399 host.example.com \"a, b\"",
        "Date: Sat, 13 Nov 2010 23:29:00 GMT",
        "Content-Type: application/sdp ;charset=utf-8",
        "Expires: 4294967295",
    ))
    assert m.get_all("Warning") == ['399 host.example.com "a, b"']


def test_max_forwards_with_leading_zeros():
    data = invite().replace(b"Max-Forwards: 70", b"Max-Forwards: 0068")
    assert parse_message(data).max_forwards == 68


@pytest.mark.parametrize("call_id", ["abc", "a@b", "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"])
def test_good_call_id(call_id):
    data = invite().replace(b"a84b4c76e66710@pc33.example.com", call_id.encode())
    assert parse_message(data).call_id == call_id


@pytest.mark.parametrize("call_id", ["a b", "a@b@c", "", "a;b", "a,b"])
def test_bad_call_id(call_id):
    data = invite().replace(b"a84b4c76e66710@pc33.example.com", call_id.encode())
    bad(data, "Call-ID")


# ---------------------------------------------------------------- header names and lines


def test_compact_forms():
    data = msg(
        "INVITE sip:bob@example.com SIP/2.0",
        "v: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK1",
        "t: <sip:bob@example.com>",
        "F: <sip:alice@example.com>;tag=1",
        "i: abc@host",
        "m: <sip:alice@pc33.example.com>",
        "c: application/sdp",
        "k: timer",
        "s: hello",
        "e: gzip",
        "o: presence",
        "r: <sip:carol@example.com>",
        "b: <sip:dave@example.com>",
        "u: presence",
        "x: 1800",
        "a: *;audio",
        base=False,
        cseq="1 INVITE",
        body=b"x",
    )
    m = parse_message(data)
    names = [n for n, _ in m.headers]
    assert names == [
        "CSeq", "Via", "To", "From", "Call-ID", "Contact", "Content-Type", "Supported", "Subject",
        "Content-Encoding", "Event", "Refer-To", "Referred-By", "Allow-Events",
        "Session-Expires", "Accept-Contact", "Content-Length",
    ]
    assert m.get("Content-Type") == "application/sdp"
    assert m.get("l") == "1"
    assert b"\r\nVia: SIP/2.0/UDP" in m.encode()


def test_header_names_are_case_insensitive():
    m = parse_message(invite("X-Custom-Thing: 1", "cOnTaCt: <sip:a@b>", "accept-contact: *"))
    assert m.get("contact") == m.get("CONTACT") == m.get("m") == "<sip:a@b>"
    assert m.get("x-custom-thing") == m.get("X-CUSTOM-THING") == "1"
    assert m.get("a") == "*"
    assert ("X-Custom-Thing", "1") in m.headers  # unknown names keep their spelling
    m.set("x-custom-THING", "2")
    assert m.get_all("X-Custom-Thing") == ["2"]
    assert m.pop_first("X-CUSTOM-thing") == "2"
    assert m.get("x-custom-thing") is None


def test_whitespace_around_colon():
    m = parse_message(invite("Subject \t:  \t hi there \t"))
    assert m.get("Subject") == "hi there"


def test_empty_header_value():
    m = parse_message(invite("Subject:", "Supported:", "Allow: ", "Accept:"))
    assert m.get("Subject") == ""
    assert m.get_all("Supported") == [""]
    assert m.get_all("Allow") == [""]
    assert parse_message(m.encode()) == m


@pytest.mark.parametrize("line", ["Bad Name: x", "Bad@Name: x", ": x", "NoColon", "Ä: x"])
def test_bad_header_line(line):
    bad(invite(line), "header line")


def test_line_folding():
    data = (
        b"INVITE sip:bob@example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP\r\n pc33.example.com\r\n\t;branch=z9hG4bK1\r\n"
        b"To:\r\n <sip:bob@example.com>\r\n"
        b"From: <sip:alice@example.com>\r\n  ;\r\n  tag = 98asjd8\r\n"
        b"Call-ID: abc@host\r\n"
        b"cseq: 0009\r\n  INVITE\r\n"
        b"Subject: first\r\n second\r\n\t third\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    m = parse_message(data)
    assert m.get("Subject") == "first second third"
    assert m.top_via == Via("UDP", "pc33.example.com", None, {"branch": "z9hG4bK1"})
    assert m.from_.tag == "98asjd8"
    assert m.to.uri == Uri("sip", "bob", "example.com")
    assert m.cseq == (9, "INVITE")
    assert b"\r\n " not in m.encode()


def test_bare_lf_line_endings():
    data = invite(body=b"abc").replace(b"\r\n", b"\n")
    m = parse_message(data)
    assert m.body == b"abc" and m.cseq == (314159, "INVITE")


def test_bare_lf_message_with_crlfcrlf_in_body():
    body = b"v=0\r\n\r\nx"
    head = invite(body=body)[: -len(body)].replace(b"\r\n", b"\n")
    m = parse_message(head + body)
    assert m.body == body


def test_crlf_then_lf_ends_the_header_section():
    data = invite(body=b"abc").replace(b"\r\n\r\nabc", b"\r\n\nabc")
    m = parse_message(data)
    assert m.body == b"abc" and m.get("Content-Length") == "3"


@pytest.mark.parametrize("where", [b"Subject: a\rb", b"Subject: a\r", b"Subj\rect: a"])
def test_bare_cr_in_header_section_is_rejected(where):
    bad(invite(where.decode()), "bare CR")
    bad(msg("SIP/2.0 200 O\rK"), "bare CR")


def test_unknown_headers_are_kept_verbatim():
    m = parse_message(invite("NewFangledHeader:   newfangled value\r\n continued value",
                             "UnknownHeaderWithUnusualValue: ;;,,;;,;"))
    assert m.get("NewFangledHeader") == "newfangled value continued value"
    assert m.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"


# ---------------------------------------------------------------- list headers


def test_list_headers_are_split():
    m = parse_message(invite(
        "Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK2, SIP/2.0/TCP b.example.com:5070"
        ";branch=z9hG4bK3;received=192.0.2.1",
        "Contact: \"Lastname, First\" <sip:a@b>;q=0.5, <sip:c,x@d;x=1>,sip:e@f;expires=60",
        "Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>",
        "Record-Route: <sip:r1;lr>,\r\n <sip:r2;lr>",
        "Allow: INVITE, ACK,BYE",
        "Warning: 399 a \"x, y\", 399 b \"z\"",
    ))
    assert [v.host for v in m.vias] == ["pc33.example.com", "a.example.com", "b.example.com"]
    assert m.vias[2] == Via("TCP", "b.example.com", 5070,
                            {"branch": "z9hG4bK3", "received": "192.0.2.1"})
    assert m.get_all("Contact") == [
        '"Lastname, First" <sip:a@b>;q=0.5', "<sip:c,x@d;x=1>", "sip:e@f;expires=60"
    ]
    assert m.get_all("Route") == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    assert m.get_all("Record-Route") == ["<sip:r1;lr>", "<sip:r2;lr>"]
    assert m.get_all("Allow") == ["INVITE", "ACK", "BYE"]
    assert m.get_all("Warning") == ['399 a "x, y"', '399 b "z"']
    contacts = m.contacts()
    assert contacts[0] == NameAddr(Uri("sip", "a", "b"), "Lastname, First", {"q": "0.5"})
    assert (contacts[1].uri.user, contacts[1].uri.params) == ("c,x", {"x": "1"})
    assert contacts[2] == NameAddr(Uri("sip", "e", "f"), None, {"expires": "60"})
    # Re-encoding writes one value per line and parses back to the same message.
    assert parse_message(m.encode()) == m


def test_comma_in_quoted_display_name_with_escapes():
    m = parse_message(invite('Contact: "a \\" , <b>" <sip:x@y>, "c\\\\" <sip:z@w>'))
    assert [c.display for c in m.contacts()] == ['a " , <b>', "c\\"]


@pytest.mark.parametrize(
    "header",
    ["Via: SIP/2.0/UDP 192.0.2.15;;,;,,", "Via: SIP/2.0/UDP a,", "Contact: <sip:a@b>, ,<sip:c@d>",
     "Allow: INVITE,,BYE", "Contact: \"unterminated <sip:a@b>"],
)
def test_empty_or_broken_list_items(header):
    bad(invite(header))


def test_contact_star():
    m = parse_message(msg("REGISTER sip:example.com SIP/2.0", "Contact: *", "Expires: 0",
                          cseq="2 REGISTER"))
    assert m.contacts() == [None]
    assert m.get("Contact") == "*"


# ---------------------------------------------------------------- Via


def test_via_forms():
    assert parse_via("SIP  /   2.0  /UDP     192.0.2.2;branch=390skdjuw") == Via(
        "UDP", "192.0.2.2", None, {"branch": "390skdjuw"}
    )
    v = parse_via("SIP/2.0/tcp [2001:db8::9:1]:5061 ;  branch = z9hG4bK1 ; rport ;received= x")
    assert v == Via("TCP", "[2001:db8::9:1]", 5061, {"branch": "z9hG4bK1", "rport": None,
                                                     "received": "x"})
    assert v.branch == "z9hG4bK1"
    assert str(v) == "SIP/2.0/TCP [2001:db8::9:1]:5061;branch=z9hG4bK1;rport;received=x"
    assert parse_via(str(v)) == v
    assert parse_via("SIP/2.0/UDP\thost").host == "host"
    assert parse_via("SIP/2.0/UNKNOWN host.example.com").transport == "UNKNOWN"


@pytest.mark.parametrize(
    "value",
    ["SIP/2.0/UDP", "SIP/2.0 host", "SIP/1.0/UDP host", "HTTP/2.0/UDP host", "SIP/2.0/UDP ho st",
     "SIP/2.0/UDP host:99999", "SIP/2.0/UDP host;branch=a b",
     "SIP/2.0/UDP [::1", "SIP/2.0/UDP host;", "SIP/2.0/UDP :5060"],
)
def test_bad_via(value):
    with pytest.raises(SipParseError) as info:
        parse_via(value)
    assert "Via" in info.value.reason


def test_via_branch_and_received_params_kept():
    v = parse_via("SIP/2.0/UDP h;branch=z9hG4bK-.!%66*_+`'~;BRANCH2=X")
    assert v.params == {"branch": "z9hG4bK-.!%66*_+`'~", "branch2": "X"}


# ---------------------------------------------------------------- URIs


def test_uri_full():
    u = parse_uri("sips:alice:secret@Example.COM:5061;Transport=TCP;lr;maddr=10.0.0.1"
                  "?Subject=hi&x=")
    assert u == Uri("sips", "alice", "Example.COM", 5061,
                    {"transport": "TCP", "lr": None, "maddr": "10.0.0.1"},
                    {"Subject": "hi", "x": ""}, "secret")
    assert u.transport == "TCP"
    assert u.aor() == "sips:alice@example.com"
    assert parse_uri(str(u)) == u


@pytest.mark.parametrize(
    "text, host, port",
    [
        ("sip:example.com", "example.com", None),
        ("sip:example.com.", "example.com.", None),
        ("sip:a-b.c9.example:0", "a-b.c9.example", 0),
        ("sip:192.0.2.1:5060", "192.0.2.1", 5060),
        ("sip:[2001:db8::1]", "[2001:db8::1]", None),
        ("sip:[::ffff:192.0.2.1]:65535", "[::ffff:192.0.2.1]", 65535),
        ("SIP:host", "host", None),
    ],
)
def test_uri_hosts(text, host, port):
    u = parse_uri(text)
    assert (u.scheme, u.host, u.port) == ("sip", host, port)
    assert parse_uri(str(u)) == u


@pytest.mark.parametrize(
    "text",
    ["sip:", "sip:host:", "sip:host:65536", "sip:host:5o60", "sip:host:²", "sip:-host",
     "sip:ho_st", "sip:[::1", "sip:[::1]5060", "sip:@host", "sip::pw@host", "sip:a%4@host",
     "sip:a%zz@host", "sip:host;", "sip:host;;lr", "sip:host;a=", "sip:host?", "sip:host?x",
     "sip:ho st", "sip:a@b@c", 'sip:"a"@b', "sip:<a>@b", "sip:a\x00@b", "1sip:host", "tel:",
     "nocolon"],
)
def test_bad_uris(text):
    with pytest.raises(SipParseError) as info:
        parse_uri(text)
    assert "URI" in info.value.reason or "uri" in info.value.reason


def test_uri_user_escapes_round_trip():
    u = parse_uri("sip:%61lice%20smith%3Aboss%40x@example.com")
    assert u.user == "alice smith:boss@x"
    assert str(u) == "sip:alice%20smith%3Aboss%40x@example.com"
    assert parse_uri(str(u)) == u
    null = parse_uri("sip:null-%00-null@example.com")
    assert null.user == "null-\x00-null" and str(null) == "sip:null-%00-null@example.com"
    utf8 = parse_uri("sip:j%C3%B6rg@example.com")
    assert utf8.user == "jörg" and parse_uri(str(utf8)) == utf8
    raw = parse_uri("sip:%FF%FE@example.com")  # not UTF-8: kept byte for byte
    assert str(raw) == "sip:%FF%FE@example.com"


def test_uri_user_with_user_unreserved_characters():
    # RFC 4475 3.1.1.2 and 3.1.1.9: ';', '?', '/', ',', '&' ... belong to the user part.
    text = "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too." \
        "(doesn't-it)@example.com"
    u = parse_uri(text)
    assert u.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert u.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert u.host == "example.com" and u.params == {} and u.headers == {}
    assert str(u) == text
    semi = parse_uri("sip:user;par=u%40example.net@example.com")
    assert semi.user == "user;par=u@example.net" and semi.host == "example.com"
    assert parse_uri(str(semi)) == semi
    for user in ["a?b", "a?b=c&d", "?", "a;b", "a/b"]:
        u = Uri("sip", user, "h", params={"lr": None}, headers={"x": "1"})
        assert parse_uri(str(u)) == u, str(u)


def test_uri_params_and_headers():
    u = parse_uri("sip:cal%6Cer@192.0.2.1:5060;%6C%72;n%61me=v%61lue%25%34%31;LR;MaDdR=X")
    assert u.user == "caller"
    assert u.params == {"%6c%72": None, "n%61me": "v%61lue%25%34%31", "lr": None, "maddr": "X"}
    r = parse_uri("sip:user@example.com?Route=%3Csip:sip.example.com%3E")
    assert r.headers == {"Route": "%3Csip:sip.example.com%3E"}
    assert parse_uri(str(r)) == r


def test_non_sip_uris_are_opaque():
    for text in ["tel:+1-201-555-0123", "isbn:2983792873", "http://www.example.com/a?b=c",
                 "name:John_Smith"]:
        u = parse_uri(text)
        assert not u.is_sip and str(u) == text


def test_uri_password_round_trip():
    u = Uri("sip", "u", "h", password="p:@;x")
    assert str(u) == "sip:u:p%3A%40%3Bx@h"
    assert parse_uri(str(u)) == u
    assert parse_uri("sip:u:@h").password == ""


def test_uri_copy_and_transport():
    u = parse_uri("sip:a@b;transport=tcp")
    c = u.copy(port=5070)
    assert c.port == 5070 and u.port is None and c.params == u.params and c.params is not u.params
    assert c.transport == "TCP"
    assert parse_uri("sips:a@b").transport == "TLS" and parse_uri("sip:a@b").transport == "UDP"


# ---------------------------------------------------------------- name-addr / addr-spec


def test_name_addr_vs_addr_spec_params():
    assert parse_name_addr("<sip:a@b>;flag").params == {"flag": None}
    na = parse_name_addr("<sip:a@b;lr;transport=udp>;tag=x;Expires=5")
    assert na.uri.params == {"lr": None, "transport": "udp"}
    assert na.params == {"tag": "x", "expires": "5"}
    assert na.tag == "x"
    spec = parse_name_addr("sip:a@b;lr;tag=x")
    assert spec.uri.params == {} and spec.params == {"lr": None, "tag": "x"}
    assert str(spec) == "<sip:a@b>;lr;tag=x"


@pytest.mark.parametrize(
    "text, display",
    [
        ('"Alice" <sip:a@b>', "Alice"),
        ('"" <sip:a@b>', ""),
        ('"J Rosenberg \\\\\\""       <sip:jdrosen@example.com>', 'J Rosenberg \\"'),
        ('"Quoted string \\"\\"" <sip:jdrosen@example.com>', 'Quoted string ""'),
        ("caller<sip:caller@example.com>", "caller"),
        ("token1~` token2'+_ token3*%!.- <sip:mundane@example.com>",
         "token1~` token2'+_ token3*%!.-"),
        ("<sip:a@b>", None),
        ("sip:a@b", None),
        ('"Jörg, \\"der\\" Große" <sip:j@b>', 'Jörg, "der" Große'),
    ],
)
def test_display_names(text, display):
    na = parse_name_addr(text)
    assert na.display == display
    assert parse_name_addr(str(na)) == na


@pytest.mark.parametrize(
    "text, word",
    [
        ('"Mr. J. User <sip:j.user@example.com>', "unterminated"),
        ("Bell, Alexander <sip:a.g.bell@example.com>", "quoted"),
        ('"Bob" sip:b@c', "<"),
        ("<sip:a@b", "unterminated"),
        ("< sip:a@b >", "URI"),
        ("<sip:a@b> junk", "junk"),
        ("<sip:a@b>;=x", "parameter"),
        ("<sip:a@b>;tag=", "parameter"),
        ("<sip:a@b>;x=\"unterminated", "unterminated"),
        ("sip:a@b?x=y", "<>"),
        ("", "URI"),
    ],
)
def test_bad_name_addr(text, word):
    with pytest.raises(SipParseError) as info:
        parse_name_addr(text, "To")
    assert word.lower() in info.value.reason.lower(), info.value.reason


@pytest.mark.parametrize("value", ['"a\\\\"', '"a\\"b"', '""', '"x;y,z"', '"ÑÑ€"'])
def test_quoted_param_values(value):
    na = parse_name_addr(f"<sip:a@b>;p={value};tag=1")
    assert na.params == {"p": value, "tag": "1"}
    assert parse_name_addr(str(na)) == na


@pytest.mark.parametrize("value", ['"a', '"a\\"', '"a"b"', '"a" "b"', "a b", "<x>"])
def test_bad_param_values(value):
    with pytest.raises(SipParseError):
        parse_name_addr(f"<sip:a@b>;p={value}")


def test_quote_unquote():
    for text in ["", "plain", 'a"b', "a\\b", '\\"', "ünï", "BEL:\x07 NUL:\x00 DEL:\x7f\t."]:
        assert unquote(quote(text)) == text
    assert quote("a\x00b") == '"a\\\x00b"'  # controls only as quoted-pairs
    assert quote("a\r\nb") == '"a  b"'  # CR and LF have no quoted form
    assert unquote('"a\\bc\\\\"') == "abc\\"


# ---------------------------------------------------------------- bodies


def test_body_truncated_to_content_length():
    m = parse_message(invite(body=b"0123456789", length=4))
    assert m.body == b"0123"
    assert m.get("Content-Length") == "4"


def test_body_too_short_is_rejected():
    bad(invite(body=b"0123", length=5), "Content-Length")


def test_body_without_content_length_runs_to_the_end():
    m = parse_message(invite(body=b"\r\n\r\nabc\r\n", length=-1))
    assert m.body == b"\r\n\r\nabc\r\n"
    assert m.encode().endswith(b"Content-Length: 9\r\n\r\n\r\n\r\nabc\r\n")


def test_binary_body_is_kept():
    body = bytes(range(256))
    m = parse_message(invite("Content-Type: application/octet-stream", body=body))
    assert m.body == body
    assert parse_message(m.encode()) == m


def test_missing_blank_line_means_no_body():
    data = invite(length=0)[:-2]
    assert parse_message(data).body == b""
    bad(invite(length=3)[:-2], "Content-Length")


@pytest.mark.parametrize("value", ["-1", "abc", "1 2", "99999999999", "٣"])
def test_bad_content_length(value):
    bad(invite(f"Content-Length: {value}", length=-1), "Content-Length")


# ---------------------------------------------------------------- accessors


def test_get_set_add_remove_pop():
    m = parse_message(invite("Route: <sip:r1;lr>, <sip:r2;lr>", "Subject: a"))
    assert m.get("Route") == "<sip:r1;lr>"
    assert m.get_all("route") == ["<sip:r1;lr>", "<sip:r2;lr>"]
    assert m.get("Nope") is None and m.get_all("Nope") == []

    assert m.pop_first("Route") == "<sip:r1;lr>"
    assert m.get_all("Route") == ["<sip:r2;lr>"]

    m.add("Route", "<sip:r0;lr>", first=True)
    m.add("Route", "<sip:r9;lr>")
    assert m.get_all("Route") == ["<sip:r0;lr>", "<sip:r2;lr>", "<sip:r9;lr>"]

    via_pos = [n for n, _ in m.headers].index("Via")
    m.add("v", "SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp", first=True)
    assert [n for n, _ in m.headers].index("Via") == via_pos
    assert m.top_via.host == "proxy.example.com"
    assert [v.host for v in m.vias] == ["proxy.example.com", "pc33.example.com"]

    m.add("Record-Route", "<sip:rr;lr>", first=True)  # none yet: appended
    assert m.headers[-1] == ("Record-Route", "<sip:rr;lr>")

    pos = [n for n, _ in m.headers].index("Route")
    m.set("route", "<sip:only;lr>")
    assert m.get_all("Route") == ["<sip:only;lr>"]
    assert [n for n, _ in m.headers].index("Route") == pos
    m.set("Expires", "30")
    assert m.headers[-1] == ("Expires", "30")

    m.remove("ROUTE")
    assert m.get_all("Route") == []
    assert m.pop_first("Route") is None
    m.remove("Subject")
    assert m.get("s") is None

    m2 = parse_message(m.encode())
    assert m2.get_all("Via") == m.get_all("Via")
    assert m2.get_all("Record-Route") == ["<sip:rr;lr>"]


def test_parsed_views():
    m = parse_message(invite("Contact: <sip:alice@pc33.example.com>;expires=60, *"))
    assert m.from_ == NameAddr(Uri("sip", "alice", "example.com"), "Alice",
                               {"tag": "1928301774"})
    assert m.from_.tag == "1928301774"
    assert m.to == NameAddr(Uri("sip", "bob", "example.com"), "Bob")
    assert m.to.tag is None
    assert m.contacts() == [
        NameAddr(Uri("sip", "alice", "pc33.example.com"), None, {"expires": "60"}),
        None,
    ]
    assert m.top_via.branch == "z9hG4bK776asdhds"
    assert m.vias == [m.top_via]
    m.remove("Via")
    with pytest.raises(SipParseError):
        m.top_via  # noqa: B018
    assert m.vias == []


def test_read_only_accessors_share_the_parsed_views():
    m = parse_message(invite("Contact: <sip:alice@pc33.example.com>;expires=60, *"))
    assert (m.from_user, m.from_tag, m.to_user, m.to_tag) == ("alice", "1928301774", "bob",
                                                              None)
    assert m.via_branch == "z9hG4bK776asdhds" and m.via_sent_by == ("pc33.example.com", None)
    assert list(m.contact_views) == m.contacts()
    assert m.contact_views[0] is m.contact_views[0]  # no copy: the view itself
    m.set("To", "Bob <sip:bob@example.com>;tag=x")  # a changed header is parsed anew
    assert m.to_tag == "x"
    m.remove("Via")
    with pytest.raises(SipParseError):
        m.via_branch  # noqa: B018


def test_encode_puts_content_length_last():
    m = parse_message(invite(body=b"xyz"))
    m.body = b"longer body"
    data = m.encode()
    assert data.endswith(b"\r\nContent-Length: 11\r\n\r\nlonger body")
    assert data.count(b"Content-Length") == 1
    assert bytes(m) == data


def test_built_request_encodes_and_parses():
    r = Request("OPTIONS", Uri("sip", None, "example.com"), [
        ("Via", "SIP/2.0/UDP h;branch=z9hG4bK1"), ("From", "<sip:a@b>;tag=1"),
        ("To", "<sip:c@d>"), ("Call-ID", "x"), ("CSeq", "1 OPTIONS"),
        ("Content-Length", "0"),
    ])
    assert parse_message(r.encode()) == r
    resp = Response(404, "Not Found", list(r.headers))
    assert parse_message(resp.encode()) == resp
