#!/usr/bin/env python3
"""Builds (on the controller) the wheels a box of one architecture needs to install meshsip
with no access to PyPI: meshsip itself, its dependencies for CPython 3.11 on that
architecture, and pip (run from its wheel on the box, so the box needs no python3-pip).

    build_wheelhouse.py SOURCE_DIR OUT_DIR ARCH      (ARCH: x86_64 or aarch64)

Idempotent: stamps in OUT_DIR record the hash of the sources and of the dependency list;
nothing is rebuilt or downloaded while they match (an offline laptop reuses what it built
while online), so the files the boxes receive do not change from run to run. Prints one
JSON line: {"changed": bool, "path": ..., "bytes": ...}.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from pathlib import Path

ARCHES = ("x86_64", "aarch64")
GLIBC = 36  # Debian 12 and Raspberry Pi OS bookworm have glibc 2.36


def platforms(arch: str) -> list[str]:
    """pip does not widen a --platform given to it: name every manylinux tag glibc 2.36 runs."""
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(GLIBC, 16, -1)]
    return [*tags, f"manylinux2014_{arch}", f"linux_{arch}"]
SOURCES = ("pyproject.toml", "overlay", "appliance")
# A fixed timestamp makes the meshsip wheel the same bytes for the same sources.
EPOCH = "1700000000"


def source_hash(src: Path) -> str:
    digest = hashlib.sha256()
    for top in SOURCES:
        root = src / top
        files = [root] if root.is_file() else sorted(root.rglob("*.py"))
        for f in files:
            digest.update(str(f.relative_to(src)).encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()[:16]


def pip(*args: str, cwd: Path | None = None) -> None:
    # The controller's pip settings (find-links, constraints) must not leak into the build.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env |= {"PIP_CONFIG_FILE": os.devnull, "SOURCE_DATE_EPOCH": EPOCH,
            "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run([sys.executable, "-m", "pip", *args], check=True, cwd=cwd, env=env,
                   stdout=subprocess.DEVNULL)


def build_meshsip(src: Path, out: Path) -> None:
    # Built from a copy: `pip wheel .` leaves build/ and *.egg-info in the source tree.
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "src"
        copy.mkdir()
        for top in SOURCES:
            path = src / top
            if path.is_file():
                shutil.copy2(path, copy / top)
            else:
                shutil.copytree(path, copy / top,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for old in out.glob("meshsip-*.whl"):
            old.unlink()
        pip("wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(out), ".",
            cwd=copy)


def fetch_dependencies(deps: list[str], out: Path, arch: str) -> None:
    for old in out.glob("*.whl"):
        if not old.name.startswith("meshsip-"):
            old.unlink()
    plats = [arg for tag in platforms(arch) for arg in ("--platform", tag)]
    pip("download", "--only-binary=:all:", *plats,
        "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311", "--abi", "abi3", "--abi", "none",
        "--dest", str(out), "pip", *deps)


def pack(out: Path, tarball: Path) -> None:
    """One tar of the wheels, the same bytes for the same wheels: the box receives one file
    (one checksum to compare on a second run, not one per wheel)."""
    def plain(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime, info.uid, info.gid, info.uname, info.gname = int(EPOCH), 0, 0, "", ""
        info.mode = 0o644
        return info

    partial = tarball.with_suffix(".partial")
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
        for wheel in sorted(out.glob("*.whl")):
            tar.add(wheel, arcname=wheel.name, filter=plain)
    partial.replace(tarball)


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[2] not in ARCHES:
        print(__doc__, file=sys.stderr)
        return 2
    src, out, arch = Path(argv[0]).resolve(), Path(argv[1]), argv[2]
    out.mkdir(parents=True, exist_ok=True)
    deps = sorted(tomllib.loads((src / "pyproject.toml").read_text())["project"]["dependencies"])
    changed = False
    wanted = {"deps": hashlib.sha256("\n".join(deps).encode()).hexdigest()[:16],
              "source": source_hash(src)}
    stamp_file = out / "stamps.json"
    stamps = json.loads(stamp_file.read_text()) if stamp_file.exists() else {}
    if stamps.get("deps") != wanted["deps"]:
        fetch_dependencies(deps, out, arch)
        stamps["deps"], changed = wanted["deps"], True
        stamp_file.write_text(json.dumps(stamps))
    if stamps.get("source") != wanted["source"] or not any(out.glob("meshsip-*.whl")):
        build_meshsip(src, out)
        stamps["source"], changed = wanted["source"], True
        stamp_file.write_text(json.dumps(stamps))
    tarball = out / "wheelhouse.tar"
    if changed or not tarball.exists():
        pack(out, tarball)
    size = sum(f.stat().st_size for f in out.glob("*.whl"))
    print(json.dumps({"changed": changed, "path": str(out), "bytes": size}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
