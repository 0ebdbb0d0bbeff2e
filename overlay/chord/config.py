"""The node's tunables: intervals, timeouts and sizes of ring maintenance, lookups and
records (one dataclass; see node.py for what each rule does with them)."""

from __future__ import annotations

from dataclasses import dataclass


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
    # bounds of what a node stores for others (claims.py): more is refused and counted
    max_records_per_message: int = 64
    max_records_per_owner: int = 4096
    max_records: int = 65536
    contact_is_owner: bool = False  # a record's contact must be its owner's address (boxes)
    jitter: float = 0.1
    overlay: str = ""
