"""RFC 4475 SIP torture messages through the parser.

Each message in tests/data/rfc4475/NAME.dat is classified in manifest.toml next to
it (RFC section, what the RFC expects, and whether parse_message must accept it,
reject it with SipParseError, or may do either). Whatever the verdict, no message
may raise anything but SipParseError. For a number of messages the facts the RFC
calls out are checked on the parsed result as well.
"""

from __future__ import annotations

import base64
import gzip
import io
import re
import tarfile
import tomllib
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote

import pytest

from overlay.sip.errors import SipParseError
from overlay.sip.message import parse_message

DATA = Path(__file__).parent / "data" / "rfc4475"
MANIFEST: dict[str, dict] = tomllib.loads((DATA / "manifest.toml").read_text("utf-8"))


def _section_key(name: str) -> tuple[int, ...]:
    return tuple(int(p) for p in MANIFEST[name]["section"].split("."))


NAMES = sorted(MANIFEST, key=_section_key)


def _id(name: str) -> str:
    return f"{MANIFEST[name]['section']}-{name}"


def load(name: str) -> bytes:
    return (DATA / f"{name}.dat").read_bytes()


def run(data: bytes):
    """(message, None) or (None, SipParseError); any other exception fails the test."""
    try:
        return parse_message(data), None
    except SipParseError as exc:
        return None, exc
    except Exception as exc:  # noqa: BLE001 - the point is to report it
        pytest.fail(f"raised {type(exc).__name__}: {exc!r} instead of SipParseError")


def _why(name: str) -> str:
    entry = MANIFEST[name]
    return f"RFC 4475 {entry['section']} ({entry['title']}): {entry['rfc']}"


# ------------------------------------------------------------------------ verdicts


@pytest.mark.parametrize("name", NAMES, ids=_id)
def test_verdict(name: str) -> None:
    entry = MANIFEST[name]
    data = load(name)
    msg, err = run(data)
    statuses = entry.get("status")
    verdict = entry["parser"]
    if verdict == "accept":
        if err is not None:
            pytest.fail(f"rejected ({err.status}: {err}); must parse. {_why(name)}")
    elif verdict == "reject":
        if msg is not None:
            pytest.fail(f"parsed; must raise SipParseError. {_why(name)}")
    else:
        assert verdict == "either", f"bad manifest entry for {name}"
    if err is not None and statuses:
        assert err.status in statuses, (
            f"SipParseError.status {err.status} ({err}), expected one of {statuses}. {_why(name)}"
        )
    if msg is not None:
        kind = "Response" if data.startswith(b"SIP/") else "Request"
        assert type(msg).__name__ == kind


def test_baddn_with_empty_line() -> None:
    """The archive's baddn lacks the empty line after the headers; the printed text has it."""
    data = load("baddn")
    assert data.endswith(b"l: 0\r\n") and not data.endswith(b"\r\n\r\n")
    msg, err = run(data + b"\r\n")
    assert msg is None, f"parsed; must raise SipParseError. {_why('baddn')}"
    assert err.status == 400


# --------------------------------------------------------------- facts per message


def _vias(msg) -> list[str]:
    return msg.get_all("Via")


def _transport(via: str) -> str:
    m = re.match(r"\s*SIP\s*/\s*2\.0\s*/\s*([^\s;]+)", via, re.I)
    assert m, via
    return m.group(1).upper()


def _cseq(msg) -> tuple[int, str]:
    number, method = msg.get("CSeq").split()
    return int(number), method


def _scheme_rest(uri) -> tuple[str, str]:
    scheme, _, rest = str(uri).partition(":")
    return scheme.lower(), rest


SDP_150 = (
    b"v=0\r\no=mhandley 29739 7272939 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\n"
    b"t=0 0\r\nm=audio 49217 RTP/AVP 0 12\r\nm=video 3227 RTP/AVP 31\r\na=rtpmap:31 LPC\r\n"
)


def check_wsinv(msg) -> None:
    assert msg.method == "INVITE"
    assert msg.uri.user == "vivekg"
    assert msg.uri.host == "chair-dnrc.example.com"
    assert "unknownparam" in msg.uri.params
    assert msg.get("Call-ID") == "wsinv.ndaksdj@192.0.2.1"
    vias = _vias(msg)  # one "Via" row (folded) and two comma-separated values in "v:"
    assert len(vias) == 3, vias
    hosts = ["192.0.2.2", "spindle.example.com", "192.168.255.111"]
    for via, host, transport in zip(vias, hosts, ["UDP", "TCP", "UDP"], strict=True):
        assert host in via and _transport(via) == transport, via
    assert "390skdjuw" in vias[0] and "z9hG4bK9ikj8" in vias[1] and "z9hG4bK30239" in vias[2]
    assert int(msg.get("Max-Forwards")) == 68  # leading zeros
    assert _cseq(msg) == (9, "INVITE")  # leading zeros, folded
    assert msg.get("Subject") is not None and msg.get("Subject").strip() == ""  # empty "s :"
    new = msg.get("NewFangledHeader")
    assert " ".join(new.split()) == "newfangled value continued newfangled value"
    assert msg.get("UnknownHeaderWithUnusualValue").strip() == ";;,,;;,;"
    assert len(msg.get_all("Contact")) == 1 and len(msg.get_all("Route")) == 1
    assert msg.get("Content-Type") == "application/sdp"
    assert len(msg.body) == 150 and msg.body.startswith(b"v=0\r\n")


