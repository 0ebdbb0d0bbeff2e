"""What discovery reports (`PeerInfo`), the cache of last-known peers, and seed parsing."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("meshsip.discovery")

PROTOCOL_VERSION = 1
CACHE_FILE = "peer-cache.json"
_CACHE_FORMAT = 1


@dataclass(frozen=True)
class PeerInfo:
    """A node of the overlay that discovery heard of: a hint, never a proof of life.

    `node_id` is the peer's Node-ID in hex, or "" for a seed address whose node is not known
    yet. `addresses` are IP addresses (IPv4 first; IPv6 link-local ones carry `%scope`), all
    reachable on `port` (the peer's SIP port). `source` says where the hint came from:
    "mdns", "seed" or "cache". `version` is the peer's protocol version (TXT `v`), reported
    as heard: the node decides what to do with a version it does not speak.
    """

    node_id: str
    addresses: list[str]
    port: int
    overlay: str
    version: int
    source: str = "mdns"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Entry:
    peer: PeerInfo
    last_seen: float = field(default=0.0)


class PeerCache:
    """Last-known peers, kept in `<data_dir>/peer-cache.json`, bounded in size and age.

    Written atomically (temporary file, then rename), and only when something worth keeping
    changed: a new peer, new addresses, port or version, or a peer seen again more than
    `touch_interval` after it was last written. Periodic mDNS re-reports therefore do not
    wear an SD card. A missing or unreadable file is an empty cache.
    """

    def __init__(
        self,
        path: str | Path | None,
        *,
        max_entries: int = 64,
        max_age: float = 30 * 86400.0,
        touch_interval: float = 3600.0,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.max_entries = max_entries
        self.max_age = max_age
        self.touch_interval = touch_interval
        self.dirty = False
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def load(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self._entries.clear()
        if self.path is None or not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text())
            rows = data["peers"] if isinstance(data, dict) else []
            for row in rows:
                peer = PeerInfo(
                    node_id=str(row["node_id"]).lower(),
                    addresses=[str(a) for a in row["addresses"]],
                    port=int(row["port"]),
                    overlay=str(row["overlay"]),
                    version=int(row["version"]),
                    source="cache",
                )
                last_seen = float(row.get("last_seen", 0.0))
                if peer.node_id and peer.addresses and now - last_seen <= self.max_age:
                    self._entries[peer.node_id] = _Entry(peer, last_seen)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable peer cache %s: %s", self.path, exc)
            self._entries.clear()
        self._trim()

    def learn(self, peer: PeerInfo, now: float | None = None) -> bool:
        """Remember a peer; True if the cache now needs writing."""
        if not peer.node_id or not peer.addresses:
            return False
        now = time.time() if now is None else now
        stored = PeerInfo(
            peer.node_id, list(peer.addresses), peer.port, peer.overlay, peer.version, "cache"
        )
        old = self._entries.get(peer.node_id)
        if old is not None and old.peer == stored and now - old.last_seen < self.touch_interval:
            return False
        self._entries[peer.node_id] = _Entry(stored, now)
        self._trim()
        self.dirty = True
        return True

    def peers(self, overlay: str | None = None) -> list[PeerInfo]:
        """Cached peers, most recently seen first."""
        entries = sorted(self._entries.values(), key=lambda e: e.last_seen, reverse=True)
        return [e.peer for e in entries if overlay is None or e.peer.overlay == overlay]

    def _trim(self) -> None:
        if len(self._entries) > self.max_entries:
            keep = sorted(self._entries.values(), key=lambda e: e.last_seen, reverse=True)
            self._entries = {e.peer.node_id: e for e in keep[: self.max_entries]}

    def save(self) -> None:
        if self.path is None or not self.dirty:
            return
        rows = []
        for entry in sorted(self._entries.values(), key=lambda e: e.last_seen, reverse=True):
            row = entry.peer.to_json()
            del row["source"]
            row["last_seen"] = round(entry.last_seen, 3)
            rows.append(row)
        text = json.dumps({"format": _CACHE_FORMAT, "peers": rows}, indent=1) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".peer-cache.", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(text)
                os.replace(tmp, self.path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as exc:
            log.warning("cannot write peer cache %s: %s", self.path, exc)
            return
        self.dirty = False


def parse_seed(text: str, default_port: int) -> tuple[str, int]:
    """`host`, `host:port`, `IPv6` or `[IPv6]:port` -> (host, port); ValueError if malformed."""
    value = text.strip()
    host, port = value, default_port
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise ValueError(f"seed {text!r}: missing ']'")
        host, rest = value[1:end], value[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"seed {text!r}: expected ':port' after ']'")
            port = _port(rest[1:], text)
    elif value.count(":") == 1:
        host, port_text = value.split(":")
        port = _port(port_text, text)
    elif value.count(":") > 1:
        ipaddress.IPv6Address(value.split("%")[0])  # a bare IPv6 address, or ValueError
    if not host:
        raise ValueError(f"seed {text!r}: no host")
    return host, port


def _port(text: str, seed: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise ValueError(f"seed {seed!r}: bad port {text!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"seed {seed!r}: port {port} out of range")
    return port
