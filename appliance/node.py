"""One meshsip box: the asyncio adapter that feeds sockets and time to the sans-IO cores."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import ssl
import time
from collections.abc import Callable
from typing import Any

from overlay.identity import IdentityError, NodeIdentity
from overlay.sip.errors import SipParseError
from overlay.sip.message import Request, parse_message
from overlay.sip.resolver import Resolver
from overlay.sip.responses import make_response, salvage_error_response
from overlay.sip.routing import Address, local_ip_for, stamp_via
from overlay.sip.transaction import TransactionLayer, client_key_of
from overlay.sip.transport import SendError, SipTransport
from overlay.wakeup import Wakeup

from .addresses import OwnAddresses, default_names
from .auth import DigestPolicy
from .claims import TRYING_AFTER, UNREACHED, ClaimAnswer, PendingClaim
from .config import Config
from .control import ControlServer
from .limits import Limits, binding_caps, sip_limiter
from .mesh import Mesh, MeshConfig
from .onboard.service import SIP_SERVICE, Onboarding, on_lost
from .phone_tls import PhoneTlsError, tls_settings
from .pki import deployment_ca, trust_summary
from .proxy import Proxy
from .proxy.boxes import HOP_HEADER
from .refresh import RefreshLane
from .registrar import Clocks, Location
from .users import load_users
from .web.metrics import NodeMetrics
from .web.site import WebError, Website

log = logging.getLogger("meshsip.node")
HOUSEKEEPING_SECONDS = 5.0


class NodeError(Exception):
    """A problem the operator must fix (bad data dir, port in use, ...), said plainly."""


class Node:
    def __init__(self, config: Config, limits: Limits | None = None) -> None:
        self.config = config
        self.limits = limits = limits or Limits()
        self.sip_limiter = sip_limiter(limits)  # per source IP, before parsing
        self._saved_at = -limits.bindings_save_seconds
        self.data_dir = config.data_dir
        self.started_at = time.monotonic()  # not the wall clock: peers set it after boot
        self.counters = {"parse_errors": 0, "bad_requests_answered": 0,
                         "revoked_box_requests": 0}
        self._wakeup = Wakeup(self._on_timer)
        self._local_ips: dict[str, str] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._prepare_data_dir()
        try:
            self.identity = NodeIdentity.load(self.data_dir, ca_cert=deployment_ca(config),
                                              node_cert=config.node_cert)
        except IdentityError as exc:
            raise NodeError(str(exc)) from None
        self.token = self.identity.node_id_hex[:12]  # marks our own Record-Route entries
        auth = None
        if config.policy == "digest":
            assert config.users_file is not None
            try:
                users = load_users(config.users_file)
            except Exception as exc:  # UsersFileError, said as is
                raise NodeError(str(exc)) from None
            # Nonces stay valid across restarts: the key derives from the box's own key
            # (Ed25519 signatures are deterministic).
            secret = hashlib.sha256(self.identity.sign(b"meshsip digest nonces")).digest()
            auth = DigestPolicy(users, config.realm, secret, tuple(config.digest_algorithms))
        self.location = Location(
            min_expires=config.min_expires, max_expires=config.max_expires,
            default_expires=config.default_expires, open_policy=config.policy == "open", auth=auth,
            caps=binding_caps(limits),
        )
        self.txl = TransactionLayer(t1=config.t1_ms / 1000.0,
                                    max_servers=limits.max_server_transactions,
                                    max_invite_servers=limits.max_invite_servers,
                                    retry_after=limits.retry_after)
        self.own = OwnAddresses(config.bind, config.sip_port, default_names())
        self.proxy = Proxy(self.txl, self.location, self._local_address, self.token, self.own)
        self.proxy.call_table.max_calls = limits.max_calls
        self.refresh_lane = RefreshLane(self.location, self.txl, self.proxy.counters,
                                        self._wakeup.at)
        self.resolver = Resolver()
        self.proxy.address = self.resolver.address
        self.proxy.resolve = self._resolve
        self.transport = SipTransport(self._on_message, self._on_send_error)
        try:
            self.transport.tls = tls_settings(self.identity, self.data_dir, config.tls_port != 0)
        except (PhoneTlsError, ssl.SSLError) as exc:
            raise NodeError(str(exc)) from None
        self.metrics = NodeMetrics()
        self.web = Website(self, self.metrics)  # serves only when started (web_port != 0)
        self.control = ControlServer(self.data_dir / "control.sock", self.status,
                                     {"overview": self.web.document})
        self.onboard = Onboarding(self)  # phones onboard themselves (appliance/onboard)
        self.bindings_file = self.data_dir / "bindings.json"
        self.mesh: Mesh | None = None
        self._pending_publish: list[tuple[str, bool]] = []
        self.location.observer = self._on_extension

    # -- lifecycle ------------------------------------------------------------------------
    def _prepare_data_dir(self) -> None:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise NodeError(
                f"cannot create data directory {self.data_dir}: {exc.strerror}"
            ) from None
        if not os.access(self.data_dir, os.W_OK):
            raise NodeError(f"data directory {self.data_dir} is not writable")

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._clock = loop.time  # asyncio.get_running_loop() asks the kernel for our pid
        restored = self.location.load(self.bindings_file, Clocks.read(loop.time()))
        try:
            await self.transport.start(self.config.bind, self.config.sip_port)
            if self.config.tls_port:
                await self.transport.listen_tls(self.config.tls_port)
        except OSError as exc:
            raise NodeError(str(exc)) from None
        self.own.port, self.own.tls_port = self.transport.local_port, self.transport.tls_port
        await self._start_mesh()
        await self.control.start()
        if self.config.web_port != 0:
            try:
                await self.web.start(self.config.bind, self.config.web_port)
            except WebError as exc:
                await self.stop()
                raise NodeError(str(exc)) from None
        await self.onboard.start()
        self._tasks.append(loop.create_task(self._housekeeping()))
        log.info(
            "meshsip node ready: SIP on UDP and TCP %s:%d%s, data in %s, registration %s%s",
            self.config.bind, self.transport.local_port,
            f", TLS {self.transport.tls_port}" if self.transport.tls_port else "",
            self.data_dir, self.config.policy,
            f", {restored} registrations restored" if restored else "",
        )

    async def _start_mesh(self) -> None:
        c = self.config
        host = c.bind if c.bind not in ("0.0.0.0", "::", "") else None
        mesh_config = MeshConfig(c.overlay, c.discovery, c.interfaces or None, c.seeds,
                                 c.overlay_transport, self.limits)
        self.mesh = Mesh(mesh_config, self.identity, self.data_dir, self.transport.send, host,
                         self.transport.local_port)
        self.proxy.find_remote = self._find_remote
        self.proxy.forget_remote = self.mesh.forget
        self.location.claims = self._claim
        self.mesh.on_lost = on_lost(self, self.onboard)
        self.own.add_names([self.mesh.discovery.server])
        self.mesh.discovery.services[SIP_SERVICE] = self.transport.local_port  # for phones
        self.mesh.on_addresses = self._links_changed
        await self.mesh.start()
        for extension, present in self._pending_publish:
            self._on_extension(extension, present)
        self._pending_publish.clear()
        log.info("overlay %r: node %s at %s:%d, %s mode (%s), discovery %s", c.overlay,
                 self.mesh.node_id_hex[:16], self.mesh.service.ref.host,
                 self.transport.local_port, self.mesh.identity.mode,
                 trust_summary(self.identity), "on" if c.discovery else "off")

    def _links_changed(self, addresses: dict[str, list[str]]) -> None:
        self.own.set_links(addresses)
        self.onboard.links_changed(addresses)

    def _on_extension(self, extension: str, present: bool) -> None:
        """The registrar gained or lost an extension: tell the mesh."""
        if self.mesh is None:
            self._pending_publish.append((extension, present))
        elif present:
            self.mesh.publish(extension)
        else:
            self.mesh.withdraw(extension)

    def _claim(self, pending: PendingClaim, answer: ClaimAnswer) -> None:
        """Ask the mesh for a new extension; the phone hears 100 Trying if it takes long."""
        mesh = self.mesh
        assert mesh is not None
        loop = asyncio.get_running_loop()

        def trying() -> None:
            answer.trying(loop.time())
            self._pump(loop.time())

        async def claim() -> None:
            timer = loop.call_later(TRYING_AFTER, trying)
            try:
                outcome = await mesh.claim(pending.extension, pending.instance, pending.verified)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # the node is stopping
                outcome = UNREACHED  # the overlay service was replaced (new address)
            finally:
                timer.cancel()
            answer(outcome, loop.time())
            self._pump(loop.time())

        task = loop.create_task(claim())
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)

    def _find_remote(self, extension: str, reply: Callable[[list[str], float], None]) -> None:
        mesh = self.mesh
        assert mesh is not None
        loop = asyncio.get_running_loop()

        async def find() -> None:
            started = loop.time()
            boxes = await mesh.find(extension)
            now = loop.time()
            self.metrics.lookup_done(now - started, bool(boxes))
            reply(boxes, now)
            self._pump(now)

        task = loop.create_task(find())
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._wakeup.cancel()
        self._save_bindings()
        self.onboard.close()
        await self.web.close()
        if self.mesh is not None:
            await self.mesh.stop()
        await self.control.close()
        await self.transport.close()
        log.info("meshsip node stopped")

    async def _housekeeping(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(HOUSEKEEPING_SECONDS)
            self.proxy.expire(loop.time())
            self._pump(loop.time())
            for b in self.location.expire(loop.time()):
                log.info("registration of %s at %s expired", b.extension, b.contact)
            # At most every bindings_save_seconds: SD cards wear out (and stop() saves).
            if self.location.changed and \
                    loop.time() - self._saved_at >= self.limits.bindings_save_seconds:
                self._save_bindings()

    def _save_bindings(self) -> None:
        self._saved_at = asyncio.get_running_loop().time()
        try:
            self.location.save(self.bindings_file, Clocks.read(asyncio.get_running_loop().time()))
        except OSError as exc:
            log.error("cannot save registrations to %s: %s", self.bindings_file, exc.strerror)

    # -- message path ---------------------------------------------------------------------
    def _on_message(self, data: bytes, source: Address) -> None:
        now = self._clock()
        # Phones' SIP over its per-source rate is dropped unparsed (see limits.py); box-to-box
        # messages have their own limit at the overlay service.
        overlay = b"DHT-NodeID" in data
        if not overlay:
            if not self.sip_limiter.allow(source[1], now):
                return
            if source[0] == "UDP" and data.startswith(b"REGISTER "):
                answer = self.refresh_lane.answer(data, source, now)
                if answer is not None:
                    self.transport.answer_datagram(answer, source)
                    return
        try:
            message = parse_message(data)
            if message.get("DHT-NodeID") is not None:
                if self.mesh is not None:  # box-to-box overlay traffic, signed
                    self.mesh.receive(data, source, self.transport.peer_of(source))
                return
            if overlay and not self.sip_limiter.allow(source[1], now):
                return  # the name was elsewhere in it: no way round the limit
            if isinstance(message, Request):
                stamp_via(message, source)
                if self._from_revoked_box(message, source):
                    return
                if source[0] == "TLS" and message.top_via.host == source[1]:
                    # in-dialog requests to the phone's Contact reuse its connection
                    self.transport.alias(source, message.top_via.port or 5061)
        except SipParseError as exc:
            self.counters["parse_errors"] += 1
            response = salvage_error_response(data, exc.status, exc.reason)
            if response is not None:
                self.counters["bad_requests_answered"] += 1
                self.transport.send(response.encode(), source)
            log.debug("unparsable message from %s %s:%d: %s", *source, exc.reason)
            return
        self.txl.receive(message, source, now)
        self._pump(now)

    def _from_revoked_box(self, request: Request, source: Address) -> bool:
        """A call another box handed on (Meshsip-Hop) from a box whose certificate is
        revoked: refused (403), counted; it must not reach our phones through stale
        records it still holds."""
        if self.mesh is None or not self.mesh.revoked_box(request.get(HOP_HEADER) or ""):
            return False
        self.counters["revoked_box_requests"] += 1
        if request.method != "ACK":
            self.transport.send(make_response(request, 403, "Box Revoked").encode(), source)
        return True

    def _on_send_error(self, dest: Address, exc: Exception) -> None:
        """A message could not be sent (TCP refused, ...): its client transaction fails now."""
        now = asyncio.get_running_loop().time()
        log.info("cannot reach %s %s:%d: %s", *dest, exc.__cause__ or exc)
        data = exc.data if isinstance(exc, SendError) else None
        try:
            key = client_key_of(parse_message(data)) if data else None
        except SipParseError:
            key = None
        if key is not None:
            self.txl.client_transport_error(key, now)
            self._pump(now)

    def _resolve(self, hosts: list[str], done: Callable[[float], None]) -> bool:
        names = self.resolver.unknown(hosts)
        if not names:
            return False

        def resolved(now: float) -> None:
            done(now)
            self._pump(now)

        self.resolver.resolve(names, resolved)
        return True

    def _pump(self, now: float) -> None:
        while (event := self.txl.next_event()) is not None:
            try:
                self.proxy.handle(event, now)
            except SipParseError as exc:
                # Parsed headers are validated, so this is a semantic slip; never fatal.
                log.warning("dropped %s: %s", type(event).__name__, exc.reason)
        for data, dest in self.txl.messages_to_send():
            self.transport.send(data, dest)
        self._arm_timer()

    def _arm_timer(self) -> None:
        self._wakeup.at(min(
            (t for t in (self.txl.get_timer(), self.proxy.get_timer()) if t is not None),
            default=None))

    def _on_timer(self) -> None:
        now = asyncio.get_running_loop().time()
        self.txl.handle_timer(now)
        self.proxy.handle_timer(now)
        self._pump(now)

    def _local_address(self, peer: Address) -> Address:
        transport, ip, _ = peer
        if self.config.bind not in ("0.0.0.0", "::", ""):
            local = self.config.bind
        else:
            local = self._local_ips.get(ip)
            if local is None:
                if len(self._local_ips) > 4096:
                    self._local_ips.clear()
                local = self._local_ips[ip] = local_ip_for(ip)
        port = self.transport.tls_port if transport == "TLS" else self.transport.local_port
        return (transport, local, port)

    # -- status ---------------------------------------------------------------------------
    def uptime_seconds(self) -> int:
        return int(time.monotonic() - self.started_at)

    def status(self) -> dict[str, Any]:
        now = asyncio.get_running_loop().time()
        registrations = [
            {"extension": b.extension, "contact": b.contact, "expires_in": int(b.expires_at - now),
             "source": f"{b.source[0]} {b.source[1]}:{b.source[2]}"}
            for ext in sorted(self.location.bindings)
            for b in self.location.lookup(ext, now)
        ]
        return {
            "node": {
                "sip_port": self.transport.local_port, "tls_port": self.transport.tls_port,
                "bind": self.config.bind,
                "data_dir": str(self.data_dir), "policy": self.config.policy,
                "uptime_seconds": self.uptime_seconds(), "pid": os.getpid(),
            },
            "registrations": registrations,
            "calls": self.proxy.status(now),
            "counters": self.counters | self.proxy.counters | self.transport.counters
            | self.txl.stats | self.resolver.stats | self.location.stats
            | {"sip_rate_limited": self.sip_limiter.refused,
               "refreshes_in_lane": self.refresh_lane.answered},
            "overlay": self.mesh.status() if self.mesh is not None else None,
            "sip_addresses": self.own.status(),
            "enroll": self.onboard.status(),
        }


async def serve(config: Config, stop: asyncio.Event) -> None:
    node = Node(config)
    await node.start()
    try:
        await stop.wait()
    finally:
        await node.stop()
