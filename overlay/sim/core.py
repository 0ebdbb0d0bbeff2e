"""The simulator: real `ChordNode`s on a virtual clock and a virtual network.

One event heap holds message deliveries, node timers and scheduled actions; popping it
is one *step*. The network gives every link a fixed base delay (from the seed and the two
node ids) plus jitter, drops messages with a configured probability and drops everything
between nodes in different partition groups. All randomness comes from `random.Random`
objects seeded from the run's seed, nothing iterates a hash-ordered set of strings, so a
run is the same on every machine and every PYTHONHASHSEED.

After every step that changed some node's predecessor or successor list (or crashed,
removed or partitioned nodes) the invariant checker runs over all live nodes, each
partition side on its own (one correct ring per side): strictly (all of Zave's
invariants, and correct predecessors once the ring is stable) in normal operation and
during a partition; relaxed (ordered successor lists only) from a heal (two rings merge:
there are two rings until they are zipped), and on a side from an assumption breach there
(a node whose every successor crashed or is cut off), until that side has converged.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from overlay.chord.messages import (
    Found,
    Message,
    Neighbors,
    NodeRef,
    Record,
    Records,
    Redirect,
    Store,
    Transfer,
)
from overlay.chord.node import (
    MEMBER,
    ChordConfig,
    ChordNode,
    GetDone,
    GetFailed,
    LookupDone,
    LookupFailed,
    PutDone,
    PutFailed,
    RecordRejected,
)
from overlay.chord.records import KeyedHashKeyring, resource_key

from .invariants import PredecessorWatch, Violation, check_ring, converged, ring_members

_DELIVER, _TIMER, _ACTION = 0, 1, 2


def estimate_size(msg: Message) -> int:
    """Bytes of a message SIP-encoded (SOSIMPLE): a ~420-byte request or response line
    and headers, ~80 bytes per DHT-Link (node) header, ~300 per record. Used when the
    wire codec is not available."""
    size = 420
    if isinstance(msg, Neighbors):
        size += 80 * (len(msg.successors) + (msg.predecessor is not None))
    elif isinstance(msg, Found):
        size += 80 * len(msg.successors)
    elif isinstance(msg, Redirect):
        size += 80 * len(msg.closer)
    elif isinstance(msg, Store | Transfer | Records):
        size += 300 * len(msg.records)
    return size


def node_id_for(seed: int, label: int) -> int:
    digest = hashlib.sha256(f"meshsip-sim/{seed}/{label}".encode()).digest()
    return int.from_bytes(digest[:16], "big")


@dataclass
class SimStats:
    messages: int = 0
    bytes: int = 0
    dropped: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    lookups: int = 0
    lookups_ok: int = 0
    lookups_failed: int = 0
    lookups_wrong: int = 0
    hops: list[int] = field(default_factory=list)
    lookup_timeouts: int = 0
    records_rejected: int = 0
    steps: int = 0
    checks: int = 0
    misplaced_checks: int = 0  # checks that saw an appendage hanging off the wrong place


class Simulation:
    def __init__(
        self,
        seed: int = 0,
        config: ChordConfig | None = None,
        loss: float = 0.0,
        delay: tuple[float, float] = (0.005, 0.040),
        jitter: float = 0.25,
        check: bool = True,
        node_factory: Callable[..., ChordNode] = ChordNode,
        size_of: Callable[[Message], int] = estimate_size,
        trace_len: int = 300,
        discovery_interval: float = 5.0,
        check_every_step: bool = False,
    ) -> None:
        self.seed = seed
        self.config = config if config is not None else ChordConfig()
        self.loss = loss
        self.delay = delay
        self.jitter = jitter
        self.check_enabled = check
        # by default the checker runs after the steps that changed some node's
        # predecessor or successor list (or liveness, or the partition): on the others
        # the checked state is identical. check_every_step runs it after every step.
        self.check_every_step = check_every_step
        self.node_factory = node_factory
        self.size_of = size_of
        self.now = 0.0
        self.rng = random.Random(f"net/{seed}")
        self.keyring = KeyedHashKeyring(seed)
        self.nodes: dict[int, ChordNode] = {}  # every node ever created, by id
        self.live: dict[int, ChordNode] = {}
        self.labels: dict[int, int] = {}  # id -> label
        self.by_label: dict[int, int] = {}  # label -> id
        self.group: dict[int, int] = {}  # id -> partition group (absent: 0)
        self.stats = SimStats()
        self.violations: list[tuple[float, Violation]] = []
        self.breaches: list[tuple[float, int]] = []
        self.relaxed: set[int] = set()  # sides (groups) checked relaxed until converged
        self.partitioned = False
        self.trace: deque[str] = deque(maxlen=trace_len)
        self.log: list[str] = []
        self._heap: list[tuple[float, int, int, int, Any]] = []
        self._seq = itertools.count()
        self._timer_at: dict[int, float] = {}
        self._versions: dict[int, int] = {}
        self._dirty = False
        self._waiters: dict[tuple[int, int], Callable[[Any], None]] = {}
        self._next_label = 0
        self._label_groups: dict[int, int] = {}
        self._on_violation: Callable[[float, Violation], None] | None = None
        c = self.config
        # CorrectPredecessor applies this long after a member's true predecessor changed:
        # two slow stabilize rounds with their retries, and a ping of the old predecessor
        self.predecessors = PredecessorWatch(
            2 * (c.stabilize_max * (1 + c.jitter) + c.attempts * c.rto) + c.attempts * c.rto
        )
        self._recheck_at = math.inf
        self.discovery_interval = discovery_interval
        if discovery_interval:
            self.at(discovery_interval, self._discover)

    # ------------------------------------------------------------------ nodes

    def ref_of(self, label: int) -> NodeRef:
        nid = self.by_label.get(label)
        if nid is None:
            nid = node_id_for(self.seed, label)
        return NodeRef(nid, f"10.{label >> 16 & 255}.{label >> 8 & 255}.{label & 255}", 5070)

    def add_node(self, label: int | None = None, bootstrap: int | None = None) -> ChordNode:
        """Create a node (label: a small stable name); join through `bootstrap` (a label,
        or None for a random live member; -1 to stay alone)."""
        if label is None:
            label = self._next_label
        self._next_label = max(self._next_label, label + 1)
        ref = self.ref_of(label)
        if ref.id in self.nodes:
            raise ValueError(f"label {label} exists")
        node = self.node_factory(
            ref,
            self.keyring.signer(ref.id),
            random.Random(f"node/{self.seed}/{label}"),
            self.config,
            self.now,
        )
        self.nodes[ref.id] = node
        self.live[ref.id] = node
        self.labels[ref.id] = label
        self.by_label[label] = ref.id
        if self._label_groups.get(label):
            self.group[ref.id] = self._label_groups[label]
        self._dirty = True
        boot: ChordNode | None = None
        if bootstrap is None:
            members = [n for n in self.live.values() if n.status == MEMBER and n is not node]
            members = [n for n in members if self.group.get(n.id, 0) == self.group.get(ref.id, 0)]
            if members:
                boot = members[self.rng.randrange(len(members))]
        elif bootstrap >= 0 and bootstrap in self.by_label:
            boot = self.nodes[self.by_label[bootstrap]]
        if boot is not None:
            node.join(boot.ref, self.now)
        via = f" via n{self.labels[boot.id]}" if boot else ""
        self.log.append(f"{self.now:9.3f} add n{label}{via}")
        self._pump(node)
        return node

    def build_ring(self, n: int) -> None:
        """Start from an already correct ring of n nodes (successor lists and
        predecessors set from the sorted ids; no fingers): for benchmarks of large rings,
        where growing by joins would take most of the time. Fingers are then built by
        the nodes' own fix-fingers and passive learning."""
        nodes = [self.add_node(bootstrap=-1) for _ in range(n)]
        ring = sorted(nodes, key=lambda x: x.id)
        for i, node in enumerate(ring):
            node.predecessor = ring[i - 1].ref if n > 1 else None
            want = node._succ_target() if n > 1 else 0
            k = min(n - 1, max(want, self.config.r))
            node._set_successors([ring[(i + j) % n].ref for j in range(1, k + 1)])
            node.ring_complete = k == n - 1
            node._set_successors([ring[(i + j) % n].ref for j in range(1, node._succ_target() + 1)
                                  if j < n])
            node.version += 1
        self._dirty = True

    def crash(self, label: int) -> None:
        nid = self.by_label.get(label)
        if nid is None or nid not in self.live:
            return
        del self.live[nid]
        self._timer_at.pop(nid, None)
        self._dirty = True
        self.log.append(f"{self.now:9.3f} crash n{label}")

    def leave(self, label: int) -> None:
        nid = self.by_label.get(label)
        if nid is None or nid not in self.live:
            return
        self.log.append(f"{self.now:9.3f} leave n{label}")
        node = self.live[nid]
        node.leave(self.now)
        self._pump(node)

    def partition(self, groups: dict[int, int]) -> None:
        """Put nodes (by label) into groups; nodes not named stay in group 0."""
        self.group = {self.by_label[lbl]: g for lbl, g in groups.items() if lbl in self.by_label}
        self._label_groups = dict(groups)  # nodes created later join their group
        self.partitioned = True  # each side is checked on its own, strictly
        self._dirty = True
        self.log.append(f"{self.now:9.3f} partition into {len(set(groups.values()) | {0})} groups")

    def heal(self, discover: int = 1) -> None:
        """Reconnect every group; `discover` nodes each learn of a random node of another
        group (as mDNS would tell them)."""
        groups = dict(self.group)
        self.group = {}
        self._label_groups = {}
        self.partitioned = False
        self.relaxed = {0}  # the sides' rings merge: relaxed until converged
        self._dirty = True
        self.log.append(f"{self.now:9.3f} heal (discovery for {discover} nodes)")
        live = sorted(self.live)
        for _ in range(discover):
            if len(live) < 2:
                break
            a = self.live[live[self.rng.randrange(len(live))]]
            others = [i for i in live if groups.get(i, 0) != groups.get(a.id, 0)]
            if not others:
                continue
            b = self.live[others[self.rng.randrange(len(others))]]
            a.learn_peer(b.ref, self.now)
            self._pump(a)

    def discover(self, label: int, other: int) -> None:
        """Discovery on node `label` names node `other` (both live and reachable)."""
        a, b = self.by_label.get(label), self.by_label.get(other)
        if a in self.live and b in self.live and self.group.get(a, 0) == self.group.get(b, 0):
            node = self.live[a]
            node.learn_peer(self.live[b].ref, self.now)
            self._pump(node)

    def _discover(self) -> None:
        """What mDNS does for a box that is on nobody's ring: it sees another box on its
        link. Every `discovery_interval`, each lone node (no successor, no predecessor)
        learns of a random live node of its partition group."""
        self.at(self.now + self.discovery_interval, self._discover)
        lone = [
            n for n in self.live.values()
            if n.status == MEMBER and not n.successors and n.predecessor is None
        ]
        if not lone:
            return
        ids = sorted(self.live)
        for n in lone:
            same = [i for i in ids if i != n.id and self.group.get(i, 0) == self.group.get(n.id, 0)]
            if same:
                peer = self.live[same[self.rng.randrange(len(same))]]
                n.learn_peer(peer.ref, self.now)
                self._pump(n)

    # ------------------------------------------------------------------ scheduling

    def at(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), _ACTION, 0, action))

    def _pump(self, node: ChordNode) -> None:
        now = self.now
        nid = node.id
        for dest, msg in node.messages_to_send():
            self._send(nid, dest, msg)
        while (ev := node.next_event()) is not None:
            self._event(node, ev)
        if nid in self.live:
            t = node.get_timer()
            if t is not None and self._timer_at.get(nid) != t:
                self._timer_at[nid] = t
                heapq.heappush(self._heap, (max(t, now), next(self._seq), _TIMER, nid, t))
            if self._versions.get(nid) != node.version:
                self._versions[nid] = node.version
                self._dirty = True
            if node.status == "left":
                del self.live[nid]
                self._timer_at.pop(nid, None)
                self._dirty = True

    def _link_delay(self, a: int, b: int) -> float:
        x = (a ^ b ^ self.seed) & 0xFFFFFFFFFFFF
        frac = ((x * 0x9E3779B97F4A7C15) >> 40 & 0xFFFFFF) / 0x1000000
        lo, hi = self.delay
        return lo + (hi - lo) * frac

    def _send(self, src: int, dest: NodeRef, msg: Message) -> None:
        st = self.stats
        st.messages += 1
        st.bytes += self.size_of(msg)
        name = type(msg).__name__
        st.by_type[name] = st.by_type.get(name, 0) + 1
        if self.loss and self.rng.random() < self.loss:
            st.dropped += 1
            return
        if self.group and self.group.get(src, 0) != self.group.get(dest.id, 0):
            st.dropped += 1
            return
        d = self._link_delay(src, dest.id) * (1 + self.jitter * self.rng.random())
        heapq.heappush(self._heap, (self.now + d, next(self._seq), _DELIVER, dest.id, (src, msg)))

    def _event(self, node: ChordNode, ev: Any) -> None:
        st = self.stats
        if isinstance(ev, LookupDone | LookupFailed | GetDone | GetFailed | PutDone | PutFailed):
            cb = self._waiters.pop((node.id, ev.request_id), None)
            if cb is not None:
                cb(ev)
        elif isinstance(ev, RecordRejected):
            st.records_rejected += 1

    def step(self) -> bool:
        """Process one event. False when nothing is left."""
        if not self._heap:
            return False
        when, _, kind, nid, payload = heapq.heappop(self._heap)
        if when > self.now:
            self.now = when
        if kind == _TIMER and (nid not in self.live or self._timer_at.get(nid) != payload):
            return True  # a superseded timer entry: not a step
        self.stats.steps += 1
        if kind == _DELIVER:
            node = self.live.get(nid)
            src, msg = payload
            if node is None or (self.group and self.group.get(src, 0) != self.group.get(nid, 0)):
                self.stats.dropped += 1
            else:
                self.trace.append(
                    f"{self.now:9.3f} n{self.labels.get(src, '?')} -> "
                    f"n{self.labels.get(nid, '?')} {_short(msg, self.labels)}"
                )
                node.receive(msg, self.now)
                self._pump(node)
        elif kind == _TIMER:
            node = self.live[nid]
            del self._timer_at[nid]
            node.handle_timer(self.now)
            self._pump(node)
        else:
            payload()
        if self.check_enabled and (self._dirty or self.check_every_step):
            self.check()
        return True

    def run_until(self, t: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= t:
            self.step()
        if self.now < t:
            self.now = t

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    # ------------------------------------------------------------------ checking

    def sides(self) -> dict[int, dict[int, ChordNode]]:
        """The live nodes that can reach each other, by partition group (one, unsplit)."""
        groups: dict[int, dict[int, ChordNode]] = {}
        for nid in sorted(self.live):
            groups.setdefault(self.group.get(nid, 0), {})[nid] = self.live[nid]
        return dict(sorted(groups.items()))

    def check(self) -> list[Violation]:
        self._dirty = False
        self.stats.checks += 1
        found: list[Violation] = []
        self.predecessors.forget(self.live)
        for g, side in self.sides().items():
            if g in self.relaxed and not converged(side.values(), side, self.config.r):
                self.relaxed.discard(g)
                self.log.append(f"{self.now:9.3f} converged: strict checking again")
            strict = g not in self.relaxed
            rep = check_ring(side.values(), side, strict=strict, labels=self.labels)
            if rep.misplaced:
                self.stats.misplaced_checks += 1
            if rep.breaches and strict:
                self.relaxed.add(g)
                for b in rep.breaches:
                    self.breaches.append((self.now, b))
                self.log.append(
                    f"{self.now:9.3f} assumption breach: every successor of "
                    f"{', '.join(f'n{self.labels[b]}' for b in rep.breaches)} is dead "
                    "or cut off; relaxed checking there until converged"
                )
            stable = strict and not rep.breaches and rep.rings == 1 and not rep.violations
            found += rep.violations
            members = ring_members(side.values(), side)
            found += self.predecessors.moves(members, self.labels)
            found += self.predecessors.check(members, self.now, stable, self.labels)
        for v in found:
            self.violations.append((self.now, v))
            self.log.append(f"{self.now:9.3f} VIOLATION {v}")
            if self._on_violation is not None:
                self._on_violation(self.now, v)
        # a predecessor's grace ends: look then, even if no step changes anything
        due = self.predecessors.next_due(self.now)
        if due is not None and not self.now < self._recheck_at <= due:
            self._recheck_at = due
            self.at(due, self._recheck)
        return found

    def _recheck(self) -> None:
        if self._recheck_at <= self.now:
            self._recheck_at = math.inf
        self._dirty = True

    def converged(self, depth: int | None = None) -> list[str]:
        """Problems keeping a side (all live nodes, when not partitioned) from the ideal.
        `depth`: see invariants.converged()."""
        r = self.config.r
        return [p for side in self.sides().values()
                for p in converged(side.values(), side, r, depth)]

    def run_until_converged(self, limit: float, poll: float = 1.0,
                            depth: int | None = None) -> float | None:
        """Run until the ring is exactly right (or `limit` seconds pass); then strict
        checking resumes. Returns the time it took, or None. `depth`: see converged()."""
        start = self.now
        end = start + limit
        while self.now < end:
            self.run_until(min(self.now + poll, end))  # lands on `end` exactly
            if self.converged(depth):
                continue
            if self.relaxed:
                self.relaxed.clear()
                self.log.append(f"{self.now:9.3f} converged: strict checking again")
                self._dirty = True
                if self.check_enabled:
                    self.check()
            return self.now - start
        return None

    # ------------------------------------------------------------------ operations

    def members(self) -> list[ChordNode]:
        """The nodes on a ring (a lone node that is still joining is not: see ring_members)."""
        return list(ring_members(self.live.values(), self.live).values())

    def true_successor(self, key: int, group: int | None = None) -> int | None:
        ids = sorted(
            n.id for n in self.members() if group is None or self.group.get(n.id, 0) == group
        )
        if not ids:
            return None
        for i in ids:
            if i >= key:
                return i
        return ids[0]

    def lookup(self, key: int | None = None, origin: ChordNode | None = None,
               recursive: bool = False, on_done: Callable[[Any], None] | None = None) -> None:
        members = self.members()
        if not members:
            return
        if origin is None:
            origin = members[self.rng.randrange(len(members))]
        if key is None:
            key = self.rng.getrandbits(128)
        st = self.stats
        st.lookups += 1
        # right is the key's successor when the lookup started or when it ended (a node
        # that joins or dies meanwhile makes either answer fair)
        group = self.group.get(origin.id, 0)
        before = self.true_successor(key, group)
        rid = origin.lookup(key, self.now, recursive=recursive)

        def done(ev: Any) -> None:
            if isinstance(ev, LookupDone):
                st.lookups_ok += 1
                st.hops.append(ev.hops)
                st.lookup_timeouts += ev.timeouts
                want = self.true_successor(key, group)
                if want is not None and ev.successors[0].id not in (want, before):
                    st.lookups_wrong += 1
            else:
                st.lookups_failed += 1
                self.log.append(f"{self.now:9.3f} lookup failed: {ev.reason}")
            if on_done is not None:
                on_done(ev)

        self._waiters[(origin.id, rid)] = done
        self._pump(origin)

    def put(self, node: ChordNode, aor: str, contact: str, lifetime: int = 600,
            on_done: Callable[[Any], None] | None = None) -> None:
        rec = Record(resource_key(aor), aor, node.id, contact, 1, lifetime)
        rid = node.put(rec, self.now)
        if on_done is not None:
            self._waiters[(node.id, rid)] = on_done
        self._pump(node)

    def get(self, node: ChordNode, resource_id: int, on_done: Callable[[Any], None]) -> None:
        rid = node.get(resource_id, self.now)
        self._waiters[(node.id, rid)] = on_done
        self._pump(node)

    def live_records(self) -> list[tuple[int, Record]]:
        """Every binding a live owner keeps alive: (owner id, record)."""
        out = []
        for n in self.live.values():
            if n.status != MEMBER:
                continue
            for rec in n.owned_records():
                out.append((n.id, rec))
        return out

    def check_records(self, timeout: float = 30.0) -> tuple[int, int, list[str]]:
        """Fetch every live record from a random member; (found, lost, details)."""
        recs = self.live_records()
        members = self.members()
        results: dict[int, Any] = {}
        for i, (_, rec) in enumerate(recs):
            origin = members[self.rng.randrange(len(members))]

            def done(ev: Any, i: int = i) -> None:
                results[i] = ev

            self.get(origin, rec.resource_id, done)
        end = self.now + timeout
        while len(results) < len(recs) and self.now < end:
            self.run_for(0.5)
        lost = []
        for i, (_, rec) in enumerate(recs):
            ev = results.get(i)
            ok = isinstance(ev, GetDone) and any(
                r.owner == rec.owner and r.contact == rec.contact for r in ev.records
            )
            if not ok:
                lost.append(f"{rec.aor} owned by n{self.labels[rec.owner]}: {ev}")
        return len(recs) - len(lost), len(lost), lost

    def summary(self) -> dict[str, Any]:
        st = self.stats
        hops = sorted(st.hops)
        p99 = hops[min(len(hops) - 1, math.ceil(0.99 * len(hops)) - 1)] if hops else 0
        done = st.lookups_ok + st.lookups_failed
        return {
            "nodes": len(self.live),
            "lookups": st.lookups,
            "success_rate": (st.lookups_ok / done) if done else 1.0,
            "hops_mean": (sum(hops) / len(hops)) if hops else 0.0,
            "hops_p99": p99,
            "lookups_wrong": st.lookups_wrong,
            "invariant_violations": len(self.violations),
            "assumption_breaches": len(self.breaches),
            "messages": st.messages,
            "bytes": st.bytes,
            "dropped": st.dropped,
            "records_rejected": st.records_rejected,
            "steps": st.steps,
            "checks": st.checks,
            "misplaced_appendage_checks": st.misplaced_checks,
            "virtual_seconds": round(self.now, 3),
        }


def _short(msg: Message, labels: dict[int, int]) -> str:
    name = type(msg).__name__
    extra = ""
    if isinstance(msg, Neighbors):
        p = msg.predecessor
        extra = (
            f" pred=n{labels.get(p.id, '?') if p else '-'} succ="
            f"[{_names(msg.successors, labels)}]"
        )
    elif isinstance(msg, Found):
        extra = f" [{_names(msg.successors, labels)}]"
    elif hasattr(msg, "candidate"):
        extra = f" n{labels.get(msg.candidate.id, '?')}"  # type: ignore[attr-defined]
    return f"{name}#{msg.txn}{extra}"


def _names(nodes: tuple[NodeRef, ...], labels: dict[int, int]) -> str:
    return ",".join("n" + str(labels.get(x.id, "?")) for x in nodes)
