"""Stateless forwarding (RFC 3261 16.11): requests without a transaction (an ACK for a 2xx)
and responses no client transaction matched (strays), or that were never ours.

A stray response is forwarded along its second Via only when the top one is ours; a 2xx on a
branch the box answered for itself is ended instead (closed.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from overlay.sip.message import Request, Response
from overlay.sip.routing import Address, via_address
from overlay.sip.transaction import MAGIC_COOKIE, TransactionLayer

from .calls import Calls
from .closed import ClosedBranches
from .hops import Hops, copy_request, next_hop_uri, strip_top_via


@dataclass(eq=False)
class Stateless:
    txl: TransactionLayer
    hops: Hops
    calls: Calls
    closed: ClosedBranches
    counters: dict[str, int]

    def forward_request(self, request: Request) -> None:
        """An ACK for a 2xx (or anything else without a transaction), its Max-Forwards
        checked and our own Route entries gone (intake.py): on along Route or Request-URI."""
        uri = next_hop_uri(request)
        routed = request.get("Route") is not None
        dest = None if not routed and self.hops.names_me(uri) else self.hops.uri_address(uri)
        if dest is None:  # unresolvable, or for the box itself (no ACK of ours is sent)
            self.counters["dropped"] += 1
            return
        out = copy_request(request)
        out.set("Max-Forwards", str(request.max_forwards - 1))
        # Same incoming branch -> same outgoing branch, so retransmissions stay matched (16.11).
        branch = request.via_branch
        digest = hashlib.sha256((branch or request.call_id).encode()).hexdigest()
        out.add("Via", self.hops.via(dest, MAGIC_COOKIE + digest[:16]), first=True)
        self.txl.send_stateless(out, dest)
        self.counters["forwarded"] += 1
        if request.method == "BYE":
            self.calls.forget(request.call_id)

    def on_stray(self, response: Response, source: Address, now: float) -> None:
        """A response no client transaction of ours matched."""
        if self.hops.sent_by_us(response, source):
            self.forward_stray(response, now)
        else:  # never reflected along its other Vias (RFC 3261 16.7 step 3, 16.11)
            self.counters["responses_not_ours"] += 1

    def forward_stray(self, response: Response, now: float) -> None:
        if self.closed.end_if_closed(response, now):
            return
        vias = response.vias
        if len(vias) < 2:
            self.counters["dropped"] += 1
            return
        self.txl.send_stateless(strip_top_via(response), via_address(vias[1]))
        self.counters["stray_forwarded"] += 1
