"""Boxes powered on together, on the namespace test bed: five boxes with no config are
started at the same moment, twenty times in a row (every other time as fresh boxes with new
keys and nothing remembered, else rebooted with their data directories), and each time they
must form one ring and carry a call from a phone on box 1 to a phone on box 5.

Real nodes, real mDNS, real sipp phones. The test waits for outcomes with generous
deadlines; the times from power-on (to one ring, to the first call across) are figures,
printed here (-s) and by `make bench` (bench/mesh_figures.py), not asserted.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from marks import BED
from meshbed import MeshBed
from meshbed.fixtures import make_bed_fixture  # noqa: F401  (fixture make_bed)
from phones.node import NodeProcess
from test_mesh_calls import call_until_ok, callee, logs, one_ring

from appliance.control import query

pytestmark = BED
BOXES = 5
ROUNDS = 20
PATIENCE = 60.0  # seconds: far beyond what a cold start takes; a hang fails, not a slow one


def ring_formed(nodes: dict[int, NodeProcess]) -> bool:
    """One ring and no box still joining, as the boxes' status shows it (asked over their
    control sockets: quicker than `meshsip status`, so the figure is the ring's time, not
    the asking's)."""
    states = {i: query(n.data_dir / "control.sock", timeout=2.0)["overlay"]
              for i, n in nodes.items()}
    return one_ring(states) and not any(s["joining"] for s in states.values())


def power_on(bed: MeshBed, fresh: Path | None) -> dict[int, NodeProcess]:
    """Start every box at once (fresh: new data directories under that folder)."""
    def start(i: int) -> NodeProcess:
        return bed.node(i, data_dir=None if fresh is None else fresh / f"box{i}")

    with ThreadPoolExecutor(len(bed)) as pool:
        return dict(enumerate(pool.map(start, range(len(bed)))))


def switch_off(bed: MeshBed, nodes: dict[int, NodeProcess]) -> None:
    with ThreadPoolExecutor(len(nodes)) as pool:
        codes = list(pool.map(bed.stop_node, nodes.values()))
    assert codes == [0] * len(nodes), f"exit codes {codes}\n{logs(nodes)}"


def cold_start(bed: MeshBed, extension: str, fresh: Path | None) -> tuple[float, float]:
    """Power the bed's boxes on together; (seconds to one ring, to the end of the first
    call from box 1 to a phone on the last box that succeeds)."""
    t0 = time.monotonic()
    nodes = power_on(bed, fresh)
    try:
        last = len(bed) - 1
        callee(bed, last, nodes[last], extension)  # the phone registers as its box is up
        ring = None
        while ring is None:
            if ring_formed(nodes):
                ring = time.monotonic() - t0
            elif time.monotonic() - t0 > PATIENCE:
                raise AssertionError(f"no ring {PATIENCE}s after power-on\n{logs(nodes)}")
            else:
                time.sleep(0.05)
        call, _ = call_until_ok(bed, 0, nodes[0], extension, t0, PATIENCE, nodes)
        limited = {i: query(n.data_dir / "control.sock", timeout=5.0)["overlay"]["counters"]
                   ["rate_limited"] for i, n in nodes.items()}
        assert not any(limited.values()), f"overlay messages rate-limited: {limited}"
        return ring, call
    finally:
        switch_off(bed, nodes)


def cold_starts(bed: MeshBed, rounds: int, workdir: Path) -> list[tuple[float, float]]:
    return [cold_start(bed, f"70{k:02d}", workdir / f"round{k}" if k % 2 == 0 else None)
            for k in range(rounds)]


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank q-quantile (0 < q <= 1)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def summary(times: list[float]) -> str:
    return (f"median {statistics.median(times):.2f} s, p99 {percentile(times, 0.99):.2f} s, "
            f"max {max(times):.2f} s")


def test_twenty_cold_starts_of_five_boxes_each_form_a_ring_and_call(make_bed, tmp_path):
    bed = make_bed(BOXES)
    results = cold_starts(bed, ROUNDS, tmp_path)
    assert len(results) == ROUNDS
    print(f"\n{ROUNDS} cold starts of {BOXES} boxes: one ring {summary([r for r, _ in results])}"
          f"; first call across done {summary([c for _, c in results])}")
