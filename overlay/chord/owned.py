"""The node's own records (see records.py): signing, placing and refreshing them.

`put` signs a record with the next sequence of `sequences` and stores it at the successor
of its key, writing the replicas it was told of in parallel (a primary that crashes before
its first replication push would otherwise take the only copy with it). Owners place
their records again `first_refresh` seconds after a put (the first placement may have
followed a stale view: the same signed copy will do, with the life it has left, unless
its claim is still unanswered) and re-sign and re-store them every lifetime *
`refresh_fraction`; a failed put is retried in seconds, and every record is stored again
soon after a death (that node may have held every copy). A copy of one of our records
seen elsewhere with a sequence we do not hold (issued before a restart that lost our
counter) makes us go above it at once.

Claims (claims.py): a put starts a claim on the AOR (`claim` = its sequence); until a
storing node has accepted it, every version sent is a fresh claim again, then refreshes
keep the claim's number. A storing node that refuses one as "in use" ends it: we stop
publishing and say so (`ClaimLost`; a first put also fails, "in use").
"""

from __future__ import annotations

import heapq
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING

from .events import ClaimLost, PutDone, PutFailed
from .lifecycle import MEMBER
from .messages import Message, NodeRef, Record, Store, Stored
from .records import sign_record

if TYPE_CHECKING:
    from .lookups import _Lookup


