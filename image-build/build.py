#!/usr/bin/env python3
"""Builds a flashable meshsip image (root; see image-build/README in the project README):

    build.py arm64|amd64 [--out DIR] [--work DIR]

arm64: Raspberry Pi 3/4 (MBR, FAT 0x0C /boot/firmware with firmware and kernel, ext4 root);
amd64: laptops and test VMs (GPT, EFI system partition with systemd-boot, ext4 root, UEFI).
Writes DIR/meshsip-VERSION-ARCH.img.xz, .img.bmap and .img.xz.sha256. Each step prints its
name and time; the root file system tarball is cached (~/.cache/meshsip-image).
"""

from __future__ import annotations

import argparse
import os
import tomllib
from pathlib import Path

import assemble
import customize
import rootfs
from steps import StepFailed, Steps

HERE = Path(__file__).resolve().parent
TOOLS = {"mmdebstrap": "mmdebstrap", "genimage": "genimage", "mcopy": "mtools",
         "mkfs.vfat": "dosfstools", "mkfs.ext4": "e2fsprogs", "bmaptool": "bmap-tools",
         "xz": "xz-utils"}


def version() -> str:
    return tomllib.loads((HERE.parent / "pyproject.toml").read_text())["project"]["version"]


def check_host(arch: str) -> None:
    if os.geteuid() != 0:
        raise StepFailed("the build needs root (chroot, file ownership in the image)")
    import shutil
    tools = dict(TOOLS)
    if arch == "arm64" and os.uname().machine != "aarch64":
        tools |= {"qemu-aarch64-static": "qemu-user-static", "update-binfmts": "binfmt-support"}
    missing = sorted({pkg for tool, pkg in tools.items() if shutil.which(tool) is None})
    if missing:
        raise StepFailed(f"missing tools; apt install {' '.join(missing)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("arch", choices=["arm64", "amd64"])
    parser.add_argument("--out", type=Path, default=HERE / "out")
    parser.add_argument("--work", type=Path, default=HERE / "work")
    args = parser.parse_args()
    arch, work = args.arch, (args.work / args.arch).resolve()
    root, fat = work / "root", work / "fat"
    img = args.out.resolve() / f"meshsip-{version()}-{arch}.img"
    work.mkdir(parents=True, exist_ok=True)
    steps = Steps()
    steps.run("check the build host", lambda: check_host(arch))
    if arch == "arm64":
        steps.run("enable qemu-aarch64 (binfmt_misc)", rootfs.enable_binfmt)
    steps.run(f"root file system tarball (mmdebstrap, {arch})", lambda: rootfs.tarball(arch))
    steps.run("unpack the root file system", lambda: rootfs.unpack(arch, root))
    steps.run("provision with the Ansible roles (chroot connection)",
              lambda: customize.provision(root, work, rootfs.cache_dir() / "wheelhouse"))
    steps.run("first-boot service, SSH, fstab", lambda: customize.install_files(root, arch))
    steps.run("forget every identity", lambda: customize.forget_identity(root))
    steps.run("initramfs (once)", lambda: customize.initramfs(root))
    steps.run("FAT partition tree", lambda: customize.fat_files(root, arch, fat))
    steps.run("FAT file system (mkfs.vfat, mtools)",
              lambda: assemble.make_fat(fat, work / "fat.img"))
    steps.run("ext4 root file system (mkfs.ext4 -d)",
              lambda: assemble.make_ext4(root, work / "root.ext4"))
    steps.run("disk image (genimage)", lambda: assemble.join(arch, work, img))
    sizes: dict[str, int] = {}
    steps.run("xz, bmap, sha256", lambda: sizes.update(assemble.publish(img)))
    steps.summary()
    print(f"image: {img}.xz ({sizes['xz'] / 2**20:.0f} MiB compressed, "
          f"{sizes['raw'] / 2**20:.0f} MiB raw)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
