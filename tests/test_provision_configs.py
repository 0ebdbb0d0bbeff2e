"""Provisioning checks fast enough for `make test`: ansible-lint (production profile) and
syntax-check of provisioning/, and the network role's configs rendered into files and judged
by the real programs: `dnsmasq --test`, a real dnsmasq answering a DHCPDISCOVER inside the
test's own namespaces (gateway, DNS and options 120, 66, 160, 150), hostapd's own parser for
an open and a WPA2 network; the node's meshsip.toml rendered for two boxes and read by the
node's own config loader ([enroll]: one generated secret shared by every box). Nothing touches
the machine's own network.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
from phones.nsexec import in_netns
from provkit import ansible
from provkit.dhcp import offer

from appliance.config import Config, load_config

pytestmark = pytest.mark.skipif(ansible.ansible_missing() is not None,
                                reason=str(ansible.ansible_missing()))
HOSTS = {  # one render run for every test: per-host settings in one inventory
    "box-a": {}, "box-b": {}, "box-c": {},
    "ap-open": {"meshsip_network_country": "DE"},
    "ap-wpa2": {"meshsip_network_country": "DE",
                "meshsip_network_ap_passphrase": "correct horse battery"},
}


def test_ansible_lint_production_profile_and_syntax_check() -> None:
    lint = subprocess.run([str(ansible.BIN / "ansible-lint")], cwd=ansible.PROVISIONING,
                          env=ansible.env(), capture_output=True, text=True, timeout=600)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "Profile 'production' was required, and it passed" in lint.stdout + lint.stderr
    syntax = subprocess.run([str(ansible.BIN / "ansible-playbook"), "--syntax-check", "-i",
                             "localhost,", "site.yml"], cwd=ansible.PROVISIONING,
                            env=ansible.env(), capture_output=True, text=True, timeout=300)
    assert syntax.returncode == 0, syntax.stdout + syntax.stderr


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The network role's configs for every host of HOSTS, with the access point on and
    phone subnets inside the test's address block (10.99.N.0/24)."""
    out = tmp_path_factory.mktemp("rendered")
    inventory = out / "hosts.json"
    inventory.write_text(json.dumps({"all": {
        "vars": {"meshsip_network_ap": True, "meshsip_network_phone_prefix": "10.99"},
        "hosts": {name: {"ansible_connection": "local", **v} for name, v in HOSTS.items()}}}))
    run = ansible.playbook(inventory, "-e", f"meshsip_network_render_dir={out}",
                           playbook=ansible.PROVISIONING / "render-network.yml")
    assert run.returncode == 0, run.output
    return out


def subnet_of(host: str) -> str:
    """10.99.N with N the host's place in the sorted inventory (the role's default)."""
    return f"10.99.{sorted(HOSTS).index(host) + 1}"


def dhcp_range(conf: str) -> str:
    return next(line for line in conf.splitlines() if line.startswith("dhcp-range="))


