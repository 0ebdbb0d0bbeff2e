"""Phones onboard themselves: the box's side (plug-and-play, provisioning files, tokens).

Who gets a file with a password (never the whole world):
- enrolment is open for `[enroll] window` seconds after the box starts, and again when an
  operator opens it (`meshsip enroll --open 10m`); outside it only phones that already
  hold an extension here get their file again;
- only phones on the box's own links: the HTTP client's address must be in the box's
  neighbour (ARP) table, i.e. on a link the box serves, never routed from afar;
- a `<mac>` file goes to one phone: the address that asked for that MAC through
  plug-and-play, or the client whose own MAC (in the neighbour table) it is (a phone
  sent by DHCP option 66); a Linphone file to the holder of its one-time token.
Anything else gets 403 and no password. Tables keyed by network input are bounded.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import secrets
from collections import Counter, OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from overlay.links import snapshot
from overlay.sip.routing import Address, local_ip_for

from ..web.http import Request, Response
from .alloc import ALLOC_PREFIX, Allocator, password_for
from .files import Account, render, wanted, yealink_common
from .panel import render_panel
from .pnp import PnpListener, Subscribe, check_sync

if TYPE_CHECKING:
    from ..node import Node

log = logging.getLogger("meshsip.onboard")
PROV = "/prov/"
SIP_SERVICE = "_sip._udp.local."  # DNS-SD: the box's SIP service, on the links mDNS uses
ASKED_MAX = 1024  # phones remembered from plug-and-play (oldest forgotten first)
TOKENS_MAX = 64  # one-time Linphone tokens outstanding
ARP = Path("/proc/net/arp")


def neighbours(path: Path = ARP) -> dict[str, str]:
    """IPv4 address -> MAC of the complete entries in the kernel's neighbour table."""
    table = {}
    try:
        lines = path.read_text().splitlines()[1:]
    except OSError:
        return table
    for line in lines:
        f = line.split()
        if len(f) >= 4 and int(f[2], 16) & 0x2:
            table[f[0]] = f[3].replace(":", "").lower()
    return table


class AllocatedUsers(dict[str, str]):
    """The users file, plus every allocated extension with its derived password (digest
    mode: a provisioned phone registers on any box that shares the `[enroll] secret`)."""

    def __init__(self, users: dict[str, str], allocator: Allocator, secret: bytes) -> None:
        super().__init__(users)
        self.allocator, self.secret = allocator, secret

    def get(self, key: str, default: Any = None) -> Any:
        found = super().get(key)
        if found is None and self.allocator.in_range(key):
            return password_for(self.secret, key)
        return default if found is None else found


