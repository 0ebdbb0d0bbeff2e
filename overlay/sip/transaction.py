"""SIP transaction layer (RFC 3261 section 17, with the RFC 6026 "Accepted" states).

A sans-IO state machine in the h11/aioquic shape: messages and the current time go in
(`receive`, `send_request`, `send_response`, `handle_timer`), events for the transaction
user (`next_event`), datagrams to send (`messages_to_send`) and the next deadline
(`get_timer`) come out. No clock, sockets or asyncio inside: every time is the `now`
the caller passes, so the real node and the simulator run the same code.

`TransactionLayer` lives here: it owns the transaction tables, the outputs and the timer
heap, and routes each message and fired timer to its side. The rules live beside it:
  - transaction_events.py: addresses, keys, states and the events the TU gets;
  - client_transaction.py: client transactions (17.1), keyed by (branch, CSeq method);
  - server_transaction.py: server transactions (17.2), keyed by (branch, sent-by,
    method), with the RFC 2543 fallback;
  - completed.py: completed UDP non-INVITE server transactions shrunk to one tuple each,
    waiting for Timer J in a FIFO of at most `max_completed`.
Every name callers used from this module is still importable from it.

Timers live in one heap with lazy deletion: each transaction has two timer slots (a
retransmission timer A/E/G and a lifetime timer B/F/D/K/M or H/I/L) and a heap entry
is live only while its transaction is alive and the slot still holds that deadline; the
heap is compacted when dead entries outnumber live ones.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque

from .client_transaction import (
    _ALIVE_CLIENT,
    TIMER_D_UDP,
    ClientTransactions,
    _ClientTx,
    _make_ack,
    client_key_of,
)
from .completed import MAX_COMPLETED, CompletedServers, _Done
from .message import Request, Response
from .server_transaction import (
    MAX_INVITE_SERVERS,
    MAX_SERVERS,
    ServerTransactions,
    _ServerTx,
    _to_tag,
)
from .transaction_events import (
    _END,
    _RT,
    ACCEPTED,
    CALLING,
    COMPLETED,
    CONFIRMED,
    MAGIC_COOKIE,
    PROCEEDING,
    TRYING,
    Address,
    ClientKey,
    ClientTimeout,
    Event,
    RequestReceived,
    ResponseReceived,
    ServerKey,
    ServerTerminated,
    StrayResponse,
    TransportFailed,
    _is_reliable,
)

__all__ = [
    "ACCEPTED", "CALLING", "COMPLETED", "CONFIRMED", "MAGIC_COOKIE", "MAX_COMPLETED",
    "PROCEEDING", "TIMER_D_UDP", "TRYING", "Address", "ClientKey", "ClientTimeout", "Event",
    "RequestReceived", "ResponseReceived", "ServerKey", "ServerTerminated", "StrayResponse",
    "TransactionLayer", "TransportFailed", "client_key_of",
    # internals that lived here, still importable from here (the tests use _make_ack)
    "_ALIVE_CLIENT", "_END", "_RT", "_ClientTx", "_Done", "_ServerTx", "_Tx", "_is_reliable",
    "_make_ack", "_to_tag",
]

_HEAP_SLACK = 4096  # dead heap entries tolerated before a compaction, beyond the live ones

_Tx = _ClientTx | _ServerTx


class TransactionLayer(ClientTransactions, ServerTransactions, CompletedServers):
    """All client and server transactions of one SIP node."""

    def __init__(
        self, t1: float = 0.5, t2: float = 4.0, t4: float = 5.0, *,
        max_completed: int = MAX_COMPLETED, max_servers: int = MAX_SERVERS,
        max_invite_servers: int = MAX_INVITE_SERVERS, retry_after: int = 5,
    ) -> None:
        self.t1 = t1
        self.t2 = t2
        self.t4 = t4
        self.max_completed = max_completed
        # Live server transactions at most, and INVITE ones among them: a new request over
        # either gets 503 with Retry-After, answered statelessly (server_transaction.py).
        self.max_servers = max_servers
        self.max_invite_servers = max_invite_servers
        self.retry_after = retry_after
        self._invite_servers = 0
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
                "overload_refused",  # new requests answered 503: server tables full
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
        timer_j = self._completed_deadline()
        if timer_j is not None and (first is None or timer_j < first):
            first = timer_j
        return first

    def handle_timer(self, now: float) -> None:
        self._touch(now)
        self._expire_completed(now)
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
    # send_request, cancel_client, client_transport_error: client_transaction.py;
    # send_response, find_invite_server, server_request: server_transaction.py.

    def send_stateless(self, message: Request | Response, dest: Address) -> None:
        self._outgoing.append((message.encode(), dest))

    # ------------------------------------------------------------------ network input

    def receive(self, message: Request | Response, source: Address, now: float) -> None:
        self._touch(now)
        if isinstance(message, Response):
            self._receive_response(message, source, now)
        else:
            self._receive_request(message, source, now)

    # ------------------------------------------------------------------ internals

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
                if tx.invite:
                    self._invite_servers -= 1

    def _touch(self, now: float) -> None:
        if now > self._now:
            self._now = now