@pytest.mark.skipif(ansible.tool("dnsmasq") is None, reason="dnsmasq-base is not installed")
def test_dnsmasq_configs_pass_dnsmasq_test_and_never_share_a_subnet(rendered: Path) -> None:
    confs = {h: rendered / h / "dnsmasq.conf" for h in HOSTS}
    for conf in confs.values():
        done = subprocess.run(["dnsmasq", "--test", "-C", str(conf)], capture_output=True,
                              text=True, timeout=30)
        assert done.returncode == 0 and "syntax check OK" in done.stderr, done.stderr
    ranges = {dhcp_range(c.read_text()) for c in confs.values()}
    assert len(ranges) == len(HOSTS), ranges
    box = subnet_of("box-b") + ".1"
    text = confs["box-b"].read_text()
    for option in (f"option:router,{box}", f"option:dns-server,{box}",
                   f"option:sip-server,{box}", f'66,"http://{box}/prov/"',
                   f'160,"http://{box}/prov/"', f"150,{box}"):
        assert f"dhcp-option={option}" in text


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def ap_pair():
    """Two namespaces of this test: a box whose access-point interface is wlan0 (veth) and a
    phone on its other end (eth0). Deleted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    box, phone = f"an{os.getpid()}-box", f"an{os.getpid()}-phone"
    _ip("netns", "add", box)
    try:
        _ip("netns", "add", phone)
        _ip("link", "add", "wlan0", "netns", box, "type", "veth", "peer", "name", "eth0",
            "netns", phone)
        for ns, dev in ((box, "wlan0"), (phone, "eth0")):
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "set", dev, "up")
        yield box, phone
    finally:
        for ns in (phone, box):
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, timeout=10)


@pytest.mark.netns
@pytest.mark.skipif(ansible.tool("dnsmasq") is None, reason="dnsmasq-base is not installed")
def test_dnsmasq_offers_gateway_dns_and_phone_options(tmp_path: Path, rendered: Path,
                                                      ap_pair: tuple[str, str]) -> None:
    box, phone = ap_pair
    net = subnet_of("box-a")
    conf = rendered / "box-a" / "dnsmasq.conf"
    _ip("-n", box, "addr", "add", f"{net}.1/24", "dev", "wlan0")
    dnsmasq = subprocess.Popen(
        ["ip", "netns", "exec", box, "dnsmasq", "--keep-in-foreground", "--log-facility=-",
         "--user=root", "--conf-file=" + str(conf), f"--pid-file={tmp_path}/dnsmasq.pid",
         f"--dhcp-leasefile={tmp_path}/leases"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(0.3)
        assert dnsmasq.poll() is None, dnsmasq.communicate()[0]
        address, options = in_netns(phone, lambda: offer("eth0"))
    finally:
        dnsmasq.terminate()
        log = dnsmasq.communicate(timeout=10)[0]
    box_ip = socket.inet_aton(f"{net}.1")
    url = f"http://{net}.1/prov/".encode()
    assert address.startswith(f"{net}."), (address, log)
    assert options[1] == socket.inet_aton("255.255.255.0")
    assert options[3] == box_ip  # default gateway: phones drop a network without one
    assert options[6] == box_ip  # DNS server
    assert options[120] == b"\x01" + box_ip  # SIP server, RFC 3361 address form
    # dnsmasq ends a quoted string with a NUL, as phones expect of a C string
    assert options[66].rstrip(b"\0") == url and options[160].rstrip(b"\0") == url
    assert options[150] == box_ip


@pytest.mark.skipif(ansible.tool("hostapd") is None, reason="hostapd is not installed")
@pytest.mark.parametrize("host", ["ap-open", "ap-wpa2"])
def test_hostapd_config_is_complete_for_open_and_wpa2(tmp_path: Path, rendered: Path,
                                                      host: str) -> None:
    passphrase = HOSTS[host].get("meshsip_network_ap_passphrase", "")
    conf = tmp_path / "hostapd.conf"
    conf.write_text((rendered / host / "hostapd.conf").read_text())
    keys = dict(line.split("=", 1) for line in conf.read_text().splitlines()
                if line and not line.startswith("#"))
    assert {"interface", "driver", "ssid", "hw_mode", "channel", "country_code"} <= keys.keys()
    if passphrase:
        assert (keys["wpa"], keys["wpa_key_mgmt"], keys["rsn_pairwise"]) == ("2", "WPA-PSK",
                                                                             "CCMP")
        assert keys["wpa_passphrase"] == passphrase
    else:
        assert keys["wpa"] == "0" and "wpa_passphrase" not in keys
    # hostapd's own parser: every line must be accepted; it then stops at the driver (no
    # radio in an empty network namespace), which shows the config itself was complete.
    (tmp_path / "ctrl").mkdir()
    conf.write_text(conf.read_text().replace("ctrl_interface=/run/hostapd",
                                             f"ctrl_interface={tmp_path}/ctrl"))
    done = subprocess.run(["unshare", "--net", "hostapd", str(conf)], capture_output=True,
                          text=True, timeout=30)
    said = done.stdout + done.stderr
    assert "errors found in configuration file" not in said, said
    assert "nl80211" in said, said



RENDER_NODE_CONFIG = """
- name: Render meshsip.toml for every host onto the controller
  hosts: all
  gather_facts: false
  tasks:
    - name: The role's defaults and the deployment's enrolment secret
      ansible.builtin.include_role:
        name: meshsip_node
        tasks_from: enroll_secret.yml
        public: true
    - name: Render
      ansible.builtin.template:
        src: "{{ roles_dir }}/meshsip_node/templates/meshsip.toml.j2"
        dest: "{{ out }}/{{ inventory_hostname }}.toml"
        mode: "0600"
"""
BOXES = ("box-a", "box-b")


def render_node_configs(tmp_path: Path, *args: str) -> tuple[ansible.Run, list[Config]]:
    """Each box's meshsip.toml, read by the node's own loader, after a render run."""
    run = ansible.playbook(tmp_path / "inventory" / "hosts.json", "-e", f"out={tmp_path}",
                           "-e", f"roles_dir={ansible.PROVISIONING / 'roles'}", *args,
                           playbook=tmp_path / "render-node.yml")
    assert run.returncode == 0, run.output
    return run, [load_config(tmp_path / f"{box}.toml") for box in BOXES]


def test_every_box_gets_the_enroll_keys_and_one_secret_made_once(tmp_path: Path) -> None:
    (tmp_path / "inventory").mkdir()
    (tmp_path / "inventory" / "hosts.json").write_text(json.dumps({"all": {
        "vars": {"meshsip_node_enroll_window": 600, "meshsip_node_enroll_first_extension": 3000,
                 "meshsip_node_enroll_last_extension": 3099},
        "hosts": {box: {"ansible_connection": "local"} for box in BOXES}}}))
    (tmp_path / "render-node.yml").write_text(RENDER_NODE_CONFIG)
    _, configs = render_node_configs(tmp_path)
    secret_file = tmp_path / "inventory" / "pki" / "enroll.secret"
    secret = secret_file.read_text().strip()
    assert secret_file.stat().st_mode & 0o777 == 0o600 and len(secret) == 40
    for c in configs:
        assert (c.enroll_window, c.enroll_first, c.enroll_last, c.enroll_secret) == \
            (600, 3000, 3099, secret)
    again, _ = render_node_configs(tmp_path)  # the second run makes nothing new
    assert [again.recap(box)["changed"] for box in BOXES] == [0, 0], again.changed_tasks()
    assert secret not in again.output
    _, configs = render_node_configs(tmp_path, "-e", "meshsip_node_enroll_secret=chosen")
    assert {c.enroll_secret for c in configs} == {"chosen"}
