"""The virtual network and the scheduler of the simulator.

One event heap holds message deliveries, node timers and scheduled actions; popping it
is one *step* (`EventLoop.step`). The network gives every link a fixed base delay (from
the seed and the two node ids) plus jitter, drops messages with the configured
probability and drops everything between nodes in different partition groups. After a
node has handled something, `_pump` collects what it wants sent, its events and its next
deadline, and marks the state dirty (for the checker) when its neighbours changed.
`estimate_size` gives a message's bytes when no codec encodes it.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

from overlay.chord.messages import (
    Found,
    Message,
    Neighbors,
    NodeRef,
    Records,
    Redirect,
    Store,
    Transfer,
)
from overlay.chord.node import (
    ChordNode,
    GetDone,
    GetFailed,
    LookupDone,
    LookupFailed,
    PutDone,
    PutFailed,
    RecordRejected,
)

from .wire import Datagram

_DELIVER, _TIMER, _ACTION = 0, 1, 2


def estimate_size(msg: Message) -> int:
    """Bytes of a message SIP-encoded (SOSIMPLE): a ~420-byte request or response line
    and headers, ~80 bytes per DHT-Link (node) header, ~300 per record. Used when the
    wire codec is not available."""
    size = 420
    if isinstance(msg, Neighbors):
        size += 80 * (len(msg.successors) + (msg.predecessor is not None))
    elif isinstance(msg, Found):
        size += 80 * len(msg.successors)
    elif isinstance(msg, Redirect):
        size += 80 * len(msg.closer)
    elif isinstance(msg, Store | Transfer | Records):
        size += 300 * len(msg.records)
    return size


class EventLoop:
    """The heap, the clock and the network of `Simulation` (a mixin: its state is set
    up in `Simulation.__init__`)."""

    def _init_loop(self) -> None:
        self._heap: list[tuple[float, int, int, int, Any]] = []
        self._seq = itertools.count()
        self._timer_at: dict[int, float] = {}  # node id -> its timer entry in the heap
        self._versions: dict[int, int] = {}  # node id -> its version at the last pump
        self._dirty = False  # some checked state changed since the last check

    def at(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), _ACTION, 0, action))

    def _pump(self, node: ChordNode) -> None:
        now = self.now
        nid = node.id
        for dest, msg in node.messages_to_send():
            self._send(nid, dest, msg)
        while (ev := node.next_event()) is not None:
            self._event(node, ev)
        if nid in self.live:
            t = node.get_timer()
            if t is not None and self._timer_at.get(nid) != t:
                self._timer_at[nid] = t
                heapq.heappush(self._heap, (max(t, now), next(self._seq), _TIMER, nid, t))
            if self._versions.get(nid) != node.version:
                self._versions[nid] = node.version
                self._dirty = True
            if node.status == "left":
                del self.live[nid]
                self._timer_at.pop(nid, None)
                self._dirty = True

    def _link_delay(self, a: int, b: int) -> float:
        x = (a ^ b ^ self.seed) & 0xFFFFFFFFFFFF
        frac = ((x * 0x9E3779B97F4A7C15) >> 40 & 0xFFFFFF) / 0x1000000
        lo, hi = self.delay
        return lo + (hi - lo) * frac

    def _send(self, src: int, dest: NodeRef, msg: Message) -> None:
        if self.wire is None:
            self._transmit(src, dest.id, (src, msg), self.size_of(msg), type(msg).__name__)
            return
        d = self.wire.encode(src, dest, msg, self.now)
        if d is not None:
            self._transmit(src, dest.id, d, len(d.data), type(msg).__name__, d.tcp)

    def _transmit(self, src: int, dest: int, payload: Any, size: int, name: str,
                  tcp: bool = False) -> None:
        """Put a message (or, in wire mode, a Datagram) on the network; TCP is not lost."""
        st = self.stats
        st.messages += 1
        st.bytes += size
        st.by_type[name] = st.by_type.get(name, 0) + 1
        if not tcp and self.loss and self.rng.random() < self.loss:
            st.dropped += 1
            return
        if self.group and self.group.get(src, 0) != self.group.get(dest, 0):
            st.dropped += 1
            return
        d = self._link_delay(src, dest) * (1 + self.jitter * self.rng.random())
        heapq.heappush(self._heap, (self.now + d, next(self._seq), _DELIVER, dest, payload))
        if self.wire is not None and self.wire.duplicates(payload):
            d2 = self._link_delay(src, dest) * (1 + self.jitter * self.rng.random())
            heapq.heappush(self._heap, (self.now + d2, next(self._seq), _DELIVER, dest, payload))

    def _deliver(self, nid: int, payload: Any) -> None:
        node = self.live.get(nid)
        src = payload.src if isinstance(payload, Datagram) else payload[0]
        if node is None or (self.group and self.group.get(src, 0) != self.group.get(nid, 0)):
            self.stats.dropped += 1
            return
        if isinstance(payload, Datagram):
            msg, answers = self.wire.receive(node.ref, payload, self.now)
            for to, d in answers:  # what the codec itself sends (403, 428, a resend)
                self._transmit(nid, to, d, len(d.data), "codec", d.tcp)
            if msg is None:
                return
        else:
            msg = payload[1]
        self.trace.append(
            f"{self.now:9.3f} n{self.labels.get(src, '?')} -> "
            f"n{self.labels.get(nid, '?')} {_short(msg, self.labels)}"
        )
        node.receive(msg, self.now)
        self._pump(node)

    def _event(self, node: ChordNode, ev: Any) -> None:
        st = self.stats
        if isinstance(ev, LookupDone | LookupFailed | GetDone | GetFailed | PutDone | PutFailed):
            cb = self._waiters.pop((node.id, ev.request_id), None)
            if cb is not None:
                cb(ev)
        elif isinstance(ev, RecordRejected):
            st.records_rejected += 1

    def step(self) -> bool:
        """Process one event. False when nothing is left."""
        if not self._heap:
            return False
        when, _, kind, nid, payload = heapq.heappop(self._heap)
        if when > self.now:
            self.now = when
        if kind == _TIMER and (nid not in self.live or self._timer_at.get(nid) != payload):
            return True  # a superseded timer entry: not a step
        self.stats.steps += 1
        if kind == _DELIVER:
            self._deliver(nid, payload)
        elif kind == _TIMER:
            node = self.live[nid]
            del self._timer_at[nid]
            node.handle_timer(self.now)
            self._pump(node)
        else:
            payload()
        if self.check_enabled and (self._dirty or self.check_every_step):
            self.check()
        return True

    def run_until(self, t: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= t:
            self.step()
        if self.now < t:
            self.now = t

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)


def _short(msg: Message, labels: dict[int, int]) -> str:
    name = type(msg).__name__
    extra = ""
    if isinstance(msg, Neighbors):
        p = msg.predecessor
        extra = (
            f" pred=n{labels.get(p.id, '?') if p else '-'} succ="
            f"[{_names(msg.successors, labels)}]"
        )
    elif isinstance(msg, Found):
        extra = f" [{_names(msg.successors, labels)}]"
    elif hasattr(msg, "candidate"):
        extra = f" n{labels.get(msg.candidate.id, '?')}"  # type: ignore[attr-defined]
    return f"{name}#{msg.txn}{extra}"


def _names(nodes: tuple[NodeRef, ...], labels: dict[int, int]) -> str:
    return ",".join("n" + str(labels.get(x.id, "?")) for x in nodes)

