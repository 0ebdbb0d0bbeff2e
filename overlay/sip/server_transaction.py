"""Server transactions (RFC 3261 17.2, RFC 6026 "Accepted"): the half of the transaction
layer that receives requests and sends the TU's responses to them.

`ServerTransactions` is a mixin of `TransactionLayer` (overlay/sip/transaction.py), which
owns the tables, the timer heap and the outputs; this module holds the server state
machines: a request or ACK arriving (new, or a retransmission to absorb), the TU's
response, Timers G/H/I/L firing, and CANCEL matching. Server transactions are keyed by
(branch, sent-by, method) with ACK mapped to INVITE (17.2.3); requests whose branch lacks
the z9hG4bK cookie fall back to RFC 2543 matching on Request-URI, To tag, From tag,
Call-ID, CSeq number and top Via. A transaction drops its parsed request once it has a
final response; completed UDP non-INVITE ones shrink further (completed.py).
"""

from __future__ import annotations

import secrets
from collections import deque
from typing import TYPE_CHECKING

from .message import Request, Response
from .responses import make_response
from .transaction_events import (
    _END,
    _RT,
    ACCEPTED,
    COMPLETED,
    CONFIRMED,
    MAGIC_COOKIE,
    PROCEEDING,
    TRYING,
    Address,
    Event,
    RequestReceived,
    ServerKey,
    ServerTerminated,
    _is_reliable,
)
from .uri import format_hostport

if TYPE_CHECKING:
    from .completed import _Done

# Live server transactions kept at most, and INVITE ones among them (calls being set up).
MAX_SERVERS = 20_000
MAX_INVITE_SERVERS = 2_000


class _ServerTx:
    __slots__ = (
        "key", "request", "source", "invite", "reliable", "state", "last_response",
        "interval", "timers", "alive", "fallback", "final_to_tag",
    )

    def __init__(
        self, key: ServerKey, request: Request, source: Address, state: str, fallback: bool
    ) -> None:
        self.key = key
        self.request = request
        self.source = source
        self.invite = request.method == "INVITE"
        self.reliable = _is_reliable(source)
        self.state = state
        self.last_response: bytes | None = None
        self.interval = 0.0
        self.timers: list[float | None] = [None, None]
        self.alive = True
        self.fallback = fallback
        self.final_to_tag: str | None = None


