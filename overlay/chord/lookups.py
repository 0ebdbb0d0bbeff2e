"""Lookups: the successor of a key, iterative or recursive.

Iterative: the origin asks the best candidate, which answers Found or Redirect to closer
nodes. Recursive: each hop answers a provisional Ack, forwards, and relays the final
Found back. Either way a candidate that does not answer within `lookup_timeout` is
skipped and the next best one tried (`_missed`), so a dead node costs one timeout, not
the lookup (and after all others, it gets a second try: messages get lost).

A node answers Found for its own range (predecessor, self] and, as in Chord, for (self,
first successor]; a key further down its successor list is answered with a Redirect whose
first entries are the presumed successor (a *hint*): that node confirms from its own
predecessor, which keeps answers right during churn and costs no extra hop (it is the
last hop anyway). With every node in every list (rings up to `full_mesh`) that makes
lookups one hop; beyond, fingers make them about log4 N. When nobody can answer (the
owner has just joined, the node before it has a dead successor) the closest node at or
after the key that answered is returned.

A lookup in progress is a `_Lookup` in `_lookups`; it ends once, in `_finish_lookup`
(found, fallen back, or failed: too many hops, no candidate left, `lookup_deadline`),
which calls its callback with the successors or None.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial

from .events import LookupDone, LookupFailed
from .messages import ID_SPACE, Ack, Error, FindSuccessor, Found, Message, NodeRef, Redirect
from .ring import MASK, between_right

LookupCallback = Callable[["tuple[NodeRef, ...] | None", "_Lookup"], None]


class _Lookup:
    __slots__ = (
        "lid", "key", "recursive", "cb", "pool", "tried", "hops", "timeouts", "deadline",
        "reason", "hints", "dead", "round", "best_pre", "best_post", "retried",
    )

    def __init__(self, lid: int, key: int, recursive: bool, cb: LookupCallback) -> None:
        self.lid = lid
        self.key = key
        self.recursive = recursive
        self.cb = cb
        self.pool: dict[int, NodeRef] = {}
        self.tried: set[int] = set()
        self.hops = 0
        self.timeouts = 0
        self.deadline = 0.0
        self.reason = ""
        self.hints: dict[int, int] = {}  # presumed successors of key: id -> priority
        self.dead: set[int] = set()
        self.round = 0
        self.best_pre = ID_SPACE  # distance to the key of the closest preceding responder
        self.best_post: NodeRef | None = None  # closest responder at or after the key
        self.retried: set[int] = set()  # candidates given a second try (message loss)


class Lookups:
    """Lookups in progress (`_lookups`), routing, and the FindSuccessor handler."""

    def _init_lookups(self, now: float) -> None:
        self._lookups: dict[int, _Lookup] = {}

    def lookup(self, key: int, now: float, recursive: bool = False) -> int:
        """Find the successor of `key`; a LookupDone or LookupFailed event follows."""
        self._touch(now)
        rid = next(self._ids)
        self._start_lookup(key & MASK, partial(self._lookup_done, rid, key), recursive=recursive)
        return rid

    def _lookup_done(self, rid: int, key: int, succs: tuple[NodeRef, ...] | None,
                     lk: _Lookup) -> None:
        if succs:
            self._events.append(LookupDone(rid, key, succs, lk.hops, lk.timeouts))
        else:
            self._events.append(
                LookupFailed(rid, key, lk.reason or "unreachable", lk.hops, lk.timeouts)
            )

    def _route(self, key: int) -> tuple[bool, list[NodeRef]]:
        """(True, successors of key) when this node can answer, else (False, nodes to ask).

        A node answers for its own range (predecessor, self] and, as in Chord, for
        (self, first successor], which stabilize checks every round. A key further down
        the successor list is not answered from the list (it may be stale: a node may have
        joined in between, or died): the presumed successor and the one after it are
        returned first, as *hints*, so the next hop is the node that can confirm from its
        own predecessor. That costs nothing in hops (the hint is the last hop anyway)
        and keeps lookups right during churn. Then the closest preceding nodes follow.
        """
        succs = self.successors
        if not succs:
            return True, [self.ref]
        r = self.config.r
        p = self.predecessor
        # without a predecessor (just joined, or it died) we do not know our range: the
        # node before us answers for it (the next rule), as in Chord
        if p is not None and not self._is_suspect(p.id) and between_right(key, p.id, self.id):
            return True, [self.ref, *succs[: r - 1]]
        if between_right(key, self.id, succs[0].id):
            return True, succs[:r]
        prev = succs[0].id
        for i in range(1, len(succs)):
            s = succs[i]
            if between_right(key, prev, s.id):
                return False, [*succs[i : i + 2], *self._closest_preceding(key)]
            prev = s.id
        pre = self._closest_preceding(key)
        # The closest known node at or after the key (our predecessor, say) goes first
        # when it is within about one node gap of the key and nearer than the best
        # preceding node: it can answer from its own predecessor, or point back to it.
        # (Further away it would not help: nodes know little behind themselves.)
        post = None
        pd = ID_SPACE
        for x in (*succs, *self._unique_fingers(), self.predecessor):
            if x is not None and x.id != self.id and not self._is_suspect(x.id):
                d = (x.id - key) & MASK
                if d < pd:
                    post, pd = x, d
        near = 2 * ID_SPACE / max(1.0, self.estimated_size())
        if post is not None and pd <= near and (not pre or pd <= (key - pre[0].id) & MASK):
            return False, [post, *pre]
        return False, pre

    def _closest_preceding(self, key: int, exclude: int = -1) -> list[NodeRef]:
        me = self.id
        cands: dict[int, NodeRef] = {}
        dk = (key - me) & MASK
        for group in (self.successors, self._unique_fingers()):
            for x in group:
                dx = (x.id - me) & MASK
                if 0 < dx < dk and x.id != exclude:
                    cands[x.id] = x
        p = self.predecessor
        if p is not None and 0 < ((p.id - me) & MASK) < dk and p.id != exclude:
            cands[p.id] = p
        out = [x for x in cands.values() if not self._is_suspect(x.id)]
        out.sort(key=lambda x: (key - x.id) & MASK)
        return out

    def _start_lookup(
        self,
        key: int,
        cb: LookupCallback,
        recursive: bool = False,
        pool: list[NodeRef] | None = None,
        use_local: bool = True,
        exclude: int | None = None,
    ) -> int:
        lid = next(self._ids)
        lk = _Lookup(lid, key, recursive, cb)
        if exclude is not None:
            lk.tried.add(exclude)  # never asked (nor tried a second time)
            lk.retried.add(exclude)
        if use_local:
            found, nodes = self._route(key)
            if found:
                self.stats["lookups_done"] += 1
                cb(tuple(nodes), lk)
                return lid
            lk.best_pre = (key - self.id) & MASK
            self._add_candidates(lk, self.ref, nodes)
        for c in pool or ():
            if c.id != self.id:
                lk.pool[c.id] = c
        lk.deadline = self._now + self.config.lookup_deadline
        self._lookups[lid] = lk
        self._at(lk.deadline, "lookup", lid)
        self._lookup_step(lk)
        return lid

    def _lookup_step(self, lk: _Lookup) -> None:
        if lk.lid not in self._lookups:
            return
        if lk.hops + lk.timeouts >= self.config.max_hops:
            lk.reason = "too many hops"
            self._finish_lookup(lk, self._fallback(lk))
            return
        best: NodeRef | None = None
        best_rank: tuple[int, int, int] | None = None
        key = lk.key
        hints = lk.hints
        for c in lk.pool.values():
            if c.id in lk.tried:
                continue
            h = hints.get(c.id)
            rank = (
                1 if (self._avoided(c.id) or self._is_suspect(c.id)) else 0,
                0 if h is not None else 1,
                h if h is not None else (key - c.id) & MASK,
            )
            if best_rank is None or rank < best_rank:
                best, best_rank = c, rank
        if best is None:
            # second chance: a candidate that timed out may only have lost a message
            for c in lk.pool.values():
                if c.id in lk.dead and c.id not in lk.retried:
                    h = hints.get(c.id)
                    d = h if h is not None else (key - c.id) & MASK
                    rank = (0, 0 if h is not None else 1, d)
                    if best_rank is None or rank < best_rank:
                        best, best_rank = c, rank
            if best is not None:
                lk.retried.add(best.id)
                lk.tried.discard(best.id)
        if best is None:
            lk.reason = lk.reason or (
                f"no candidate answered ({len(lk.tried)} tried, {lk.timeouts} timeouts)"
            )
            self._finish_lookup(lk, self._fallback(lk))
            return
        c = best
        lk.tried.add(c.id)
        self._request(
            c, FindSuccessor, partial(self._lookup_reply, lk, c), attempts=1,
            timeout=self.config.lookup_timeout, provisional=lk.recursive, key=key,
            recursive=lk.recursive, origin=self.ref if lk.recursive else None,
        )

    def _fallback(self, lk: _Lookup) -> tuple[NodeRef, ...] | None:
        """Nobody could answer for the key (its owner has no predecessor yet and the
        node before it has a dead successor): the closest live node at or after the key
        that answered us is the best guess."""
        if lk.best_post is None:
            return None
        self.stats["lookup_fallbacks"] = self.stats.get("lookup_fallbacks", 0) + 1
        return (lk.best_post,)

    def _lookup_reply(self, lk: _Lookup, c: NodeRef, m: Message | None) -> None:
        """The hop to candidate c finished: an answer, an error answer or a timeout."""
        if lk.lid not in self._lookups:
            return
        if m is None:
            lk.timeouts += 1
            lk.dead.add(c.id)
            self._missed(c)
            self._lookup_step(lk)
            return
        lk.dead.discard(c.id)  # it answered after all
        dpre = (lk.key - c.id) & MASK
        if dpre < lk.best_pre:
            lk.best_pre = dpre
        if lk.best_post is None or (c.id - lk.key) & MASK < (lk.best_post.id - lk.key) & MASK:
            lk.best_post = c
        if isinstance(m, Found) and m.successors:
            lk.hops = m.hops if lk.recursive else lk.hops + 1
            alive = tuple(x for x in m.successors if x.id not in lk.dead)
            if alive:
                self._finish_lookup(lk, alive)
            else:
                self._lookup_step(lk)
        elif isinstance(m, Redirect):
            lk.hops += 1
            self._add_candidates(lk, c, m.closer)
            self._lookup_step(lk)
        else:  # Error (or a recursive attempt gave up): go on iteratively
            if isinstance(m, Error) and m.code == 503:
                self._drop_finger(c.id)
            elif lk.recursive:
                lk.recursive = False
                lk.tried.discard(c.id)
            self._lookup_step(lk)

    def _add_candidates(self, lk: _Lookup, c: NodeRef, nodes: Iterable[NodeRef]) -> None:
        """Take nodes offered by c: hints (at or after the key as seen from c) first, in
        the order given, newest first; else only nodes strictly closer to the key."""
        key = lk.key
        lk.round += 1
        base = -lk.round * 16
        for i, x in enumerate(nodes):
            if x.id == self.id or x.id in lk.tried:
                continue
            if between_right(key, c.id, x.id):
                lk.hints[x.id] = base + i
                lk.pool[x.id] = x
            elif ((key - x.id) & MASK) < lk.best_pre:
                lk.pool[x.id] = x  # strictly closer than any preceding node so far

    def _lookup_expired(self, lk: _Lookup) -> None:
        lk.reason = lk.reason or "deadline"
        self._finish_lookup(lk, None)

    def _finish_lookup(self, lk: _Lookup, result: tuple[NodeRef, ...] | None) -> None:
        if self._lookups.pop(lk.lid, None) is None:
            return
        self.stats["lookups_done" if result else "lookups_failed"] += 1
        lk.cb(result, lk)

    def _on_find_successor(self, m: FindSuccessor) -> None:
        j = self._join
        if j is not None and not self.successors:
            # alone and joining: point to the ring we are joining rather than answer as a
            # ring of one (which would pull the asker into a second ring beside it); a
            # lookup that only meets such answers ends at the nearest one that answered
            self._reply(m, Redirect, key=m.key, closer=(j.bootstrap,), hops=m.hops + 1)
            return
        found, nodes = self._route(m.key)
        if found:
            self._reply(m, Found, key=m.key, successors=tuple(nodes), hops=m.hops + 1)
            return
        if not m.recursive:
            self._reply(m, Redirect, key=m.key, closer=tuple(nodes[:4]), hops=m.hops + 1)
            return
        self._reply(m, Ack)  # provisional: we forward and will answer
        cands = [x for x in nodes if x.id != m.src.id]
        self._forward(m, cands)

    def _forward(self, m: FindSuccessor, cands: list[NodeRef]) -> None:
        cands = sorted(cands, key=lambda x: self._avoided(x.id))  # stable: best first
        if not cands or m.hops + 1 >= self.config.max_hops:
            self._reply(m, Error, code=504, reason="no route")
            return
        c, rest = cands[0], cands[1:]
        self._request(
            c, FindSuccessor, partial(self._forwarded, m, c, rest), attempts=1,
            timeout=self.config.lookup_timeout, provisional=True, key=m.key, recursive=True,
            hops=m.hops + 1, origin=m.origin or m.src,
        )

    def _forwarded(self, m: FindSuccessor, c: NodeRef, rest: list[NodeRef],
                   resp: Message | None) -> None:
        """The recursive hop to c finished: relay its Found, else try the next one."""
        if isinstance(resp, Found):
            self._reply(m, Found, key=m.key, successors=resp.successors, hops=resp.hops)
            return
        if resp is None:
            self._missed(c, confirm=False)  # a forwarding hop only routes around it
        self._forward(m, rest)
