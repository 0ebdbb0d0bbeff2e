"""Phones with the box as their outbound proxy (issue 7, point 2): every request carries
`Route: <sip:BOX;lr>` naming the box by address or by name, and the box must see that this
Route is itself (RFC 3261 16.4) instead of forwarding the request to itself until 483.

Real parts: baresip with `outbound=` (one box on loopback; across boxes on the namespace
bed), sipp with a preloaded Route by address and by name, and a box bound to 0.0.0.0 with
two interfaces (the second one added while it runs).
"""

from __future__ import annotations

import socket
import subprocess

import pytest
from marks import NEEDS_BARESIP, NEEDS_NETNS, NEEDS_SIPP
from meshbed import MeshBed
from meshbed.fixtures import make_bed_fixture  # noqa: F401  (fixture make_bed)
from phones.baresip import Baresip
from phones.node import NodeProcess
from phones.sipp import SippResult, SippUas, run_sipp
from test_mesh_calls import logs, start_nodes, wait_ring

needs_baresip, needs_netns = NEEDS_BARESIP, NEEDS_NETNS
pytestmark = [pytest.mark.phones, NEEDS_SIPP]
FAST = "[sip]\nt1_ms = 200\n"


def ok(result: SippResult, nodes: list[NodeProcess], what: str) -> None:
    assert result.ok, f"{what} failed\n{result.logs}\n{logs(nodes)}"


def baresip_call(caller: Baresip, callee: Baresip, uri: str, nodes: list[NodeProcess]) -> None:
    try:
        caller.wait_registered(timeout=10)
        callee.wait_registered(timeout=10)
        caller.dial(uri)
        callee.wait_event("CALL_ESTABLISHED", timeout=15)
        caller.wait_event("CALL_ESTABLISHED", timeout=15)
        caller.hangup()
        caller.wait_event("CALL_CLOSED", timeout=10)
        callee.wait_event("CALL_CLOSED", timeout=10)  # the BYE came through too
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{logs(nodes)}") from None


# -- one box, root namespace (loopback, no discovery) ------------------------------------------
@needs_baresip
def test_baresip_phones_with_outbound_proxy_call_each_other_on_one_box(start_node, tmp_path):
    node = start_node(tmp_path)
    outbound = f"sip:{node.host}:{node.port}"
    phones = [Baresip(ext, node.port, workdir=tmp_path / f"baresip-{ext}", outbound=outbound)
              for ext in ("1001", "1002")]
    try:
        for phone in phones:
            phone.start()
        baresip_call(phones[0], phones[1], node.uri("1002"), [node])
    finally:
        for phone in phones:
            phone.stop()
    assert "call 1001 -> 1002 (1 contact)" in node.log()


def routed_call(node: NodeProcess, route: str, extension: str, tmp_path, nodes=None,
                **kw) -> None:
    """A sipp call through `node` to a sipp callee, the INVITE carrying Route <sip:ROUTE;lr>
    and Request-URI sip:EXTENSION@ROUTE."""
    nodes = nodes or [node]
    with SippUas("uas_answer", service=extension, keys={"proxy": node.target},
                 workdir=tmp_path, **kw) as uas:
        ok(run_sipp("register", node.target, service=extension, workdir=tmp_path,
                    keys={"contact_port": str(uas.port)}, **kw), nodes, "REGISTER")
        ok(run_sipp("uac_call_routed", node.target, service=extension, workdir=tmp_path,
                    keys={"caller": "2001", "route": route}, **kw), nodes,
           f"call with Route <sip:{route};lr>")
        ok(uas.wait(), nodes, f"callee of the call with Route <sip:{route};lr>")


def test_sipp_with_a_preloaded_route_to_the_box_by_address_and_by_name(start_node, tmp_path):
    node = start_node(tmp_path)
    routes = [node.target, f"localhost:{node.port}", f"{socket.gethostname()}:{node.port}"]
    for k, route in enumerate(routes):
        routed_call(node, route, f"21{k:02d}", tmp_path)
    assert "Too Many Hops" not in node.log()


