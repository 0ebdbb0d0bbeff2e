"""The transaction-stateful proxy and the node's request dispatch (RFC 3261 section 16), sans-IO.

It consumes transaction-layer events and answers through the transaction layer;
the asyncio node only moves bytes and time. Initial requests are routed by
extension to the registered contacts (forking to all of them in parallel);
requests with a Route to us or a To tag follow their route (Record-Route keeps
in-dialog requests on this node). A Route or Request-URI that names this box (any of its
addresses or names, see addresses.py) is the box itself (RFC 3261 16.4). A request that
names hosts by name waits for them to resolve (without blocking: `resolve`) before it is
routed.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from overlay.sip.message import Request, Response
from overlay.sip.responses import make_response
from overlay.sip.routing import (
    DEFAULT_PORT,
    Address,
    literal_address,
    new_branch,
    new_tag,
    uri_address,
    via_address,
)
from overlay.sip.transaction import (
    MAGIC_COOKIE,
    PROCEEDING,
    TRYING,
    ClientTimeout,
    Event,
    RequestReceived,
    ResponseReceived,
    ServerTerminated,
    StrayResponse,
    TransactionLayer,
    TransportFailed,
)
from overlay.sip.uri import Uri, parse_name_addr, parse_uri, uri_host

from .addresses import OwnAddresses
from .registrar import Location

log = logging.getLogger("meshsip.proxy")
TIMER_C = 180.0  # RFC 3261 16.6: a phone that rings this long unanswered is given up
# Another box answers an INVITE with 100 Trying at once. One that says nothing for this
# long is taken for gone (powered off, out of reach): its branch is given up and the
# extension looked up again, instead of waiting 64*T1 (Timer B) for nothing.
BOX_ANSWER_TIMEOUT = 2.0

ALLOW = ("INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, REGISTER, SUBSCRIBE, NOTIFY, REFER, "
         "INFO, UPDATE, PRACK")
KNOWN_METHODS = frozenset(m.strip() for m in ALLOW.split(","))
# Where this node can be reached by the peer at a given IP: (transport, local ip, port).
LocalAddress = Callable[[Address], Address]
# Asks the mesh which boxes serve an extension; the answer (their SIP URIs) comes later,
# through the callback, with the time it arrived.
FindRemote = Callable[[str, Callable[[list[str], float], None]], None]
# Tells the mesh a box it named did not answer, so the next lookup is not served from cache.
ForgetRemote = Callable[[str], None]
# Looks host names up without blocking: False when all are known already (IP literals,
# cached answers); else True, and done(now) is called once each has an answer.
Resolve = Callable[[list[str], Callable[[float], None]], bool]
# Marks a request one box sends another for a phone registered there: the receiving box
# serves it from its own registrations and never asks the mesh again (no loops).
HOP_HEADER = "Meshsip-Hop"


@dataclass
class Branch:
    request: Request
    dest: Address
    key: object = None
    provisional: bool = False
    final: Response | None = None
    received: bool = False  # final came from downstream (else we made it)
    cancel_wanted: bool = False  # to be cancelled as soon as it has a provisional response
    cancel_sent: bool = False


@dataclass
class ProxiedRequest:
    server_key: object
    request: Request
    branches: list[Branch] = field(default_factory=list)
    started: float = 0.0
    answered: bool = False  # a final response went upstream
    cancelled: bool = False  # by the caller, or by Timer C
    label: str = ""
    source: Address | None = None  # where the request came from (for Record-Route)
    looked_again: bool = False  # a silent box made us look the extension up once more


@dataclass
class ClosedBranch:
    """An INVITE branch we gave a final answer for ourselves (timeout, silent box) after
    which the caller got a non-2xx: a 2xx arriving on it later is ended here."""

    invite: Request  # as we forwarded it
    dest: Address
    until: float  # the callee retransmits a 2xx for 64*T1 at most (RFC 3261 13.3.1.4)
    ended: set[str] = field(default_factory=set)  # To tags already sent a BYE


@dataclass
class Call:
    caller: str
    callee: str
    state: str  # "ringing" | "established"
    started: float


class Proxy:
    def __init__(
        self,
        txl: TransactionLayer,
        location: Location,
        local_address: LocalAddress,
        node_token: str,
        own: OwnAddresses | None = None,
    ) -> None:
        self.txl = txl
        self.location = location
        self.local_address = local_address
        self.token = node_token  # marks our own Record-Route entries
        self.own = own if own is not None else OwnAddresses("", 0)  # knows no address
        self.resolve: Resolve | None = None
        self.address: Callable[[str], str | None] = literal_address  # host -> IP, no waiting
        self.find_remote: FindRemote | None = None
        self.forget_remote: ForgetRemote | None = None
        self._box_deadlines: dict[object, float] = {}  # INVITE branches to boxes: no answer yet
        self.pending: dict[object, tuple[ProxiedRequest, Branch]] = {}
        self.by_server: dict[object, ProxiedRequest] = {}
        self.calls: dict[str, Call] = {}
        self._closed: dict[str, ClosedBranch] = {}  # by our Via branch, oldest first
        self._sent_by: set[tuple[str, int]] = set()  # every Via sent-by we have inserted
        self.counters = {"requests": 0, "forwarded": 0, "registrations": 0, "calls": 0,
                         "stray_forwarded": 0, "dropped": 0, "responses_not_ours": 0,
                         "stray_2xx_ended": 0}

    # -- events ---------------------------------------------------------------------------
    def handle(self, event: Event, now: float) -> None:
        if isinstance(event, RequestReceived):
            self.counters["requests"] += 1
            hosts = self._host_names(event.request, now)
            if self.resolve is not None and hosts and self.resolve(
                    hosts, lambda when, e=event: self._resolved(e, when)):
                return  # (an INVITE waits in Proceeding: a CANCEL meanwhile finds it)
            self._intake(event, now)
        elif isinstance(event, ResponseReceived):
            self._on_response(event.response, event.client_key, now)
        elif isinstance(event, StrayResponse):
            if self._sent_by_us(event.response, event.source):
                self._forward_stray(event.response, now)
            else:  # never reflected along its other Vias (RFC 3261 16.7 step 3, 16.11)
                self.counters["responses_not_ours"] += 1
        elif isinstance(event, (ClientTimeout, TransportFailed)):
            self._on_branch_failure(event, now)
        elif isinstance(event, ServerTerminated):
            self.by_server.pop(event.server_key, None)

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
                if literal_address(u.host) is None and not self.own.is_own_name(u.host)]

    def _resolved(self, event: RequestReceived, now: float) -> None:
        key = event.server_key
        if key is not None and self.txl.server_state(key) not in (TRYING, PROCEEDING):
            return  # the caller gave up (CANCEL, timeout) while we looked
        self._intake(event, now)

    def _intake(self, event: RequestReceived, now: float) -> None:
        if event.server_key is None:
            self._forward_stateless(event.request, event.source)
        else:
            self._on_request(event.request, event.source, event.server_key, now)

    def _uri_address(self, uri: Uri) -> Address | None:
        return uri_address(uri, self.address)

    def _names_me(self, uri: Uri) -> bool:
        return uri.is_sip and self.own.is_me(uri.host, uri.port, self.address(uri.host))

    def _reply(self, key: object, request: Request, status: int, reason: str | None = None,
               now: float = 0.0) -> Response:
        response = make_response(request, status, reason, new_tag())
        self.txl.send_response(response, key, now)
        return response

    def _on_request(self, request: Request, source: Address, key: object, now: float) -> None:
        method = request.method
        if method == "REGISTER":
            self.counters["registrations"] += 1
            self.txl.send_response(self.location.register(request, source, now), key, now)
            return
        if method == "CANCEL":
            self._on_cancel(request, key, now)
            return
        if request.max_forwards <= 0:
            self._reply(key, request, 483, now=now)
            return
        if not request.uri.is_sip:
            self._reply(key, request, 416, now=now)
            return
        if request.get("Proxy-Require"):
            response = make_response(request, 420, None, new_tag())
            response.add("Unsupported", ", ".join(request.get_all("Proxy-Require")))
            self.txl.send_response(response, key, now)
            return
        self._pop_own_route(request)
        if method == "INVITE":
            self.txl.send_response(make_response(request, 100), key, now)
        route = request.get("Route")
        in_dialog = request._to_view().tag is not None
        # A Request-URI naming this box is for the box's own domain, dialog or not.
        ours = not in_dialog or self._names_me(request.uri)
        if route is not None:
            target_uri = parse_name_addr(route, "Route").uri
            self._proxy(request, source, key, [(request, self._uri_address(target_uri))], now)
        elif ours and request.uri.user is None:
            self._answer_locally(request, key, now)
        elif ours:
            self._route_to_extension(request, source, key, now)
        else:
            self._proxy(request, source, key, [(request, self._uri_address(request.uri))], now)

    def _answer_locally(self, request: Request, key: object, now: float) -> None:
        """Requests addressed to the node itself (no user part): OPTIONS pings and the like."""
        if request.method == "OPTIONS" or request.method not in KNOWN_METHODS:
            # A method we do not know gets 405 with what we do (RFC 3261 8.2.1).
            status = 200 if request.method == "OPTIONS" else 405
            response = make_response(request, status, None, new_tag())
            response.add("Allow", ALLOW)
            self.txl.send_response(response, key, now)
        else:
            self._reply(key, request, 404, "No extension in Request-URI", now)

    def _route_to_extension(self, request: Request, source: Address, key: object,
                            now: float) -> None:
        extension = request.uri.user or ""
        bindings = self.location.lookup(extension, now)
        caller = request._from_view().uri.user or "?"
        if not bindings:
            if self.find_remote is not None and request.get(HOP_HEADER) is None:
                self.find_remote(extension, lambda boxes, when: self._route_to_boxes(
                    request, source, key, boxes, when))
                return
            self._not_here(request, key, caller, extension, now)
            return
        targets = []
        for b in bindings:
            copy = _copy(request)
            copy.uri = b.contact_uri().uri
            # Phones on TCP are reached on the connection they registered over.
            dest = b.source if b.source[0] == "TCP" else self._uri_address(copy.uri)
            targets.append((copy, dest))
        if request.method == "INVITE":
            self.counters["calls"] += 1
            log.info("call %s -> %s (%d contact%s) Call-ID %s", caller, extension,
                     len(targets), "" if len(targets) == 1 else "s", request.call_id)
            self.calls[request.call_id] = Call(caller, extension, "ringing", now)
        self._proxy(request, source, key, targets, now, label=f"{caller} -> {extension}")

    def _not_here(self, request: Request, key: object, caller: str, extension: str,
                  now: float) -> None:
        status = 480 if extension in self.location.known else 404
        if request.method == "INVITE":
            log.info("call %s -> %s: %d (not registered)", caller, extension, status)
        self._reply(key, request, status, None, now)

    def _route_to_boxes(self, request: Request, source: Address, key: object,
                        boxes: list[str], now: float) -> None:
        """The mesh answered: send the request on to the boxes that serve the extension."""
        if self.txl.server_state(key) not in (TRYING, PROCEEDING) or key in self.by_server:
            return  # the caller gave up (CANCEL, timeout) while we looked
        extension = request.uri.user or ""
        caller = request.from_.uri.user or "?"
        if not boxes:
            self._not_here(request, key, caller, extension, now)
            return
        targets = [(_to_box(request, self.token), self._uri_address(parse_uri(box)))
                   for box in boxes]
        if request.method == "INVITE":
            self.counters["calls"] += 1
            log.info("call %s -> %s via box %s Call-ID %s", caller, extension,
                     ", ".join(boxes), request.call_id)
            self.calls[request.call_id] = Call(caller, extension, "ringing", now)
        self._proxy(request, source, key, targets, now, label=f"{caller} -> {extension}",
                    boxes=True)

    def _proxy(self, request: Request, source: Address, key: object,
               targets: list[tuple[Request, Address | None]], now: float, label: str = "",
               boxes: bool = False) -> None:
        ctx = ProxiedRequest(key, request, started=now, label=label, source=source)
        self.by_server[key] = ctx
        for target, dest in targets:
            self._branch(ctx, target, dest, now, boxes)
        self._maybe_answer(ctx, now)

    def _branch(self, ctx: ProxiedRequest, target: Request, dest: Address | None, now: float,
                box: bool = False) -> None:
        request = ctx.request
        if dest is None:
            # A next hop that cannot be resolved counts as a 503 (RFC 3263 4.3).
            route = target.get("Route")
            host = (parse_name_addr(route, "Route").uri if route else target.uri).host
            ctx.branches.append(Branch(target, ("UDP", "", 0), final=make_response(
                request, 503, f"Cannot resolve {host}"[:80], new_tag())))
            return
        out = _copy(target)
        out.set("Max-Forwards", str(request.max_forwards - 1))
        if request.method in ("INVITE", "SUBSCRIBE", "REFER") and \
                request._to_view().tag is None and ctx.source is not None:
            out.add("Record-Route", self._record_route(ctx.source), first=True)
        out.add("Via", self._via(dest, new_branch()), first=True)
        branch = Branch(out, dest)
        ctx.branches.append(branch)
        branch.key = self.txl.send_request(out, dest, now)
        self.pending[branch.key] = (ctx, branch)
        self.counters["forwarded"] += 1
        if box and request.method == "INVITE":
            self._box_deadlines[branch.key] = now + BOX_ANSWER_TIMEOUT

    def _via(self, dest: Address, branch: str) -> str:
        transport, ip, port = self.local_address(dest)
        self._sent_by.add((uri_host(ip).lower(), port))
        return f"SIP/2.0/{transport} {uri_host(ip)}:{port};branch={branch};rport"

    def _sent_by_us(self, response: Response, source: Address) -> bool:
        """Whether the top Via is one we put in (a value _via inserted, or would insert
        toward the response's sender: that covers requests sent before a restart)."""
        via = response._top_via_view()
        sent_by = (via.host.lower(), via.port or DEFAULT_PORT)
        if sent_by in self._sent_by:
            return True
        _, ip, port = self.local_address(source)
        return sent_by == (uri_host(ip).lower(), port)

    def _record_route(self, source: Address) -> str:
        _, ip, port = self.local_address(source)
        # The upstream side; phones on both sides of one box share its addresses.
        transport = ";transport=tcp" if source[0] == "TCP" else ""
        return f"<sip:{uri_host(ip)}:{port};lr;ms={self.token}{transport}>"

    def _pop_own_route(self, request: Request) -> None:
        """Route entries naming this box go (RFC 3261 16.4): our Record-Route (by its
        token) and a phone's outbound-proxy Route (by address or name)."""
        while True:
            value = request.get("Route")
            if value is None:
                return
            uri = parse_name_addr(value, "Route").uri
            if uri.params.get("ms") != self.token and not self._names_me(uri):
                return
            request.pop_first("Route")

    # -- CANCEL ---------------------------------------------------------------------------
    def _on_cancel(self, cancel: Request, key: object, now: float) -> None:
        invite_key = self.txl.find_invite_server(cancel)
        ctx = self.by_server.get(invite_key) if invite_key is not None else None
        if ctx is None:
            if invite_key is not None and self.txl.server_state(invite_key) == PROCEEDING:
                # Cancelled while the mesh was still looking the callee up.
                self._reply(key, cancel, 200, now=now)
                invite = self.txl.server_request(invite_key)
                if invite is not None:
                    self._reply(invite_key, invite, 487, now=now)
                return
            self._reply(key, cancel, 481, now=now)
            return
        self._reply(key, cancel, 200, now=now)
        ctx.cancelled = True
        log.info("call %s cancelled by caller", ctx.label or ctx.request.call_id)
        self._cancel_branches(ctx, now)
        self._maybe_answer(ctx, now)

    # -- boxes that do not answer ----------------------------------------------------------
    def get_timer(self) -> float | None:
        """When handle_timer wants to run next (None: nothing to wait for)."""
        return min(self._box_deadlines.values(), default=None)

    def handle_timer(self, now: float) -> None:
        """INVITE branches to other boxes that got no answer at all in BOX_ANSWER_TIMEOUT
        are given up (480), and the extension looked up once more: the answer we had may be
        stale (cached, or a record of a box that just died), and the boxes that stayed
        silent are not tried again within this call."""
        for key, when in list(self._box_deadlines.items()):
            if when > now:
                continue
            del self._box_deadlines[key]
            entry = self.pending.pop(key, None)
            if entry is None:
                continue
            ctx, branch = entry
            self.txl.cancel_client(key)
            branch.final = make_response(ctx.request, 480, "Box unreachable", new_tag())
            extension = ctx.request.uri.user or ""
            log.info("call %s: box %s:%d silent for %.0fs, given up", ctx.label,
                     branch.dest[1], branch.dest[2], BOX_ANSWER_TIMEOUT)
            if self.forget_remote is not None:
                self.forget_remote(extension)
            if (ctx.looked_again or ctx.cancelled or self.find_remote is None
                    or any(b.final is None for b in ctx.branches)):
                self._maybe_answer(ctx, now)
                continue
            ctx.looked_again = True
            self.find_remote(extension, lambda boxes, when, ctx=ctx: self._more_boxes(
                ctx, boxes, when))

    def _more_boxes(self, ctx: ProxiedRequest, boxes: list[str], now: float) -> None:
        """The second lookup answered: try the boxes not tried yet, or give the answer."""
        if ctx.answered:
            return  # cancelled meanwhile
        tried = {b.dest for b in ctx.branches}
        for box in boxes:
            dest = self._uri_address(parse_uri(box))
            if dest not in tried:
                tried.add(dest)
                log.info("call %s: trying box %s", ctx.label, box)
                self._branch(ctx, _to_box(ctx.request, self.token), dest, now, True)
        self._maybe_answer(ctx, now)

    def expire(self, now: float) -> None:
        """Timer C: give up INVITEs that have rung unanswered for too long; forget closed
        branches whose callee has stopped retransmitting any 2xx."""
        while self._closed:
            branch_id, closed = next(iter(self._closed.items()))
            if closed.until > now:
                break
            del self._closed[branch_id]
        for ctx in list(self.by_server.values()):
            if not ctx.answered and not ctx.cancelled and now - ctx.started > TIMER_C:
                log.info("call %s not answered in %.0fs, giving up", ctx.label, TIMER_C)
                ctx.cancelled = True
                self._cancel_branches(ctx, now)
                self._maybe_answer(ctx, now)

    def _cancel_branches(self, ctx: ProxiedRequest, now: float) -> None:
        """CANCEL every pending INVITE branch (RFC 3261 16.10). One with no provisional
        response yet (not even 100) may not be cancelled (9.1): it keeps its INVITE going
        and gets its CANCEL with its first provisional (_on_response), or times out."""
        if ctx.request.method != "INVITE":
            return
        for branch in ctx.branches:
            if branch.final is not None or branch.cancel_sent:
                continue
            branch.cancel_wanted = True
            if self.txl.client_state(branch.key) == PROCEEDING:
                branch.cancel_sent = True
                self.txl.send_request(_cancel_for(branch.request), branch.dest, now)
                # No final within 64*T1 of the CANCEL: the branch is given up (9.1).
                self.txl.cancel_client(branch.key)

    # -- responses ------------------------------------------------------------------------
    def _on_response(self, response: Response, client_key: object, now: float) -> None:
        self._box_deadlines.pop(client_key, None)  # the box is there
        entry = self.pending.get(client_key)
        if entry is None:
            if 200 <= response.status < 300 and response.cseq[1] == "INVITE":
                # A retransmitted 2xx (the first, or our ACK, was lost upstream): the INVITE
                # is settled but every 2xx still goes up (RFC 6026 7.2), statelessly.
                self._forward_stray(response, now)
            return  # e.g. the 200 for a CANCEL we sent
        ctx, branch = entry
        status = response.status
        if status < 200 and branch.cancel_wanted and not branch.cancel_sent:
            self._cancel_branches(ctx, now)  # its first provisional: now it can be cancelled
        if status == 100:
            return
        upstream = _strip_top_via(response)
        if status < 200:
            branch.provisional = True
            if not ctx.cancelled and not ctx.answered:
                self.txl.send_response(upstream, ctx.server_key, now)
            return
        if status < 300:
            # Every 2xx goes upstream, even after another branch answered (RFC 3261 16.7.4).
            if branch.final is None:
                branch.final, branch.received = response, True
            self.txl.send_response(upstream, ctx.server_key, now)
            if not ctx.answered:
                ctx.answered = True
                self._on_answered(ctx, response, now)
            self._cancel_branches(ctx, now)
            self._finish_if_done(ctx)
            return
        branch.final, branch.received = response, True
        self.pending.pop(client_key, None)
        if status >= 600:
            self._cancel_branches(ctx, now)
        self._maybe_answer(ctx, now)

    def _on_answered(self, ctx: ProxiedRequest, response: Response, now: float) -> None:
        method = ctx.request.method
        call = self.calls.get(ctx.request.call_id)
        if method == "INVITE" and call is not None:
            call.state, call.started = "established", now
            log.info("call %s answered", ctx.label)
        elif method == "BYE":
            ended = self.calls.pop(ctx.request.call_id, None)
            if ended is not None:
                log.info("call %s -> %s ended after %.0fs", ended.caller, ended.callee,
                         now - ended.started)

    def _on_branch_failure(self, event: ClientTimeout | TransportFailed, now: float) -> None:
        self._box_deadlines.pop(event.client_key, None)
        entry = self.pending.pop(event.client_key, None)
        if entry is None:
            return
        ctx, branch = entry
        if isinstance(event, ClientTimeout):
            status, reason = (408, None) if not branch.provisional else (480, "No answer")
        else:
            status, reason = 480, "Phone unreachable"
        if branch.final is None:
            branch.final = make_response(ctx.request, status, reason, new_tag())
        self._maybe_answer(ctx, now)

    def _maybe_answer(self, ctx: ProxiedRequest, now: float) -> None:
        """Once every branch has a final response, send the best one upstream (16.7.6)."""
        if any(b.final is None for b in ctx.branches):
            return
        if ctx.answered:  # a 2xx went up earlier: the last cancelled branch has ended
            self._finish_if_done(ctx)
            return
        ctx.answered = True
        best = _best_response([b.final for b in ctx.branches if b.final is not None])
        received = any(b.final is best and b.received for b in ctx.branches)
        if best is None or ctx.cancelled:
            upstream = make_response(ctx.request, 487, None, new_tag())
        elif received and _is_forwardable(best):
            upstream = _strip_top_via(best)
        else:  # one we made (timeout, unreachable): built afresh on the request's Vias
            upstream = make_response(ctx.request, best.status, best.reason, new_tag())
        if upstream.status == 503 and received:  # a 503 from downstream is not ours (16.7)
            upstream.status, upstream.reason = 500, "Server Internal Error"
        self.txl.send_response(upstream, ctx.server_key, now)
        if ctx.request.method == "INVITE":
            for b in ctx.branches:  # finals we made: the callee may still answer there
                if not b.received and b.key is not None:
                    self._closed[b.request.top_via.branch or ""] = ClosedBranch(
                        b.request, b.dest, now + 64 * self.txl.t1)
            call = self.calls.pop(ctx.request.call_id, None)
            if call is not None:
                log.info("call %s failed: %d %s", ctx.label, upstream.status, upstream.reason)
        elif ctx.request.method == "BYE":
            self.calls.pop(ctx.request.call_id, None)
        self._finish_if_done(ctx)

    def _finish_if_done(self, ctx: ProxiedRequest) -> None:
        if all(b.final is not None for b in ctx.branches):
            for b in ctx.branches:
                self.pending.pop(b.key, None)
            self.by_server.pop(ctx.server_key, None)

    # -- stateless forwarding -----------------------------------------------------------
    def _forward_stateless(self, request: Request, source: Address) -> None:
        """ACKs for 2xx (and anything else without a transaction) follow Route or Request-URI."""
        if request.max_forwards <= 0:
            self.counters["dropped"] += 1
            return
        self._pop_own_route(request)
        route = request.get("Route")
        uri = parse_name_addr(route, "Route").uri if route else request.uri
        dest = None if route is None and self._names_me(uri) else self._uri_address(uri)
        if dest is None:  # unresolvable, or for the box itself (no ACK of ours is sent)
            self.counters["dropped"] += 1
            return
        out = _copy(request)
        out.set("Max-Forwards", str(request.max_forwards - 1))
        # Same incoming branch -> same outgoing branch, so retransmissions stay matched (16.11).
        branch = request._top_via_view().branch
        digest = hashlib.sha256((branch or request.call_id).encode()).hexdigest()
        out.add("Via", self._via(dest, MAGIC_COOKIE + digest[:16]), first=True)
        self.txl.send_stateless(out, dest)
        self.counters["forwarded"] += 1
        if request.method == "BYE":
            self.calls.pop(request.call_id, None)

    def _forward_stray(self, response: Response, now: float) -> None:
        vias = response.vias
        if 200 <= response.status < 300 and response.cseq[1] == "INVITE":
            closed = self._closed.get(vias[0].branch or "")
            if closed is not None:
                self._end_stray_call(closed, response, now)
                return
        if len(vias) < 2:
            self.counters["dropped"] += 1
            return
        self.txl.send_stateless(_strip_top_via(response), via_address(vias[1]))
        self.counters["stray_forwarded"] += 1

    def _end_stray_call(self, closed: ClosedBranch, response: Response, now: float) -> None:
        """A 2xx on a branch whose caller already has its non-2xx final (487, 408, 480).

        RFC 3261 16.7 step 5 forwards every 2xx upstream, but this one would reach a client
        transaction our non-2xx already completed, where no state takes a 2xx (17.1.1.2;
        RFC 6026 adds Accepted only after a 2xx): the caller could neither ACK nor BYE it,
        and the callee would sit in a call with nobody until it gives up itself after 64*T1
        (13.3.1.4). We made that final answer, so we end the call the way a UAC that gets
        a 2xx after its CANCEL does (15, 9.1): ACK it, then BYE it, along its route set.
        """
        tag = response._to_view().tag or ""
        contact = response.get("Contact")
        target = parse_name_addr(contact, "Contact").uri if contact else closed.invite.uri
        # Our route set toward the callee: the Record-Route entries added after ours.
        routes: list[str] = []
        for value in response.get_all("Record-Route"):
            if parse_name_addr(value, "Record-Route").uri.params.get("ms") == self.token:
                break
            routes.insert(0, value)

        def request(method: str, cseq: int) -> Request:
            headers = [("Via", self._via(closed.dest, new_branch()))]
            headers += [("Route", r) for r in routes]
            headers += [("Max-Forwards", "70"), ("From", closed.invite.get("From") or ""),
                        ("To", response.get("To") or ""), ("Call-ID", response.call_id),
                        ("CSeq", f"{cseq} {method}")]
            return Request(method, target.copy(), headers)

        number = closed.invite.cseq[0]
        self.txl.send_stateless(request("ACK", number), closed.dest)
        if tag in closed.ended:
            return  # a retransmission of that 2xx: the ACK again is all it needs
        closed.ended.add(tag)
        self.txl.send_request(request("BYE", number + 1), closed.dest, now)
        self.counters["stray_2xx_ended"] += 1
        log.info("a 2xx for call %s came after its final answer: ACKed and ended with BYE",
                 response.call_id)

    def status(self, now: float) -> list[dict[str, object]]:
        return [
            {"call_id": cid, "caller": c.caller, "callee": c.callee, "state": c.state,
             "seconds": round(now - c.started, 1)}
            for cid, c in self.calls.items()
        ]


def _copy(message: Request) -> Request:
    return Request(message.method, message.uri.copy(), list(message.headers), message.body)


def _to_box(request: Request, token: str) -> Request:
    """The request as sent to another box: marked, so that box serves it from its own
    registrations. The Request-URI stays (the extension is what counts there)."""
    copy = _copy(request)
    copy.set(HOP_HEADER, token)
    return copy


def _strip_top_via(response: Response) -> Response:
    out = Response(response.status, response.reason, list(response.headers), response.body)
    out.pop_first("Via")
    return out


def _cancel_for(request: Request) -> Request:
    """CANCEL for a forwarded INVITE: same Request-URI, top Via, Call-ID, From, To, Route."""
    headers = [(n, v) for n, v in request.headers if n in ("From", "To", "Call-ID", "Route")]
    headers.insert(0, ("Via", request.get("Via") or ""))
    headers.append(("CSeq", f"{request.cseq[0]} CANCEL"))
    headers.append(("Max-Forwards", "70"))
    return Request("CANCEL", request.uri.copy(), headers)


def _best_response(finals: list[Response]) -> Response | None:
    if not finals:
        return None
    six = [r for r in finals if r.status >= 600]
    if six:
        return six[0]
    # Lowest class wins; within it prefer auth challenges, then the first one (16.7.6).
    return min(finals, key=lambda r: (r.status // 100, r.status not in (401, 407), 0))


def _is_forwardable(response: Response) -> bool:
    return len(response.get_all("Via")) >= 2


__all__ = ["Proxy", "Call", "ALLOW", "new_tag"]
