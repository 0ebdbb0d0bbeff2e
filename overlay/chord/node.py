"""A sans-IO Chord node: Zave's corrected ring maintenance, lookups, records, ring merging.

Shape (as `overlay/sip/transaction.py`): messages and the current time go in
(`receive(msg, now)`, `handle_timer(now)`, and the calls `join`, `lookup`, `put`, `get`,
`remove`, `learn_peer`, `leave`); messages to send (`messages_to_send()`), the next
deadline (`get_timer()`) and events for the owner (`next_event()`) come out. No clock,
no sockets, no asyncio; all randomness comes from the injected `random.Random`, so the
simulator replays a run exactly from its seed.

Ring maintenance follows Zave, "Reasoning about identifier spaces: how to make Chord
correct" (IEEE TSE 2017):
- each node keeps a predecessor and a successor list; the list holds at least `r`
  entries and grows with the estimated ring size (every node while the ring is at most
  `full_mesh` nodes, so small rings route in one hop; about log2 N beyond);
- join only learns a successor list (a lookup of the node's own id); the newcomer
  becomes reachable through later stabilize and notify;
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
- a joiner, before committing, asks the found successor for its predecessor and moves
  back while that lies between (Zave's join reads a member atomically; over messages
  two joins at one place can race). A node is a ring of one from its first instant and
  stays one while it joins, answering every request as that ring: boxes powered on
  together all join through each other at once, and a node that refused while joining
  would leave them all waiting. A join that fails (error answer, refusal or silence) is
  retried with backoff (`join_attempts`), then the node stays a ring of one and its merge
  checks keep trying; one that finds the ring already came to us (a peer adopted us)
  hands its bootstrap to the merge checks.
- cadence: stabilize runs every `stabilize_interval` while the neighbourhood changes
  and backs off (doubling) to `stabilize_max` while it is stable; any change, a dead
  neighbour, a Notify from a new node, a Leave or learn_peer brings it back. A node whose
  successor list changed (or that gained a closer predecessor) pings its predecessor
  (the old one), and a node pinged by its first successor stabilizes at once, so a change
  travels back along the ring at message speed however far its predecessors backed off
  (see "adaptive cadence" below). A dead successor is found by the next round plus
  retries: at most `stabilize_max` (+ jitter) + `attempts` * `rto` on a quiet ring.
Fingers are an optimisation on top: base-`finger_base` fingers (targets id + j*b^i),
re-checked one per `fix_fingers_interval` (backing off to `fix_fingers_max` once a full
cycle changed nothing) by asking the finger itself (one hop; a full lookup when it is not
the target's successor any more), and also learnt passively from every node that talks
to us.

Lookups are iterative (the origin asks the best candidate, which answers Found or
Redirect to closer nodes) or recursive (each hop answers a provisional Ack, forwards, and
relays the final Found back). Either way a candidate that does not answer within
`lookup_timeout` is skipped and the next best one tried, so a dead node costs one
timeout, not the lookup (and after all others, it gets a second try: messages get
lost). A node answers Found for its own range (predecessor, self] and, as in Chord, for
(self, first successor]; a key further down its successor list is answered with a
Redirect whose first entries are the presumed successor (a *hint*): that node confirms
from its own predecessor, which keeps answers right during churn and costs no extra hop
(it is the last hop anyway). With every node in every list (rings up to `full_mesh`)
that makes lookups one hop; beyond, fingers make them about log4 N. When nobody can
answer (the owner has just joined, the node before it has a dead successor) the closest
node at or after the key that answered is returned.

Records (see records.py) live at the successor of their key, replicated on the next r-1
successors: the owner writes the primary and the replicas it was told of; the primary
pushes new copies at once and all copies every `replica_refresh` seconds (backing off to
`replica_refresh_max` while its successor list stays the same); a node hands
records over when a closer predecessor appears (join, merge) or when it leaves. A copy
is re-homed (looked up, handed to its primary) when no primary pushed it to us (it came
as a first copy or a hand-over to a node that is not its primary), when our predecessor
changed (a crash may have left it without a primary that has it), or when no primary
refreshed it for `orphan_after` seconds; a copy handed on is dropped only two refresh
periods later. Owners re-sign and re-store their records `first_refresh` seconds after
a put and then every lifetime * `refresh_fraction`; a failed put is retried in
seconds. Every copy is verified on store, on serve and on fetch.

Partition healing (ring unification, after Shafaat et al., "Dealing with network
partitions in structured overlay networks"): a node that learns of a peer (discovery
calls `learn_peer`, or a neighbour it lost to a timeout comes back) pings it, looks up
its id on its own ring and, when the answer is not that peer, the peer is on another
ring: the node sends itself a `Learn(peer)`. A Learn is routed to the node the candidate
falls just after; that node checks the candidate is alive, adopts it into its successor
list and sends the candidate its former successor (and, when it lies between, tells the
candidate's predecessor about itself). Each such adoption zips a stretch of the two
rings together; stabilize does the rest. Lost peers are re-checked with backoff, so
merging does not depend on one message getting through.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from bisect import bisect_right
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from .messages import (
    ID_SPACE,
    Ack,
    Error,
    Fetch,
    FindSuccessor,
    Found,
    GetNeighbors,
    Learn,
    Leave,
    Message,
    Neighbors,
    NodeRef,
    Notify,
    Ping,
    Pong,
    Record,
    Records,
    Redirect,
    Store,
    Stored,
    Transfer,
)
from .records import (
    RecordSigner,
    RecordStore,
    SequenceCounter,
    StoredRecord,
    sign_record,
    verify_record,
)

MASK = ID_SPACE - 1
_SIZE_SAMPLE = 6  # successors whose span estimates the ring size for the list's length
# Error code of a node that could not verify our request because it lacks our certificate
# (overlay.chord.wire.CERT_NEEDED): the codec then adds it, and we send the request again.
CERTIFICATE_NEEDED = 428

# The lifecycle, one table (as h11's _state.py): a node is a member of a ring from its
# first instant (a ring of one until it joins or is found); joining is pending work
# (`_Join`), not a state, so a node that is joining still answers its peers as the ring
# it is. Boxes powered on together each ask the others while those are joining too.
MEMBER = "member"  # on a ring (possibly a ring of one)
LEAVING = "leaving"  # handing over records and telling its neighbours
LEFT = "left"
_TRANSITIONS: dict[str, frozenset[str]] = {
    MEMBER: frozenset({LEAVING}),
    LEAVING: frozenset({LEFT}),
    LEFT: frozenset(),
}


class IllegalTransition(RuntimeError):
    pass  # gone: ignores everything


def dist(a: int, b: int) -> int:
    """Clockwise distance from a to b on the ring."""
    return (b - a) & MASK


def between(x: int, a: int, b: int) -> bool:
    """x in the open interval (a, b) going clockwise; (a, a) is the ring without a."""
    if a == b:
        return x != a
    return 0 < ((x - a) & MASK) < ((b - a) & MASK)


def between_right(x: int, a: int, b: int) -> bool:
    """x in (a, b]; (a, a] is the whole ring."""
    if a == b:
        return True
    return 0 < ((x - a) & MASK) <= ((b - a) & MASK)


@dataclass(slots=True)
class ChordConfig:
    r: int = 3  # replication factor and minimum successor-list length
    full_mesh: int = 32  # rings up to this size: every node lists every other
    max_successors: int = 16  # successor-list cap beyond full_mesh (log2 N grows slowly)
    finger_base: int = 4  # fingers at id + j*b^i, j = 1..b-1
    stabilize_interval: float = 1.0  # while the neighbourhood changes
    stabilize_max: float = 8.0  # stable: the interval doubles up to this
    fix_fingers_interval: float = 2.0  # while lookups find new fingers
    fix_fingers_max: float = 32.0  # fingers found unchanged: the interval doubles up to this
    rto: float = 0.5  # maintenance request timeout (per try) ...
    rto_min: float = 0.15  # ... and the floor of the one measured round trips give
    attempts: int = 3  # tries before a neighbour is declared dead
    lookup_timeout: float = 0.5  # per lookup hop (one try, then the next candidate)
    recursive_timeout: float = 4.0  # after a recursive hop's provisional Ack
    lookup_deadline: float = 15.0
    max_hops: int = 32
    sync_interval: float = 5.0  # replication pass (only new copies are sent)
    sync_delay: float = 0.2  # replication after a change, batched
    replica_refresh: float = 20.0  # every copy pushed again to every replica ...
    replica_refresh_max: float = 80.0  # ... backing off to this while successors are stable
    orphan_after: float = 200.0  # copy not refreshed by a primary: re-home it
    refresh_fraction: float = 0.5  # owners re-store records after this part of lifetime
    first_refresh: float = 20.0  # ... and once this soon after a put
    join_attempts: int = 5  # then a lone node (ring of one) that keeps looking
    merge_check_interval: float = 2.0
    merge_backoff_max: float = 60.0
    suspect_ttl: float = 30.0  # a dead or departed node is not re-adopted from lists
    avoid_ttl: float = 5.0  # a node that missed a lookup hop is routed around
    peers_max: int = 64
    records_per_message: int = 16
    jitter: float = 0.1
    overlay: str = ""


# ------------------------------------------------------------------------------ events


@dataclass(slots=True)
class Joined:
    successor: NodeRef


@dataclass(slots=True)
class JoinFailed:
    bootstrap: NodeRef
    reason: str


@dataclass(slots=True)
class LookupDone:
    request_id: int
    key: int
    successors: tuple[NodeRef, ...]
    hops: int
    timeouts: int


@dataclass(slots=True)
class LookupFailed:
    request_id: int
    key: int
    reason: str
    hops: int
    timeouts: int


@dataclass(slots=True)
class PutDone:
    request_id: int
    resource_id: int
    primary: NodeRef


@dataclass(slots=True)
class PutFailed:
    request_id: int
    resource_id: int
    reason: str


@dataclass(slots=True)
class GetDone:
    request_id: int
    resource_id: int
    records: tuple[Record, ...]
    hops: int


@dataclass(slots=True)
class GetFailed:
    request_id: int
    resource_id: int
    reason: str


@dataclass(slots=True)
class RecordRejected:
    record: Record
    source: NodeRef
    reason: str


@dataclass(slots=True)
class NeighborsChanged:
    predecessor: NodeRef | None
    successors: tuple[NodeRef, ...]


@dataclass(slots=True)
class Left:
    pass


Event = (
    Joined | JoinFailed | LookupDone | LookupFailed | PutDone | PutFailed | GetDone
    | GetFailed | RecordRejected | NeighborsChanged | Left
)


# ------------------------------------------------------------------------------ internals


class _Req:
    __slots__ = (
        "txn", "dest", "msg", "tries", "timeout", "deadline", "on_reply", "on_fail",
        "provisional", "resent", "sent_at", "retransmitted",
    )

    def __init__(
        self,
        dest: NodeRef,
        msg: Message,
        tries: int,
        timeout: float,
        on_reply: Callable[[Message], None] | None,
        on_fail: Callable[[], None] | None,
        provisional: bool,
    ) -> None:
        self.txn = msg.txn
        self.dest = dest
        self.msg = msg
        self.tries = tries
        self.timeout = timeout
        self.deadline = 0.0
        self.on_reply = on_reply
        self.on_fail = on_fail
        self.provisional = provisional
        self.resent = False  # sent again after an Error 428 (certificate needed)
        self.sent_at = 0.0
        self.retransmitted = False


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


_JOIN_WALK = 8  # predecessors a joiner may step back over before committing


class _Join:
    """A join in progress: the lookup of our own id through `bootstrap`, then the walk
    back over nodes between us and the found successor. Every step (an answer, an error
    answer, no answer) ends in `_join_verified`, `_join_candidate_lost` or
    `_join_failed`, so a join always finishes: joined, retried after a backoff, or given
    up (the node stays a ring of one and its merge checks keep trying)."""

    __slots__ = ("bootstrap", "attempts", "reason")

    def __init__(self, bootstrap: NodeRef) -> None:
        self.bootstrap = bootstrap
        self.attempts = 0  # attempts that failed
        self.reason = ""


class _RoundTrip:
    """Smoothed round-trip time of our requests (RFC 6298), for their timeouts: the
    configured timeouts are upper bounds, so a lost message on a fast link costs a few
    round trips, not half a second (boxes powered on together exchange chains of
    requests, each waiting on the last)."""

    __slots__ = ("srtt", "rttvar")

    def __init__(self) -> None:
        self.srtt: float | None = None
        self.rttvar = 0.0

    def sample(self, rtt: float) -> None:
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt

    def timeout(self, cap: float, floor: float) -> float:
        if self.srtt is None:
            return cap
        return min(cap, max(floor, self.srtt + 4 * self.rttvar))


class _Peer:
    __slots__ = ("ref", "due", "backoff")

    def __init__(self, ref: NodeRef, due: float, backoff: float) -> None:
        self.ref = ref
        self.due = due
        self.backoff = backoff


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


def _backoff(base: float, cap: float, calm: int) -> float:
    """`base` for the first two rounds after a change, then doubling up to `cap`."""
    return min(max(cap, base), base * 2.0 ** min(max(0, calm - 1), 30))


_TARGET_CACHE: dict[int, list[int]] = {}


def finger_targets(base: int) -> list[int]:
    """Sorted clockwise distances j*b^i (j = 1..b-1) below 2^128."""
    if base not in _TARGET_CACHE:
        out = []
        step = 1
        while step < ID_SPACE:
            for j in range(1, base):
                if j * step < ID_SPACE:
                    out.append(j * step)
            step *= base
        _TARGET_CACHE[base] = sorted(set(out))
    return _TARGET_CACHE[base]


class ChordNode:
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
        self.successors: list[NodeRef] = []
        self.predecessor: NodeRef | None = None
        self.detached = False  # lost every successor while part of a larger ring
        self.join_gave_up = False  # the last join failed every attempt (see join_failed)
        self._join: _Join | None = None
        self.version = 0  # bumped whenever successors or predecessor change
        self.store = RecordStore()
        # versions of our records (the box persists it: see records.py "Freshness")
        self.sequences = sequences if sequences is not None else SequenceCounter()
        self.ring_complete = False  # the successor list holds every other node
        self._large = False  # ring bigger than full_mesh: log-sized successor list
        self._succ_len: int | None = None  # that log-sized length (see _succ_target)
        self._now = now
        self._targets = finger_targets(self.config.finger_base)
        self.fingers: list[NodeRef | None] = [None] * len(self._targets)
        self._finger_list: list[NodeRef] | None = []
        self._finger_cursor = 0
        self._events: deque[Event] = deque()
        self._out: list[tuple[NodeRef, Message]] = []
        self._pending: dict[int, _Req] = {}
        self._rtt = _RoundTrip()
        self._lookups: dict[int, _Lookup] = {}
        self._timers: list[tuple[float, int, str, int]] = []
        self._due: dict[str, float] = {}
        self._seq = itertools.count()
        self._txn = itertools.count(self.rng.getrandbits(30) + 1)
        self._ids = itertools.count(1)
        self._suspects: dict[int, float] = {}
        self._avoid: dict[int, float] = {}
        self._peers: OrderedDict[int, _Peer] = OrderedDict()
        self._recent: OrderedDict[int, NodeRef] = OrderedDict()
        self._owned: dict[tuple[int, int, str], tuple[Record, float]] = {}
        self._republish: set[tuple[int, int, str]] = set()  # due again after a death
        self._sent: dict[int, dict[tuple[int, int, str], int]] = {}
        self._next_full_push = now + self.config.replica_refresh
        self._push_calm = 0  # full pushes since the successor list last changed
        self._orphan_checks: set[int] = set()
        self._adopting: set[int] = set()
        self._probing: set[int] = set()  # suspects being asked whether they live
        self._stabilizing = False
        self._pred_ping: NodeRef | None = None
        self._pred_candidates: dict[int, NodeRef] = {}
        self._leave_pending = 0
        self._recheck_before = -math.inf
        self._pred_heard = now
        # adaptive cadence: rounds since the neighbourhood (fingers) last changed
        self._stab_calm = 0
        self._finger_calm = 0  # fix-finger rounds since a cycle over all fingers was quiet
        self._fingers_changed = False  # in the current cycle
        self._fingers_clean = False  # the last full cycle changed nothing
        self._poke: dict[int, NodeRef] = {}  # predecessors to tell that we changed
        self._poked_at = -math.inf
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "requests_sent", "responses_sent", "timeouts", "stray_responses",
                "dropped_overlay", "dead_declared", "lookups_done", "lookups_failed",
                "records_rejected", "records_accepted", "adoptions", "learns_routed",
                "merge_checks", "transfers_sent", "certificate_resends", "pokes_sent",
                "pokes_received", "republished", "expired_refused",
            ),
            0,
        )
        c = self.config
        self._periodic("stabilize", now + self._jit(c.stabilize_interval) * self.rng.random())
        self._periodic("fingers", now + c.fix_fingers_interval * (1 + self.rng.random()))
        self._periodic("sync", now + c.sync_interval * (1 + self.rng.random()))
        self._periodic("merge", now + c.merge_check_interval * (1 + self.rng.random()))
        self._periodic("refresh", now + 1.0)

    # ------------------------------------------------------------------ outputs

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def messages_to_send(self) -> list[tuple[NodeRef, Message]]:
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        heap = self._timers
        while heap:
            entry = heap[0]
            if self._valid(entry):
                return entry[0]
            heapq.heappop(heap)
        return None

    def handle_timer(self, now: float) -> None:
        self._touch(now)
        heap = self._timers
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if not self._valid(entry):
                continue
            _, _, kind, key = entry
            if self.status == LEFT:
                return
            if kind == "req":
                self._req_timeout(self._pending[key])
            elif kind == "lookup":
                lk = self._lookups[key]
                lk.reason = lk.reason or "deadline"
                self._finish_lookup(lk, None)
            elif self.status == LEAVING:
                self._due.pop(kind, None)
            else:
                self._due.pop(kind, None)
                self._periodic_fire(kind)

    # ------------------------------------------------------------------ API

    @property
    def now(self) -> float:
        return self._now

    @property
    def joining(self) -> bool:
        return self._join is not None

    @property
    def join_failed(self) -> bool:
        """Alone because a join failed (until a peer's merge check or ours finds a ring)."""
        return self.join_gave_up and not self.successors

    def _enter(self, state: str) -> None:
        if state not in _TRANSITIONS[self.status]:
            raise IllegalTransition(f"{self.status} -> {state}")
        self.status = state

    def join(self, bootstrap: NodeRef, now: float) -> None:
        """Learn a successor list by looking up our own id through `bootstrap`.

        The node stays a member (a ring of one) meanwhile and answers its peers; a join
        that fails is retried with backoff, then the node stays alone and its merge
        checks keep trying `bootstrap` (see `_Join`)."""
        self._touch(now)
        if bootstrap.id == self.id or self.status != MEMBER:
            return
        if self.successors or self._join is not None:
            self.learn_peer(bootstrap, now)  # on a ring, or joining already: merge later
            return
        self._join = _Join(bootstrap)
        self.join_gave_up = False
        self._join_attempt(self._join)

    def _join_attempt(self, j: _Join) -> None:
        pool = [j.bootstrap, *(x for x in self._recent.values() if x.id != j.bootstrap.id)]
        self._start_lookup(
            self.id, lambda succs, lk: self._join_looked_up(j, succs, lk),
            pool=pool, use_local=False,
        )

    def _join_looked_up(self, j: _Join, succs: tuple[NodeRef, ...] | None,
                        lk: _Lookup) -> None:
        if j is not self._join:
            return
        found = [s for s in succs or () if s.id != self.id]
        if succs and succs[0].id == self.id:
            # the ring holds us already (a peer adopted us): our successor is the node
            # after us there, or in a ring of two the bootstrap; the walk checks it
            found.append(j.bootstrap)
        if not found:
            self._join_failed(j, lk.reason or "no successor found")
            return
        self._join_verify(j, found[0], found[1:], _JOIN_WALK)

    def _join_verify(self, j: _Join, s: NodeRef, rest: list[NodeRef], rounds: int) -> None:
        """Before committing, ask the candidate successor for its predecessor: a node
        between us and it (joined meanwhile, or missing from a stale list on the lookup
        path) is the better successor. Keeps joiners hanging off the ring in the right
        place (Zave's join reads a member's state atomically; over messages two joins at
        one place can race)."""
        self._request(
            s, GetNeighbors,
            lambda m: self._join_verified(j, s, rest, rounds, m),
            lambda: self._join_candidate_lost(j, rest, rounds, f"{s} did not answer"),
        )

    def _join_verified(self, j: _Join, s: NodeRef, rest: list[NodeRef], rounds: int,
                       m: Message) -> None:
        if j is not self._join:
            return
        if not isinstance(m, Neighbors):
            why = f"{m.code} {m.reason}" if isinstance(m, Error) else type(m).__name__
            self._join_candidate_lost(j, rest, rounds, f"{s} refused: {why}")
            return
        p = m.predecessor
        if (rounds > 0 and p is not None and p.id != self.id
                and between(p.id, self.id, s.id) and not self._is_suspect(p.id)):
            self._join_verify(j, p, [s, *rest], rounds - 1)
            return
        self._join = None
        self._set_successors([s, *self._tail_after(s, m.successors)])
        self._events.append(Joined(s))
        self._periodic("stabilize", self._now)
        self._periodic("fingers", self._now + self.config.fix_fingers_interval)
        self._periodic("merge", self._now)  # peers heard of while joining

    def _join_candidate_lost(self, j: _Join, rest: list[NodeRef], rounds: int,
                             reason: str) -> None:
        if j is not self._join:
            return
        if rest:  # the candidate died or refused: its successor takes over its range
            self._join_verify(j, rest[0], rest[1:], rounds)
        else:
            self._join_failed(j, reason)

    def _join_failed(self, j: _Join, reason: str) -> None:
        j.attempts += 1
        j.reason = reason
        if j.attempts < self.config.join_attempts:
            self._periodic("join", self._now + self._jit(_backoff(1.0, 8.0, j.attempts)))
            return
        # alone, a ring of one: merge checks keep trying the bootstrap, with backoff
        self._join = None
        self.join_gave_up = True
        self._events.append(JoinFailed(j.bootstrap, reason))
        self._add_peer(j.bootstrap, self._now + self.config.merge_check_interval)

    def lookup(self, key: int, now: float, recursive: bool = False) -> int:
        """Find the successor of `key`; a LookupDone or LookupFailed event follows."""
        self._touch(now)
        rid = next(self._ids)

        def done(succs: tuple[NodeRef, ...] | None, lk: _Lookup) -> None:
            if succs:
                self._events.append(LookupDone(rid, key, succs, lk.hops, lk.timeouts))
            else:
                self._events.append(
                    LookupFailed(rid, key, lk.reason or "unreachable", lk.hops, lk.timeouts)
                )

        self._start_lookup(key & MASK, done, recursive=recursive)
        return rid

    def put(self, record: Record, now: float) -> int:
        """Sign `record` as ours, store it at its place and keep refreshing it. Its
        sequence is the next of `self.sequences` (at least `record.sequence`)."""
        self._touch(now)
        rid = next(self._ids)
        seq = self.sequences.next(record.sequence)
        rec = sign_record(replace(record, sequence=seq, remaining=0), self.id, self.signer)
        if rec.lifetime > 0:
            # a first re-store soon after: the copies may have been placed by a stale
            # view, or on a primary that crashed before replicating; then every
            # lifetime * refresh_fraction
            first = min(self._refresh_after(rec), self.config.first_refresh)
            self._owned[rec.identity] = (rec, now + first)
        else:
            self._owned.pop(rec.identity, None)
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
                old = f.got.get(rec.identity)
                if old is None or old.sequence < rec.sequence:
                    f.got[rec.identity] = rec
        self._get(f)
        return rid

    def _get(self, f: _Fetch) -> None:
        def done(succs: tuple[NodeRef, ...] | None, lk: _Lookup) -> None:
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

        f.lookups += 1
        self._start_lookup(f.resource_id, done)

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
        self._periodic("merge", min(self._due.get("merge", now), now))

    def leave(self, now: float) -> None:
        """Hand our records to our successor, tell our neighbours, then stop."""
        self._touch(now)
        if self.status != MEMBER:
            return
        self._enter(LEAVING)
        self._join = None
        succ = self.successors[0] if self.successors else None

        def one_done(*_: object) -> None:
            self._leave_pending -= 1
            if self._leave_pending <= 0 and self.status == LEAVING:
                self._finish_leave()

        if succ is not None:
            batch = [self.store.copy_for_sending(st, now) for st in self.store.all()]
            for chunk in self._chunks(batch):
                self._leave_pending += 1
                self._request(succ, Transfer, one_done, one_done, records=chunk)
            self._leave_pending += 1
            self._request(succ, Leave, one_done, one_done, predecessor=self.predecessor)
        pred = self.predecessor
        if pred is not None and (succ is None or pred.id != succ.id):
            self._leave_pending += 1
            self._request(pred, Leave, one_done, one_done, successors=tuple(self.successors))
        if self._leave_pending == 0:
            self._finish_leave()

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

    # ------------------------------------------------------------------ input

    def receive(self, msg: Message, now: float) -> None:
        self._touch(now)
        if self.status == LEFT:
            return
        if msg.overlay != self.config.overlay:
            self.stats["dropped_overlay"] += 1
            return
        src = msg.src
        if src.id == self.id:
            return
        self._heard(src)
        handler = _REQUEST_HANDLERS.get(type(msg))
        if handler is not None:
            if self.status == LEAVING:
                return
            handler(self, msg)
            return
        req = self._pending.get(msg.txn)
        if req is None or req.dest.id != src.id:
            self.stats["stray_responses"] += 1
            return
        if isinstance(msg, Error) and msg.code == CERTIFICATE_NEEDED and not req.resent:
            # The receiver lost our certificate (it restarted, or its cache is full): the
            # codec has noticed and adds it this time. Once per request, no try used up.
            req.resent = True
            self.stats["certificate_resends"] += 1
            self._transmit(req)
            return
        if req.provisional and isinstance(msg, Ack):
            req.provisional = False
            req.retransmitted = True  # the final answer's delay is not a round trip
            req.tries = 1
            req.deadline = self._now + self.config.recursive_timeout
            self._at(req.deadline, "req", req.txn)
            return
        del self._pending[msg.txn]
        if not req.retransmitted:  # Karn: a retransmitted request's answer is ambiguous
            self._rtt.sample(self._now - req.sent_at)
        if req.on_reply is not None:
            req.on_reply(msg)

    # ------------------------------------------------------------------ request plumbing

    def _touch(self, now: float) -> None:
        if now > self._now:
            self._now = now

    def _jit(self, interval: float) -> float:
        j = self.config.jitter
        return interval * (1 - j + 2 * j * self.rng.random())

    def _at(self, when: float, kind: str, key: int = 0) -> None:
        heapq.heappush(self._timers, (when, next(self._seq), kind, key))

    def _periodic(self, kind: str, when: float) -> None:
        self._due[kind] = when
        self._at(when, kind)

    def _valid(self, entry: tuple[float, int, str, int]) -> bool:
        when, _, kind, key = entry
        if kind == "req":
            req = self._pending.get(key)
            return req is not None and req.deadline == when
        if kind == "lookup":
            lk = self._lookups.get(key)
            return lk is not None and lk.deadline == when
        return self._due.get(kind) == when

    def _msg(self, cls: type[Message], txn: int | None = None, **fields: object) -> Message:
        return cls(
            src=self.ref,
            txn=next(self._txn) if txn is None else txn,
            overlay=self.config.overlay,
            **fields,
        )

    def _request(
        self,
        dest: NodeRef,
        cls: type[Message],
        on_reply: Callable[[Message], None] | None = None,
        on_fail: Callable[[], None] | None = None,
        attempts: int | None = None,
        timeout: float | None = None,
        provisional: bool = False,
        **fields: object,
    ) -> int:
        c = self.config
        msg = self._msg(cls, **fields)
        req = _Req(
            dest, msg, attempts or c.attempts, self._rtt.timeout(timeout or c.rto, c.rto_min),
            on_reply, on_fail, provisional,
        )
        self._pending[msg.txn] = req
        self._transmit(req)
        return msg.txn

    def _transmit(self, req: _Req) -> None:
        if req.deadline:
            req.retransmitted = True
        else:
            req.sent_at = self._now
        self._out.append((req.dest, req.msg))
        self.stats["requests_sent"] += 1
        req.deadline = self._now + req.timeout
        self._at(req.deadline, "req", req.txn)

    def _req_timeout(self, req: _Req) -> None:
        req.tries -= 1
        if req.tries > 0:
            self._transmit(req)
            return
        del self._pending[req.txn]
        self.stats["timeouts"] += 1
        if req.on_fail is not None:
            req.on_fail()

    def _reply(self, to: Message, cls: type[Message], **fields: object) -> None:
        self._out.append((to.src, self._msg(cls, txn=to.txn, **fields)))
        self.stats["responses_sent"] += 1

    # ------------------------------------------------------------------ liveness bookkeeping

    def _heard(self, src: NodeRef) -> None:
        """A message from src proves it alive: clear suspicion, learn it as a finger."""
        if self._suspects.pop(src.id, None) is not None:
            pass
        self._avoid.pop(src.id, None)
        if self.predecessor is not None and src.id == self.predecessor.id:
            self._pred_heard = self._now
        recent = self._recent
        if src.id in recent:
            recent.move_to_end(src.id)
        else:
            recent[src.id] = src
            if len(recent) > 32:
                recent.popitem(last=False)
            if self.ring_complete and not self._in_tables(src.id):
                # a ring that lists all its nodes hears from one it does not list: a
                # joiner, or a node of another ring; a merge check tells which
                self._add_peer(src, self._now)
                self._periodic("merge", min(self._due.get("merge", self._now), self._now))
        if src.id in self._peers and self._in_tables(src.id):
            del self._peers[src.id]
        self._learn_finger(src)

    def _is_suspect(self, node_id: int) -> bool:
        until = self._suspects.get(node_id)
        if until is None:
            return False
        if until <= self._now:
            del self._suspects[node_id]
            return False
        return True

    def _avoided(self, node_id: int) -> bool:
        until = self._avoid.get(node_id)
        if until is None:
            return False
        if until <= self._now:
            del self._avoid[node_id]
            return False
        return True

    def _declare_dead(self, node: NodeRef, lost: bool = True) -> None:
        """node failed `attempts` tries (or left): drop it from every table."""
        self.stats["dead_declared"] += 1
        self._suspects[node.id] = self._now + self.config.suspect_ttl
        self._recent.pop(node.id, None)
        was_neighbour = False
        if any(s.id == node.id for s in self.successors):
            was_neighbour = True
            self._set_successors([s for s in self.successors if s.id != node.id])
        if self.predecessor is not None and self.predecessor.id == node.id:
            was_neighbour = True
            self._set_predecessor(None)
        self._drop_finger(node.id)
        if lost and was_neighbour:
            self._add_peer(node, self._now + self.config.merge_check_interval)
        self._republish_soon()

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
        if self._due.get("refresh", math.inf) > when:
            self._periodic("refresh", when)

    def _check_alive(self, node: NodeRef) -> None:
        """A lookup hop to a neighbour timed out: confirm with a ping before dropping it."""
        self._request(node, Ping, None, lambda: self._declare_dead(node))

    def _in_tables(self, node_id: int) -> bool:
        if self.predecessor is not None and self.predecessor.id == node_id:
            return True
        return any(s.id == node_id for s in self.successors)

    def _add_peer(self, ref: NodeRef, due: float) -> None:
        peer = self._peers.get(ref.id)
        if peer is None:
            self._peers[ref.id] = _Peer(ref, due, self.config.merge_check_interval)
            while len(self._peers) > self.config.peers_max:
                self._peers.popitem(last=False)
        else:
            peer.ref = ref
            peer.due = min(peer.due, due)

    # ------------------------------------------------------------------ successor list

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
            self.detached = False
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

    def _probe(self, x: NodeRef) -> None:
        """A suspect that a neighbour lists as its successor may only have lost our
        messages (a lossy link): ask it once; its answer clears the suspicion
        (`_heard`) and the next stabilize takes it back."""
        if x.id in self._probing:
            return
        self._probing.add(x.id)

        def answered(_: Message) -> None:
            self._probing.discard(x.id)
            self._stab_calm = 0
            self._periodic("stabilize", self._now)  # take it back now

        self._request(x, Ping, answered, lambda: self._probing.discard(x.id))

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
        self.detached = True
        self.ring_complete = False
        pool = []
        if self.predecessor is not None:
            pool.append(self.predecessor)
        pool.extend(self._unique_fingers())
        pool.extend(self._recent.values())
        pool = [p for p in pool if p.id != self.id and not self._is_suspect(p.id)]
        if not pool:
            self.detached = False  # nobody left that we know of: a ring of one
            return

        def done(succs: tuple[NodeRef, ...] | None, lk: _Lookup) -> None:
            found = [s for s in succs or () if s.id != self.id]
            if found and not self.successors:
                self._set_successors(found)
                self._periodic("stabilize", self._now)
            self.detached = False

        self._start_lookup(self.id, done, pool=pool, use_local=False)

    # ------------------------------------------------------------------ periodic work

    def _periodic_fire(self, kind: str) -> None:
        c = self.config
        if kind == "stabilize":
            interval = _backoff(c.stabilize_interval, c.stabilize_max, self._stab_calm)
            if self.successors and self.predecessor is not None:
                self._stab_calm += 1  # else not on a formed ring yet: stay at the fast rate
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

    # ------------------------------------------------------------------ adaptive cadence
    #
    # Stabilize runs every `stabilize_interval` while the neighbourhood changes and for two
    # rounds after, then the interval doubles each quiet round up to `stabilize_max`. Any
    # change of the successor list or predecessor, a dead neighbour, a Notify from a node
    # that is not our predecessor, a Leave, learn_peer, or a poke from our successor
    # brings it back to the fast rate (and the next round forward). Fix-fingers likewise,
    # between `fix_fingers_interval` and `fix_fingers_max`: fast until a full cycle over
    # the fingers changed nothing, then doubling each round; fast again when a lookup
    # finds a different finger or a finger is dropped (it did not answer, or left). The
    # full replica push backs off from `replica_refresh` to `replica_refresh_max` while
    # the successor list stays the same.
    #
    # A backed-off node learns late what changed further along the ring, and in a full
    # mesh a join must travel back through every node's list. So a node whose successor
    # list changed pings its predecessor, and one that gained a closer predecessor pings
    # the old one (which should adopt the newcomer): a ping from a node's first successor
    # means "my view changed" (or "are you alive?") and makes it stabilize at once. A
    # change thus travels back at message speed, as far as it changes lists, and stops.

    def _unsettle(self) -> None:
        """The neighbourhood changed: stabilize at the fast rate again, starting soon."""
        self._stab_calm = 0
        if self.status == MEMBER:
            soon = self._now + self._jit(self.config.stabilize_interval)
            if self._due.get("stabilize", math.inf) > soon:
                self._periodic("stabilize", soon)

    def _unsettle_fingers(self) -> None:
        self._finger_calm = 0
        self._fingers_changed = True
        self._fingers_clean = False
        if self.status == MEMBER:
            soon = self._now + self._jit(self.config.fix_fingers_interval)
            if self._due.get("fingers", math.inf) > soon:
                self._periodic("fingers", soon)

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
        when = max(self._now, self._poked_at + self.config.stabilize_interval / 2)
        if self._due.get("poke", math.inf) > when:
            self._periodic("poke", when)

    def _send_pokes(self) -> None:
        targets, self._poke = list(self._poke.values()), {}
        if self.status != MEMBER:
            return
        self._poked_at = self._now
        for x in targets:
            if not self._is_suspect(x.id):
                self.stats["pokes_sent"] += 1
                self._request(x, Ping, None, None, attempts=1)

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

        def ok(m: Message) -> None:
            self._stabilizing = False
            if isinstance(m, Neighbors):
                self._on_successor_view(s, m)

        def fail() -> None:
            self._stabilizing = False
            if self.status != MEMBER:
                return
            self._declare_dead(s)
            if self.successors:
                self._stabilize()

        self._request(s, GetNeighbors, ok, fail)

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

        def ok(_: Message) -> None:
            self._pred_ping = None

        def fail() -> None:
            self._pred_ping = None
            if self.predecessor is not None and self.predecessor.id == p.id:
                self._declare_dead(p)
            cands = [c for c in self._pred_candidates.values() if not self._is_suspect(c.id)]
            self._pred_candidates.clear()
            if cands and self.predecessor is None:
                me = self.id
                self._set_predecessor(min(cands, key=lambda c: (me - c.id) & MASK))

        self._request(p, Ping, ok, fail, attempts=2)

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

        def ok(m: Message) -> None:
            if self.status != MEMBER:
                return
            if (
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

        def fail() -> None:
            self._suspects[p.id] = self._now + self.config.suspect_ttl
            if self.successors:
                self._notify(self.successors[0])

        self._request(p, GetNeighbors, ok, fail)

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
        self._request(s, Notify, None, None, attempts=2)  # acked: a loss costs an RTO, not a round

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

        def ok(_: Message) -> None:
            self._pred_ping = None
            self._pred_candidates.clear()

        def fail() -> None:
            self._pred_ping = None
            cands = list(self._pred_candidates.values())
            self._pred_candidates.clear()
            if self.predecessor is None or self.predecessor.id != p.id:
                return
            self._declare_dead(p)
            cands = [c for c in cands if not self._is_suspect(c.id)]
            if cands and self.predecessor is None:
                me = self.id
                self._set_predecessor(min(cands, key=lambda c: (me - c.id) & MASK))

        self._request(p, Ping, ok, fail)

    def _adopt(self, c: NodeRef, zip_rings: bool) -> None:
        """Check c is alive and take it (with its list) into our successor list."""
        if c.id in self._adopting or c.id == self.id:
            return
        self._adopting.add(c.id)

        def ok(m: Message) -> None:
            self._adopting.discard(c.id)
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
                self._request(c, Learn, None, None, attempts=2, candidate=old_first)
            q = m.predecessor
            if q is not None and q.id != self.id and between(self.id, q.id, c.id):
                self._request(q, Learn, None, None, attempts=2, candidate=self.ref)

        def fail() -> None:
            self._adopting.discard(c.id)
            self._declare_dead(c, lost=False)

        self._request(c, GetNeighbors, ok, fail)

    # ------------------------------------------------------------------ fingers

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

        def done(succs: tuple[NodeRef, ...] | None, lk: _Lookup) -> None:
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

        if current is None or self._is_suspect(current.id) or self._avoided(current.id):
            self._start_lookup(key, done)
            return

        # Re-check a finger by asking it: while it is the target's successor it answers
        # Found itself (one hop instead of a lookup). Anything else (a node joined before
        # it, it lost its predecessor, or it died) and we look the target up as usual: a
        # node past the key knows little behind itself, so its redirects would be poor.
        def checked(m: Message) -> None:
            if isinstance(m, Found) and m.successors and m.successors[0].id == current.id:
                self.stats["lookups_done"] += 1
                done(m.successors, _Lookup(0, key, False, done))
            else:
                self._start_lookup(key, done)

        def silent() -> None:
            self._avoid[current.id] = self._now + self.config.avoid_ttl
            self._drop_finger(current.id)
            if self._in_tables(current.id):
                self._check_alive(current)
            self._start_lookup(key, done)

        self._request(current, FindSuccessor, checked, silent, attempts=1,
                      timeout=self.config.lookup_timeout, key=key)

    # ------------------------------------------------------------------ lookups

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

        def ok(m: Message) -> None:
            self._lookup_reply(lk, c, m)

        def fail() -> None:
            if lk.lid not in self._lookups:
                return
            lk.timeouts += 1
            lk.dead.add(c.id)
            self._avoid[c.id] = self._now + self.config.avoid_ttl
            self._drop_finger(c.id)
            if self._in_tables(c.id):
                self._check_alive(c)
            self._lookup_step(lk)

        self._request(
            c, FindSuccessor, ok, fail, attempts=1, timeout=self.config.lookup_timeout,
            provisional=lk.recursive, key=key, recursive=lk.recursive,
            origin=self.ref if lk.recursive else None,
        )

    def _fallback(self, lk: _Lookup) -> tuple[NodeRef, ...] | None:
        """Nobody could answer for the key (its owner has no predecessor yet and the
        node before it has a dead successor): the closest live node at or after the key
        that answered us is the best guess."""
        if lk.best_post is None:
            return None
        self.stats["lookup_fallbacks"] = self.stats.get("lookup_fallbacks", 0) + 1
        return (lk.best_post,)

    def _lookup_reply(self, lk: _Lookup, c: NodeRef, m: Message) -> None:
        if lk.lid not in self._lookups:
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

    def _finish_lookup(self, lk: _Lookup, result: tuple[NodeRef, ...] | None) -> None:
        if self._lookups.pop(lk.lid, None) is None:
            return
        self.stats["lookups_done" if result else "lookups_failed"] += 1
        lk.cb(result, lk)

    # ------------------------------------------------------------------ request handlers

    def _on_ping(self, m: Ping) -> None:
        self._reply(m, Pong)
        if self.status == MEMBER and self.successors and m.src.id == self.successors[0].id:
            # our first successor's view changed (or it wonders whether we live): look now
            self.stats["pokes_received"] += 1
            self._stab_calm = 0
            soon = self._now + 0.05 * self.rng.random()
            if self._due.get("stabilize", math.inf) > soon:
                self._periodic("stabilize", soon)

    def _on_get_neighbors(self, m: GetNeighbors) -> None:
        self._reply(m, Neighbors, predecessor=self.predecessor, successors=tuple(self.successors))

    def _on_notify(self, m: Notify) -> None:
        self._reply(m, Ack)
        if self.status == MEMBER:
            if self.predecessor is None or self.predecessor.id != m.src.id:
                self._unsettle()  # a new node thinks it precedes us
            self._rectify(m.src)

    def _on_find_successor(self, m: FindSuccessor) -> None:
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

        def ok(resp: Message) -> None:
            if isinstance(resp, Found):
                self._reply(m, Found, key=m.key, successors=resp.successors, hops=resp.hops)
            else:
                self._forward(m, rest)

        def fail() -> None:
            self._avoid[c.id] = self._now + self.config.avoid_ttl
            self._drop_finger(c.id)
            self._forward(m, rest)

        self._request(
            c, FindSuccessor, ok, fail, attempts=1, timeout=self.config.lookup_timeout,
            provisional=True, key=m.key, recursive=True, hops=m.hops + 1,
            origin=m.origin or m.src,
        )

    def _on_store(self, m: Store | Transfer) -> None:
        replica = isinstance(m, Store) and m.replica
        accepted, rejected = self._accept_records(m.records, m.src, replica)
        self._reply(m, Stored, accepted=accepted, rejected=rejected)

    def _on_fetch(self, m: Fetch) -> None:
        good = []
        for rec in self.store.get(m.resource_id, self._now):
            if verify_record(rec, self.signer):
                good.append(rec)
            else:
                self._reject(rec, self.ref, "bad signature in store")
        self._reply(m, Records, resource_id=m.resource_id, records=tuple(good))

    def _on_leave(self, m: Leave) -> None:
        self._reply(m, Ack)
        if self.status != MEMBER:
            return
        self._unsettle()
        leaving = m.src
        was_pred = self.predecessor is not None and self.predecessor.id == leaving.id
        was_succ = any(s.id == leaving.id for s in self.successors)
        self._suspects[leaving.id] = self._now + self.config.suspect_ttl
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

    def _on_learn(self, m: Learn) -> None:
        self._reply(m, Ack)
        self._learn(m.candidate, m.hops)

    # ------------------------------------------------------------------ ring unification

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
        self._request(nxt[0], Learn, None, None, attempts=2, candidate=c, hops=hops + 1)

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
        ref = peer.ref

        def alive(_: Message) -> None:
            def done(succs: tuple[NodeRef, ...] | None, lk: _Lookup) -> None:
                if not succs:
                    return
                # A ring that knows all its nodes (ring_complete) does not hold ref: ref
                # is on another ring even when our lookup, through a finger learnt from
                # that ring, found it (a joiner that answered as a ring of one can start
                # a second ring whose nodes hear from the first).
                if succs[0].id == ref.id and not self.ring_complete:
                    self._peers.pop(ref.id, None)  # on our ring
                    return
                self._learn(ref, 0)  # another ring (or not stabilised yet): zip

            # Ask our ring, never the peer itself: it may already sit among our fingers
            # (we just heard from it) and would of course answer for its own id.
            self._start_lookup(ref.id, done, exclude=ref.id)

        self._request(ref, Ping, alive, None, attempts=2)

    # ------------------------------------------------------------------ records

    def _refresh_after(self, rec: Record) -> float:
        return max(1.0, rec.lifetime * self.config.refresh_fraction)

    def _reject(self, rec: Record, src: NodeRef, reason: str) -> None:
        self.stats["records_rejected"] += 1
        self._events.append(RecordRejected(rec, src, reason))

    def _accept_records(
        self, records: Iterable[Record], src: NodeRef, replica: bool = False
    ) -> tuple[int, int]:
        """Verify and store copies. `replica`: pushed by a primary (so our holding it is
        confirmed); a first copy we are not primary for gets re-homed at the next sync."""
        accepted = rejected = 0
        changed = False
        now = self._now
        newer: list[Record] = []  # what we hold that beats the copies their owner sent
        from_owner = src.id != self.id
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
            if not verify_record(rec, self.signer):
                rejected += 1
                self._reject(rec, src, "bad signature")
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
            self._request(src, Transfer, None, None, records=tuple(newer))
        return accepted, rejected

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
        if self._due.get("refresh", math.inf) > self._now:
            self._periodic("refresh", self._now)

    def _schedule_sync(self) -> None:
        if self.status != MEMBER:
            return
        when = self._now + self.config.sync_delay
        if self._due.get("sync", math.inf) > when:
            self._periodic("sync", when)

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
        full = now >= self._next_full_push
        if full:
            c = self.config
            interval = _backoff(c.replica_refresh, c.replica_refresh_max, self._push_calm)
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
        def ok(m: Message) -> None:
            if isinstance(m, Stored):
                for rec in chunk:
                    sent[rec.identity] = rec.sequence

        self._request(t, Store, ok, None, attempts=2, records=chunk, replica=True)

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
            if key in self._orphan_checks or len(self._orphan_checks) >= 8:
                continue
            self._orphan_checks.add(key)
            self._rehome(key, sts)

    def _rehome(self, key: int, sts: list[StoredRecord]) -> None:
        def done(succs: tuple[NodeRef, ...] | None, lk: _Lookup) -> None:
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

            def ok(m: Message) -> None:
                if isinstance(m, Stored) and not keep:
                    # not ours to keep, but only drop it once the primary has had time
                    # to replicate it (it might crash first)
                    drop = self._now + 2 * self.config.replica_refresh
                    for rec in recs:
                        cur = self.store.stored(rec.identity)
                        if cur is not None and cur.record.sequence == rec.sequence:
                            cur.drop_at = min(cur.drop_at, drop)

            self.stats["transfers_sent"] += 1
            for chunk in self._chunks(recs):
                self._request(primary, Transfer, ok, None, records=chunk)

        self._start_lookup(key, done)

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
            self._request(new, Transfer, None, None, records=chunk)

    def _place(self, rec: Record, rid: int | None) -> None:
        """Store rec at the successor of its key (replicas follow from there)."""

        def done(succs: tuple[NodeRef, ...] | None, lk: _Lookup) -> None:
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
                    self._request(t, Store, None, None, attempts=2, records=(rec,), replica=True)
            self._store_at(rec, rid, targets)

        self._start_lookup(rec.resource_id, done)

    def _store_at(self, rec: Record, rid: int | None, targets: list[NodeRef]) -> None:
        if not targets:
            self._put_failed(rec, rid, "no replica answered")
            return
        t = targets[0]
        if t.id == self.id:
            self._accept_records((rec,), self.ref)
            if rid is not None:
                self._events.append(PutDone(rid, rec.resource_id, self.ref))
            return

        def ok(m: Message) -> None:
            if isinstance(m, Stored) and m.rejected == 0:
                if rid is not None:
                    self._events.append(PutDone(rid, rec.resource_id, t))
            else:
                self._put_failed(rec, rid, "refused")

        def fail() -> None:
            self._store_at(rec, rid, targets[1:])

        self._request(t, Store, ok, fail, records=(rec,))

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
            new = sign_record(replace(rec, sequence=seq), self.id, self.signer)
            self._owned[ident] = (new, now + self._refresh_after(new))
            if ident in self._republish:
                self._republish.discard(ident)
                self.stats["republished"] += 1
            self._place(new, None)
        self._republish &= self._owned.keys()
        if self._republish:  # marked after this round was set: do not wait a full second
            when = min(self._owned[i][1] for i in self._republish)
            if self._due.get("refresh", math.inf) > when:
                self._periodic("refresh", when)

    def _fetch_from(self, f: _Fetch, targets: list[NodeRef]) -> None:
        """Ask targets in turn until one answers. A target that does not answer is
        routed around and checked (a neighbour is pinged, and dropped when dead); when
        none answered, the lookup's further successors are asked, then a fresh lookup
        (which avoids the silent ones) is made, all within the lookup deadline."""
        resource_id = f.resource_id
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

        def take(recs: Iterable[Record], src: NodeRef) -> None:
            for rec in recs:
                if rec.resource_id != resource_id:
                    continue
                if not verify_record(rec, self.signer):
                    self._reject(rec, src, "bad signature in answer")
                    continue
                old = f.got.get(rec.identity)
                if old is None or old.sequence < rec.sequence:
                    f.got[rec.identity] = rec

        if t.id == self.id:
            take(self.store.get(resource_id, self._now, tombstones=True), self.ref)
            f.asked = True
            self._fetch_from(f, rest)
            return

        def ok(m: Message) -> None:
            if isinstance(m, Records):
                take(m.records, t)
            f.asked = True
            self._fetch_from(f, rest)

        def fail() -> None:
            f.dead.add(t.id)
            self._avoid[t.id] = self._now + self.config.avoid_ttl
            self._drop_finger(t.id)
            if self._in_tables(t.id):
                self._check_alive(t)
            if f.local:  # answer from our own copies rather than wait on more timeouts
                self._end_fetch(f, "no replica answered")
            else:
                self._fetch_from(f, rest)

        self._request(t, Fetch, ok, fail, attempts=2, resource_id=resource_id)

    def _finish_leave(self) -> None:
        self._enter(LEFT)
        self._pending.clear()
        self._lookups.clear()
        self._events.append(Left())


_REQUEST_HANDLERS: dict[type, Callable[[ChordNode, Message], None]] = {
    Ping: ChordNode._on_ping,
    GetNeighbors: ChordNode._on_get_neighbors,
    Notify: ChordNode._on_notify,
    FindSuccessor: ChordNode._on_find_successor,
    Store: ChordNode._on_store,
    Transfer: ChordNode._on_store,
    Fetch: ChordNode._on_fetch,
    Leave: ChordNode._on_leave,
    Learn: ChordNode._on_learn,
}  # type: ignore[dict-item]
