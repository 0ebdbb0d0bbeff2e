"""Ring maintenance after Zave ("Reasoning about identifier spaces: how to make Chord
correct", IEEE TSE 2017): stabilize, notify, rectify, and the adaptive cadence.

- stabilize asks the first successor for its predecessor and list, takes the list
  ([succ] + succ's list), and when succ's predecessor lies between this node and succ,
  checks that node is alive and adopts it with its list (and repeats from it at once,
  walking back over several fresh joiners in one round); then it notifies its first
  successor (skipped when that successor already names us as its predecessor). A
  successor that does not answer (after `attempts` tries) is dropped and the next one is
  asked at once;
- rectify (on notify): the predecessor is replaced only when the notifier lies between
  it and this node, or a ping shows the predecessor dead. A predecessor not heard from
  for longer than its slowest round is pinged, so a dead one (and the range it leaves
  us) is noticed even when nobody notifies us;
- a Leave from a neighbour hands us its successors or predecessor.

Adaptive cadence. Stabilize runs every `stabilize_interval` while the neighbourhood
changes and for two rounds after, then the interval doubles each quiet round up to
`stabilize_max`. Any change of the successor list or predecessor, a dead neighbour, a
Notify from a node that is not our predecessor, a Leave, learn_peer, or a poke from our
successor brings it back to the fast rate (and the next round forward). Fix-fingers
likewise, between `fix_fingers_interval` and `fix_fingers_max`: fast until a full cycle
over the fingers changed nothing, then doubling each round; fast again when a lookup
finds a different finger or a finger is dropped (it did not answer, or left). The full
replica push backs off from `replica_refresh` to `replica_refresh_max` while the
successor list stays the same.

A backed-off node learns late what changed further along the ring, and in a full mesh a
join must travel back through every node's list. So a node whose successor list changed
pings its predecessor, and one that gained a closer predecessor pings the old one (which
should adopt the newcomer): a ping from a node's first successor means "my view changed"
(or "are you alive?") and makes it stabilize at once. A change thus travels back at
message speed, as far as it changes lists, and stops. A dead successor is found by the
next round plus retries: at most `stabilize_max` (+ jitter) + `attempts` * `rto` on a
quiet ring.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import partial

from .lifecycle import MEMBER
from .messages import Ack, GetNeighbors, Leave, Message, Neighbors, NodeRef, Notify, Ping, Pong
from .ring import MASK, between, dist


class Stabilizer:
    """Stabilize and rectify in flight (`_stabilizing`, `_pred_ping`, `_pred_candidates`),
    the cadence (`_stab_calm`) and the pokes queued for predecessors (`_poke`)."""

    def _init_stabilizer(self, now: float) -> None:
        self._stabilizing = False  # a GetNeighbors to our first successor is in flight
        self._pred_ping: NodeRef | None = None  # the predecessor being pinged
        self._pred_candidates: dict[int, NodeRef] = {}  # notifiers waiting on that ping
        self._pred_heard = now
        self._stab_calm = 0  # rounds since the neighbourhood last changed
        self._poke: dict[int, NodeRef] = {}  # predecessors to tell that we changed
        self._poked_at = -math.inf

    def _unsettle(self) -> None:
        """The neighbourhood changed: stabilize at the fast rate again, starting soon."""
        self._stab_calm = 0
        if self.status == MEMBER:
            self._periodic_by("stabilize", self._now + self._jit(self.config.stabilize_interval))

    def _tell_predecessor(self, *nodes: NodeRef | None) -> None:
        """Queue a poke for our predecessor (or `nodes`); sent at once, or batched with
        the next one when we poked less than half a fast round ago."""
        if self.status != MEMBER:
            return
        for x in nodes or (self.predecessor,):
            if x is not None and x.id != self.id and not self._is_suspect(x.id):
                self._poke[x.id] = x
        if not self._poke:
            return
        half_round = self.config.stabilize_interval / 2
        self._periodic_by("poke", max(self._now, self._poked_at + half_round))

    def _send_pokes(self) -> None:
        targets, self._poke = list(self._poke.values()), {}
        if self.status != MEMBER:
            return
        self._poked_at = self._now
        for x in targets:
            if not self._is_suspect(x.id):
                self.stats["pokes_sent"] += 1
                self._request(x, Ping, None, attempts=1)

    def _stabilize(self) -> None:
        if self._stabilizing:
            return
        if not self.successors:
            p = self.predecessor
            if p is not None:  # a ring of one that was notified: its predecessor is next
                self._adopt(p, zip_rings=False)
            return
        s = self.successors[0]
        self._stabilizing = True
        self._request(s, GetNeighbors, partial(self._stabilized, s))

    def _stabilized(self, s: NodeRef, m: Message | None) -> None:
        self._stabilizing = False
        if m is None:  # dead: drop it, ask the next successor at once
            if self.status != MEMBER:
                return
            self._declare_dead(s)
            if self.successors:
                self._stabilize()
        elif isinstance(m, Neighbors):
            self._on_successor_view(s, m)
        # an error answer: the next round asks again

    def _pred_silence(self) -> float:
        """How long a live predecessor may stay silent: its slowest round and some."""
        c = self.config
        slowest = (1 + c.jitter) * max(c.stabilize_max, c.stabilize_interval)
        return max(2.5 * c.stabilize_interval, slowest + 2 * c.stabilize_interval)

    def _check_predecessor(self) -> None:
        """A live predecessor asks for our neighbours every round (its rounds back off to
        `stabilize_max`); when it is silent for longer than its slowest round, ping it.
        Finding a dead predecessor early matters for records: until then we do not know
        that the dead node's range (and its records, which we hold as replica) is ours.
        (Usually the dead node's predecessor finds it first and notifies us.)"""
        p = self.predecessor
        if p is None or self._pred_ping is not None:
            return
        if self._now - self._pred_heard < self._pred_silence():
            return
        self._pred_ping = p
        self._pred_heard = self._now
        self._request(p, Ping, partial(self._pred_pinged, p, False), attempts=2)

    def _pred_pinged(self, p: NodeRef, rectifying: bool, m: Message | None) -> None:
        """The ping of our predecessor p (silent too long, or a notifier lies outside
        our range) finished. Alive (any answer): it stays, and the notifiers waiting
        on a rectify are dropped. Dead: the closest notifier that waited takes its
        place (for a rectify, only while p was still our predecessor)."""
        self._pred_ping = None
        if m is not None:
            if rectifying:
                self._pred_candidates.clear()
            return
        cands = list(self._pred_candidates.values())
        self._pred_candidates.clear()
        if self.predecessor is not None and self.predecessor.id == p.id:
            self._declare_dead(p)
        elif rectifying:
            return
        cands = [c for c in cands if not self._is_suspect(c.id)]
        if cands and self.predecessor is None:
            me = self.id
            self._set_predecessor(min(cands, key=lambda c: (me - c.id) & MASK))

    def _on_successor_view(self, s: NodeRef, nb: Neighbors, depth: int = 0) -> None:
        if self.status != MEMBER or not self.successors or self.successors[0].id != s.id:
            return
        self.ring_complete = False
        self._set_successors([s, *self._tail_after(s, nb.successors)])
        pred = nb.predecessor
        p = None if depth >= 16 else self._closest_between(s, [pred, *nb.successors])
        if p is None:
            if pred is None or pred.id != self.id:  # already its predecessor: no rectify
                self._notify(s)
            return
        self._request(p, GetNeighbors, partial(self._candidate_viewed, p, depth))

    def _candidate_viewed(self, p: NodeRef, depth: int, m: Message | None) -> None:
        """The answer of p, a node between us and our successor, that we would adopt."""
        if m is None:
            self._suspect(p.id)
        elif self.status != MEMBER:
            return
        elif (
            isinstance(m, Neighbors)
            and self.successors
            and self._closer_successor(p, self.successors[0])
        ):
            self.ring_complete = False
            self._set_successors([p, *self._tail_after(p, m.successors)])
            # p's own predecessor may be closer still: keep walking back in this round
            # (each step is exactly Zave's stabilize, just not waiting for the timer).
            self._on_successor_view(p, m, depth + 1)
            return
        if self.successors:
            self._notify(self.successors[0])

    def _closest_between(self, s: NodeRef, nodes: Iterable[NodeRef | None]) -> NodeRef | None:
        """The node of s's view (its predecessor, Zave's rule, or one of its successors)
        closest after us that lies between us and s, if any. Successors count too: boxes
        powered on together may adopt each other the wrong way round, a loopy ring that
        stabilize by predecessors alone never repairs (Zave 2017); there a node of s's
        list before s is the sign."""
        best: NodeRef | None = None
        for x in nodes:
            if x is None or not self._closer_successor(x, s):
                continue
            if self._is_suspect(x.id):
                self._probe(x)
            elif best is None or dist(self.id, x.id) < dist(self.id, best.id):
                best = x
        return best

    def _notify(self, s: NodeRef) -> None:
        self._request(s, Notify, None, attempts=2)  # acked: a loss costs an RTO, not a round

    def _rectify(self, n: NodeRef) -> None:
        p = self.predecessor
        if p is None or p.id == n.id or between(n.id, p.id, self.id) or self._is_suspect(p.id):
            self._set_predecessor(n)
            return
        # Zave: the predecessor is replaced only if it is dead: ping it.
        self._pred_candidates[n.id] = n
        if self._pred_ping is not None:
            return
        self._pred_ping = p
        self._request(p, Ping, partial(self._pred_pinged, p, True))

    def _on_ping(self, m: Ping) -> None:
        self._reply(m, Pong)
        if self.status == MEMBER and self.successors and m.src.id == self.successors[0].id:
            # our first successor's view changed (or it wonders whether we live): look now
            self.stats["pokes_received"] += 1
            self._stab_calm = 0
            self._periodic_by("stabilize", self._now + 0.05 * self.rng.random())

    def _on_get_neighbors(self, m: GetNeighbors) -> None:
        self._reply(m, Neighbors, predecessor=self.predecessor, successors=tuple(self.successors))

    def _on_notify(self, m: Notify) -> None:
        self._reply(m, Ack)
        if self.status == MEMBER:
            if self.predecessor is None or self.predecessor.id != m.src.id:
                self._unsettle()  # a new node thinks it precedes us
            self._rectify(m.src)

    def _on_leave(self, m: Leave) -> None:
        self._reply(m, Ack)
        if self.status != MEMBER:
            return
        self._unsettle()
        leaving = m.src
        was_pred = self.predecessor is not None and self.predecessor.id == leaving.id
        was_succ = any(s.id == leaving.id for s in self.successors)
        self._suspect(leaving.id)
        self._drop_finger(leaving.id)
        self._peers.pop(leaving.id, None)
        if was_succ:
            rest = [s for s in self.successors if s.id != leaving.id]
            extra = [s for s in m.successors if not self._is_suspect(s.id)]
            self._set_successors([*rest, *extra])
        if was_pred:
            new = m.predecessor
            if new is not None and (new.id == self.id or self._is_suspect(new.id)):
                new = None
            self._set_predecessor(new, handover=False)  # our range only grows
