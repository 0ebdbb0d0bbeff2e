"""SIP plug-and-play (RFC 6080): desk phones multicast a `SUBSCRIBE` (`Event: ua-profile`,
their MAC in the Request-URI) to 224.0.1.75:5060 at boot; the box answers `200` and a
`NOTIFY` whose `application/url` body is where the phone fetches its file.

The listening socket is bound to the group address, not 0.0.0.0: a wildcard socket on
port 5060 would swallow the registrar's unicast traffic (FIELD-NOTES). It joins the group
on each IPv4 address of the box's links (joining with INADDR_ANY fails without a
multicast route). Answers leave from the SIP socket, to the source address and port (a
Snom's Via has no branch and names `intern.snom.de`). Anything else on the group is
dropped and counted.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from overlay.sip.errors import SipParseError
from overlay.sip.message import Request, parse_message
from overlay.sip.responses import make_response
from overlay.sip.routing import Address, new_branch, new_tag

from .files import normal_mac, vendor_of

log = logging.getLogger("meshsip.onboard")
GROUP = "224.0.1.75"
MAX_DATAGRAM = 8192


@dataclass(frozen=True)
class Subscribe:
    """A phone that asked: its MAC, vendor (None: unknown), where it answers."""

    mac: str
    vendor: str | None
    source: Address
    request: Request


# (subscribe) -> (the URL for it, the box's address the phone reaches us at) or None
Answer = Callable[[Subscribe], "tuple[str, str] | None"]


def parse_subscribe(data: bytes, source: Address) -> Subscribe | str:
    """The PnP SUBSCRIBE in `data`, or why it is not one (a counter name)."""
    try:
        request = parse_message(data)
    except SipParseError:
        return "pnp_unparsable"
    if not isinstance(request, Request) or request.method != "SUBSCRIBE":
        return "pnp_not_subscribe"
    event = request.get("Event") or ""
    if event.split(";", 1)[0].strip().lower() != "ua-profile":
        return "pnp_other_event"
    mac = normal_mac(getattr(request.uri, "user", None) or "")
    if mac is None:
        return "pnp_no_mac"
    hint = event.lower().split("vendor=", 1)[1] if "vendor=" in event.lower() else ""
    return Subscribe(mac, vendor_of(request.get("User-Agent") or "", hint), source, request)


def ok_response(sub: Subscribe, tag: str) -> bytes:
    response = make_response(sub.request, 200, None, tag)
    response.add("Expires", "0")
    response.add("Content-Length", "0")
    return response.encode()


def _target(sub: Subscribe) -> str:
    """The NOTIFY's Request-URI: the phone's Contact, else its source address (it is sent
    to the source address either way)."""
    contacts = sub.request.contact_views
    if contacts and contacts[0] is not None:
        return str(contacts[0].uri)
    return f"sip:{sub.mac}@{sub.source[1]}:{sub.source[2]}"


def notify(sub: Subscribe, tag: str, local: str, port: int, url: str) -> bytes:
    """The NOTIFY in the subscription's dialog carrying `url`."""
    req = sub.request
    body = url.encode()
    lines = [f"NOTIFY {_target(sub)} SIP/2.0",
             f"Via: SIP/2.0/UDP {local}:{port};branch={new_branch()}",
             "Max-Forwards: 70",
             f"From: {req.get('To')};tag={tag}",
             f"To: {req.get('From')}",
             f"Call-ID: {req.call_id}",
             "CSeq: 1 NOTIFY",
             f"Contact: <sip:{local}:{port}>",
             "Event: ua-profile",
             "Subscription-State: terminated;reason=timeout",
             "Content-Type: application/url",
             f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


def check_sync(mac: str, phone: Address, local: str, port: int) -> bytes:
    """An out-of-dialog NOTIFY that makes the phone fetch its file again (re-provisioning)."""
    lines = [f"NOTIFY sip:{mac}@{phone[1]}:{phone[2]} SIP/2.0",
             f"Via: SIP/2.0/UDP {local}:{port};branch={new_branch()}",
             "Max-Forwards: 70",
             f"From: <sip:provisioning@{local}>;tag={new_tag()}",
             f"To: <sip:{mac}@{phone[1]}>",
             f"Call-ID: {new_tag()}{new_tag()}@{local}",
             "CSeq: 1 NOTIFY",
             "Event: check-sync;reboot=true",
             "Subscription-State: terminated",
             "Content-Length: 0"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class PnpListener(asyncio.DatagramProtocol):
    """The group socket; `answer` decides, `send` sends from the SIP socket."""

    def __init__(self, answer: Answer, send: Callable[[bytes, Address], None],
                 sip_port: int, port: int = 5060) -> None:
        self.answer, self.send, self.sip_port, self.port = answer, send, sip_port, port
        self.counters: Counter[str] = Counter()
        self._sock: socket.socket | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self.joined: set[str] = set()

    async def start(self, addresses: list[str]) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((GROUP, self.port))
        sock.setblocking(False)
        self._sock = sock
        self.join(addresses)
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(lambda: self, sock=sock)

    def join(self, addresses: list[str]) -> None:
        """Join the group on each new IPv4 link address (on a link change too)."""
        if self._sock is None:
            return
        for ip in addresses:
            if ip in self.joined or ":" in ip or ip.startswith("127."):
                continue
            mreq = socket.inet_aton(GROUP) + socket.inet_aton(ip)
            try:
                self._sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
                self.joined.add(ip)
            except OSError as exc:
                log.warning("cannot join SIP plug-and-play group on %s: %s", ip, exc.strerror)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        elif self._sock is not None:
            self._sock.close()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        sub = parse_subscribe(data[:MAX_DATAGRAM], ("UDP", addr[0], addr[1]))
        if isinstance(sub, str):
            self.counters[sub] += 1
            return
        found = self.answer(sub)
        if found is None:
            self.counters["pnp_refused"] += 1
            return
        url, local = found
        tag = new_tag()
        self.send(ok_response(sub, tag), sub.source)
        self.send(notify(sub, tag, local, self.sip_port, url), sub.source)
        self.counters["pnp_answered"] += 1
        log.info("plug-and-play: %s phone %s at %s gets %s", sub.vendor or "a", sub.mac,
                 addr[0], url)
