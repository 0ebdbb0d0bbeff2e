"""The built images checked by inspection, with no mount: the partition table (sfdisk), the
FAT partition's boot files (mtools), the root's first-boot set-up and the identities it must
not carry (debugfs on the ext4 partition). Marked `image` (make test-image); skipped for an
image not built."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest
from imagekit import vm as vmkit

pytestmark = pytest.mark.image
ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"


def raw_image(arch: str, tmp_path: Path) -> Path:
    image = vmkit.published(arch)
    if image is None:
        pytest.skip(f"no {arch} image built (make {'image' if arch == 'arm64' else 'image-amd64'})")
    why = vmkit.missing_tools("bmaptool", "mcopy", "sfdisk", "debugfs")
    if why:
        pytest.skip(why)
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    assert Path(f"{image}.sha256").read_text().split()[0] == digest
    assert image.with_suffix(".bmap").exists()
    return vmkit.disk_from(image, tmp_path / "disk.img", grow_mib=0)


def root_fs(disk: Path) -> str:
    """debugfs' name for the root partition: the image file at the partition's offset."""
    return f"{disk}?offset={int(vmkit.partitions(disk)[1]['start']) * 512}"


def debugfs(disk: Path, request: str) -> str:
    done = subprocess.run(["debugfs", "-R", request, root_fs(disk)], capture_output=True,
                          text=True, timeout=60)
    return done.stdout


def check_root(disk: Path) -> None:
    fstab = debugfs(disk, "cat /etc/fstab")
    assert "LABEL=meshsip-root\t/\text4" in fstab and "LABEL=MESHSIP\t/boot/firmware" in fstab
    size = re.search(r"Project: +\d+ +Size: (\d+)", debugfs(disk, "stat /etc/machine-id"))
    assert size and size.group(1) == "0", "the image carries a machine id"
    for forbidden in ("/etc/ssh", "/var/lib/meshsip"):
        listing = debugfs(disk, f"ls -l {forbidden}")
        assert "ssh_host_" not in listing and "node.key" not in listing, listing
    wants = debugfs(disk, "ls -l /etc/systemd/system/multi-user.target.wants")
    assert "meshsip.service" in wants and "ssh.service" in wants, wants
    assert "meshsip-firstboot.service" in debugfs(
        disk, "ls -l /etc/systemd/system/sysinit.target.wants")
    assert "PasswordAuthentication no" in debugfs(disk, "cat /etc/ssh/sshd_config.d/meshsip.conf")
    shadow = debugfs(disk, "cat /etc/shadow").splitlines()
    root_entry = next(line.split(":") for line in shadow if line.startswith("root:"))
    assert root_entry[1].startswith(("!", "*")), "the image has a root password"


def test_arm64_image_partitions_and_boot_files(tmp_path: Path) -> None:
    disk = raw_image("arm64", tmp_path)
    fat, root = vmkit.partitions(disk)
    assert fat["label_type"] == "dos"
    assert fat["type"] == "c" and fat.get("bootable") is True, fat
    assert root["type"] == "83", root
    names = vmkit.fat_list(disk)
    for wanted in ("config.txt", "cmdline.txt", "bcm2837-rpi-3-b.dtb", "bcm2711-rpi-4-b.dtb",
                   "start4.elf", "bootcode.bin", "meshsip.toml.example", "MESHSIP-README.txt"):
        assert wanted in names, f"{wanted} not on the FAT partition: {names}"
    kernels = [n for n in names if n.startswith("vmlinuz-")]
    initrds = [n for n in names if n.startswith("initrd.img-")]
    assert len(kernels) == 1 and len(initrds) == 1, names
    assert len(vmkit.fat_read(disk, initrds[0])) > 2**20, "the initrd is the build's placeholder"
    cmdline = vmkit.fat_read(disk, "cmdline.txt").decode()
    assert "root=LABEL=meshsip-root" in cmdline and "console=serial0,115200" in cmdline, cmdline
    config = vmkit.fat_read(disk, "config.txt").decode()
    assert "arm_64bit=1" in config and kernels[0] in config and initrds[0] in config, config
    check_root(disk)


def test_amd64_image_partitions_and_boot_files(tmp_path: Path) -> None:
    disk = raw_image("amd64", tmp_path)
    esp, root = vmkit.partitions(disk)
    assert esp["label_type"] == "gpt"
    assert esp["type"].upper() == ESP and int(esp["start"]) % 2048 == 0, esp
    names = vmkit.fat_list(disk)
    for wanted in ("EFI", "loader", "vmlinuz", "initrd.img", "meshsip.toml.example"):
        assert wanted in names, f"{wanted} not on the ESP: {names}"
    assert vmkit.fat_read(disk, "EFI/BOOT/BOOTX64.EFI")[:2] == b"MZ"  # a PE binary
    entry = vmkit.fat_read(disk, "loader/entries/meshsip.conf").decode()
    assert "root=LABEL=meshsip-root" in entry, entry
    check_root(disk)
