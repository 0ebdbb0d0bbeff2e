"""Deterministic simulator: the real `ChordNode` on a virtual clock and network.

- `core.Simulation`: the nodes (create, build a known ring, crash, leave, partition,
  heal, discovery), put together from
  - `network.EventLoop`: event heap (virtual time), virtual network (per-link delay,
    jitter, loss, partitions), pumping the nodes' output;
  - `checking.Checking`: the invariant checker after every state-changing step,
    relaxed and strict checking, convergence;
  - `operations.Operations`: lookups/puts/gets, record checks, the summary;
- `invariants`: Zave's ring invariants (`check_ring`) and the ideal state (`converged`);
- `scenarios`: replayable action lists (grow, churn, fail, partition, merge), `run`,
  `shrink` (delta debugging of a failing seed) and `format_failure`;
- `cli.main(argv)`: `meshsip sim ... --json`.

The simulator drives nodes through their public API only.
"""
