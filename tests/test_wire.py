"""The overlay wire codec: SOSIMPLE encoding, signatures, replay and trust checks."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from overlay.chord import messages as m
from overlay.chord.wire import (
    REASONS,
    SIG_HEADER,
    WireCodec,
    WireError,
    _b64e,
    signing_input,
)
from overlay.identity import NodeIdentity, create_ca
from overlay.sip.message import Request, Response, parse_message

OVERLAY = "meshsip"
NOW = 1_700_000_000.0

# Identities are slow-ish to make: a few shared ones.
A_ID, B_ID, C_ID = NodeIdentity.generate(), NodeIdentity.generate(), NodeIdentity.generate()
A = m.NodeRef(A_ID.node_id, "10.0.0.1", 5060)
B = m.NodeRef(B_ID.node_id, "10.0.0.2", 5070)
C = m.NodeRef(C_ID.node_id, "fe80::2", 5060)


def codecs(**kw: object) -> tuple[WireCodec, WireCodec]:
    return WireCodec(A_ID, OVERLAY, **kw), WireCodec(B_ID, OVERLAY, **kw)  # type: ignore[arg-type]


# ----------------------------------------------------------------------- strategies

ids = st.integers(0, (1 << 128) - 1)
hosts = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.from_regex(r"\A[a-z](?:[a-z0-9-]{0,10}[a-z0-9])?(?:\.[a-z]{2,6})?\Z"),
)
refs = st.builds(m.NodeRef, ids, hosts, st.integers(0, 65535))
counts = st.integers(0, (1 << 32) - 1)
big = st.integers(0, (1 << 64) - 1)
records = st.builds(
    m.Record,
    resource_id=ids, aor=st.text(max_size=40), owner=ids, contact=st.text(max_size=60),
    sequence=big, lifetime=big, remaining=big,
    signature=st.binary(max_size=64), public_key=st.binary(max_size=32),
)
record_tuples = st.lists(records, max_size=4).map(tuple)
successors = st.lists(refs, max_size=10).map(tuple)
reasons = st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=40)
error_codes = st.integers(300, 699).filter(lambda c: c != 302)


def requests(src: m.NodeRef) -> st.SearchStrategy[m.Message]:
    base = {"src": st.just(src), "txn": big, "overlay": st.just(OVERLAY)}
    return st.one_of(
        st.builds(m.Ping, **base),
        st.builds(m.GetNeighbors, **base),
        st.builds(m.Notify, **base),
        st.builds(m.FindSuccessor, **base, key=ids, recursive=st.booleans(), hops=counts,
                  origin=st.none() | refs),
        st.builds(m.Store, **base, records=record_tuples, replica=st.booleans()),
        st.builds(m.Transfer, **base, records=record_tuples),
        st.builds(m.Fetch, **base, resource_id=ids),
        st.builds(m.Leave, **base, predecessor=st.none() | refs, successors=successors),
        st.builds(m.Learn, **base, candidate=refs, hops=counts),
    )


def responses(src: m.NodeRef) -> st.SearchStrategy[m.Message]:
    base = {"src": st.just(src), "txn": big, "overlay": st.just(OVERLAY)}
    return st.one_of(
        st.builds(m.Pong, **base),
        st.builds(m.Ack, **base),
        st.builds(m.Neighbors, **base, predecessor=st.none() | refs, successors=successors),
        st.builds(m.Found, **base, key=ids, successors=successors, hops=counts),
        st.builds(m.Redirect, **base, key=ids, closer=successors, hops=counts),
        st.builds(m.Stored, **base, accepted=counts, rejected=counts),
        st.builds(m.Records, **base, resource_id=ids, records=record_tuples),
        st.builds(m.Error, **base, code=error_codes, reason=reasons),
    )


def samples() -> list[tuple[m.Message, m.NodeRef]]:
    """One typical message of each type, with its destination (sizes, tampering)."""
    rec = m.Record(
        resource_id=0x1234 << 100, aor="sip:alice@meshsip", owner=A.id,
        contact="sip:alice@10.0.0.21:5060;transport=udp", sequence=3, lifetime=3600,
        remaining=3500, signature=bytes(64), public_key=bytes(32),
    )
    succ = (B, C, m.NodeRef(7 << 120, "10.0.0.4", 5060))
    base = {"src": A, "txn": 4242, "overlay": OVERLAY}
    return [
        (m.Ping(**base), B),
        (m.GetNeighbors(**base), B),
        (m.Notify(**base), B),
        (m.FindSuccessor(**base, key=99 << 90, recursive=True, hops=2, origin=C), B),
        (m.Store(**base, records=(rec,)), B),
        (m.Transfer(**base, records=(rec, replace(rec, contact="sip:alice@10.0.0.22"))), B),
        (m.Fetch(**base, resource_id=rec.resource_id), B),
        (m.Leave(**base, predecessor=C, successors=succ), B),
        (m.Learn(**base, candidate=C, hops=1), B),
        (m.Pong(**base), B),
        (m.Ack(**base), B),
        (m.Neighbors(**base, predecessor=C, successors=succ), B),
        (m.Found(**base, key=99 << 90, successors=succ, hops=3), B),
        (m.Redirect(**base, key=99 << 90, closer=succ[:2], hops=1), B),
        (m.Stored(**base, accepted=1), B),
        (m.Records(**base, resource_id=rec.resource_id, records=(rec,)), B),
        (m.Error(**base, code=403, reason="Forbidden"), B),
    ]


# ---------------------------------------------------------------------- round trips


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(msg=requests(A))
def test_requests_round_trip(msg: m.Message) -> None:
    ca, cb = codecs()
    data = ca.encode(msg, B, NOW)
    sip = parse_message(data)  # real SIP
    assert isinstance(sip, Request) and sip.get(SIG_HEADER)
    assert cb.decode(data, NOW + 0.5) == msg


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(msg=responses(B))
def test_responses_round_trip(msg: m.Message) -> None:
    ca, cb = codecs()
    data = cb.encode(msg, A, NOW)  # no request remembered: headers rebuilt
    assert isinstance(parse_message(data), Response)
    assert ca.decode(data, NOW) == msg


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(req=requests(A), data=st.data())
def test_response_after_request_copies_its_headers(req: m.Message, data: st.DataObject) -> None:
    ca, cb = codecs()
    wire = ca.encode(req, B, NOW)
    got = cb.decode(wire, NOW)
    answer = replace(data.draw(responses(B)), txn=got.txn)
    out = cb.encode(answer, got.src, NOW + 0.1)
    request, response = parse_message(wire), parse_message(out)
    for name in ("Via", "From", "Call-ID", "CSeq"):
        assert response.get_all(name) == request.get_all(name)
    assert ca.decode(out, NOW + 0.2) == answer


def test_response_keeps_request_addressing() -> None:
    """Bootstrap: a request to a bare address, with a Via a NAT hop stamped."""
    ca, cb = codecs()
    wire = ca.encode(m.GetNeighbors(src=A, txn=1, overlay=OVERLAY), ("10.0.0.2", 5070), NOW)
    assert b"REGISTER sip:10.0.0.2:5070;user=node;overlay=meshsip SIP/2.0\r\n" in wire
    wire = wire.replace(b";branch=", b";received=192.0.2.7;rport=4000;branch=")  # unsigned
    got = cb.decode(wire, NOW)
    out = cb.encode(m.Neighbors(src=B, txn=got.txn, overlay=OVERLAY, predecessor=None,
                                successors=(A,)), got.src, NOW)
    response = parse_message(out)
    assert "received=192.0.2.7" in response.get("Via")
    assert response.to.uri.user is None and response.to.uri.host == "10.0.0.2"
    assert response.to.tag
    assert ca.decode(out, NOW).successors == (A,)


def test_ca_mode_round_trip() -> None:
    ca = create_ca()
    a, b = NodeIdentity.generate(ca), NodeIdentity.generate(ca)
    ra = m.NodeRef(a.node_id, "10.0.0.1", 5060)
    rb = m.NodeRef(b.node_id, "10.0.0.2", 5060)
    wa, wb = WireCodec(a, OVERLAY), WireCodec(b, OVERLAY)
    ping = m.Ping(src=ra, txn=1, overlay=OVERLAY)
    assert wb.decode(wa.encode(ping, rb, NOW), NOW) == ping


def test_sample_sizes_and_readability(capsys: pytest.CaptureFixture[str]) -> None:
    ca, cb = codecs()
    sizes = {}
    for msg, dst in samples():
        data = ca.encode(msg, dst, NOW)
        text = data.decode("utf-8")  # plain text, as sngrep shows it
        assert "DHT-NodeID: <sip:" in text and f"{A.id:032x}" in text
        assert cb.decode(data, NOW) == msg
        sizes[type(msg).__name__] = len(data)
    with capsys.disabled():
        print("\nencoded sizes (bytes):", ", ".join(f"{k} {v}" for k, v in sizes.items()))


# ------------------------------------------------------------------------- refusals


def _line_of(data: bytes, index: int) -> str:
    start = data.rfind(b"\n", 0, index) + 1
    return data[start:].split(b":", 1)[0].decode("latin-1")


@pytest.mark.parametrize("sample", range(len(samples())))
def test_tampering_any_significant_byte_is_refused(sample: int) -> None:
    msg, dst = samples()[sample]
    ca, _ = codecs()
    data = ca.encode(msg, dst, NOW)
    body_start = data.index(b"\r\n\r\n") + 4
    accepted_lines = set()
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x01  # never just a change of letter case
        try:
            got = WireCodec(B_ID, OVERLAY).decode(bytes(bad), NOW)
        except WireError:
            continue
        # Only hop-by-hop headers and the signature's own unused bits may change.
        line = _line_of(data, i) if i < body_start else "<body>"
        assert line in ("Via", "Max-Forwards", "Content-Length", SIG_HEADER), (i, line)
        assert got == msg
        accepted_lines.add(line)
    assert "<body>" not in accepted_lines


def test_replay_refused() -> None:
    ca, cb = codecs()
    data = ca.encode(m.Ping(src=A, txn=1, overlay=OVERLAY), B, NOW)
    cb.decode(data, NOW)
    with pytest.raises(WireError) as info:
        cb.decode(data, NOW + 5)
    assert info.value.reason == "replay" and info.value.message is not None
    # A fresh encoding of the same message (a retransmission) is fine.
    cb.decode(ca.encode(m.Ping(src=A, txn=1, overlay=OVERLAY), B, NOW + 1), NOW + 5)
    assert cb.counters["replay"] == 1 and cb.counters["accepted"] == 2


def test_replay_cache_is_bounded_and_expires() -> None:
    ca, _ = codecs()
    cb = WireCodec(B_ID, OVERLAY, replay_capacity=4)
    for txn in range(6):
        cb.decode(ca.encode(m.Ping(src=A, txn=txn, overlay=OVERLAY), B, NOW), NOW)
    assert len(cb.freshness.seen) == 4 and cb.counters["replay_cache_full"] == 2
    cb.decode(ca.encode(m.Ping(src=A, txn=9, overlay=OVERLAY), B, NOW + 200), NOW + 200)
    assert len(cb.freshness.seen) == 1  # the others' time stamps are out of the window now


@pytest.mark.parametrize("delay", [61.0, -61.0, 3600.0])
def test_stale_time_stamp_refused(delay: float) -> None:
    ca, _ = codecs()
    cb = WireCodec(B_ID, OVERLAY, follow_clock=False)
    data = ca.encode(m.Ping(src=A, txn=1, overlay=OVERLAY), B, NOW)
    with pytest.raises(WireError) as info:
        cb.decode(data, NOW + delay)
    assert info.value.reason == "stale" and info.value.message == m.Ping(
        src=A, txn=1, overlay=OVERLAY)
    assert info.value.skew == pytest.approx(-delay)
    cb.decode(data, NOW + 59)  # inside the window
    assert cb.counters["stale"] == 1


def test_window_is_configurable() -> None:
    ca, _ = codecs()
    cb = WireCodec(B_ID, OVERLAY, window=5, follow_clock=False)
    with pytest.raises(WireError, match="stale"):
        cb.decode(ca.encode(m.Ping(src=A, txn=1, overlay=OVERLAY), B, NOW), NOW + 6)


def test_clock_follows_a_peer_that_is_ahead() -> None:
    ca, cb = codecs()
    ahead = 3 * 3600.0  # A's clock is 3 hours ahead of B's
    first = ca.encode(m.Ping(src=A, txn=1, overlay=OVERLAY), B, NOW + ahead)
    with pytest.raises(WireError, match="stale"):
        cb.decode(first, NOW)
    assert cb.clock_offset == pytest.approx(ahead) and cb.counters["clock_adjusted"] == 1
    with pytest.raises(WireError, match="replay"):  # the refused one stays refused
        cb.decode(first, NOW + 1)
    cb.decode(ca.encode(m.Ping(src=A, txn=2, overlay=OVERLAY), B, NOW + ahead + 2), NOW + 2)
    # B now stamps with the followed clock: A accepts B's messages.
    ca.decode(cb.encode(m.Pong(src=B, txn=2, overlay=OVERLAY), A, NOW + 3), NOW + ahead + 3)
    # A peer that is behind does not pull the clock back.
    with pytest.raises(WireError, match="stale"):
        cb.decode(ca.encode(m.Ping(src=A, txn=3, overlay=OVERLAY), B, NOW), NOW + 4)
    assert cb.clock_offset == pytest.approx(ahead)


def test_forged_time_stamp_does_not_move_the_clock() -> None:
    ca, cb = codecs()
    data = ca.encode(m.Ping(src=A, txn=1, overlay=OVERLAY), B, NOW)
    forged = re.sub(rb"ts=\d+", b"ts=%d" % int((NOW + 9999) * 1000), data)
    with pytest.raises(WireError, match="signature"):
        cb.decode(forged, NOW)
    assert cb.clock_offset == 0


def test_wrong_overlay_refused() -> None:
    ca, _ = codecs()
    other = WireCodec(B_ID, "other-overlay")
    with pytest.raises(WireError) as info:
        other.decode(ca.encode(m.Ping(src=A, txn=1, overlay=OVERLAY), B, NOW), NOW)
    assert info.value.reason == "overlay" and other.counters["overlay"] == 1
    with pytest.raises(WireError, match="overlay"):
        other.decode(ca.encode(m.Pong(src=A, txn=1, overlay=OVERLAY), B, NOW), NOW)


def test_unsigned_refused() -> None:
    ca, cb = codecs()
    data = ca.encode(m.Ping(src=A, txn=1, overlay=OVERLAY), B, NOW)
    stripped = re.sub(rb"DHT-Signature: [^\r]*\r\n", b"", data)
    with pytest.raises(WireError) as info:
        cb.decode(stripped, NOW)
    assert info.value.reason == "unsigned" and cb.counters["unsigned"] == 1


def _resign(data: bytes, signer: NodeIdentity, **replacements: bytes) -> bytes:
    """What a node with `signer`'s key can make of `data` after editing it."""
    for old, new in replacements.values():  # type: ignore[misc]
        data = data.replace(old, new)
    sip = parse_message(data)
    sig = dict(p.split("=", 1) for p in (sip.get(SIG_HEADER) or "").split(";"))
    signature = signer.sign(signing_input(sip, "ed25519", sig["ts"], sig["nonce"]))
    return re.sub(rb"sig=[A-Za-z0-9_-]+", b"sig=" + _b64e(signature).encode(), data)


