"""Phones over TLS (issue 9, point 4): real baresip phones on the box's TLS port register
and call phones on UDP, both ways, each side hanging up once (the BYE toward the TLS phone
must reuse its connection: it has no certificate to accept a new one); a phone with the
box's TLS address as its outbound proxy; and calls across two boxes in namespaces.
Debian's sipp has no TLS ("To use a TLS transport you must compile SIPp with OpenSSL"),
so sipp is not used here."""

from __future__ import annotations

import pytest
from marks import NEEDS_BARESIP, NEEDS_NETNS
from meshbed import MeshBed
from meshbed.fixtures import make_bed_fixture  # noqa: F401  (fixture make_bed)
from phones.baresip import Baresip
from phones.node import NodeProcess
from phones.ports import free_port
from test_mesh_calls import start_nodes, wait_ring
from test_mesh_loopback import status

needs_netns = NEEDS_NETNS
pytestmark = [pytest.mark.phones, NEEDS_BARESIP]


def call(caller: Baresip, callee: Baresip, uri: str, node: NodeProcess,
         hangup: Baresip) -> None:
    try:
        caller.dial(uri)
        callee.wait_event("CALL_ESTABLISHED", timeout=15)  # answermode=auto
        caller.wait_event("CALL_ESTABLISHED", timeout=15)
        hangup.hangup()
        caller.wait_event("CALL_CLOSED", timeout=10)
        callee.wait_event("CALL_CLOSED", timeout=10)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- node ---\n{node.log()[-6000:]}") from None


def test_a_tls_phone_and_a_udp_phone_call_each_other(start_node, tmp_path) -> None:
    node = start_node(tmp_path, tls_port=free_port(udp=False))
    tls = Baresip("1001", node.tls_port, workdir=tmp_path / "tls", transport="tls")
    udp = Baresip("1002", node.port, workdir=tmp_path / "udp")
    try:
        for phone in (tls, udp):
            phone.start().wait_registered(timeout=10)
        sources = {r["extension"]: r["source"] for r in status(node)["registrations"]}
        assert sources["1001"].startswith("TLS ") and sources["1002"].startswith("UDP ")
        call(tls, udp, node.uri("1002"), node, hangup=udp)  # BYE to the TLS phone
        call(udp, tls, node.uri("1001"), node, hangup=tls)
    finally:
        for phone in (tls, udp):
            phone.stop()
    assert "call 1001 -> 1002" in node.log() and "call 1002 -> 1001" in node.log()
    assert (node.data_dir / "tls.key").stat().st_mode & 0o777 == 0o600


def test_tls_phones_with_the_box_as_outbound_proxy(start_node, tmp_path) -> None:
    node = start_node(tmp_path, tls_port=free_port(udp=False))
    outbound = f"sip:{node.host}:{node.tls_port};transport=tls"
    phones = [Baresip(ext, node.tls_port, workdir=tmp_path / ext, transport="tls",
                      outbound=outbound) for ext in ("1011", "1012")]
    try:
        for phone in phones:
            phone.start().wait_registered(timeout=10)
        call(phones[0], phones[1], f"sip:1012@{node.host}:{node.tls_port};transport=tls",
             node, hangup=phones[0])
    finally:
        for phone in phones:
            phone.stop()
    assert "call 1011 -> 1012" in node.log()


@needs_netns
@pytest.mark.netns
def test_a_tls_phone_calls_across_boxes_and_back(make_bed) -> None:
    """Box 0 serves a TLS phone, box 1 a UDP phone (namespaces, real mDNS): each calls the
    other through both boxes, and each side hangs up once."""
    bed: MeshBed = make_bed(2)
    nodes = start_nodes(bed, range(2), config="[sip]\nt1_ms = 200\n")
    wait_ring(bed, nodes, timeout=20.0)
    tls = bed.baresip(0, "1001", nodes[0], transport="tls")
    udp = bed.baresip(1, "1002", nodes[1])
    for phone in (tls, udp):
        phone.wait_registered(timeout=10)
    call(tls, udp, nodes[0].uri("1002"), nodes[0], hangup=udp)
    call(udp, tls, nodes[1].uri("1001"), nodes[1], hangup=tls)
    assert "call 1001 -> 1002 via box" in nodes[0].log()
    assert "call 1002 -> 1001 via box" in nodes[1].log()
