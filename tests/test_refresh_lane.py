"""The refresh lane (appliance/refresh.py): a plain re-REGISTER answered from the datagram.

The lane may answer only where the full path (parse, Via stamping, Location.register)
gives the same answer and leaves the same binding; everywhere else it must decline and
change nothing. Checked on hand-made variants of everyday REGISTERs and on thousands of
random mutations of them, from a fresh binding and from one the lane already read.
"""

from __future__ import annotations

import random

import pytest
from fuzz.refresh_oracle import (
    NATTED,
    OTHER,
    PHONE,
    VARIANTS,
    bound,
    compare,
    lane_for,
    read_once,
    register,
)

from appliance.refresh import RefreshLane
from overlay.sip.message import parse_message
from overlay.sip.transaction import RequestReceived, TransactionLayer


def test_a_plain_refresh_is_answered_by_the_lane_as_the_full_path_would() -> None:
    loc = bound()
    lane = lane_for(loc)
    data = register()
    assert compare(loc, data, NATTED, 10.0)
    answer = lane.answer(data, NATTED, 10.0)
    assert answer is not None
    response = parse_message(answer)
    assert response.top_via.params["rport"] == "40123"  # RFC 3581, as stamp_via does
    assert response.get_all("Contact") == ["<sip:1001@10.99.0.11:5062;transport=udp>;expires=600"]
    [b] = loc.lookup("1001", 10.0)
    assert (b.cseq, b.source, b.expires_at, b.name) == (2, NATTED, 610.0, "Alice")
    assert lane.answered == 1 and lane.counters == {"requests": 1, "registrations": 1}
    # the next refresh finds what the lane read in the binding's memo
    assert b.memo is not None
    assert lane.answer(register(cseq=3, branch="z9hG4bKb3"), PHONE, 20.0) is not None
    assert loc.lookup("1001", 20.0)[0].cseq == 3


def test_a_retransmission_gets_the_same_answer_from_the_transaction_layer() -> None:
    loc, txl = bound(), TransactionLayer()
    lane = RefreshLane(loc, txl, {"requests": 0, "registrations": 0}, lambda d: None)
    data = register()
    first = lane.answer(data, PHONE, 10.0)
    assert first is not None
    assert lane.answer(data, PHONE, 10.5) is None  # the lane knows it has seen it
    txl.receive(parse_message(data), PHONE, 10.5)
    assert txl.messages_to_send() == [(first, PHONE)]
    assert not isinstance(txl.next_event(), RequestReceived)  # not passed up again
    assert loc.lookup("1001", 11.0)[0].cseq == 2


@pytest.mark.parametrize("why, data, source", [
    ("first registration", register(To="<sip:1002@10.99.0.1>"), PHONE),
    ("another contact", register(Contact="<sip:1001@10.99.0.11:5070>"), PHONE),
    ("another address", register(), OTHER),
    ("unregister", register(Expires="0", Contact="<sip:1001@10.99.0.11:5062;transport=udp>"),
     PHONE),
    ("too brief", register(Contact="<sip:1001@10.99.0.11:5062;transport=udp>;expires=5"),
     PHONE),
    ("same Call-ID, old CSeq", register(cseq=1), PHONE),
    ("credentials", register(extra=('Authorization: Digest username="1001"',)), PHONE),
    ("two contacts", register(Contact="<sip:1001@10.99.0.11:5062;transport=udp>, "
                                      "<sip:1001@10.99.0.11:5064>"), PHONE),
    ("a compact header name", register().replace(b"\r\nCall-ID:", b"\r\ni:"), PHONE),
    ("a header twice", register(extra=("Max-Forwards: 70",)), PHONE),
    ("a header it does not know", register(extra=("Path: <sip:10.99.0.9;lr>",)), PHONE),
    ("a To tag", register(To='"Alice" <sip:1001@10.99.0.1>;tag=x'), PHONE),
    ("a body", register(Content_Length="4") + b"abcd", PHONE),
    ("a bad Max-Forwards", register(Max_Forwards="300"), PHONE),
    ("a bad Call-ID", register(Call_ID="a b"), PHONE),
    ("an RFC 2543 branch", register(branch="abc"), PHONE),
    ("a folded line", register().replace(b"\r\nExpires: 3600", b"\r\nExpires:\r\n 3600"), PHONE),
    ("a bare LF", register().replace(b"\r\nExpires", b"\nExpires"), PHONE),
    ("an empty Supported item", register(Supported="outbound, , path"), PHONE),
    ("a port out of range", register(From="<sip:1001@10.99.0.1:70000>;tag=x"), PHONE),
    ("IPv6 in Via", register(Via="SIP/2.0/UDP [fd00::11]:5062;branch=z9hG4bKv6"), PHONE),
])
def test_anything_but_a_plain_refresh_is_left_to_the_full_path(
        why: str, data: bytes, source: tuple[str, str, int]) -> None:
    for loc in (bound(), read_once()):
        assert lane_for(loc).answer(data, source, 10.0) is None, why
        compare(loc, data, source, 10.0)


def test_digest_mode_and_a_claim_under_way_take_the_full_path() -> None:
    loc = bound(auth=lambda request, now: None)
    assert lane_for(loc).answer(register(), PHONE, 10.0) is None
    loc = bound()
    loc.claiming["1001"] = object()  # type: ignore[assignment]
    assert lane_for(loc).answer(register(), PHONE, 10.0) is None


@pytest.mark.parametrize("start", ["bound by the full path", "read once by the lane"])
def test_every_variant_and_mutation_is_answered_alike_or_left_alone(start: str) -> None:
    loc = bound() if start == "bound by the full path" else read_once()
    answered = sum(compare(loc, v, PHONE, 10.0) for v in VARIANTS)
    assert answered == len(VARIANTS)  # each of these is a plain refresh
    rng = random.Random(9)
    alphabet = b" \t:;,<>\"\\@=.%\r\n0aZ\x00\xff"
    answered = 0
    for _ in range(4000):
        data = bytearray(rng.choice(VARIANTS))
        # within one line, so each header's own checks are tried often
        starts = [0] + [i + 2 for i in range(len(data) - 4) if data[i:i + 2] == b"\r\n"]
        line = rng.randrange(len(starts) - 1)
        lo, hi = starts[line], starts[line + 1] - 2
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(lo, hi)
            how = rng.random()
            if how < 0.4:
                data[i] = rng.choice(alphabet)
            elif how < 0.7:
                del data[i]
                hi -= 1
            else:
                data.insert(i, rng.choice(alphabet))
                hi += 1
        answered += compare(loc, bytes(data), rng.choice([PHONE, NATTED]), 10.0)
    assert answered > 100  # mutations that stay plain refreshes were tried too


def test_bindings_expire_on_time_however_they_were_refreshed() -> None:
    loc = bound()
    lane = lane_for(loc)
    assert lane.answer(register(), PHONE, 10.0) is not None  # until 610
    assert not loc.expire(609.0)
    shorter = register(cseq=3, branch="z9hG4bKb3",
                       Contact="<sip:1001@10.99.0.11:5062;transport=udp>;expires=60")
    assert lane.answer(shorter, PHONE, 20.0) is not None  # sooner: until 80
    assert [b.extension for b in loc.expire(81.0)] == ["1001"]
    assert loc.count == 0 and not loc.bindings
