"""Ring unification: merging rings that formed apart (after Shafaat et al., "Dealing
with network partitions in structured overlay networks").

A node that learns of a peer (discovery calls `learn_peer`, or a neighbour it lost to a
timeout comes back) pings it, looks up its id on its own ring and, when the answer is not
that peer, the peer is on another ring: the node sends itself a `Learn(peer)`. A Learn is
routed to the node the candidate falls just after; that node checks the candidate is
alive, adopts it into its successor list and sends the candidate its former successor
(and, when it lies between, tells the candidate's predecessor about itself). Each such
adoption zips a stretch of the two rings together; stabilize does the rest. Lost peers
are re-checked with backoff (`_peers`, in liveness), so merging does not depend on one
message getting through. A lone node that learns of a peer joins through it instead.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from .lifecycle import MEMBER
from .messages import Ack, GetNeighbors, Learn, Message, Neighbors, NodeRef, Ping
from .ring import between

if TYPE_CHECKING:
    from .lookups import _Lookup


class Unification:
    """Adoptions in flight (`_adopting`), Learn routing, merge checks of peers."""

    def _init_unify(self, now: float) -> None:
        self._adopting: set[int] = set()  # nodes asked for their neighbours to adopt them

    def learn_peer(self, ref: NodeRef, now: float) -> None:
        """Discovery (or a stored peer list) saw `ref`, a node of this overlay.

        A lone node joins through it; a ring member checks whether it is on the same ring
        and starts merging the two rings when it is not.
        """
        self._touch(now)
        if ref.id == self.id or self.status != MEMBER or self._in_tables(ref.id):
            return
        if self._join is not None:
            # it may be on another ring than the one we are joining: checked once joined
            self._add_peer(ref, now)
            return
        if not self.successors and self.predecessor is None:
            self.join(ref, now)
            return
        self._add_peer(ref, now)
        self._unsettle()
        self._periodic_by("merge", now)

    def _adopt(self, c: NodeRef, zip_rings: bool) -> None:
        """Check c is alive and take it (with its list) into our successor list."""
        if c.id in self._adopting or c.id == self.id:
            return
        self._adopting.add(c.id)
        self._request(c, GetNeighbors, partial(self._adopt_viewed, c, zip_rings))

    def _adopt_viewed(self, c: NodeRef, zip_rings: bool, m: Message | None) -> None:
        """c answered with its neighbours (adopt it), refused (leave it), or is dead."""
        self._adopting.discard(c.id)
        if m is None:
            self._declare_dead(c, lost=False)
            return
        if self.status != MEMBER or not isinstance(m, Neighbors):
            return
        old_first = self.successors[0] if self.successors else None
        if old_first is not None and old_first.id == c.id:
            return
        self.stats["adoptions"] += 1
        self.ring_complete = False
        self._set_successors([c, *self._tail_after(c, m.successors), *self.successors])
        if self.successors:
            self._notify(self.successors[0])
        if not zip_rings:
            return
        if old_first is not None:
            self._request(c, Learn, None, attempts=2, candidate=old_first)
        q = m.predecessor
        if q is not None and q.id != self.id and between(self.id, q.id, c.id):
            self._request(q, Learn, None, attempts=2, candidate=self.ref)

    def _on_learn(self, m: Learn) -> None:
        self._reply(m, Ack)
        self._learn(m.candidate, m.hops)

    def _learn(self, c: NodeRef, hops: int) -> None:
        if self.status != MEMBER or c.id == self.id:
            return
        if any(s.id == c.id for s in self.successors):
            return
        if not self.successors or between(c.id, self.id, self.successors[0].id):
            self._adopt(c, zip_rings=True)
            return
        if hops >= self.config.max_hops:
            return
        nxt = self._closest_preceding(c.id, exclude=c.id)
        if not nxt:
            return
        self.stats["learns_routed"] += 1
        self._request(nxt[0], Learn, None, attempts=2, candidate=c, hops=hops + 1)

    def _merge_check(self) -> None:
        now = self._now
        peer = None
        for p in self._peers.values():
            if p.due <= now and (peer is None or p.due < peer.due):
                peer = p
        if peer is None:
            return
        if self._in_tables(peer.ref.id):
            del self._peers[peer.ref.id]
            return
        self.stats["merge_checks"] += 1
        peer.backoff = min(peer.backoff * 2, self.config.merge_backoff_max)
        peer.due = now + peer.backoff * (0.5 + self.rng.random())
        self._request(peer.ref, Ping, partial(self._peer_pinged, peer.ref), attempts=2)

    def _peer_pinged(self, ref: NodeRef, m: Message | None) -> None:
        if m is None:
            return  # not reachable now: checked again after its backoff
        # Ask our ring, never the peer itself: it may already sit among our fingers
        # (we just heard from it) and would of course answer for its own id.
        self._start_lookup(ref.id, partial(self._peer_looked_up, ref), exclude=ref.id)

    def _peer_looked_up(self, ref: NodeRef, succs: tuple[NodeRef, ...] | None,
                        lk: _Lookup) -> None:
        if not succs:
            return
        # A ring that knows all its nodes (ring_complete) does not hold ref: ref is on
        # another ring even when our lookup, through a finger learnt from that ring,
        # found it.
        if succs[0].id == ref.id and not self.ring_complete:
            self._peers.pop(ref.id, None)  # on our ring
            return
        self._learn(ref, 0)  # another ring (or not stabilised yet): zip