def test_node_id_not_matching_the_key_refused() -> None:
    """C signs properly but claims to be A: its certificate's key is not A's."""
    ca, cb = codecs()
    data = ca.encode(m.Ping(src=A, txn=1, overlay=OVERLAY), B, NOW)
    a_cert = _b64e(A_ID.certificate_der).encode()
    c_cert = _b64e(C_ID.certificate_der).encode()
    forged = _resign(data, C_ID, cert=(a_cert, c_cert))
    with pytest.raises(WireError) as info:
        cb.decode(forged, NOW)
    assert info.value.reason == "certificate"
    # With A's (public) certificate kept, C's signature does not verify.
    with pytest.raises(WireError) as info:
        cb.decode(_resign(data, C_ID), NOW)
    assert info.value.reason == "signature"


def test_ca_mode_refuses_foreign_and_open_nodes() -> None:
    ours, theirs = create_ca(), create_ca()
    b = NodeIdentity.generate(ours)
    rb = m.NodeRef(b.node_id, "10.0.0.2", 5060)
    wb = WireCodec(b, OVERLAY)
    for stranger in (NodeIdentity.generate(theirs), NodeIdentity.generate()):
        ws = WireCodec(stranger, OVERLAY)
        src = m.NodeRef(stranger.node_id, "10.0.0.9", 5060)
        with pytest.raises(WireError) as info:
            wb.decode(ws.encode(m.Ping(src=src, txn=1, overlay=OVERLAY), rb, NOW), NOW)
        assert info.value.reason == "certificate"
    assert wb.counters["certificate"] == 2
    # And an open-mode node does not accept a CA-issued node (not self-signed).
    with pytest.raises(WireError, match="certificate"):
        WireCodec(A_ID, OVERLAY).decode(
            wb.encode(m.Ping(src=rb, txn=1, overlay=OVERLAY), A, NOW), NOW)


