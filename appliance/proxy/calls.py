"""Call bookkeeping: the calls the box is carrying, for its status and its log.

A call is entered when an INVITE is forked (to phones here or to other boxes), becomes
established on its 2xx and leaves on its BYE or on a failed INVITE. Nothing routes by it:
losing an entry loses a status line, never a call. So the table is bounded by dropping
the oldest entry (a call whose BYE never passed here, most likely).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger("meshsip.proxy")
MAX_CALLS = 4096  # entries kept, oldest out


@dataclass
class Call:
    caller: str
    callee: str
    state: str  # "ringing" | "established"
    started: float


class Calls:
    def __init__(self, counters: dict[str, int], max_calls: int = MAX_CALLS) -> None:
        self.table: dict[str, Call] = {}  # by Call-ID, oldest first
        self.counters = counters
        self.max_calls = max_calls

    def ringing(self, call_id: str, caller: str, callee: str, now: float, how: str) -> None:
        """An INVITE goes out to the callee (`how`: to which contacts or boxes)."""
        self.counters["calls"] += 1
        log.info("call %s -> %s %s Call-ID %s", caller, callee, how, call_id)
        table = self.table
        table.pop(call_id, None)
        table[call_id] = Call(caller, callee, "ringing", now)
        if len(table) > self.max_calls:
            del table[next(iter(table))]

    def answered(self, call_id: str, label: str, now: float) -> None:
        call = self.table.get(call_id)
        if call is not None:
            call.state, call.started = "established", now
            log.info("call %s answered", label)

    def ended(self, call_id: str, now: float) -> None:
        """A BYE for the call was answered."""
        call = self.table.pop(call_id, None)
        if call is not None:
            log.info("call %s -> %s ended after %.0fs", call.caller, call.callee,
                     now - call.started)

    def failed(self, call_id: str, label: str, status: int, reason: str) -> None:
        if self.table.pop(call_id, None) is not None:
            log.info("call %s failed: %d %s", label, status, reason)

    def forget(self, call_id: str) -> None:
        """A BYE went on (forwarded, or answered with an error): the call is over."""
        self.table.pop(call_id, None)

    def status(self, now: float) -> list[dict[str, object]]:
        return [
            {"call_id": cid, "caller": c.caller, "callee": c.callee, "state": c.state,
             "seconds": round(now - c.started, 1)}
            for cid, c in self.table.items()
        ]