METHOD_INTMETH = "!interesting-Method0123456789_*+`.%indeed'~"


def check_intmeth(msg) -> None:
    assert msg.method == METHOD_INTMETH
    assert _cseq(msg) == (139122385, METHOD_INTMETH)
    assert msg.uri.host == "example.com"
    assert unquote(msg.uri.user) == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert msg.get("Call-ID") == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert "branch=z9hG4bK-.!%66*_+`'~" in msg.get("Via")
    assert int(msg.get("Max-Forwards")) == 255
    assert "\\\x00" in msg.get("To")  # quoted-pair with a NUL
    ext = msg.get("extensionHeader-!.%*+_`'~")
    assert ext is not None
    assert ext.strip(" \t").encode("utf-8", "surrogateescape") == bytes.fromhex(
        "EFBBBFE5A4A7E5819CE99BBB"
    )
    assert msg.body == b""


def check_esc01(msg) -> None:
    assert msg.method == "INVITE"
    assert unquote(msg.uri.user) == "sips:user@example.com"  # escaped in the user part
    assert msg.uri.host == "example.net"
    assert msg.get("Call-ID") == "esc01.239409asdfakjkn23onasd0-3234"  # "i:"
    assert msg.get("Content-Type") == "application/sdp"  # "C:"
    assert len(msg.get_all("Contact")) == 1
    assert msg.body == SDP_150


def check_escnull(msg) -> None:
    assert msg.method == "REGISTER"
    contacts = msg.get_all("Contact")
    assert len(contacts) == 2 and contacts[0] != contacts[1]
    assert "null-%00-null" in msg.get("To")
    assert msg.get("Content-Length").strip() == "0"  # "L:0"


def check_esc02(msg) -> None:
    assert msg.method == "RE%47IST%45R"  # not REGISTER
    assert _cseq(msg) == (29344, "RE%47IST%45R")
    assert len(msg.get_all("Contact")) == 2  # C%6Fntact is another header
    assert msg.get("C%6Fntact").strip() == "<sip:alias2@host2.example.com>"
    assert "branch=z9hG4bK209%fzsnel234" in msg.get("Via")


def check_lwsdisp(msg) -> None:
    assert msg.method == "OPTIONS"
    assert msg.get("From").startswith("caller<sip:caller@example.com>")


def check_longreq(msg) -> None:
    assert msg.method == "INVITE"
    vias = _vias(msg)
    assert len(vias) == 34, len(vias)
    for i, via in enumerate(vias[:33]):
        assert f"sip{33 - i}.example.com" in via, via
    assert "branch=very" + "long" * 50 + "branchvalue" in vias[33]
    assert "extreme" * 10 in msg.get("To")
    assert "tag=12" + "982" * 50 + "424" in msg.get("From")  # "F:"
    assert msg.get("Call-ID") == "longreq.one" + "really" * 20 + "longcallid"
    name = "Unknown-" + "Long" * 20 + "-Name"
    assert msg.get(name) is not None
    contacts = msg.get_all("Contact")
    assert len(contacts) == 1 and "amazinglylongcallername" * 5 in contacts[0]
    assert int(msg.get("Max-Forwards")) == 70
    assert msg.body == SDP_150


def check_dblreq(msg) -> None:
    # One REGISTER; the INVITE-looking octets after its empty body are ignored.
    assert msg.method == "REGISTER"
    assert msg.get("Call-ID") == "dblreq.0ha0isndaksdj99sdfafnl3lk233412"  # "I:"
    assert _cseq(msg) == (8, "REGISTER")
    assert len(_vias(msg)) == 1 and len(msg.get_all("Call-ID")) == 1
    assert msg.body == b""


def check_semiuri(msg) -> None:
    assert msg.method == "OPTIONS"
    assert unquote(msg.uri.user) == "user;par=u@example.net"
    assert msg.uri.host == "example.com"
    assert "par" not in msg.uri.params
    assert len(msg.get_all("Accept")) == 6


def check_transports(msg) -> None:
    assert [_transport(v) for v in _vias(msg)] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    assert msg.get("Call-ID") == "transports.kijh4akdnaqjkwendsasfdj"


def check_mpart01(msg) -> None:
    assert msg.method == "MESSAGE"
    assert msg.get("Content-Type").startswith("multipart/mixed")
    assert len(msg.body) == 553
    assert b"\x00" in msg.body
    assert msg.body.startswith(b"--7a9cbec02ceef655\r\n")
    assert msg.body.endswith(b"--7a9cbec02ceef655--\r\n")