def test_misdirected_refused() -> None:
    ca, cb = codecs()
    cc = WireCodec(C_ID, OVERLAY)
    to_b = ca.encode(m.Ping(src=A, txn=1, overlay=OVERLAY), B, NOW)
    with pytest.raises(WireError) as info:
        cc.decode(to_b, NOW)
    assert info.value.reason == "misdirected"
    answer_for_a = cb.encode(m.Pong(src=B, txn=1, overlay=OVERLAY), A, NOW)
    with pytest.raises(WireError, match="misdirected"):
        cc.decode(answer_for_a, NOW)
    cb.decode(to_b, NOW)  # the right node still accepts it (the refusals were not cached)
    ca.decode(answer_for_a, NOW)


def test_certificate_missing_or_doubled() -> None:
    ca, cb = codecs()
    data = ca.encode(m.Ping(src=A, txn=1, overlay=OVERLAY), B, NOW)
    no_cert = re.sub(rb"DHT-Certificate: [^\r]*\r\n", b"", data)
    with pytest.raises(WireError, match="certificate"):
        cb.decode(no_cert, NOW)
    line = re.search(rb"DHT-Certificate: [^\r]*\r\n", data).group()  # type: ignore[union-attr]
    with pytest.raises(WireError, match="certificate"):
        cb.decode(data.replace(line, line + line), NOW)


