"""Broken variants of the Chord node (mutants): each must make the invariant checker or a
lookup / record count fail, in a scenario where the real node passes the same check.
(More mutants: BrokenStabilize and UnsortedLists in test_sim_invariants.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from overlay.chord.messages import NodeRef, Ping
from overlay.chord.node import MEMBER, ChordNode, between, between_right
from overlay.sim import scenarios as S
from overlay.sim.core import Simulation
from overlay.sim.invariants import PredecessorWatch


def _names(result: S.RunResult) -> set[str]:
    return {v.split(" ", 2)[1].rstrip(":") for v in result.violations}


class _PingingRectify(ChordNode):
    """Rectify as Zave's, with the test for taking the notifier at once as a hook."""

    def _takes_at_once(self, n: NodeRef, p: NodeRef) -> bool:
        raise NotImplementedError

    def _rectify(self, n: NodeRef) -> None:
        p = self.predecessor
        if p is None or p.id == n.id or self._is_suspect(p.id) or self._takes_at_once(n, p):
            self._set_predecessor(n)
            return

        def pinged(m: Any) -> None:
            if m is None and self.predecessor is not None and self.predecessor.id == p.id:
                self._declare_dead(p)  # no answer: dead
                self._set_predecessor(n)

        self._request(p, Ping, pinged)


class RectifyWithoutPing(ChordNode):
    """Takes every notifier as its predecessor, without pinging the one it has."""

    def _rectify(self, n: NodeRef) -> None:
        self._set_predecessor(n)


class RectifyWithoutBetween(_PingingRectify):
    """No between test: a closer notifier is taken only once the old predecessor is dead."""

    def _takes_at_once(self, n: NodeRef, p: NodeRef) -> bool:
        return False


class WrongWayPredecessor(_PingingRectify):
    """The between test the wrong way round: a farther notifier replaces a live
    predecessor, a closer one does not: wrong predecessor pointers."""

    def _takes_at_once(self, n: NodeRef, p: NodeRef) -> bool:
        return between(n.id, self.id, p.id)


class ListAnswers(ChordNode):
    """Answers a lookup from its successor list (classic Chord) without letting the
    presumed successor confirm from its own predecessor."""

    def _route(self, key: int) -> tuple[bool, list[NodeRef]]:
        succs = self.successors
        for i in range(1, len(succs)):
            if between_right(key, succs[i - 1].id, succs[i].id):
                return True, succs[i : i + self.config.r]
        return super()._route(key)


class NoReplication(ChordNode):
    """Stores a record at its primary only and never pushes replicas."""

    def _place(self, rec: Any, rid: int | None) -> None:
        def done(succs: tuple[NodeRef, ...] | None, lk: Any) -> None:
            if not succs:
                self._put_failed(rec, rid, lk.reason or "lookup")
                return
            self._store_at(rec, rid, list(succs[:1]))

        self._start_lookup(rec.resource_id, done)

    def _sync(self) -> None:
        self.store.expire(self._now)


# ----------------------------------------------------------------------------- rectify


@pytest.mark.parametrize("factory, caught", [
    (RectifyWithoutPing, {"PredecessorOrder"}),
    (RectifyWithoutBetween, {"CorrectPredecessor"}),
    (WrongWayPredecessor, {"CorrectPredecessor", "PredecessorOrder"}),
])
def test_a_broken_rectify_is_caught(factory: type[ChordNode], caught: set[str]) -> None:
    # joins 20 ms apart: notifies race, as when boxes are powered on together
    acts = S.grow(1, 20, lookups=100, join_gap=0.02)
    real = S.run(1, acts)
    assert not real.violations and not real.not_converged, real.log[-40:]
    broken = S.run(1, acts, node_factory=factory)
    found = _names(broken)
    if any("predecessor wrong" in p for p in broken.not_converged):
        # the ring never settled, so the settle-timed check had no stable stretch to run
        # in; the convergence check found the wrong predecessor instead
        found.add("CorrectPredecessor")
    assert caught & found, (broken.violations[:5], broken.not_converged[:2])


def test_predecessors_are_checked_on_each_side_of_a_partition() -> None:
    """Two rings grown apart (partitioned from the start): the broken rectify is caught
    on a side before the heal (the checks used to be relaxed during a partition)."""
    acts = S.two_rings(3, 8)
    real = S.run(3, acts)
    assert not real.violations and not real.not_converged, real.log[-40:]
    broken = S.run(3, acts, node_factory=RectifyWithoutBetween)
    [heal_at] = [float(line.split()[0]) for line in broken.log if " heal (" in line]
    early = [v for v in broken.violations if float(v.split()[0][2:]) < heal_at]
    assert any("CorrectPredecessor" in v for v in early), broken.violations[:5]


# ----------------------------------------------------------------------------- lookups

# Wrong answers allowed to the real node in the churn below (it gets 2 or 3 in 1,400:
# a lookup answered by a node that has not yet heard of a join there)
CHURN_WRONG_BOUND = 10


def _stable_ring_wrong(factory: type[ChordNode]) -> tuple[int, int]:
    sim = Simulation(seed=3, node_factory=factory)
    sim.build_ring(60)
    sim.run_for(30)
    for _ in range(300):
        sim.lookup()
    sim.run_for(20)
    assert sim.stats.lookups_ok == 300
    return sim.stats.lookups_wrong, sim.stats.lookups


