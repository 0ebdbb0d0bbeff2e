"""REGISTER transactions per second: one meshsip node against Kamailio, same sipp load.

Both servers run at once and get the same closed-loop load, round by round in turn, so
both see the same machine (a shared VM's speed drifts from minute to minute): sipp keeps
--concurrent REGISTERs outstanding (`-users N`) over --users distinct users until --count
transactions are done or --timeout seconds pass. A warm-up first registers every user once
(first registrations: the node claims each extension in the overlay and publishes its
record), then --settle seconds pass (the node places each new record again 20 s after
the first time, overlay/chord/owned.py). Prints each server's median and the median of
the rounds' ratios meshsip/kamailio (goal: >= 0.5).

    python bench/register_rate.py [--users 1000] [--count 100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from common import Server, SippResult, free_port, kamailio, node, run_sipp, write_users
from memory import rss_mib


def line(server: Server, r: SippResult) -> str:
    # Kamailio's processes share memory, so a sum of their RSS would mislead.
    rss = f", node RSS {rss_mib(server.pid):.0f} MiB" if server.name == "meshsip" else ""
    return (f"{r.successful} ok, {r.failed} failed, {r.retransmissions} retransmissions in "
            f"{r.elapsed_s:.2f} s = {r.rate:,.0f}/s{rss} {r.note}").rstrip()


def measure(args: argparse.Namespace) -> dict[str, str]:
    figures: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="bench-users-") as tmp, ExitStack() as stack:
        csv = write_users(Path(tmp) / "users.csv", args.users)
        servers = [stack.enter_context(kamailio(children=args.kamailio_children)),
                   stack.enter_context(node(ready_timeout=60))]
        ports = {s.name: free_port() for s in servers}  # each user's Contact stays the same
        for s in servers:
            print(f"  {s.name}: {s.workers}")
            r = run_sipp(s.port, csv, args.users, concurrent=args.concurrent,
                         timeout=args.timeout, local_port=ports[s.name])
            print(f"  {s.name} first registrations: {line(s, r)}")
            figures[f"{s.name} first registrations/s ({args.users:,} users)"] = f"{r.rate:,.0f}"
        time.sleep(args.settle)
        rates: dict[str, list[float]] = {s.name: [] for s in servers}
        failed = 0
        for i in range(args.rounds):
            for s in servers:
                r = run_sipp(s.port, csv, args.count, concurrent=args.concurrent,
                             timeout=args.timeout, local_port=ports[s.name])
                print(f"  round {i + 1} {s.name}: {line(s, r)}")
                rates[s.name].append(r.rate)
                failed += r.failed
    for name, values in rates.items():
        figures[f"{name} REGISTER/s, {args.users:,} users refreshed"] = (
            f"{statistics.median(values):,.0f} (median of {len(values)} rounds, "
            f"{min(values):,.0f}-{max(values):,.0f})")
    ratios = [m / k for m, k in zip(rates["meshsip"], rates["kamailio"], strict=True) if k]
    if ratios:
        figures["REGISTER ratio meshsip/kamailio"] = (
            f"{statistics.median(ratios):.3f}, median of the rounds' ratios "
            f"({min(ratios):.2f}-{max(ratios):.2f}; goal >= 0.5), {failed} failed")
    return figures


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=100_000, help="REGISTERs per round")
    p.add_argument("--users", type=int, default=1000, help="distinct users in the CSV")
    p.add_argument("--concurrent", type=int, default=20, help="outstanding (sipp -users)")
    p.add_argument("--rounds", type=int, default=5, help="rounds each, in turn")
    p.add_argument("--settle", type=float, default=25.0, help="seconds after the warm-up")
    p.add_argument("--kamailio-children", type=int, default=2, help="Kamailio UDP workers")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per sipp run")
    return p


def main(argv: list[str] | None = None) -> dict[str, str]:
    args = parser().parse_args(argv)
    print(f"REGISTER rate: sipp -m {args.count} -users {args.concurrent}, {args.users} users, "
          f"UDP loopback, {os.cpu_count()} CPUs shared with sipp")
    figures = measure(args)
    for key, value in figures.items():
        print(f"{key}: {value}")
    return figures


if __name__ == "__main__":
    main()
