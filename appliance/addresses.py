"""Which SIP addresses are this box: the one home for "is this host:port me".

A phone with the box as its outbound proxy sends `Route: <sip:BOX:5060;lr>` and dials
`sip:1002@BOX`, naming the box by whatever the user typed: an address of any interface,
its host name, its `.local` name. The proxy must see that these name itself (RFC 3261 16.4),
or it forwards the request to itself until Max-Forwards runs out.

A box bound to one address answers on that address only. A box bound to all addresses
(0.0.0.0 or ::) answers on each local address, loopback included, and on addresses that
appear later: `set_links` takes each new snapshot of the link watcher. The port must be the
SIP port (5060 when the URI has none): a Route to another port of the same IP is another
server. A name is the box when it is one of its own names (`names`: the host name, with and
without `.local`, and the mDNS host name); any other name is the box when it resolves to
one of its addresses (the caller resolves it, without blocking, and passes the address).
The FQDN is not asked for: socket.getfqdn() asks DNS, which does not answer in the field.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

WILDCARDS = ("0.0.0.0", "::", "")
DEFAULT_PORT = 5060


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return None


def _name(host: str) -> str:
    return host.rstrip(".").lower()


def default_names(mdns_host: str | None = None) -> list[str]:
    """The box's own host names: `hostname`, `hostname.local` and the mDNS host name."""
    host = socket.gethostname()
    names = [host, f"{host.split('.')[0]}.local"]
    if mdns_host:
        names.append(mdns_host)
    return names


class OwnAddresses:
    def __init__(self, bind: str, port: int, names: Iterable[str] = ()) -> None:
        self.port = port  # the SIP port (set again once the socket is bound)
        self.tls_port = 0  # the SIP over TLS port (0: none)
        self.wildcard = bind in WILDCARDS
        self._bound = _ip(bind) if not self.wildcard else None
        self._links: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
        self.names: set[str] = set()
        self.add_names(names)

    def add_names(self, names: Iterable[str]) -> None:
        self.names.update(_name(n) for n in names if n)
        if self.wildcard:
            self.names.add("localhost")

    def set_links(self, addresses: dict[str, list[str]]) -> None:
        """The link watcher's snapshot ({interface: [addresses]}), replacing the last."""
        self._links = {ip for ips in addresses.values() for ip in map(_ip, ips)
                       if ip is not None}

    def is_own_name(self, host: str) -> bool:
        return _name(host) in self.names

    def is_own_ip(self, host: str) -> bool:
        ip = _ip(host)
        if ip is None:
            return False
        if not self.wildcard:
            return ip == self._bound
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return ip.is_loopback or ip in self._links

    def is_me(self, host: str, port: int | None, resolved: str | None = None) -> bool:
        """Whether a SIP URI with this host and port names this box; `resolved` is the
        host's address when it is a name that was looked up."""
        if (port or DEFAULT_PORT) not in (self.port, self.tls_port):
            return False
        if _ip(host) is not None:
            return self.is_own_ip(host)
        return self.is_own_name(host) or (resolved is not None and self.is_own_ip(resolved))

    def status(self) -> dict[str, object]:
        return {"port": self.port, "addresses": sorted(map(str, self._links))
                if self.wildcard else [str(self._bound)], "names": sorted(self.names)}
