"""Overlay messages built from fuzzer bytes: the fields of `overlay.chord.messages`.

`Reader` takes values off the front of the input (zeros once it is used up, so every
input is a valid program); `MessageMaker` turns them into structurally valid messages
whose fields range over what the codec can express: Node-IDs near the node's and the
peers', far ones and the extremes, hosts and ports, txns, hops, keys, and records that
are correctly signed by a peer (or carry a bad signature, key or owner).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from overlay.chord import messages as m
from overlay.chord.records import resource_key, signing_bytes
from overlay.identity import NodeIdentity

ID_SPACE = m.ID_SPACE
HOSTS = ("127.0.0.1", "127.0.0.3", "::1", "localhost", "127.0.0.10")
BIG = (0, 1, 2**63, 2**64 - 1)
AORS = ("1001", "1002", "alice", "", "x" * 40, "ü@é", "sip:1003@10.0.0.1")


class Reader:
    """Values read off `data`; once it is used up every read gives zero."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def bytes(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        self.pos += len(chunk)
        return chunk.ljust(n, b"\0")

    def uint(self, nbytes: int) -> int:
        return int.from_bytes(self.bytes(nbytes), "big")

    def below(self, n: int) -> int:
        return self.uint(1 if n <= 256 else 2) % n

    def flag(self) -> bool:
        return self.uint(1) & 1 == 1

    def pick(self, options: Sequence[object]) -> object:
        return options[self.below(len(options))]

    def text(self, limit: int = 24) -> str:
        return self.bytes(self.below(limit + 1)).decode("utf-8", "replace")


class MessageMaker:
    """Messages from one of `peers` to `node` (the node under test), fields from `r`."""

    def __init__(self, node: m.NodeRef, peers: list[tuple[NodeIdentity, m.NodeRef]],
                 overlay: str) -> None:
        self.node = node
        self.peers = peers
        self.overlay = overlay

    def node_id(self, r: Reader) -> int:
        kind = r.below(6)
        if kind == 0:
            return self.node.id
        if kind == 1:
            return self.peers[r.below(len(self.peers))][1].id
        if kind == 2:  # just around the node's id
            return (self.node.id + r.uint(1) - 128) % ID_SPACE
        if kind == 3:
            return r.pick((0, 1, ID_SPACE - 1, ID_SPACE // 2))  # type: ignore[return-value]
        return r.uint(16)

    def ref(self, r: Reader) -> m.NodeRef:
        if r.below(3) == 0:
            return self.peers[r.below(len(self.peers))][1]
        port = r.pick((5060, 5061, 1, 65535)) if r.flag() else r.uint(2)
        return m.NodeRef(self.node_id(r), r.pick(HOSTS), port)  # type: ignore[arg-type]

    def refs(self, r: Reader, most: int = 8) -> tuple[m.NodeRef, ...]:
        return tuple(self.ref(r) for _ in range(r.below(most + 1)))

    def count(self, r: Reader) -> int:
        return r.pick((0, 1, 2, 31, 32, 33, 1 << 32 - 1)) if r.flag() else r.uint(1)  # type: ignore

    def record(self, r: Reader) -> m.Record:
        """A record owned by a peer, signed by it; now and then a bad signature or key."""
        identity, owner_ref = self.peers[r.below(len(self.peers))]
        aor = str(r.pick(AORS)) if r.flag() else r.text(16)
        rid = resource_key(aor) if r.below(4) else self.node_id(r)
        owner = owner_ref.id if r.below(8) else self.node_id(r)
        contact = "sip:1001@127.0.0.1:5060" if r.flag() else r.text()
        sequence = int(r.pick(BIG)) if r.below(4) == 0 else r.uint(2)
        lifetime = int(r.pick((0, 1, 300, 3600, 2**32))) if r.flag() else r.uint(2)
        record = m.Record(rid, aor, owner, contact, sequence, lifetime, remaining=r.uint(2),
                          public_key=identity.public_key_bytes)
        good = identity.sign(signing_bytes(record))
        how = r.below(8)
        if how == 1:
            return replace(record, signature=bytes(64))
        if how == 2:  # signed by its owner, claiming another's key
            return replace(record, signature=good, public_key=self.peers[0][0].public_key_bytes)
        if how == 3:
            return replace(record, signature=good[:10], public_key=b"")
        return replace(record, signature=good)

    def records(self, r: Reader) -> tuple[m.Record, ...]:
        return tuple(self.record(r) for _ in range(r.below(6)))

    def request(self, r: Reader, src: m.NodeRef, txn: int) -> m.Message:
        kind = r.below(len(_REQUESTS))
        return _REQUESTS[kind](self, r, dict(src=src, txn=txn, overlay=self.overlay))

    def response(self, r: Reader, src: m.NodeRef, txn: int) -> m.Message:
        kind = r.below(len(_RESPONSES))
        return _RESPONSES[kind](self, r, dict(src=src, txn=txn, overlay=self.overlay))

    def answer(self, r: Reader, src: m.NodeRef, request: m.Message) -> m.Message:
        """The kind of answer `request` expects (its fields fuzzed), so joins go on."""
        kind = _ANSWERS.get(type(request), 0)
        if isinstance(request, m.FindSuccessor) and r.flag():
            kind = 4  # Redirect
        return _RESPONSES[kind](self, r, dict(src=src, txn=request.txn, overlay=self.overlay))


Maker = Callable[[MessageMaker, Reader, dict], m.Message]
_REQUESTS: list[Maker] = [
    lambda mk, r, base: m.Ping(**base),
    lambda mk, r, base: m.GetNeighbors(**base),
    lambda mk, r, base: m.Notify(**base),
    lambda mk, r, base: m.FindSuccessor(
        **base, key=mk.node_id(r), recursive=r.flag(), hops=r.below(40),
        origin=mk.ref(r) if r.flag() else None),
    lambda mk, r, base: m.Store(**base, records=mk.records(r), replica=r.flag()),
    lambda mk, r, base: m.Transfer(**base, records=mk.records(r)),
    lambda mk, r, base: m.Fetch(**base, resource_id=resource_key(r.pick(AORS))  # type: ignore
                                if r.flag() else mk.node_id(r)),
    lambda mk, r, base: m.Leave(**base, predecessor=mk.ref(r) if r.flag() else None,
                                successors=mk.refs(r)),
    lambda mk, r, base: m.Learn(**base, candidate=mk.ref(r), hops=r.below(40)),
]
_RESPONSES: list[Maker] = [
    lambda mk, r, base: m.Pong(**base),
    lambda mk, r, base: m.Ack(**base),
    lambda mk, r, base: m.Neighbors(**base, predecessor=mk.ref(r) if r.flag() else None,
                                    successors=mk.refs(r)),
    lambda mk, r, base: m.Found(**base, key=mk.node_id(r), successors=mk.refs(r),
                                hops=r.below(40)),
    lambda mk, r, base: m.Redirect(**base, key=mk.node_id(r), closer=mk.refs(r),
                                   hops=r.below(40)),
    lambda mk, r, base: m.Stored(**base, accepted=mk.count(r), rejected=mk.count(r)),
    lambda mk, r, base: m.Records(**base, resource_id=mk.node_id(r), records=mk.records(r)),
    lambda mk, r, base: m.Error(**base, code=r.pick((400, 403, 428, 500, 503)),  # type: ignore
                                reason=r.text(12)),
]
_ANSWERS = {m.Ping: 0, m.Notify: 1, m.Leave: 1, m.Learn: 1, m.GetNeighbors: 2,
            m.FindSuccessor: 3, m.Store: 5, m.Transfer: 5, m.Fetch: 6}
