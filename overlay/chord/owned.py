"""The node's own records (see records.py): signing, placing and refreshing them.

`put` signs a record with the next sequence of `sequences` and stores it at the successor
of its key, writing the replicas it was told of in parallel (a primary that crashes before
its first replication push would otherwise take the only copy with it). Owners re-sign
and re-store their records `first_refresh` seconds after a put and then every lifetime *
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
    """`_owned` (identity -> (record, next refresh)) and `_republish`."""

    def _init_owned(self, now: float) -> None:
        self._owned: dict[tuple[int, int, str], tuple[Record, float]] = {}
        self._republish: set[tuple[int, int, str]] = set()  # due again after a death
        self._unconfirmed: set[tuple[int, int, str]] = set()  # claims no node accepted yet

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
            self._owned[rec.identity] = (rec, now + first)
        else:
            self._owned.pop(rec.identity, None)
            self._unconfirmed.discard(rec.identity)
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
        self._owned[rec.identity] = (owned[0], self._now)
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
                self._owned[ident] = (rec, when)
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
                self._accept_records((rec,), self.ref, replica=True)
            else:
                self._request(t, Store, None, attempts=2, records=(rec,), replica=True)
        self._store_at(rec, rid, targets)

    def _store_at(self, rec: Record, rid: int | None, targets: list[NodeRef]) -> None:
        if not targets:
            self._put_failed(rec, rid, "no replica answered")
            return
        t = targets[0]
        if t.id == self.id:
            if self._accept_records((rec,), self.ref)[2]:
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
        self._owned.pop(rec.identity, None)
        self._unconfirmed.discard(rec.identity)
        self._republish.discard(rec.identity)
        if rec.lifetime > 0:
            self._events.append(ClaimLost(rec.resource_id, rec.aor))

    def _put_failed(self, rec: Record, rid: int | None, reason: str) -> None:
        if rid is not None:
            self._events.append(PutFailed(rid, rec.resource_id, reason))
        owned = self._owned.get(rec.identity)
        if owned is not None and owned[0].sequence == rec.sequence:
            # ours and still wanted: try again soon rather than at the next refresh
            self._owned[rec.identity] = (owned[0], self._now + self._jit(2.0))

    def _refresh_owned(self) -> None:
        now = self._now
        for ident, (rec, due) in list(self._owned.items()):
            if due > now:
                continue
            seq = self.sequences.next(rec.sequence + 1)
            claim = seq if ident in self._unconfirmed else rec.claim
            new = sign_record(replace(rec, sequence=seq, claim=claim), self.id, self.signer)
            self._owned[ident] = (new, now + self._refresh_after(new))
            if ident in self._republish:
                self._republish.discard(ident)
                self.stats["republished"] += 1
            self._place(new, None)
        self._republish &= self._owned.keys()
        self._unconfirmed &= self._owned.keys()
        if self._republish:  # marked after this round was set: do not wait a full second
            self._periodic_by("refresh", min(self._owned[i][1] for i in self._republish))
