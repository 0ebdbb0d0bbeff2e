"""`meshsip sim`: run one seeded simulation scenario and report.

    meshsip sim --nodes N --seed S [--scenario grow|churn|fail|partition|merge]
                [--duration SECONDS] [--r 3] [--loss P] [--wire] [--json] [--shrink]

Prints one JSON object with --json (keys include nodes, lookups, success_rate,
hops_mean, hops_p99, invariant_violations, records_lost), else a short report. Exit
status 0 when the run kept every invariant, lost no record and converged; 1 otherwise
(with --shrink the failing run is first cut down to a short action list, printed with
its log and message trace on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from overlay.chord.node import ChordConfig

from . import scenarios


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="meshsip sim", description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scenario", choices=sorted(scenarios.SCENARIOS), default="grow")
    p.add_argument(
        "--duration", type=float, default=60.0,
        help="churn: seconds of churn; partition: seconds apart (default 60)",
    )
    p.add_argument("--r", type=int, default=3, help="replication / successor-list minimum")
    p.add_argument("--loss", type=float, default=0.0, help="message loss probability")
    p.add_argument("--fraction", type=float, default=0.2, help="fail: fraction crashing")
    p.add_argument("--lookups", type=int, default=1000)
    p.add_argument("--wire", action="store_true",
                   help="every message through the real wire codec (slower)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--shrink", action="store_true", help="shrink a failing run")
    return p


def make_actions(args: argparse.Namespace) -> list[scenarios.Action]:
    n = max(1, args.nodes)
    if args.scenario == "grow":
        return scenarios.grow(args.seed, n, lookups=args.lookups)
    if args.scenario == "churn":
        return scenarios.churn(args.seed, n, duration=args.duration)
    if args.scenario == "fail":
        return scenarios.fail(args.seed, n, fraction=args.fraction, lookups=args.lookups)
    if args.scenario == "partition":
        return scenarios.partition(args.seed, n, duration=args.duration, lookups=args.lookups)
    return scenarios.two_rings(args.seed, max(1, n // 2))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    config = ChordConfig(r=args.r)
    actions = make_actions(args)
    result = scenarios.run(args.seed, actions, config=config, loss=args.loss,
                           wire=args.wire)
    out = result.to_json()
    out.pop("sim", None)
    out["scenario"] = args.scenario
    out["seed"] = args.seed
    if args.json:
        print(json.dumps(out, sort_keys=True))
    else:
        for key in (
            "scenario", "seed", "nodes", "lookups", "success_rate", "hops_mean", "hops_p99",
            "invariant_violations", "assumption_breaches", "records_lost",
            "convergence_seconds", "messages", "virtual_seconds", "wall_seconds",
        ):
            print(f"{key:22} {out.get(key)}")
    if result.failed and args.shrink:
        small, res = scenarios.shrink(args.seed, actions, config=config, loss=args.loss,
                                      wire=args.wire)
        print(scenarios.format_failure(args.seed, small, res), file=sys.stderr)
    return 1 if result.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
