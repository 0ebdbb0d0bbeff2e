"""A box knows itself in Route and Request-URI (RFC 3261 16.4): OwnAddresses, and the proxy
driven sans-IO with outbound-proxy Routes by address, by name and to other ports."""

from __future__ import annotations

from collections.abc import Callable

from test_proxy import CALLER, PHONE_A, Bed, invite, split

from appliance.addresses import OwnAddresses
from appliance.proxy import Proxy
from overlay.sip.message import Request, Response

BOX = "10.99.0.1"


# -- OwnAddresses -------------------------------------------------------------------------------
def test_a_box_bound_to_one_address_is_that_address_and_port_only() -> None:
    own = OwnAddresses(BOX, 5060, ["box1", "box1.local"])
    assert own.is_me(BOX, 5060) and own.is_me(BOX, None)  # no port: 5060
    assert not own.is_me(BOX, 5070)  # another server on the same IP
    assert not own.is_me("10.99.0.2", 5060)
    assert not own.is_me("127.0.0.1", 5060)  # it does not answer there
    assert own.is_me("BOX1.local.", 5060) and own.is_me("box1", None)
    assert not own.is_me("box1", 5070)
    assert not own.is_me("pbx.example", 5060)
    assert own.is_me("pbx.example", 5060, resolved=BOX)
    assert not own.is_me("pbx.example", 5060, resolved="10.99.0.7")


def test_a_box_bound_to_all_addresses_follows_its_links() -> None:
    own = OwnAddresses("0.0.0.0", 5062)
    own.set_links({"eth0": ["10.99.1.1"], "eth1": ["10.99.2.1", "fe80::1"]})
    for host in ("10.99.1.1", "10.99.2.1", "[fe80::1]", "127.0.0.1", "127.0.1.1", "[::1]",
                 "localhost", "[::ffff:10.99.2.1]"):
        assert own.is_me(host, 5062), host
    assert not own.is_me("10.99.1.1", 5060)
    assert not own.is_me("10.99.3.1", 5062)
    own.set_links({"eth0": ["10.99.1.1"], "wlan0": ["10.99.3.1"]})  # one came, one went
    assert own.is_me("10.99.3.1", 5062) and not own.is_me("10.99.2.1", 5062)


# -- the proxy ----------------------------------------------------------------------------
class OwnBed(Bed):
    """test_proxy's bed, with the box's own addresses and a resolver the test drives."""

    def __init__(self, own: OwnAddresses | None = None,
                 names: dict[str, str | None] | None = None, later: bool = False) -> None:
        super().__init__()
        self.own = own or OwnAddresses(BOX, 5060, ["box1", "box1.local"])
        self.proxy = Proxy(self.txl, self.location, lambda p: (p[0], BOX, 5060), "tok",
                           self.own)
        self.names = names or {}
        self.known: dict[str, str | None] = {}
        self.waiting: list[tuple[list[str], Callable[[float], None]]] = []
        self.later = later
        self.proxy.address = self.address
        self.proxy.resolve = self.resolve

    def address(self, host: str) -> str | None:
        return self.known.get(host, host if host[0].isdigit() or host[0] == "[" else None)

    def resolve(self, hosts: list[str], done: Callable[[float], None]) -> bool:
        todo = [h for h in hosts if h not in self.known]
        if not todo:
            return False
        self.waiting.append((todo, done))
        if not self.later:
            self._answer()
        return True

    def _answer(self) -> None:
        for hosts, done in self.waiting:
            self.known.update({h: self.names.get(h) for h in hosts})
            done(self.now)
        self.waiting.clear()

    def finish(self) -> list:
        """The lookups answer now; what the proxy sent then."""
        self._answer()
        return self.pump()


def routed(route: str, callee: str = "1002", **kw: object) -> bytes:
    return invite(callee, extra=f"Route: {route}\r\n", **kw)  # type: ignore[arg-type]


def forwarded(out: list) -> list[tuple[Request, tuple[str, str, int]]]:
    return [(m, a) for m, a in out if isinstance(m, Request)]


def test_outbound_proxy_route_by_address_is_removed_and_the_call_routed() -> None:
    for route in (f"<sip:{BOX}:5060;lr>", f"<sip:{BOX};lr>", f"<sip:{BOX}:5060;lr>, "
                  f"<sip:{BOX};lr;ms=tok>"):
        bed = OwnBed()
        bed.register("1002", PHONE_A)
        out = bed.deliver(routed(route), CALLER)
        up, down = split(out)
        assert up == [100], route
        (request,) = down[PHONE_A]
        assert request.get("Route") is None and request.max_forwards == 69, route


