"""Boxes find each other and phones call across the mesh: real nodes in network namespaces
(tests/meshbed), real mDNS between them, real baresip and sipp phones.

Every node here runs with discovery on and no seeds: the boxes find each other by mDNS
alone. Ring state is read the way an operator would, `meshsip status --json` inside the
box's namespace. Timings are printed (run with -s); the limits asserted are the ones the
issue promises (ring in 10 s, rejoin 5 s after the link, heal in 15 s).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from marks import BED, NEEDS_BARESIP
from meshbed import MeshBed, nft_available
from meshbed.fixtures import make_bed_fixture  # noqa: F401  (fixture make_bed)
from phones.node import NodeProcess
from phones.sipp import SippResult, SippUas

from overlay.chord.node import ChordConfig
from overlay.chord.records import resource_key

REPO = Path(__file__).resolve().parent.parent
pytestmark = BED
needs_baresip = NEEDS_BARESIP
needs_nft = pytest.mark.skipif(nft_available() is not None, reason=f"{nft_available()}")

# Short SIP timers: the bed's links are fast (except where a test adds delay).
FAST = "[sip]\nt1_ms = 200\n"
STABILIZE = ChordConfig().stabilize_max  # the longest a calm ring waits between rounds
UAS_SECONDS = 120  # a sipp callee's whole life (it is stopped at teardown anyway)


# -- reading the boxes ------------------------------------------------------------------------
def status(bed: MeshBed, i: int, node: NodeProcess) -> dict[str, Any]:
    """`meshsip status --json` of the node in host i, asked from inside its namespace
    (a generous deadline: a busy machine starts Python slowly)."""
    out = bed.exec(i, [sys.executable, "-m", "appliance.cli", "status", "--json",
                       "--data-dir", str(node.data_dir)], cwd=REPO, timeout=60)
    assert out.returncode == 0, f"status of host {i}: {out.stderr}"
    return json.loads(out.stdout)


def overlays(bed: MeshBed, nodes: dict[int, NodeProcess]) -> dict[int, dict[str, Any]]:
    """The "overlay" part of every node's status, asked in parallel."""
    with ThreadPoolExecutor(len(nodes)) as pool:
        futures = {i: pool.submit(status, bed, i, n) for i, n in nodes.items()}
        return {i: f.result()["overlay"] for i, f in futures.items()}


def one_ring(states: dict[int, dict[str, Any]]) -> bool:
    """Following first successors from any of these nodes visits each of them exactly once,
    and none of them lists a node outside the group."""
    by_addr = {s["address"]: s for s in states.values()}
    if len(by_addr) != len(states):
        return False
    start = next(iter(by_addr))
    seen, here = [], start
    for _ in range(len(states)):
        succs = by_addr[here]["successors"]
        if not succs:
            return False
        here = succs[0].split("@", 1)[1]
        if here not in by_addr:
            return False
        seen.append(here)
    if here != start or len(set(seen)) != len(states):
        return False
    listed = {s.split("@", 1)[1] for st in states.values() for s in st["successors"]}
    return listed <= set(by_addr)


def ring_order(states: dict[int, dict[str, Any]]) -> list[int]:
    """Hosts sorted by Node-ID: the ring's order."""
    return sorted(states, key=lambda i: int(states[i]["node_id"], 16))


def primary_for(extension: str, states: dict[int, dict[str, Any]]) -> int:
    """The host whose node is the successor of the extension's record key."""
    key = resource_key(extension)
    order = ring_order(states)
    for i in order:
        if int(states[i]["node_id"], 16) >= key:
            return i
    return order[0]


def logs(nodes: dict[int, NodeProcess] | list[NodeProcess], tail: int = 4000) -> str:
    items = nodes.items() if isinstance(nodes, dict) else enumerate(nodes)
    return "\n".join(f"--- node {n.target} ---\n{n.log()[-tail:]}" for _, n in items)


def wait_for(what: str, check: Callable[[], bool], nodes: dict[int, NodeProcess],
             timeout: float, poll: float = 0.1) -> float:
    """Seconds until check() holds; fails with the nodes' logs after timeout."""
    t0 = time.monotonic()
    while True:
        if check():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{what}: not within {timeout}s\n{logs(nodes)}")
        time.sleep(poll)


def wait_ring(bed: MeshBed, nodes: dict[int, NodeProcess], timeout: float) -> float:
    return wait_for(f"one ring of hosts {sorted(nodes)}",
                    lambda: one_ring(overlays(bed, nodes)), nodes, timeout)


