"""This box as a hop: what it writes into messages it passes on and how it knows its own.

One home for the marks every part of the proxy shares: the Via it inserts (and whether a
response's top Via is one of them), its Record-Route, whether a URI names this box (RFC 3261
16.4, with addresses.py), the address of a next hop, and the copies a hop sends on.
"""

from __future__ import annotations

from collections.abc import Callable

from overlay.sip.message import Request, Response
from overlay.sip.routing import DEFAULT_PORT, Address, literal_address, uri_address
from overlay.sip.uri import Uri, parse_name_addr, uri_host

from ..addresses import OwnAddresses

# Where this node can be reached by the peer at a given IP: (transport, local ip, port).
LocalAddress = Callable[[Address], Address]


class Hops:
    def __init__(self, local_address: LocalAddress, token: str, own: OwnAddresses) -> None:
        self.local_address = local_address
        self.token = token  # marks our own Record-Route entries
        self.own = own
        self.address: Callable[[str], str | None] = literal_address  # host -> IP, no waiting
        self._sent_by: set[tuple[str, int]] = set()  # every Via sent-by we have inserted

    def uri_address(self, uri: Uri) -> Address | None:
        return uri_address(uri, self.address)

    def names_me(self, uri: Uri) -> bool:
        """Whether a URI names this box (any of its addresses or names)."""
        return uri.is_sip and self.own.is_me(uri.host, uri.port, self.address(uri.host))

    def is_own_name(self, host: str) -> bool:
        return self.own.is_own_name(host)

    def is_our_record_route(self, uri: Uri) -> bool:
        """Whether a Record-Route (or Route) URI is one this box put in (by its token)."""
        return uri.params.get("ms") == self.token

    def via(self, dest: Address, branch: str) -> str:
        transport, ip, port = self.local_address(dest)
        self._sent_by.add((uri_host(ip).lower(), port))
        return f"SIP/2.0/{transport} {uri_host(ip)}:{port};branch={branch};rport"

    def sent_by_us(self, response: Response, source: Address) -> bool:
        """Whether the top Via is one we put in (a value `via` inserted, or would insert
        toward the response's sender: that covers requests sent before a restart)."""
        host, port = response.via_sent_by
        sent_by = (host.lower(), port or DEFAULT_PORT)
        if sent_by in self._sent_by:
            return True
        _, ip, port = self.local_address(source)
        return sent_by == (uri_host(ip).lower(), port)

    def record_route(self, source: Address, dest: Address) -> list[str]:
        """Our Record-Route values for a request from `source` to `dest`, topmost first:
        one, naming the upstream side (phones on both sides of one box share its
        addresses), or two when one side is TLS and the other is not (RFC 5658): each
        side then reaches the box on its own transport and port."""
        upstream = self._record_route(source)
        if (source[0] == "TLS") == (dest[0] == "TLS"):
            return [upstream]
        return [self._record_route(dest), upstream]

    def _record_route(self, peer: Address) -> str:
        _, ip, port = self.local_address(peer)
        transport = {"TCP": ";transport=tcp", "TLS": ";transport=tls"}.get(peer[0], "")
        return f"<sip:{uri_host(ip)}:{port};lr;ms={self.token}{transport}>"


def next_hop_uri(request: Request) -> Uri:
    """Where a request goes next: its top Route, else its Request-URI."""
    route = request.get("Route")
    return parse_name_addr(route, "Route").uri if route else request.uri


def copy_request(message: Request) -> Request:
    return Request(message.method, message.uri.copy(), list(message.headers), message.body)


def strip_top_via(response: Response) -> Response:
    out = Response(response.status, response.reason, list(response.headers), response.body)
    out.pop_first("Via")
    return out
