"""Deterministic simulator: the real `ChordNode` on a virtual clock and network.

- `core.Simulation`: event heap (virtual time), virtual network (per-link delay, jitter,
  loss, partitions), node creation/crash/leave, lookups/puts/gets, the invariant checker
  after every state-changing step, convergence and record checks;
- `invariants`: Zave's ring invariants (`check_ring`) and the ideal state (`converged`);
- `scenarios`: replayable action lists (grow, churn, fail, partition, merge), `run`,
  `shrink` (delta debugging of a failing seed) and `format_failure`;
- `cli.main(argv)`: `meshsip sim ... --json`.
"""
