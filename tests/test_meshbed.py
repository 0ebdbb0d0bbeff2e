"""The multi-host test bed (tests/meshbed): namespaces on a bridge, faults, phones across it.

Figures (RTT, loss) are printed: run with `-s` to see them. Timing asserts are loose on
purpose: they show a fault is applied, they are not benchmarks.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest
from meshbed import MeshBed, hub_links, netns_available, nft_available, render_nft
from meshbed.faults import Faults, all_pairs, both_ways
from meshbed.fixtures import make_bed_fixture  # noqa: F401  (fixture make_bed)
from phones.baresip import baresip_binary
from phones.nsexec import ns_socket
from phones.sipp import sipp_binary

NETNS_REASON = netns_available()


def netns_test(fn):
    """Marks a test `netns` and skips it, saying why, where namespaces cannot be built."""
    skip = pytest.mark.skipif(NETNS_REASON is not None, reason=f"meshbed: {NETNS_REASON}")
    return pytest.mark.netns(skip(fn))

needs_nft = pytest.mark.skipif(nft_available() is not None,
                               reason=f"meshbed faults: {nft_available()}")


def root_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def assert_reach(bed: MeshBed, expect: dict[tuple[int, int], bool]) -> None:
    """Pings each pair: a blocked pair gets 0.3 s to answer, an open one 2 s (after a heal the
    sender's ARP entry may be mid-retry: the kernel re-asks once a second)."""
    got = {pair: bed.reachable(*pair, timeout=2.0 if up else 0.3) for pair, up in expect.items()}
    assert got == expect, f"reachability {got}, expected {expect}"


# -- rendering (no root needed) ---------------------------------------------------------------
def test_nft_rendering_names_ports_and_loss_chains():
    faults = Faults(cut=both_ways([(0, 2)]))
    faults.set_loss(10, [(0, 1)])
    faults.set_loss(2.5, [(1, 0)])
    faults.set_loss(100, [(2, 1)])
    text = render_nft(faults, {0: "p0", 1: "p1", 2: "p2"})
    assert text.startswith("table bridge meshbed\ndelete table bridge meshbed\n")
    assert 'elements = { "p0" . "p2", "p2" . "p0" };' in text
    assert "chain loss_1000 { numgen random mod 10000 < 1000 drop; }" in text
    assert "chain loss_250 { numgen random mod 10000 < 250 drop; }" in text
    assert "chain loss_10000 { drop; }" in text
    assert '"p0" . "p1" : jump loss_1000' in text
    empty = render_nft(Faults(), {0: "p0"})
    assert "elements" not in empty and "@cut drop" in empty


def test_hub_links_list_only_the_faulty_links():
    faults = Faults(cut={(1, 0)})
    faults.set_delay(25, 5, all_pairs(2))
    faults.set_loss(3, [(0, 1)])
    assert hub_links(faults) == [[0, 1, 25.0, 5.0, 3.0, False], [1, 0, 25.0, 5.0, 0.0, True]]
    faults.set_delay(0, 0, all_pairs(2))
    assert not faults.delayed()


# -- the bed itself -----------------------------------------------------------------------------
@netns_test
def test_five_hosts_build_and_leave_nothing_behind(tmp_path):
    before = root_links()
    t0 = time.monotonic()
    with MeshBed(5, workdir=tmp_path) as bed:
        built = time.monotonic() - t0
        print(f"\nmeshbed: 5 hosts built in {built * 1000:.0f} ms")
        assert sorted(bed.leftovers()) == sorted([bed.hub, *bed.names])
        assert all(f"mb{os.getpid()}-" in name for name in [bed.hub, *bed.names])
        for i in range(5):
            addrs = bed.exec(i, ["ip", "-o", "-4", "addr", "show"]).stdout
            assert f"inet {bed.addr(i)}/16" in addrs and "inet 127.0.0.1/8" in addrs
            assert bed.addr(i) == f"10.99.0.{10 + i}"
            routes = bed.exec(i, ["ip", "route"]).stdout
            assert "224.0.0.0/4 dev eth0" in routes and "default" not in routes
        ports = bed.exec(0, ["ip", "-n", bed.hub, "-o", "link", "show", "master", "br0"]).stdout
        assert sorted(line.split(":")[1].split("@")[0].strip()
                      for line in ports.splitlines()) == [f"p{i}" for i in range(5)]
        assert root_links() == before, "the bed put interfaces in the root namespace"
        t1 = time.monotonic()
    print(f"meshbed: torn down in {(time.monotonic() - t1) * 1000:.0f} ms")
    assert bed.leftovers() == []
    assert root_links() == before


@netns_test
def test_teardown_runs_when_the_test_fails(tmp_path):
    with pytest.raises(RuntimeError, match="the test failed"):
        with MeshBed(2, workdir=tmp_path) as bed:
            proc = bed.run(1, ["sleep", "60"])
            raise RuntimeError("the test failed")
    assert proc.poll() is not None, "a process started in the bed outlived it"
    assert bed.leftovers() == []


@netns_test
def test_every_host_pings_every_other(make_bed):
    bed = make_bed(5)
    rtts = {}
    for i, j in all_pairs(5):
        r = bed.ping(i, j, count=1)
        assert r.received == 1, f"{i} -> {j}: {r}"
        rtts[(i, j)] = r.rtts_ms[0]
    print(f"\nmeshbed: 20 pairs answer, worst first-ping RTT {max(rtts.values()):.2f} ms")


@netns_test
def test_multicast_reaches_every_host(make_bed):
    bed = make_bed(3)
    listeners = [_mdns_listener(bed, i) for i in (1, 2)]
    try:
        _mdns_send(bed, 0, b"hello")
        assert [_recv(s) for s in listeners] == [b"hello", b"hello"]
    finally:
        for s in listeners:
            s.close()


# -- cuts, partitions, lost carrier ---------------------------------------------------------
@needs_nft
@netns_test
def test_cut_and_heal_with_a_non_transitive_triple(make_bed):
    bed = make_bed(3)
    a, b, c = 0, 1, 2
    bed.cut(a, c)  # A-B up, B-C up, A-C down
    assert_reach(bed, {(a, b): True, (b, c): True, (a, c): False, (c, a): False})
    echo = bed.udp_echo(c)
    udp = bed.udp_probe(a, c, count=20, timeout=0.3, echo=echo)
    assert udp.forward == 0 and udp.received == 0, f"UDP crossed a cut link: {udp}"
    assert bed.udp_probe(b, c, count=20, timeout=0.3, echo=echo).received == 20

    bed.heal(a, c)
    assert_reach(bed, {(a, c): True, (c, a): True, (a, b): True})

    bed.cut(a, b, oneway=True)  # a's frames no longer reach b; b's still reach a
    there = bed.udp_probe(a, b, count=20, timeout=0.3)
    back = bed.udp_probe(b, a, count=20, timeout=0.3)
    assert there.forward == 0, f"a -> b should be cut: {there}"
    assert back.forward == 20 and back.received == 0, f"b -> a up, a -> b cut: {back}"
    bed.heal_all()
    assert_reach(bed, {(a, b): True, (b, a): True})


@needs_nft
@netns_test
def test_partition_blocks_unicast_and_multicast_then_heals(make_bed):
    bed = make_bed(5)
    left, right = [0, 1], [2, 3, 4]
    bed.partition(left, right)
    assert_reach(bed, {(0, 1): True, (2, 4): True, (3, 4): True,
                       (0, 2): False, (1, 4): False, (3, 0): False})
    listeners = {i: _mdns_listener(bed, i) for i in (1, 2)}
    try:
        _mdns_send(bed, 0, b"across?")
        assert _recv(listeners[1]) == b"across?"
        assert _recv(listeners[2], timeout=0.3) is None, "mDNS crossed the partition"
        bed.heal_all()
        assert_reach(bed, {(0, 2): True, (1, 4): True, (3, 0): True})
        _mdns_send(bed, 0, b"healed")
        assert _recv(listeners[2]) == b"healed"
    finally:
        for s in listeners.values():
            s.close()


@netns_test
def test_link_down_from_the_hub_drops_carrier(make_bed):
    bed = make_bed(2)
    bed.link_down(1)
    assert "NO-CARRIER" in _link_state(bed, 1)
    assert not bed.reachable(0, 1, timeout=0.3)
    bed.link_up(1)
    _wait_carrier(bed, 1)
    assert bed.reachable(0, 1, timeout=1.0)


# -- loss and delay ---------------------------------------------------------------------------
@needs_nft
@netns_test
def test_loss_ten_percent_per_direction(make_bed):
    bed = make_bed(2)
    assert bed.reachable(0, 1) and bed.reachable(1, 0)  # ARP settled before loss starts
    bed.loss(10)
    there = bed.udp_probe(0, 1, count=500, interval=0.001, timeout=0.5)
    back = bed.udp_probe(1, 0, count=500, interval=0.001, timeout=0.5)
    print(f"\nmeshbed: loss(10) over 500 UDP packets: 0->1 {there.forward_loss_pct:.1f} %, "
          f"1->0 {back.forward_loss_pct:.1f} % one way; round trip {there.loss_pct:.1f} %")
    for r in (there, back):
        assert 5 <= r.forward_loss_pct <= 20, f"10 % loss measured as {r}"
    bed.loss(100, pairs=[(0, 1)])  # several loss chains at once, one of them a plain drop
    bed.loss(2.5, pairs=[(1, 0)])
    assert bed.udp_probe(0, 1, count=20, timeout=0.3).forward == 0
    bed.loss(0)
    clean = bed.udp_probe(0, 1, count=200, interval=0.001, timeout=0.5)
    assert clean.received == 200, f"loss(0) left loss behind: {clean}"


@netns_test
def test_delay_hub_delays_jitters_drops_and_gives_the_bridge_back(make_bed):
    bed = make_bed(3, seed=1)
    base = bed.ping(0, 1, count=5, interval=0.01)
    bed.delay(50)
    bed.ping(0, 1, count=1, timeout=1.0)  # let ARP cross the slow hub first
    slow = bed.ping(0, 1, count=10, interval=0.05, timeout=1.0)
    udp = bed.udp_probe(0, 1, count=50, interval=0.005, timeout=1.0)
    print(f"\nmeshbed: bridge ping {base}\nmeshbed: delay(50) ping {slow}\n"
          f"meshbed: delay(50) UDP {udp}")
    assert slow.received == 10 and slow.avg_ms > 60, f"delay(50) not applied: {slow}"
    # UDP crossing the hub proves the checksums survive the copy (offloads off)
    assert udp.received >= 45 and min(udp.rtts_ms) > 60, f"UDP through the delay hub: {udp}"

    bed.delay(20, jitter_ms=10)
    jittery = bed.ping(0, 1, count=20, interval=0.02, timeout=1.0)
    print(f"meshbed: delay(20, jitter 10) ping {jittery}")
    assert jittery.received >= 18 and max(jittery.rtts_ms) - min(jittery.rtts_ms) > 5, jittery

    bed.delay(5, loss=10)
    lossy = bed.udp_probe(0, 2, count=300, interval=0.001, timeout=0.5)
    print(f"meshbed: delay(5, loss 10) UDP {lossy}")
    assert 3 <= lossy.forward_loss_pct <= 25, f"hub loss 10 % measured as {lossy}"
    bed.loss(0)

    bed.cut(0, 2)  # cuts and lost carrier still work while the hub copies frames
    assert_reach(bed, {(0, 2): False, (0, 1): True})
    bed.heal(0, 2)
    bed.link_down(1)
    assert not bed.reachable(0, 1, timeout=0.3)
    bed.link_up(1)
    _wait_carrier(bed, 1)
    assert bed.reachable(0, 1, timeout=1.0) and bed.reachable(0, 2, timeout=1.0)
    print(f"meshbed: hub link counters {bed.hub_stats()}")

    bed.delay(0)
    fast = bed.ping(0, 1, count=5, interval=0.01)
    print(f"meshbed: after delay(0) ping {fast}")
    assert fast.received == 5 and fast.avg_ms < 20, f"the bridge did not come back: {fast}"


# -- phones -----------------------------------------------------------------------------------
@pytest.mark.phones
@netns_test
@pytest.mark.skipif(baresip_binary() is None, reason="baresip not installed (baresip-core)")
def test_baresip_phones_in_two_namespaces_call_through_a_node_in_a_third(make_bed):
    bed = make_bed(3)
    node = bed.node(0)  # `meshsip run`, no config, 10.99.0.10:5060
    try:
        alice = bed.baresip(1, "1001", node)
        bob = bed.baresip(2, "1002", node)
        alice.wait_registered(timeout=10)
        bob.wait_registered(timeout=10)
        alice.dial(node.uri("1002"))
        bob.wait_event("CALL_ESTABLISHED", timeout=10)
        alice.wait_event("CALL_ESTABLISHED", timeout=10)
        time.sleep(2.0)
        a, b = alice.rtp_packets(), bob.rtp_packets()
        print(f"\nmeshbed: RTP after 2 s across the bridge: 1001 {a}, 1002 {b}")
        for counts in (a, b):
            assert counts.tx > 50 and counts.rx > 50, f"RTP did not flow: 1001 {a}, 1002 {b}"
        alice.hangup()
        alice.wait_event("CALL_CLOSED", timeout=10)
        bob.wait_event("CALL_CLOSED", timeout=10)
        log = node.log()
        assert f"UDP {bed.addr(1)}:" in log and f"UDP {bed.addr(2)}:" in log, log
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- node output ---\n{node.log()}") from None


@pytest.mark.phones
@netns_test
@pytest.mark.skipif(sipp_binary() is None, reason="sipp not installed (sip-tester)")
def test_sipp_in_a_namespace_registers_and_answers(make_bed):
    bed = make_bed(3)
    node = bed.node(0)
    result = bed.sipp(1, "register", node.target, service="2001")
    assert result.ok, result.logs
    uas = bed.sipp_uas(2, "uas_answer", service="2002", keys={"proxy": node.target})
    result = bed.sipp(2, "register", node.target, service="2002",
                      keys={"contact_port": str(uas.port)})
    assert result.ok, result.logs
    result = bed.sipp(1, "uac_call", node.target, service="2002", keys={"caller": "2001"})
    assert result.ok, result.logs
    done = uas.wait()
    assert done.ok, done.logs


# -- helpers ------------------------------------------------------------------------------------
MDNS = ("224.0.0.251", 5353)


def _mdns_listener(bed: MeshBed, i: int) -> socket.socket:
    s = ns_socket(bed.ns(i), socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("", MDNS[1]))
    mreq = socket.inet_aton(MDNS[0]) + socket.inet_aton(bed.addr(i))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    return s


def _mdns_send(bed: MeshBed, i: int, data: bytes) -> None:
    with ns_socket(bed.ns(i), socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
        s.bind((bed.addr(i), 0))
        s.sendto(data, MDNS)


def _recv(s: socket.socket, timeout: float = 1.0) -> bytes | None:
    s.settimeout(timeout)
    try:
        return s.recv(2048)
    except TimeoutError:
        return None


def _link_state(bed: MeshBed, i: int) -> str:
    return bed.exec(i, ["ip", "-o", "link", "show", "eth0"]).stdout


def _wait_carrier(bed: MeshBed, i: int, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while "NO-CARRIER" in _link_state(bed, i) or "state UP" not in _link_state(bed, i):
        assert time.monotonic() < deadline, f"no carrier on host {i}: {_link_state(bed, i)}"
        time.sleep(0.05)
