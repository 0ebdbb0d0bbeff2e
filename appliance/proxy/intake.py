"""Request intake: what happens to a request before it is forked. RFC 3261 16.3 (request
validation: Max-Forwards, the URI scheme, Proxy-Require) and 16.4 (route information: Route
entries naming this box go; a Request-URI naming it is for the box's own domain), then the
choice of targets (16.5): its Route, the box itself, an extension's contacts here, or the
boxes that serve it (boxes.py).

A request whose routing names hosts by name first waits, without blocking, for them to
resolve: a `PendingResolution` with one way to finish.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from overlay.sip.message import Request
from overlay.sip.responses import make_response
from overlay.sip.routing import Address, literal_address, new_tag
from overlay.sip.transaction import PROCEEDING, TRYING, RequestReceived, TransactionLayer
from overlay.sip.uri import parse_name_addr

from ..claims import ClaimAnswer, PendingClaim
from ..registrar import Location
from .boxes import Boxes
from .calls import Calls
from .context import Contexts, reply
from .hops import Hops, copy_request
from .stateless import Stateless

ALLOW = ("INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, REGISTER, SUBSCRIBE, NOTIFY, REFER, "
         "INFO, UPDATE, PRACK")
KNOWN_METHODS = frozenset(m.strip() for m in ALLOW.split(","))
# Looks host names up without blocking: False when all are known already (IP literals,
# cached answers); else True, and done(now) is called once each has an answer.
Resolve = Callable[[list[str], Callable[[float], None]], bool]


class PendingResolution:
    """A request waiting for the host names its routing needs. The resolver always calls
    back (a name that does not resolve is an answer too); an INVITE waits in Proceeding, so
    a CANCEL meanwhile (or the transaction's end) is seen here when the names are known."""

    def __init__(self, intake: Intake, event: RequestReceived) -> None:
        self.intake, self.event = intake, event

    def __call__(self, now: float) -> None:
        key = self.event.server_key
        if key is not None and self.intake.txl.server_state(key) not in (TRYING, PROCEEDING):
            return  # the caller gave up (CANCEL, timeout) while we looked
        self.intake.admit(self.event, now)


@dataclass(eq=False)
class Intake:
    txl: TransactionLayer
    location: Location
    hops: Hops
    contexts: Contexts
    boxes: Boxes
    stateless: Stateless
    calls: Calls
    counters: dict[str, int]
    resolve: Resolve | None = None  # plugged in by the node, with its resolver

    def receive(self, event: RequestReceived, now: float) -> None:
        self.counters["requests"] += 1
        hosts = self._host_names(event.request, now)
        if self.resolve is not None and hosts and self.resolve(
                hosts, PendingResolution(self, event)):
            return
        self.admit(event, now)

    def _host_names(self, request: Request, now: float) -> list[str]:
        """Host names (not IP literals, not our own names) the request's routing needs:
        in its Route, its Request-URI and the contacts of the extension it is for."""
        if request.method in ("REGISTER", "CANCEL") or not request.uri.is_sip:
            return []  # answered here, whatever they name
        uris = [parse_name_addr(v, "Route").uri for v in request.get_all("Route")]
        uris.append(request.uri)
        if request.uri.user:
            uris += [b.contact_uri().uri for b in self.location.lookup(request.uri.user, now)]
        return [u.host for u in uris
                if literal_address(u.host) is None and not self.hops.is_own_name(u.host)]

    def admit(self, event: RequestReceived, now: float) -> None:
        """A request whose names are known: validated, preprocessed and sent on its way."""
        request, source, key = event.request, event.source, event.server_key
        if key is None:  # no transaction (an ACK for a 2xx): nobody to answer an error to
            if request.max_forwards <= 0:
                self.counters["dropped"] += 1
                return
            self.pop_own_route(request)
            self.stateless.forward_request(request)
            return
        if request.method == "REGISTER":
            self.counters["registrations"] += 1
            answer = self.location.register(request, source, now)
            if isinstance(answer, PendingClaim):
                assert self.location.claims is not None
                self.location.claims(answer, ClaimAnswer(self.txl, self.location, answer, key))
            else:
                self.txl.send_response(answer, key, now)
            return
        if request.method == "CANCEL":
            self.contexts.on_cancel(request, key, now)
            return
        if not self._valid(request, key, now):
            return
        self.pop_own_route(request)
        if request.method == "INVITE":
            self.txl.send_response(make_response(request, 100), key, now)
        self._route(request, source, key, now)

    def _valid(self, request: Request, key: object, now: float) -> bool:
        """Request validation (RFC 3261 16.3); an invalid request is answered here."""
        if request.max_forwards <= 0:
            reply(self.txl, key, request, 483, now=now)
            return False
        if not request.uri.is_sip:
            reply(self.txl, key, request, 416, now=now)
            return False
        if request.get("Proxy-Require"):
            response = make_response(request, 420, None, new_tag())
            response.add("Unsupported", ", ".join(request.get_all("Proxy-Require")))
            self.txl.send_response(response, key, now)
            return False
        return True

    def pop_own_route(self, request: Request) -> None:
        """Route entries naming this box go (RFC 3261 16.4): our Record-Route (by its
        token) and a phone's outbound-proxy Route (by address or name)."""
        while True:
            value = request.get("Route")
            if value is None:
                return
            uri = parse_name_addr(value, "Route").uri
            if not self.hops.is_our_record_route(uri) and not self.hops.names_me(uri):
                return
            request.pop_first("Route")

    def _route(self, request: Request, source: Address, key: object, now: float) -> None:
        route = request.get("Route")
        # A Request-URI naming this box is for the box's own domain, dialog or not.
        ours = request.to_tag is None or self.hops.names_me(request.uri)
        if route is not None:
            target_uri = parse_name_addr(route, "Route").uri
            self.contexts.start(request, source, key,
                                [(request, self.hops.uri_address(target_uri))], now)
        elif ours and request.uri.user is None:
            self._answer_locally(request, key, now)
        elif ours:
            self._route_to_extension(request, source, key, now)
        else:
            self.contexts.start(request, source, key,
                                [(request, self.hops.uri_address(request.uri))], now)

    def _answer_locally(self, request: Request, key: object, now: float) -> None:
        """Requests addressed to the node itself (no user part): OPTIONS pings and the like."""
        if request.method == "OPTIONS" or request.method not in KNOWN_METHODS:
            # A method we do not know gets 405 with what we do (RFC 3261 8.2.1).
            status = 200 if request.method == "OPTIONS" else 405
            response = make_response(request, status, None, new_tag())
            response.add("Allow", ALLOW)
            self.txl.send_response(response, key, now)
        else:
            reply(self.txl, key, request, 404, "No extension in Request-URI", now)

    def _route_to_extension(self, request: Request, source: Address, key: object,
                            now: float) -> None:
        """Fork to the extension's contacts registered here, or look for it elsewhere."""
        extension = request.uri.user or ""
        bindings = self.location.lookup(extension, now)
        if not bindings:
            self.boxes.route(request, source, key, now)
            return
        caller = request.from_user or "?"
        targets = []
        for b in bindings:
            copy = copy_request(request)
            copy.uri = b.contact_uri().uri
            # Phones on TCP or TLS are reached on the connection they registered over.
            dest = b.source if b.source[0] in ("TCP", "TLS") else \
                self.hops.uri_address(copy.uri)
            targets.append((copy, dest))
        if request.method == "INVITE":
            n = len(targets)
            self.calls.ringing(request.call_id, caller, extension, now,
                               f"({n} contact{'' if n == 1 else 's'})")
        self.contexts.start(request, source, key, targets, now, f"{caller} -> {extension}")
