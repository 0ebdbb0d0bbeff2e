"""Joining and leaving a ring.

Join only learns a successor list (a lookup of the node's own id through the bootstrap);
the newcomer becomes reachable through later stabilize and notify (Zave). Before
committing, the joiner asks the found successor for its predecessor and moves back while
that lies between (Zave's join reads a member atomically; over messages two joins at one
place can race). A node is a ring of one from its first instant and stays one while it
joins, and it answers every request: boxes powered on together all join through each
other at once, and a node that refused while joining would leave them all waiting. (Its
lookups point to its bootstrap, see lookups.py: answering "me" would start a second
ring beside the one it joins.)
A join that fails (error answer, refusal or silence) is retried with backoff
(`join_attempts`), then the node stays a ring of one and its merge checks keep trying;
one that finds the ring already came to us (a peer adopted us) hands its bootstrap to the
merge checks.

Leave hands every record to the successor, tells both neighbours, and ends (LEFT) once
each of those requests finished (answered, refused or timed out).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from .events import Joined, JoinFailed, Left
from .lifecycle import LEAVING, LEFT, MEMBER
from .messages import Error, GetNeighbors, Leave, Message, Neighbors, NodeRef, Transfer
from .ring import backoff, between

if TYPE_CHECKING:
    from .lookups import _Lookup

_JOIN_WALK = 8  # predecessors a joiner may step back over before committing


class _Join:
    """A join in progress: the lookup of our own id through `bootstrap`, then the walk
    back over nodes between us and the found successor. Every step (an answer, an error
    answer, no answer) ends in `_join_verified`, `_join_candidate_lost` or
    `_join_failed`, so a join always finishes: joined, retried after a backoff, or given
    up (the node stays a ring of one and its merge checks keep trying)."""

    __slots__ = ("bootstrap", "attempts")

    def __init__(self, bootstrap: NodeRef) -> None:
        self.bootstrap = bootstrap
        self.attempts = 0  # attempts that failed


class Membership:
    """The pending join (`_join`), the leave in progress (`_leave_pending`)."""

    def _init_membership(self, now: float) -> None:
        self.join_gave_up = False  # the last join failed every attempt (see join_failed)
        self._join: _Join | None = None
        self._leave_pending = 0  # requests of a leave not finished yet

    def join(self, bootstrap: NodeRef, now: float) -> None:
        """Learn a successor list by looking up our own id through `bootstrap`.

        The node stays a member (a ring of one) meanwhile and answers its peers; a join
        that fails is retried with backoff, then the node stays alone and its merge
        checks keep trying `bootstrap` (see `_Join`)."""
        self._touch(now)
        if bootstrap.id == self.id or self.status != MEMBER:
            return
        if self.successors or self._join is not None:
            self.learn_peer(bootstrap, now)  # on a ring, or joining already: merge later
            return
        self._join = _Join(bootstrap)
        self.join_gave_up = False
        self._join_attempt(self._join)

    def _join_attempt(self, j: _Join) -> None:
        pool = [j.bootstrap, *(x for x in self._recent.values() if x.id != j.bootstrap.id)]
        self._start_lookup(
            self.id, partial(self._join_looked_up, j), pool=pool, use_local=False
        )

    def _join_looked_up(self, j: _Join, succs: tuple[NodeRef, ...] | None,
                        lk: _Lookup) -> None:
        if j is not self._join:
            return
        found = [s for s in succs or () if s.id != self.id]
        if succs and succs[0].id == self.id:
            # the ring holds us already (a peer adopted us): our successor is the node
            # after us there, or in a ring of two the bootstrap; the walk checks it
            found.append(j.bootstrap)
        if not found:
            self._join_failed(j, lk.reason or "no successor found")
            return
        self._join_verify(j, found[0], found[1:], _JOIN_WALK)

    def _join_verify(self, j: _Join, s: NodeRef, rest: list[NodeRef], rounds: int) -> None:
        """Before committing, ask the candidate successor for its predecessor: a node
        between us and it (joined meanwhile, or missing from a stale list on the lookup
        path) is the better successor. Keeps joiners hanging off the ring in the right
        place (Zave's join reads a member's state atomically; over messages two joins at
        one place can race)."""
        self._request(s, GetNeighbors, partial(self._join_verified, j, s, rest, rounds))

    def _join_verified(self, j: _Join, s: NodeRef, rest: list[NodeRef], rounds: int,
                       m: Message | None) -> None:
        if j is not self._join:
            return
        if m is None:
            self._join_candidate_lost(j, rest, rounds, f"{s} did not answer")
            return
        if not isinstance(m, Neighbors):
            why = f"{m.code} {m.reason}" if isinstance(m, Error) else type(m).__name__
            self._join_candidate_lost(j, rest, rounds, f"{s} refused: {why}")
            return
        p = m.predecessor
        if (rounds > 0 and p is not None and p.id != self.id
                and between(p.id, self.id, s.id) and not self._is_suspect(p.id)):
            self._join_verify(j, p, [s, *rest], rounds - 1)
            return
        self._join = None
        self._set_successors([s, *self._tail_after(s, m.successors)])
        self._events.append(Joined(s))
        self._periodic("stabilize", self._now)
        self._periodic("fingers", self._now + self.config.fix_fingers_interval)
        self._periodic("merge", self._now)  # peers heard of while joining

    def _join_candidate_lost(self, j: _Join, rest: list[NodeRef], rounds: int,
                             reason: str) -> None:
        if j is not self._join:
            return
        if rest:  # the candidate died or refused: its successor takes over its range
            self._join_verify(j, rest[0], rest[1:], rounds)
        else:
            self._join_failed(j, reason)

    def _join_failed(self, j: _Join, reason: str) -> None:
        j.attempts += 1
        if j.attempts < self.config.join_attempts:
            self._periodic("join", self._now + self._jit(backoff(1.0, 8.0, j.attempts)))
            return
        # alone, a ring of one: merge checks keep trying the bootstrap, with backoff
        self._join = None
        self.join_gave_up = True
        self._events.append(JoinFailed(j.bootstrap, reason))
        self._add_peer(j.bootstrap, self._now + self.config.merge_check_interval)

    def leave(self, now: float) -> None:
        """Hand our records to our successor, tell our neighbours, then stop."""
        self._touch(now)
        if self.status != MEMBER:
            return
        self._enter(LEAVING)
        self._join = None
        succ = self.successors[0] if self.successors else None
        one_done = self._leave_step
        if succ is not None:
            batch = [self.store.copy_for_sending(st, now) for st in self.store.all()]
            for chunk in self._chunks(batch):
                self._leave_pending += 1
                self._request(succ, Transfer, one_done, records=chunk)
            self._leave_pending += 1
            self._request(succ, Leave, one_done, predecessor=self.predecessor)
        pred = self.predecessor
        if pred is not None and (succ is None or pred.id != succ.id):
            self._leave_pending += 1
            self._request(pred, Leave, one_done, successors=tuple(self.successors))
        if self._leave_pending == 0:
            self._finish_leave()

    def _leave_step(self, m: Message | None) -> None:
        """One request of the leave finished (answered, refused or timed out)."""
        self._leave_pending -= 1
        if self._leave_pending <= 0 and self.status == LEAVING:
            self._finish_leave()

    def _finish_leave(self) -> None:
        self._enter(LEFT)
        self._pending.clear()
        self._lookups.clear()
        self._events.append(Left())
