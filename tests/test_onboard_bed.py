"""Phones onboard themselves (appliance/onboard): a Yealink, a Snom and a Grandstream
played by sipp from the forms of real traces multicast their plug-and-play SUBSCRIBE in a
test-bed namespace, fetch the file the NOTIFY points at with their own User-Agent,
register with the extension and password in it (digest) and are called from a phone on
another box. Enrolment is closed on the other box until `meshsip enroll --open`.
"""

from __future__ import annotations

import re
import sys
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from marks import BED
from meshbed import MeshBed
from meshbed.fixtures import make_bed_fixture  # noqa: F401  (fixture make_bed)
from phones.linphone import Linphone, linphonec_binary
from phones.nsexec import in_netns
from test_mesh_calls import FAST, assert_call, call, logs, one_ring, overlays, wait_for

REPO = Path(__file__).resolve().parent.parent
pytestmark = BED
PHONES = {  # vendor: (MAC as its PnP SUBSCRIBE spells it, HTTP User-Agent, SIP port)
    "yealink": ("0015657322ff", "Yealink SIP-T46S 66.86.0.15 00:15:65:73:22:ff", 5060),
    "snom": ("000413AABBCC", "Mozilla/4.0 (compatible; snomD785-SIP 10.1.54.13 "
                             "000413AABBCC)", 5062),
    "grandstream": ("C074AD112233", "Grandstream Model HW GXP2170 SW 1.0.11.3 "
                                    "DevId c074ad112233", 5080),
}


def bed_config(bed: MeshBed, window: int) -> str:
    users = bed.workdir / "users.toml"
    users.write_text('[users]\n"1001" = "caller-secret"\n')
    return (FAST + f'[registrar]\npolicy = "digest"\nusers_file = "{users}"\n'
            f'[enroll]\nsecret = "one deployment"\nwindow = {window}\n')


BROWSE = """
import sys, time
from zeroconf import ServiceBrowser, Zeroconf
zc, found = Zeroconf(interfaces=[sys.argv[1]]), set()
class Listener:
    def add_service(self, zc, kind, name):
        info = zc.get_service_info(kind, name, 3000)
        if info is not None:
            found.update(f"{a}:{info.port}" for a in info.parsed_addresses())
    update_service = remove_service = lambda *a: None
browser = ServiceBrowser(zc, "_sip._udp.local.", Listener())
deadline = time.monotonic() + 20
while time.monotonic() < deadline and len(found) < int(sys.argv[2]):
    time.sleep(0.2)
print(" ".join(sorted(found)))
zc.close()
"""


def sip_services(bed: MeshBed, i: int, want: int) -> set[str]:
    """`_sip._udp` services host i finds by DNS-SD (mDNS inside the bed)."""
    out = bed.exec(i, [sys.executable, "-c", BROWSE, bed.addr(i), str(want)], timeout=60)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def fetch(bed: MeshBed, i: int, url: str, agent: str) -> tuple[int, str]:
    """GET url from host i's namespace with a phone's User-Agent: (status, text)."""
    def get() -> tuple[int, str]:
        req = urllib.request.Request(url, headers={"User-Agent": agent})
        try:
            with urllib.request.urlopen(req, timeout=15) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
    return in_netns(bed.ns(i), get)


def file_url(vendor: str, url: str, mac: str) -> str:
    """What the phone fetches, from the URL in its NOTIFY (FIELD-NOTES: the forms)."""
    if vendor == "snom":
        assert "{mac}" in url, url
        return url.replace("{mac}", mac.upper())
    assert url.endswith("/"), url  # Grandstream ignores anything else; Yealink: directory
    return url + (f"cfg{mac.lower()}.xml" if vendor == "grandstream" else f"{mac.lower()}.cfg")


def account(vendor: str, text: str) -> tuple[str, str]:
    """(extension, password) from a vendor's file, checking the file's form."""
    if vendor == "yealink":
        assert text.splitlines()[0] == "#!version:1.0.0.1", text
        keys = dict(line.split(" = ", 1) for line in text.splitlines()[1:])
        assert keys["account.1.label"] == keys["account.1.user_name"]
        return keys["account.1.user_name"], keys["account.1.password"]
    root = ET.fromstring(text)  # well-formed, or this raises
    if vendor == "grandstream":
        assert root.tag == "gs_provision"
        return root.findtext("config/P35") or "", root.findtext("config/P34") or ""
    assert root.tag == "settings"
    return (root.findtext("phone-settings/user_name") or "",
            root.findtext("phone-settings/user_pass") or "")


def pnp(bed: MeshBed, i: int, vendor: str) -> tuple[str, float]:
    """The phone's PnP SUBSCRIBE from host i: (URL in the NOTIFY, seconds SUBSCRIBE->NOTIFY
    from sipp's own message trace)."""
    mac, _, port = PHONES[vendor]
    done = bed.sipp(i, f"pnp_{vendor}", "224.0.1.75:5060", keys={"mac": mac}, port=port,
                    timeout=15)
    assert done.ok, done.logs
    found = re.search(r"PNP-URL (\S+)", done.logs)
    assert found, done.logs
    stamps = re.findall(r"^-+ (\d+-\d+-\d+\s+\d+:\d+:\d+\.\d+)", done.logs, re.M)
    took = -1.0
    if len(stamps) >= 3:  # sent SUBSCRIBE, received 200, received NOTIFY
        t = [time.mktime(time.strptime(s.split(".")[0], "%Y-%m-%d %H:%M:%S"))
             + float("0." + s.split(".")[1]) for s in stamps[:3]]
        took = t[2] - t[0]
    return found.group(1), took


