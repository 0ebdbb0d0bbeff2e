"""Cold-start figures: boxes powered on together (prints; never asserts).

    .venv/bin/python bench/coldstart_figures.py [--seeds 1000] [--rounds 20]

1. The simulator (no root needed): N nodes start at one virtual instant, discovery hands
   each the others in random order after 0-1.5 s, with and without 10 % message loss.
   Virtual seconds from power-on to one correct ring (the invariants and the first r
   successors right) and to complete one-hop lists, median and p99, per N.
2. The namespace test bed (root): five boxes with no config started together, `--rounds`
   times (every other time fresh, else rebooted with their data): seconds from power-on
   to one ring and to the end of the first call from box 1 to a phone on box 5.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from test_coldstart_bed import percentile  # noqa: E402

from overlay.sim import scenarios  # noqa: E402


def _runs(args: tuple[int, float, range]) -> list[tuple[float, float]]:
    nodes, loss, seeds = args
    out = []
    for seed in seeds:
        res = scenarios.run(seed, scenarios.coldstart(seed, nodes), loss=loss)
        ring = res.extra["ring_at"][0] if res.extra["ring_at"] else float("inf")
        full = res.extra["converged_at"][0] if res.extra["converged_at"] else float("inf")
        out.append((ring, full))
    return out


def simulator(seeds: int) -> None:
    print("simulator: virtual seconds from power-on (median / p99 / max)")
    print(f"{'N':>3} {'loss':>5} {'seeds':>6}  {'one ring':>22}  {'full lists':>22}")
    workers = max(1, min(2, os.cpu_count() or 1))
    with ProcessPoolExecutor(workers) as pool:
        for nodes in (2, 3, 4, 5, 6, 7, 8, 32):
            count = seeds if nodes <= 8 else max(10, seeds // 10)
            for loss in (0.0, 0.1):
                chunks = [(nodes, loss, range(i, count, workers)) for i in range(workers)]
                runs = [r for part in pool.map(_runs, chunks) for r in part]
                cols = []
                for k in (0, 1):
                    v = [r[k] for r in runs]
                    p99 = percentile(v, 0.99)
                    cols.append(f"{statistics.median(v):6.2f} {p99:6.2f} {max(v):6.2f}")
                print(f"{nodes:>3} {loss:>5.0%} {count:>6}  {cols[0]:>22}  {cols[1]:>22}",
                      flush=True)


def test_bed(rounds: int) -> None:
    from meshbed import MeshBed, netns_available
    from test_coldstart_bed import BOXES, cold_starts, summary

    reason = netns_available()
    if reason is not None:
        print(f"test bed: n/a ({reason})")
        return
    with tempfile.TemporaryDirectory(prefix="coldstart-") as tmp, \
            MeshBed(BOXES, workdir=Path(tmp) / "bed") as bed:
        results = cold_starts(bed, rounds, Path(tmp))
    print(f"test bed, {rounds} cold starts of {BOXES} boxes (seconds from power-on):")
    print(f"  one ring:                {summary([r for r, _ in results])}")
    print(f"  first call across done:  {summary([c for _, c in results])}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=200, help="seeds per N (N=32: a tenth)")
    parser.add_argument("--rounds", type=int, default=20, help="test-bed cold starts")
    args = parser.parse_args(argv)
    simulator(args.seeds)
    if os.geteuid() == 0:
        test_bed(args.rounds)
    else:
        print("test bed: n/a (needs root for network namespaces)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
