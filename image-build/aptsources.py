"""This machine's Debian apt sources as `deb URI SUITE COMPONENTS` lines (the deb822 files in
/etc/apt/sources.list.d and a one-line /etc/apt/sources.list): where mmdebstrap fetches from,
for the image build and for the provisioning tests' Debian roots (tests/provkit)."""

from __future__ import annotations

import re
from pathlib import Path

SOURCES_D = Path("/etc/apt/sources.list.d")
SOURCES_LIST = Path("/etc/apt/sources.list")


def debian_mirrors(suite: str, components: str) -> list[str]:
    """Sorted and unique; empty when no source names `suite`."""
    lines: list[str] = []
    for path in sorted(SOURCES_D.glob("*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.+)$", stanza, re.MULTILINE))
            if "deb" in fields.get("Types", "").split():
                lines += [f"deb {uri} {name} {components}"
                          for uri in fields.get("URIs", "").split()
                          for name in fields.get("Suites", "").split()
                          if name.startswith(suite)]
    if SOURCES_LIST.exists():
        for line in SOURCES_LIST.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and parts[2].startswith(suite):
                lines.append(f"{' '.join(parts[:3])} {components}")
    return sorted(set(lines))