# -- phones -----------------------------------------------------------------------------------
def callee(bed: MeshBed, i: int, node: NodeProcess, extension: str,
           calls: int = 1) -> SippUas:
    """A sipp phone in host i that registers `extension` at `node` and answers `calls` calls
    (checking that each BYE comes through that node)."""
    uas = bed.sipp_uas(i, "uas_answer", service=extension, calls=calls,
                       timeout=UAS_SECONDS, keys={"proxy": node.target})
    done = bed.sipp(i, "register", node.target, service=extension,
                    keys={"contact_port": str(uas.port)})
    assert done.ok, done.logs
    return uas


def call(bed: MeshBed, i: int, node: NodeProcess, extension: str, scenario: str = "uac_call",
         timeout: float = 20.0) -> tuple[SippResult, float]:
    """A sipp call from host i through `node` to `extension`; (result, seconds it took)."""
    t0 = time.monotonic()
    result = bed.sipp(i, scenario, node.target, service=extension,
                      keys={"caller": f"caller{i}"}, timeout=timeout)
    return result, time.monotonic() - t0


def assert_call(bed: MeshBed, i: int, node: NodeProcess, extension: str,
                nodes: dict[int, NodeProcess], **kw: Any) -> float:
    result, took = call(bed, i, node, extension, **kw)
    assert result.ok, f"call host {i} -> {extension} failed\n{result.logs}\n{logs(nodes)}"
    return took


def call_until_ok(bed: MeshBed, i: int, node: NodeProcess, extension: str, since: float,
                  deadline: float, nodes: dict[int, NodeProcess]) -> tuple[float, int]:
    """Calls again (as a person would) until one call succeeds; (seconds from `since` to the
    end of that call, calls made). Fails with the last call's logs after `deadline` s."""
    tries = 0
    while True:
        tries += 1
        result, _ = call(bed, i, node, extension)
        if result.ok:
            return time.monotonic() - since, tries
        if time.monotonic() - since > deadline:
            raise AssertionError(f"no call host {i} -> {extension} succeeded within {deadline}s "
                                 f"({tries} tries)\n{result.logs}\n{logs(nodes)}")
        time.sleep(0.5)


def start_nodes(bed: MeshBed, hosts: range | list[int], *args: str,
                config: str | None = None) -> dict[int, NodeProcess]:
    return {i: bed.node(i, *args, config=config) for i in hosts}


# -- the tests --------------------------------------------------------------------------------
@needs_baresip
def test_five_boxes_with_no_config_form_a_ring_and_phones_talk_across_it(make_bed):
    bed = make_bed(5)
    t0 = time.monotonic()
    nodes = start_nodes(bed, range(5))  # no config file, no flags: discovery finds them
    took = wait_ring(bed, nodes, timeout=60.0)  # a deadline; the time is a figure (bench/)
    print(f"\nfive boxes on one ring {time.monotonic() - t0:.1f}s after the first started "
          f"({took:.1f}s after the last)")
    try:
        alice = bed.baresip(0, "1001", nodes[0])
        bob = bed.baresip(4, "1005", nodes[4])
        alice.wait_registered(timeout=10)
        bob.wait_registered(timeout=10)
        t1 = time.monotonic()
        alice.dial(nodes[0].uri("1005"))  # to box 1; only box 5 knows 1005
        bob.wait_event("CALL_ESTABLISHED", timeout=10)
        alice.wait_event("CALL_ESTABLISHED", timeout=10)
        print(f"call 1001 (box 1) -> 1005 (box 5) established in {time.monotonic() - t1:.2f}s")
        time.sleep(2.0)
        a, b = alice.rtp_packets(), bob.rtp_packets()
        print(f"RTP after 2 s: 1001 {a}, 1005 {b}")
        for counts in (a, b):
            assert counts.tx > 50 and counts.rx > 50, f"RTP did not flow: 1001 {a}, 1005 {b}"
        alice.hangup()
        alice.wait_event("CALL_CLOSED", timeout=10)
        bob.wait_event("CALL_CLOSED", timeout=10)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{logs(nodes)}") from None
    assert "call 1001 -> 1005 via box" in nodes[0].log()
    assert "call 1001 -> 1005 (1 contact)" in nodes[4].log()


def test_a_box_started_before_its_link_joins_when_the_link_comes_up(make_bed):
    bed = make_bed(5)
    nodes = start_nodes(bed, range(4), config=FAST)
    bed.link_down(4)
    # Bound to 0.0.0.0: a box that boots before its cable has no address to bind to.
    nodes[4] = bed.node(4, "--bind", "0.0.0.0", config=FAST)
    wait_ring(bed, {i: nodes[i] for i in range(4)}, timeout=60.0)
    time.sleep(1.0)
    late = overlays(bed, {4: nodes[4]})[4]
    assert late["successors"] == [], f"host 4 has no link, yet: {late}"
    bed.link_up(4)
    took = wait_ring(bed, nodes, timeout=60.0)
    print(f"\nthe late box was on the ring {took:.1f}s after its link came up")
    assert overlays(bed, {4: nodes[4]})[4]["address"] == f"{bed.addr(4)}:5060"


