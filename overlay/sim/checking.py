"""Checking a running simulation: the invariants after every state-changing step, and
convergence.

`check` runs the invariant checker over each partition side on its own (one correct
ring per side): strictly (all of Zave's invariants, and correct predecessors once the
ring is stable) in normal operation and during a partition; relaxed (ordered successor
lists only) from a heal (two rings merge: there are two rings until they are zipped),
and on a side from an assumption breach there (a node whose every successor crashed or
is cut off), until that side has converged. The rules themselves live in `invariants`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from overlay.chord.node import ChordNode

from .invariants import PredecessorWatch, Violation, check_ring, converged, ring_members


class Checking:
    """The checker's side of `Simulation` (a mixin)."""

    def _init_checking(self, check: bool, check_every_step: bool) -> None:
        self.check_enabled = check
        # by default the checker runs after the steps that changed some node's
        # predecessor or successor list (or liveness, or the partition): on the others
        # the checked state is identical. check_every_step runs it after every step.
        self.check_every_step = check_every_step
        self.violations: list[tuple[float, Violation]] = []
        self.breaches: list[tuple[float, int]] = []
        self.relaxed: set[int] = set()  # sides (groups) checked relaxed until converged
        self.on_violation: Callable[[float, Violation], None] | None = None
        c = self.config
        # CorrectPredecessor applies this long after a member's true predecessor changed:
        # two slow stabilize rounds with their retries, and a ping of the old predecessor
        self.predecessors = PredecessorWatch(
            2 * (c.stabilize_max * (1 + c.jitter) + c.attempts * c.rto) + c.attempts * c.rto
        )
        self._recheck_at = math.inf

    def sides(self) -> dict[int, dict[int, ChordNode]]:
        """The live nodes that can reach each other, by partition group (one, unsplit)."""
        groups: dict[int, dict[int, ChordNode]] = {}
        for nid in sorted(self.live):
            groups.setdefault(self.group.get(nid, 0), {})[nid] = self.live[nid]
        return dict(sorted(groups.items()))

    def check(self) -> list[Violation]:
        self._dirty = False
        self.stats.checks += 1
        found: list[Violation] = []
        self.predecessors.forget(self.live)
        for g, side in self.sides().items():
            if g in self.relaxed and not converged(side.values(), side, self.config.r):
                self.relaxed.discard(g)
                self.log.append(f"{self.now:9.3f} converged: strict checking again")
            strict = g not in self.relaxed
            rep = check_ring(side.values(), side, strict=strict, labels=self.labels)
            if rep.misplaced:
                self.stats.misplaced_checks += 1
            if rep.breaches and strict:
                self.relaxed.add(g)
                for b in rep.breaches:
                    self.breaches.append((self.now, b))
                self.log.append(
                    f"{self.now:9.3f} assumption breach: every successor of "
                    f"{', '.join(f'n{self.labels[b]}' for b in rep.breaches)} is dead "
                    "or cut off; relaxed checking there until converged"
                )
            stable = strict and not rep.breaches and rep.rings == 1 and not rep.violations
            found += rep.violations
            members = ring_members(side.values(), side)
            found += self.predecessors.moves(members, self.labels)
            found += self.predecessors.check(members, self.now, stable, self.labels)
        for v in found:
            self.violations.append((self.now, v))
            self.log.append(f"{self.now:9.3f} VIOLATION {v}")
            if self.on_violation is not None:
                self.on_violation(self.now, v)
        # a predecessor's grace ends: look then, even if no step changes anything
        due = self.predecessors.next_due(self.now)
        if due is not None and not self.now < self._recheck_at <= due:
            self._recheck_at = due
            self.at(due, self._recheck)
        return found

    def _recheck(self) -> None:
        if self._recheck_at <= self.now:
            self._recheck_at = math.inf
        self._dirty = True

    def converged(self, depth: int | None = None) -> list[str]:
        """Problems keeping a side (all live nodes, when not partitioned) from the ideal.
        `depth`: see invariants.converged()."""
        r = self.config.r
        return [p for side in self.sides().values()
                for p in converged(side.values(), side, r, depth)]

    def run_until_converged(self, limit: float, poll: float = 1.0,
                            depth: int | None = None) -> float | None:
        """Run until the ring is exactly right (or `limit` seconds pass); then strict
        checking resumes. Returns the time it took, or None. `depth`: see converged()."""
        start = self.now
        end = start + limit
        while self.now < end:
            self.run_until(min(self.now + poll, end))  # lands on `end` exactly
            if self.converged(depth):
                continue
            if self.relaxed:
                self.relaxed.clear()
                self.log.append(f"{self.now:9.3f} converged: strict checking again")
                self._dirty = True
                if self.check_enabled:
                    self.check()
            return self.now - start
        return None
