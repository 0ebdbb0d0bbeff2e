"""A Debian 12 minbase root file system from mmdebstrap, built once and cached as a tarball
(keyed by the package list and mirrors), unpacked fresh for each test."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

SUITE = "bookworm"
# minbase plus python3: Ansible's one requirement on a host (every Debian 12 install has it)
INCLUDE = ["python3"]
SOURCES = Path("/etc/apt/sources.list.d")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "meshsip-test"


def mirror_lines() -> list[str]:
    """`deb URI SUITE COMPONENTS` for this machine's Debian bookworm sources (deb822 files in
    /etc/apt/sources.list.d and one-line /etc/apt/sources.list), main component only."""
    lines: list[str] = []
    for path in sorted(SOURCES.glob("*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.+)$", stanza, re.MULTILINE))
            if "deb" not in fields.get("Types", "").split():
                continue
            for uri in fields.get("URIs", "").split():
                lines += [f"deb {uri} {suite} main" for suite in fields.get("Suites", "").split()
                          if suite.startswith(SUITE)]
    one_line = Path("/etc/apt/sources.list")
    if one_line.exists():
        for line in one_line.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and parts[2].startswith(SUITE):
                lines.append(" ".join(parts[:3]) + " main")
    if not lines:
        raise RuntimeError(f"no Debian {SUITE} source configured for apt on this machine")
    return sorted(set(lines))


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
