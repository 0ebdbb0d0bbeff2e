"""Operations on a simulated ring and what they count: lookups (checked against the true
successor), puts, gets, fetching every live record back, and the run's summary.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from overlay.chord.messages import Record
from overlay.chord.node import MEMBER, ChordNode, GetDone, LookupDone
from overlay.chord.records import resource_key

from .invariants import ring_members


@dataclass
class SimStats:
    messages: int = 0
    bytes: int = 0
    dropped: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    lookups: int = 0
    lookups_ok: int = 0
    lookups_failed: int = 0
    lookups_wrong: int = 0
    hops: list[int] = field(default_factory=list)
    lookup_timeouts: int = 0
    records_rejected: int = 0
    steps: int = 0
    checks: int = 0
    misplaced_checks: int = 0  # checks that saw an appendage hanging off the wrong place


@dataclass(slots=True)
class _LookupCheck:
    """One lookup in flight; its answer (LookupDone or LookupFailed) is counted here.
    Right is the key's successor when the lookup started (`before`) or when it ended (a
    node that joins or dies meanwhile makes either answer fair)."""

    sim: Any
    key: int
    group: int
    before: int | None
    on_done: Callable[[Any], None] | None

    def __call__(self, ev: Any) -> None:
        sim = self.sim
        st = sim.stats
        if isinstance(ev, LookupDone):
            st.lookups_ok += 1
            st.hops.append(ev.hops)
            st.lookup_timeouts += ev.timeouts
            want = sim.true_successor(self.key, self.group)
            if want is not None and ev.successors[0].id not in (want, self.before):
                st.lookups_wrong += 1
        else:
            st.lookups_failed += 1
            sim.log.append(f"{sim.now:9.3f} lookup failed: {ev.reason}")
        if self.on_done is not None:
            self.on_done(ev)


class Operations:
    """Lookups, records and the summary of `Simulation` (a mixin)."""

    def members(self) -> list[ChordNode]:
        """The nodes on a ring (a lone node that is still joining is not: see ring_members)."""
        return list(ring_members(self.live.values(), self.live).values())

    def true_successor(self, key: int, group: int | None = None) -> int | None:
        ids = sorted(
            n.id for n in self.members() if group is None or self.group.get(n.id, 0) == group
        )
        if not ids:
            return None
        for i in ids:
            if i >= key:
                return i
        return ids[0]

    def lookup(self, key: int | None = None, origin: ChordNode | None = None,
               recursive: bool = False, on_done: Callable[[Any], None] | None = None) -> None:
        members = self.members()
        if not members:
            return
        if origin is None:
            origin = members[self.rng.randrange(len(members))]
        if key is None:
            key = self.rng.getrandbits(128)
        st = self.stats
        st.lookups += 1
        # right: the key's successor now or when the answer comes (see _LookupCheck)
        group = self.group.get(origin.id, 0)
        before = self.true_successor(key, group)
        rid = origin.lookup(key, self.now, recursive=recursive)
        self._waiters[(origin.id, rid)] = _LookupCheck(self, key, group, before, on_done)
        self._pump(origin)

    def put(self, node: ChordNode, aor: str, contact: str, lifetime: int = 600,
            on_done: Callable[[Any], None] | None = None) -> None:
        rec = Record(resource_key(aor), aor, node.id, contact, 1, lifetime)
        rid = node.put(rec, self.now)
        if on_done is not None:
            self._waiters[(node.id, rid)] = on_done
        self._pump(node)

    def get(self, node: ChordNode, resource_id: int, on_done: Callable[[Any], None]) -> None:
        rid = node.get(resource_id, self.now)
        self._waiters[(node.id, rid)] = on_done
        self._pump(node)

    def live_records(self) -> list[tuple[int, Record]]:
        """Every binding a live owner keeps alive: (owner id, record)."""
        out = []
        for n in self.live.values():
            if n.status != MEMBER:
                continue
            for rec in n.owned_records():
                out.append((n.id, rec))
        return out

    def check_records(self, timeout: float = 30.0) -> tuple[int, int, list[str]]:
        """Fetch every live record from a random member; (found, lost, details)."""
        recs = self.live_records()
        members = self.members()
        results: dict[int, Any] = {}
        for i, (_, rec) in enumerate(recs):
            origin = members[self.rng.randrange(len(members))]
            self.get(origin, rec.resource_id, partial(results.__setitem__, i))
        end = self.now + timeout
        while len(results) < len(recs) and self.now < end:
            self.run_for(0.5)
        lost = []
        for i, (_, rec) in enumerate(recs):
            ev = results.get(i)
            ok = isinstance(ev, GetDone) and any(
                r.owner == rec.owner and r.contact == rec.contact for r in ev.records
            )
            if not ok:
                lost.append(f"{rec.aor} owned by n{self.labels[rec.owner]}: {ev}")
        return len(recs) - len(lost), len(lost), lost

    def summary(self) -> dict[str, Any]:
        st = self.stats
        hops = sorted(st.hops)
        p99 = hops[min(len(hops) - 1, math.ceil(0.99 * len(hops)) - 1)] if hops else 0
        done = st.lookups_ok + st.lookups_failed
        return {
            "nodes": len(self.live),
            "lookups": st.lookups,
            "success_rate": (st.lookups_ok / done) if done else 1.0,
            "hops_mean": (sum(hops) / len(hops)) if hops else 0.0,
            "hops_p99": p99,
            "lookups_wrong": st.lookups_wrong,
            "invariant_violations": len(self.violations),
            "assumption_breaches": len(self.breaches),
            "messages": st.messages,
            "bytes": st.bytes,
            "dropped": st.dropped,
            "records_rejected": st.records_rejected,
            "steps": st.steps,
            "checks": st.checks,
            "misplaced_appendage_checks": st.misplaced_checks,
            "virtual_seconds": round(self.now, 3),
        } | ({} if self.wire is None else {"wire": self.wire.totals()})
