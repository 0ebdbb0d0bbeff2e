"""The Debian 12 root file system from mmdebstrap, cached as a tarball keyed by everything that
goes into it. update-initramfs is diverted to a no-op while packages install: the kernel and
raspi-firmware would each build an initramfs (minutes apiece under emulation); the build
restores it and runs it once, at the end."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from aptsources import debian_mirrors
from steps import StepFailed, sh

SUITE = "bookworm"
COMPONENTS = "main non-free-firmware"
ROOT_LABEL = "meshsip-root"
FAT_LABEL = "MESHSIP"
COMMON = [
    "systemd-sysv", "udev", "kmod", "initramfs-tools", "zstd", "e2fsprogs", "fdisk",
    "cloud-guest-utils", "dosfstools", "openssh-server", "python3", "iproute2", "netbase",
    "iputils-ping", "procps", "wpasupplicant", "chrony", "fake-hwclock", "ca-certificates",
]
PACKAGES = {
    "amd64": COMMON + ["linux-image-amd64", "systemd-boot-efi"],
    "arm64": COMMON + ["linux-image-arm64", "raspi-firmware", "firmware-brcm80211",
                       "wireless-regdb"],
}
# raspi-firmware writes cmdline.txt from this on every kernel or initramfs change: set before
# the kernel goes in, or cmdline.txt names the build host's root.
RASPI_DEFAULTS = f"""\
ROOTPART=LABEL={ROOT_LABEL}
CONSOLES="serial0,115200 tty1"
KERNEL_ARCH=arm64
"""
# update-initramfs while the packages go in: no initramfs, only an empty placeholder for the
# kernel hooks that copy it (raspi-firmware's); the build removes it and makes the real one.
NO_INITRAMFS = """#!/bin/sh
while [ $# -gt 0 ]; do case "$1" in -k) shift; v="$1";; esac; shift; done
if [ -n "${v:-}" ] && [ "$v" != all ] && [ ! -e "/boot/initrd.img-$v" ]; then
    : > "/boot/initrd.img-$v"
fi
exit 0
"""
# Under emulation every file costs: no manual pages or documentation in the image.
DPKG_OPTS = ["--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/doc/*",
             "--dpkgopt=path-include=/usr/share/doc/*/copyright", "--dpkgopt=force-unsafe-io",
             # raspi-firmware ships /etc/default/raspi-firmware: keep ours, set before it
             "--dpkgopt=force-confold"]


def mirrors() -> list[str]:
    """`deb URI SUITE COMPONENTS` for this machine's Debian bookworm apt sources."""
    lines = debian_mirrors(SUITE, COMPONENTS)
    if not lines:
        raise StepFailed(f"no Debian {SUITE} source configured for apt on this machine")
    return lines


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "meshsip-image"


def hooks(arch: str) -> list[str]:
    essential = [
        'chroot "$1" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs',
        f"printf '%s' '{NO_INITRAMFS}' > \"$1/usr/sbin/update-initramfs\"",
        'chmod 755 "$1/usr/sbin/update-initramfs"',
    ]
    if arch == "arm64":
        essential += ['mkdir -p "$1/etc/default" "$1/boot/firmware"',
                      f"printf '%s' '{RASPI_DEFAULTS}' > \"$1/etc/default/raspi-firmware\""]
    return [f"--essential-hook={h}" for h in essential]


def tarball(arch: str) -> Path:
    """The cached root tarball for arch, built when missing (amd64 ~1.5 min, arm64 longer)."""
    argv = ["mmdebstrap", "--variant=minbase", f"--architectures={arch}", *DPKG_OPTS,
            f"--include={','.join(PACKAGES[arch])}", *hooks(arch), SUITE]
    key = hashlib.sha256("\n".join([*argv, *mirrors()]).encode()).hexdigest()[:12]
    path = cache_dir() / f"root-{SUITE}-{arch}-{key}.tar"
    if path.exists():
        print(f"    cached: {path}")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.tar")
    sh([*argv, partial, *mirrors()])
    partial.replace(path)
    return path


def unpack(arch: str, dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    sh(["tar", "-C", dest, "--numeric-owner", "-xpf", tarball(arch)])


def enable_binfmt() -> None:
    """arm64 binaries run on this host through qemu-user (binfmt_misc, mounted if needed)."""
    if os.uname().machine == "aarch64":
        return
    misc = Path("/proc/sys/fs/binfmt_misc")
    if not (misc / "register").exists():
        sh(["mount", "-t", "binfmt_misc", "binfmt_misc", misc])
    if not (misc / "qemu-aarch64").exists():
        sh(["update-binfmts", "--enable", "qemu-aarch64"])
    if not (misc / "qemu-aarch64").exists():
        raise StepFailed("qemu-aarch64 binfmt handler missing: apt install qemu-user-static "
                         "binfmt-support")
