"""The simulator's wire mode: every message through the real wire codec (overlay/sim/wire.py)."""

from __future__ import annotations

from overlay.sim import scenarios as S


def _grow(**options: float) -> S.RunResult:
    return S.run(1, S.grow(1, 8, lookups=200), wire=True, **options)


def test_a_small_ring_grows_through_the_codec_with_certificates_once_per_peer() -> None:
    result = _grow()
    assert not result.failed, (result.violations[:3], result.not_converged[:3])
    assert result.summary["success_rate"] == 1.0 and result.records_checked == 8
    sim = result.extra["sim"]
    wire = result.summary["wire"]
    assert wire["accepted"] == result.summary["messages"]  # every message went through
    assert wire["wire_refused"] == 0 and wire["certificate_needed"] == 0
    # the UDP/TCP size switch: big messages (full successor lists, records) go over TCP
    assert wire["wire_udp"] and wire["wire_tcp"]
    # certificates ride on first contact only: each node sent its certificate to each
    # peer about once (more only while its first messages to a peer were in flight)
    for nid, codec in sim.wire.codecs.items():
        peers = len(sim.wire.peers[nid])
        sent = codec.counters["certificates_sent"]
        assert peers <= sent <= peers + 3, (sim.labels[nid], peers, sent)
        assert codec.counters["certificates_omitted"] > 4 * sent
    # once every pair has met, no certificate travels again
    before = {nid: (c.counters["certificates_sent"], len(sim.wire.peers[nid]))
              for nid, c in sim.wire.codecs.items()}
    for _ in range(100):
        sim.lookup()
    sim.run_for(60.0)
    for nid, codec in sim.wire.codecs.items():
        sent, peers = before[nid]
        new_peers = len(sim.wire.peers[nid]) - peers
        assert codec.counters["certificates_sent"] - sent <= 2 * new_peers
    assert not sim.violations


def test_replayed_and_stale_messages_are_refused_and_the_ring_still_forms() -> None:
    dup = _grow(duplicate=0.1)
    assert not dup.failed
    w = dup.summary["wire"]
    assert w["wire_duplicated"] > 0 and w["replay"] == w["wire_duplicated"]
    skewed = _grow(clock_skew=100.0)  # beyond the 60 s window: 403 Stale Date, then follow
    assert not skewed.failed
    w = skewed.summary["wire"]
    assert w["stale"] > 0 and w["clock_adjusted"] > 0


def test_wire_mode_is_deterministic_and_sizes_are_real() -> None:
    a, b = _grow(duplicate=0.05), _grow(duplicate=0.05)
    assert a.summary == b.summary
    assert a.summary["wire"]["wire_tcp"] > 0
