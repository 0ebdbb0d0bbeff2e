"""Liveness: which nodes we believe dead, which we route around, whom we heard lately.

- suspects: a node declared dead (it failed `attempts` tries, or it left) is not taken
  back from other nodes' lists for `suspect_ttl`; a suspect that a neighbour still lists
  is probed once (it may only have lost our messages), and any message from it clears
  the suspicion;
- avoided: a node that missed a one-try request (a lookup hop, a finger check, a fetch)
  is asked last for `avoid_ttl` (`_missed`, the one path for "did not answer"); when it
  is a neighbour it is pinged, and dropped only once the ping fails too;
- recently heard (the last 32 senders) and peers (nodes of this overlay we are not
  sure share our ring, re-checked with backoff by ring unification).
Every table is bounded: suspects and avoided by `_TABLE_MAX` (expired entries go first),
recent by 32, peers by `peers_max`, probes by the requests in flight.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial

from .messages import Message, NodeRef, Ping

_RECENT_MAX = 32
_TABLE_MAX = 1024  # suspects, avoided: expired entries are purged beyond this, then oldest


class _Peer:
    __slots__ = ("ref", "due", "backoff")

    def __init__(self, ref: NodeRef, due: float, backoff: float) -> None:
        self.ref = ref
        self.due = due
        self.backoff = backoff


def _still(table: dict[int, float], node_id: int, now: float) -> bool:
    """node_id's mark in table (present) has not expired; an expired one is removed."""
    if table[node_id] <= now:
        del table[node_id]
        return False
    return True


def _mark(table: dict[int, float], node_id: int, until: float, now: float) -> None:
    table[node_id] = until
    if len(table) > _TABLE_MAX:
        for k in [k for k, t in table.items() if t <= now]:
            del table[k]
        while len(table) > _TABLE_MAX:
            del table[next(iter(table))]


class Liveness:
    """Suspects, avoided nodes, recently heard nodes, peers to re-check, probes."""

    def _init_liveness(self, now: float) -> None:
        self._suspects: dict[int, float] = {}  # node id -> suspected until
        self._avoid: dict[int, float] = {}  # node id -> routed around until
        self._recent: OrderedDict[int, NodeRef] = OrderedDict()
        self._peers: OrderedDict[int, _Peer] = OrderedDict()
        self._probing: set[int] = set()  # suspects being asked whether they live

    def _heard(self, src: NodeRef) -> None:
        """A message from src proves it alive: clear suspicion, learn it as a finger."""
        self._suspects.pop(src.id, None)
        self._avoid.pop(src.id, None)
        if self.predecessor is not None and src.id == self.predecessor.id:
            self._pred_heard = self._now
        recent = self._recent
        if src.id in recent:
            recent.move_to_end(src.id)
        else:
            recent[src.id] = src
            if len(recent) > _RECENT_MAX:
                recent.popitem(last=False)
        if src.id in self._peers and self._in_tables(src.id):
            del self._peers[src.id]
        self._learn_finger(src)

    def _is_suspect(self, node_id: int) -> bool:
        return node_id in self._suspects and _still(self._suspects, node_id, self._now)

    def is_suspect(self, node_id: int) -> bool:
        """Whether this node currently believes `node_id` dead (for observers such as the
        simulator's invariant checker; the rules use `_is_suspect`, which a test may
        override)."""
        return self._is_suspect(node_id)

    def _avoided(self, node_id: int) -> bool:
        return node_id in self._avoid and _still(self._avoid, node_id, self._now)

    def _declare_dead(self, node: NodeRef, lost: bool = True) -> None:
        """node failed `attempts` tries (or left): drop it from every table."""
        self.stats["dead_declared"] += 1
        self._suspect(node.id)
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

    def exclude(self, node_ids: frozenset[int], now: float) -> int:
        """The owner no longer trusts these nodes (their certificates were revoked; it
        refuses their messages from now on): drop them from every table as if dead,
        without keeping them as peers to re-check, and forget the records they own.
        Returns how many records went."""
        self._touch(now)
        for ref in self.known_nodes() + list(self._recent.values()):
            if ref.id in node_ids:
                self._declare_dead(ref, lost=False)
        for node_id in node_ids & self._peers.keys():
            del self._peers[node_id]
        owned = [st.record.identity for st in self.store.all() if st.record.owner in node_ids]
        for ident in owned:
            self.store.remove(ident)
        return len(owned)

    def _suspect(self, node_id: int) -> None:
        _mark(self._suspects, node_id, self._now + self.config.suspect_ttl, self._now)

    def _missed(self, node: NodeRef, confirm: bool = True) -> None:
        """node did not answer a one-try request (a lookup hop, a finger check, a fetch):
        route around it for a while and drop it as a finger; when it is a neighbour
        (and `confirm`), ping it, and drop it when that fails too (`_check_alive`)."""
        _mark(self._avoid, node.id, self._now + self.config.avoid_ttl, self._now)
        self._drop_finger(node.id)
        if confirm and self._in_tables(node.id):
            self._check_alive(node)

    def _check_alive(self, node: NodeRef) -> None:
        """A one-try request to a neighbour timed out: confirm with a ping before dropping it."""
        self._request(node, Ping, partial(self._alive_checked, node))

    def _alive_checked(self, node: NodeRef, m: Message | None) -> None:
        if m is None:  # any answer (even an error) shows it alive
            self._declare_dead(node)

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

    def _probe(self, x: NodeRef) -> None:
        """A suspect that a neighbour lists as its successor may only have lost our
        messages (a lossy link): ask it once; its answer clears the suspicion
        (`_heard`) and the next stabilize takes it back."""
        if x.id in self._probing:
            return
        self._probing.add(x.id)
        self._request(x, Ping, partial(self._probed, x))

    def _probed(self, x: NodeRef, m: Message | None) -> None:
        self._probing.discard(x.id)
        if m is not None:  # alive after all (`_heard` cleared it): take it back now
            self._stab_calm = 0
            self._periodic("stabilize", self._now)