def test_route_to_another_port_of_the_same_address_is_another_server() -> None:
    bed = OwnBed()
    bed.register("1002", PHONE_A)
    up, down = split(bed.deliver(routed(f"<sip:{BOX}:5070;lr>"), CALLER))
    assert up == [100]
    assert list(down) == [("UDP", BOX, 5070)]
    assert down[("UDP", BOX, 5070)][0].get("Route") == f"<sip:{BOX}:5070;lr>"


def test_route_by_own_name_needs_no_lookup() -> None:
    bed = OwnBed()
    bed.register("1002", PHONE_A)
    up, down = split(bed.deliver(routed("<sip:box1.local:5060;lr>"), CALLER))
    assert up == [100] and list(down) == [PHONE_A]
    assert bed.known == {}  # nothing was looked up


def test_route_by_a_name_that_resolves_to_the_box_or_elsewhere() -> None:
    bed = OwnBed(names={"pbx.lan": BOX, "other.lan": "10.99.0.9"}, later=True)
    bed.register("1002", PHONE_A)
    assert split(bed.deliver(routed("<sip:pbx.lan;lr>"), CALLER)) == ([], {})  # waits
    up, down = split(bed.finish())
    assert up == [100] and list(down) == [PHONE_A]
    up, down = split(bed.deliver(routed("<sip:other.lan;lr>", branch="z9hG4bK2"), CALLER))
    assert bed.waiting and up == []
    up, down = split(bed.finish())
    assert up == [100] and list(down) == [("UDP", "10.99.0.9", 5060)]


def test_a_name_that_does_not_resolve_gets_503_naming_it() -> None:
    bed = OwnBed(names={})
    bed.register("1002", PHONE_A)
    out = bed.deliver(routed("<sip:nowhere.invalid;lr>"), CALLER)
    responses = [m for m, a in out if isinstance(m, Response)]
    assert [r.status for r in responses] == [100, 503]
    assert "nowhere.invalid" in responses[1].reason
    assert not forwarded(out)


def test_cancel_while_the_name_is_looked_up_ends_the_invite_and_nothing_is_sent() -> None:
    bed = OwnBed(names={"other.lan": "10.99.0.9"}, later=True)
    bed.deliver(routed("<sip:other.lan;lr>"), CALLER)
    cancel = invite(method="CANCEL", extra="Route: <sip:other.lan;lr>\r\n")
    up, _ = split(bed.deliver(cancel, CALLER))
    assert sorted(up) == [200, 487]
    up, down = split(bed.finish())
    assert up == [] and down == {}


def test_in_dialog_request_uri_naming_the_box_is_for_its_own_phones() -> None:
    bed = OwnBed()
    bed.register("1002", PHONE_A)
    info = invite(method="INFO").replace(b"To: <sip:1002@10.99.0.1>",
                                         b"To: <sip:1002@10.99.0.1>;tag=x")
    up, down = split(bed.deliver(info, CALLER))
    assert list(down) == [PHONE_A]  # not to the box itself
    ping = info.replace(b"INFO sip:1002@", b"INFO sip:").replace(b"branch=z9hG4bKinv",
                                                                 b"branch=z9hG4bKi2")
    up, down = split(bed.deliver(ping, CALLER))
    assert down == {} and up and up[-1] >= 400  # answered by the box


def test_stateless_ack_for_the_box_itself_is_dropped_not_looped() -> None:
    bed = OwnBed()
    ack = (f"ACK sip:{BOX}:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.99.0.11:5062;branch=z9hG4bKa\r\n"
           f"Route: <sip:{BOX};lr>\r\nFrom: <sip:1001@x>;tag=a\r\nTo: <sip:1002@x>;tag=b\r\n"
           "Call-ID: ack-1\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\n\r\n").encode()
    dropped = bed.proxy.counters["dropped"]
    assert bed.deliver(ack, CALLER) == []
    assert bed.proxy.counters["dropped"] == dropped + 1


def test_box_on_all_interfaces_knows_each_address() -> None:
    own = OwnAddresses("0.0.0.0", 5060)
    own.set_links({"eth0": ["10.99.1.1"], "eth1": ["10.99.2.1"]})
    for box_ip in ("10.99.1.1", "10.99.2.1"):
        bed = OwnBed(own=own)
        bed.register("1002", PHONE_A)
        up, down = split(bed.deliver(routed(f"<sip:{box_ip}:5060;lr>"), CALLER))
        assert up == [100] and list(down) == [PHONE_A], box_ip
