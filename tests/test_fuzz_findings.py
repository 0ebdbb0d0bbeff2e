"""What the fuzz targets (tests/fuzz) found, each kept as a regression test; the inputs
themselves are in the stored corpus (tests/fuzz/corpus/*/finding-*)."""

from __future__ import annotations

import pytest
from fuzz import sip_target
from fuzz.corpus_tools import CORPUS

from overlay.sip.errors import SipParseError
from overlay.sip.message import parse_message, parse_via
from overlay.sip.routing import via_address

RESPONSE = (b"SIP/2.0 200 OK\r\n"
            b"Via: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK2d4790.1;received=10.0.0.2\r\n"
            b"Via: SIP/2.0/TCP 127.0.0.1:40234;branch=z9hG4bKnashds8;rport=%s\r\n"
            b"From: <sip:1001@10.0.0.1>;tag=9f\r\nTo: <sip:1002@10.0.0.1>;tag=83\r\n"
            b"Call-ID: 38482@127.0.0.1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")


@pytest.mark.parametrize("rport", [b"40234R", b"x", b"65536", b"123456", b"-1", b"\xc2\xb2",
                                   b"0" * 5000 + b"70000"])
def test_a_via_rport_that_is_no_port_does_not_parse(rport: bytes) -> None:
    """fuzz-sip: `rport=40234R` in a response's second Via parsed, and the proxy's
    forwarding of that response (via_address) raised ValueError."""
    with pytest.raises(SipParseError):
        parse_message(RESPONSE % rport)
    with pytest.raises(SipParseError):
        parse_via("SIP/2.0 / UDP h;rport=" + rport.decode("utf-8"))  # the general path


@pytest.mark.parametrize("rport", [b"40234", b"1", b"65535", b"0005060"])
def test_a_via_rport_that_is_a_port_parses(rport: bytes) -> None:
    response = parse_message(RESPONSE % rport)
    assert via_address(response.vias[1])[2] == int(rport)
    assert parse_via("SIP/2.0/UDP h;rport").params == {"rport": None}


def test_finding_inputs_pass_the_target() -> None:
    for path in sorted(CORPUS.glob("*/finding-*")):
        if path.parent.name == "sip":
            sip_target.one_input(path.read_bytes())
