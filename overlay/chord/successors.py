"""The successor list and the predecessor, after Zave ("Reasoning about identifier
spaces: how to make Chord correct", IEEE TSE 2017): a predecessor and a successor list
ordered clockwise from this node, at least `r` long and growing with the estimated ring
size (every other node while the ring is at most `full_mesh` nodes, so small rings route
in one hop; about log2 N beyond). Every change bumps `version`, tells the owner
(`NeighborsChanged`), makes stabilize fast again and schedules a replication pass; a
closer predecessor gets the records it is now primary for. A node that loses every
successor rejoins through anything else it knows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from .events import NeighborsChanged
from .lifecycle import MEMBER
from .messages import ID_SPACE, NodeRef
from .ring import MASK, between, dist

if TYPE_CHECKING:
    from .lookups import _Lookup

_SIZE_SAMPLE = 6  # successors whose span estimates the ring size for the list's length


class SuccessorList:
    """`successors`, `predecessor`, `version`, `ring_complete`, the list's target length."""

    def _init_successors(self, now: float) -> None:
        self.successors: list[NodeRef] = []
        self.predecessor: NodeRef | None = None
        self.version = 0  # bumped whenever successors or predecessor change
        self.ring_complete = False  # the successor list holds every other node
        self._rejoining = False  # a node that lost every successor is looking itself up
        self._large = False  # ring bigger than full_mesh: log-sized successor list
        self._succ_len: int | None = None  # that log-sized length (see _succ_target)

    def estimated_size(self) -> float:
        """Ring size estimate from the successor list's span (exact when it wraps)."""
        n = len(self.successors)
        if n == 0:
            return 1.0
        if self.ring_complete:
            return n + 1.0
        span = dist(self.id, self.successors[-1].id)
        return max(n + 1.0, n * ID_SPACE / max(span, 1))

    def known_nodes(self) -> list[NodeRef]:
        out: dict[int, NodeRef] = {}
        for x in self.successors:
            out[x.id] = x
        if self.predecessor is not None:
            out[self.predecessor.id] = self.predecessor
        for x in self._unique_fingers():
            out[x.id] = x
        return list(out.values())

    def _succ_target(self) -> int:
        c = self.config
        n = self.estimated_size()
        if self.ring_complete:
            self._large = n > c.full_mesh + 1
        elif len(self.successors) >= c.full_mesh:
            self._large = True  # a full list that does not wrap: the ring is bigger
        elif n < c.full_mesh / 2:
            self._large = False
        if not self._large:
            return max(c.r, c.full_mesh)
        # about log2 N, with hysteresis: keep the length while log2 of the estimate stays
        # within [length - 1.5, length + 0.5]
        t = math.log2(self._size_for_list())
        length = self._succ_len
        if length is None or not length - 1.5 <= t <= length + 0.5:
            length = self._succ_len = math.ceil(t)
        return max(c.r, min(c.max_successors, length))

    def _size_for_list(self) -> float:
        """Ring size estimate from the span of the first `_SIZE_SAMPLE` successors only.
        From the whole list (and without hysteresis), the list's length fed back into its
        own target (a longer list spans more and can give a smaller estimate, hence a
        shorter list, and so on): lists flapped between two lengths, each flap a change
        that kept stabilize at its fast rate and poked the predecessor."""
        succ = self.successors
        if self.ring_complete or not succ:
            return len(succ) + 1.0
        k = min(len(succ), _SIZE_SAMPLE)
        span = dist(self.id, succ[k - 1].id)
        return max(k + 1.0, k * ID_SPACE / max(span, 1))

    def _normalize(self, nodes: Iterable[NodeRef]) -> list[NodeRef]:
        """Distinct, not self, sorted clockwise from self (Zave's ordered successor list)."""
        seen: dict[int, NodeRef] = {}
        for x in nodes:
            if x.id != self.id and x.id not in seen:
                seen[x.id] = x
        me = self.id
        return sorted(seen.values(), key=lambda x: (x.id - me) & MASK)

    def _set_successors(self, nodes: Iterable[NodeRef]) -> None:
        lst = self._normalize(nodes)
        target = self._succ_target()
        if len(lst) > target:
            lst = lst[:target]
            self.ring_complete = False
        old = self.successors
        if len(old) == len(lst) and all(a.id == b.id for a, b in zip(old, lst, strict=True)):
            self.successors = lst
            return
        self.successors = lst
        self.version += 1
        if lst:
            self.join_gave_up = False
            if self._join is not None:  # a peer adopted us: on a ring, the join is moot
                self._add_peer(self._join.bootstrap, self._now)  # (another ring? merge)
                self._join = None
        self._events.append(NeighborsChanged(self.predecessor, tuple(lst)))
        self._schedule_sync()
        self._unsettle()
        self._tell_predecessor()
        self._push_calm = 0
        self._next_full_push = min(
            self._next_full_push, self._now + self._jit(self.config.replica_refresh)
        )
        if not lst and old and self.status == MEMBER:
            self._lost_all_successors()

    def restore_ring(self, predecessor: NodeRef | None, ring: Sequence[NodeRef]) -> None:
        """Start from a known ring state, as after loading a snapshot: `predecessor`, and
        `ring` every other node of the ring clockwise from this one. The successor list
        keeps as many of them as its target length wants (the whole ring when it is small
        enough to know whole); fingers are left to fix-fingers and passive learning."""
        self.predecessor = predecessor
        want = self._succ_target() if ring else 0
        k = min(len(ring), max(want, self.config.r))
        self._set_successors(ring[:k])
        self.ring_complete = k == len(ring)
        self._set_successors(ring[: self._succ_target()])
        self.version += 1

    def _tail_after(self, head: NodeRef, nodes: Iterable[NodeRef]) -> list[NodeRef]:
        """The part of head's successor list that continues clockwise after head and
        stops before wrapping past this node."""
        out = []
        last = dist(self.id, head.id)
        for x in nodes:
            if x.id == self.id:
                self.ring_complete = True
                break
            d = dist(self.id, x.id)
            if d <= last:
                break
            last = d
            if not self._is_suspect(x.id):
                out.append(x)
            else:
                self._probe(x)
        return out

    def _closer_successor(self, candidate: NodeRef, succ: NodeRef) -> bool:
        """Zave's stabilize test: adopt succ's predecessor only when it lies between."""
        return candidate.id != self.id and between(candidate.id, self.id, succ.id)

    def _set_predecessor(self, node: NodeRef | None, handover: bool = True) -> None:
        old = self.predecessor
        if (old is None and node is None) or (
            old is not None and node is not None and old.id == node.id
        ):
            self.predecessor = node
            return
        self.predecessor = node
        self.version += 1
        self._events.append(NeighborsChanged(node, tuple(self.successors)))
        self._unsettle()
        if old is not None and node is not None and between(node.id, old.id, self.id):
            self._tell_predecessor(old)  # a node joined between: old should adopt it
        if node is not None and handover:
            self._hand_over_to_predecessor(old, node)
        # the ring changed next to us: the copies we hold as replicas may now belong to
        # a node that does not have them (a crash took their primary): re-check them
        self._recheck_before = self._now
        self._schedule_sync()

    def _lost_all_successors(self) -> None:
        """Every successor is dead: rejoin through anything else we know, else be alone."""
        self.ring_complete = False
        pool = []
        if self.predecessor is not None:
            pool.append(self.predecessor)
        pool.extend(self._unique_fingers())
        pool.extend(self._recent.values())
        pool = [p for p in pool if p.id != self.id and not self._is_suspect(p.id)]
        if not pool:
            return  # nobody left that we know of: a ring of one
        self._rejoining = True  # before: the lookup may end at once
        self._start_lookup(self.id, self._rejoined, pool=pool, use_local=False)

    @property
    def detached(self) -> bool:
        """Lost every successor while part of a larger ring, and rejoining."""
        return self._rejoining and not self.successors

    def _rejoined(self, succs: tuple[NodeRef, ...] | None, lk: _Lookup) -> None:
        found = [s for s in succs or () if s.id != self.id]
        if found and not self.successors:
            self._set_successors(found)
            self._periodic("stabilize", self._now)
        self._rejoining = False
