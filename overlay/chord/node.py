"""A sans-IO Chord node: Zave's corrected ring maintenance, lookups, records, ring merging.

Shape (as `overlay/sip/transaction.py`): messages and the current time go in
(`receive(msg, now)`, `handle_timer(now)`, and the calls `join`, `lookup`, `put`, `get`,
`remove`, `learn_peer`, `leave`); messages to send (`messages_to_send()`), the next
deadline (`get_timer()`) and events for the owner (`next_event()`) come out. No clock,
no sockets, no asyncio; all randomness comes from the injected `random.Random`, so the
simulator replays a run exactly from its seed.

`ChordNode` is this facade: it composes one part per concern, each a module of this
package that says what it does and after which paper:

- `ring`: geometry (distances, intervals, finger targets, backoff); `lifecycle`: the
  states and their transitions; `config`, `events`: tunables and what the owner hears;
- `plumbing`: requests (one `done(answer | None)` per request), responses, the timer heap;
- `liveness`: suspects, nodes routed around, recently heard, one `_missed` path;
- `successors`: the successor list and the predecessor (Zave's ordered lists);
- `membership`: join with its verify walk, and leave;
- `stabilize`: stabilize, notify, rectify, predecessor checks, the adaptive cadence;
- `fingers`, `lookups` (iterative and recursive), `unify` (ring unification after a
  partition);
- `owned` (our records and their sequences), `replicas` (accept, sync, hand-over,
  re-homing), `claims` (which owner's record a storing node keeps; bounds), `fetch` (gets).

The parts are mixins over one object, so the hot paths (`receive`, `_route`, the timers)
reach every table directly, and a test or a mutant overrides a rule by overriding its
method on a subclass. Each part's state is set up by its `_init_*` method.
"""

from __future__ import annotations

import random

from .claims import Claims
from .config import ChordConfig
from .events import (
    ClaimLost,
    Event,
    GetDone,
    GetFailed,
    Joined,
    JoinFailed,
    Left,
    LookupDone,
    LookupFailed,
    NeighborsChanged,
    PutDone,
    PutFailed,
    RecordRejected,
)
from .fetch import Fetching
from .fingers import Fingers
from .lifecycle import _TRANSITIONS, LEAVING, LEFT, MEMBER, IllegalTransition, Lifecycle
from .liveness import Liveness
from .lookups import Lookups
from .membership import Membership
from .messages import (
    Fetch,
    FindSuccessor,
    GetNeighbors,
    Learn,
    Leave,
    NodeRef,
    Notify,
    Ping,
    Store,
    Transfer,
)
from .owned import OwnedRecords
from .plumbing import Plumbing
from .records import RecordSigner, RecordStore, SequenceCounter
from .replicas import Replicas
from .ring import MASK, backoff, between, between_right, dist, finger_targets
from .stabilize import Stabilizer
from .successors import SuccessorList
from .unify import Unification

__all__ = [
    "LEAVING", "LEFT", "MASK", "MEMBER", "_TRANSITIONS", "ChordConfig", "ChordNode",
    "ClaimLost", "Event", "GetDone", "GetFailed", "IllegalTransition", "JoinFailed", "Joined",
    "Left", "LookupDone", "LookupFailed", "NeighborsChanged", "PutDone", "PutFailed",
    "RecordRejected", "backoff", "between", "between_right", "dist", "finger_targets",
]