def test_route_to_another_port_of_the_box_address_is_not_the_box(start_node, tmp_path):
    node = start_node(tmp_path, config=FAST)
    other = start_node(tmp_path, config=FAST)  # a second server on the same address
    with SippUas("uas_answer", service="2201", keys={"proxy": other.target},
                 workdir=tmp_path) as uas:
        ok(run_sipp("register", other.target, service="2201", workdir=tmp_path,
                    keys={"contact_port": str(uas.port)}), [other], "REGISTER at the other")
        # Sent to `node`, routed to `other`: only `other` knows 2201.
        ok(run_sipp("uac_call_routed", node.target, service="2201", workdir=tmp_path,
                    keys={"caller": "2001", "route": other.target}), [node, other],
           "call routed through to the other server")
        ok(uas.wait(), [node, other], "callee at the other server")
    assert "call 2001 -> 2201" in other.log() and "call 2001 -> 2201" not in node.log()


# -- across boxes and on a box with two interfaces (namespaces) ------------------------------
@needs_netns
@needs_baresip
@pytest.mark.netns
def test_baresip_phones_with_outbound_proxy_call_across_boxes(make_bed):
    bed: MeshBed = make_bed(3)
    nodes = start_nodes(bed, range(3), config=FAST)
    wait_ring(bed, nodes, timeout=20.0)
    alice = bed.baresip(0, "1001", nodes[0], outbound=f"sip:{nodes[0].target}")
    bob = bed.baresip(2, "1003", nodes[2], outbound=f"sip:{nodes[2].target}")
    baresip_call(alice, bob, nodes[0].uri("1003"), list(nodes.values()))
    assert "call 1001 -> 1003 via box" in nodes[0].log()
    assert "call 1001 -> 1003 (1 contact)" in nodes[2].log()


@needs_netns
@pytest.mark.netns
def test_sipp_route_by_a_name_from_the_hosts_file_of_a_namespace(make_bed, tmp_path):
    bed: MeshBed = make_bed(2)
    hosts = f"127.0.0.1 localhost\n{bed.addr(0)} box0.field\n{bed.addr(1)} box1.field\n"
    for i in (0, 1):
        bed.etc_file(i, "hosts", hosts)
    nodes = start_nodes(bed, range(2), config=FAST)
    wait_ring(bed, nodes, timeout=20.0)
    caller = dict(netns=bed.ns(1), host=bed.addr(1))
    # The phone on host 1 uses box 0 as outbound proxy, by name; the callee is at box 0.
    routed_call(nodes[0], "box0.field:5060", "2301", tmp_path, list(nodes.values()), **caller)
    assert "Too Many Hops" not in logs(nodes)


@needs_netns
@pytest.mark.netns
def test_box_on_all_interfaces_with_two_of_them_knows_either_address(make_bed, tmp_path):
    bed: MeshBed = make_bed(2)
    node = bed.node(0, "--bind", "0.0.0.0", config=FAST)
    # A second interface, added while the box runs (a USB Ethernet plugged in).
    second = "10.99.200.1"
    for argv in (["link", "add", "eth1", "type", "veth", "peer", "name", "eth1p"],
                 ["addr", "add", f"{second}/24", "dev", "eth1"],
                 ["link", "set", "eth1p", "up"], ["link", "set", "eth1", "up"]):
        subprocess.run(["ip", "-n", bed.ns(0), *argv], check=True, timeout=10)
    phone = dict(netns=bed.ns(1), host=bed.addr(1))
    subprocess.run(["ip", "-n", bed.ns(1), "route", "add", "10.99.200.0/24", "via",
                    bed.addr(0)], check=True, timeout=10)
    for k, box in enumerate((bed.addr(0), second)):
        # Registered and called through one address, the Route naming either.
        routed_call(node, f"{box}:5060", f"24{k:02d}", tmp_path, [node], **phone)
    assert "Too Many Hops" not in node.log()