def test_every_reason_has_a_counter() -> None:
    _, cb = codecs()
    assert set(REASONS) <= set(cb.counters) and all(v == 0 for v in cb.counters.values())
    with pytest.raises(WireError):
        cb.decode(b"garbage", NOW)
    assert cb.counters["malformed"] == 1


def test_encode_refuses_what_it_cannot_express() -> None:
    ca, _ = codecs()
    with pytest.raises(ValueError):
        ca.encode(m.Ping(src=B, txn=1, overlay=OVERLAY), B, NOW)  # not this node
    with pytest.raises(ValueError):
        ca.encode(m.Ping(src=A, txn=1, overlay="elsewhere"), B, NOW)
    with pytest.raises(ValueError):
        ca.encode(m.Ping(src=A, txn=-1, overlay=OVERLAY), B, NOW)
    with pytest.raises(ValueError):
        ca.encode(m.Error(src=A, txn=1, overlay=OVERLAY, code=302), B, NOW)
    with pytest.raises(ValueError):
        ca.encode(m.Fetch(src=A, txn=1, overlay=OVERLAY, resource_id=1 << 128), B, NOW)
    with pytest.raises(ValueError):
        ca.encode(m.Ping(src=A, txn=1, overlay=OVERLAY), m.NodeRef(1, "bad host", 1), NOW)
    with pytest.raises(ValueError):
        WireCodec(A_ID, "two words")


def test_error_reason_control_characters_become_spaces() -> None:
    ca, cb = codecs()
    data = cb.encode(m.Error(src=B, txn=1, overlay=OVERLAY, code=500, reason="a\r\nb"), A, NOW)
    assert ca.decode(data, NOW).reason == "a  b"  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------- fuzzing


@settings(max_examples=500)
@given(st.binary(max_size=2000))
def test_random_bytes_only_raise_wire_error(data: bytes) -> None:
    _, cb = codecs()
    with pytest.raises(WireError):
        cb.decode(data, NOW)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    sample=st.integers(0, len(samples()) - 1),
    cuts=st.lists(st.tuples(st.integers(0, 3000), st.integers(0, 40), st.binary(max_size=12)),
                  min_size=1, max_size=4),
)
def test_mangled_messages_only_raise_wire_error(
    sample: int, cuts: list[tuple[int, int, bytes]]
) -> None:
    msg, dst = samples()[sample]
    ca, _ = codecs()
    data = ca.encode(msg, dst, NOW)
    for at, length, insert in cuts:
        at %= len(data) + 1
        data = data[:at] + insert + data[at + length:]
    assume(data != ca.encode(msg, dst, NOW))
    try:
        got = WireCodec(B_ID, OVERLAY).decode(data, NOW)
    except WireError:
        return
    assert got == msg  # only hop-by-hop bytes were touched


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(msg=requests(A), header=st.sampled_from(
    ["From", "To", "Call-ID", "CSeq", "DHT-NodeID", "DHT-Link", "Contact", "Content-Type"]))
def test_dropped_or_added_signed_header_refused(msg: m.Message, header: str) -> None:
    ca, _ = codecs()
    data = ca.encode(msg, B, NOW)
    pattern = re.compile(rb"\r\n" + header.encode() + rb": [^\r]*")
    found = pattern.search(data)
    if found:
        changed = data.replace(found.group(), b"", 1)
    else:
        changed = data.replace(b"\r\nDHT-Certificate", f"\r\n{header}: <sip:x@1.2.3.4>"
                               .encode() + b"\r\nDHT-Certificate", 1)
    with pytest.raises(WireError):
        WireCodec(B_ID, OVERLAY).decode(changed, NOW)


# ------------------------------------------------------- certificate on first contact only


def _cert_of(data: bytes) -> bool:
    return b"\r\nDHT-Certificate: " in data


