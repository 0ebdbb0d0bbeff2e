"""Overlay figures from the deterministic simulator (prints; never asserts).

    .venv/bin/python bench/overlay_figures.py [--quick]

1. lookup hops (mean, p99) on stable rings of N = 16 ... 4096 nodes;
2. lookup success under churn: N = 1000, one crash (and one join) per stabilisation
   interval, lookups retried along candidates / successor lists;
3. time to merge two rings of 20 and of 200 after their partition heals;
4. maintenance traffic per node (bytes/s) at N = 50 and 1000, message sizes from the
   real SIP wire codec (signed SOSIMPLE) when it is importable, else a ~420 B + 80 B/node
   + 300 B/record estimate (+ 650 B for a certificate). The certificate travels on first
   contact only: a message carries it until the receiver has told the sender (`peer=` in
   any message back) that it holds it, which is modelled per (sender, receiver) pair at
   send time (no loss in this figure, no cache eviction: nodes talk to far fewer peers
   than the codec's cache holds; and as every request is answered within 0.1 s, the
   codec's "silent for 0.4 s after a request without it: send it again" rule never
   fires);
5. simulator wall time per simulated node-hour.

Large rings start from `Simulation.build_ring` (correct successor lists and
predecessors, no fingers) instead of being grown join by join: growing 4096 nodes would
take most of the budget and measures nothing extra (growth is covered by the tests).
Fingers are then built by the nodes themselves before anything is measured.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from overlay.chord.messages import Message, NodeRef, Ping, Pong  # noqa: E402
from overlay.chord.node import ChordConfig  # noqa: E402
from overlay.sim import scenarios as S  # noqa: E402
from overlay.sim.core import Simulation, estimate_size  # noqa: E402

CERT_ESTIMATE = 650  # bytes a DHT-Certificate header adds (when the codec is missing)


class CertModel:
    """Which messages carry the sender's certificate, per (sender, receiver) pair.

    A message carries it unless the receiver has told the sender that it holds it; a
    message says so (`peer=`) when its sender holds the receiver's certificate, which it
    does once it received any message from the receiver. Applied at send time."""

    def __init__(self) -> None:
        self.holds: set[tuple[int, int]] = set()  # (holder, owner of the certificate)
        self.told: set[tuple[int, int]] = set()  # (sender, receiver that holds its cert)
        self.with_cert = 0
        self.without = 0

    def send(self, src: int, dst: int) -> tuple[bool, bool]:
        """(carries the certificate, names the receiver's certificate) for src -> dst."""
        carries = (src, dst) not in self.told
        names = (src, dst) in self.holds
        self.holds.add((dst, src))
        if names:
            self.told.add((dst, src))
        else:
            self.told.discard((dst, src))
        if carries:
            self.with_cert += 1
        else:
            self.without += 1
        return carries, names


class PairSimulation(Simulation):
    """A Simulation whose size_of also knows the sender and receiver of each message."""

    pair: tuple[int, int] = (0, 0)

    def _send(self, src: int, dest: NodeRef, msg: Message) -> None:
        self.pair = (src, dest.id)
        super()._send(src, dest, msg)


def wire_sizer():
    """(size(msg, carries_cert, names_peer_cert) in bytes, source): as the real wire codec
    encodes it (memoised by shape), else estimated."""
    try:
        from overlay.chord.wire import WireCodec
        from overlay.identity import NodeIdentity
    except Exception as exc:  # pragma: no cover - codec not available
        print(f"(wire codec not importable: {exc}; using the size estimate)")

        def guess(msg: Message, carries: bool, names: bool) -> int:
            return estimate_size(msg) + (CERT_ESTIMATE if carries else 0) + (22 if names else 0)

        return guess, "estimated"
    ident, other = NodeIdentity.generate(), NodeIdentity.generate()
    me = NodeRef(ident.node_id, "10.20.30.40", 5060)
    peer = NodeRef(other.node_id, "10.20.30.41", 5060)
    now = 1_700_000_000.0
    # codecs of `me` in each state: knows nothing of peer; holds peer's certificate but
    # was not told peer holds its own; both (the steady state)
    cold, half, warm = (WireCodec(ident, "meshsip") for _ in range(3))
    theirs = WireCodec(other, "meshsip")
    half.decode(theirs.encode(Ping(src=peer, txn=1, overlay="meshsip"), me, now), now)
    warm.decode(theirs.encode(Ping(src=peer, txn=2, overlay="meshsip"), me, now), now)
    theirs.decode(warm.encode(Pong(src=me, txn=2, overlay="meshsip"), peer, now), now)
    warm.decode(theirs.encode(Ping(src=peer, txn=3, overlay="meshsip"), me, now), now)
    assert warm.peer_has_certificate(peer.id) and not half.peer_has_certificate(peer.id)
    memo: dict[tuple, int] = {}

    def size(msg: Message, carries: bool, names: bool) -> int:
        shape = (
            type(msg).__name__,
            len(getattr(msg, "successors", ()) or ()),
            len(getattr(msg, "closer", ()) or ()),
            len(getattr(msg, "records", ()) or ()),
            getattr(msg, "predecessor", None) is not None,
            carries,
            names,
        )
        got = memo.get(shape)
        if got is None:
            codec = half if carries and names else cold if carries else warm
            try:
                m2 = replace(msg, src=me, overlay="meshsip", txn=msg.txn % (1 << 30))
                got = len(codec.encode(m2, peer, now))
            except Exception:
                got = estimate_size(msg) + (CERT_ESTIMATE if carries else 0)
            memo[shape] = got
        return got

    return size, "wire codec"


def pct(values: list[int], q: float) -> float:
    if not values:
        return 0.0
    v = sorted(values)
    return v[min(len(v) - 1, math.ceil(q * len(v)) - 1)]


def hops(ns: list[int]) -> None:
    print("\n== lookup hops on stable rings (iterative; 2000 random keys from random nodes)")
    print(f"{'N':>6} {'mean':>6} {'p99':>4} {'max':>4} {'goal':>10} {'success':>8} "
          f"{'succ.list':>9} {'fingers':>7} {'wall s':>7}")
    for n in ns:
        t0 = time.perf_counter()
        sim = Simulation(seed=n, check=False)
        sim.build_ring(n)
        sim.run_for(40.0)  # fingers: fix-fingers every 2 s plus passive learning
        sim.stats.hops.clear()
        sim.stats.lookups = sim.stats.lookups_ok = sim.stats.lookups_failed = 0
        for i in range(2000):
            sim.at(sim.now + i * 0.005, sim.lookup)
        sim.run_for(15.0)
        st = sim.stats
        node = sim.members()[0]
        goal = "<= 1" if n <= 32 else f"<= {0.5 * math.log2(n):.1f}"
        mean = sum(st.hops) / max(1, len(st.hops))
        print(
            f"{n:>6} {mean:>6.2f} {pct(st.hops, 0.99):>4.0f} {max(st.hops):>4} {goal:>10} "
            f"{st.lookups_ok / max(1, st.lookups):>8.4f} {len(node.successors):>9} "
            f"{len(node._unique_fingers()):>7} {time.perf_counter() - t0:>7.1f}"
        )


def churn(n: int, seconds: float) -> tuple[float, float]:
    print(f"\n== lookups under churn: N = {n}, one crash + one join per second, "
          f"{seconds:.0f} s, 20 lookups/s")
    t0 = time.perf_counter()
    cfg = ChordConfig()
    sim = Simulation(seed=42, config=cfg, check=False)
    sim.build_ring(n)
    sim.run_for(30.0)
    for node in sim.members()[: n // 4]:
        sim.put(node, f"sip:u{sim.labels[node.id]}@meshsip", f"sip:u@{node.ref.host}")
    sim.run_for(10.0)
    st = sim.stats
    st.hops.clear()
    st.lookups = st.lookups_ok = st.lookups_failed = st.lookups_wrong = 0
    st.lookup_timeouts = 0
    rng = random.Random(7)
    start = sim.now
    label = max(sim.labels.values()) + 1
    while sim.now - start < seconds:
        members = sorted(sim.live)
        victim = sim.labels[members[rng.randrange(len(members))]]
        sim.crash(victim)
        sim.add_node(label)
        label += 1
        for i in range(20):
            sim.at(sim.now + i * 0.05, sim.lookup)
        sim.run_for(1.0)
    sim.run_for(10.0)
    done = st.lookups_ok + st.lookups_failed
    ok = st.lookups_ok / max(1, done)
    print(f"lookups {st.lookups} ({st.lookups - done} lost with an origin that crashed): "
          f"succeeded {st.lookups_ok} of {done} ({100 * ok:.2f} %, goal >= 99.9 %), "
          f"failed {st.lookups_failed}; answered with a node that was not (yet) the owner "
          f"{st.lookups_wrong} ({100 * st.lookups_wrong / max(1, done):.2f} %)")
    print(f"hops mean {sum(st.hops) / max(1, len(st.hops)):.2f}, p99 {pct(st.hops, 0.99):.0f}; "
          f"timeouts per lookup {st.lookup_timeouts / max(1, st.lookups):.3f}")
    found, lost, _ = sim.check_records()
    print(f"records of live owners after the churn: {found} found, {lost} lost")
    wall = time.perf_counter() - t0
    node_hours = n * sim.now / 3600.0
    return wall, node_hours


def merge(size: int) -> None:
    t0 = time.perf_counter()
    acts = S.two_rings(size, size)
    res = S.run(size, acts, check=size <= 40)
    conv = res.convergence_times
    took = conv[1] if len(conv) > 1 else float("nan")
    print(f"two rings of {size:>3}: one correct ring {took:6.1f} s after the heal "
          f"(1 s poll); records found "
          f"{res.records_checked - res.records_lost}/{res.records_checked}; lookups after: "
          f"{res.summary['success_rate']:.4f} ok, {res.summary['lookups_wrong']} wrong; "
          f"violations {res.summary['invariant_violations']}; wall "
          f"{time.perf_counter() - t0:.1f} s")


def traffic(n: int, sizer, source: str, seconds: float = 60.0) -> None:
    certs = CertModel()
    by_bytes: dict[str, int] = {}

    def size_of(msg: Message) -> int:
        got = sizer(msg, *certs.send(*sim.pair))
        name = type(msg).__name__
        by_bytes[name] = by_bytes.get(name, 0) + got
        return got

    sim = PairSimulation(seed=n, check=False, size_of=size_of)
    sim.build_ring(n)
    sim.run_for(40.0)
    for node in sim.members():
        sim.put(node, f"sip:u{sim.labels[node.id]}@meshsip", f"sip:u@{node.ref.host}")
    sim.run_for(30.0)
    m0, b0 = sim.stats.messages, sim.stats.bytes
    by0 = dict(sim.stats.by_type)
    c0 = certs.with_cert
    by_bytes.clear()
    sim.run_for(seconds)
    msgs = (sim.stats.messages - m0) / n / seconds
    bps = (sim.stats.bytes - b0) / n / seconds
    top = sorted(
        ((k, v - by0.get(k, 0)) for k, v in sim.stats.by_type.items()), key=lambda kv: -kv[1]
    )[:8]
    mix = ", ".join(
        f"{k} {v / n / seconds:.2f} ({by_bytes.get(k, 0) / n / seconds:.0f} B)" for k, v in top
    )
    sent = sim.stats.messages - m0
    with_cert = certs.with_cert - c0
    print(f"N = {n:>5}: {msgs:5.2f} messages/s and {bps:7.0f} B/s per node ({source} sizes; "
          f"1 record per node; goal < 500 B/s); {bps / max(msgs, 1e-9):.0f} B per message, "
          f"{100 * with_cert / max(1, sent):.1f} % with a certificate")
    print(f"          per node per s, messages (bytes): {mix}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    if args.quick:
        hops([16, 64, 256])
        wall, nh = churn(200, 30.0)
        print("\n== time to merge two rings after a partition heals")
        merge(20)
    else:
        hops([16, 32, 64, 256, 1024, 4096])
        wall, nh = churn(1000, 120.0)
        print("\n== time to merge two rings after a partition heals")
        merge(20)
        merge(200)
    print("\n== maintenance traffic (steady state, no lookups)")
    sizer, source = wire_sizer()
    for n in ([50] if args.quick else [50, 1000]):
        traffic(n, sizer, source)
    print("\n== simulator speed")
    print(f"churn run: {wall:.1f} s wall for {nh:.1f} simulated node-hours = "
          f"{wall / nh:.2f} s per node-hour ({nh * 3600 / wall:.0f} simulated node-seconds "
          "per wall second)")
    print(f"\ntotal bench wall time {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
