"""Fuzz target: what reaches a box from its overlay peers (overlay/service.py receive path).

A real `OverlayService` (its real `WireCodec` and `ChordNode`), driven sans-IO: a fake
clock (the service's wall clock and loop time), a timer that fires when the harness moves
the clock, and a send callback that keeps what the box sends. Every input starts a fresh
box, so a finding replays from its input alone. The first byte picks one of two layers:

- even: **raw bytes** from a peer, as they came off the socket, then the same bytes
  parsed and signed again by the peer their DHT-NodeID names (so a mutated message also
  gets past the signature, into the mapping and the node). The codec must accept or
  refuse each, counting it once; the service must not raise.
- odd: a **program** of steps read from the rest: four fuzzing peers (keys of their own,
  certificates, clocks off by up to minutes) send structurally valid, correctly signed
  requests and answers (to what the box asked them) built from fuzzed fields, the clock
  moves (timers fire), the box is told of peers, publishes, withdraws and looks up,
  raw bytes and replays arrive.

After every step the box's invariants must hold (`check_invariants`): successor list
ordered by distance, no duplicate, not itself, within its length; the codec's and the
node's bounded tables within their bounds (set small here so that an input can reach
them); and after the input no table of any part past ANY_TABLE (`check_tables`).
"""

from __future__ import annotations

import contextlib
import hashlib
from types import SimpleNamespace
from unittest import mock

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from overlay import service as service_module
from overlay.chord import messages as m
from overlay.chord.config import ChordConfig
from overlay.chord.records import resource_key
from overlay.chord.ring import dist
from overlay.chord.wire import WireCodec
from overlay.chord.wire.signature import sign
from overlay.chord.wire.values import REASONS as _REASONS
from overlay.chord.wire.values import SIG_HEADER
from overlay.identity import NodeIdentity
from overlay.service import OverlayService, OverlaySettings
from overlay.sip.errors import SipParseError
from overlay.sip.message import parse_message

from .overlay_fields import AORS, MessageMaker, Reader

OVERLAY = "fuzz"
T0 = 1_900_000_000.0  # the fake wall clock's start (Unix seconds)
NODE_ADDR = ("127.0.0.1", 5060)
STEPS = 32  # most steps of one program
TIMER_FIRES = 2000  # timer callbacks for one clock move: more is a hang
CODEC_BOUNDS = dict(replay_capacity=16, remember=8, certificate_cache=2)
CONFIG = dict(peers_max=4, full_mesh=4, max_successors=6, records_per_message=4, overlay=OVERLAY)
ANY_TABLE = 4096  # no table of any part grows past this in one input


def _identity(label: str) -> NodeIdentity:
    seed = hashlib.sha256(f"meshsip-fuzz-{label}".encode()).digest()
    return NodeIdentity(Ed25519PrivateKey.from_private_bytes(seed))


NODE = _identity("node")
PEERS = [_identity(f"peer-{i}") for i in range(4)]
PEER_REFS = [m.NodeRef(p.node_id, f"127.0.0.{10 + i}", 5060) for i, p in enumerate(PEERS)]
NODE_REF = m.NodeRef(NODE.node_id, *NODE_ADDR)


class FakeWakeup:
    """The service's one timer: armed like overlay.wakeup.Wakeup, fired by the harness."""

    def __init__(self) -> None:
        self.when: float | None = None

    def at(self, when: float | None) -> None:
        if when is not None and (self.when is None or when < self.when):
            self.when = when

    def cancel(self) -> None:
        self.when = None


class Peer:
    """A fuzzing peer: its identity, its own codec and how far its clock is off."""

    def __init__(self, identity: NodeIdentity, ref: m.NodeRef) -> None:
        self.identity = identity
        self.ref = ref
        self.codec = WireCodec(identity, OVERLAY)
        self.skew = 0.0
        self.read = 0  # how many of the box's sent messages this peer has looked at
        self.asked: list[m.Message] = []  # the requests among them that were for it
        self.source = ("UDP", ref.host, ref.port)


class Box(OverlayService):
    """The real service, its clock the harness's."""

    mono = 1000.0

    def _now(self) -> float:  # type: ignore[override]
        return self.mono


