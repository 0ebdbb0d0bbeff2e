"""Wire mode of the simulator (`Simulation(..., wire=True)`): every message passes
through the real wire codec, as between boxes.

Each node gets an open-mode (self-signed) `NodeIdentity` whose key is derived from the
run's seed and the node's label (so its Node-ID, and a run, are the same every time)
and a `WireCodec` of its own. A message a node sends is encoded (signed) by its codec
and travels as bytes: over "UDP" when it fits `overlay.service.UDP_LIMIT`, else over
"TCP", which the network does not drop or duplicate. The receiver's codec decodes and
verifies it (`WireCodec.receive`); what the codec itself answers (403 Stale Date, 428
Certificate Needed) or sends again (a request after a 428) travels the same way, and
the node sees only what the codec let through. So certificates on first contact, the
time-stamp window and clock following, the replay cache and the size switch run in
simulation too. `clock_skew` gives each node's wall clock a fixed offset in
[-skew, +skew] seconds; `duplicate` is the probability that a UDP datagram arrives twice.
Records are still signed with the simulator's cheap keyed-hash keyring (the codec
carries record signatures, the node checks them).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from overlay.chord.messages import Message, NodeRef
from overlay.chord.wire import WireCodec
from overlay.identity import NodeIdentity
from overlay.service import UDP_LIMIT

OVERLAY = "meshsip-sim"  # the overlay name in wire mode when the config names none
EPOCH = 1_800_000_000.0  # the wall clock (Unix seconds) at virtual time 0


def identity_for(seed: int, label: int) -> NodeIdentity:
    """The open-mode identity of node `label` in a run with `seed` (deterministic)."""
    secret = hashlib.sha256(f"meshsip-sim-key/{seed}/{label}".encode()).digest()
    return NodeIdentity(Ed25519PrivateKey.from_private_bytes(secret))


@dataclass(slots=True, frozen=True)
class Datagram:
    """Bytes in flight from node `src`; `tcp` when too big for one UDP datagram."""

    src: int
    data: bytes
    tcp: bool


class WireNet:
    """The codecs of a wire-mode run, by node id, and what their traffic looked like."""

    def __init__(self, seed: int, overlay: str, clock_skew: float = 0.0,
                 duplicate: float = 0.0) -> None:
        self.seed = seed
        self.overlay = overlay
        self.clock_skew = clock_skew
        self.duplicate = duplicate
        self.codecs: dict[int, WireCodec] = {}
        self.identities: dict[int, NodeIdentity] = {}  # by label
        self.skew: dict[int, float] = {}  # node id -> its wall clock's offset
        self.by_address: dict[tuple[str, int], int] = {}
        self.address: dict[int, tuple[str, int]] = {}
        self.rng = random.Random(f"wire/{seed}")  # nonces, skews, duplicates
        self.counts = {"udp": 0, "tcp": 0, "unencodable": 0, "refused": 0, "duplicated": 0}
        self.peers: dict[int, set[int]] = {}  # node id -> the nodes it sent to

    def identity(self, label: int) -> NodeIdentity:
        ident = self.identities.get(label)
        if ident is None:
            ident = self.identities[label] = identity_for(self.seed, label)
        return ident

    def add(self, label: int, ref: NodeRef) -> None:
        ident = self.identity(label)
        self.codecs[ref.id] = WireCodec(ident, self.overlay)
        self.by_address[(ref.host, ref.port)] = ref.id
        self.address[ref.id] = (ref.host, ref.port)
        skew = self.clock_skew
        self.skew[ref.id] = self.rng.uniform(-skew, skew) if skew else 0.0

    def wall(self, node_id: int, now: float) -> float:
        return EPOCH + now + self.skew[node_id]

    def encode(self, src: int, dest: NodeRef, msg: Message, now: float) -> Datagram | None:
        """`msg` as node `src`'s codec signs it for `dest` (None: it cannot be encoded)."""
        try:
            data = self.codecs[src].encode(
                msg, dest, self.wall(src, now), nonce=self.rng.getrandbits(64).to_bytes(8, "big"),
            )
        except ValueError:
            self.counts["unencodable"] += 1
            return None
        self.peers.setdefault(src, set()).add(dest.id)
        return self.datagram(src, data)

    def datagram(self, src: int, data: bytes) -> Datagram:
        tcp = len(data) > UDP_LIMIT
        self.counts["tcp" if tcp else "udp"] += 1
        return Datagram(src, data, tcp)

    def receive(self, dest: NodeRef, d: Datagram, now: float,
                ) -> tuple[Message | None, list[tuple[int, Datagram]]]:
        """Node `dest` receives `d`: the message for the node (None: refused or handled by
        the codec) and what the codec sends, as (destination node id, datagram)."""
        source = self.address.get(d.src)
        got = self.codecs[dest.id].receive(d.data, self.wall(dest.id, now), dest, source)
        out = []
        for o in got.send:
            to = d.src if o.back else self.by_address.get(o.to)
            if to is not None:
                out.append((to, self.datagram(dest.id, o.data)))
        if got.refused is not None:
            self.counts["refused"] += 1
        return got.message, out

    def duplicates(self, d: Datagram) -> bool:
        """Whether the network delivers this datagram twice (UDP only)."""
        if d.tcp or not self.duplicate or self.rng.random() >= self.duplicate:
            return False
        self.counts["duplicated"] += 1
        return True

    def totals(self) -> dict[str, int]:
        """The codecs' counters summed over every node, and the traffic counts."""
        out: dict[str, int] = {}
        for codec in self.codecs.values():
            for k, v in codec.counters.items():
                out[k] = out.get(k, 0) + v
        return out | {f"wire_{k}": v for k, v in self.counts.items()}
