"""User records (AOR -> owner node and contact): keys, signatures and the local store.

A record lives at the successor of its key (the first 128 bits of SHA-256 of the AOR)
and is replicated on the next r-1 successors; `ChordNode` does the placement, this module
holds what one node stores.

Signatures: every record is signed by the node that registered it (its owner) and
checked by every node that stores or serves it, and by the node that fetched it. The
signing scheme is injected as a `RecordSigner` so this module has no crypto dependency:
the real node passes an Ed25519 signer built on `overlay/identity.py`; the simulator uses
`KeyedHashKeyring`, a cheap deterministic stand-in (see its docstring).

Freshness, with no clock the nodes share (a Pi has no RTC; see DESIGN "Time"):
- Versions. `sequence` is the owner's counter (`SequenceCounter`), persisted by the
  owner's box so it never goes backwards across restarts or clock jumps; of two copies
  of one record (resource_id, owner, contact) the higher sequence wins. An owner that
  sees a copy of its own record with a higher sequence than it holds (its counter was
  lost) jumps above it and re-stores at once; a node that refuses an owner's copy
  because it holds a newer one (live, removed or expired) sends that one back to the
  owner for this reason.
- Lifetimes. The signature covers the sequence and the lifetime as issued: together
  they are the record's absolute expiry, "`lifetime` seconds after this version was
  issued", in no node's wall clock. `remaining` is not signed and only ever shortens a
  copy's life: a node counts a copy down on its own monotonic clock from the moment it
  first received that version (remaining clamped to lifetime; 0 means the full
  lifetime, as the owner sends it), and a later copy of the same version never extends
  it. Once a copy has expired, the node remembers that version as spent for
  `SPENT_TTL` seconds and refuses (and counts) any copy of it or of an older one: a
  signed record re-stored by another node cannot be given a fresh life.
- What this bounds: a replayed old version wins nowhere while the owner lives (it
  re-stores every lifetime * refresh_fraction with a higher sequence), nor on a node
  that counted it out within `SPENT_TTL`. A node that never held that version (it
  joined later, or restarted) takes a replay at its word for at most `lifetime` seconds;
  without a common clock nothing better is possible short of asking the owner.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from .messages import ID_BITS, Record

TOMBSTONE_TTL = 600  # seconds a removal (lifetime 0) is kept so older copies cannot revive
SPENT_TTL = 3600  # seconds an expired version is remembered, so a replay cannot revive it


def resource_key(aor: str) -> int:
    """The ring key of an AOR: the first 128 bits of SHA-256 of the AOR string."""
    return int.from_bytes(hashlib.sha256(aor.encode("utf-8")).digest()[: ID_BITS // 8], "big")


def signing_bytes(record: Record) -> bytes:
    """The bytes a record's signature covers (everything except remaining/signature/key)."""
    return (
        f"meshsip-record-v2\n{record.resource_id:032x}\n{record.aor}\n{record.owner:032x}\n"
        f"{record.contact}\n{record.sequence}\n{record.lifetime}\n{record.claim}\n"
        f"{record.instance}\n{int(record.verified)}"
    ).encode()


class RecordSigner(Protocol):
    """What a node needs to sign its own records and check everybody else's.

    `verify` must also check that `owner` (a Node-ID) belongs to `public_key` (the
    Node-ID is a hash of the key, or the deployment CA vouches for it): otherwise a node
    could sign records in another node's name with its own key.
    """

    @property
    def public_key(self) -> bytes: ...

    def sign(self, data: bytes) -> bytes: ...

    def verify(self, data: bytes, signature: bytes, owner: int, public_key: bytes) -> bool: ...


def sign_record(record: Record, owner: int, signer: RecordSigner) -> Record:
    rec = replace(record, owner=owner, public_key=signer.public_key, signature=b"")
    return replace(rec, signature=signer.sign(signing_bytes(rec)))


def verify_record(record: Record, signer: RecordSigner) -> bool:
    if not record.signature:
        return False
    try:
        return bool(
            signer.verify(signing_bytes(record), record.signature, record.owner, record.public_key)
        )
    except Exception:
        return False


class SequenceCounter:
    """An owner's record sequence numbers: they only grow, across restarts too.

    `reserve(bound)` is called before any number above the last bound is handed out; the
    box persists the bound and starts its next run above it (`overlay.service`). Bounds
    go up in blocks of `block`, so the file is written once per block, not once per
    registration (SD cards wear out). The simulator uses it unpersisted.
    """

    def __init__(self, start: int = 0, block: int = 0,
                 reserve: Callable[[int], None] | None = None) -> None:
        self.value = start
        self._bound = start
        self._block = block
        self._reserve = reserve

    def next(self, at_least: int = 0) -> int:
        self.value = max(self.value + 1, at_least)
        if self._reserve is not None and self.value > self._bound:
            self._bound = self.value + self._block
            self._reserve(self._bound)
        return self.value

    def witness(self, sequence: int) -> None:
        """A version of ours issued before (a previous run): never issue it again."""
        self.value = max(self.value, sequence)


