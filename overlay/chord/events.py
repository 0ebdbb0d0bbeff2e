"""What a node tells its owner (`ChordNode.next_event()`): joins, lookups, puts and gets
finished or failed, rejected records, lost claims, changed neighbours, the end of a leave."""

from __future__ import annotations

from dataclasses import dataclass

from .messages import NodeRef, Record


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
class ClaimLost:
    """A storing node refused one of our records: the AOR is another owner's (claims.py).
    We no longer publish it; the box drops the phone's binding."""

    resource_id: int
    aor: str


@dataclass(slots=True)
class NeighborsChanged:
    predecessor: NodeRef | None
    successors: tuple[NodeRef, ...]


@dataclass(slots=True)
class Left:
    pass


Event = (
    Joined | JoinFailed | LookupDone | LookupFailed | PutDone | PutFailed | GetDone
    | GetFailed | RecordRejected | ClaimLost | NeighborsChanged | Left
)