UNREASON = "= 2**3 * 5**2 " + bytes.fromhex(
    "D0BDD0BE20D181D182D0BE20D0B4D0B5D0B2D18FD0BDD0BED181D182D0BE20D0B4"
    "D0B5D0B2D18FD182D18C202D20D0BFD180D0BED181D182D0BED0B5"
).decode("utf-8")


def check_unreason(msg) -> None:
    assert msg.status == 200
    assert msg.reason == UNREASON
    assert len(msg.body) == 154


def check_noreason(msg) -> None:
    assert msg.status == 100
    assert msg.reason == ""


def check_badbranch(msg) -> None:
    assert msg.method == "OPTIONS"
    assert msg.get("Via").rstrip().endswith("branch=z9hG4bK")


def check_unkscm(msg) -> None:
    assert msg.method == "OPTIONS"
    assert _scheme_rest(msg.uri) == ("nobodyknowsthisscheme", "totallyopaquecontent")


def check_novelsc(msg) -> None:
    assert _scheme_rest(msg.uri) == ("soap.beep", "//192.0.2.103:3002")


def check_unksm2(msg) -> None:
    assert msg.get("To").strip() == "isbn:2983792873"
    assert msg.get("Contact").strip() == "<name:John_Smith>"
    assert msg.get("From").startswith("<http://www.example.com>")


def check_bext01(msg) -> None:
    assert [v.strip() for v in msg.get_all("Require")] == [
        "nothingSupportsThis",
        "nothingSupportsThisEither",
    ]
    assert [v.strip() for v in msg.get_all("Proxy-Require")] == [
        "noProxiesSupportThis",
        "norDoAnyProxiesSupportThis",
    ]


def check_invut(msg) -> None:
    assert msg.get("Content-Type") == "application/unknownformat"
    assert msg.body == b'<audio>\r\n <pcmu port="443"/>\r\n</audio>\r\n'


def check_regaut01(msg) -> None:
    assert msg.get("Authorization") == "NoOneKnowsThisScheme opaque-data=here"
    assert msg.get("Content-Length").strip() == "0"


def check_bcast(msg) -> None:
    assert msg.status == 200
    vias = _vias(msg)
    assert len(vias) == 2 and "255.255.255.255" in vias[1]
    assert len(msg.body) == 154


def check_zeromf(msg) -> None:
    assert msg.get("Max-Forwards").strip() == "0"


def check_cparam01(msg) -> None:
    assert msg.get("Contact").strip() == "sip:+19725552222@gw1.example.net;unknownparam"


def check_cparam02(msg) -> None:
    assert msg.get("Contact").strip() == "<sip:+19725552222@gw1.example.net;unknownparam>"


def check_regescrt(msg) -> None:
    assert msg.get("Contact").strip() == "<sip:user@example.com?Route=%3Csip:sip.example.com%3E>"


def check_sdp01(msg) -> None:
    assert msg.get("Accept") == "text/nobodyKnowsThis"
    assert len(msg.body) == 150


def check_inv2543(msg) -> None:
    assert msg.method == "INVITE"
    assert msg.get("Content-Length") is None and msg.get("Max-Forwards") is None
    assert "branch" not in msg.get("Via")
    # No Content-Length: the body is every octet after the empty line.
    assert msg.body == (
        b"v=0\r\no=mhandley 29739 7272939 IN IP4 192.0.2.5\r\ns=-\r\nc=IN IP4 192.0.2.5\r\n"
        b"t=0 0\r\nm=audio 49217 RTP/AVP 0\r\n"
    )


CHECKS: dict[str, Callable] = {
    name[len("check_") :]: fn for name, fn in globals().items() if name.startswith("check_")
}


@pytest.mark.parametrize("name", sorted(CHECKS, key=_section_key), ids=_id)
def test_facts(name: str) -> None:
    msg, err = run(load(name))
    if err is not None:
        pytest.fail(f"rejected ({err.status}: {err}); cannot check facts. {_why(name)}")
    CHECKS[name](msg)


# ------------------------------------------------------------------ the data itself


def test_manifest_is_complete() -> None:
    assert set(CHECKS) <= set(MANIFEST)
    for name, entry in MANIFEST.items():
        assert entry["parser"] in ("accept", "reject", "either"), name
        assert entry["class"] in ("valid", "invalid", "semantic"), name
        section = entry["section"]
        expected = {"3.1.1": "valid", "3.1.2": "invalid"}.get(section[:5], "semantic")
        assert entry["class"] == expected, name
        assert (DATA / f"{name}.dat").is_file(), name


def test_files_are_rfc4475_appendix_a() -> None:
    """Every .dat file is byte for byte the member of the RFC's Appendix A archive."""
    text = (DATA / "rfc4475-appendix-a.tgz.b64").read_text("ascii")
    tar_bytes = gzip.decompress(base64.b64decode("".join(text.split()), validate=True))
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        archive = {
            m.name.removesuffix(".dat"): tar.extractfile(m).read()
            for m in tar.getmembers()
            if m.isfile()
        }
    assert set(archive) - {"test"} == set(MANIFEST)  # test.dat is not an RFC 4475 message
    for name in MANIFEST:
        assert load(name) == archive[name], name
