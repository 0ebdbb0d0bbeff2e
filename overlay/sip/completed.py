"""Completed non-INVITE server transactions over UDP, shrunk to what Timer J needs.

Under REGISTER load these are the bulk of the transaction layer's state. Once the final
response is sent, such a transaction only has to absorb retransmitted requests by
re-sending that response until Timer J (64*T1) fires, so it lives on as one tuple: the
encoded final response, where it went, Timer J's deadline and the server key (a tuple of
atoms, which the garbage collector stops tracking). Timer J is the same for all of them,
so they wait in a FIFO rather than in the layer's timer heap. At most `max_completed`
wait: past that the oldest ends early (counted in stats["completed_expired_early"]), so a
flood of requests cannot grow the table without bound.

`CompletedServers` is a mixin of `TransactionLayer` (overlay/sip/transaction.py), which
owns `_done` and `_done_fifo`; the server side (server_transaction.py) reads `_done` to
answer a retransmission.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from .transaction_events import Address, ServerKey

if TYPE_CHECKING:
    from .server_transaction import _ServerTx

# Completed UDP non-INVITE server transactions kept for Timer J at most (under 1 KiB each).
MAX_COMPLETED = 50_000
# A completed non-INVITE UDP server transaction: (final response, its destination, the
# Timer J deadline, the server key).
_Done = tuple[bytes, Address, float, ServerKey]


class CompletedServers:
    """The Timer J table of `TransactionLayer` (a mixin: the layer owns the state)."""

    # Owned by TransactionLayer.
    t1: float
    max_completed: int
    stats: dict[str, int]
    _done: dict[ServerKey, _Done]  # by key
    _done_fifo: deque[_Done]  # the same, oldest first (and entries already gone)

    def _keep_completed(self, tx: _ServerTx, data: bytes, now: float) -> None:
        """Keep an ended UDP non-INVITE server transaction's final response until Timer J."""
        self.keep_answer(tx.key, data, tx.source, now)

    def keep_answer(self, key: ServerKey, data: bytes, source: Address, now: float) -> float:
        """Keep the final response `data` to the UDP non-INVITE request of `key`, sent to
        `source`, until Timer J: a transaction completed at once (also for a request that
        was answered without one, appliance/refresh.py). Returns Timer J's deadline."""
        deadline = now + 64 * self.t1
        entry = (data, source, deadline, key)
        self._done[key] = entry
        self._done_fifo.append(entry)
        if len(self._done) > self.max_completed:
            self._expire_completed_early()
        return deadline

    def _completed_deadline(self) -> float | None:
        """The first Timer J deadline (dropping the FIFO's entries that already ended)."""
        fifo = self._done_fifo
        while fifo:
            entry = fifo[0]
            if self._done.get(entry[3]) is entry:
                return entry[2]
            fifo.popleft()
        return None

    def _expire_completed(self, now: float) -> None:
        """Fire every Timer J due by `now`."""
        fifo, done = self._done_fifo, self._done
        while fifo:
            entry = fifo[0]
            if done.get(entry[3]) is entry:
                if entry[2] > now:
                    break
                del done[entry[3]]  # Timer J
            fifo.popleft()

    def _expire_completed_early(self) -> None:
        fifo, done = self._done_fifo, self._done
        while len(done) > self.max_completed and fifo:
            entry = fifo.popleft()
            if done.get(entry[3]) is entry:
                del done[entry[3]]
                self.stats["completed_expired_early"] += 1