def warm(**kw: object) -> tuple[WireCodec, WireCodec]:
    """A and B after one exchange: each holds the other's certificate and knows it."""
    ca, cb = codecs(**kw)
    cb.decode(ca.encode(m.Ping(src=A, txn=1, overlay=OVERLAY), B, NOW), NOW)
    ca.decode(cb.encode(m.Pong(src=B, txn=1, overlay=OVERLAY), A, NOW), NOW)
    cb.decode(ca.encode(m.Ping(src=A, txn=2, overlay=OVERLAY), B, NOW), NOW)
    return ca, cb


def test_certificate_goes_on_first_contact_only() -> None:
    ca, cb = codecs()
    first = ca.encode(m.GetNeighbors(src=A, txn=1, overlay=OVERLAY), B, NOW)
    assert _cert_of(first) and f"DHT-Cert-Id: {ca.cert_id}\r\n".encode() in first
    got = cb.decode(first, NOW)
    # B holds A's certificate now and says so; its answer still carries B's own
    answer = cb.encode(m.Neighbors(src=B, txn=got.txn, overlay=OVERLAY, predecessor=None,
                                   successors=(A,)), A, NOW)
    assert _cert_of(answer) and f";peer={ca.cert_id}".encode() in answer
    ca.decode(answer, NOW)
    assert ca.peer_has_certificate(B.id) and not cb.peer_has_certificate(A.id)
    later = ca.encode(m.GetNeighbors(src=A, txn=2, overlay=OVERLAY), B, NOW + 1)
    assert not _cert_of(later) and f";peer={cb.cert_id}".encode() in later
    assert cb.decode(later, NOW + 1) == m.GetNeighbors(src=A, txn=2, overlay=OVERLAY)
    assert cb.peer_has_certificate(A.id)  # A said it holds B's: B leaves its own out too
    reply = cb.encode(m.Pong(src=B, txn=2, overlay=OVERLAY), A, NOW + 1)
    assert not _cert_of(reply) and len(reply) < len(answer) - 400
    ca.decode(reply, NOW + 1)
    assert ca.counters["certificates_omitted"] == 1 and ca.counters["certificates_sent"] == 1
    assert ca.counters["certificate_needed"] == cb.counters["certificate_needed"] == 0


def test_every_message_type_round_trips_without_certificate() -> None:
    ca, cb = warm()
    for msg, dst in samples():
        data = ca.encode(msg, dst, NOW)
        assert not _cert_of(data), type(msg).__name__
        assert cb.decode(data, NOW) == msg


def test_restarted_receiver_asks_for_the_certificate_and_the_resend_works() -> None:
    ca, cb = warm()
    ping = m.Ping(src=A, txn=7, overlay=OVERLAY)
    data = ca.encode(ping, B, NOW)
    assert not _cert_of(data)
    cb = WireCodec(B_ID, OVERLAY)  # B restarted: it holds no certificate
    with pytest.raises(WireError) as info:
        cb.decode(data, NOW)
    assert info.value.reason == "certificate_needed" and cb.counters["certificate_needed"] == 1
    assert info.value.message == ping  # what it claims: only good to address the answer
    assert cb.counters["accepted"] == 0
    answer = cb.refusal_answer(info.value, B, NOW, source=("10.0.0.1", 5060))
    assert answer is not None
    out, to = answer
    assert to == ("10.0.0.1", 5060) and out.startswith(b"SIP/2.0 428 Certificate Needed\r\n")
    error = ca.decode(out, NOW)
    assert isinstance(error, m.Error) and error.code == 428 and error.txn == 7
    assert not ca.peer_has_certificate(B.id)  # B's answer did not claim to hold A's
    again = ca.encode(ping, B, NOW + 0.1)  # the node sends the same request again
    assert _cert_of(again)
    assert cb.decode(again, NOW + 0.1) == ping


def test_a_retransmission_carries_the_certificate_even_without_a_428() -> None:
    """The peer lost our certificate and its answer (428) was lost, or its node does not
    send one: what we send after it stayed silent for a while carries the certificate."""
    ca, cb = warm()
    ping = m.Ping(src=A, txn=7, overlay=OVERLAY)
    cb = WireCodec(B_ID, OVERLAY)  # B restarted
    first = ca.encode(ping, B, NOW)
    assert not _cert_of(first)
    with pytest.raises(WireError, match="certificate_needed"):
        cb.decode(first, NOW)
    # another message right after: B may simply not have answered yet
    assert not _cert_of(ca.encode(m.Notify(src=A, txn=8, overlay=OVERLAY), B, NOW + 0.1))
    retry = ca.encode(ping, B, NOW + 0.5)  # the node's retransmission, one rto later
    assert _cert_of(retry)
    assert cb.decode(retry, NOW + 0.5) == ping
    # B's answer says it holds A's certificate now: A leaves it out again
    ca.decode(cb.encode(m.Pong(src=B, txn=7, overlay=OVERLAY), A, NOW + 0.6), NOW + 0.6)
    nine = ca.encode(m.Ping(src=A, txn=9, overlay=OVERLAY), B, NOW + 0.7)
    assert not _cert_of(nine)
    cb.decode(nine, NOW + 0.7)
    ca.decode(cb.encode(m.Pong(src=B, txn=9, overlay=OVERLAY), A, NOW + 0.8), NOW + 0.8)
    # a peer that keeps answering never gets the certificate again
    for i in range(5):
        t = NOW + 2 + i
        got = cb.decode(ca.encode(m.Ping(src=A, txn=20 + i, overlay=OVERLAY), B, t), t)
        ca.decode(cb.encode(m.Pong(src=B, txn=got.txn, overlay=OVERLAY), A, t + 0.01), t + 0.01)
    assert ca.counters["certificates_sent"] == 2  # the first contact and the retry
    # an answer expects no answer: a request long after it still goes without
    got = ca.decode(cb.encode(m.Ping(src=B, txn=40, overlay=OVERLAY), A, NOW + 10), NOW + 10)
    assert not _cert_of(ca.encode(m.Pong(src=A, txn=got.txn, overlay=OVERLAY), B, NOW + 10))
    assert not _cert_of(ca.encode(m.Ping(src=A, txn=41, overlay=OVERLAY), B, NOW + 20))