class Harness:
    def __init__(self) -> None:
        self.wall = T0
        self.sent: list[tuple[bytes, tuple[str, str, int]]] = []
        # what arrived, and whether the codec took it
        self.delivered: list[tuple[bytes, tuple[str, str, int], bool]] = []
        self.nonces = 0
        settings = OverlaySettings(name=OVERLAY, chord=ChordConfig(**CONFIG))
        self.box = Box(NODE, settings, self._send, *NODE_ADDR)
        self.box.codec = WireCodec(NODE, OVERLAY, **CODEC_BOUNDS)
        self.box._wakeup = self.wakeup = FakeWakeup()  # type: ignore[assignment]
        self.peers = [Peer(p, ref) for p, ref in zip(PEERS, PEER_REFS, strict=True)]
        self.maker = MessageMaker(NODE_REF, list(zip(PEERS, PEER_REFS, strict=True)), OVERLAY)

    def clocked(self) -> contextlib.AbstractContextManager[object]:
        """The service's wall clock (`time.time()` in overlay/service.py) is the harness's."""
        clock = SimpleNamespace(time=lambda: self.wall)
        return mock.patch.object(service_module, "time", clock)

    def _send(self, data: bytes, dest: tuple[str, str, int]) -> None:
        if len(self.sent) < 512:
            self.sent.append((data, dest))

    # -- what arrives ----------------------------------------------------------------------
    def receive(self, data: bytes, source: tuple[str, str, int]) -> bool:
        """Hand `data` to the box; the codec must take or refuse it, counting it once."""
        codec = self.box.codec.counters
        before = sum(codec[k] for k in ("accepted", *_REASONS))
        seen = self.box.counters["received"] + self.box.counters["refused"]
        accepted = codec["accepted"]
        self.box.receive(data, source)
        assert sum(codec[k] for k in ("accepted", *_REASONS)) == before + 1, "not counted once"
        assert self.box.counters["received"] + self.box.counters["refused"] == seen + 1
        taken = codec["accepted"] > accepted
        if len(self.delivered) < 256:
            self.delivered.append((data, source, taken))
        return taken

    def send_from(self, peer: Peer, msg: m.Message) -> None:
        try:
            data = peer.codec.encode(msg, NODE_REF, self.wall + peer.skew, nonce=self._nonce())
        except ValueError:
            return  # a field the codec cannot express: nothing goes on the wire
        self.receive(data, peer.source)

    def resigned(self, data: bytes) -> bytes | None:
        """`data` parsed and signed again by the peer whose DHT-NodeID it carries."""
        try:
            sip = parse_message(data)
            sender = self.box.codec.mapping.sender(sip)[0].user or ""
            peer = next((p for p in self.peers if f"{p.ref.id:032x}" == sender.lower()),
                        self.peers[0])
        except (SipParseError, ValueError, IndexError, KeyError, UnicodeError):
            return None
        sip.headers = [h for h in sip.headers if h[0].lower() != SIG_HEADER.lower()]
        sign(sip, peer.identity, int((self.wall + peer.skew) * 1000), self._nonce())
        return sip.encode()

    def _nonce(self) -> bytes:
        self.nonces += 1
        return hashlib.blake2b(self.nonces.to_bytes(8, "big"), digest_size=8).digest()

    def asked(self, peer: Peer) -> list[m.Message]:
        """The requests the box sent to `peer`, as the peer reads them (each read once)."""
        for data, dest in self.sent[peer.read :]:
            if (dest[1], dest[2]) == (peer.ref.host, peer.ref.port):
                got = peer.codec.receive(data, self.wall + peer.skew, peer.ref)
                if got.message is not None and m.is_request(got.message):
                    peer.asked.append(got.message)
        peer.read = len(self.sent)
        return peer.asked

    # -- time ------------------------------------------------------------------------------
    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.box.mono += seconds
        fires = 0
        while self.wakeup.when is not None and self.wakeup.when <= self.box.mono:
            self.wakeup.when = None
            self.box._on_timer()
            fires += 1
            assert fires < TIMER_FIRES, "the timer keeps firing without the clock moving"



# ------------------------------------------------------------------------- the program


