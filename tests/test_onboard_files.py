"""Provisioning files per vendor, the file a path asks for, the PnP SUBSCRIBE parser, the
probe sequence and derived passwords (appliance/onboard)."""

from __future__ import annotations

import asyncio
import random
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from appliance.claims import ACCEPTED, IN_USE
from appliance.onboard.alloc import ALLOC_PREFIX, Allocator, candidates, password_for, proof
from appliance.onboard.files import Account, normal_mac, render, vendor_of, wanted
from appliance.onboard.panel import render_panel
from appliance.onboard.pnp import check_sync, notify, ok_response, parse_subscribe
from appliance.onboard.service import AllocatedUsers, neighbours
from overlay.sip.message import Request, Response, parse_message

ACCOUNT = Account("2042", "p<&>'\"w", "10.99.0.10", 5060)


def test_yealink_file_starts_with_its_exact_version_line():
    text, kind = render("yealink", ACCOUNT)
    lines = text.splitlines()
    assert lines[0] == "#!version:1.0.0.1" and kind.startswith("text/plain")
    keys = dict(line.split(" = ", 1) for line in lines[1:])
    assert keys["account.1.user_name"] == keys["account.1.auth_name"] == "2042"
    assert keys["account.1.label"] == "2042"
    assert keys["account.1.password"] == ACCOUNT.password
    assert keys["account.1.sip_server.1.address"] == "10.99.0.10"


@pytest.mark.parametrize("vendor, user, password", [
    ("grandstream", "config/P35", "config/P34"),
    ("snom", "phone-settings/user_name", "phone-settings/user_pass"),
])
def test_xml_files_are_well_formed_and_escape_the_password(vendor, user, password):
    text, kind = render(vendor, ACCOUNT)
    root = ET.fromstring(text)
    assert kind == "application/xml"
    assert root.findtext(user) == "2042" and root.findtext(password) == ACCOUNT.password


def test_polycom_and_linphone_files():
    poly = ET.fromstring(render("polycom", ACCOUNT)[0]).find("reg")
    assert poly is not None and poly.get("reg.1.auth.password") == ACCOUNT.password
    root = ET.fromstring(render("linphone", ACCOUNT)[0])
    ns = "{http://www.linphone.org/xsds/lpconfig.xsd}"
    entries = {e.get("name"): e.text for e in root.iter(f"{ns}entry")}
    assert entries["reg_identity"] == "sip:2042@10.99.0.10"
    assert entries["passwd"] == ACCOUNT.password and entries["username"] == "2042"


@pytest.mark.parametrize("name, agent, expect", [
    ("0015657322ff.cfg", "Yealink SIP-T46S 66.86.0.15 00:15:65:73:22:ff",
     ("yealink", "0015657322ff")),
    ("0004f2aabbcc.cfg", "FileTransport PolycomVVX-VVX_410-UA/5.9", ("polycom", "0004f2aabbcc")),
    ("000413AABBCC.xml", "snomD785", ("snom", "000413aabbcc")),
    ("cfgc074ad112233.xml", "Grandstream GXP2170", ("grandstream", "c074ad112233")),
    ("y000000000044.cfg", "Yealink", ("yealink", None)),
    ("../etc/passwd", "x", None), ("cfgc074ad112233.cfg", "x", None), ("00156573.cfg", "", None),
])
def test_the_path_and_user_agent_name_the_file(name, agent, expect):
    assert wanted(name, agent) == expect


def test_macs_in_their_many_spellings():
    for text in ("MAC0015657322ff", "MAC:000413AABBCC", "MAC%3AC074AD112233",
                 "00:15:65:73:22:FF"):
        assert normal_mac(text) is not None
    assert normal_mac("MAC0015") is None and normal_mac("MACzz15657322ff") is None
    assert vendor_of("", '"snom";model=x') == "snom" and vendor_of("curl/8") is None


SNOM = (b"SUBSCRIBE sip:MAC%3a000413AABBCC@intern.snom.de SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 10.99.0.12:5060;rport\r\n"
        b"From: <sip:MAC%3a000413AABBCC@intern.snom.de>;tag=1\r\n"
        b"To: <sip:MAC%3a000413AABBCC@intern.snom.de>\r\nCall-ID: c1\r\nCSeq: 1 SUBSCRIBE\r\n"
        b'Event: ua-profile;profile-type="device";vendor="snom";model="snomD785"\r\n'
        b"Expires: 0\r\nAccept: application/url\r\nContact: <sip:10.99.0.12:5060>\r\n"
        b"Content-Length: 0\r\n\r\n")