def test_restarted_sender_sends_its_certificate_again() -> None:
    _, cb = warm()
    ca = WireCodec(A_ID, OVERLAY)
    data = ca.encode(m.Ping(src=A, txn=9, overlay=OVERLAY), B, NOW)
    assert _cert_of(data) and b";peer=" not in data
    cb.decode(data, NOW)
    # A no longer holds B's certificate: B's answers carry it again
    assert not cb.peer_has_certificate(A.id)
    assert _cert_of(cb.encode(m.Pong(src=B, txn=9, overlay=OVERLAY), A, NOW))


def test_a_peer_restarted_with_its_clock_behind_catches_up() -> None:
    """A restarted with its clock an hour behind (a Pi with no RTC): it holds no
    certificates any more and B refuses its messages as stale. B's 403 Stale Date must
    carry B's certificate, or A can check neither it nor B's messages, ever."""
    _, cb = warm()
    ca = WireCodec(A_ID, OVERLAY)
    behind = NOW - 3600
    with pytest.raises(WireError) as info:
        cb.decode(ca.encode(m.Ping(src=A, txn=30, overlay=OVERLAY), B, behind), NOW)
    assert info.value.reason == "stale"
    out, _ = cb.refusal_answer(info.value, B, NOW)  # type: ignore[misc]
    assert _cert_of(out)
    with pytest.raises(WireError, match="stale"):
        ca.decode(out, behind)
    assert ca.clock_offset == pytest.approx(3600, abs=1)
    ping = m.Ping(src=A, txn=31, overlay=OVERLAY)
    assert cb.decode(ca.encode(ping, B, behind + 1), NOW + 1) == ping
    ca.decode(cb.encode(m.Pong(src=B, txn=31, overlay=OVERLAY), A, NOW + 1), behind + 1)


def test_unverifiable_response_makes_the_retransmission_carry_the_certificate() -> None:
    """Both sides lost each other's certificate: B's answer cannot be verified by A
    either; A forgets that B holds its certificate, so its retry carries it."""
    ca, cb = warm()
    ca.certificates.cache.clear()  # A dropped B's certificate (cache full)
    pong = cb.encode(m.Pong(src=B, txn=3, overlay=OVERLAY), A, NOW)  # no certificate
    with pytest.raises(WireError) as info:
        ca.decode(pong, NOW)
    assert info.value.reason == "certificate_needed"
    assert cb.refusal_answer(info.value, B, NOW, source=("10.0.0.2", 5070)) is None  # response
    retry = ca.encode(m.Ping(src=A, txn=3, overlay=OVERLAY), B, NOW)
    assert b";peer=" not in retry  # A says it lacks B's: B's answer will carry it
    cb.decode(retry, NOW)
    assert _cert_of(cb.encode(m.Pong(src=B, txn=3, overlay=OVERLAY), A, NOW))


def test_forged_certificate_ids_are_refused() -> None:
    ca, cb = warm()
    cc = WireCodec(C_ID, OVERLAY)
    cb.decode(cc.encode(m.Ping(src=C, txn=1, overlay=OVERLAY), B, NOW), NOW)  # B holds C's
    data = ca.encode(m.Ping(src=A, txn=5, overlay=OVERLAY), B, NOW)
    assert not _cert_of(data)
    # C re-signs A's message (naming A's certificate): A's key does not verify it
    with pytest.raises(WireError) as info:
        cb.decode(_resign(data, C_ID), NOW)
    assert info.value.reason == "signature"
    # C names its own certificate for A's Node-ID: not the one B holds for A
    own = (f"DHT-Cert-Id: {ca.cert_id}".encode(), f"DHT-Cert-Id: {cc.cert_id}".encode())
    with pytest.raises(WireError) as info:
        cb.decode(_resign(data, C_ID, own=own), NOW)
    assert info.value.reason == "certificate_needed" and cb.counters["accepted"] == 3
    # a made-up id: unknown, so never accepted
    made_up = (f"DHT-Cert-Id: {ca.cert_id}".encode(), b"DHT-Cert-Id: AAAAAAAAAAAAAAAA")
    with pytest.raises(WireError, match="certificate_needed"):
        cb.decode(_resign(data, C_ID, made_up=made_up), NOW)
    # a certificate beside an id that is not its own
    first = WireCodec(A_ID, OVERLAY).encode(m.Ping(src=A, txn=6, overlay=OVERLAY), B, NOW)
    wrong = _resign(first, A_ID, cid=(f"DHT-Cert-Id: {ca.cert_id}".encode(),
                                       f"DHT-Cert-Id: {cc.cert_id}".encode()))
    with pytest.raises(WireError) as info:
        WireCodec(B_ID, OVERLAY).decode(wrong, NOW)
    assert info.value.reason == "certificate"
    # C's certificate (whose id C names) with A's Node-ID: its key is not A's
    c_cert = _b64e(C_ID.certificate_der).encode()
    a_cert = _b64e(A_ID.certificate_der).encode()
    swapped = _resign(first, C_ID, cert=(a_cert, c_cert), cid=(
        f"DHT-Cert-Id: {ca.cert_id}".encode(), f"DHT-Cert-Id: {cc.cert_id}".encode()))
    with pytest.raises(WireError) as info:
        WireCodec(B_ID, OVERLAY).decode(swapped, NOW)
    assert info.value.reason == "certificate"
    # none of this displaced A's certificate: A's own next message is accepted
    cb.decode(ca.encode(m.Ping(src=A, txn=8, overlay=OVERLAY), B, NOW), NOW)