def test_desk_phones_plug_in_get_a_number_register_and_are_called(make_bed):
    bed = make_bed(3)  # box A in host 0, box B in host 1 (enrolment closed), phones in host 2
    nodes = {0: bed.node(0, config=bed_config(bed, 1800)),
             1: bed.node(1, config=bed_config(bed, 0))}
    wait_for("one ring", lambda: one_ring(overlays(bed, nodes)), nodes, 90.0, poll=0.5)
    # a softphone that looks for SIP servers on its link finds both boxes
    assert sip_services(bed, 2, 2) == {f"{bed.addr(0)}:5060", f"{bed.addr(1)}:5060"}
    extensions, figures = set(), {}
    for vendor, (mac, agent, _) in PHONES.items():
        t0 = time.monotonic()
        url, notify_took = pnp(bed, 2, vendor)
        assert url.startswith(f"http://{bed.addr(0)}/prov/"), url  # box A only answers
        status, text = fetch(bed, 2, file_url(vendor, url, mac), agent)
        assert status == 200, text
        extension, password = account(vendor, text)
        assert extension.isdigit() and len(password) >= 12, text
        callee = bed.sipp_uas(2, "uas_answer", service=extension, calls=1, timeout=120,
                              keys={"proxy": nodes[0].target})
        done = bed.sipp(2, "register_digest", nodes[0].target, service=extension,
                        keys={"auth_user": extension, "password": password,
                              "contact_port": str(callee.port)})
        assert done.ok, f"{vendor} REGISTER {extension}\n{done.logs}\n{logs(nodes)}"
        figures[vendor] = (notify_took, time.monotonic() - t0)
        assert_call(bed, 1, nodes[1], extension, nodes)  # from a phone on box B
        assert callee.wait().ok
        extensions.add(extension)
        # the same phone asking again gets the same number and password back
        assert account(vendor, fetch(bed, 2, file_url(vendor, url, mac), agent)[1]) == (
            extension, password)
    assert len(extensions) == 3
    print("PnP SUBSCRIBE -> NOTIFY, -> first REGISTER 200 (s):", figures)

    # no password for a MAC that never asked, nor from a box whose enrolment is closed
    status, text = fetch(bed, 2, f"http://{bed.addr(0)}/prov/cfg0004f2aabbcc.xml",
                         PHONES["grandstream"][1])
    assert status == 403 and "password" not in text.lower(), text
    own_mac = bed.exec(2, ["cat", "/sys/class/net/eth0/address"], timeout=10).stdout
    own_file = f"http://{bed.addr(1)}/prov/{own_mac.strip().replace(':', '')}.cfg"
    status, text = fetch(bed, 2, own_file, PHONES["yealink"][1])
    assert status == 403 and "closed" in text, text
    out = bed.exec(1, [sys.executable, "-m", "appliance.cli", "enroll", "--open", "10m",
                       "--data-dir", str(nodes[1].data_dir)], cwd=REPO, timeout=30)
    assert out.returncode == 0 and "open" in out.stdout, out.stderr
    # a phone sent by DHCP option 66 fetches its own MAC's file (the box sees the MAC)
    status, text = fetch(bed, 2, own_file, PHONES["yealink"][1])
    assert status == 200, text
    assert account("yealink", text)[0] not in extensions


@pytest.mark.skipif(linphonec_binary() is None, reason="linphonec not installed (linphone-cli)")
def test_a_linphone_given_only_the_enrol_link_registers_and_is_called(make_bed, tmp_path):
    bed = make_bed(2)  # the box in host 0, the Linphone in host 1
    node = bed.node(0, config=bed_config(bed, 0))  # enrolment closed: the token is enough
    out = bed.exec(0, [sys.executable, "-m", "appliance.cli", "enroll", "--linphone",
                       "--data-dir", str(node.data_dir)], cwd=REPO, timeout=30)
    assert out.returncode == 0, out.stderr
    url = re.search(r"http://\S+", out.stdout)
    extension = re.search(r"Extension (\d+)", out.stdout)
    assert url and extension and "█" in out.stdout, out.stdout  # and a QR code
    phone = Linphone(bed, 1, extension.group(1), box=bed.addr(0), workdir=tmp_path / "lp")
    phone.rc.write_text(  # ports and no STUN (the bed has no way out), then only the link
        "[sip]\nsip_port=5070\nsip_tcp_port=-1\nsip_tls_port=-1\n"
        "[net]\nstun_server=\nfirewall_policy=0\nipv6_enabled=0\n"
        "[rtp]\naudio_rtp_port=7078\n"
        f"[misc]\nenable_lime=0\nconfig-uri={url.group(0)}\n")
    phone.start()
    try:
        phone.wait_registered(timeout=60)
        result, _ = call(bed, 0, node, extension.group(1))
        phone.wait_output("Receiving new incoming call")
        assert result.ok, f"{result.logs}\n{logs([node])}"
    finally:
        phone.stop()
    # the link worked once: a second fetch gets no password
    status, text = fetch(bed, 1, url.group(0), "Unknown")
    assert status == 403 and "passwd" not in text, text
