"""Abstract overlay messages exchanged by Chord nodes.

These are what the sans-IO `ChordNode` consumes and produces. The wire codec
(`overlay/chord/wire/`, docs/overlay-wire-format.md) maps each of them to a SIP message
(SOSIMPLE, draft-bryan-sipping-p2p) and back; the simulator passes them as objects.

Stability contract: this module is shared with the codec. Fields are only ever *added*,
and only with defaults. All fields are immutable (ints, strs, bools, bytes, tuples, other
frozen dataclasses) so a message can be hashed, compared and passed between nodes
without copying.

Every message carries `src` (the sender, i.e. the node that *this hop* came from), `txn`
(a per-sender request number; a response carries the txn of the request it answers) and
`overlay` (the overlay name; a node drops messages of another overlay).

Requests and their responses:

| request | response(s) | meaning |
| --- | --- | --- |
| Ping | Pong | liveness |
| GetNeighbors | Neighbors | "tell me your predecessor and successor list" (stabilize) |
| Notify | Ack | "I think I am your predecessor" (Zave's notify / rectify) |
| FindSuccessor | Found, Redirect | lookup of `key`: iterative or recursive (see the class) |
| Store | Stored, Error | store records (first copy or replica) |
| Transfer | Stored, Error | hand records over because responsibility moved (join, leave, merge) |
| Fetch | Records | records of one resource |
| Leave | Ack | "I am leaving; here are my neighbours" |
| Learn | Ack | ring unification: "consider this node as a neighbour" (routed towards it) |

`Error` may answer any request (e.g. a malformed or refused one).
"""

from __future__ import annotations

from dataclasses import dataclass

ID_BITS = 128
ID_SPACE = 1 << ID_BITS


@dataclass(frozen=True, slots=True)
class NodeRef:
    """A node: its 128-bit Node-ID and the address its overlay transport listens on."""

    id: int
    host: str
    port: int

    def __repr__(self) -> str:
        return f"NodeRef({self.id:032x}@{self.host}:{self.port})"


@dataclass(frozen=True, slots=True)
class Record:
    """One contact of one AOR, owned (registered and signed) by one node.

    Several records may exist for one AOR: one per (owner, contact). The identity of a
    record is (resource_id, owner, contact); of two copies the higher `sequence` wins.

    `lifetime` is the number of seconds granted at registration and is signed; boxes have
    no common clock (a Pi has no RTC), so no absolute time travels. `remaining` is the
    number of seconds left when the copy was sent; it is NOT signed (it shrinks as the
    copy is handed on) and a receiver clamps it to `lifetime`. A record with
    `lifetime == 0` is a tombstone: the owner removed the binding.

    The signature covers `records.signing_bytes(record)`: resource_id, aor, owner,
    contact, sequence and lifetime. `public_key` is the owner's public key (raw Ed25519,
    32 bytes, in the real overlay; whatever the injected verifier understands in the
    simulator); the owner's Node-ID is a hash of it, which the verifier checks.

    Ownership (`claims.py`): `claim` is the owner's sequence at which its claim on the
    AOR began (a record with `claim == sequence` is a fresh claim); `instance` a hash of
    the phone's `+sip.instance` ("" when it sent none); `verified` says the owner checked
    the phone's digest password. All three are signed.
    """

    resource_id: int
    aor: str
    owner: int
    contact: str
    sequence: int
    lifetime: int
    remaining: int = 0
    signature: bytes = b""
    public_key: bytes = b""
    claim: int = 0
    instance: str = ""
    verified: bool = False

    @property
    def identity(self) -> tuple[int, int, str]:
        return (self.resource_id, self.owner, self.contact)


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    src: NodeRef
    txn: int
    overlay: str = ""


# ---------------------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True, kw_only=True)
class Ping(Message):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class GetNeighbors(Message):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Notify(Message):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class FindSuccessor(Message):
    """Lookup of `key`.

    Iterative (`recursive=False`): the receiver answers Found if it knows the key's
    successor, else Redirect with nodes closer to the key; the origin drives.
    Recursive: the receiver answers Found or forwards a copy (same key and origin,
    hops + 1, its own txn) to a closer node and relays the answer back.
    `hops` counts the nodes that handled the request before this one; `origin` is the
    node that started the lookup (None means `src`).
    """

    key: int
    recursive: bool = False
    hops: int = 0
    origin: NodeRef | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Store(Message):
    """Store or refresh records. `replica=True`: a copy pushed by the responsible node."""

    records: tuple[Record, ...]
    replica: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Transfer(Message):
    """Records handed over because responsibility moved (join, leave, merge)."""

    records: tuple[Record, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Fetch(Message):
    resource_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Leave(Message):
    """Graceful leave: the leaving node tells its successor (who learns `predecessor`)
    and its predecessor (who learns `successors`)."""

    predecessor: NodeRef | None = None
    successors: tuple[NodeRef, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Learn(Message):
    """Ring unification: the receiver routes `candidate` towards its place on the
    receiver's ring; the node that `candidate` falls just after adopts it as successor
    (after checking it is alive) and sends its former successor to `candidate` in turn,
    zipping the two rings together. `hops` bounds the routing."""

    candidate: NodeRef
    hops: int = 0


# ---------------------------------------------------------------------------- responses


@dataclass(frozen=True, slots=True, kw_only=True)
class Pong(Message):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Ack(Message):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Neighbors(Message):
    predecessor: NodeRef | None
    successors: tuple[NodeRef, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Found(Message):
    """`successors[0]` is the successor of `key` (the responsible node), followed by as
    many of its own successors (the replica holders) as the answering node knows."""

    key: int
    successors: tuple[NodeRef, ...]
    hops: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Redirect(Message):
    """Iterative lookup: ask these nodes instead, best (closest preceding `key`) first."""

    key: int
    closer: tuple[NodeRef, ...]
    hops: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Stored(Message):
    accepted: int = 0
    rejected: int = 0
    in_use: int = 0  # of the rejected: the AOR belongs to another owner (claims.py)


@dataclass(frozen=True, slots=True, kw_only=True)
class Records(Message):
    resource_id: int
    records: tuple[Record, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Error(Message):
    code: int = 500
    reason: str = ""


REQUEST_TYPES: tuple[type[Message], ...] = (
    Ping, GetNeighbors, Notify, FindSuccessor, Store, Transfer, Fetch, Leave, Learn,
)
RESPONSE_TYPES: tuple[type[Message], ...] = (
    Pong, Ack, Neighbors, Found, Redirect, Stored, Records, Error,
)
REQUESTS = REQUEST_TYPES  # alias
ALL_TYPES = REQUEST_TYPES + RESPONSE_TYPES


def is_request(message: Message) -> bool:
    return isinstance(message, REQUEST_TYPES)