class OwnedRecords:
    """`_owned` (identity -> (record, next refresh)) and `_republish`. The refreshes
    due are found in a heap (lazy deletion: an entry counts while `_owned` holds its
    time), so a tick costs what is due, not the number of records held."""

    def _init_owned(self, now: float) -> None:
        self._owned: dict[tuple[int, int, str], tuple[Record, float]] = {}
        self._refresh_heap: list[tuple[float, tuple[int, int, str]]] = []
        self._republish: set[tuple[int, int, str]] = set()  # due again after a death
        self._unconfirmed: set[tuple[int, int, str]] = set()  # claims no node accepted yet
        # records put and not re-stored since: when they were signed (see the module doc)
        self._issued: dict[tuple[int, int, str], float] = {}

    def _own(self, rec: Record, due: float) -> None:
        """Hold `rec` as ours, to refresh at `due` (re-signed: only `put` schedules the
        first re-store of a copy as signed)."""
        self._owned[rec.identity] = (rec, due)
        self._issued.pop(rec.identity, None)
        heap = self._refresh_heap
        heapq.heappush(heap, (due, rec.identity))
        if len(heap) > 2 * len(self._owned) + 1024:  # stale entries: drop them
            heap[:] = [(d, i) for i, (_, d) in self._owned.items()]
            heapq.heapify(heap)

    def put(self, record: Record, now: float) -> int:
        """Sign `record` as ours, store it at its place and keep refreshing it. Its
        sequence is the next of `self.sequences` (at least `record.sequence`)."""
        self._touch(now)
        rid = next(self._ids)
        seq = self.sequences.next(record.sequence)
        rec = sign_record(replace(record, sequence=seq, remaining=0, claim=seq), self.id,
                          self.signer)
        self._unconfirmed.add(rec.identity)
        if rec.lifetime > 0:
            # a first re-store soon after: the copies may have been placed by a stale
            # view, or on a primary that crashed before replicating; then every
            # lifetime * refresh_fraction
            first = min(self._refresh_after(rec), self.config.first_refresh)
            self._own(rec, now + first)
            self._issued[rec.identity] = now
        else:
            self._forget_owned(rec.identity)
        self._place(rec, rid)
        return rid

    def remove(self, resource_id: int, aor: str, contact: str, now: float) -> int:
        """Remove one of our bindings: store a tombstone with a higher sequence."""
        ident = (resource_id, self.id, contact)
        old = self._owned.get(ident)
        seq = old[0].sequence + 1 if old else 1
        st = self.store.stored(ident)
        if st is not None:
            seq = max(seq, st.record.sequence + 1)
        rec = Record(resource_id, aor, self.id, contact, seq, 0)  # put() takes it higher
        return self.put(rec, now)

    def owned_records(self) -> list[Record]:
        return [rec for rec, _ in self._owned.values()]

    def _refresh_after(self, rec: Record) -> float:
        return max(1.0, rec.lifetime * self.config.refresh_fraction)

    def _saw_own(self, rec: Record) -> None:
        """A copy of one of our records came from elsewhere: if it is a version we do not
        hold (issued before a restart that lost our counter), go above it at once."""
        self.sequences.witness(rec.sequence)
        owned = self._owned.get(rec.identity)
        if owned is None:
            return
        mine = owned[0]
        if mine.sequence > rec.sequence or (
            mine.sequence == rec.sequence and mine.signature == rec.signature
        ):
            return
        self._own(owned[0], self._now)
        self._periodic_by("refresh", self._now)

    def _republish_soon(self) -> None:
        """A node died: it may have held every copy of some of our records (one death is
        covered by the replicas, a split is not). Store them again, with a new sequence,
        after a short batching delay (several deaths are usually noticed together)."""
        if not self._owned or self.status != MEMBER:
            return
        when = self._now + self.config.sync_delay
        for ident, (rec, due) in self._owned.items():
            if due > when:
                self._own(rec, when)
            self._republish.add(ident)
        self._periodic_by("refresh", when)

    def _place(self, rec: Record, rid: int | None) -> None:
        """Store rec at the successor of its key (replicas follow from there)."""
        self._start_lookup(rec.resource_id, partial(self._placed, rec, rid))

    def _placed(self, rec: Record, rid: int | None, succs: tuple[NodeRef, ...] | None,
                lk: _Lookup) -> None:
        if not succs:
            self._put_failed(rec, rid, lk.reason or "lookup")
            return
        targets = list(succs[: self.config.r])
        # Write the replicas too, in parallel: a primary that crashes before its
        # first replication push would otherwise take the only copy with it.
        for t in targets[1:]:
            if t.id == self.id:
                self._accept_records((rec,), self.ref, replica=True, signed_here=True)
            else:
                self._request(t, Store, None, attempts=2, records=(rec,), replica=True)
        self._store_at(rec, rid, targets)

    def _store_at(self, rec: Record, rid: int | None, targets: list[NodeRef]) -> None:
        if not targets:
            self._put_failed(rec, rid, "no replica answered")
            return
        t = targets[0]
        if t.id == self.id:
            if self._accept_records((rec,), self.ref, signed_here=True)[2]:
                self._claim_refused(rec, rid)
            else:
                self._put_done(rec, rid, self.ref)
            return
        self._request(t, Store, partial(self._stored_at, rec, rid, targets), records=(rec,))

    def _stored_at(self, rec: Record, rid: int | None, targets: list[NodeRef],
                   m: Message | None) -> None:
        """The Store to targets[0] finished: done, refused, or silent (try the next)."""
        if m is None:
            self._store_at(rec, rid, targets[1:])
        elif isinstance(m, Stored) and m.in_use:
            self._claim_refused(rec, rid)
        elif isinstance(m, Stored) and m.rejected == 0:
            self._put_done(rec, rid, targets[0])
        else:
            self._put_failed(rec, rid, "refused")

    def _put_done(self, rec: Record, rid: int | None, primary: NodeRef) -> None:
        self._unconfirmed.discard(rec.identity)
        if rid is not None:
            self._events.append(PutDone(rid, rec.resource_id, primary))

    def _claim_refused(self, rec: Record, rid: int | None) -> None:
        """The AOR is another owner's: stop publishing it (see the module doc)."""
        if rid is not None:
            self._events.append(PutFailed(rid, rec.resource_id, "in use"))
        owned = self._owned.get(rec.identity)
        if owned is not None and owned[0].claim != rec.claim:
            return  # the answer to an ended claim: a newer one is under way
        self.stats["claims_lost"] += 1
        self._forget_owned(rec.identity)
        if rec.lifetime > 0:
            self._events.append(ClaimLost(rec.resource_id, rec.aor))

    def _put_failed(self, rec: Record, rid: int | None, reason: str) -> None:
        if rid is not None:
            self._events.append(PutFailed(rid, rec.resource_id, reason))
        owned = self._owned.get(rec.identity)
        if owned is not None and owned[0].sequence == rec.sequence:
            # ours and still wanted: try again soon rather than at the next refresh
            self._own(owned[0], self._now + self._jit(2.0))

    def _forget_owned(self, ident: tuple[int, int, str]) -> None:
        self._owned.pop(ident, None)
        self._unconfirmed.discard(ident)
        self._republish.discard(ident)
        self._issued.pop(ident, None)

    def _refresh_owned(self) -> None:
        now, heap, owned = self._now, self._refresh_heap, self._owned
        while heap and heap[0][0] <= now:
            due, ident = heapq.heappop(heap)
            held = owned.get(ident)
            if held is None or held[1] != due:
                continue  # removed, or moved since
            rec = held[0]
            issued = self._issued.get(ident)
            if issued is not None and ident not in self._unconfirmed \
                    and ident not in self._republish and now - issued < rec.lifetime:
                # the first re-store: the same signed copy, placed again (module doc)
                self._own(rec, issued + self._refresh_after(rec))
                self._place(replace(rec, remaining=rec.lifetime - int(now - issued)), None)
                continue
            seq = self.sequences.next(rec.sequence + 1)
            claim = seq if ident in self._unconfirmed else rec.claim
            new = sign_record(replace(rec, sequence=seq, claim=claim), self.id, self.signer)
            self._own(new, now + self._refresh_after(new))
            if ident in self._republish:
                self._republish.discard(ident)
                self.stats["republished"] += 1
            self._place(new, None)
        if self._republish:  # marked after this round was set: do not wait a full second
            self._periodic_by("refresh", min(self._owned[i][1] for i in self._republish))