class Onboarding:
    def __init__(self, node: Node) -> None:
        c = node.config
        self.node = node
        self.secret = (c.enroll_secret.encode() if c.enroll_secret else
                       hashlib.sha256(node.identity.sign(b"meshsip enroll secret")).digest())
        self.allocator = Allocator(self._claim, node.data_dir / "allocations.json",
                                   c.enroll_first, c.enroll_last)
        self.counters: Counter[str] = Counter()
        self.asked: OrderedDict[str, Address] = OrderedDict()  # MAC -> phone's SIP address
        self.tokens: OrderedDict[str, str] = OrderedDict()  # token -> phone key
        self.open_until = 0.0
        self.shown: tuple[str, str] | None = None  # the latest unused Linphone link, ext
        self.window = c.enroll_window
        self.pnp = PnpListener(self._answer, node.transport.send, c.sip_port)
        node.web.routes.add_prefix(PROV, self._serve)
        node.control.commands.update({"enroll-open": self.open_for,
                                      "enroll-linphone": self.linphone_token,
                                      "enroll-status": self.status})
        auth = node.location.auth
        if auth is not None:
            auth.users = AllocatedUsers(auth.users, self.allocator, self.secret)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.open_until = loop.time() + self.window
        self.allocator.load()
        task = loop.create_task(self.allocator.restore())
        self.node._tasks.append(task)
        task.add_done_callback(self.node._tasks.remove)
        if self.node.config.discovery:  # multicast only where discovery may multicast
            try:
                await self.pnp.start([ip for ips in snapshot().values() for ip in ips])
            except OSError as exc:
                log.warning("no SIP plug-and-play (port 5060 on %s): %s", "224.0.1.75",
                            exc.strerror)

    def links_changed(self, addresses: dict[str, list[str]]) -> None:
        self.pnp.join([ip for ips in addresses.values() for ip in ips])

    def close(self) -> None:
        self.pnp.close()

    async def _claim(self, aor: str, instance: str, verified: bool) -> str:
        mesh = self.node.mesh
        assert mesh is not None
        return await mesh.claim(aor, instance, verified)

    # -- the window ---------------------------------------------------------------------------
    def is_open(self) -> bool:
        return asyncio.get_running_loop().time() < self.open_until

    def open_for(self, seconds: str = "600") -> dict[str, Any]:
        """`meshsip enroll --open`: enrolment open for `seconds` from now (0 closes it)."""
        try:
            span = max(0.0, min(float(seconds), 7 * 86400.0))
        except ValueError:
            return {"error": f"not a number of seconds: {seconds!r}"}
        self.open_until = asyncio.get_running_loop().time() + span
        log.info("enrolment %s", f"open for {span:.0f} s" if span else "closed")
        return self.status()

    def status(self) -> dict[str, Any]:
        left = self.open_until - asyncio.get_running_loop().time()
        return {"open": left > 0, "open_seconds_left": max(0, math.ceil(left)),
                "allocations": len(self.allocator.by_key),
                "extensions": f"{self.allocator.first}-{self.allocator.last}",
                "counters": dict(self.counters + self.pnp.counters) | self.allocator.stats}

    def panel(self) -> str:
        """HTML for the status page's "Add a phone" part."""
        mesh = self.node.mesh
        return render_panel(self.shown, self.status(),
                            mesh.service.ref.host if mesh else self.node.config.bind)

    # -- plug-and-play -------------------------------------------------------------------------
    def _answer(self, sub: Subscribe) -> tuple[str, str] | None:
        if not self.is_open() and sub.mac not in self.allocator.by_key:
            return None
        self.asked[sub.mac] = sub.source
        self.asked.move_to_end(sub.mac)
        while len(self.asked) > ASKED_MAX:
            self.asked.popitem(last=False)
        local = local_ip_for(sub.source[1])
        base = self._base(local)
        url = {"grandstream": base, "snom": base + "{mac}.xml"}.get(sub.vendor or "", base)
        return url, local

    def _base(self, local: str) -> str:
        port = self.node.web.server.port
        return f"http://{local}{'' if port == 80 else f':{port}'}{PROV}"

    def lost(self, aor: str) -> None:
        """The mesh gave one of our allocations to another box's phone (a partition
        healed): our phone is told to fetch its file again, and gets another number."""
        key = self.allocator.lost(aor)
        phone = self.asked.get(key) if key is not None else None
        if key is None or phone is None:
            return
        local = local_ip_for(phone[1])
        self.node.transport.send(check_sync(key, phone, local, self.node.config.sip_port),
                                 phone)
        self.counters["check_sync_sent"] += 1

    # -- files ---------------------------------------------------------------------------------
    async def _serve(self, request: Request) -> Response:
        name = request.path.removeprefix(PROV)
        agent = request.headers.get("user-agent", "")
        if name.startswith("linphone/") and name.endswith(".xml"):
            return await self._linphone(request, name[len("linphone/"):-len(".xml")])
        what = wanted(name, agent)
        if what is None:
            return Response.text(404, "No such provisioning file")
        vendor, mac = what
        if mac is None:
            text, kind = yealink_common()
            return Response(200, text.encode(), kind)
        refusal = self._refusal(mac, request.peer)
        if refusal is not None:
            self.counters["files_refused"] += 1
            log.warning("no provisioning file for %s to %s: %s", mac, request.peer, refusal)
            return Response.text(403, refusal)
        return await self._file(vendor, mac, request.peer)

    def _refusal(self, mac: str, peer: str) -> str | None:
        if not self.is_open() and mac not in self.allocator.by_key:
            return "Enrolment is closed (meshsip enroll --open 10m opens it)"
        table = neighbours()
        if peer not in table:
            return "Only phones on this box's own links are provisioned"
        asked = self.asked.get(mac)
        if (asked is None or asked[1] != peer) and table[peer] != mac:
            return "This file is for another phone"
        return None

    async def _file(self, vendor: str, key: str, peer: str) -> Response:
        extension = await self.allocator.allocate(key)
        if extension is None:
            return Response.text(503, "No free extension")
        account = Account(extension, password_for(self.secret, extension), local_ip_for(peer),
                          self.node.config.sip_port, self.node.config.realm)
        text, kind = render(vendor, account)
        self.counters["files_served"] += 1
        log.info("provisioned %s phone %s at %s as %s", vendor, key, peer, extension)
        return Response(200, text.encode(), kind)

    # -- softphones: one-time tokens ----------------------------------------------------------
    async def linphone_token(self) -> dict[str, Any]:
        """`meshsip enroll --linphone`: a one-time URL for one Linphone, its extension
        allocated now (so the operator can tell the user their number)."""
        token = secrets.token_urlsafe(12)
        key = "linphone-" + hashlib.sha256(token.encode()).hexdigest()[:12]
        extension = await self.allocator.allocate(key)
        if extension is None:
            return {"error": "no free extension"}
        self.tokens[token] = key
        while len(self.tokens) > TOKENS_MAX:
            self.tokens.popitem(last=False)
        host = self.node.mesh.service.ref.host if self.node.mesh else self.node.config.bind
        url = f"{self._base(host)}linphone/{token}.xml"
        self.shown = (url, extension)
        return {"url": url, "extension": extension}

    async def _linphone(self, request: Request, token: str) -> Response:
        key = self.tokens.pop(token, None)  # one time: a second fetch gets nothing
        if self.shown is not None and token in self.shown[0]:
            self.shown = None
        if key is None:
            self.counters["files_refused"] += 1
            return Response.text(403, "Unknown or used enrolment link")
        return await self._file("linphone", key, request.peer)


def on_lost(node: Node, onboarding: Onboarding) -> Any:
    """The mesh's `on_lost`: allocations to `onboarding`, extensions to the registrar."""
    def lost(aor: str) -> None:
        if aor.startswith(ALLOC_PREFIX):
            onboarding.lost(aor)
        else:
            node.location.drop(aor)
    return lost
