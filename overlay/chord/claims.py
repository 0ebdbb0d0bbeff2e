"""Ownership of AORs across the ring: which box's record a storing node keeps.

An AOR (a phone's extension) belongs to one owner (box) at a time, mesh-wide. Every node
that stores copies (primary, replica, recipient of a hand-over) applies the same rule
to a verified record `new` of owner Y when it holds live records `old` of another owner
X for the same AOR:

- Y's fresh claim (`new.claim == new.sequence`: the first version of a claim) takes over
  when it proves it is the same phone: the same `instance` (a hash of the phone's
  `+sip.instance`, RFC 5626), or `verified` (Y checked the phone's digest password,
  which holds on every box). X's records go, and X's claim is remembered as lost, so
  X's refreshes are refused from then on (X learns it and drops its binding).
- A copy handed on by another node (not its owner): pushed by a primary (`replica`),
  it prevails (the primary decided); in a hand-over (two claims meeting after a
  partition) the earlier claim prevails: lower (`claim`, owner Node-ID). Never a clock.
- Anything else from Y is refused as "in use": the storing node's incumbent stays.

The loser of a take-over is sent the winning record (a Transfer to the box its contact
names): an owner that sees another owner's record for an AOR it publishes re-stores its
own at once, is refused, and drops the phone's binding (`ClaimLost`), rather than at its
next refresh.

Records whose owner is the sender must name the sender as their contact (when the
config says contacts are box addresses), and the store is bounded: records per message,
per owner and in all (`ChordConfig`). Every refusal is counted in `stats`.
"""

from __future__ import annotations

from collections import OrderedDict

from .messages import NodeRef, Record, Transfer

LOST_MAX = 4096  # lost claims remembered (oldest forgotten first)
LOST_TTL = 3600.0  # seconds a lost claim is remembered (its records live 300 s)


def fresh(rec: Record) -> bool:
    return rec.claim == rec.sequence


def takes_over(new: Record, old: Record) -> bool:
    """`new` is a fresh claim by the same phone as `old` (see the module doc)."""
    return fresh(new) and (new.verified or bool(new.instance and new.instance == old.instance))


def earlier(a: Record, b: Record) -> bool:
    return (a.claim, a.owner) < (b.claim, b.owner)


def owner_ref(rec: Record) -> NodeRef | None:
    """Where the box that owns `rec` listens, from its contact `sip:HOST:PORT`."""
    hostport = rec.contact.removeprefix("sip:").split(";", 1)[0]
    host, _, port = hostport.rpartition(":")
    if "@" in host or not port.isdigit() or not host:
        return None
    return NodeRef(rec.owner, host.strip("[]"), int(port))


def contact_names(contact: str, ref: NodeRef) -> bool:
    """The contact `sip:HOST:PORT` names the node `ref`."""
    host = f"[{ref.host}]" if ":" in ref.host else ref.host
    return contact in (f"sip:{host}:{ref.port}", f"sip:{host}:{ref.port};transport=tcp")


class Claims:
    """`_lost` (resource, owner, claim -> until when) and the admission rule."""

    def _init_claims(self, now: float) -> None:
        self._lost: OrderedDict[tuple[int, int, int], float] = OrderedDict()

    def _admit(self, rec: Record, src: NodeRef, replica: bool) -> str | None:
        """None when `rec` (verified) may be stored, else why not; evicts what it beats."""
        c = self.config
        if rec.owner == src.id and c.contact_is_owner and not contact_names(rec.contact, src):
            self.stats["records_bad_contact"] += 1
            return "contact is not its owner"
        if self._is_lost(rec):
            self.stats["records_in_use"] += 1
            return "in use"
        if rec.lifetime == 0:
            return None  # a removal frees the AOR; it claims nothing
        live = [o for o in self.store.get(rec.resource_id, self._now) if o.owner != rec.owner]
        for old in live:
            if takes_over(rec, old) or (rec.owner != src.id and (replica or earlier(rec, old))):
                continue
            self.stats["records_in_use"] += 1
            return "in use"
        if self.store.stored(rec.identity) is None and not self._room_for(rec):
            self.stats["records_over_cap"] += 1
            return "over cap"
        for old in live:
            self._evict(old, rec)
        return None

    def _room_for(self, rec: Record) -> bool:
        """Under the caps: in all, and per owner but us (the per-owner cap keeps other
        boxes from filling our store; our own records are bounded by our registrar's)."""
        c = self.config
        return len(self.store) < c.max_records and (
            rec.owner == self.id or self.store.count_of(rec.owner) < c.max_records_per_owner)

    def _evict(self, old: Record, by: Record) -> None:
        """`old`'s owner lost the AOR to `by`: drop its copies, refuse its claim from now
        on, and tell it (see the module doc)."""
        for ident in [r.identity for r in self.store.get(old.resource_id, self._now, True)
                      if r.owner == old.owner]:
            self.store.remove(ident)
        key = (old.resource_id, old.owner, old.claim)
        self._lost[key] = self._now + LOST_TTL
        self._lost.move_to_end(key)
        while len(self._lost) > LOST_MAX:
            self._lost.popitem(last=False)
        self.stats["records_taken_over"] += 1
        loser = owner_ref(old) if self.config.contact_is_owner else None
        if loser is not None and loser.id != self.id:
            self._request(loser, Transfer, None, records=(by,))
        elif old.owner == self.id:
            self._recheck_claims(old.resource_id)

    def _recheck_claims(self, resource_id: int) -> None:
        """Another owner's record for an AOR we publish: store ours again now (the
        storing node refuses it if we lost the AOR)."""
        for ident, (rec, _) in list(self._owned.items()):
            if ident[0] == resource_id and rec.lifetime > 0:
                self._own(rec, self._now)  # due now (owned.py's refresh heap)
                self._periodic_by("refresh", self._now)

    def _is_lost(self, rec: Record) -> bool:
        key = (rec.resource_id, rec.owner, rec.claim)
        until = self._lost.get(key)
        if until is None:
            return False
        if until <= self._now:
            del self._lost[key]
            return False
        return True

    def _expire_lost(self) -> None:
        while self._lost:
            key, until = next(iter(self._lost.items()))
            if until > self._now:
                return
            del self._lost[key]
