"""Revocation in the codec and on disk: CRLs spread by number, revoked senders refused,
foreign or damaged CRLs counted, the newest kept across a restart."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from appliance.crlfile import CrlFile
from overlay.chord import messages as m
from overlay.chord.wire import WireCodec, WireError
from overlay.chord.wire.revocations import CRL_HEADER, CRL_NUMBER_HEADER
from overlay.identity import CertificateAuthority, NodeIdentity, create_ca
from overlay.revocation import Crl, Revocations, make_crl
from overlay.sip.message import parse_message

OVERLAY = "meshsip"
NOW = 1_700_000_000.0
CA, OTHER = create_ca(), create_ca()
A_ID, B_ID, X_ID = (NodeIdentity.generate(CA) for _ in range(3))
A = m.NodeRef(A_ID.node_id, "10.0.0.1", 5060)
B = m.NodeRef(B_ID.node_id, "10.0.0.2", 5060)
X = m.NodeRef(X_ID.node_id, "10.0.0.3", 5060)


def der(crl_number: int, *revoked: NodeIdentity, ca: CertificateAuthority = CA) -> bytes:
    serials = [r.certificate.serial_number for r in revoked]
    return make_crl(ca, serials, crl_number).public_bytes(Encoding.DER)


def exchange(sender: WireCodec, receiver: WireCodec, src: m.NodeRef, dst: m.NodeRef,
             txn: int, now: float = NOW) -> m.Message:
    data = sender.encode(m.Ping(src=src, txn=txn, overlay=OVERLAY), dst, now)
    return receiver.decode(data, now)


def test_a_crl_spreads_by_number_and_stops_once_held():
    a, b = WireCodec(A_ID, OVERLAY), WireCodec(B_ID, OVERLAY)
    assert a.revocations.offer(der(2, X_ID)) is not None
    exchange(b, a, B, A, 1)  # b says it holds CRL 0
    data = a.encode(m.Ping(src=A, txn=2, overlay=OVERLAY), B, NOW)
    sip = parse_message(data)
    assert sip.get(CRL_NUMBER_HEADER) == "2" and sip.get(CRL_HEADER)
    b.decode(data, NOW)
    assert b.revocations.number == 2 and b.revocations.revokes(X_ID.node_id)
    exchange(b, a, B, A, 3)  # b now advertises 2: a stops carrying the list
    assert parse_message(a.encode(m.Ping(src=A, txn=4, overlay=OVERLAY), B, NOW)) \
        .get(CRL_HEADER) is None
    assert a.counters["crl_sent"] == 1


def test_a_revoked_sender_is_refused_and_counted():
    a, x = WireCodec(A_ID, OVERLAY), WireCodec(X_ID, OVERLAY)
    exchange(x, a, X, A, 1)  # accepted while not revoked
    a.revocations.offer(der(1, X_ID))
    with pytest.raises(WireError) as refused:
        exchange(x, a, X, A, 2)
    assert refused.value.reason == "revoked"
    assert a.counters["revoked"] == 1


def test_older_foreign_and_damaged_crls_change_nothing():
    revocations = Revocations(CA.certificate)
    assert revocations.offer(der(3, X_ID)) is not None
    assert revocations.offer(der(2)) is None  # the number decides, not the date
    assert revocations.offer(der(3)) is None
    foreign = der(9, A_ID, ca=OTHER)
    assert revocations.offer(foreign) is None
    assert revocations.offer(foreign) is None  # again: counted, not checked again
    assert revocations.offer(b"\x30\x82garbage") is None
    assert revocations.number == 3 and not revocations.revokes(A_ID.node_id)
    assert revocations.counters == {"crl_adopted": 1, "crl_older": 2, "crl_foreign": 2,
                                    "crl_malformed": 1}
    assert Revocations(None).offer(der(5)) is None  # open mode holds none


def test_crl_headers_only_in_ca_mode_and_bad_ones_ignored():
    a, b = WireCodec(A_ID, OVERLAY), WireCodec(B_ID, OVERLAY)
    sip = parse_message(a.encode(m.Ping(src=A, txn=1, overlay=OVERLAY), B, NOW))
    assert sip.get(CRL_NUMBER_HEADER) == "0"
    open_id = NodeIdentity.generate()  # open mode: no CRL headers at all
    open_ref = m.NodeRef(open_id.node_id, "10.0.0.9", 5060)
    sip = parse_message(WireCodec(open_id, OVERLAY).encode(
        m.Ping(src=open_ref, txn=1, overlay=OVERLAY), B, NOW))
    assert sip.get(CRL_NUMBER_HEADER) is None
    sip = parse_message(a.encode(m.Ping(src=A, txn=2, overlay=OVERLAY), B, NOW))
    sip.headers = [h for h in sip.headers if h[0] != CRL_NUMBER_HEADER]
    sip.headers += [(CRL_NUMBER_HEADER, "lots"), (CRL_HEADER, "!!")]
    b.crls.read(sip, A.id)  # (the codec calls it once the message is authentic)
    assert b.revocations.counters["crl_malformed"] == 2 and b.revocations.number == 0


def test_the_file_is_read_on_change_and_an_adopted_list_kept(tmp_path: Path):
    revocations = Revocations(CA.certificate)
    kept: list[Crl] = []
    revocations.on_adopted = kept.append
    file = CrlFile(tmp_path, revocations)
    file.poll()  # no file yet
    (tmp_path / "revoked.crl").write_bytes(der(1, X_ID))
    file.poll()
    assert revocations.number == 1 and len(kept) == 1
    (tmp_path / "revoked.crl").write_bytes(der(7, ca=OTHER))
    file.poll()
    assert revocations.number == 1 and revocations.counters["crl_foreign"] == 1
    newer = Crl.verified(der(2, X_ID, A_ID), CA.certificate)
    assert revocations.adopt(newer)
    file.save(newer)  # as the mesh does with one from the overlay
    restarted = Revocations(CA.certificate)
    CrlFile(tmp_path, restarted).poll()
    assert restarted.number == 2 and restarted.revokes(A_ID.node_id)
    file.save(Crl.verified(der(1), CA.certificate))  # never replaces a newer file
    assert Crl.verified((tmp_path / "revoked.crl").read_bytes(), CA.certificate).number == 2
