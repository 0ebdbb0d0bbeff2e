"""TLS on the real transport over loopback: box links (mutual TLS 1.3 against the CA on the
SIP port, open mode encryption), SIP over TLS for phones on the TLS port, and the overlay
service's rule that a link speaks only for its own Node-ID."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import time
from pathlib import Path

import pytest
from test_transport import HOST, Inbox, register, run

from appliance.addresses import OwnAddresses
from appliance.config import ConfigError, load_config
from appliance.phone_tls import PhoneTlsError, phone_certificate, tls_settings
from appliance.proxy.hops import Hops
from overlay.chord.messages import NodeRef, Ping
from overlay.identity import NodeIdentity, create_ca
from overlay.service import OverlayService, OverlaySettings
from overlay.sip.transport import Address, SipTransport


async def box(identity: NodeIdentity, tmp: Path | None = None,
              errors: list[tuple[Address, Exception]] | None = None,
              ) -> tuple[SipTransport, Inbox]:
    """A transport with box links (and phones' TLS when `tmp` is given)."""
    inbox = Inbox(reply=True)
    t = SipTransport(inbox, None if errors is None else lambda d, e: errors.append((d, e)))
    inbox.transport = t
    t.tls = tls_settings(identity, tmp or Path("."), phones=tmp is not None)
    await t.start(HOST, 0)
    if tmp is not None:
        await t.listen_tls(0)
    return t, inbox


def test_ca_mode_links_are_mutual_tls13_and_name_the_peer() -> None:
    async def main() -> None:
        # A CA valid only from 2030: links must not depend on the clock (a Pi has none).
        ca = create_ca(now=dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
        ida, idb = NodeIdentity.generate(ca), NodeIdentity.generate(ca)
        (a, inbox_a), (b, inbox_b) = await box(ida), await box(idb)
        request = register("TLS")
        a.send(request, ("MTLS", HOST, b.local_port))
        data, source = await inbox_b.get()
        assert data == request and source[0] == "MTLS"
        assert b.peer_of(source) == ida.node_id  # the client's certificate, checked
        _, back = await inbox_a.get()  # B's answer, on the same connection
        assert back == ("MTLS", HOST, b.local_port)
        assert a.peer_of(back) == idb.node_id
        conn = a._conns[back]
        assert conn.tls is not None and conn.tls.version == "TLSv1.3"
        # plain SIP over TCP still works on the same port
        a.send(register("TCP", branch="2"), ("TCP", HOST, b.local_port))
        _, source = await inbox_b.get()
        assert source[0] == "TCP" and b.peer_of(source) is None
        assert a.counters["tls_failures"] == b.counters["tls_failures"] == 0
        await a.close()
        await b.close()

    run(main)


@pytest.mark.parametrize("stranger", ["other CA", "open mode"])
def test_a_box_the_ca_did_not_certify_cannot_open_a_link(stranger: str) -> None:
    async def main() -> None:
        ca = create_ca()
        other = NodeIdentity.generate(create_ca() if stranger == "other CA" else None)
        errors: list[tuple[Address, Exception]] = []
        (b, inbox_b), (x, _) = await box(NodeIdentity.generate(ca)), await box(other, None,
                                                                               errors)
        x.send(register("TLS"), ("MTLS", HOST, b.local_port))
        for _ in range(100):
            if b.counters["tls_failures"] and x.counters["tls_failures"]:
                break
            await asyncio.sleep(0.05)
        assert b.counters["tls_failures"] == 1 and x.counters["tls_failures"] == 1
        assert inbox_b.items.empty() and b.counters["received"] == 0
        assert [d for d, _ in errors] == [("MTLS", HOST, b.local_port)]  # told, not lost
        # and the other way round: the stranger refuses the deployment's box
        b.send(register("TLS", branch="2"), ("MTLS", HOST, x.local_port))
        for _ in range(100):
            if b.counters["tls_failures"] == 2:
                break
            await asyncio.sleep(0.05)
        assert b.counters["tls_failures"] == 2 and x.counters["received"] == 0
        await x.close()
        await b.close()

    run(main)


def test_open_mode_links_encrypt_and_the_client_knows_the_server() -> None:
    async def main() -> None:
        ida, idb = NodeIdentity.generate(), NodeIdentity.generate()
        (a, inbox_a), (b, inbox_b) = await box(ida), await box(idb)
        a.send(register("TLS"), ("MTLS", HOST, b.local_port))
        _, source = await inbox_b.get()
        assert source[0] == "MTLS" and b.peer_of(source) is None  # no client certificate
        _, back = await inbox_a.get()
        assert a.peer_of(back) == idb.node_id
        await a.close()
        await b.close()

    run(main)


def test_a_phone_registers_over_tls_and_gets_its_answer(tmp_path: Path) -> None:
    async def main() -> None:
        t, inbox = await box(NodeIdentity.generate(), tmp_path)
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.maximum_version = ssl.TLSVersion.TLSv1_2  # what many desk phones have
        client.load_verify_locations(tmp_path / "tls.crt")  # a phone that trusts tls.crt
        client.check_hostname = False
        reader, writer = await asyncio.open_connection(HOST, t.tls_port, ssl=client)
        cert = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        assert cert == ssl.PEM_cert_to_DER_cert((tmp_path / "tls.crt").read_text())
        writer.write(register("TLS"))
        data, source = await inbox.get()
        assert source == ("TLS", HOST, writer.get_extra_info("sockname")[1])
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert answer.startswith(b"SIP/2.0 200 OK")
        writer.close()
        await t.close()

    run(main)
    assert (tmp_path / "tls.key").stat().st_mode & 0o777 == 0o600
    key_text = (tmp_path / "tls.key").read_bytes()
    phone_certificate(tmp_path, "0" * 32)  # made once, kept after
    assert (tmp_path / "tls.key").read_bytes() == key_text
    (tmp_path / "tls.crt").unlink()
    with pytest.raises(PhoneTlsError, match="put both, or neither"):
        phone_certificate(tmp_path, "0" * 32)


def test_tls_without_settings_is_a_send_error() -> None:
    async def main() -> None:
        errors: list[tuple[Address, Exception]] = []
        t = SipTransport(lambda d, s: None, lambda d, e: errors.append((d, e)))
        await t.start(HOST, 0)
        t.send(b"OPTIONS", ("MTLS", HOST, 9))
        await asyncio.sleep(0.05)
        assert [d for d, _ in errors] == [("MTLS", HOST, 9)]
        await t.close()

    run(main)


def test_overlay_messages_on_a_link_must_come_from_its_tls_peer() -> None:
    async def main() -> None:
        sent: list[tuple[bytes, Address]] = []
        me, other, liar = (NodeIdentity.generate() for _ in range(3))
        service = OverlayService(me, OverlaySettings(name="t"), lambda d, a: sent.append((d, a)),
                                 "10.0.0.1", 5060)
        src = OverlayService(other, OverlaySettings(name="t"), lambda d, a: None,
                             "10.0.0.2", 5060)

        def ping() -> bytes:
            return src.codec.encode(Ping(src=src.ref, txn=1, overlay="t"),
                                    NodeRef(me.node_id, "10.0.0.1", 5060), time.time())

        service.receive(ping(), ("MTLS", "10.0.0.2", 40000), liar.node_id)
        service.receive(ping(), ("TCP", "10.0.0.2", 40000))  # boxes' streams are TLS
        assert service.counters["link_refused"] == 2 and service.counters["received"] == 0
        service.receive(ping(), ("MTLS", "10.0.0.2", 40000), other.node_id)
        assert service.counters["received"] == 1

    run(main)


def test_record_route_names_each_side_on_its_own_transport() -> None:
    """RFC 5658: a call between a TLS phone and a UDP phone gets two Record-Route entries,
    the callee's side on top, so each phone reaches the box on its own transport."""
    def local(peer: Address) -> Address:
        return (peer[0], "10.0.0.1", 5061 if peer[0] == "TLS" else 5060)

    hops = Hops(local, "tok", OwnAddresses("10.0.0.1", 5060))
    tls, udp, tcp = ("TLS", "10.0.0.7", 40000), ("UDP", "10.0.0.8", 5060), ("TCP", "10.0.0.9", 1)
    assert hops.record_route(tls, udp) == ["<sip:10.0.0.1:5060;lr;ms=tok>",
                                           "<sip:10.0.0.1:5061;lr;ms=tok;transport=tls>"]
    assert hops.record_route(udp, tls) == ["<sip:10.0.0.1:5061;lr;ms=tok;transport=tls>",
                                           "<sip:10.0.0.1:5060;lr;ms=tok>"]
    assert hops.record_route(tls, tls) == ["<sip:10.0.0.1:5061;lr;ms=tok;transport=tls>"]
    assert hops.record_route(tcp, udp) == ["<sip:10.0.0.1:5060;lr;ms=tok;transport=tcp>"]


def test_tls_port_in_the_config(tmp_path: Path) -> None:
    config = tmp_path / "meshsip.toml"
    config.write_text("[sip]\ntls_port = 5071\n")
    assert load_config(config).tls_port == 5071
    assert load_config(None).tls_port == 5061
    assert load_config(config, {"tls_port": 0}).tls_port == 0  # --tls-port 0: none
    with pytest.raises(ConfigError, match="tls_port"):
        load_config(None, {"tls_port": 70000})
