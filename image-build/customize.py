"""What turns a provisioned root into an image: Ansible through the chroot connection, the
first-boot service, a root without identity, the one initramfs, the FAT partition's files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from rootfs import FAT_LABEL, ROOT_LABEL
from steps import StepFailed, in_root, sh

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FILES = HERE / "files"
ANSIBLE_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}
# The kernel command line of the amd64 image (systemd-boot entry).
AMD64_CMDLINE = f"root=LABEL={ROOT_LABEL} rw console=tty0 console=ttyS0,115200"


def provision(root: Path, work: Path, wheelhouse: Path) -> None:
    """The project's Ansible roles applied to the root through community.general.chroot:
    no CA (each box makes its identity on first boot), services enabled, never started."""
    ansible = REPO / ".venv/bin/ansible-playbook"
    if not ansible.exists():
        raise StepFailed("no .venv/bin/ansible-playbook: run `make provision-venv` first")
    inventory = work / "inventory.json"
    inventory.write_text(json.dumps({"all": {"hosts": {"meshsip": {
        "ansible_host": str(root), "ansible_connection": "community.general.chroot",
        "ansible_python_interpreter": "/usr/bin/python3"}}}}))
    # No name: the node takes the host name, which first boot derives from the node id.
    extra = {"meshsip_pki_enabled": False, "meshsip_node_name": "",
             "meshsip_node_wheelhouse_dir": str(wheelhouse), "meshsip_network_time_peers": []}
    env = {"PATH": f"{REPO / '.venv/bin'}:/usr/sbin:/usr/bin:/sbin:/bin",
           "ANSIBLE_CONFIG": str(REPO / "provisioning/ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "HOME": str(work), "LC_ALL": "C.UTF-8"}
    sh([ansible, "-i", inventory, "-e", json.dumps(extra), REPO / "provisioning/site.yml"],
       cwd=REPO / "provisioning", env=env)


def install_files(root: Path, arch: str) -> None:
    """First-boot service, SSH without passwords, fstab by label, Wi-Fi client network."""
    put = [("meshsip-firstboot", "usr/local/sbin/meshsip-firstboot", 0o755),
           ("meshsip-firstboot.service", "etc/systemd/system/meshsip-firstboot.service", 0o644),
           ("sshd-meshsip.conf", "etc/ssh/sshd_config.d/meshsip.conf", 0o644),
           ("70-meshsip-wlan.network", "etc/systemd/network/70-meshsip-wlan.network", 0o644)]
    for src, dest, mode in put:
        target = root / dest
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(FILES / src, target)
        target.chmod(mode)
    (root / "etc/fstab").write_text(
        f"LABEL={ROOT_LABEL}\t/\text4\tdefaults,noatime\t0\t1\n"
        f"LABEL={FAT_LABEL}\t/boot/firmware\tvfat\tdefaults,umask=0077,nofail\t0\t0\n")
    (root / "boot/firmware").mkdir(parents=True, exist_ok=True)
    (root / "etc/hostname").write_text("meshsip\n")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\tmeshsip\n"
                                    "::1\tlocalhost ip6-localhost ip6-loopback\n")
    in_root(root, "systemctl enable meshsip-firstboot.service ssh.service "
                  "systemd-networkd.service")


def forget_identity(root: Path) -> None:
    """Nothing that names one box stays in the image: each box makes its own on first boot."""
    for pattern in ("etc/ssh/ssh_host_*", "var/lib/meshsip/node.*", "var/lib/meshsip/tls.*",
                    "var/lib/meshsip/*.json", "var/lib/meshsip-firstboot",
                    "var/lib/dbus/machine-id", "var/lib/systemd/random-seed"):
        for path in root.glob(pattern):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    (root / "etc/machine-id").write_text("")  # empty: systemd makes and commits one at boot
    in_root(root, "passwd -l root >/dev/null; apt-get clean; rm -rf /var/lib/apt/lists/* "
                  "/var/log/*.log /var/cache/debconf/*-old /tmp/* /opt/meshsip/wheelhouse "
                  "/opt/meshsip/wheelhouse.tar")


def initramfs(root: Path) -> None:
    """The one initramfs: update-initramfs back in place, run once for the installed kernel
    (raspi-firmware's hook then copies kernel, initrd and cmdline.txt to /boot/firmware)."""
    # /proc mounted: raspi-firmware's hook tells a chroot (ischroot) from a missing
    # /boot/firmware mount only with it.
    sh(["mount", "-t", "proc", "proc", root / "proc"])
    try:
        in_root(root, "find /boot -maxdepth 1 -name 'initrd.img-*' -size 0 -delete; "
                      "rm -f /usr/sbin/update-initramfs; "
                      "dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs; "
                      "update-initramfs -c -k all")
    finally:
        sh(["umount", root / "proc"])


def fat_files(root: Path, arch: str, fat: Path) -> None:
    """The FAT partition's tree, moved out of the root: firmware and kernel (arm64) or the
    systemd-boot loader, kernel and initrd (amd64), and the operator's example files."""
    if fat.exists():
        shutil.rmtree(fat)
    shutil.copytree(root / "boot/firmware", fat)
    for old in (root / "boot/firmware").iterdir():
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    if arch == "amd64":
        efi = fat / "EFI/BOOT"
        efi.mkdir(parents=True)
        shutil.copyfile(root / "usr/lib/systemd/boot/efi/systemd-bootx64.efi",
                        efi / "BOOTX64.EFI")
        (fat / "loader/entries").mkdir(parents=True)
        (fat / "loader/loader.conf").write_text("default meshsip.conf\ntimeout 0\n")
        (fat / "loader/entries/meshsip.conf").write_text(
            f"title meshsip\nlinux /vmlinuz\ninitrd /initrd.img\noptions {AMD64_CMDLINE}\n")
        shutil.copyfile(sorted((root / "boot").glob("vmlinuz-*"))[-1], fat / "vmlinuz")
        shutil.copyfile(sorted((root / "boot").glob("initrd.img-*"))[-1], fat / "initrd.img")
    else:
        for wanted in ("config.txt", "cmdline.txt"):
            if not (fat / wanted).exists():
                raise StepFailed(f"raspi-firmware left no {wanted} in /boot/firmware")
        if not all(f.stat().st_size for f in fat.glob("initrd.img-*")):
            raise StepFailed("an empty initrd on the FAT partition: raspi-firmware's hook did "
                             "not copy the real one")
        cmdline = (fat / "cmdline.txt").read_text()
        if f"root=LABEL={ROOT_LABEL}" not in cmdline:
            raise StepFailed(f"cmdline.txt names another root: {cmdline.strip()}")
    shutil.copyfile(FILES / "MESHSIP-README.txt", fat / "MESHSIP-README.txt")
    example = (root / "etc/meshsip/meshsip.toml").read_text()
    (fat / "meshsip.toml.example").write_text(
        "# Copy to meshsip.toml (on this partition) to use it; the box takes it at its next "
        "start.\n" + example)
