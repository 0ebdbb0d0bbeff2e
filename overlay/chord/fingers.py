"""Fingers: an optimisation on top of the successor list. Base-`finger_base` fingers
(targets id + j*b^i, j = 1..b-1), re-checked one per `fix_fingers_interval` (backing off
to `fix_fingers_max` once a full cycle changed nothing) by asking the finger itself (one
hop; a full lookup when it is not the target's successor any more), and also learnt
passively from every node that talks to us."""

from __future__ import annotations

from bisect import bisect_right
from functools import partial
from typing import TYPE_CHECKING

from .lifecycle import MEMBER
from .messages import FindSuccessor, Found, Message, NodeRef
from .ring import MASK, dist, finger_targets

if TYPE_CHECKING:
    from .lookups import _Lookup


class Fingers:
    """`fingers` (one per target distance), the re-check cursor and cadence."""

    def _init_fingers(self, now: float) -> None:
        self._targets = finger_targets(self.config.finger_base)
        self.fingers: list[NodeRef | None] = [None] * len(self._targets)
        self._finger_list: list[NodeRef] | None = []  # distinct fingers (cache)
        self._finger_cursor = 0
        self._finger_calm = 0  # fix-finger rounds since a cycle over all fingers was quiet
        self._fingers_changed = False  # in the current cycle
        self._fingers_clean = False  # the last full cycle changed nothing

    def _unique_fingers(self) -> list[NodeRef]:
        if self._finger_list is None:
            out: list[NodeRef] = []
            last = -1
            for f in self.fingers:
                if f is not None and f.id != last:
                    out.append(f)
                    last = f.id
            self._finger_list = out
        return self._finger_list

    def _learn_finger(self, x: NodeRef) -> None:
        d = dist(self.id, x.id)
        if d == 0 or self._is_suspect(x.id):
            return
        k = bisect_right(self._targets, d) - 1
        fingers = self.fingers
        me = self.id
        changed = False
        while k >= 0:
            f = fingers[k]
            if f is None or ((f.id - me) & MASK) > d:
                fingers[k] = x
                changed = True
            elif f.id != x.id:
                break
            k -= 1
        if changed:
            self._finger_list = None

    def _drop_finger(self, node_id: int) -> None:
        fingers = self.fingers
        changed = False
        for k, f in enumerate(fingers):
            if f is not None and f.id == node_id:
                fingers[k] = None
                changed = True
        if changed:
            self._finger_list = None
            self._unsettle_fingers()

    def _unsettle_fingers(self) -> None:
        self._finger_calm = 0
        self._fingers_changed = True
        self._fingers_clean = False
        if self.status == MEMBER:
            self._periodic_by("fingers", self._now + self._jit(self.config.fix_fingers_interval))

    def _fix_fingers(self) -> None:
        if not self.successors:
            return
        span = dist(self.id, self.successors[-1].id)
        targets = self._targets
        first_far = bisect_right(targets, span)
        if first_far >= len(targets) or self.ring_complete:
            self._fingers_clean = True  # nothing to fix: the successor list covers the ring
            return
        k = self._finger_cursor
        if k >= len(targets):  # a cycle over all fingers ended: back off if nothing changed
            self._fingers_clean = not self._fingers_changed
            self._fingers_changed = False
        if k < first_far or k >= len(targets):
            k = first_far
        key = (self.id + targets[k]) & MASK
        current = self.fingers[k]

        if current is None or self._is_suspect(current.id) or self._avoided(current.id):
            self._start_lookup(key, partial(self._finger_found, k))
            return
        # Re-check a finger by asking it: while it is the target's successor it answers
        # Found itself (one hop instead of a lookup). Anything else (a node joined before
        # it, it lost its predecessor, or it died) and we look the target up as usual: a
        # node past the key knows little behind itself, so its redirects would be poor.
        self._request(current, FindSuccessor, partial(self._finger_checked, k, key, current),
                      attempts=1, timeout=self.config.lookup_timeout, key=key)

    def _finger_checked(self, k: int, key: int, current: NodeRef, m: Message | None) -> None:
        if m is None:
            self._missed(current)
        elif isinstance(m, Found) and m.successors and m.successors[0].id == current.id:
            self.stats["lookups_done"] += 1
            self._finger_found(k, m.successors, None)
            return
        self._start_lookup(key, partial(self._finger_found, k))

    def _finger_found(self, k: int, succs: tuple[NodeRef, ...] | None,
                      lk: _Lookup | None) -> None:
        """The successor of finger k's target is known: it is finger k and every further
        finger whose target it also succeeds."""
        targets = self._targets
        if not succs:
            self._finger_cursor = k + 1
            return
        f = succs[0]
        fd = dist(self.id, f.id)
        j = k
        changed = False
        if fd == 0:  # no node between the target and us
            while j < len(targets):
                changed = changed or self.fingers[j] is not None
                self.fingers[j] = None
                j += 1
        else:
            while j < len(targets) and targets[j] <= fd:
                old = self.fingers[j]
                changed = changed or old is None or old.id != f.id
                self.fingers[j] = f
                j += 1
        self._finger_list = None
        self._finger_cursor = j
        if changed:
            self._unsettle_fingers()
