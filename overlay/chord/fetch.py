"""Fetching a resource's records (`get`): a lookup of its key, then its replicas asked
in turn until one answers, then GetDone (the live records, newest version of each) or
GetFailed.

Every copy is verified on fetch. Our own copies count (after a split the replicas the
lookup names may all be gone). A target that does not answer is routed around and
checked (`_missed`); when none answered, the lookup's further successors are asked, then
a fresh lookup (which avoids the silent ones), all within `lookup_deadline`. A lookup
that met timeouts and found nothing is retried once. The get in progress is a `_Fetch`,
carried by its pending lookup or request (they end by deadline or timeout), and every
path ends in `_end_fetch`.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING

from .events import GetDone, GetFailed
from .messages import Fetch, Message, NodeRef, Record, Records
from .records import verify_record

if TYPE_CHECKING:
    from .lookups import _Lookup


class _Fetch:
    """One get: the records gathered so far and the nodes that did not answer."""

    __slots__ = (
        "rid", "resource_id", "deadline", "got", "hops", "asked", "retry", "again",
        "dead", "spare", "local", "lookups",
    )

    def __init__(self, rid: int, resource_id: int, deadline: float) -> None:
        self.rid = rid
        self.resource_id = resource_id
        self.deadline = deadline
        self.got: dict[tuple[int, int, str], Record] = {}
        self.hops = 0
        self.asked = False  # some node (or our own store as a target) answered
        self.retry = True  # the first lookup may be retried once
        self.again = False  # ... and that retry is due
        self.dead: set[int] = set()  # targets that did not answer
        self.spare: list[NodeRef] = []  # further successors the lookup returned
        self.local = False  # we hold live copies ourselves
        self.lookups = 0

    def keep(self, rec: Record) -> None:
        """Take rec unless we hold the same record at a higher sequence."""
        old = self.got.get(rec.identity)
        if old is None or old.sequence < rec.sequence:
            self.got[rec.identity] = rec


class Fetching:
    """Gets: `get` and the steps of a `_Fetch`."""

    def get(self, resource_id: int, now: float) -> int:
        """Fetch the live records of a resource; GetDone or GetFailed follows."""
        self._touch(now)
        rid = next(self._ids)
        f = _Fetch(rid, resource_id, now + self.config.lookup_deadline)
        # our own copies count: after a split the replicas the lookup names may all be
        # gone, and a node holding live copies should not fail for want of an answer
        mine = [r for r in self.store.get(resource_id, now, tombstones=True)
                if verify_record(r, self.signer)]
        if any(r.lifetime > 0 for r in mine):
            f.local = True
            for rec in mine:
                f.keep(rec)
        self._get(f)
        return rid

    def _get(self, f: _Fetch) -> None:
        f.lookups += 1
        self._start_lookup(f.resource_id, partial(self._fetch_looked_up, f))

    def _fetch_looked_up(self, f: _Fetch, succs: tuple[NodeRef, ...] | None,
                         lk: _Lookup) -> None:
        f.hops = max(f.hops, lk.hops)
        # A lookup that met timeouts may have ended at the wrong node (loss, churn):
        # when it then finds nothing, one fresh attempt is cheap insurance.
        if f.retry and (lk.timeouts > 0 or not succs):
            f.again = True
        f.retry = False
        alive = [s for s in succs or () if s.id not in f.dead]
        # nodes that just missed a hop or a fetch are asked last, not skipped
        alive.sort(key=lambda s: self._avoided(s.id) or self._is_suspect(s.id))
        if not alive:
            if f.again and self._now < f.deadline:
                f.again = False
                self._get(f)
            else:
                self._end_fetch(f, lk.reason or "lookup")
            return
        r = self.config.r
        f.spare = alive[r:]
        self._fetch_from(f, alive[:r])

    def _end_fetch(self, f: _Fetch, reason: str) -> None:
        if f.got or f.asked:
            live = tuple(
                sorted(
                    (r for r in f.got.values() if r.lifetime > 0),
                    key=lambda r: (r.owner, r.contact),
                )
            )
            self._events.append(GetDone(f.rid, f.resource_id, live, f.hops))
        else:
            self._events.append(GetFailed(f.rid, f.resource_id, reason))

    def _fetch_from(self, f: _Fetch, targets: list[NodeRef]) -> None:
        """Ask targets in turn until one answers. A target that does not answer is
        routed around and checked (a neighbour is pinged, and dropped when dead); when
        none answered, the lookup's further successors are asked, then a fresh lookup
        (which avoids the silent ones) is made, all within the lookup deadline."""
        targets = [t for t in targets if t.id not in f.dead]
        if f.asked and f.got:
            self._end_fetch(f, "no replica answered")
            return
        if not targets:
            if f.again and not f.got and self._now < f.deadline:
                f.again = False  # the first lookup met timeouts: one fresh attempt
                self._get(f)
            elif f.asked or f.local or self._now >= f.deadline:
                self._end_fetch(f, "no replica answered")  # (our own copies, if any)
            elif f.spare:
                spare, f.spare = f.spare, []
                self._fetch_from(f, spare)
            elif f.dead and f.lookups < 4:
                self._get(f)  # a fresh lookup: the silent ones are avoided now
            else:
                self._end_fetch(f, "no replica answered")
            return
        t, rest = targets[0], targets[1:]
        if t.id == self.id:
            self._take(f, self.store.get(f.resource_id, self._now, tombstones=True), self.ref)
            f.asked = True
            self._fetch_from(f, rest)
            return
        self._request(t, Fetch, partial(self._fetched, f, t, rest), attempts=2,
                      resource_id=f.resource_id)

    def _fetched(self, f: _Fetch, t: NodeRef, rest: list[NodeRef], m: Message | None) -> None:
        """The Fetch to t finished: its records (any answer counts as asked), or silence."""
        if m is None:
            f.dead.add(t.id)
            self._missed(t)
            if f.local:  # answer from our own copies rather than wait on more timeouts
                self._end_fetch(f, "no replica answered")
            else:
                self._fetch_from(f, rest)
            return
        if isinstance(m, Records):
            self._take(f, m.records, t)
        f.asked = True
        self._fetch_from(f, rest)

    def _take(self, f: _Fetch, recs: Iterable[Record], src: NodeRef) -> None:
        for rec in recs:
            if rec.resource_id != f.resource_id:
                continue
            if not verify_record(rec, self.signer):
                self._reject(rec, src, "bad signature in answer")
                continue
            f.keep(rec)
