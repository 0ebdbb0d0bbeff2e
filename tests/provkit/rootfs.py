"""A Debian 12 minbase root file system from mmdebstrap, built once and cached as a tarball
(keyed by the package list and mirrors), unpacked fresh for each test."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "image-build"))
from aptsources import debian_mirrors  # noqa: E402  (image-build is not a package)

SUITE = "bookworm"
# minbase plus python3: Ansible's one requirement on a host (every Debian 12 install has it)
INCLUDE = ["python3"]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "meshsip-test"


def mirror_lines() -> list[str]:
    """`deb URI SUITE main` for this machine's Debian bookworm sources (image-build's
    reading of them)."""
    lines = debian_mirrors(SUITE, "main")
    if not lines:
        raise RuntimeError(f"no Debian {SUITE} source configured for apt on this machine")
    return lines


def tarball() -> Path:
    """The cached minbase tarball, built with mmdebstrap when missing (about 1.5 minutes)."""
    mirrors = mirror_lines()
    key = hashlib.sha256("\n".join([SUITE, "minbase", *INCLUDE, *mirrors]).encode())
    path = cache_dir() / f"minbase-{SUITE}-{key.hexdigest()[:12]}.tar"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.tar")
        subprocess.run(["mmdebstrap", "--quiet", "--variant=minbase",
                        f"--include={','.join(INCLUDE)}", SUITE, str(partial), *mirrors],
                       check=True, timeout=1200, stdin=subprocess.DEVNULL)
        partial.replace(path)
    return path


def fresh_root(dest: Path) -> Path:
    """A new root file system at dest, unpacked from the cached tarball."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    subprocess.run(["tar", "-C", str(dest), "-xf", str(tarball())], check=True, timeout=600)
    return dest


def missing() -> str | None:
    if os.geteuid() != 0:
        return "building and entering a root file system needs root"
    if shutil.which("mmdebstrap") is None:
        return "mmdebstrap is not installed (make test-provision installs it)"
    return None