class ChordNode(
    Lifecycle, Plumbing, Liveness, SuccessorList, Membership, Stabilizer, Fingers, Lookups,
    Unification, OwnedRecords, Replicas, Claims, Fetching,
):
    """One overlay node. See the module docstring."""

    def __init__(
        self,
        ref: NodeRef,
        signer: RecordSigner,
        rng: random.Random | None = None,
        config: ChordConfig | None = None,
        now: float = 0.0,
        sequences: SequenceCounter | None = None,
    ) -> None:
        self.ref = ref
        self.id = ref.id
        self.signer = signer
        self.rng = rng if rng is not None else random.Random(ref.id)
        self.config = config if config is not None else ChordConfig()
        self.status = MEMBER
        self.store = RecordStore()
        # versions of our records (the box persists it: see records.py "Freshness")
        self.sequences = sequences if sequences is not None else SequenceCounter()
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "requests_sent", "responses_sent", "timeouts", "stray_responses",
                "dropped_overlay", "dead_declared", "lookups_done", "lookups_failed",
                "records_rejected", "records_accepted", "adoptions", "learns_routed",
                "merge_checks", "transfers_sent", "pokes_sent",
                "pokes_received", "republished", "expired_refused",
                "records_in_use", "records_taken_over", "records_bad_contact",
                "records_over_cap", "claims_lost",
            ),
            0,
        )
        self._init_plumbing(now)
        self._init_liveness(now)
        self._init_successors(now)
        self._init_membership(now)
        self._init_stabilizer(now)
        self._init_fingers(now)
        self._init_lookups(now)
        self._init_unify(now)
        self._init_owned(now)
        self._init_replicas(now)
        self._init_claims(now)
        c = self.config
        self._periodic("stabilize", now + self._jit(c.stabilize_interval) * self.rng.random())
        self._periodic("fingers", now + c.fix_fingers_interval * (1 + self.rng.random()))
        self._periodic("sync", now + c.sync_interval * (1 + self.rng.random()))
        self._periodic("merge", now + c.merge_check_interval * (1 + self.rng.random()))
        self._periodic("refresh", now + 1.0)

    @property
    def now(self) -> float:
        return self._now

    def pending_work(self) -> dict[str, int]:
        """Work in flight, by table: all zero once every piece of it has finished."""
        return {
            "requests": len(self._pending),
            "lookups": len(self._lookups),
            "join": int(self._join is not None),
            "stabilize": int(self._stabilizing),
            "predecessor_ping": int(self._pred_ping is not None),
            "adoptions": len(self._adopting),
            "probes": len(self._probing),
            "rehoming": len(self._orphan_checks),
            "leave": self._leave_pending,
        }

    def _periodic_fire(self, kind: str) -> None:
        """A periodic timer fired (not while leaving): reschedule it, then do the work."""
        c = self.config
        if kind == "stabilize":
            if self.successors and self.predecessor is not None:
                interval = backoff(c.stabilize_interval, c.stabilize_max, self._stab_calm)
                self._stab_calm += 1
            else:  # not on a formed ring yet (boxes powered on together): twice as often
                interval = c.stabilize_interval / 2
            self._periodic(kind, self._now + self._jit(interval))
            if self.status == MEMBER:
                self._stabilize()
                self._check_predecessor()
        elif kind == "fingers":
            base = c.fix_fingers_interval
            interval = min(max(c.fix_fingers_max, base), base * 2.0 ** min(self._finger_calm, 30))
            if self._fingers_clean:
                self._finger_calm += 1
            self._periodic(kind, self._now + self._jit(interval))
            if self.status == MEMBER:
                self._fix_fingers()
        elif kind == "poke":
            self._send_pokes()
        elif kind == "sync":
            self._periodic(kind, self._now + self._jit(c.sync_interval))
            if self.status == MEMBER:
                self._sync()
        elif kind == "merge":
            self._periodic(kind, self._now + self._jit(c.merge_check_interval))
            if self.status == MEMBER:
                self._merge_check()
        elif kind == "join":  # a failed join's next attempt
            if self._join is not None and self.status == MEMBER:
                self._join_attempt(self._join)
        elif kind == "refresh":
            self._periodic(kind, self._now + 1.0)
            if self.status == MEMBER:
                self._refresh_owned()


# The request handlers, by message type (plain functions of ChordNode, as before the
# split: a subclass that overrides an `_on_*` method does not change the dispatch).
ChordNode._handlers = {
    Ping: ChordNode._on_ping,
    GetNeighbors: ChordNode._on_get_neighbors,
    Notify: ChordNode._on_notify,
    FindSuccessor: ChordNode._on_find_successor,
    Store: ChordNode._on_store,
    Transfer: ChordNode._on_store,
    Fetch: ChordNode._on_fetch,
    Leave: ChordNode._on_leave,
    Learn: ChordNode._on_learn,
}