def test_calls_survive_the_death_of_the_box_that_stores_the_record(make_bed):
    bed = make_bed(5)
    nodes = start_nodes(bed, range(5), config=FAST)
    wait_ring(bed, nodes, timeout=60.0)
    states = overlays(bed, nodes)
    phone_host = 1
    # An extension whose record lives on a box other than the phone's own.
    extension = next(e for e in (f"{3000 + k}" for k in range(100))
                     if primary_for(e, states) != phone_host)
    holder = primary_for(extension, states)
    caller = next(i for i in range(5) if i not in (phone_host, holder))
    uas = callee(bed, phone_host, nodes[phone_host], extension, calls=2)
    wait_for("the record stored with its replicas", lambda: sum(
        s["records_stored"] for s in overlays(bed, nodes).values()) >= 3, nodes, 10.0)
    assert overlays(bed, {holder: nodes[holder]})[holder]["records_stored"] > 0
    bed.kill_node(nodes[holder])
    alive = {i: n for i, n in nodes.items() if i != holder}
    took = assert_call(bed, caller, nodes[caller], extension, alive)
    print(f"\nhost {holder} (primary for {extension}) killed; call from host {caller} to the "
          f"phone on host {phone_host} completed in {took:.2f}s (talk 0.5 s included)")
    wait_ring(bed, alive, timeout=STABILIZE * 2)
    assert_call(bed, caller, nodes[caller], extension, alive)
    assert uas.wait().ok


def holders_for(extension: str, states: dict[int, dict[str, Any]], r: int = 3) -> list[int]:
    """The hosts that store the extension's record: its primary and the next r-1."""
    order = ring_order(states)
    first = order.index(primary_for(extension, states))
    return [order[(first + k) % len(order)] for k in range(min(r, len(order)))]


def stored_away(states: dict[int, dict[str, Any]], away: list[int], prefix: str) -> str:
    """An extension (prefix + digits) with as many of its record's copies on `away` as can be."""
    candidates = [f"{prefix}{k:02d}" for k in range(100)]
    return max(candidates, key=lambda e: sum(h in away for h in holders_for(e, states)))


PARTITION_SECONDS = 20.0  # long enough for the records' first refresh and merge back-off
INSIDE_SECONDS = 60.0  # after a cut, calls inside each side work again (a deadline, not a figure)


@needs_nft
def test_partition_keeps_calls_inside_each_side_and_heals(make_bed):
    bed = make_bed(5)
    nodes = start_nodes(bed, range(5), config=FAST)
    wait_ring(bed, nodes, timeout=60.0)
    a_side, b_side = [0, 1], [2, 3, 4]
    side_a = {i: nodes[i] for i in a_side}
    side_b = {i: nodes[i] for i in b_side}
    states = overlays(bed, nodes)
    # The hard case: each side's phone has its record stored on the other side.
    ext_a, ext_b = stored_away(states, b_side, "41"), stored_away(states, a_side, "44")
    print(f"\n{ext_a} (phone on host 1) stored on hosts {holders_for(ext_a, states)}, "
          f"{ext_b} (phone on host 4) on {holders_for(ext_b, states)}")
    callee(bed, 1, nodes[1], ext_a, calls=10)
    callee(bed, 4, nodes[4], ext_b, calls=10)
    wait_for("records stored", lambda: sum(
        s["records_stored"] for s in overlays(bed, nodes).values()) >= 6, nodes, 10.0)
    bed.partition(a_side, b_side)
    t0 = time.monotonic()
    # Until the nodes on each side see the others gone (a few stabilize rounds), lookups
    # still go to the far side; once they do, the phones' boxes store the records again.
    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(call_until_ok, bed, 0, nodes[0], ext_a, t0, INSIDE_SECONDS, side_a)
        b = pool.submit(call_until_ok, bed, 2, nodes[2], ext_b, t0, INSIDE_SECONDS, side_b)
        (took_a, tries_a), (took_b, tries_b) = a.result(), b.result()
    wait_ring(bed, side_a, timeout=60.0)
    wait_ring(bed, side_b, timeout=60.0)
    print(f"partitioned: calls inside side A work {took_a:.1f}s after the cut ({tries_a} "
          f"tries), inside side B {took_b:.1f}s ({tries_b}); two rings at "
          f"{time.monotonic() - t0:.1f}s")
    # Across the cut: side A may still hold copies of the record naming host 4, which stays
    # silent; the call must fail soon (480), not after Timer B.
    result, took = call(bed, 0, nodes[0], ext_b, scenario="uac_unavailable")
    assert result.ok, f"a call across the cut did not fail cleanly\n{result.logs}\n{logs(side_a)}"
    print(f"a call across the cut failed in {took:.1f}s, as it should")
    time.sleep(max(0.0, PARTITION_SECONDS - (time.monotonic() - t0)))
    took_a = assert_call(bed, 1, nodes[1], ext_a, side_a)
    took_b = assert_call(bed, 3, nodes[3], ext_b, side_b)
    print(f"after {PARTITION_SECONDS:.0f}s apart, calls inside each side: {took_a:.1f}s, "
          f"{took_b:.1f}s")
    bed.heal_all()
    took = wait_ring(bed, nodes, timeout=60.0)
    print(f"healed: one ring again after {took:.1f}s")
    t1 = time.monotonic() - took
    assert_call(bed, 0, nodes[0], ext_b, nodes)
    assert_call(bed, 4, nodes[4], ext_a, nodes)
    healed = time.monotonic() - t1
    print(f"calls across done {healed:.1f}s after the heal")


