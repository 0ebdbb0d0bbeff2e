"""Routing to other boxes: an extension not registered here is looked up in the mesh and
the request sent on to the boxes that serve it, marked with Meshsip-Hop so that the box
there serves it from its own registrations and never asks the mesh again (no loops).

An INVITE branch to a box that says nothing at all (not even 100 Trying) within
BOX_ANSWER_TIMEOUT is abandoned: the box is taken for gone, the mesh told to forget it, and
the extension looked up once more. Each lookup is a named pending object with one way to
finish, its call: the mesh always answers (an empty list when it found nothing, failed or
timed out), and the lookup checks first that the caller is still waiting.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from overlay.sip.message import Request
from overlay.sip.responses import make_response
from overlay.sip.routing import Address, new_tag
from overlay.sip.transaction import PROCEEDING, TRYING, TransactionLayer
from overlay.sip.uri import parse_uri

from ..registrar import Location
from .calls import Calls
from .context import Contexts, ProxiedRequest, reply
from .hops import Hops, copy_request

log = logging.getLogger("meshsip.proxy")
# Another box answers an INVITE with 100 Trying at once. One that says nothing for this
# long is taken for gone (powered off, out of reach): its branch is given up and the
# extension looked up again, instead of waiting 64*T1 (Timer B) for nothing.
BOX_ANSWER_TIMEOUT = 2.0
# Asks the mesh which boxes serve an extension; the answer (their SIP URIs) comes later,
# through the callback, with the time it arrived.
FindRemote = Callable[[str, Callable[[list[str], float], None]], None]
# Tells the mesh a box it named did not answer, so the next lookup is not served from cache.
ForgetRemote = Callable[[str], None]
# Marks a request one box sends another for a phone registered there.
HOP_HEADER = "Meshsip-Hop"


class BoxLookup:
    """The mesh was asked for the boxes that serve the extension of a request that is not
    registered here; the request waits (an INVITE in Proceeding) for the answer."""

    def __init__(self, boxes: Boxes, request: Request, source: Address, key: object) -> None:
        self.boxes, self.request, self.source, self.key = boxes, request, source, key

    def __call__(self, found: list[str], now: float) -> None:
        boxes = self.boxes
        if boxes.txl.server_state(self.key) not in (TRYING, PROCEEDING) or \
                self.key in boxes.contexts.by_server:
            return  # the caller gave up (CANCEL, timeout) while we looked
        if not found:
            boxes.not_here(self.request, self.key, now)
            return
        boxes.fork(self.request, self.source, self.key, found, now)


class SecondLookup:
    """A box stayed silent: the extension is looked up once more, and the boxes in the
    answer that were not tried yet get a branch of the same call."""

    def __init__(self, boxes: Boxes, ctx: ProxiedRequest) -> None:
        self.boxes, self.ctx = boxes, ctx

    def __call__(self, found: list[str], now: float) -> None:
        ctx, boxes = self.ctx, self.boxes
        if ctx.answered:
            return  # cancelled meanwhile
        tried = {b.dest for b in ctx.branches}
        for box in found:
            dest = boxes.hops.uri_address(parse_uri(box))
            if dest not in tried:
                tried.add(dest)
                log.info("call %s: trying box %s", ctx.label, box)
                boxes.contexts.add_branch(ctx, to_box(ctx.request, boxes.hops.token), dest,
                                          now, BOX_ANSWER_TIMEOUT)
        boxes.contexts.maybe_answer(ctx, now)


@dataclass(eq=False)
class Boxes:
    txl: TransactionLayer
    location: Location
    hops: Hops
    calls: Calls
    contexts: Contexts
    find_remote: FindRemote | None = None  # plugged in by the node, with its mesh
    forget_remote: ForgetRemote | None = None

    def route(self, request: Request, source: Address, key: object, now: float) -> None:
        """The request's extension has no contact here: ask the mesh, unless another box
        sent it (then it is not registered anywhere we know of)."""
        if self.find_remote is not None and request.get(HOP_HEADER) is None:
            self.find_remote(request.uri.user or "", BoxLookup(self, request, source, key))
            return
        self.not_here(request, key, now)

    def not_here(self, request: Request, key: object, now: float) -> None:
        extension = request.uri.user or ""
        status = 480 if extension in self.location.known else 404
        if request.method == "INVITE":
            log.info("call %s -> %s: %d (not registered)", request.from_user or "?",
                     extension, status)
        reply(self.txl, key, request, status, None, now)

    def fork(self, request: Request, source: Address, key: object, found: list[str],
             now: float) -> None:
        """Send the request on to the boxes the mesh named."""
        extension, caller = request.uri.user or "", request.from_user or "?"
        targets = [(to_box(request, self.hops.token), self.hops.uri_address(parse_uri(box)))
                   for box in found]
        if request.method == "INVITE":
            self.calls.ringing(request.call_id, caller, extension, now,
                               "via box " + ", ".join(found))
        self.contexts.start(request, source, key, targets, now, f"{caller} -> {extension}",
                            BOX_ANSWER_TIMEOUT)

    # -- boxes that do not answer ----------------------------------------------------------
    def get_timer(self) -> float | None:
        """When handle_timer wants to run next (None: nothing to wait for)."""
        return min(self.contexts.deadlines.values(), default=None)

    def handle_timer(self, now: float) -> None:
        """INVITE branches to other boxes that got no answer at all in BOX_ANSWER_TIMEOUT
        are given up (480), and the extension looked up once more: the answer we had may be
        stale (cached, or a record of a box that just died), and the boxes that stayed
        silent are not tried again within this call."""
        for ctx, branch in self.contexts.overdue(now):
            branch.final = make_response(ctx.request, 480, "Box unreachable", new_tag())
            extension = ctx.request.uri.user or ""
            log.info("call %s: box %s:%d silent for %.0fs, given up", ctx.label,
                     branch.dest[1], branch.dest[2], BOX_ANSWER_TIMEOUT)
            if self.forget_remote is not None:
                self.forget_remote(extension)
            if (ctx.looked_again or ctx.cancelled or self.find_remote is None
                    or any(b.final is None for b in ctx.branches)):
                self.contexts.maybe_answer(ctx, now)
                continue
            ctx.looked_again = True
            self.find_remote(extension, SecondLookup(self, ctx))


def to_box(request: Request, token: str) -> Request:
    """The request as sent to another box: marked, so that box serves it from its own
    registrations. The Request-URI stays (the extension is what counts there)."""
    copy = copy_request(request)
    copy.set(HOP_HEADER, token)
    return copy
