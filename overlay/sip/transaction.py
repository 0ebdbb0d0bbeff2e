"""SIP transaction layer (RFC 3261 section 17, with the RFC 6026 "Accepted" states).

A sans-IO state machine in the h11/aioquic shape: messages and the current time go in
(`receive`, `send_request`, `send_response`, `handle_timer`), events for the transaction
user (`next_event`), datagrams to send (`messages_to_send`) and the next deadline
(`get_timer`) come out. No clock, sockets or asyncio inside: every time is the `now`
the caller passes, so the real node and the simulator run the same code.

Client transactions are keyed by (top Via branch, CSeq method) (17.1.3). Server
transactions are keyed by (branch, sent-by, method) with ACK mapped to INVITE (17.2.3);
requests whose branch lacks the z9hG4bK cookie fall back to RFC 2543 matching on
Request-URI, To tag, From tag, Call-ID, CSeq number and top Via.

Timers live in one heap with lazy deletion: each transaction has two timer slots (a
retransmission timer A/E/G and a lifetime timer B/F/D/K/M or H/I/L) and a heap entry
is live only while its transaction is alive and the slot still holds that deadline; the
heap is compacted when dead entries outnumber live ones.

Completed non-INVITE server transactions over UDP (the bulk under REGISTER load) shrink
to what absorbing retransmissions needs: the encoded final response, where it went and
Timer J's deadline, in one tuple (which the garbage collector stops tracking). Timer J is
the same 64*T1 for all of them, so they wait in a FIFO rather than in the heap. At most
`max_completed` wait: past that the oldest ends early (counted in
stats["completed_expired_early"]), so a flood of requests cannot grow the table without
bound. Other transactions drop their parsed request once they have a final response.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from dataclasses import dataclass

from .message import Request, Response
from .uri import format_hostport

Address = tuple[str, str, int]  # (transport "UDP" | "TCP", host, port)
ClientKey = tuple[str, str]  # (top Via branch, CSeq method)
# (branch, sent-by, method) with ACK mapped to INVITE; for RFC 2543 requests (no z9hG4bK
# branch) ("", "rfc2543|<Request-URI>|<To tag>|<From tag>|<Call-ID>|<CSeq num>|<Via>", method).
# The TU should treat it as opaque.
ServerKey = tuple[str, str, str]

MAGIC_COOKIE = "z9hG4bK"
TIMER_D_UDP = 32.0
# Completed UDP non-INVITE server transactions kept for Timer J at most (under 1 KiB each).
MAX_COMPLETED = 50_000
# A completed non-INVITE UDP server transaction: (final response, its destination, the
# Timer J deadline, the server key).
_Done = tuple[bytes, Address, float, ServerKey]
_HEAP_SLACK = 4096  # dead heap entries tolerated before a compaction, beyond the live ones

# Transaction states (RFC 3261 figures 5-8, RFC 6026 figures 3 and 5).
CALLING = "Calling"
TRYING = "Trying"
PROCEEDING = "Proceeding"
COMPLETED = "Completed"
ACCEPTED = "Accepted"
CONFIRMED = "Confirmed"

_RT = 0  # timer slot: retransmission (A, E, G)
_END = 1  # timer slot: lifetime (B, F, D, K, M / H, I, J, L)
_ALIVE_CLIENT = (CALLING, TRYING, PROCEEDING)


@dataclass(slots=True)
class RequestReceived:
    """A new request (or an ACK for a 2xx, with server_key None) for the TU."""

    request: Request
    source: Address
    server_key: ServerKey | None


@dataclass(slots=True)
class ResponseReceived:
    response: Response
    client_key: ClientKey


@dataclass(slots=True)
class StrayResponse:
    """A response that matched no client transaction."""

    response: Response
    source: Address


@dataclass(slots=True)
class ClientTimeout:
    """Timer B or F fired (or a cancelled INVITE got no final response): the TU makes a 408."""

    client_key: ClientKey
    request: Request


@dataclass(slots=True)
class TransportFailed:
    client_key: ClientKey
    request: Request


@dataclass(slots=True)
class ServerTerminated:
    """Informative: Timer H fired (a non-2xx final response to an INVITE was never ACKed)."""

    server_key: ServerKey


Event = (
    RequestReceived
    | ResponseReceived
    | StrayResponse
    | ClientTimeout
    | TransportFailed
    | ServerTerminated
)


def _is_reliable(address: Address) -> bool:
    return address[0].upper() != "UDP"


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


_Tx = _ClientTx | _ServerTx


class TransactionLayer:
    """All client and server transactions of one SIP node."""

    def __init__(
        self, t1: float = 0.5, t2: float = 4.0, t4: float = 5.0, *,
        max_completed: int = MAX_COMPLETED,
    ) -> None:
        self.t1 = t1
        self.t2 = t2
        self.t4 = t4
        self.max_completed = max_completed
        self._clients: dict[ClientKey, _ClientTx] = {}
        self._servers: dict[ServerKey, _ServerTx] = {}
        self._events: deque[Event] = deque()
        self._outgoing: list[tuple[bytes, Address]] = []
        self._heap: list[tuple[float, int, _Tx, int]] = []
        # Completed UDP non-INVITE server transactions by key, and the same oldest first.
        self._done: dict[ServerKey, _Done] = {}
        self._done_fifo: deque[_Done] = deque()
        self._seq = itertools.count()
        self._now = 0.0
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "retransmissions_sent",  # requests (A/E), final responses (G), re-sent ACKs
                "retransmissions_absorbed",  # duplicate requests/responses/ACKs not passed up
                "stray_responses",
                "dropped_malformed",  # missing or unparsable Via / CSeq / From / To
                "dropped_unexpected",  # e.g. an ACK before any final response
                "responses_dropped",  # TU response for an unknown or finished transaction
                "acks_absorbed",  # ACKs that confirmed a non-2xx final response
                "client_timeouts",
                "server_timeouts",  # Timer H
                "transport_failures",
                "completed_expired_early",  # ended before Timer J: over max_completed
            ),
            0,
        )

    @property
    def counters(self) -> dict[str, int]:
        return self.stats

    @property
    def client_count(self) -> int:
        return len(self._clients)

    @property
    def server_count(self) -> int:
        return len(self._servers) + len(self._done)

    @property
    def completed_count(self) -> int:
        """UDP non-INVITE server transactions completed and waiting for Timer J."""
        return len(self._done)

    def client_state(self, client_key: ClientKey) -> str | None:
        tx = self._clients.get(client_key)
        return tx.state if tx else None

    def server_state(self, server_key: ServerKey) -> str | None:
        tx = self._servers.get(server_key)
        if tx is not None:
            return tx.state
        return COMPLETED if server_key in self._done else None

    # ------------------------------------------------------------------ outputs

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def messages_to_send(self) -> list[tuple[bytes, Address]]:
        out, self._outgoing = self._outgoing, []
        return out

    def get_timer(self) -> float | None:
        heap = self._heap
        first = None
        while heap:
            when, _, tx, slot = heap[0]
            if tx.alive and tx.timers[slot] == when:
                first = when
                break
            heapq.heappop(heap)
        fifo = self._done_fifo
        while fifo:
            entry = fifo[0]
            if self._done.get(entry[3]) is entry:
                when = entry[2]
                if first is None or when < first:
                    first = when
                break
            fifo.popleft()
        return first

    def handle_timer(self, now: float) -> None:
        self._touch(now)
        fifo, done = self._done_fifo, self._done
        while fifo:
            entry = fifo[0]
            if done.get(entry[3]) is entry:
                if entry[2] > now:
                    break
                del done[entry[3]]  # Timer J
            fifo.popleft()
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, _, tx, slot = heapq.heappop(heap)
            if not tx.alive or tx.timers[slot] != when:
                continue
            tx.timers[slot] = None
            if isinstance(tx, _ClientTx):
                self._client_timer(tx, slot, now)
            else:
                self._server_timer(tx, slot, now)

    # ------------------------------------------------------------------ TU calls

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
                entry = (data, tx.source, now + 64 * self.t1, tx.key)  # Timer J
                self._done[tx.key] = entry
                self._done_fifo.append(entry)
                if len(self._done) > self.max_completed:
                    self._expire_completed_early()

    def send_stateless(self, message: Request | Response, dest: Address) -> None:
        self._outgoing.append((message.encode(), dest))

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

    # ------------------------------------------------------------------ network input

    def receive(self, message: Request | Response, source: Address, now: float) -> None:
        self._touch(now)
        if isinstance(message, Response):
            self._receive_response(message, source, now)
        else:
            self._receive_request(message, source, now)

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
        status = response.status
        state = tx.state
        if tx.invite:
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
            elif state == ACCEPTED and 200 <= status < 300:
                pass  # RFC 6026: every 2xx goes up to the TU
            elif state == COMPLETED and status >= 300 and tx.ack is not None:
                self.stats["retransmissions_absorbed"] += 1
                self.stats["retransmissions_sent"] += 1
                self._outgoing.append((tx.ack, tx.dest))
                return
            else:
                self.stats["retransmissions_absorbed"] += 1
                return
        else:
            if state in (TRYING, PROCEEDING):
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
            else:
                self.stats["retransmissions_absorbed"] += 1
                return
        self._events.append(ResponseReceived(response, tx.key))

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
            tx = _ServerTx(key, request, source, PROCEEDING if invite else TRYING, not key[0])
            self._servers[key] = tx
            self._events.append(RequestReceived(request, source, key))
            return
        # A retransmission: absorbed; re-send the last response in Proceeding/Completed.
        self.stats["retransmissions_absorbed"] += 1
        if tx.last_response is not None and tx.state in (PROCEEDING, COMPLETED):
            self.stats["retransmissions_sent"] += 1
            self._outgoing.append((tx.last_response, tx.source))

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

    # ------------------------------------------------------------------ internals

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

    def _set(self, tx: _Tx, slot: int, when: float) -> None:
        tx.timers[slot] = when
        heap = self._heap
        heapq.heappush(heap, (when, next(self._seq), tx, slot))
        if len(heap) > 2 * (len(self._clients) + len(self._servers)) + _HEAP_SLACK:
            self._compact_heap()

    def _compact_heap(self) -> None:
        """Drop the entries of ended transactions and moved timers (in place: callers hold it)."""
        heap = self._heap
        heap[:] = [e for e in heap if e[2].alive and e[2].timers[e[3]] == e[0]]
        heapq.heapify(heap)

    def _expire_completed_early(self) -> None:
        fifo, done = self._done_fifo, self._done
        while len(done) > self.max_completed and fifo:
            entry = fifo.popleft()
            if done.get(entry[3]) is entry:
                del done[entry[3]]
                self.stats["completed_expired_early"] += 1

    def _terminate(self, tx: _Tx) -> None:
        tx.alive = False
        tx.timers[_RT] = tx.timers[_END] = None
        if isinstance(tx, _ClientTx):
            tx.request = tx.data = tx.ack = None  # type: ignore[assignment]
            if self._clients.get(tx.key) is tx:
                del self._clients[tx.key]
        else:
            tx.request = tx.last_response = None  # type: ignore[assignment]
            if self._servers.get(tx.key) is tx:
                del self._servers[tx.key]

    def _touch(self, now: float) -> None:
        if now > self._now:
            self._now = now


def _to_tag(message: Request | Response) -> str | None:
    try:
        return message._to_view().tag
    except Exception:
        return None


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
