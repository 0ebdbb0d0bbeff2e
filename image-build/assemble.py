"""The disk image from a root tree and a FAT tree, with no loop mount and no device-mapper:
each file system is made in a file (mkfs.ext4 -d, mkfs.vfat + mtools), genimage joins them
under a partition table; then xz, a block map and a checksum."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from rootfs import FAT_LABEL, ROOT_LABEL
from steps import StepFailed, sh

MIB = 1 << 20
FAT_MIB = 256
ESP_GUID = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
ROOT_X86_64_GUID = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"


def tree_bytes(path: Path) -> int:
    done = subprocess.run(["du", "-sxb", str(path)], check=True, capture_output=True, text=True)
    return int(done.stdout.split()[0])


def make_fat(tree: Path, out: Path) -> None:
    out.unlink(missing_ok=True)
    if tree_bytes(tree) > (FAT_MIB - 16) * MIB:
        raise StepFailed(f"the FAT tree {tree} does not fit {FAT_MIB} MiB")
    sh(["mkfs.vfat", "-F", "32", "-n", FAT_LABEL, "-C", out, str(FAT_MIB * 1024)], quiet=True)
    entries = sorted(tree.iterdir())
    if entries:
        sh(["mcopy", "-s", "-p", "-m", "-i", out, *entries, "::/"], quiet=True)


def make_ext4(tree: Path, out: Path) -> int:
    """An ext4 root of the tree's size with a third to spare (first boot grows it anyway)."""
    used = tree_bytes(tree)
    size = -(-(used * 4 // 3 + 256 * MIB) // (64 * MIB)) * 64 * MIB
    out.unlink(missing_ok=True)
    with open(out, "wb") as f:
        f.truncate(size)
    sh(["mkfs.ext4", "-q", "-F", "-L", ROOT_LABEL, "-d", tree, "-E", "root_owner=0:0", out],
       quiet=True)
    return size


def genimage_config(arch: str, name: str) -> str:
    if arch == "arm64":
        table = 'partition-table-type = "mbr"'
        fat = 'partition-type = 0x0C\n    bootable = true'
        root = "partition-type = 0x83"
    else:
        table = 'partition-table-type = "gpt"\n    align = 1M'
        fat = f'partition-type-uuid = "{ESP_GUID}"\n    bootable = true'
        root = f'partition-type-uuid = "{ROOT_X86_64_GUID}"'
    return f"""image {name} {{
  hdimage {{
    {table}
  }}
  partition firmware {{
    {fat}
    offset = 4M
    image = "fat.img"
  }}
  partition root {{
    {root}
    image = "root.ext4"
  }}
}}
"""


def join(arch: str, work: Path, out: Path) -> None:
    """genimage puts fat.img and root.ext4 (in work) under the partition table, at out."""
    cfg = work / "genimage.cfg"
    cfg.write_text(genimage_config(arch, out.name))
    tmp, empty = work / "genimage-tmp", work / "genimage-root"
    for d in (tmp, empty):
        shutil.rmtree(d, ignore_errors=True)
    empty.mkdir()
    out.parent.mkdir(parents=True, exist_ok=True)
    sh(["genimage", "--config", cfg, "--inputpath", work, "--outputpath", out.parent,
        "--tmppath", tmp, "--rootpath", empty], quiet=True)


def publish(img: Path) -> dict[str, int]:
    """img.xz, img.bmap (of the raw image: bmaptool copy finds it beside the .xz) and
    img.xz.sha256; the raw image is removed."""
    sh(["bmaptool", "-q", "create", "-o", img.with_suffix(".img.bmap"), img])
    raw = img.stat().st_size
    xz = img.with_suffix(".img.xz")
    xz.unlink(missing_ok=True)
    sh(["xz", "-T2", "-1", "--keep", "--force", img])  # -1: minutes faster than -6, ~10 % bigger
    digest = hashlib.sha256()
    with open(xz, "rb") as f:
        while chunk := f.read(MIB):
            digest.update(chunk)
    Path(f"{xz}.sha256").write_text(f"{digest.hexdigest()}  {xz.name}\n")
    img.unlink()
    return {"raw": raw, "xz": xz.stat().st_size}
