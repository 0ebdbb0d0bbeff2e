"""Request plumbing and timers of a Chord node: what goes out, what comes back, when.

Every request the node sends is a `_Req` in `_pending` (by transaction id) with ONE
completion callable, `done(answer)`: called with the response (which may be an `Error`
answer) or with None when every try timed out. So a piece of pending work cannot forget
one of the three endings. Timeouts follow the measured round trip (`_RoundTrip`), capped
by the configured ones; a recursive lookup hop's provisional `Ack` extends its deadline.
(A receiver that lacks our certificate is the codec's business: overlay/chord/wire.)

Timers live in one heap with lazy deletion: an entry is (when, seq, kind, key) and is
valid while the thing it times still has that deadline (`_pending[key].deadline`,
`_lookups[key].deadline`, or `_due[kind]` for the periodic kinds). `_periodic(kind,
when)` (re)schedules a periodic kind; `_periodic_by(kind, when)` schedules it no later
than `when`.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from .lifecycle import LEAVING, LEFT
from .messages import Ack, Message, NodeRef

if TYPE_CHECKING:
    from .events import Event

Done = Callable[[Message | None], None]  # the answer (maybe an Error), or None: timed out


class _Req:
    __slots__ = (
        "txn", "dest", "msg", "tries", "timeout", "deadline", "done", "provisional",
        "sent_at", "retransmitted",
    )

    def __init__(
        self, dest: NodeRef, msg: Message, tries: int, timeout: float, done: Done | None,
        provisional: bool,
    ) -> None:
        self.txn = msg.txn
        self.dest = dest
        self.msg = msg
        self.tries = tries
        self.timeout = timeout
        self.deadline = 0.0
        self.done = done
        self.provisional = provisional
        self.sent_at = 0.0
        self.retransmitted = False


class _RoundTrip:
    """Smoothed round-trip time of our requests (RFC 6298), for their timeouts: the
    configured timeouts are upper bounds, so a lost message on a fast link costs a few
    round trips, not half a second (boxes powered on together exchange chains of
    requests, each waiting on the last)."""

    __slots__ = ("srtt", "rttvar")

    def __init__(self) -> None:
        self.srtt: float | None = None
        self.rttvar = 0.0

    def sample(self, rtt: float) -> None:
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt

    def timeout(self, cap: float, floor: float) -> float:
        if self.srtt is None:
            return cap
        return min(cap, max(floor, self.srtt + 4 * self.rttvar))


class Plumbing:
    """Outputs, the timer heap, requests and responses (state: `_out`, `_events`,
    `_pending`, `_timers`, `_due`, `_rtt`). The request handlers (`_handlers`, by message
    type) are filled in by the node."""

    _handlers: ClassVar[dict[type, Callable]] = {}

    def _init_plumbing(self, now: float) -> None:
        self._now = now
        self._events: deque[Event] = deque()
        self._out: list[tuple[NodeRef, Message]] = []
        self._pending: dict[int, _Req] = {}
        self._rtt = _RoundTrip()
        self._timers: list[tuple[float, int, str, int]] = []
        self._due: dict[str, float] = {}
        self._seq = itertools.count()
        self._txn = itertools.count(self.rng.getrandbits(30) + 1)
        self._ids = itertools.count(1)

    # ------------------------------------------------------------------ outputs

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def messages_to_send(self) -> list[tuple[NodeRef, Message]]:
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        heap = self._timers
        while heap:
            entry = heap[0]
            if self._valid(entry):
                return entry[0]
            heapq.heappop(heap)
        return None

    # ------------------------------------------------------------------ inputs

    def handle_timer(self, now: float) -> None:
        self._touch(now)
        heap = self._timers
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if not self._valid(entry):
                continue
            _, _, kind, key = entry
            if self.status == LEFT:
                return
            if kind == "req":
                self._req_timeout(self._pending[key])
            elif kind == "lookup":
                self._lookup_expired(self._lookups[key])
            else:
                self._due.pop(kind, None)
                if self.status != LEAVING:
                    self._periodic_fire(kind)

    def receive(self, msg: Message, now: float) -> None:
        self._touch(now)
        if self.status == LEFT:
            return
        if msg.overlay != self.config.overlay:
            self.stats["dropped_overlay"] += 1
            return
        src = msg.src
        if src.id == self.id:
            return
        self._heard(src)
        handler = self._handlers.get(type(msg))
        if handler is not None:
            if self.status == LEAVING:
                return
            handler(self, msg)
            return
        req = self._pending.get(msg.txn)
        if req is None or req.dest.id != src.id:
            self.stats["stray_responses"] += 1
            return
        if req.provisional and isinstance(msg, Ack):
            req.provisional = False
            req.retransmitted = True  # the final answer's delay is not a round trip
            req.tries = 1
            req.deadline = self._now + self.config.recursive_timeout
            self._at(req.deadline, "req", req.txn)
            return
        del self._pending[msg.txn]
        if not req.retransmitted:  # Karn: a retransmitted request's answer is ambiguous
            self._rtt.sample(self._now - req.sent_at)
        if req.done is not None:
            req.done(msg)

    # ------------------------------------------------------------------ timers

    def _touch(self, now: float) -> None:
        if now > self._now:
            self._now = now

    def _jit(self, interval: float) -> float:
        j = self.config.jitter
        return interval * (1 - j + 2 * j * self.rng.random())

    def _at(self, when: float, kind: str, key: int = 0) -> None:
        heapq.heappush(self._timers, (when, next(self._seq), kind, key))

    def _periodic(self, kind: str, when: float) -> None:
        self._due[kind] = when
        self._at(when, kind)

    def _periodic_by(self, kind: str, when: float) -> None:
        """Run `kind` no later than `when` (sooner if it is due sooner already)."""
        if self._due.get(kind, math.inf) > when:
            self._periodic(kind, when)

    def _valid(self, entry: tuple[float, int, str, int]) -> bool:
        when, _, kind, key = entry
        if kind == "req":
            req = self._pending.get(key)
            return req is not None and req.deadline == when
        if kind == "lookup":
            lk = self._lookups.get(key)
            return lk is not None and lk.deadline == when
        return self._due.get(kind) == when

    # ------------------------------------------------------------------ requests

    def _msg(self, cls: type[Message], txn: int | None = None, **fields: object) -> Message:
        return cls(
            src=self.ref,
            txn=next(self._txn) if txn is None else txn,
            overlay=self.config.overlay,
            **fields,
        )

    def _request(
        self,
        dest: NodeRef,
        cls: type[Message],
        done: Done | None = None,
        attempts: int | None = None,
        timeout: float | None = None,
        provisional: bool = False,
        **fields: object,
    ) -> int:
        """Send a request; `done(answer)` follows once: the response, or None when every
        try (`attempts`, each `timeout` or the measured round trip) went unanswered."""
        c = self.config
        msg = self._msg(cls, **fields)
        req = _Req(
            dest, msg, attempts or c.attempts, self._rtt.timeout(timeout or c.rto, c.rto_min),
            done, provisional,
        )
        self._pending[msg.txn] = req
        self._transmit(req)
        return msg.txn

    def _transmit(self, req: _Req) -> None:
        if req.deadline:
            req.retransmitted = True
        else:
            req.sent_at = self._now
        self._out.append((req.dest, req.msg))
        self.stats["requests_sent"] += 1
        req.deadline = self._now + req.timeout
        self._at(req.deadline, "req", req.txn)

    def _req_timeout(self, req: _Req) -> None:
        req.tries -= 1
        if req.tries > 0:
            self._transmit(req)
            return
        del self._pending[req.txn]
        self.stats["timeouts"] += 1
        if req.done is not None:
            req.done(None)

    def _reply(self, to: Message, cls: type[Message], **fields: object) -> None:
        self._out.append((to.src, self._msg(cls, txn=to.txn, **fields)))
        self.stats["responses_sent"] += 1
