"""The box's place in the mesh: identity, overlay service, discovery and link watching.

The node keeps phones; this keeps boxes. It publishes which extensions this box
serves, finds the box that serves another extension, and keeps the box on the ring
as links come and go.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from overlay.chord.messages import NodeRef
from overlay.discovery import Discovery, PeerInfo
from overlay.identity import IdentityError, NodeIdentity
from overlay.links import LinkWatcher, snapshot
from overlay.service import OverlayService, OverlaySettings
from overlay.sip.routing import Address

log = logging.getLogger("meshsip.mesh")
FIND_CACHE_SECONDS = 5.0  # repeated calls to one extension skip the lookup


@dataclass
class MeshConfig:
    overlay: str
    discovery: bool
    interfaces: list[str] | None
    seeds: list[str]
    ca_cert: Path | None
    node_cert: Path | None
    transport: str = "auto"


class MeshError(Exception):
    pass


class Mesh:
    def __init__(self, config: MeshConfig, data_dir: Path, send: Any, host: str,
                 port: int) -> None:
        try:
            self.identity = NodeIdentity.load(data_dir, ca_cert=config.ca_cert,
                                              node_cert=config.node_cert)
        except IdentityError as exc:
            raise MeshError(str(exc)) from None
        self.config = config
        self.contact = f"sip:{_host(host)}:{port}"  # where other boxes send calls for our phones
        settings = OverlaySettings(name=config.overlay, transport=config.transport)
        self.service = OverlayService(self.identity, settings, send, host, port)
        self.discovery = Discovery(
            self.identity.node_id_hex, port, self._on_peer, overlay=config.overlay,
            interfaces=config.interfaces, enabled=config.discovery, data_dir=data_dir,
            seeds=config.seeds,
        )
        self.links = LinkWatcher(self.discovery.links_changed) if config.discovery else None
        self._found: dict[str, tuple[float, list[str]]] = {}

    @property
    def node_id_hex(self) -> str:
        return self.identity.node_id_hex

    async def start(self) -> None:
        self.service.start()
        await self.discovery.start()
        if self.links is not None:
            await self.links.start()

    async def stop(self) -> None:
        if self.links is not None:
            await self.links.stop()
        await self.discovery.stop()
        await self.service.stop()

    def _on_peer(self, peer: PeerInfo) -> None:
        if not peer.addresses:
            return
        host = peer.addresses[0]
        if not peer.node_id:  # a seed address: ask who is there
            self.service.contact(host, peer.port)
            return
        try:
            ref = NodeRef(int(peer.node_id, 16), host, peer.port)
        except ValueError:
            return
        self.service.add_peer(ref)

    def receive(self, data: bytes, source: Address) -> None:
        self.service.receive(data, source)

    # -- extensions ----------------------------------------------------------------------
    def publish(self, extension: str) -> None:
        self.service.publish(extension, self.contact)

    def withdraw(self, extension: str) -> None:
        self.service.withdraw(extension, self.contact)

    async def find(self, extension: str) -> list[str]:
        """SIP URIs of the other boxes that serve `extension` (empty when none does)."""
        now = time.monotonic()
        cached = self._found.get(extension)
        if cached is not None and cached[0] > now:
            return cached[1]
        records = await self.service.find(extension)
        contacts = sorted({r.contact for r in records if r.contact != self.contact})
        if contacts:
            self._found[extension] = (now + FIND_CACHE_SECONDS, contacts)
        return contacts

    def forget(self, extension: str) -> None:
        """A cached box did not answer: the next call looks the extension up again."""
        self._found.pop(extension, None)

    def status(self) -> dict[str, Any]:
        return self.service.status() | {
            "discovery": "on" if self.config.discovery else "off",
            "peers_known": len(self.discovery.known_peers()),
        }


def primary_address() -> str:
    """The address other boxes reach this one at: the first non-loopback IPv4 address."""
    for addresses in snapshot().values():
        for ip in addresses:
            if "." in ip and not ip.startswith("127."):
                return ip
    return "127.0.0.1"


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip
