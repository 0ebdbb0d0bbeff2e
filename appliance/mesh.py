"""The box's place in the mesh: identity, overlay service, discovery and link watching.

The node keeps phones; this keeps boxes. It publishes which extensions this box
serves, finds the box that serves another extension, and keeps the box on the ring
as links come and go.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from overlay.chord.messages import NodeRef
from overlay.chord.wire import REASONS
from overlay.discovery import PROTOCOL_VERSION, Discovery, PeerInfo
from overlay.identity import NodeIdentity
from overlay.links import LinkWatcher, snapshot
from overlay.revocation import Crl, Revocations
from overlay.service import OverlayService, OverlaySettings, persisted_sequences
from overlay.sip.routing import Address
from overlay.sip.uri import uri_host

from .crlfile import CrlFile
from .pki import trust_summary

log = logging.getLogger("meshsip.mesh")
FIND_CACHE_SECONDS = 5.0  # repeated calls to one extension skip the lookup
SEQUENCE_FILE = "record-sequence"


@dataclass
class MeshConfig:
    overlay: str
    discovery: bool
    interfaces: list[str] | None
    seeds: list[str]
    transport: str = "auto"


class Mesh:
    """`host` None: the box listens on all addresses and follows its links (a box that
    boots before its cable or Wi-Fi is up joins as soon as an address appears)."""

    def __init__(self, config: MeshConfig, identity: NodeIdentity, data_dir: Path, send: Any,
                 host: str | None, port: int) -> None:
        self.identity = identity
        self.config = config
        self.follow_links = host is None
        self._send, self._port = send, port
        # extension -> its claim's proof (instance hash, password verified)
        self._published: dict[str, tuple[str, bool]] = {}
        # Told an extension another box took over (the storing node refused our record).
        self.on_lost: Callable[[str], None] | None = None
        # one counter for every service this box runs (a new one per address change)
        self.sequences = persisted_sequences(data_dir / SEQUENCE_FILE)
        # the CRL outlives services (a new one per address change)
        self.revocations = Revocations(identity.ca_certificate)
        self.revocations.on_adopted = self._revoked
        self.crl_file = CrlFile(data_dir, self.revocations)
        self._crl_task: asyncio.Task[None] | None = None
        self.service = self._new_service(host or primary_address(config.interfaces))
        self.discovery = Discovery(
            self.identity.node_id_hex, port, self._on_peer, overlay=config.overlay,
            interfaces=config.interfaces, enabled=config.discovery, data_dir=data_dir,
            seeds=config.seeds,
        )
        self.links = LinkWatcher(self._links_changed)
        # Told every snapshot of the box's addresses (at start, then on each change).
        self.on_addresses: Callable[[dict[str, list[str]]], None] | None = None
        self._found: dict[str, tuple[float, list[str]]] = {}
        self.crl_file.poll()  # before the first message comes in

    def _new_service(self, host: str) -> OverlayService:
        self.contact = f"sip:{uri_host(host)}:{self._port}"  # where boxes send calls for our phones
        settings = OverlaySettings(name=self.config.overlay, transport=self.config.transport)
        service = OverlayService(self.identity, settings, self._send, host, self._port,
                                 self.sequences, self.revocations)
        service.on_neighbors = self._remember
        service.on_lost = self._lost
        return service

    def _remember(self, refs: list[NodeRef]) -> None:
        for ref in refs:
            self.discovery.add_known_peer(PeerInfo(
                f"{ref.id:032x}", [ref.host], ref.port, self.config.overlay, PROTOCOL_VERSION,
                source="overlay"))

    async def _links_changed(self, addresses: dict[str, list[str]]) -> None:
        if self.on_addresses is not None:
            self.on_addresses(addresses)
        self.discovery.links_changed(addresses)
        if not self.follow_links:
            return
        host = primary_address(self.config.interfaces, addresses)
        if host == self.service.ref.host:
            return
        # Our address is part of our place on the ring: leave, and come back with the new one.
        log.info("address changed from %s to %s: rejoining the overlay",
                 self.service.ref.host, host)
        await self.service.stop()
        self.service = self._new_service(host)
        self.service.start()
        self._found.clear()
        for extension, (instance, verified) in self._published.items():
            self.service.publish(extension, self.contact, instance, verified)

    def _revoked(self, crl: Crl) -> None:
        """A newer CRL (from the file or a peer): drop whom it names, keep it on disk."""
        if crl.revokes(self.identity.node_id):
            log.warning("this box's own certificate is revoked: other boxes refuse it")
        self.service.drop_revoked(crl)
        self._found.clear()
        self.crl_file.save(crl)

    def revoked_box(self, token: str) -> bool:
        """Whether a Meshsip-Hop token (a box's Node-ID prefix, as the proxy marks the
        calls it hands on) names a revoked box: its calls are refused, as its messages."""
        crl = self.revocations.crl
        if crl is None or not token:
            return False
        return any(f"{node_id:032x}".startswith(token.lower()) for node_id in crl.node_ids)

    @property
    def node_id_hex(self) -> str:
        return self.identity.node_id_hex

    async def start(self) -> None:
        self.service.start()
        self._crl_task = asyncio.get_running_loop().create_task(self.crl_file.watch())
        await self.discovery.start()
        addresses = await self.links.start()
        if self.on_addresses is not None:
            self.on_addresses(addresses)

    async def stop(self) -> None:
        if self._crl_task is not None:
            self._crl_task.cancel()
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

    def receive(self, data: bytes, source: Address, link_peer: object = None) -> None:
        self.service.receive(data, source, link_peer)

    # -- extensions ----------------------------------------------------------------------
    def publish(self, extension: str) -> None:
        """A binding restored from disk (a claim made before a restart, no proof kept)."""
        if extension not in self._published:
            self._published[extension] = ("", False)
            self.service.publish(extension, self.contact)

    async def claim(self, extension: str, instance: str, verified: bool) -> str:
        """Claim `extension` for this box (appliance/claims.py has the outcomes)."""
        self._published[extension] = (instance, verified)
        outcome = await self.service.claim(extension, self.contact, instance, verified)
        if outcome == "in use":
            self._published.pop(extension, None)
        return outcome

    def withdraw(self, extension: str) -> None:
        if self._published.pop(extension, None) is not None:
            self.service.withdraw(extension, self.contact)

    def _lost(self, aor: str) -> None:
        self._published.pop(aor, None)
        if self.on_lost is not None:
            self.on_lost(aor)

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
        codec = self.service.codec.counters
        refusals = {r: codec[r] for r in REASONS} | {
            r: self.revocations.counters[r] for r in ("crl_foreign", "crl_malformed")}
        return self.service.status() | {
            "refusals": refusals,
            "trust": trust_summary(self.identity),
            "discovery": "on" if self.config.discovery else "off",
            "peers_known": len(self.discovery.known_peers()),
        }


def primary_address(interfaces: list[str] | None = None,
                    addresses: dict[str, list[str]] | None = None) -> str:
    """The address other boxes reach this one at: the first non-loopback IPv4 address
    (of the chosen interfaces); loopback while the box has no link at all."""
    if addresses is None:
        addresses = snapshot()
    for name in sorted(addresses):
        if interfaces and name not in interfaces:
            continue
        for ip in addresses[name]:
            if "." in ip and not ip.startswith("127."):
                return ip
    return "127.0.0.1"
