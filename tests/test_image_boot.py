"""The built amd64 image boots under qemu (TCG, OVMF) on the namespace test bed: each VM's NIC
is a tap on the hub bridge, dnsmasq in a bed host gives it an address, and with a
meshsip.toml written onto its FAT partition (mtools, no mount) before boot it starts meshsip
under that overlay name and answers SIP OPTIONS. Two such VMs and one process node form one
ring and carry a call. The arm64 image boots under qemu-system-aarch64 -M virt with its own
kernel and initrd, and meshsip answers there too.

Minutes long (two TCG boots): marked `image`, run by `make test-image` after `make image-amd64`
(and `make image`); skipped when no image was built.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from imagekit import vm as vmkit
from meshbed.bed import MeshBed, netns_available
from phones.node import NodeProcess

pytestmark = [pytest.mark.image,
              pytest.mark.skipif(netns_available() is not None, reason=str(netns_available()))]

OVERLAY = "quake-relief"
BOOT_DEADLINE = 900.0  # TCG on a shared 2-core machine: generous; the time is a figure
VM_ADDRS = {1: "10.99.1.1", 2: "10.99.1.2"}


def node_toml(seed: str) -> str:
    """The operator's file on the FAT partition: the image's own format."""
    return (f'[overlay]\nname = "{OVERLAY}"\nseeds = ["{seed}"]\n\n'
            '[web]\nport = 8080\n')


def process_overlay(bed: MeshBed, node: NodeProcess) -> dict[str, Any]:
    """The overlay part of `meshsip status --json` of the process node in bed host 0."""
    out = bed.exec(0, [sys.executable, "-m", "appliance.cli", "status", "--json",
                       "--data-dir", str(node.data_dir)], cwd=vmkit.REPO, timeout=20)
    return json.loads(out.stdout)["overlay"] if out.returncode == 0 else {}


class VmNode:
    """A booted VM seen as a node by the bed's sipp helpers (host:port)."""

    def __init__(self, host: str) -> None:
        self.host, self.port = host, 5060

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"


@pytest.fixture(scope="module")
def booted(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    image = vmkit.published("amd64")
    if image is None:
        pytest.skip("no amd64 image built (make image-amd64)")
    why = vmkit.missing_tools("qemu-system-x86_64", "bmaptool", "mcopy", "dnsmasq", "sfdisk")
    if why or not vmkit.OVMF.exists():
        pytest.skip(why or "no /usr/share/ovmf/OVMF.fd (apt install ovmf)")
    work = tmp_path_factory.mktemp("image-boot")
    bed = MeshBed(3, prefix=f"im{os.getpid()}-0", workdir=work / "bed").start()
    vms: list[vmkit.Vm] = []
    dhcp = None
    try:
        dhcp = vmkit.Dhcp(bed.ns(0), work / "dhcp", {
            f"52:54:00:99:02:{i:02x}": ip for i, ip in VM_ADDRS.items()})
        for i in VM_ADDRS:
            disk = vmkit.disk_from(image, work / f"disk{i}.img")
            vmkit.fat_write(disk, "meshsip.toml", node_toml(f"{bed.addr(0)}:5060"))
            vms.append(vmkit.Vm(bed.hub, i, disk, work).start())
        yield bed, dhcp, vms
    finally:
        for vm in vms:
            vm.stop()
        if dhcp is not None:
            dhcp.stop()
        bed.close()


def test_vm_gets_dhcp_answers_options_with_the_overlay_name_from_its_fat(booted) -> None:
    bed, dhcp, vms = booted
    t0 = min(vm.started for vm in vms)
    for i, ip in VM_ADDRS.items():
        vmkit.wait_until(f"DHCPACK for VM {i}", lambda ip=ip: dhcp.acked(ip), BOOT_DEADLINE, vms)
        took_dhcp = time.monotonic() - t0
        line = vmkit.wait_until(
            f"SIP OPTIONS answered by VM {i}",
            lambda ip=ip: vmkit.sip_options(bed.ns(0), bed.addr(0), ip), BOOT_DEADLINE, vms)
        took = time.monotonic() - t0
        assert line.startswith("SIP/2.0 200"), line
        status = vmkit.wait_until(
            f"status page of VM {i}",
            lambda ip=ip: vmkit.http_json(bed.ns(0), ip, 8080, "/api/status"), 120, vms)
        box = status["box"]
        assert box["overlay"] == OVERLAY, box
        assert box["name"] == f"meshsip-{box['node_id'][:8]}", box  # host name from node id
        print(f"\nVM {i}: DHCP lease {took_dhcp:.0f} s, SIP OPTIONS answered {took:.0f} s "
              f"after power-on (TCG)")
    ids = {vmkit.http_json(bed.ns(0), ip, 8080, "/api/status")["box"]["node_id"]
           for ip in VM_ADDRS.values()}
    assert len(ids) == 2, "two VMs of one image made the same node identity"


def test_two_vms_and_a_process_node_form_one_ring_and_carry_a_call(booted) -> None:
    bed, _, vms = booted
    for ip in VM_ADDRS.values():
        vmkit.wait_until(f"SIP OPTIONS answered by {ip}",
                         lambda ip=ip: vmkit.sip_options(bed.ns(0), bed.addr(0), ip),
                         BOOT_DEADLINE, vms)
    node = bed.node(0, "--overlay", OVERLAY, *(f"--seed={ip}:5060" for ip in VM_ADDRS.values()))

    def one_ring() -> bool:
        """Each VM's page lists three boxes, all in the ring, and the process node's ring is
        complete with both VMs as its successors."""
        for ip in VM_ADDRS.values():
            boxes = vmkit.http_json(bed.ns(0), ip, 8080, "/api/status")["boxes"]
            if len(boxes) != 3 or not all(b["in_ring"] for b in boxes):
                return False
        ring = process_overlay(bed, node)
        succ = {s.split("@", 1)[1] for s in ring.get("successors", [])}
        wanted = {f"{ip}:5060" for ip in VM_ADDRS.values()}
        return bool(ring.get("ring_complete")) and succ == wanted

    vmkit.wait_until("one ring of the two VMs and the process node", one_ring, 180, vms)
    vm1, vm2 = (VmNode(ip) for ip in VM_ADDRS.values())
    uas = bed.sipp_uas(1, "uas_answer", service="2001", calls=1, timeout=120,
                       keys={"proxy": vm1.target})
    done = bed.sipp(1, "register", vm1.target, service="2001",
                    keys={"contact_port": str(uas.port)})
    assert done.ok, done.logs

    def call() -> bool:
        result = bed.sipp(2, "uac_call", vm2.target, service="2001",
                          keys={"caller": "caller2"}, timeout=30)
        return result.ok

    vmkit.wait_until("a call from a phone on VM 2 to 2001 on VM 1", call, 120, vms, poll=1)


def test_arm64_image_boots_under_qemu_virt_and_answers(tmp_path: Path) -> None:
    image = vmkit.published("arm64")
    if image is None:
        pytest.skip("no arm64 image built (make image)")
    why = vmkit.missing_tools("qemu-system-aarch64", "bmaptool", "mcopy", "sfdisk")
    if why:
        pytest.skip(why)
    disk = vmkit.disk_from(image, tmp_path / "disk.img")
    names = vmkit.fat_list(disk)
    kernel = sorted(n for n in names if n.startswith("vmlinuz-"))[-1]
    initrd = sorted(n for n in names if n.startswith("initrd.img-"))[-1]
    for name in (kernel, initrd):
        (tmp_path / name).write_bytes(vmkit.fat_read(disk, name))
    append = "root=LABEL=meshsip-root rw console=ttyAMA0"
    with MeshBed(1, prefix=f"im{os.getpid()}-1", workdir=tmp_path / "bed") as bed:
        dhcp = vmkit.Dhcp(bed.ns(0), tmp_path / "dhcp", {"52:54:00:99:02:03": "10.99.1.3"})
        vm = vmkit.Vm(bed.hub, 3, disk, tmp_path, arch="arm64",
                      kernel=(tmp_path / kernel, tmp_path / initrd, append)).start()
        try:
            line = vmkit.wait_until(
                "SIP OPTIONS answered by the arm64 VM",
                lambda: vmkit.sip_options(bed.ns(0), bed.addr(0), "10.99.1.3"),
                BOOT_DEADLINE * 1.5, [vm])
            assert line.startswith("SIP/2.0 200"), line
            print(f"\narm64 VM (-M virt, TCG): SIP OPTIONS answered "
                  f"{time.monotonic() - vm.started:.0f} s after power-on")
            console = re.sub(r"\x1b\[[0-9;]*m", "", vm.console.read_text(errors="replace"))
            assert "Started meshsip.service" in console
        finally:
            vm.stop()
            dhcp.stop()