class KeyedHashKeyring:
    """SIMULATION ONLY: a deterministic keyed-hash (HMAC-SHA256) stand-in for Ed25519.

    Every simulated node gets a secret derived from the keyring's seed and its Node-ID;
    its "public key" is a hash of that secret. Verification looks the secret up in the
    keyring (a simulated PKI that only the simulator holds). It is ~50x cheaper than
    Ed25519, which matters when thousands of simulated nodes re-replicate records, and it
    has the property the tests need: a record changed after signing, or signed by a node
    other than the one it names as owner, does not verify.
    """

    def __init__(self, seed: int | str = 0) -> None:
        self._seed = str(seed).encode()
        self._by_public: dict[bytes, tuple[int, bytes]] = {}

    def signer(self, node_id: int) -> KeyedHashSigner:
        secret = hashlib.sha256(self._seed + b"|" + node_id.to_bytes(16, "big")).digest()
        public = hashlib.sha256(b"pub" + secret).digest()
        self._by_public[public] = (node_id, secret)
        return KeyedHashSigner(self, node_id, secret, public)

    def check(self, data: bytes, signature: bytes, owner: int, public_key: bytes) -> bool:
        entry = self._by_public.get(public_key)
        if entry is None or entry[0] != owner:
            return False
        expected = hmac.new(entry[1], data, hashlib.sha256).digest()
        return hmac.compare_digest(expected, signature)


class KeyedHashSigner:
    """One simulated node's signer (see `KeyedHashKeyring`)."""

    def __init__(self, keyring: KeyedHashKeyring, node_id: int, secret: bytes, public: bytes):
        self._keyring = keyring
        self.node_id = node_id
        self._secret = secret
        self._public = public

    @property
    def public_key(self) -> bytes:
        return self._public

    def sign(self, data: bytes) -> bytes:
        return hmac.new(self._secret, data, hashlib.sha256).digest()

    def verify(self, data: bytes, signature: bytes, owner: int, public_key: bytes) -> bool:
        return self._keyring.check(data, signature, owner, public_key)


@dataclass(slots=True)
class StoredRecord:
    record: Record
    expires: float  # local time at which the copy expires (tombstones: when it is dropped)
    touched: float  # last time a copy arrived (from the owner, the primary or a transfer)
    confirmed: bool = False  # a primary pushed it to us (or we checked where it belongs)
    drop_at: float = math.inf  # handed to its primary: drop then unless pushed to us again


class RecordStore:
    """The records one node holds, as primary or replica. No verification here: the node
    verifies before calling `put`."""

    def __init__(self) -> None:
        self._records: dict[tuple[int, int, str], StoredRecord] = {}
        self._by_resource: dict[int, dict[tuple[int, int, str], None]] = {}
        self._per_owner: dict[int, int] = {}  # copies held, by owner (claims.py caps them)
        # expired versions (see "Freshness"): identity -> (the record, when to forget it)
        self._spent: dict[tuple[int, int, str], tuple[Record, float]] = {}

    def __len__(self) -> int:
        return len(self._records)

    def count_of(self, owner: int) -> int:
        return self._per_owner.get(owner, 0)

    def put(self, record: Record, now: float) -> bool:
        """Store or refresh a verified copy. True when it changed what this node holds."""
        ident = record.identity
        if record.lifetime > 0:
            left = min(max(record.remaining, 0), record.lifetime) if record.remaining else (
                record.lifetime
            )
        else:
            left = min(max(record.remaining, 0), TOMBSTONE_TTL) if record.remaining else (
                TOMBSTONE_TTL
            )
        if self.spent(ident, record.sequence, now) is not None:
            return False
        old = self._records.get(ident)
        if old is not None:
            if record.sequence < old.record.sequence:
                return False
            if record.sequence == old.record.sequence:
                # never extended: the copy counts down from when we first got this version
                old.touched = now
                return False
        if left <= 0:
            return False
        self._spent.pop(ident, None)
        expires = now + left
        if old is None:
            self._per_owner[record.owner] = self._per_owner.get(record.owner, 0) + 1
        self._records[ident] = StoredRecord(record, expires, now)
        self._by_resource.setdefault(record.resource_id, {})[ident] = None
        return True

    def get(self, resource_id: int, now: float, tombstones: bool = False) -> list[Record]:
        out = []
        for ident in self._by_resource.get(resource_id, ()):
            st = self._records[ident]
            if st.expires <= now:
                continue
            if st.record.lifetime == 0 and not tombstones:
                continue
            out.append(self.copy_for_sending(st, now))
        return out

    def stored(self, ident: tuple[int, int, str]) -> StoredRecord | None:
        return self._records.get(ident)

    def spent(self, ident: tuple[int, int, str], sequence: int, now: float) -> Record | None:
        """The expired version that makes a copy with `sequence` stale, if we remember one."""
        st = self._records.get(ident)
        if st is not None and st.expires <= now and sequence <= st.record.sequence:
            return st.record  # expired, not swept yet
        entry = self._spent.get(ident)
        if entry is not None and sequence <= entry[0].sequence:
            return entry[0]
        return None

    @staticmethod
    def copy_for_sending(st: StoredRecord, now: float) -> Record:
        remaining = max(1, int(st.expires - now))
        if st.record.remaining == remaining:
            return st.record
        return replace(st.record, remaining=remaining)

    def all(self) -> list[StoredRecord]:
        return list(self._records.values())

    def remove(self, ident: tuple[int, int, str]) -> None:
        st = self._records.pop(ident, None)
        if st is not None:
            left = self._per_owner.pop(st.record.owner) - 1
            if left:
                self._per_owner[st.record.owner] = left
            idents = self._by_resource.get(st.record.resource_id)
            if idents is not None:
                idents.pop(ident, None)
                if not idents:
                    del self._by_resource[st.record.resource_id]

    def expire(self, now: float) -> int:
        dead = [st for st in self._records.values() if st.expires <= now]
        for st in dead:
            self.remove(st.record.identity)
            self._spent[st.record.identity] = (st.record, now + SPENT_TTL)
        for ident in [i for i, (_, until) in self._spent.items() if until <= now]:
            del self._spent[ident]
        return len(dead)
