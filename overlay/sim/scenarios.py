"""Scenarios as replayable action lists, a runner, and a shrinker.

A scenario is a list of `Action(dt, op, args)`: wait `dt` virtual seconds, then do `op`.
Generators build the list from a seed (which nodes crash, who registers what); the
runner replays it on a fresh `Simulation` with the same seed. Because a run is a pure
function of (seed, actions, parameters), a failure reproduces exactly, and `shrink`
can delete actions (delta debugging) while the run still fails, ending with a short list
and the message trace before the first violation.

ops: add(label) | crash(label) | leave(label) | put(label, aor) | lookups(count, spread)
| partition(labels of group 1) | heal(discover) | loss(p) | converge(limit) |
records() (fetch every live record through the overlay, count the missing) | run().
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from overlay.chord.node import ChordConfig, ChordNode

from .core import Simulation


@dataclass(frozen=True, slots=True)
class Action:
    dt: float
    op: str
    args: tuple = ()

    def __str__(self) -> str:
        args = self.args
        if self.op == "partition":
            args = (f"{len(args[0])} nodes: {sorted(args[0])[:12]}...",)
        return f"+{self.dt:g}s {self.op}{args if args else ''}"


@dataclass
class RunResult:
    summary: dict[str, Any]
    violations: list[str]
    records_lost: int
    records_checked: int
    not_converged: list[str]
    convergence_times: list[float]
    log: list[str]
    trace: list[str]
    wall: float
    first_violation_step: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return bool(self.violations or self.records_lost or self.not_converged)

    def to_json(self) -> dict[str, Any]:
        out = dict(self.summary)
        out["records_lost"] = self.records_lost
        out["records_checked"] = self.records_checked
        out["convergence_seconds"] = [round(t, 2) for t in self.convergence_times]
        out["not_converged"] = self.not_converged[:5]
        out["violation_examples"] = self.violations[:5]
        out["wall_seconds"] = round(self.wall, 3)
        out.update(self.extra)
        return out


# ------------------------------------------------------------------------------ generators


def _grow(n: int, gap: float) -> list[Action]:
    acts = [Action(0.0, "add", (0,))]
    acts += [Action(gap, "add", (i,)) for i in range(1, n)]
    return acts


def _puts(rng: random.Random, labels: list[int], per_node: float) -> list[Action]:
    acts = []
    count = max(1, round(len(labels) * per_node))
    for i in range(count):
        lbl = labels[rng.randrange(len(labels))]
        acts.append(Action(0.01, "put", (lbl, f"sip:phone{i}@meshsip")))
    return acts


def grow(seed: int, nodes: int, lookups: int = 1000, join_gap: float = 0.2,
         records: float = 1.0) -> list[Action]:
    rng = random.Random(f"scenario/{seed}")
    acts = _grow(nodes, join_gap)
    acts.append(Action(1.0, "converge", (120.0,)))
    acts += _puts(rng, list(range(nodes)), records)
    acts.append(Action(5.0, "lookups", (lookups, 10.0)))
    acts.append(Action(12.0, "records", ()))
    return acts


def churn(seed: int, nodes: int, duration: float = 120.0, interval: float = 1.0,
          lookups_per_second: float = 10.0, leave_fraction: float = 0.3,
          join_gap: float = 0.2, records: float = 1.0) -> list[Action]:
    """Grow to `nodes`, then every `interval` one node crashes (or leaves) and one joins."""
    rng = random.Random(f"scenario/{seed}")
    acts = _grow(nodes, join_gap)
    acts.append(Action(1.0, "converge", (120.0,)))
    live = list(range(nodes))
    acts += _puts(rng, live, records)
    acts.append(Action(2.0, "run", ()))
    nxt = nodes
    t = 0.0
    per = max(1, round(lookups_per_second * interval))
    while t < duration:
        victim = live.pop(rng.randrange(len(live)))
        op = "leave" if rng.random() < leave_fraction else "crash"
        acts.append(Action(interval / 2, op, (victim,)))
        acts.append(Action(0.0, "lookups", (per, interval)))
        acts.append(Action(interval / 2, "add", (nxt,)))
        if rng.random() < records:
            acts.append(Action(0.0, "put", (nxt, f"sip:late{nxt}@meshsip")))
        live.append(nxt)
        nxt += 1
        t += interval
    acts.append(Action(1.0, "converge", (120.0,)))
    acts.append(Action(1.0, "lookups", (200, 5.0)))
    acts.append(Action(6.0, "records", ()))
    return acts


def fail(seed: int, nodes: int, fraction: float = 0.2, lookups: int = 500,
         join_gap: float = 0.2, records: float = 1.0, count: int | None = None) -> list[Action]:
    """Grow, store records, then crash `fraction` of the nodes (or `count`) at once."""
    rng = random.Random(f"scenario/{seed}")
    acts = _grow(nodes, join_gap)
    acts.append(Action(1.0, "converge", (120.0,)))
    acts += _puts(rng, list(range(nodes)), records)
    acts.append(Action(5.0, "run", ()))
    k = count if count is not None else max(1, round(nodes * fraction))
    victims = rng.sample(range(nodes), min(k, nodes - 1))
    acts += [Action(0.0, "crash", (v,)) for v in victims]
    acts.append(Action(0.0, "lookups", (lookups, 10.0)))
    acts.append(Action(1.0, "converge", (180.0,)))
    acts.append(Action(1.0, "records", ()))
    return acts


def partition(seed: int, nodes: int, duration: float = 60.0, lookups: int = 500,
              join_gap: float = 0.2, records: float = 1.0, discover: int = 1) -> list[Action]:
    """Grow one ring, split the nodes in two halves for `duration`, heal (with
    `discover` nodes learning of a node on the other side), wait for one ring."""
    rng = random.Random(f"scenario/{seed}")
    acts = _grow(nodes, join_gap)
    acts.append(Action(1.0, "converge", (120.0,)))
    acts += _puts(rng, list(range(nodes)), records)
    acts.append(Action(5.0, "run", ()))
    side = frozenset(rng.sample(range(nodes), nodes // 2))
    acts.append(Action(0.0, "partition", (side,)))
    acts.append(Action(1.0, "lookups", (lookups // 2, duration / 2)))
    acts.append(Action(duration, "heal", (discover,)))
    acts.append(Action(0.0, "converge", (600.0,)))
    acts.append(Action(1.0, "lookups", (lookups // 2, 5.0)))
    acts.append(Action(10.0, "records", ()))
    return acts


def two_rings(seed: int, size: int, records: float = 1.0, discover: int = 1) -> list[Action]:
    """Two rings of `size` nodes grown apart (a partition from the first boot), then
    joined: the case of two groups of boxes powered up out of reach of each other."""
    rng = random.Random(f"scenario/{seed}")
    b = frozenset(range(size, 2 * size))
    acts = [Action(0.0, "partition", (b,))]
    acts.append(Action(0.0, "add", (0,)))
    acts.append(Action(0.0, "add", (size,)))
    for i in range(1, size):
        acts.append(Action(0.2, "add", (i,)))
        acts.append(Action(0.0, "add", (size + i,)))
    acts.append(Action(1.0, "converge_groups", (120.0,)))
    acts += _puts(rng, list(range(2 * size)), records)
    acts.append(Action(5.0, "heal", (discover,)))
    acts.append(Action(0.0, "converge", (600.0,)))
    acts.append(Action(1.0, "lookups", (200, 5.0)))
    acts.append(Action(6.0, "records", ()))
    return acts


def coldstart(seed: int, nodes: int, spread: float = 1.5, deadline: float = 5.0,
              records: float = 0.0) -> list[Action]:
    """Boxes powered on together: `nodes` lone nodes start at the same instant, and
    discovery hands each one every other node, in random order, each after a random
    delay in [0, spread] (as mDNS browsers do). One correct ring must hold `deadline`
    seconds after power-on."""
    rng = random.Random(f"scenario/{seed}")
    acts = [Action(0.0, "boot", (i,)) for i in range(nodes)]
    heard = sorted(
        (rng.uniform(0.0, spread), rng.random(), i, j)
        for i in range(nodes) for j in range(nodes) if i != j
    )
    t = 0.0
    for when, _, i, j in heard:
        acts.append(Action(when - t, "discover", (i, j)))
        t = when
    acts.append(Action(0.0, "ring", (deadline - t,)))
    acts.append(Action(0.0, "converge", (60.0, 0.05)))  # full-mesh lists complete too
    if records:
        acts += _puts(rng, list(range(nodes)), records)
        acts.append(Action(5.0, "records", ()))
    return acts


SCENARIOS: dict[str, Callable[..., list[Action]]] = {
    "grow": grow, "churn": churn, "fail": fail, "partition": partition, "merge": two_rings,
    "coldstart": coldstart,
}


# ------------------------------------------------------------------------------ runner


def run(
    seed: int,
    actions: list[Action],
    config: ChordConfig | None = None,
    loss: float = 0.0,
    node_factory: Callable[..., ChordNode] = ChordNode,
    stop_at_violation: bool = False,
    check: bool = True,
    check_every_step: bool = False,
    wire: bool = False,
    **wire_options: float,
) -> RunResult:
    """Replay `actions` on a fresh Simulation with `seed`. `wire`: every message through
    the real codec (`wire_options`: clock_skew, duplicate; see wire.py)."""
    t0 = time.perf_counter()
    sim = Simulation(
        seed, config, loss=loss, node_factory=node_factory, check=check,
        check_every_step=check_every_step, wire=wire, **wire_options,
    )
    runner = _Runner(sim)
    sim.on_violation = runner.on_violation
    for act in actions:
        if stop_at_violation and sim.violations:
            break
        sim.run_for(act.dt)
        op = _OPS.get(act.op)
        if op is None:
            raise ValueError(f"unknown op {act.op}")
        op(runner, *act.args)
    return runner.result(time.perf_counter() - t0)


class _Runner:
    """One replay: the simulation and what the ops found (see the module docstring for
    the ops; `_OPS` maps each to its method)."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.lost = 0
        self.checked = 0
        self.not_converged: list[str] = []
        self.convergence_times: list[float] = []
        self.first_step: int | None = None
        self.ring_at: list[float] = []  # virtual times (power-on is 0) the ring formed ...
        self.converged_at: list[float] = []  # ... and of each convergence

    def on_violation(self, now: float, v: Any) -> None:
        sim = self.sim
        if self.first_step is None:
            self.first_step = sim.stats.steps
            sim.log.append("--- message trace before the first violation ---")
            sim.log.extend(list(sim.trace)[-40:])
            sim.log.append("--- end of trace ---")

    def result(self, wall: float) -> RunResult:
        sim = self.sim
        return RunResult(
            summary=sim.summary(),
            violations=[f"t={t:.3f} {v}" for t, v in sim.violations],
            records_lost=self.lost,
            records_checked=self.checked,
            not_converged=self.not_converged,
            convergence_times=self.convergence_times,
            log=sim.log,
            trace=list(sim.trace),
            wall=wall,
            first_violation_step=self.first_step,
            extra={"sim": sim, "ring_at": [round(t, 3) for t in self.ring_at],
                   "converged_at": [round(t, 3) for t in self.converged_at]},
        )

    # ------------------------------------------------------------------ the ops

    def add(self, label: int) -> None:
        if label not in self.sim.by_label:
            self.sim.add_node(label, bootstrap=None)

    def boot(self, label: int) -> None:
        """Powered on alone: no bootstrap until discovery names one."""
        sim = self.sim
        if label not in sim.by_label:
            sim.add_node(label, bootstrap=-1)
            # lone boxes are separate rings until they hear of each other (as after a
            # partition): strict checks resume once the one ring has formed
            if len(sim.live) > 1:
                sim.relaxed = {0}

    def discover(self, label: int, other: int) -> None:
        self.sim.discover(label, other)

    def crash(self, label: int) -> None:
        self.sim.crash(label)

    def leave(self, label: int) -> None:
        self.sim.leave(label)

    def put(self, label: int, aor: str) -> None:
        _put(self.sim, label, aor, 10)

    def lookups(self, count: int, spread: float) -> None:
        sim = self.sim
        for i in range(count):
            sim.at(sim.now + spread * i / max(1, count), sim.lookup)

    def partition(self, labels: frozenset[int]) -> None:
        self.sim.partition({lbl: 1 for lbl in labels})

    def heal(self, discover: int) -> None:
        self.sim.heal(discover=discover)

    def loss(self, p: float) -> None:
        self.sim.loss = p

    def ring(self, limit: float) -> None:
        """One correct ring: Zave's invariants and the first r successors."""
        sim = self.sim
        took = sim.run_until_converged(limit, 0.05, depth=sim.config.r)
        if took is None:
            problems = sim.converged(sim.config.r)
            self.not_converged.append(f"t={sim.now:.1f}: no ring: " + "; ".join(problems[:3]))
        else:
            self.ring_at.append(sim.now)
            sim.log.append(f"{sim.now:9.3f} one ring")

    def converge(self, *args: float) -> None:
        sim = self.sim
        took = sim.run_until_converged(*args)
        self._converged(took, sim.converged() if took is None else [])

    def converge_groups(self, limit: float) -> None:
        took = _converge_groups(self.sim, limit)
        self._converged(took, ["groups did not converge"])

    def _converged(self, took: float | None, problems: list[str]) -> None:
        sim = self.sim
        if took is None:
            self.not_converged.append(f"t={sim.now:.1f}: " + "; ".join(problems[:3]))
            sim.log.append(f"{sim.now:9.3f} NOT CONVERGED: {problems[:3]}")
        else:
            self.convergence_times.append(took)
            self.converged_at.append(sim.now)
            sim.log.append(f"{sim.now:9.3f} converged after {took:.1f}s")

    def records(self) -> None:
        sim = self.sim
        found, lost, details = sim.check_records()
        self.lost += lost
        self.checked += found + lost
        for d in details[:5]:
            sim.log.append(f"{sim.now:9.3f} RECORD LOST {d}")

    def run(self) -> None:
        pass


