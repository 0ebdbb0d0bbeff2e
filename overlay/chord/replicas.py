"""Replicas: the copies this node holds for others, their replication and re-homing.

Records live at the successor of their key, replicated on the next r-1 successors. Every
copy is verified when it is stored and when it is served. The primary pushes new copies
at once and all copies every `replica_refresh` seconds (backing off to
`replica_refresh_max` while its successor list stays the same); a node hands records
over when a closer predecessor appears (join, merge) or when it leaves. A copy is
re-homed (looked up, handed to its primary) when no primary pushed it to us (it came as a
first copy or a hand-over to a node that is not its primary), when our predecessor
changed (a crash may have left it without a primary that has it), or when no primary
refreshed it for `orphan_after` seconds; a copy handed on is dropped only two refresh
periods later. An owner that sends an older version than one we hold is sent ours (it
lost its counter).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING

from .events import RecordRejected
from .lifecycle import MEMBER
from .messages import Fetch, Message, NodeRef, Record, Records, Store, Stored, Transfer
from .records import StoredRecord, verify_record
from .ring import backoff, between, between_right

if TYPE_CHECKING:
    from .lookups import _Lookup

_ORPHAN_CHECKS_MAX = 8  # re-homing lookups in flight


class Replicas:
    """What was pushed to which successor (`_sent`), the full-push cadence, re-homing in
    flight (`_orphan_checks`), and the Store/Transfer/Fetch handlers."""

    def _init_replicas(self, now: float) -> None:
        self._sent: dict[int, dict[tuple[int, int, str], int]] = {}  # successor -> seqs
        self._next_full_push = now + self.config.replica_refresh
        self._push_calm = 0  # full pushes since the successor list last changed
        self._orphan_checks: set[int] = set()  # keys being re-homed
        self._recheck_before = -math.inf  # copies touched before this are re-checked

    def _reject(self, rec: Record, src: NodeRef, reason: str) -> None:
        self.stats["records_rejected"] += 1
        self._events.append(RecordRejected(rec, src, reason))

    def _accept_records(
        self, records: Iterable[Record], src: NodeRef, replica: bool = False
    ) -> tuple[int, int, int]:
        """Verify and store copies: (accepted, rejected, of which in use by another owner,
        claims.py). `replica`: pushed by a primary (so our holding it is confirmed); a
        first copy we are not primary for gets re-homed at the next sync."""
        accepted = rejected = in_use = 0
        changed = False
        now = self._now
        newer: list[Record] = []  # what we hold that beats the copies their owner sent
        from_owner = src.id != self.id
        records = tuple(records)
        cap = self.config.max_records_per_message
        if len(records) > cap:  # the rest is refused and counted
            rejected = len(records) - cap
            self.stats["records_over_cap"] += rejected
            records = records[:cap]
        for rec in records:
            spent = self.store.spent(rec.identity, rec.sequence, now)
            if spent is not None:
                # its life is counted out here: a re-store cannot give it a new one
                self.stats["expired_refused"] += 1
                rejected += 1
                if from_owner and rec.owner == src.id:
                    newer.append(replace(spent, remaining=1))
                continue
            st = self.store.stored(rec.identity)
            if st is not None:
                if rec.sequence < st.record.sequence:
                    if from_owner and rec.owner == src.id:
                        newer.append(self.store.copy_for_sending(st, now))
                    continue
                if rec.sequence == st.record.sequence and rec.signature == st.record.signature:
                    self.store.put(rec, now)  # same signed copy: touched, not extended
                    # a copy pushed by a primary confirms ours; a first copy or a
                    # hand-over means someone thinks it belongs here: check at next sync
                    st.confirmed = replica
                    if replica:
                        st.drop_at = math.inf  # a primary counts on this copy
                    accepted += 1
                    continue
            refusal = self._refusal(rec, src, replica)
            if refusal is not None:
                rejected += 1
                in_use += refusal == "in use"
                continue
            accepted += 1
            if self.store.put(rec, now):
                changed = True
                new = self.store.stored(rec.identity)
                if new is not None:
                    new.confirmed = replica
            if rec.owner == self.id and src.id != self.id:
                self._saw_own(rec)
        self.stats["records_accepted"] += accepted
        if changed:
            self._schedule_sync()
        if newer:  # an owner that lost its counter learns where to go on from
            self._request(src, Transfer, None, records=tuple(newer))
        return accepted, rejected, in_use

    def _refusal(self, rec: Record, src: NodeRef, replica: bool) -> str | None:
        """Why a new version may not be stored (None: it may): its signature, then
        ownership and the bounds (claims.py)."""
        if not verify_record(rec, self.signer):
            self._reject(rec, src, "bad signature")
            return "bad signature"
        if rec.owner != self.id and rec.lifetime > 0 and src.id != self.id:
            self._recheck_claims(rec.resource_id)  # another box's: do we still own it?
        refusal = self._admit(rec, src, replica)
        if refusal is not None:
            self._events.append(RecordRejected(rec, src, refusal))
        return refusal

    def _on_store(self, m: Store | Transfer) -> None:
        replica = isinstance(m, Store) and m.replica
        accepted, rejected, in_use = self._accept_records(m.records, m.src, replica)
        self._reply(m, Stored, accepted=accepted, rejected=rejected, in_use=in_use)

    def _on_fetch(self, m: Fetch) -> None:
        good = []
        for rec in self.store.get(m.resource_id, self._now):
            if verify_record(rec, self.signer):
                good.append(rec)
            else:
                self._reject(rec, self.ref, "bad signature in store")
        self._reply(m, Records, resource_id=m.resource_id, records=tuple(good))

    def _schedule_sync(self) -> None:
        if self.status != MEMBER:
            return
        self._periodic_by("sync", self._now + self.config.sync_delay)

    def _chunks(self, records: list[Record]) -> list[tuple[Record, ...]]:
        n = self.config.records_per_message
        return [tuple(records[i : i + n]) for i in range(0, len(records), n)]

    def _is_primary(self, key: int) -> bool:
        p = self.predecessor
        if not self.successors:
            return True
        return p is not None and between_right(key, p.id, self.id)

    def _sync(self) -> None:
        now = self._now
        self.store.expire(now)
        self._expire_lost()
        full = now >= self._next_full_push
        if full:
            c = self.config
            interval = backoff(c.replica_refresh, c.replica_refresh_max, self._push_calm)
            self._push_calm += 1
            self._next_full_push = now + self._jit(interval)
            self._sent.clear()
        targets = self.successors[: self.config.r - 1]
        target_ids = {t.id for t in targets}
        for tid in [t for t in self._sent if t not in target_ids]:
            del self._sent[tid]
        primary: list[StoredRecord] = []
        others: list[StoredRecord] = []
        # without a predecessor we cannot tell which copies are ours as primary: push
        # them all (an extra replica costs little; a missing one can lose a record)
        can_tell = self.predecessor is not None or not self.successors
        for st in self.store.all():
            if st.drop_at <= now and not self._is_primary(st.record.resource_id):
                self.store.remove(st.record.identity)
                continue
            if not can_tell or self._is_primary(st.record.resource_id):
                primary.append(st)
            else:
                others.append(st)
                if not st.confirmed:
                    primary.append(st)  # until re-homed, our successors keep copies too
        for t in targets:
            sent = self._sent.setdefault(t.id, {})
            batch = [
                self.store.copy_for_sending(st, now)
                for st in primary
                if sent.get(st.record.identity) != st.record.sequence
            ]
            for chunk in self._chunks(batch):
                self._push(t, chunk, sent)
        if can_tell:
            self._check_orphans(others)

    def _push(self, t: NodeRef, chunk: tuple[Record, ...], sent: dict) -> None:
        self._request(t, Store, partial(self._pushed, chunk, sent), attempts=2, records=chunk,
                      replica=True)

    def _pushed(self, chunk: tuple[Record, ...], sent: dict, m: Message | None) -> None:
        if isinstance(m, Stored):  # else sent again at the next pass
            for rec in chunk:
                sent[rec.identity] = rec.sequence

    def _check_orphans(self, others: list[StoredRecord]) -> None:
        """Copies we hold but are not primary for: re-home those no primary has pushed to
        us (first copies sent here by a stale view) and those no primary has refreshed
        for `orphan_after` seconds (the primary lost them, or we are no replica)."""
        now = self._now
        by_key: dict[int, list[StoredRecord]] = {}
        recheck = self._recheck_before
        for st in others:
            if (
                not st.confirmed
                or now - st.touched >= self.config.orphan_after
                or st.touched < recheck
            ):
                by_key.setdefault(st.record.resource_id, []).append(st)
        for key, sts in by_key.items():
            if key in self._orphan_checks or len(self._orphan_checks) >= _ORPHAN_CHECKS_MAX:
                continue
            self._orphan_checks.add(key)
            self._rehome(key, sts)

    def _rehome(self, key: int, sts: list[StoredRecord]) -> None:
        self._start_lookup(key, partial(self._rehome_found, key, sts))

    def _rehome_found(self, key: int, sts: list[StoredRecord],
                      succs: tuple[NodeRef, ...] | None, lk: _Lookup) -> None:
        self._orphan_checks.discard(key)
        if not succs or self.status != MEMBER:
            return
        now = self._now
        primary = succs[0]
        keep = any(s.id == self.id for s in succs[: self.config.r])
        recs = [self.store.copy_for_sending(st, now) for st in sts]
        if primary.id == self.id and not self._is_primary(key):
            return  # the answer disagrees with our own predecessor: ask again later
        for st in sts:
            st.touched = now
            st.confirmed = True
        if primary.id == self.id:
            return
        self.stats["transfers_sent"] += 1
        done = None if keep else partial(self._handed_on, recs)
        for chunk in self._chunks(recs):
            self._request(primary, Transfer, done, records=chunk)

    def _handed_on(self, recs: list[Record], m: Message | None) -> None:
        """The primary took copies that are not ours to keep: drop them, but only once
        it has had time to replicate them (it might crash first)."""
        if isinstance(m, Stored):
            drop = self._now + 2 * self.config.replica_refresh
            for rec in recs:
                cur = self.store.stored(rec.identity)
                if cur is not None and cur.record.sequence == rec.sequence:
                    cur.drop_at = min(cur.drop_at, drop)

    def _hand_over_to_predecessor(self, old: NodeRef | None, new: NodeRef) -> None:
        """A closer predecessor appeared: it is now primary for (old, new]."""
        if self.status != MEMBER:
            return
        if old is not None and not between(new.id, old.id, self.id):
            return  # our range grew (the old predecessor died or left)
        now = self._now
        moving = []
        for st in self.store.all():
            k = st.record.resource_id
            if old is not None:
                if between_right(k, old.id, new.id):
                    moving.append(self.store.copy_for_sending(st, now))
            elif not between_right(k, new.id, self.id):
                moving.append(self.store.copy_for_sending(st, now))
        if moving:
            self.stats["transfers_sent"] += 1
        for chunk in self._chunks(moving):
            self._request(new, Transfer, None, records=chunk)