def test_calls_complete_on_lossy_slow_links(make_bed):
    bed = make_bed(5)
    nodes = start_nodes(bed, range(5), config=FAST)
    wait_ring(bed, nodes, timeout=60.0)
    bed.delay(50, loss=10)  # every directed link: 50 ms, 10 % lost
    callee(bed, 4, nodes[4], "5004", calls=3)
    callee(bed, 1, nodes[1], "5001", calls=3)
    # (Storing the records takes retransmissions too: a call placed before that is a 404.)
    wait_for("both records stored with their replicas", lambda: sum(
        s["records_stored"] for s in overlays(bed, nodes).values()) >= 6, nodes, 15.0)
    times = []
    for _ in range(3):
        for i, extension in ((0, "5004"), (3, "5001")):
            times.append(assert_call(bed, i, nodes[i], extension, nodes, timeout=40,
                                     scenario="uac_call_lossy"))
    print(f"\n10 % loss, 50 ms each way: 6 calls across boxes, each "
          f"{', '.join(f'{t:.1f}' for t in times)} s (talk 0.5 s included); hub {bed.hub_stats()}")


def test_two_overlays_on_one_link_never_mix(make_bed):
    bed = make_bed(6)
    alpha = start_nodes(bed, range(3), "--overlay", "alpha", config=FAST)
    beta = start_nodes(bed, range(3, 6), "--overlay", "beta", config=FAST)
    wait_ring(bed, alpha, timeout=60.0)
    wait_ring(bed, beta, timeout=60.0)
    everyone = alpha | beta
    time.sleep(2.0)  # time for any mixing to show
    states = overlays(bed, everyone)
    assert one_ring({i: states[i] for i in alpha}), states
    assert one_ring({i: states[i] for i in beta}), states
    callee(bed, 5, beta[5], "6005", calls=1)
    callee(bed, 2, alpha[2], "6002", calls=1)
    assert_call(bed, 3, beta[3], "6005", everyone)  # inside beta: works
    assert_call(bed, 0, alpha[0], "6002", everyone)  # inside alpha: works
    result, _ = call(bed, 0, alpha[0], "6005", scenario="uac_unavailable")
    assert result.ok, f"alpha reached beta's phone (or failed oddly)\n{result.logs}"
    codes = [line for line in result.logs.splitlines() if line.startswith("SIP/2.0 4")]
    print(f"\nalpha box calling beta's extension: {codes[:1]}")


@pytest.mark.parametrize("boxes", [2, 5])
def test_a_caller_hanging_up_early_stops_the_callee_ringing_across_boxes(make_bed, boxes):
    """Across boxes every INVITE first gets a 100 from the next box: the caller's CANCEL
    must still go down box by box to the phone, which has only said 100 itself."""
    bed = make_bed(boxes)
    nodes = start_nodes(bed, range(boxes), config=FAST)
    wait_ring(bed, nodes, timeout=60.0)
    far = boxes - 1
    uas = bed.sipp_uas(far, "uas_trying_only", service="7001", timeout=UAS_SECONDS)
    done = bed.sipp(far, "register", nodes[far].target, service="7001",
                    keys={"contact_port": str(uas.port)})
    assert done.ok, done.logs
    wait_for("the record stored", lambda: sum(
        s["records_stored"] for s in overlays(bed, nodes).values()) >= 1, nodes, 10.0)
    result, _ = call(bed, 0, nodes[0], "7001", scenario="uac_cancel_early")
    assert result.ok, f"the caller's side of the CANCEL\n{result.logs}\n{logs(nodes)}"
    callee_side = uas.wait(timeout=30)
    assert callee_side.ok, f"the callee got no CANCEL\n{callee_side.logs}\n{logs(nodes)}"
