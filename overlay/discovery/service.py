"""Discovery: find the other nodes of this overlay with mDNS / DNS-SD, seeds and a cache."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import re
import socket
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from .. import links
from ..names import check_overlay_name
from .peers import CACHE_FILE, PROTOCOL_VERSION, PeerCache, PeerInfo, parse_seed

log = logging.getLogger("meshsip.discovery")

SERVICE_TYPE = "_meshsip._udp.local."
DEFAULT_OVERLAY = "meshsip"
OnPeer = Callable[[PeerInfo], None]

# zeroconf publishes SRV and A/AAAA records with a 120 s TTL: a peer that stops announcing
# drops out of resolution after that, so the re-announce interval must stay well below it.
_HOST_TTL = 120.0
_HEX = re.compile(r"^[0-9a-f]+$")
_STATS = (
    "reported",  # on_peer calls, all sources
    "other_overlay",  # services of another overlay name, ignored
    "malformed",  # services whose TXT record is not ours
    "self",  # our own service, seen on the network
    "removed",  # mDNS goodbyes / expiries seen (ignored: the ring judges liveness)
    "resolve_failed",  # services that did not answer for their SRV/TXT/A records
    "refreshes",  # re-announce + re-query rounds
    "link_changes",  # links_changed() calls
    "errors",  # zeroconf failures (logged; retried on the next refresh)
    "seed_unresolved",  # seed host names that did not resolve
)


def instance_name(node_id: str, hostname: str | None = None) -> str:
    """DNS-SD instance label: Node-ID prefix (unique) and host name (readable), <= 63 bytes."""
    host = re.sub(r"[^A-Za-z0-9-]+", "-", hostname or socket.gethostname()).strip("-")
    return f"{node_id[:16]}-{host or 'meshsip'}"[:63].rstrip("-")


class Discovery:
    """Advertises this node and reports the other nodes of its overlay to `on_peer`.

    Liveness never comes from here: a report means "a node was heard of at these addresses",
    possibly minutes ago (mDNS pointer records live about 19 minutes after a node vanishes
    without a goodbye); the ring's pings decide whether it is alive. The same peer is
    reported again on every refresh (re-query) while mDNS still resolves it, and cached and
    seed peers every `fallback_interval`, so the node can notice peers it lost (a healed
    partition, another ring to merge): `on_peer` must be idempotent and cheap. It is called
    on the event loop; exceptions in it are logged.

    mDNS: service `_meshsip._udp.local.`, instance `<node-id prefix>-<hostname>`, SRV port =
    SIP port, TXT `overlay=`, `node=`, `sip=`, `v=`, address records for the chosen
    interfaces. Every `refresh_interval` (jittered by 10 %) it re-announces itself and
    recreates its browser (a zeroconf browser stops querying about 14 s after it starts,
    so nodes that became reachable later, e.g. after a partition healed, would stay unseen),
    and does the same at once when `links_changed()` is called.

    `interfaces` limits mDNS to those interface names (their addresses, looked up again on
    each refresh); None means every usable non-loopback interface. IPv4 only unless
    `ipv6=True`. `enabled=False` sends no multicast at all: only seeds and the cache.
    """

    def __init__(
        self,
        node_id: str,
        port: int,
        on_peer: OnPeer,
        *,
        overlay: str = DEFAULT_OVERLAY,
        interfaces: list[str] | None = None,
        enabled: bool = True,
        data_dir: str | Path | None = None,
        seeds: Iterable[str] = (),
        refresh_interval: float = 20.0,
        fallback_interval: float = 120.0,
        resolve_timeout: float = 2.0,
        cache_size: int = 64,
        hostname: str | None = None,
        ipv6: bool = False,
    ) -> None:
        node_id = node_id.lower()
        if not _HEX.match(node_id):
            raise ValueError(f"node id must be hex digits, not {node_id!r}")
        if not 0 < port < 65536:
            raise ValueError(f"port {port} out of range")
        check_overlay_name(overlay)
        if not 0.5 <= refresh_interval <= _HOST_TTL * 0.8:
            raise ValueError(f"refresh_interval must be 0.5 to {_HOST_TTL * 0.8:.0f} s")
        self.node_id = node_id
        self.port = port
        self.overlay = overlay
        self.interfaces = list(interfaces) if interfaces is not None else None
        self.enabled = enabled
        self.refresh_interval = refresh_interval
        self.fallback_interval = fallback_interval
        self.resolve_timeout = resolve_timeout
        self.ipv6 = ipv6
        self.seeds = [parse_seed(seed, port) for seed in seeds]
        self.instance = instance_name(node_id, hostname)
        # The full Node-ID: two nodes sharing a host name would merge their address records.
        self.server = f"meshsip-{node_id[:48]}.local."
        self.stats: dict[str, int] = dict.fromkeys(_STATS, 0)
        self.advertised: list[str] = []  # addresses in our address records
        cache_path = Path(data_dir) / CACHE_FILE if data_dir is not None else None
        self.cache = PeerCache(cache_path, max_entries=cache_size)
        self._on_peer = on_peer
        self._aiozc: AsyncZeroconf | None = None
        self._zc_interfaces: list[str | int] = []
        self._info: AsyncServiceInfo | None = None
        # More DNS-SD services this host offers on the same links and name (type -> port),
        # e.g. `_sip._udp.local.` for phones; set before start, announced on each refresh.
        self.services: dict[str, int] = {}
        self._extra: dict[str, AsyncServiceInfo] = {}
        self._registered = False
        self._browser: AsyncServiceBrowser | None = None
        self._refresh_now = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._resolving: set[str] = set()
        self._save_handle: asyncio.TimerHandle | None = None
        self._warned_clone = False
        self._running = False

    # -- public API -------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the cache and report its peers, then start mDNS and the seed/cache rounds.

        Returns at once: the mDNS registration (about 1.6 s of probing) runs in the
        background, and browsing starts before it.
        """
        if self._running:
            return
        self._running = True
        self.cache.load()
        for peer in self.cache.peers(self.overlay):
            if peer.node_id != self.node_id:
                self._report(peer, learn=False)
        if self.enabled:
            self._spawn(self._mdns_loop(), "discovery-mdns")
        self._spawn(self._fallback_loop(), "discovery-fallback")

    async def stop(self) -> None:
        """Say goodbye on mDNS, close its sockets and write the cache."""
        if not self._running:
            return
        self._running = False
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._save_handle is not None:
            self._save_handle.cancel()
            self._save_handle = None
        aiozc, self._aiozc = self._aiozc, None
        browser, self._browser = self._browser, None
        if aiozc is not None:
            try:
                if browser is not None:
                    await browser.async_cancel()
                await asyncio.wait_for(aiozc.async_close(), timeout=5.0)  # goodbyes
            except Exception as exc:
                log.warning("closing mDNS: %s", exc)
        self._registered = False
        self._extra.clear()
        self.cache.save()

    def links_changed(self, addresses: dict[str, list[str]] | None = None) -> None:
        """Interfaces or addresses changed: re-announce and re-query now.

        Fits `LinkWatcher(on_change=...)` directly. `addresses` is accepted for that
        signature only: discovery takes its own fresh look at the interfaces.
        """
        self.stats["link_changes"] += 1
        self._refresh_now.set()

    def add_known_peer(self, peer: PeerInfo) -> None:
        """A peer the node learned by other means (peer exchange over the overlay): cache it."""
        if peer.node_id and peer.node_id != self.node_id and peer.overlay == self.overlay:
            if self.cache.learn(peer):
                self._schedule_save()

    def known_peers(self) -> list[PeerInfo]:
        """The cached peers of this overlay, most recently seen first."""
        return [p for p in self.cache.peers(self.overlay) if p.node_id != self.node_id]

    # -- reporting --------------------------------------------------------------------------

    def _report(self, peer: PeerInfo, learn: bool = True) -> None:
        self.stats["reported"] += 1
        if learn and self.cache.learn(peer):
            self._schedule_save()
        try:
            self._on_peer(peer)
        except Exception:
            log.exception("on_peer callback failed for %s", peer.node_id or peer.addresses)

    def _schedule_save(self, delay: float = 2.0) -> None:
        """Write the cache soon (a burst of learned peers makes one write)."""
        if self._save_handle is not None or self.cache.path is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside the event loop
            self.cache.save()
            return
        self._save_handle = loop.call_later(delay, self._save_now)

    def _save_now(self) -> None:
        self._save_handle = None
        self.cache.save()

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- seeds and cache --------------------------------------------------------------------

    async def _fallback_loop(self) -> None:
        first = True
        while True:
            if not first:
                for peer in self.known_peers():
                    self._report(peer, learn=False)
            first = False
            for host, port in self.seeds:
                addresses = await self._resolve_host(host, port)
                if addresses:
                    seed = PeerInfo("", addresses, port, self.overlay, PROTOCOL_VERSION, "seed")
                    self._report(seed, learn=False)
                else:
                    self.stats["seed_unresolved"] += 1
            await asyncio.sleep(self.fallback_interval)

    async def _resolve_host(self, host: str, port: int) -> list[str]:
        try:
            ipaddress.ip_address(host.split("%")[0])
            return [host]
        except ValueError:
            pass
        family = socket.AF_UNSPEC if self.ipv6 else socket.AF_INET
        try:
            infos = await asyncio.wait_for(
                asyncio.get_running_loop().getaddrinfo(
                    host, port, family=family, type=socket.SOCK_DGRAM
                ),
                timeout=2.0,
            )
        except (OSError, TimeoutError) as exc:
            log.debug("seed %s does not resolve: %s", host, exc)
            return []
        out: list[str] = []
        for info in sorted(infos, key=lambda i: i[0] != socket.AF_INET):
            address = str(info[4][0])
            if address not in out:
                out.append(address)
        return out

    # -- mDNS -------------------------------------------------------------------------------

    def _wanted(self) -> tuple[list[str], list[str | int]]:
        """(addresses to advertise, zeroconf interface list) for the chosen interfaces now."""
        current = links.snapshot()
        advertised: list[str] = []
        zc_interfaces: list[str | int] = []
        for name, ips in sorted(current.items()):
            if self.interfaces is not None and name not in self.interfaces:
                continue
            v6 = False
            for ip in ips:
                version = ipaddress.ip_address(ip.split("%")[0]).version
                if version == 4:
                    advertised.append(ip)
                    zc_interfaces.append(ip)
                elif self.ipv6:
                    advertised.append(ip)
                    v6 = True
            if v6:
                try:
                    zc_interfaces.append(socket.if_nametoindex(name))
                except OSError:
                    pass
        advertised.sort(key=lambda a: ":" in a)
        return advertised, zc_interfaces

    def _make_info(self, addresses: list[str]) -> AsyncServiceInfo:
        name = self._info.name if self._info is not None else f"{self.instance}.{SERVICE_TYPE}"
        properties = {
            "overlay": self.overlay,
            "node": self.node_id,
            "sip": str(self.port),
            "v": str(PROTOCOL_VERSION),
        }
        return AsyncServiceInfo(
            SERVICE_TYPE,
            name,
            port=self.port,
            properties=properties,
            server=self.server,
            parsed_addresses=[a.split("%")[0] for a in addresses],
        )

    async def _mdns_loop(self) -> None:
        while True:
            self._refresh_now.clear()
            try:
                await self._mdns_step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats["errors"] += 1
                log.warning("mDNS refresh failed (retrying): %r", exc)
            interval = self.refresh_interval * random.uniform(0.9, 1.1)
            try:
                await asyncio.wait_for(self._refresh_now.wait(), timeout=interval)
            except TimeoutError:
                pass

    async def _mdns_step(self) -> None:
        """Bring sockets and records in line with the interfaces; announce; query."""
        advertised, zc_interfaces = self._wanted()
        fresh_browser = False
        if self._aiozc is None:
            ip_version = IPVersion.All if self.ipv6 else IPVersion.V4Only
            self._aiozc = AsyncZeroconf(interfaces=list(zc_interfaces), ip_version=ip_version)
            self._zc_interfaces = list(zc_interfaces)
            self._browser = self._new_browser()
            fresh_browser = True
        aiozc = self._aiozc
        announced = False
        if self._registered and advertised != self.advertised:
            self._info = self._make_info(advertised)
            self.advertised = advertised
            await aiozc.async_update_service(self._info)
            announced = True
        if zc_interfaces != self._zc_interfaces:
            # Adds and drops sockets; re-announces the registration if one was added.
            await aiozc.async_update_interfaces(list(zc_interfaces))
            self._zc_interfaces = list(zc_interfaces)
        if not self._registered:
            self._info = self._make_info(advertised)
            self.advertised = advertised
            await aiozc.async_register_service(self._info, allow_name_change=True)
            self._registered = True
            if self._info.name != f"{self.instance}.{SERVICE_TYPE}":
                log.warning("mDNS name taken: advertising as %s", self._info.name)
        elif not announced:
            assert self._info is not None
            await aiozc.async_update_service(self._info)
        for service_type, port in self.services.items():
            await self._announce_extra(aiozc, service_type, port, advertised)
        if not fresh_browser:
            old, self._browser = self._browser, self._new_browser()
            if old is not None:
                await old.async_cancel()
        self.stats["refreshes"] += 1

    async def _announce_extra(self, aiozc: AsyncZeroconf, service_type: str, port: int,
                              addresses: list[str]) -> None:
        known = self._extra.get(service_type)
        info = AsyncServiceInfo(
            service_type, known.name if known else f"{self.instance}.{service_type}",
            port=port, properties={"node": self.node_id[:16]}, server=self.server,
            parsed_addresses=[a.split("%")[0] for a in addresses])
        if known is None:
            await aiozc.async_register_service(info, allow_name_change=True)
        else:
            await aiozc.async_update_service(info)
        self._extra[service_type] = info

    def _new_browser(self) -> AsyncServiceBrowser:
        assert self._aiozc is not None
        return AsyncServiceBrowser(
            self._aiozc.zeroconf, SERVICE_TYPE, handlers=[self._on_service_state_change]
        )

    def _on_service_state_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        # zeroconf calls this with exactly these keyword names; others kill the browser.
        if state_change is ServiceStateChange.Removed:
            self.stats["removed"] += 1
            return
        if name in self._resolving or not self._running:
            return
        self._resolving.add(name)
        task = self._spawn(self._resolve(zeroconf, service_type, name), "discovery-resolve")
        task.add_done_callback(lambda _t: self._resolving.discard(name))

    async def _resolve(self, zeroconf: Zeroconf, service_type: str, name: str) -> None:
        info = AsyncServiceInfo(service_type, name)
        if not await info.async_request(zeroconf, self.resolve_timeout * 1000):
            self.stats["resolve_failed"] += 1
            return
        peer = self._peer_from(info)
        if peer is not None:
            self._report(peer)

    def _peer_from(self, info: AsyncServiceInfo) -> PeerInfo | None:
        props = info.decoded_properties
        node = (props.get("node") or "").lower()
        overlay = props.get("overlay")
        try:
            version = int(props.get("v") or "")
            port = int(info.port or props.get("sip") or "")
        except ValueError:
            self.stats["malformed"] += 1
            return None
        if not node or not _HEX.match(node) or not overlay or not 0 < port < 65536:
            self.stats["malformed"] += 1
            return None
        if node == self.node_id:
            self.stats["self"] += 1
            if self._info is not None and info.name != self._info.name and not self._warned_clone:
                self._warned_clone = True
                log.warning("%s advertises this node's id %s: a cloned key?", info.name, node)
            return None
        if overlay != self.overlay:
            self.stats["other_overlay"] += 1
            return None
        version_filter = IPVersion.All if self.ipv6 else IPVersion.V4Only
        addresses = info.parsed_scoped_addresses(version_filter)
        if not addresses:
            self.stats["resolve_failed"] += 1
            return None
        return PeerInfo(node, addresses, port, overlay, version, "mdns")