@pytest.mark.parametrize("sample", range(len(samples())))
def test_tampering_a_message_without_certificate_is_refused(sample: int) -> None:
    msg, dst = samples()[sample]
    ca, cb = warm()
    data = ca.encode(msg, dst, NOW)
    assert not _cert_of(data)
    body_start = data.index(b"\r\n\r\n") + 4
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x01
        cb.freshness.seen.clear()  # every variant is judged on its own, not as a replay
        try:
            got = cb.decode(bytes(bad), NOW)
        except WireError:
            continue
        line = _line_of(data, i) if i < body_start else "<body>"
        assert line in ("Via", "Max-Forwards", "Content-Length", SIG_HEADER), (i, line)
        assert got == msg


def test_a_message_without_certificate_or_id_is_refused() -> None:
    ca, cb = warm()
    data = ca.encode(m.Ping(src=A, txn=4, overlay=OVERLAY), B, NOW)
    stripped = _resign(re.sub(rb"DHT-Cert-Id: [^\r]*\r\n", b"", data), A_ID)
    with pytest.raises(WireError) as info:
        cb.decode(stripped, NOW)
    assert info.value.reason == "certificate" and info.value.message is None
    line = re.search(rb"DHT-Cert-Id: [^\r]*\r\n", data).group()  # type: ignore[union-attr]
    with pytest.raises(WireError, match="certificate"):
        cb.decode(_resign(data.replace(line, line + line), A_ID), NOW)


def test_peers_without_certificate_ids_always_get_the_certificate() -> None:
    """A codec that predates DHT-Cert-Id sends the certificate and never says it holds
    ours: it is understood, and our messages to it always carry the certificate."""
    ca, cb = codecs()
    for txn in range(3):
        # what an old codec sends: always the certificate, never DHT-Cert-Id
        data = WireCodec(A_ID, OVERLAY).encode(m.Ping(src=A, txn=txn, overlay=OVERLAY), B, NOW)
        old_style = _resign(re.sub(rb"DHT-Cert-Id: [^\r]*\r\n", b"", data), A_ID)
        assert cb.decode(old_style, NOW) == m.Ping(src=A, txn=txn, overlay=OVERLAY)
        answer = cb.encode(m.Pong(src=B, txn=txn, overlay=OVERLAY), A, NOW)
        assert _cert_of(answer)
        ca.decode(answer, NOW)
        assert not cb.peer_has_certificate(A.id)


def test_certificate_caches_are_bounded() -> None:
    ids = [NodeIdentity.generate() for _ in range(3)]
    cb = WireCodec(B_ID, OVERLAY, certificate_cache=2)
    peers = []
    for i, ident in enumerate(ids):
        ref = m.NodeRef(ident.node_id, f"10.0.1.{i}", 5060)
        codec = WireCodec(ident, OVERLAY)
        cb.decode(codec.encode(m.Ping(src=ref, txn=1, overlay=OVERLAY), B, NOW), NOW)
        codec.decode(cb.encode(m.Pong(src=B, txn=1, overlay=OVERLAY), ref, NOW), NOW)
        cb.decode(codec.encode(m.Ping(src=ref, txn=2, overlay=OVERLAY), B, NOW), NOW)
        peers.append((ref, codec))
    assert len(cb.certificates.cache) == 2 and len(cb.certificates.known_by) == 2
    (ref0, codec0), (ref2, codec2) = peers[0], peers[2]
    with pytest.raises(WireError, match="certificate_needed"):  # the oldest went first
        cb.decode(codec0.encode(m.Ping(src=ref0, txn=3, overlay=OVERLAY), B, NOW), NOW)
    cb.decode(codec2.encode(m.Ping(src=ref2, txn=3, overlay=OVERLAY), B, NOW), NOW)
    assert _cert_of(cb.encode(m.Pong(src=B, txn=3, overlay=OVERLAY), ref0, NOW))


def test_validity_is_still_checked_for_a_held_certificate() -> None:
    ca, cb = warm(check_validity=True)
    data = ca.encode(m.Ping(src=A, txn=5, overlay=OVERLAY), B, NOW)
    assert not _cert_of(data)
    assert cb.decode(data, NOW) == m.Ping(src=A, txn=5, overlay=OVERLAY)


