"""Boxes powered on together (simulator): N lone nodes start at the same virtual instant
and discovery hands each one the others in random order after random delays (0-1.5 s),
with and without 10 % message loss. For every seed, one correct ring (Zave's invariants,
checked after every step, and the first r successors right) within 5 virtual seconds,
and complete one-hop lists after that; no node is left joining."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

import pytest

from overlay.sim import scenarios

DEADLINE = 5.0
# `make coldstart` sweeps the full counts (1,000 seeds for N = 2..8, 100 for 32);
# `make test` a tenth of them, to stay within its time.
SEEDS_SMALL = int(os.environ.get("COLDSTART_SEEDS", "100"))
SEEDS_32 = max(10, SEEDS_SMALL // 10)


def _sweep(args: tuple[int, float, range]) -> list[str]:
    nodes, loss, seeds = args
    failures = []
    for seed in seeds:
        result = scenarios.run(seed, scenarios.coldstart(seed, nodes, deadline=DEADLINE),
                               loss=loss)
        sim = result.extra["sim"]
        stuck = [n for n in sim.live.values() if n.joining]
        ring_at = result.extra["ring_at"]
        if result.failed or not ring_at or ring_at[0] > DEADLINE or stuck:
            failures.append(
                f"N={nodes} loss={loss} seed={seed}: ring at {ring_at}, "
                f"{len(stuck)} still joining, {result.violations[:2]} {result.not_converged[:1]}"
            )
    return failures


def _run_sweep(nodes: int, loss: float, count: int) -> list[str]:
    workers = max(1, min(2, os.cpu_count() or 1))
    chunks = [range(i, count, workers) for i in range(workers)]
    with ProcessPoolExecutor(workers) as pool:
        return [f for part in pool.map(_sweep, [(nodes, loss, c) for c in chunks]) for f in part]


@pytest.mark.parametrize("loss", [0.0, 0.1])
@pytest.mark.parametrize("nodes", range(2, 9))
def test_coldstart_small_rings_every_seed(nodes: int, loss: float) -> None:
    failures = _run_sweep(nodes, loss, SEEDS_SMALL)
    assert not failures, "\n".join(failures[:10])


@pytest.mark.parametrize("loss", [0.0, 0.1])
def test_coldstart_32_nodes_every_seed(loss: float) -> None:
    failures = _run_sweep(32, loss, SEEDS_32)
    assert not failures, "\n".join(failures[:10])


def test_coldstart_scenario_shape() -> None:
    """Every node boots alone and hears of every other exactly once, within the spread."""
    acts = scenarios.coldstart(7, 4)
    boots = [a for a in acts if a.op == "boot"]
    heard = [a.args for a in acts if a.op == "discover"]
    assert len(boots) == 4 and all(a.dt == 0 for a in boots)
    assert sorted(heard) == sorted((i, j) for i in range(4) for j in range(4) if i != j)
    t = sum(a.dt for a in acts if a.op in ("boot", "discover"))
    assert t <= 1.5
