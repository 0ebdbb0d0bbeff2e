"""INVITE branches the box answered for itself, and the 2xx that may still come on them.

When a branch ends in a final response the box made (timeout, silent box, the 487 after a
CANCEL) and the caller got a non-2xx, the callee may still answer 2xx later. Such a 2xx is
ended here, with ACK and BYE, instead of being forwarded to a caller that cannot take it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from overlay.sip.message import Request, Response
from overlay.sip.routing import Address, new_branch
from overlay.sip.transaction import TransactionLayer
from overlay.sip.uri import parse_name_addr

from .hops import Hops

log = logging.getLogger("meshsip.proxy")


@dataclass
class ClosedBranch:
    """An INVITE branch we gave a final answer for ourselves (timeout, silent box) after
    which the caller got a non-2xx: a 2xx arriving on it later is ended here."""

    invite: Request  # as we forwarded it
    dest: Address
    until: float  # the callee retransmits a 2xx for 64*T1 at most (RFC 3261 13.3.1.4)
    ended: set[str] = field(default_factory=set)  # To tags already sent a BYE


@dataclass(eq=False)
class ClosedBranches:
    txl: TransactionLayer
    hops: Hops
    counters: dict[str, int]
    # By our Via branch, oldest first.
    _closed: dict[str, ClosedBranch] = field(default_factory=dict, init=False)

    def __len__(self) -> int:
        return len(self._closed)

    def close(self, invite: Request, dest: Address, now: float) -> None:
        """`invite` (as forwarded) got a final answer we made: a late 2xx is ours to end."""
        self._closed[invite.via_branch or ""] = ClosedBranch(
            invite, dest, now + 64 * self.txl.t1)

    def expire(self, now: float) -> None:
        """Forget closed branches whose callee has stopped retransmitting any 2xx."""
        while self._closed:
            branch_id, closed = next(iter(self._closed.items()))
            if closed.until > now:
                break
            del self._closed[branch_id]

    def end_if_closed(self, response: Response, now: float) -> bool:
        """Whether a stray response is a 2xx on a closed branch (and so ended here)."""
        if not (200 <= response.status < 300 and response.cseq[1] == "INVITE"):
            return False
        closed = self._closed.get(response.via_branch or "")
        if closed is None:
            return False
        self._end_call(closed, response, now)
        return True

    def _end_call(self, closed: ClosedBranch, response: Response, now: float) -> None:
        """A 2xx on a branch whose caller already has its non-2xx final (487, 408, 480).

        RFC 3261 16.7 step 5 forwards every 2xx upstream, but this one would reach a client
        transaction our non-2xx already completed, where no state takes a 2xx (17.1.1.2;
        RFC 6026 adds Accepted only after a 2xx): the caller could neither ACK nor BYE it,
        and the callee would sit in a call with nobody until it gives up itself after 64*T1
        (13.3.1.4). We made that final answer, so we end the call the way a UAC that gets
        a 2xx after its CANCEL does (15, 9.1): ACK it, then BYE it, along its route set.
        """
        tag = response.to_tag or ""
        number = closed.invite.cseq[0]
        self.txl.send_stateless(self._request(closed, response, "ACK", number), closed.dest)
        if tag in closed.ended:
            return  # a retransmission of that 2xx: the ACK again is all it needs
        closed.ended.add(tag)
        self.txl.send_request(self._request(closed, response, "BYE", number + 1),
                              closed.dest, now)
        self.counters["stray_2xx_ended"] += 1
        log.info("a 2xx for call %s came after its final answer: ACKed and ended with BYE",
                 response.call_id)

    def _request(self, closed: ClosedBranch, response: Response, method: str,
                 cseq: int) -> Request:
        """An in-dialog request toward the callee of the 2xx, along its route set."""
        contact = response.get("Contact")
        target = parse_name_addr(contact, "Contact").uri if contact else closed.invite.uri
        headers = [("Via", self.hops.via(closed.dest, new_branch()))]
        headers += [("Route", r) for r in _route_set(response, self.hops)]
        headers += [("Max-Forwards", "70"), ("From", closed.invite.get("From") or ""),
                    ("To", response.get("To") or ""), ("Call-ID", response.call_id),
                    ("CSeq", f"{cseq} {method}")]
        return Request(method, target.copy(), headers)


def _route_set(response: Response, hops: Hops) -> list[str]:
    """Our route set toward the callee: the Record-Route entries added after ours."""
    routes: list[str] = []
    for value in response.get_all("Record-Route"):
        if hops.is_our_record_route(parse_name_addr(value, "Record-Route").uri):
            break
        routes.insert(0, value)
    return routes
