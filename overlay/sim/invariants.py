"""Zave's ring invariants, checked over the real nodes' state.

Definitions (Zave, "Reasoning about identifier spaces: how to make Chord correct", IEEE
TSE 2017), over the live ring members:
- a member's *best successor* is the first live entry of its successor list (itself when
  the list is empty: a ring of one). The best-successor graph has one out-edge per member.
- a *ring* is a cycle of that graph; members not on a cycle are *appendages*.
- OneLiveSuccessor: every member's list has a live entry. This is the operating
  assumption, not a property the protocol can keep (it fails when every node of a list
  crashes at once); the checker reports it as an *assumption breach*, separately.
- AtLeastOneRing, AtMostOneRing.
- OrderedRing: going round the ring along best successors covers the identifier space
  exactly once (no ring member lies between a member and its best successor).
- ConnectedAppendages: every appendage reaches the ring.
- OrderedMerges (reported as a diagnostic, `misplaced`, not as a violation): an
  appendage whose best-successor path enters the ring at m lies between m's ring
  predecessor and m. Zave's join reads a member's state atomically; over messages a join
  racing another join at the same place can transiently hang off one node too far
  clockwise (stabilize repairs it in a round), so it is counted, not failed.
- OrderedSuccessorLists: every list is strictly ordered clockwise from its owner, without
  duplicates, without the owner, without wrapping past it.

Beyond Zave (whose invariants leave predecessors free), `PredecessorWatch` checks
CorrectPredecessor: each live member's predecessor is the live member just before it in
identifier order (a ring of one: none). It applies once the ring is stable: while the
members (of one partition side) form one ordered ring with no assumption breach, and
only after that true predecessor has stayed the same for `settle` seconds (a joiner's
Notify, or the dead predecessor's predecessor noticing the death and notifying, takes up
to a slow stabilize round plus the retries of two timeouts; `settle` allows two rounds).

PredecessorOrder (Zave's rectify, checked on every change, whatever the ring's state): a
member's predecessor p is replaced by a node that does not lie between p and the member
only when p is gone (crashed, left, leaving, cut off by a partition) or the member has
found it dead (p is among its suspects after the change).

During a partition each side is checked on its own (`Simulation.sides`): the members
that can reach each other must form one correct ring, the nodes of the other side count
as dead.

`converged` is the stronger, eventual property: one ring holding every member, every
predecessor and successor list exactly right.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from overlay.chord.lifecycle import MEMBER
from overlay.chord.messages import ID_SPACE
from overlay.chord.ring import MASK, between, dist


@dataclass(slots=True)
class Violation:
    name: str
    detail: str

    def __str__(self) -> str:
        return f"{self.name}: {self.detail}"


@dataclass(slots=True)
class RingReport:
    violations: list[Violation]
    breaches: list[int]  # members with no live successor (assumption breach)
    rings: int
    ring_size: int
    appendages: int
    members: int
    misplaced: int = 0
    unjoined: int = 0  # lone nodes whose join failed (discovery will bring them in)


def _lbl(node_id: int, labels: dict[int, Any] | None) -> str:
    if labels and node_id in labels:
        return f"n{labels[node_id]}"
    return f"{node_id:032x}"[:8]


def ring_members(nodes: Iterable[Any], live: set[int] | dict[int, Any]) -> dict[int, Any]:
    """The live ring members: live, MEMBER, and not a lone node that is joining or whose
    join failed (a ring of one that answers, not yet on the ring it joins: Zave)."""
    return {
        n.id: n for n in nodes
        if n.id in live and n.status == MEMBER
        and not ((n.join_failed or n.joining) and not n.successors)
    }


def check_ring(
    nodes: Iterable[Any],
    live: set[int] | dict[int, Any],
    strict: bool = True,
    labels: dict[int, Any] | None = None,
) -> RingReport:
    """Check the invariants over `nodes` (objects with id, status, successors).

    `live` holds the ids of live nodes (crashed and departed nodes are absent). With
    `strict=False` (during partitions, merges and after an assumption breach) only the
    properties that hold whatever happens are checked: OrderedSuccessorLists.
    """
    violations: list[Violation] = []
    nodes = list(nodes)
    members = ring_members(nodes, live)
    # lone nodes that never made it onto a ring are not members (Zave)
    unjoined = sum(1 for n in nodes if n.id in live and n.status == MEMBER) - len(members)
    # a node that is leaving (or still joining) is not a live member: skip it like a
    # dead one when looking for a best successor
    live = members
    # OrderedSuccessorLists (always)
    for n in members.values():
        last = 0
        me = n.id
        seen = set()
        for s in n.successors:
            d = dist(me, s.id)
            if d == 0 or d <= last or s.id in seen:
                violations.append(
                    Violation(
                        "OrderedSuccessorLists",
                        f"{_lbl(me, labels)}: {[_lbl(x.id, labels) for x in n.successors]}",
                    )
                )
                break
            seen.add(s.id)
            last = d
    best: dict[int, int] = {}
    breaches: list[int] = []
    for n in members.values():
        if not n.successors:
            best[n.id] = n.id
            continue
        for s in n.successors:
            if s.id in live:
                best[n.id] = s.id
                break
        else:
            breaches.append(n.id)
    # rings: cycles of the best-successor graph (restricted to members)
    state: dict[int, int] = {}  # 1 = on current path, 2 = done
    on_ring: dict[int, int] = {}  # member -> ring index
    rings: list[list[int]] = []
    dangling: list[int] = []
    for start in best:
        if start in state:
            continue
        path = []
        x: int | None = start
        while x is not None and x not in state:
            state[x] = 1
            path.append(x)
            nxt = best.get(x)
            if nxt is None or nxt not in best:
                if nxt is not None and nxt not in best:
                    dangling.append(x)
                x = None
                break
            x = nxt
        if x is not None and state.get(x) == 1:
            cyc = path[path.index(x) :]
            idx = len(rings)
            rings.append(cyc)
            for y in cyc:
                on_ring[y] = idx
        for y in path:
            state[y] = 2
    appendages = len(best) - len(on_ring)
    report = RingReport(violations, breaches, len(rings), 0, appendages, len(members))
    report.unjoined = unjoined
    if rings:
        report.ring_size = max(len(c) for c in rings)
    if not strict or breaches:
        return report
    if members and not rings:
        violations.append(Violation("AtLeastOneRing", "no cycle of best successors"))
    if len(rings) > 1:
        sizes = sorted((len(c) for c in rings), reverse=True)
        violations.append(Violation("AtMostOneRing", f"{len(rings)} rings of sizes {sizes}"))
    for cyc in rings:
        if len(cyc) == 1:
            continue
        laps = sum(dist(y, best[y]) for y in cyc)
        if laps != ID_SPACE:
            violations.append(
                Violation(
                    "OrderedRing",
                    f"ring of {len(cyc)} wraps the id space {laps / ID_SPACE:.2f} times",
                )
            )
    for x in dangling:
        violations.append(
            Violation("ConnectedAppendages", f"{_lbl(x, labels)} points to a non-member")
        )
    if len(rings) == 1 and appendages:
        cyc = rings[0]
        ring_pred = {best[y]: y for y in cyc}
        entry: dict[int, int] = {y: y for y in cyc}
        for start in best:
            if start in entry:
                continue
            path = []
            x = start
            while x not in entry:
                path.append(x)
                nx = best.get(x)
                if nx is None or nx not in best:
                    break
                x = nx
            if x not in entry:
                continue
            m = entry[x]
            for y in path:
                entry[y] = m
            for y in path:
                rp = ring_pred[m]
                if not (rp == m or between(y, rp, m)):
                    report.misplaced += 1
    return report


class PredecessorWatch:
    """CorrectPredecessor (see the module docstring), checked over successive states.

    `check(members, now, applies)`: `members` the ring members of one side (as
    `ring_members`), `applies` whether that side is one ordered ring without breach
    right now. A member's clock starts when its true predecessor changes or when the
    rule starts to apply; a wrong predecessor is reported once per such stretch.
    """

    def __init__(self, settle: float) -> None:
        self.settle = settle
        self._since: dict[int, tuple[int | None, float]] = {}  # member -> (true pred, since)
        self._last: dict[int, int] = {}  # member -> predecessor at the last check

    def moves(self, members: dict[int, Any], labels: dict[int, Any] | None = None
              ) -> list[Violation]:
        """PredecessorOrder over the changes since the last call (`members`: one side)."""
        out: list[Violation] = []
        for x, n in members.items():
            q = n.predecessor.id if n.predecessor is not None else None
            p = self._last.get(x)
            if q is None:
                self._last.pop(x, None)
                continue
            self._last[x] = q
            if p is None or p == q or 0 < (q - p) & MASK < (x - p) & MASK:
                continue  # first, same, or closer: fine
            if p in members and not n._is_suspect(p):
                out.append(Violation(
                    "PredecessorOrder",
                    f"{_lbl(x, labels)} replaced live predecessor {_lbl(p, labels)} by "
                    f"{_lbl(q, labels)}, which does not lie between",
                ))
        return out

    def check(self, members: dict[int, Any], now: float, applies: bool,
              labels: dict[int, Any] | None = None) -> list[Violation]:
        if not applies:
            for x in members:
                self._since.pop(x, None)
            return []
        out: list[Violation] = []
        ids = sorted(members)
        for i, x in enumerate(ids):
            want = ids[i - 1] if len(ids) > 1 else None
            seen = self._since.get(x)
            if seen is None or seen[0] != want:
                self._since[x] = (want, now)
                continue
            if now - seen[1] < self.settle:
                continue
            p = members[x].predecessor
            got = p.id if p is not None else None
            if got != want:
                out.append(Violation(
                    "CorrectPredecessor",
                    f"{_lbl(x, labels)} has predecessor "
                    f"{_lbl(got, labels) if got is not None else 'none'}, not "
                    f"{_lbl(want, labels) if want is not None else 'none'} "
                    f"(for {now - seen[1]:.1f}s)",
                ))
                self._since[x] = (want, math.inf)  # reported: not again in this stretch
        return out

    def forget(self, live: set[int] | dict[int, Any]) -> None:
        for table in (self._since, self._last):
            for x in [x for x in table if x not in live]:
                del table[x]

    def next_due(self, now: float) -> float | None:
        """When the next clock expires (the checker must run then even if nothing moves)."""
        due = [t + self.settle for _, t in self._since.values() if now < t + self.settle < math.inf]
        return min(due) if due else None


def converged(nodes: Iterable[Any], live: set[int] | dict[int, Any], r: int,
              depth: int | None = None) -> list[str]:
    """Problems preventing the ideal state (empty list: converged).

    One ring holds every live node; every predecessor is the true one; every successor
    list is a prefix of the true successor sequence at least min(r, N-1) long. With
    `depth`, only the first `depth` entries of each list are compared: the ring is
    formed (the entries that routing and replication rely on are right) while the rest
    of a long list, a one-hop routing table in small rings, may still be filling in.
    """
    problems: list[str] = []
    all_nodes = [n for n in nodes if n.id in live]
    if any(n.status != MEMBER or n.joining for n in all_nodes):
        problems.append("a node is not a member yet")
    members = sorted((n for n in all_nodes if n.status == MEMBER), key=lambda n: n.id)
    count = len(members)
    if count == 0:
        return problems
    ids = [n.id for n in members]
    for i, n in enumerate(members):
        if n.detached or n.join_failed:
            problems.append(f"{n.id:x} detached or not joined")
        want_pred = ids[i - 1] if count > 1 else None
        got_pred = n.predecessor.id if n.predecessor is not None else None
        if count > 1 and got_pred != want_pred:
            problems.append(f"{n.id:x}: predecessor wrong")
        need = min(r, count - 1)
        if len(n.successors) < need:
            problems.append(f"{n.id:x}: {len(n.successors)} successors, need {need}")
            continue
        for k, s in enumerate(n.successors[:depth]):
            if k >= count - 1 or s.id != ids[(i + 1 + k) % count]:
                problems.append(f"{n.id:x}: successor {k} wrong")
                break
        if len(problems) > 20:
            break
    return problems