def test_refusal_answers() -> None:
    ca, _ = codecs()
    cb = WireCodec(B_ID, OVERLAY, follow_clock=False, answer_rate=2)
    late = ca.encode(m.Ping(src=A, txn=1, overlay=OVERLAY), B, NOW - 300)
    with pytest.raises(WireError) as info:
        cb.decode(late, NOW)
    out, to = cb.refusal_answer(info.value, B, NOW, source=("192.0.2.9", 9))  # type: ignore[misc]
    assert to == (A.host, A.port)  # authentic: its own address
    assert out.startswith(b"SIP/2.0 403 Stale Date\r\n")
    late_answer = cb.encode(m.Pong(src=B, txn=1, overlay=OVERLAY), A, NOW)
    with pytest.raises(WireError) as info:
        WireCodec(A_ID, OVERLAY, follow_clock=False).decode(late_answer, NOW + 300)
    assert cb.refusal_answer(info.value, B, NOW) is None  # never answer a response
    # unverifiable requests: answered at most answer_rate per second, only to the source
    aw, _ = warm()
    cb = WireCodec(B_ID, OVERLAY, answer_rate=2)  # holds no certificate
    refused = []
    for txn in range(5):
        with pytest.raises(WireError) as info:
            cb.decode(aw.encode(m.Ping(src=A, txn=10 + txn, overlay=OVERLAY), B, NOW), NOW)
        refused.append(info.value)
    assert cb.refusal_answer(refused[0], B, NOW) is None  # no source: no answer
    got = [cb.refusal_answer(e, B, NOW + 0.01, source=("10.0.0.1", 5060)) for e in refused]
    assert sum(g is not None for g in got) == 2 and cb.counters["answers_limited"] == 3
    assert cb.refusal_answer(refused[4], B, NOW + 1, source=("10.0.0.1", 5060)) is not None
    # a request for another node that cannot be verified is not even described
    aw.certificates.known_by[C.id] = float("inf")  # A believes C holds its certificate: none goes
    to_c = aw.encode(m.Ping(src=A, txn=20, overlay=OVERLAY), C, NOW)
    assert not _cert_of(to_c)
    with pytest.raises(WireError) as info:
        cb.decode(to_c, NOW)
    assert info.value.reason == "misdirected" and info.value.message is None


def test_a_chord_node_gets_through_a_restarted_peer() -> None:
    """End to end: a node's stabilize request meets a peer that restarted (it lost A's
    certificate), is answered 428, sent again by A's codec with the certificate, and
    answered. The node sees only the answer: the 428 and the resend are the codec's."""
    from overlay.chord.node import ChordConfig, ChordNode

    ca, cb = warm()
    node = ChordNode(A, A_ID.record_signer, config=ChordConfig(overlay=OVERLAY))
    node.successors = [B]
    node.messages_to_send()
    node._stabilize()
    [(dst, req)] = node.messages_to_send()
    wire = ca.encode(req, dst, NOW)
    assert not _cert_of(wire)
    cb = WireCodec(B_ID, OVERLAY)  # B restarted
    refused = cb.receive(wire, NOW, B, source=(A.host, A.port))
    assert refused.message is None and refused.refused is not None
    assert refused.refused.reason == "certificate_needed"
    [error] = refused.send
    assert error.back and error.to == (A.host, A.port)  # back where it came from
    got = ca.receive(error.data, NOW + 0.01, A, source=(B.host, B.port))
    assert got.message is None and got.refused is None  # nothing for the node
    [again] = got.send
    assert again.to == (B.host, B.port) and not again.back
    assert _cert_of(again.data)  # ... now with A's certificate
    assert node.messages_to_send() == []  # the node sent nothing again
    got = cb.receive(again.data, NOW + 0.01, B, source=(A.host, A.port))
    assert got.message == req and got.send == ()  # the same request (same txn)
    after_b = m.NodeRef((B.id + 1) % (1 << 128), "10.0.0.3", 5060)
    answer = cb.encode(m.Neighbors(src=B, txn=req.txn, overlay=OVERLAY, predecessor=A,
                                   successors=(after_b,)), A, NOW + 0.02)
    reply = ca.receive(answer, NOW + 0.02, A, source=(B.host, B.port))
    assert reply.send == () and reply.message is not None
    node.receive(reply.message, 0.02)
    assert [s.id for s in node.successors] == [B.id, after_b.id]
    assert ca.counters["certificate_resends"] == 1 and node.stats["timeouts"] == 0


def test_the_codec_sends_a_request_again_once_on_a_428() -> None:
    """Only a request that went without our certificate is sent again, once; any other
    428 is an answer like any Error, for the node."""
    ca, cb = warm()
    ping = m.Ping(src=A, txn=50, overlay=OVERLAY)
    cb = WireCodec(B_ID, OVERLAY)  # B restarted
    first = ca.encode(ping, B, NOW)
    error = cb.receive(first, NOW, B, source=(A.host, A.port)).send[0].data
    again = ca.receive(error, NOW, A)
    assert again.message is None and len(again.send) == 1 and _cert_of(again.send[0].data)
    # a second 428 for the same request (the peer still cannot check it): an answer
    second = cb.encode(m.Error(src=B, txn=50, overlay=OVERLAY, code=428,
                               reason="Certificate Needed"), A, NOW + 0.1)
    got = ca.receive(second, NOW + 0.1, A)
    assert got.send == () and isinstance(got.message, m.Error) and got.message.code == 428
    # a 428 to a request that did not go without our certificate: the same
    stray = cb.encode(m.Error(src=B, txn=51, overlay=OVERLAY, code=428,
                              reason="Certificate Needed"), A, NOW + 0.2)
    assert ca.receive(stray, NOW + 0.2, A).message == m.Error(
        src=B, txn=51, overlay=OVERLAY, code=428, reason="Certificate Needed")
    assert ca.counters["certificate_resends"] == 1


def test_receive_answers_what_it_refuses() -> None:
    """A stale request gets a 403 to its sender's address; garbage gets nothing."""
    ca, _ = codecs()
    cb = WireCodec(B_ID, OVERLAY, follow_clock=False)
    late = cb.receive(ca.encode(m.Ping(src=A, txn=1, overlay=OVERLAY), B, NOW - 300), NOW, B,
                      source=("192.0.2.9", 9))
    assert late.refused is not None and late.refused.reason == "stale"
    [out] = late.send
    assert out.to == (A.host, A.port) and not out.back
    assert out.data.startswith(b"SIP/2.0 403 Stale Date\r\n")
    junk = cb.receive(b"garbage", NOW, B, source=("192.0.2.9", 9))
    assert junk.refused is not None and junk.refused.reason == "malformed"
    assert junk.message is None and junk.send == ()
