"""Client transactions (RFC 3261 17.1, RFC 6026 "Accepted"): the half of the transaction
layer that sends requests and matches the responses to them.

`ClientTransactions` is a mixin of `TransactionLayer` (overlay/sip/transaction.py), which
owns the tables, the timer heap and the outputs; this module holds the client state
machines: starting a transaction, a response arriving (INVITE and non-INVITE), Timers
A/B/D and E/F/K/M firing, CANCEL and transport errors, and the ACK for a non-2xx.
Client transactions are keyed by (top Via branch, CSeq method) (17.1.3).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from .message import Request, Response
from .transaction_events import (
    _END,
    _RT,
    ACCEPTED,
    CALLING,
    COMPLETED,
    MAGIC_COOKIE,
    PROCEEDING,
    TRYING,
    Address,
    ClientKey,
    ClientTimeout,
    Event,
    ResponseReceived,
    StrayResponse,
    TransportFailed,
    _is_reliable,
)

TIMER_D_UDP = 32.0
_ALIVE_CLIENT = (CALLING, TRYING, PROCEEDING)


class _ClientTx:
    __slots__ = (
        "key", "request", "dest", "invite", "reliable", "state", "data", "interval",
        "timers", "alive", "ack", "cancel_deadline",
    )

    def __init__(
        self, key: ClientKey, request: Request, dest: Address, data: bytes, state: str
    ) -> None:
        self.key = key
        self.request = request
        self.dest = dest
        self.invite = request.method == "INVITE"
        self.reliable = _is_reliable(dest)
        self.state = state
        self.data = data
        self.interval = 0.0
        self.timers: list[float | None] = [None, None]
        self.alive = True
        self.ack: bytes | None = None
        self.cancel_deadline: float | None = None


def client_key_of(message: Request | Response) -> ClientKey | None:
    """The client transaction key a request we sent (or a response to it) belongs to.

    For the transport adapter: it can map a failed send back to `client_transport_error`.
    """
    try:
        branch = message._top_via_view().branch
        method = message._cseq_view()[1]
    except Exception:
        return None
    if not branch:
        return None
    return (branch, method)


class ClientTransactions:
    """The client side of `TransactionLayer` (a mixin: the layer owns the state it uses)."""

    # Owned by TransactionLayer.
    t1: float
    t2: float
    t4: float
    stats: dict[str, int]
    _clients: dict[ClientKey, _ClientTx]
    _events: deque[Event]
    _outgoing: list[tuple[bytes, Address]]
    _now: float

    if TYPE_CHECKING:
        def _set(self, tx: _ClientTx, slot: int, when: float) -> None: ...
        def _terminate(self, tx: _ClientTx) -> None: ...
        def _touch(self, now: float) -> None: ...

    def send_request(self, request: Request, dest: Address, now: float) -> ClientKey:
        """Start a client transaction; the request already carries its top Via branch."""
        self._touch(now)
        if request.method == "ACK":
            raise ValueError("ACK is not a transaction: use send_stateless")
        branch = request._top_via_view().branch
        if not branch or not branch.startswith(MAGIC_COOKIE):
            raise ValueError("the top Via needs a z9hG4bK branch")
        key = (branch, request._cseq_view()[1])
        if key in self._clients:
            raise ValueError(f"client transaction {key} already exists")
        invite = request.method == "INVITE"
        tx = _ClientTx(key, request, dest, request.encode(), CALLING if invite else TRYING)
        self._clients[key] = tx
        self._outgoing.append((tx.data, dest))
        if not tx.reliable:
            tx.interval = self.t1
            self._set(tx, _RT, now + self.t1)  # Timer A / E
        self._set(tx, _END, now + 64 * self.t1)  # Timer B / F
        return key

    def cancel_client(self, client_key: ClientKey) -> None:
        """Stop retransmitting the request; no message is sent.

        The transaction still matches responses (a 487 is ACKed and passed up) and still
        ends with a final response or a ClientTimeout: Timer B/F keep running, and an
        INVITE in Proceeding times out 64*T1 after this call.
        """
        tx = self._clients.get(client_key)
        if tx is None or tx.state not in _ALIVE_CLIENT or tx.cancel_deadline is not None:
            return
        tx.cancel_deadline = self._now + 64 * self.t1
        tx.timers[_RT] = None
        if tx.invite and tx.state == PROCEEDING:
            self._set(tx, _END, tx.cancel_deadline)

    def client_transport_error(self, client_key: ClientKey, now: float) -> None:
        self._touch(now)
        tx = self._clients.get(client_key)
        if tx is None:
            return
        if tx.state in _ALIVE_CLIENT:
            self.stats["transport_failures"] += 1
            self._events.append(TransportFailed(tx.key, tx.request))
        self._terminate(tx)

    def _receive_response(self, response: Response, source: Address, now: float) -> None:
        try:
            branch = response._top_via_view().branch
            method = response._cseq_view()[1]
        except Exception:
            self.stats["dropped_malformed"] += 1
            return
        tx = self._clients.get((branch, method)) if branch else None
        if tx is None:
            self.stats["stray_responses"] += 1
            self._events.append(StrayResponse(response, source))
            return
        if tx.invite:
            passed_up = self._invite_response(tx, response, now)
        else:
            passed_up = self._non_invite_response(tx, response.status, now)
        if passed_up:
            self._events.append(ResponseReceived(response, tx.key))

    def _invite_response(self, tx: _ClientTx, response: Response, now: float) -> bool:
        """An INVITE client transaction takes `response`: whether it goes up to the TU."""
        status = response.status
        state = tx.state
        if state in (CALLING, PROCEEDING):
            if status < 200:
                tx.state = PROCEEDING
                tx.timers[_RT] = None  # stop Timer A
                # Timer B only runs in Calling; a cancelled INVITE keeps its deadline.
                if tx.cancel_deadline is None:
                    tx.timers[_END] = None
                elif tx.timers[_END] != tx.cancel_deadline:
                    self._set(tx, _END, tx.cancel_deadline)
            elif status < 300:
                tx.state = ACCEPTED
                tx.timers[_RT] = None
                tx.request = tx.data = None  # no more retransmissions or timeouts
                self._set(tx, _END, now + 64 * self.t1)  # Timer M
            else:
                tx.state = COMPLETED
                tx.timers[_RT] = None
                tx.ack = _make_ack(tx.request, response).encode()
                tx.request = tx.data = None
                self._outgoing.append((tx.ack, tx.dest))
                if tx.reliable:
                    self._terminate(tx)  # Timer D = 0
                else:
                    self._set(tx, _END, now + TIMER_D_UDP)  # Timer D
            return True
        if state == ACCEPTED and 200 <= status < 300:
            return True  # RFC 6026: every 2xx goes up to the TU
        self.stats["retransmissions_absorbed"] += 1
        if state == COMPLETED and status >= 300 and tx.ack is not None:
            self.stats["retransmissions_sent"] += 1
            self._outgoing.append((tx.ack, tx.dest))
        return False

    def _non_invite_response(self, tx: _ClientTx, status: int, now: float) -> bool:
        """A non-INVITE client transaction takes a response: whether it goes up to the TU."""
        if tx.state not in (TRYING, PROCEEDING):
            self.stats["retransmissions_absorbed"] += 1
            return False
        if status < 200:
            tx.state = PROCEEDING
        else:
            tx.state = COMPLETED
            tx.timers[_RT] = None
            tx.request = tx.data = None
            if tx.reliable:
                self._terminate(tx)  # Timer K = 0
            else:
                self._set(tx, _END, now + self.t4)  # Timer K
        return True

    def _client_timer(self, tx: _ClientTx, slot: int, now: float) -> None:
        state = tx.state
        if slot == _RT:
            if tx.cancel_deadline is not None:
                return
            if state == CALLING:  # Timer A: doubles without a cap
                tx.interval *= 2
            elif state == TRYING:  # Timer E in Trying: doubles up to T2
                tx.interval = min(tx.interval * 2, self.t2)
            elif state == PROCEEDING and not tx.invite:  # Timer E in Proceeding: T2
                tx.interval = self.t2
            else:
                return
            self.stats["retransmissions_sent"] += 1
            self._outgoing.append((tx.data, tx.dest))
            self._set(tx, _RT, now + tx.interval)
            return
        if state in _ALIVE_CLIENT:  # Timer B / F (or a cancelled INVITE's deadline)
            self.stats["client_timeouts"] += 1
            self._events.append(ClientTimeout(tx.key, tx.request))
        self._terminate(tx)  # also Timers D, K, M


def _make_ack(invite: Request, response: Response) -> Request:
    """The ACK for a non-2xx final response (RFC 3261 17.1.1.3)."""
    headers: list[tuple[str, str]] = [("Via", invite.get("Via") or "")]
    headers.extend(("Route", value) for value in invite.get_all("Route"))
    headers.append(("Max-Forwards", (invite.get("Max-Forwards") or "70").strip()))
    headers.append(("From", invite.get("From") or ""))
    headers.append(("To", response.get("To") or invite.get("To") or ""))
    headers.append(("Call-ID", invite.get("Call-ID") or ""))
    headers.append(("CSeq", f"{invite.cseq[0]} ACK"))
    return Request("ACK", invite.uri, headers)