def test_a_snom_subscribe_with_no_branch_gets_200_and_a_notify_with_the_url():
    sub = parse_subscribe(SNOM, ("UDP", "10.99.0.12", 5060))
    assert not isinstance(sub, str) and sub.mac == "000413aabbcc" and sub.vendor == "snom"
    ok = parse_message(ok_response(sub, "t1"))
    assert isinstance(ok, Response) and ok.status == 200 and ok.get("Expires") == "0"
    note = parse_message(notify(sub, "t1", "10.99.0.10", 5060, "http://10.99.0.10/prov/{mac}.xml"))
    assert isinstance(note, Request) and note.method == "NOTIFY"
    assert note.get("Content-Type") == "application/url" and note.call_id == "c1"
    assert note.body == b"http://10.99.0.10/prov/{mac}.xml" and note.from_tag == "t1"
    sync = parse_message(check_sync("000413aabbcc", ("UDP", "10.99.0.12", 5060), "10.0.0.1", 5060))
    assert isinstance(sync, Request) and sync.get("Event") == "check-sync;reboot=true"


@pytest.mark.parametrize("data, why", [
    (b"garbage", "pnp_unparsable"),
    (SNOM.replace(b"ua-profile", b"presence"), "pnp_other_event"),
    (SNOM.replace(b"SUBSCRIBE sip:MAC%3a000413AABBCC", b"SUBSCRIBE sip:nobody"), "pnp_no_mac"),
    (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\nFrom: <sip:a@b>\r\nTo: <sip:a@b>\r\n"
     b"Call-ID: x\r\nCSeq: 1 SUBSCRIBE\r\n\r\n", "pnp_not_subscribe"),
])
def test_anything_else_on_the_group_is_dropped_and_counted(data, why):
    assert parse_subscribe(data, ("UDP", "10.0.0.2", 5060)) == why


def test_probe_sequence_is_the_same_everywhere_and_stays_in_range():
    seq = list(candidates("0015657322ff", 2000, 2999))
    assert seq == list(candidates("0015657322ff", 2000, 2999))
    assert len(seq) == len(set(seq)) == 64 and all(2000 <= int(e) <= 2999 for e in seq)
    assert sorted(candidates("x", 5, 7)) == ["5", "6", "7"]
    assert password_for(b"s", "2001") == password_for(b"s", "2001") != password_for(b"t", "2001")


def test_allocation_gives_the_same_phone_its_number_and_another_phone_another(tmp_path: Path):
    held: dict[str, str] = {}  # aor -> proof, as a storing node would

    async def claim(aor: str, instance: str, verified: bool) -> str:
        if held.setdefault(aor, instance) != instance:
            return IN_USE
        return ACCEPTED

    async def run() -> None:
        alloc = Allocator(claim, tmp_path / "allocations.json", 2000, 2001)
        a = await alloc.allocate("aa")
        assert await alloc.allocate("aa") == a
        b = await alloc.allocate("bb")
        assert {a, b} == {"2000", "2001"} and await alloc.allocate("cc") is None
        assert alloc.lost(ALLOC_PREFIX + a) == "aa" and "aa" not in alloc.by_key
        again = Allocator(claim, tmp_path / "allocations.json", 2000, 2001)
        again.load()
        assert again.by_key == {"bb": b} and held[ALLOC_PREFIX + b] == proof("bb")
        users = AllocatedUsers({"1001": "x"}, again, b"s")
        assert users.get("1001") == "x" and users.get("2000") == password_for(b"s", "2000")
        assert users.get("3000") is None

    asyncio.run(run())


def test_neighbour_table(tmp_path: Path):
    arp = tmp_path / "arp"
    arp.write_text("IP address HW type Flags HW address Mask Device\n"
                   "10.99.0.12 0x1 0x2 aa:bb:cc:00:11:22 * eth0\n"
                   "10.99.0.13 0x1 0x0 00:00:00:00:00:00 * eth0\n")
    assert neighbours(arp) == {"10.99.0.12": "aabbcc001122"}
    assert neighbours(tmp_path / "none") == {}


def test_the_status_page_shows_the_latest_linphone_link_as_a_qr_code():
    status = {"open_seconds_left": 0}
    html = render_panel(("http://10.0.0.1/prov/linphone/t0k.xml", "2042"), status, "10.0.0.1")
    assert "<svg" in html and "2042" in html and "enroll --open" in html
    assert "<svg" not in render_panel(None, {"open_seconds_left": 600}, "<b>")
    assert "&lt;b&gt;" in render_panel(None, {"open_seconds_left": 600}, "<b>")


def test_mangled_subscribes_never_raise():
    rng = random.Random(12)
    for _ in range(3000):
        data = bytearray(SNOM)
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(len(data))
            data[at:at + rng.randint(0, 3)] = bytes(rng.randrange(256) for _ in range(
                rng.randint(0, 3)))
        sub = parse_subscribe(bytes(data), ("UDP", "10.0.0.2", 5060))
        if not isinstance(sub, str):
            ok_response(sub, "t")
            notify(sub, "t", "10.0.0.1", 5060, "http://10.0.0.1/prov/")