def step(h: Harness, r: Reader) -> None:
    """One step of a program, chosen and filled by `r`."""
    op = r.below(10)
    peer = h.peers[r.below(len(h.peers))]
    if op <= 2:  # a request from a peer
        h.send_from(peer, h.maker.request(r, peer.ref, r.uint(8)))
    elif op == 3:  # an answer to what the box asked this peer (or to nothing)
        asked = h.asked(peer)
        how = r.below(4)
        if asked and how < 2:
            h.send_from(peer, h.maker.answer(r, peer.ref, asked[r.below(len(asked))]))
        else:
            txn = asked[r.below(len(asked))].txn if asked and how == 2 else r.uint(8)
            h.send_from(peer, h.maker.response(r, peer.ref, txn))
    elif op == 4:
        h.advance(r.uint(2) / 100)  # up to 655 s
    elif op == 5:
        peer.skew = (r.uint(1) - 128) * r.pick((0.01, 1.0))  # type: ignore[operator]
    elif op == 6:
        if r.flag():
            h.box.add_peer(h.maker.ref(r))
        else:
            h.box.contact(peer.ref.host, peer.ref.port)
    elif op == 7:
        aor, contact = str(r.pick(AORS)), f"sip:{r.text(8)}@127.0.0.1"
        (h.box.publish if r.below(4) else h.box.withdraw)(aor, contact)
    elif op == 8:
        h.box.node.get(resource_key(str(r.pick(AORS))), h.box.mono)
        h.box._pump()
    elif h.delivered and r.flag():  # a replay of what arrived before
        replay(h, h.delivered[r.below(len(h.delivered))])
    else:
        data = r.bytes(r.below(400))
        h.receive(data, peer.source)
        again = h.resigned(data)
        if again is not None:
            h.receive(again, peer.source)


def replay(h: Harness, what: tuple[bytes, tuple[str, str, int], bool]) -> None:
    """Bytes taken once are refused when they come again (while their nonce is kept)."""
    data, source, taken_before = what
    taken = h.receive(data, source)
    if taken_before and h.box.codec.counters["replay_cache_full"] == 0:
        assert not taken, "a replayed message was taken"


def check_invariants(h: Harness) -> None:
    node, codec, c = h.box.node, h.box.codec, h.box.node.config
    succ = node.successors
    ids = [s.id for s in succ]
    assert node.id not in ids, "the node is its own successor"
    assert len(set(ids)) == len(ids), "a successor listed twice"
    dists = [dist(node.id, i) for i in ids]
    assert dists == sorted(dists), "successor list out of ring order"
    assert len(succ) <= max(c.r, c.full_mesh, c.max_successors), "successor list too long"
    assert node.predecessor is None or node.predecessor.id != node.id, "own predecessor"
    assert len(codec.freshness.seen) <= CODEC_BOUNDS["replay_capacity"], "nonce cache"
    assert len(codec.mapping._requests) <= CODEC_BOUNDS["remember"], "requests remembered"
    assert len(codec.certificates._unanswered) <= CODEC_BOUNDS["remember"], "unanswered"
    assert len(node._peers) <= c.peers_max, "peers"
    assert len(h.box._seed_txns) <= 257, "seed pings"


def check_tables(h: Harness) -> None:
    """No table of any part of the box grows past ANY_TABLE (after a whole input)."""
    node, codec = h.box.node, h.box.codec
    for part in (node, codec, codec.mapping, codec.freshness, codec.certificates, h.box):
        for name, value in vars(part).items():
            if isinstance(value, (dict, list, set, tuple)) or hasattr(value, "__len__"):
                assert len(value) <= ANY_TABLE, f"{type(part).__name__}.{name} grew unbounded"


def one_input(data: bytes) -> None:
    h = Harness()
    with h.clocked():
        if not data or data[0] % 2 == 0:
            raw = data[1:]
            h.receive(raw, h.peers[0].source)
            again = h.resigned(raw)
            if again is not None:
                h.receive(again, h.peers[0].source)
            check_invariants(h)
            check_tables(h)
            return
        r = Reader(data[1:])
        for _ in range(STEPS):
            if r.left == 0:
                break
            step(h, r)
            check_invariants(h)
        check_tables(h)
