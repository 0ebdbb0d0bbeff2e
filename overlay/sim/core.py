"""The simulator: real `ChordNode`s on a virtual clock and a virtual network.

`Simulation` puts together the event loop and network (`network`), the checker
(`checking`) and the operations (`operations`); this module holds the nodes: creating
them (by joins, or from a known ring with `build_ring`), crashes, leaves, partitions,
heals and discovery. All randomness comes from `random.Random` objects seeded from the
run's seed, nothing iterates a hash-ordered set of strings, so a run is the same on
every machine and every PYTHONHASHSEED. The simulator drives the nodes through their
public API only. With `wire=True` every message goes through the real wire codec
(`wire`; `clock_skew` and `duplicate` apply only there).
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from overlay.chord.messages import Message, NodeRef
from overlay.chord.node import MEMBER, ChordConfig, ChordNode
from overlay.chord.records import KeyedHashKeyring

from .checking import Checking
from .invariants import Violation
from .network import EventLoop, estimate_size
from .operations import Operations, SimStats
from .wire import OVERLAY, WireNet

__all__ = ["SimStats", "Simulation", "Violation", "estimate_size", "node_id_for"]


def node_id_for(seed: int, label: int) -> int:
    digest = hashlib.sha256(f"meshsip-sim/{seed}/{label}".encode()).digest()
    return int.from_bytes(digest[:16], "big")


class Simulation(EventLoop, Checking, Operations):
    """A seeded run: see the module docstring."""

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
        wire: bool = False,
        clock_skew: float = 0.0,
        duplicate: float = 0.0,
    ) -> None:
        self.seed = seed
        self.config = config if config is not None else ChordConfig()
        # wire mode (see wire.py): every message through the real codec
        self.wire: WireNet | None = None
        if wire:
            if not self.config.overlay:
                self.config = dataclasses.replace(self.config, overlay=OVERLAY)
            self.wire = WireNet(seed, self.config.overlay, clock_skew, duplicate)
        self.loss = loss
        self.delay = delay
        self.jitter = jitter
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
        self.partitioned = False
        self.trace: deque[str] = deque(maxlen=trace_len)
        self.log: list[str] = []
        self._init_loop()
        self._waiters: dict[tuple[int, int], Callable[[Any], None]] = {}
        self._next_label = 0
        self._label_groups: dict[int, int] = {}
        self._init_checking(check, check_every_step)
        self.discovery_interval = discovery_interval
        if discovery_interval:
            self.at(discovery_interval, self._discover)

    # ------------------------------------------------------------------ nodes

    def ref_of(self, label: int) -> NodeRef:
        nid = self.by_label.get(label)
        if nid is None and self.wire is not None:
            nid = self.wire.identity(label).node_id
        elif nid is None:
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
        if self.wire is not None:
            self.wire.add(label, ref)
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
        refs = [x.ref for x in ring]
        for i, node in enumerate(ring):
            node.restore_ring(ring[i - 1].ref if n > 1 else None, _Clockwise(refs, i))
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


class _Clockwise(Sequence[NodeRef]):
    """The other nodes of a sorted ring clockwise from the one at `start`, without
    copying the ring for each node (build_ring of a large ring)."""

    def __init__(self, ring: list[NodeRef], start: int) -> None:
        self._ring, self._start = ring, start

    def __len__(self) -> int:
        return len(self._ring) - 1

    def __getitem__(self, i):  # noqa: ANN001, ANN204
        ring, n = self._ring, len(self._ring)
        if isinstance(i, slice):
            return [ring[(self._start + 1 + j) % n] for j in range(*i.indices(n - 1))]
        if not -n < i < n - 1:
            raise IndexError(i)
        return ring[(self._start + 1 + i % (n - 1)) % n]
