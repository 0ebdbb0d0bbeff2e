"""The response context of a proxied request (RFC 3261 16.6-16.10): its branches, the best
final response (16.7), CANCEL (16.10, with cancels pending on branches that have had no
provisional yet) and Timer C.

A `ProxiedRequest` lives from the fork until every branch has its final response; `Contexts`
keeps them by server transaction and by client transaction (`pending`) and is the one place
responses and branch failures are taken in. Which targets a request is forked to is decided
before (intake.py, boxes.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from overlay.sip.message import Request, Response
from overlay.sip.responses import make_response
from overlay.sip.routing import Address, new_branch, new_tag
from overlay.sip.transaction import PROCEEDING, TransactionLayer

from .calls import Calls
from .closed import ClosedBranches
from .hops import Hops, copy_request, next_hop_uri, strip_top_via
from .stateless import Stateless

log = logging.getLogger("meshsip.proxy")
TIMER_C = 180.0  # RFC 3261 16.6: a phone that rings this long unanswered is given up
# Requests whose first branch adds our Record-Route (dialog-creating ones, outside a dialog).
RECORD_ROUTED = ("INVITE", "SUBSCRIBE", "REFER")


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


def reply(txl: TransactionLayer, key: object, request: Request, status: int,
          reason: str | None = None, now: float = 0.0) -> Response:
    """Answer a request ourselves (a new To tag where it has none)."""
    response = make_response(request, status, reason, new_tag())
    txl.send_response(response, key, now)
    return response


@dataclass(eq=False)
class Contexts:
    txl: TransactionLayer
    hops: Hops
    calls: Calls
    closed: ClosedBranches
    stateless: Stateless
    counters: dict[str, int]
    # By client key.
    pending: dict[object, tuple[ProxiedRequest, Branch]] = field(default_factory=dict)
    by_server: dict[object, ProxiedRequest] = field(default_factory=dict)
    # Branches whose next hop must answer (anything, even 100) by a time: by client key.
    deadlines: dict[object, float] = field(default_factory=dict)

    # -- forking --------------------------------------------------------------------------
    def start(self, request: Request, source: Address, key: object,
              targets: list[tuple[Request, Address | None]], now: float, label: str = "",
              answer_within: float | None = None) -> None:
        """Fork `request` to `targets` (each the request as sent there, and where)."""
        ctx = ProxiedRequest(key, request, started=now, label=label, source=source)
        self.by_server[key] = ctx
        for target, dest in targets:
            self.add_branch(ctx, target, dest, now, answer_within)
        self.maybe_answer(ctx, now)

    def add_branch(self, ctx: ProxiedRequest, target: Request, dest: Address | None,
                   now: float, answer_within: float | None = None) -> None:
        """Send one branch (RFC 3261 16.6); an INVITE branch with `answer_within` is given
        up by the caller of `overdue` when its next hop says nothing for that long."""
        request = ctx.request
        if dest is None:
            # A next hop that cannot be resolved counts as a 503 (RFC 3263 4.3).
            host = next_hop_uri(target).host
            ctx.branches.append(Branch(target, ("UDP", "", 0), final=make_response(
                request, 503, f"Cannot resolve {host}"[:80], new_tag())))
            return
        out = copy_request(target)
        out.set("Max-Forwards", str(request.max_forwards - 1))
        if request.method in RECORD_ROUTED and request.to_tag is None and \
                ctx.source is not None:
            for value in reversed(self.hops.record_route(ctx.source, dest)):
                out.add("Record-Route", value, first=True)
        out.add("Via", self.hops.via(dest, new_branch()), first=True)
        branch = Branch(out, dest)
        ctx.branches.append(branch)
        branch.key = self.txl.send_request(out, dest, now)
        self.pending[branch.key] = (ctx, branch)
        self.counters["forwarded"] += 1
        if answer_within is not None and request.method == "INVITE":
            self.deadlines[branch.key] = now + answer_within

    def overdue(self, now: float) -> list[tuple[ProxiedRequest, Branch]]:
        """Branches whose next hop did not answer in time, taken out of `pending` and
        their client transactions ended: each still needs its final (then `maybe_answer`)."""
        due = []
        for key, when in list(self.deadlines.items()):
            if when > now:
                continue
            del self.deadlines[key]
            entry = self.pending.pop(key, None)
            if entry is not None:
                self.txl.cancel_client(key)
                due.append(entry)
        return due

    # -- responses ------------------------------------------------------------------------
    def on_response(self, response: Response, client_key: object, now: float) -> None:
        self.deadlines.pop(client_key, None)  # the next hop is there
        entry = self.pending.get(client_key)
        if entry is None:
            if 200 <= response.status < 300 and response.cseq[1] == "INVITE":
                # A retransmitted 2xx (the first, or our ACK, was lost upstream): the INVITE
                # is settled but every 2xx still goes up (RFC 6026 7.2), statelessly.
                self.stateless.forward_stray(response, now)
            return  # e.g. the 200 for a CANCEL we sent
        ctx, branch = entry
        status = response.status
        if status < 200 and branch.cancel_wanted and not branch.cancel_sent:
            self.cancel_branches(ctx, now)  # its first provisional: now it can be cancelled
        if status == 100:
            return
        if status < 200:
            branch.provisional = True
            if not ctx.cancelled and not ctx.answered:
                self.txl.send_response(strip_top_via(response), ctx.server_key, now)
            return
        if status < 300:
            self._on_2xx(ctx, branch, response, now)
            return
        branch.final, branch.received = response, True
        self.pending.pop(client_key, None)
        if status >= 600:
            self.cancel_branches(ctx, now)
        self.maybe_answer(ctx, now)

    def _on_2xx(self, ctx: ProxiedRequest, branch: Branch, response: Response,
                now: float) -> None:
        # Every 2xx goes upstream, even after another branch answered (RFC 3261 16.7.4).
        if branch.final is None:
            branch.final, branch.received = response, True
        self.txl.send_response(strip_top_via(response), ctx.server_key, now)
        if not ctx.answered:
            ctx.answered = True
            if ctx.request.method == "INVITE":
                self.calls.answered(ctx.request.call_id, ctx.label, now)
            elif ctx.request.method == "BYE":
                self.calls.ended(ctx.request.call_id, now)
        self.cancel_branches(ctx, now)
        self.finish_if_done(ctx)

    def on_branch_failure(self, client_key: object, timed_out: bool, now: float) -> None:
        """A branch's client transaction timed out, or its transport failed."""
        self.deadlines.pop(client_key, None)
        entry = self.pending.pop(client_key, None)
        if entry is None:
            return
        ctx, branch = entry
        if timed_out:
            status, reason = (408, None) if not branch.provisional else (480, "No answer")
        else:
            status, reason = 480, "Phone unreachable"
        if branch.final is None:
            branch.final = make_response(ctx.request, status, reason, new_tag())
        self.maybe_answer(ctx, now)

    def maybe_answer(self, ctx: ProxiedRequest, now: float) -> None:
        """Once every branch has a final response, send the best one upstream (16.7.6)."""
        if any(b.final is None for b in ctx.branches):
            return
        if ctx.answered:  # a 2xx went up earlier: the last cancelled branch has ended
            self.finish_if_done(ctx)
            return
        ctx.answered = True
        upstream = self._upstream_final(ctx)
        self.txl.send_response(upstream, ctx.server_key, now)
        if ctx.request.method == "INVITE":
            for b in ctx.branches:  # finals we made: the callee may still answer there
                if not b.received and b.key is not None:
                    self.closed.close(b.request, b.dest, now)
            self.calls.failed(ctx.request.call_id, ctx.label, upstream.status, upstream.reason)
        elif ctx.request.method == "BYE":
            self.calls.forget(ctx.request.call_id)
        self.finish_if_done(ctx)

    def _upstream_final(self, ctx: ProxiedRequest) -> Response:
        """The final response the caller gets once every branch has one (16.7 steps 6, 7)."""
        best = best_response([b.final for b in ctx.branches if b.final is not None])
        received = any(b.final is best and b.received for b in ctx.branches)
        if best is None or ctx.cancelled:
            upstream = make_response(ctx.request, 487, None, new_tag())
        elif received and len(best.get_all("Via")) >= 2:
            upstream = strip_top_via(best)
        else:  # one we made (timeout, unreachable): built afresh on the request's Vias
            upstream = make_response(ctx.request, best.status, best.reason, new_tag())
        if upstream.status == 503 and received:  # a 503 from downstream is not ours (16.7)
            upstream.status, upstream.reason = 500, "Server Internal Error"
        return upstream

    def finish_if_done(self, ctx: ProxiedRequest) -> None:
        if all(b.final is not None for b in ctx.branches):
            for b in ctx.branches:
                self.pending.pop(b.key, None)
            self.by_server.pop(ctx.server_key, None)

    # -- CANCEL and Timer C ---------------------------------------------------------------
    def on_cancel(self, cancel: Request, key: object, now: float) -> None:
        invite_key = self.txl.find_invite_server(cancel)
        ctx = self.by_server.get(invite_key) if invite_key is not None else None
        if ctx is None:
            if invite_key is not None and self.txl.server_state(invite_key) == PROCEEDING:
                # Cancelled while the mesh (or a resolver) was still looking the callee up:
                # the lookup, when it answers, finds the INVITE answered and drops it.
                reply(self.txl, key, cancel, 200, now=now)
                invite = self.txl.server_request(invite_key)
                if invite is not None:
                    reply(self.txl, invite_key, invite, 487, now=now)
                return
            reply(self.txl, key, cancel, 481, now=now)
            return
        reply(self.txl, key, cancel, 200, now=now)
        ctx.cancelled = True
        log.info("call %s cancelled by caller", ctx.label or ctx.request.call_id)
        self.cancel_branches(ctx, now)
        self.maybe_answer(ctx, now)

    def cancel_branches(self, ctx: ProxiedRequest, now: float) -> None:
        """CANCEL every pending INVITE branch (RFC 3261 16.10). One with no provisional
        response yet (not even 100) may not be cancelled (9.1): it keeps its INVITE going
        and gets its CANCEL with its first provisional (on_response), or times out."""
        if ctx.request.method != "INVITE":
            return
        for branch in ctx.branches:
            if branch.final is not None or branch.cancel_sent:
                continue
            branch.cancel_wanted = True
            if self.txl.client_state(branch.key) == PROCEEDING:
                branch.cancel_sent = True
                self.txl.send_request(cancel_for(branch.request), branch.dest, now)
                # No final within 64*T1 of the CANCEL: the branch is given up (9.1).
                self.txl.cancel_client(branch.key)

    def expire(self, now: float) -> None:
        """Timer C: give up INVITEs that have rung unanswered for too long."""
        for ctx in list(self.by_server.values()):
            if not ctx.answered and not ctx.cancelled and now - ctx.started > TIMER_C:
                log.info("call %s not answered in %.0fs, giving up", ctx.label, TIMER_C)
                ctx.cancelled = True
                self.cancel_branches(ctx, now)
                self.maybe_answer(ctx, now)


def cancel_for(request: Request) -> Request:
    """CANCEL for a forwarded INVITE: same Request-URI, top Via, Call-ID, From, To, Route."""
    headers = [(n, v) for n, v in request.headers if n in ("From", "To", "Call-ID", "Route")]
    headers.insert(0, ("Via", request.get("Via") or ""))
    headers.append(("CSeq", f"{request.cseq[0]} CANCEL"))
    headers.append(("Max-Forwards", "70"))
    return Request("CANCEL", request.uri.copy(), headers)


def best_response(finals: list[Response]) -> Response | None:
    if not finals:
        return None
    six = [r for r in finals if r.status >= 600]
    if six:
        return six[0]
    # Lowest class wins; within it prefer auth challenges, then the first one (16.7.6).
    return min(finals, key=lambda r: (r.status // 100, r.status not in (401, 407), 0))