_OPS: dict[str, Callable[..., None]] = {
    name: getattr(_Runner, name)
    for name in (
        "add", "boot", "discover", "crash", "leave", "put", "lookups", "partition", "heal",
        "loss", "ring", "converge", "converge_groups", "records", "run",
    )
}


def _put(sim: Simulation, label: int, aor: str, tries: int) -> None:
    """Register aor on node `label` (once it is a ring member; retried each second)."""
    nid = sim.by_label.get(label)
    node = sim.live.get(nid) if nid is not None else None
    if node is None:
        return
    if node.status != "member":
        if tries > 0:
            sim.at(sim.now + 1.0, lambda: _put(sim, label, aor, tries - 1))
        return
    user = aor.split(":", 1)[1].split("@", 1)[0]

    def done(ev: Any) -> None:
        sim.log.append(f"{sim.now:9.3f} put {aor} on n{label}: {type(ev).__name__}")

    sim.put(node, aor, f"sip:{user}@{node.ref.host}:5060", on_done=done)


def _converge_groups(sim: Simulation, limit: float) -> float | None:
    """While partitioned: run until each group is, on its own, one converged ring."""
    return sim.run_until_converged(limit)


# ------------------------------------------------------------------------------ shrinking


def shrink(
    seed: int,
    actions: list[Action],
    still_fails: Callable[[RunResult], bool] = lambda r: r.failed,
    budget_seconds: float = 120.0,
    **run_kwargs: Any,
) -> tuple[list[Action], RunResult]:
    """Delta-debug `actions` down to a shorter list that still fails (same seed)."""
    deadline = time.perf_counter() + budget_seconds
    best = list(actions)
    result = run(seed, best, **run_kwargs)
    if not still_fails(result):
        return best, result
    chunk = max(1, len(best) // 2)
    while chunk >= 1 and time.perf_counter() < deadline:
        progress = False
        i = 0
        while i < len(best) and time.perf_counter() < deadline:
            cand = best[:i] + best[i + chunk :]
            if not cand:
                i += chunk
                continue
            res = run(seed, cand, **run_kwargs)
            if still_fails(res):
                best, result = cand, res
                progress = True
            else:
                i += chunk
        if not progress:
            if chunk == 1:
                break
            chunk //= 2
    return best, result


def format_failure(seed: int, actions: list[Action], result: RunResult) -> str:
    lines = [f"seed {seed}: {len(actions)} actions"]
    lines += [f"  {a}" for a in actions]
    lines.append("log:")
    lines += [f"  {x}" for x in result.log[-120:]]
    return "\n".join(lines)