@pytest.mark.parametrize("factory", [ChordNode, ListAnswers])
def test_no_wrong_answer_in_a_stable_ring(factory: type[ChordNode]) -> None:
    assert _stable_ring_wrong(factory) == (0, 300)


@pytest.mark.parametrize("seed", [1, 2])
def test_answers_from_the_successor_list_go_wrong_under_churn(seed: int) -> None:
    """40 nodes, one leaves and one joins every second for a minute, 20 lookups a second."""
    acts = S.churn(seed, 40, duration=60.0, interval=1.0, lookups_per_second=20,
                   leave_fraction=1.0)
    real = S.run(seed, acts).summary
    broken = S.run(seed, acts, node_factory=ListAnswers).summary
    assert real["lookups"] == broken["lookups"] == 1400
    assert real["lookups_wrong"] <= CHURN_WRONG_BOUND, real
    assert broken["lookups_wrong"] > CHURN_WRONG_BOUND, broken


# ----------------------------------------------------------------------------- records


@pytest.mark.parametrize("seed", [0, 1])
def test_no_replication_loses_the_records_of_the_busiest_nodes(seed: int) -> None:
    def lost(factory: type[ChordNode]) -> int:
        sim = Simulation(seed=seed, node_factory=factory)
        for _ in range(16):
            sim.add_node()
            sim.run_for(0.3)
        assert sim.run_until_converged(60) is not None
        for node in sim.members():
            for k in range(3):
                sim.put(node, f"sip:{sim.labels[node.id]}-{k}@meshsip", "sip:x@h")
        sim.run_for(5)
        # the two nodes holding the most copies crash at once (r = 3 covers two)
        busiest = sorted(sim.members(), key=lambda n: (-len(n.store.all()), n.id))[:2]
        for node in busiest:
            sim.crash(sim.labels[node.id])
        found, missing, _ = sim.check_records()
        assert found + missing == 14 * 3
        assert not sim.violations, sim.violations[:3]
        return missing

    assert lost(ChordNode) == 0
    assert lost(NoReplication) > 0


# ----------------------------------------------------------------------------- the checker


class _N:
    def __init__(self, i: int, pred: int | None, suspects: tuple[int, ...] = ()) -> None:
        self.id = i
        self.status = MEMBER
        self.join_failed = False
        self.successors: list[NodeRef] = []
        self.predecessor = NodeRef(pred, "h", 1) if pred is not None else None
        self._suspects = suspects

    def _is_suspect(self, node_id: int) -> bool:
        return node_id in self._suspects


def test_predecessor_rules_on_hand_made_states() -> None:
    q = 1 << 126
    a, b, c, d = 1, 1 + q, 1 + 2 * q, 1 + 3 * q
    watch = PredecessorWatch(settle=10.0)
    ring = {a: _N(a, d), b: _N(b, a), c: _N(c, a), d: _N(d, c)}  # c's should be b
    assert watch.check(ring, 0.0, True) == []  # the clocks start
    assert watch.check(ring, 9.9, True) == []  # within the settle time
    [v] = watch.check(ring, 10.0, True)
    assert v.name == "CorrectPredecessor" and "not " in v.detail
    assert watch.check(ring, 20.0, True) == []  # once per stretch
    assert watch.next_due(20.0) is None
    # not a stable ring: no check, and the clock starts again when it is one
    watch.check(ring, 30.0, False)
    assert watch.check(ring, 35.0, True) == [] and watch.next_due(35.0) == 45.0
    ring[c].predecessor = NodeRef(b, "h", 1)
    assert watch.check(ring, 45.0, True) == []
    # PredecessorOrder: a farther predecessor only after the old one was found dead
    assert watch.moves(ring) == []
    ring[c].predecessor = NodeRef(a, "h", 1)
    [v] = watch.moves(ring)
    assert v.name == "PredecessorOrder"
    ring[c].predecessor = NodeRef(b, "h", 1)
    assert watch.moves(ring) == []  # closer: fine
    ring[c] = _N(c, a, suspects=(b,))
    assert watch.moves(ring) == []  # b found dead
    del ring[a]
    ring[b].predecessor = NodeRef(d, "h", 1)
    assert watch.moves(ring) == []  # a is gone


def test_each_side_of_a_partition_must_be_one_ring() -> None:
    sim = Simulation(seed=6)
    sim.build_ring(8)
    sim.run_for(20)
    assert not sim.violations
    ring = sorted(sim.members(), key=lambda n: n.id)
    sim.partition({sim.labels[n.id]: 1 for n in ring[:4]})
    sim.run_for(60)
    assert not sim.violations, sim.violations[:3]
    assert not sim.converged()  # each side on its own is one converged ring
    # a side broken in two rings is a violation while the partition lasts
    x, y = ring[0], ring[2]
    x._set_successors([ring[1]])
    ring[1]._set_successors([x])
    y._set_successors([ring[3]])
    ring[3]._set_successors([y])
    assert "AtMostOneRing" in {v.name for v in sim.check()}
