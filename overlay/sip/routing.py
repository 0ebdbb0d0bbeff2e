"""Where SIP messages go: Via stamping (RFC 3581 rport), response and request targets.

Host names are never looked up here: the caller passes what it already knows
(overlay/sip/resolver.py resolves them off the event loop first).
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
from collections.abc import Callable

from .message import Request, Response, Via
from .transaction import MAGIC_COOKIE, Address
from .uri import Uri

DEFAULT_PORT = 5060
DEFAULT_TLS_PORT = 5061


def new_branch() -> str:
    return MAGIC_COOKIE + secrets.token_hex(8)


def new_tag() -> str:
    return secrets.token_hex(6)


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def literal_address(host: str) -> str | None:
    """The address an IP-literal host names (brackets dropped); None for a name."""
    return host.strip("[]") if is_ip(host) else None


def stamp_via(request: Request, source: Address) -> None:
    """Record where a request really came from in its top Via (RFC 3261 18.2.1, RFC 3581)."""
    via = request._top_via_view()  # shared with the message: changed on a copy only
    _, ip, port = source
    if via.host == ip and "rport" not in via.params:
        return
    via = request.top_via
    if via.host != ip:
        via.params["received"] = ip
    if "rport" in via.params:
        via.params["rport"] = str(port)
        via.params.setdefault("received", ip)
    request.headers[_first_index(request, "Via")] = ("Via", str(via))


def _first_index(message: Request | Response, name: str) -> int:
    return next(i for i, (n, _) in enumerate(message.headers) if n == name)


def via_address(via: Via) -> Address:
    """Where a response travelling back along `via` goes (RFC 3261 18.2.2, RFC 3581 4)."""
    host = via.params.get("received") or via.host
    rport = via.params.get("rport")
    transport = via.transport if via.transport in ("TCP", "TLS") else "UDP"
    default = DEFAULT_TLS_PORT if transport == "TLS" else DEFAULT_PORT
    port = int(rport) if rport else via.port or default
    return (transport, host.strip("[]"), port)


def uri_address(uri: Uri, address: Callable[[str], str | None]) -> Address | None:
    """The transport address a request for `uri` is sent to, or None when unresolvable;
    `address` maps the host (an IP literal or a name) to an IP without blocking."""
    if not uri.is_sip:
        return None
    ip = address(uri.host)
    if ip is None:
        return None
    # RFC 3261 26.2: a sips URI is TLS, whatever its transport parameter says
    transport = "TLS" if uri.scheme == "sips" else uri.transport
    transport = transport if transport in ("TCP", "TLS") else "UDP"
    return (transport, ip, uri.port or (DEFAULT_TLS_PORT if transport == "TLS" else DEFAULT_PORT))


def local_ip_for(peer_ip: str) -> str:
    """The local address the kernel would use to reach `peer_ip` (no packet is sent)."""
    family = socket.AF_INET6 if ":" in peer_ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect((peer_ip, 9))
            return str(sock.getsockname()[0])
        except OSError:
            return "127.0.0.1" if family == socket.AF_INET else "::1"