class ServerTransactions:
    """The server side of `TransactionLayer` (a mixin: the layer owns the state it uses)."""

    # Owned by TransactionLayer.
    t1: float
    t2: float
    t4: float
    stats: dict[str, int]
    max_servers: int
    max_invite_servers: int
    retry_after: int
    _invite_servers: int
    _servers: dict[ServerKey, _ServerTx]
    _done: dict[ServerKey, _Done]
    _events: deque[Event]
    _outgoing: list[tuple[bytes, Address]]

    if TYPE_CHECKING:
        def _set(self, tx: _ServerTx, slot: int, when: float) -> None: ...
        def _terminate(self, tx: _ServerTx) -> None: ...
        def _touch(self, now: float) -> None: ...
        def _keep_completed(self, tx: _ServerTx, data: bytes, now: float) -> None: ...

    def send_response(self, response: Response, server_key: ServerKey, now: float) -> None:
        self._touch(now)
        tx = self._servers.get(server_key)
        status = response.status
        if tx is None or not self._accepts(tx, status):
            self.stats["responses_dropped"] += 1
            return
        data = response.encode()
        self._outgoing.append((data, tx.source))
        if status < 200:
            tx.last_response = data
            tx.state = PROCEEDING
            return
        tx.request = None  # answered: retransmissions need only the response bytes
        if tx.invite:
            if status < 300:
                if tx.state != ACCEPTED:
                    tx.state = ACCEPTED
                    tx.last_response = None
                    self._set(tx, _END, now + 64 * self.t1)  # Timer L
            else:
                tx.state = COMPLETED
                tx.last_response = data
                if tx.fallback:
                    tx.final_to_tag = _to_tag(response)
                if not tx.reliable:
                    tx.interval = self.t1
                    self._set(tx, _RT, now + self.t1)  # Timer G
                self._set(tx, _END, now + 64 * self.t1)  # Timer H
        else:
            tx.state = COMPLETED
            self._terminate(tx)  # Timer J = 0 on TCP; on UDP it lives on as a tuple:
            if not tx.reliable:
                self._keep_completed(tx, data, now)

    def find_invite_server(self, cancel: Request) -> ServerKey | None:
        """The INVITE server transaction a CANCEL matches (RFC 3261 9.2), if still there."""
        try:
            key = self._server_key(cancel, "INVITE")
        except Exception:
            return None
        tx = self._servers.get(key)
        return tx.key if tx is not None and tx.invite else None

    def server_request(self, server_key: ServerKey) -> Request | None:
        """The request of a server transaction, until its final response has been sent."""
        tx = self._servers.get(server_key)
        return tx.request if tx else None

    def _receive_request(self, request: Request, source: Address, now: float) -> None:
        method = request.method
        try:
            if request._cseq_view()[1] != method:
                raise ValueError("CSeq method differs from the request method")
            key = self._server_key(request, "INVITE" if method == "ACK" else method)
            tx = self._servers.get(key)
            if method == "ACK" and tx is None and not key[0]:
                # An RFC 2543 ACK for an initial INVITE carries the response's To tag, the
                # INVITE had none: match on the rest, then check the tag we answered with.
                tx = self._servers.get(self._server_key(request, "INVITE", ""))
                if tx is not None and tx.final_to_tag not in (None, request._to_view().tag):
                    tx = None
        except Exception:
            self.stats["dropped_malformed"] += 1
            return
        if method == "ACK":
            self._receive_ack(request, source, now, tx)
            return
        if tx is None:
            done = self._done.get(key)
            if done is not None:  # a retransmission: re-send the final response
                self.stats["retransmissions_absorbed"] += 1
                self.stats["retransmissions_sent"] += 1
                self._outgoing.append((done[0], done[1]))
                return
            invite = method == "INVITE"
            if len(self._servers) >= self.max_servers or (
                    invite and self._invite_servers >= self.max_invite_servers):
                self._refuse_overload(request, source)
                return
            tx = _ServerTx(key, request, source, PROCEEDING if invite else TRYING, not key[0])
            self._servers[key] = tx
            self._invite_servers += invite
            self._events.append(RequestReceived(request, source, key))
            return
        # A retransmission: absorbed; re-send the last response in Proceeding/Completed.
        self.stats["retransmissions_absorbed"] += 1
        if tx.last_response is not None and tx.state in (PROCEEDING, COMPLETED):
            self.stats["retransmissions_sent"] += 1
            self._outgoing.append((tx.last_response, tx.source))

    def _refuse_overload(self, request: Request, source: Address) -> None:
        """503 with Retry-After, sent without a transaction: the tables are full. A phone
        retransmitting meanwhile gets the same answer, each time with no state kept."""
        self.stats["overload_refused"] += 1
        response = make_response(request, 503, None, secrets.token_hex(6))
        response.add("Retry-After", str(self.retry_after))
        self._outgoing.append((response.encode(), source))

    def _receive_ack(
        self, request: Request, source: Address, now: float, tx: _ServerTx | None
    ) -> None:
        if tx is None or tx.state == ACCEPTED:
            # An ACK for a 2xx: end-to-end, not part of any server transaction.
            self._events.append(RequestReceived(request, source, None))
        elif tx.state == COMPLETED:
            self.stats["acks_absorbed"] += 1
            tx.state = CONFIRMED
            tx.last_response = None  # Confirmed only absorbs ACKs
            tx.timers[_RT] = None  # stop Timer G
            if tx.reliable:
                self._terminate(tx)  # Timer I = 0
            else:
                self._set(tx, _END, now + self.t4)  # Timer I
        elif tx.state == CONFIRMED:
            self.stats["retransmissions_absorbed"] += 1
        else:
            self.stats["dropped_unexpected"] += 1

    def _server_key(
        self, request: Request, method: str, to_tag: str | None = None
    ) -> ServerKey:
        """The server key for `request` with `method` (ACK already mapped to INVITE).

        For an RFC 2543 request `to_tag` overrides the request's To tag (used to match an
        ACK, which carries the response's tag, against an initial INVITE, which had none).
        """
        via = request._top_via_view()
        branch = via.params.get("branch")
        if branch and branch.startswith(MAGIC_COOKIE):
            return (branch, format_hostport(via.host.lower(), via.port), method)
        if to_tag is None:
            to_tag = request._to_view().tag or ""
        ident = "|".join((
            "rfc2543", str(request.uri), to_tag, request._from_view().tag or "",
            request.call_id, str(request._cseq_view()[0]), (request.get("Via") or "").strip(),
        ))
        return ("", ident, method)

    def _accepts(self, tx: _ServerTx, status: int) -> bool:
        state = tx.state
        if state in (TRYING, PROCEEDING):
            return True
        return tx.invite and state == ACCEPTED and 200 <= status < 300

    def _server_timer(self, tx: _ServerTx, slot: int, now: float) -> None:
        if slot == _RT:
            if tx.state == COMPLETED and tx.last_response is not None:  # Timer G
                self.stats["retransmissions_sent"] += 1
                self._outgoing.append((tx.last_response, tx.source))
                tx.interval = min(tx.interval * 2, self.t2)
                self._set(tx, _RT, now + tx.interval)
            return
        if tx.invite and tx.state == COMPLETED:  # Timer H: the ACK never came
            self.stats["server_timeouts"] += 1
            self._events.append(ServerTerminated(tx.key))
        self._terminate(tx)  # also Timers I, J, L


def _to_tag(message: Request | Response) -> str | None:
    try:
        return message._to_view().tag
    except Exception:
        return None
