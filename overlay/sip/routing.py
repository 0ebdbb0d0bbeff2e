"""Where SIP messages go: Via stamping (RFC 3581 rport), response and request targets.

Host names are never looked up here: the caller passes what it already knows
(overlay/sip/resolver.py resolves them off the event loop first).
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
from collections.abc import Callable, Iterator

from .message import Request, Response, Via
from .transaction import MAGIC_COOKIE, Address
from .uri import Uri

DEFAULT_PORT = 5060
DEFAULT_TLS_PORT = 5061


def new_branch() -> str:
    return MAGIC_COOKIE + _random_hex(16)


def new_tag() -> str:
    """A To or From tag: 48 random bits (RFC 3261 19.3 asks for 32 at least)."""
    return _random_hex(12)


def _hex_blocks() -> Iterator[str]:
    while True:  # one read of the system's CSPRNG serves a few hundred tags
        yield secrets.token_hex(2048)


_BLOCKS = _hex_blocks()
_hex = next(_BLOCKS)
_at = 0


def _random_hex(n: int) -> str:
    global _hex, _at
    if _at + n > len(_hex):
        _hex, _at = next(_BLOCKS), 0
    _at += n
    return _hex[_at - n : _at]


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
    via = stamped_via(request._top_via_view(), source)
    if via is not None:
        request.headers[_first_index(request, "Via")] = ("Via", str(via))


def stamped_via(via: Via, source: Address) -> Via | None:
    """`via` (left unchanged) with what `stamp_via_params` adds, or None when it adds
    nothing."""
    params = dict(via.params)
    if not stamp_via_params(params, via.host, source):
        return None
    return Via(via.transport, via.host, via.port, params)


def stamp_via_params(params: dict[str, str | None], host: str, source: Address) -> bool:
    """Add to the parameters of a top Via sent from `host` the received and rport of a
    request that came from `source`; False when it needs neither."""
    _, ip, port = source
    if host == ip and "rport" not in params:
        return False
    if host != ip:
        params["received"] = ip
    if "rport" in params:
        params["rport"] = str(port)
        params.setdefault("received", ip)
    return True


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
