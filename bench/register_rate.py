"""REGISTER transactions per second: one meshsip node against Kamailio, same sipp load.

Both servers get the same closed-loop load in the same run: sipp keeps --concurrent
REGISTERs outstanding (`-users N`) over --users distinct users until --count transactions
are done or --timeout seconds pass. A warm-up pass first registers every user once.
Prints the median of --rounds rounds and the ratio meshsip/kamailio (goal: >= 0.5).

    python bench/register_rate.py [--count 100000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from common import Server, SippResult, free_port, kamailio, node, run_sipp, write_users
from memory import rss_mib

ServerFactory = Callable[[], AbstractContextManager[Server]]


def load(server_cm: ServerFactory, csv: Path, args: argparse.Namespace) -> list[SippResult]:
    results = []
    with server_cm() as server:
        print(f"  {server.name}: {server.workers}")
        sipp = functools.partial(run_sipp, server.port, csv, concurrent=args.concurrent,
                                 timeout=args.timeout, local_port=free_port())
        sipp(args.users)  # warm-up: every user registered once, from the same Contact as later
        for i in range(args.rounds):
            r = sipp(args.count)
            # Kamailio's processes share memory, so a sum of their RSS would mislead.
            rss = f", node RSS {rss_mib(server.pid):.0f} MiB" if server.name == "meshsip" else ""
            print(f"  {server.name} round {i + 1}: {r.successful} ok, {r.failed} failed, "
                  f"{r.retransmissions} retransmissions in {r.elapsed_s:.2f} s "
                  f"= {r.rate:,.0f}/s{rss} {r.note}".rstrip())
            results.append(r)
    return results


def measure(args: argparse.Namespace) -> dict[str, str]:
    figures: dict[str, str] = {}
    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-users-") as tmp:
        csv = write_users(Path(tmp) / "users.csv", args.users)
        reference = functools.partial(kamailio, children=args.kamailio_children)
        for name, server_cm in (("kamailio", reference), ("meshsip", node)):
            try:
                results = load(server_cm, csv, args)
            except (RuntimeError, OSError) as e:
                figures[f"{name} REGISTER/s"] = f"n/a ({e})"
                continue
            rates[name] = statistics.median(r.rate for r in results)
            best = max(r.rate for r in results)
            failed = sum(r.failed for r in results)
            figures[f"{name} REGISTER/s"] = (
                f"{rates[name]:,.0f} (median of {len(results)} rounds, best {best:,.0f}, "
                f"{failed} failed)"
            )
    if len(rates) == 2:
        ratio = rates["meshsip"] / rates["kamailio"]
        figures["REGISTER ratio meshsip/kamailio"] = f"{ratio:.3f} of medians (goal >= 0.5)"
    return figures


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=100_000, help="REGISTERs per round")
    p.add_argument("--users", type=int, default=1000, help="distinct users in the CSV")
    p.add_argument("--concurrent", type=int, default=20, help="outstanding (sipp -users)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--kamailio-children", type=int, default=2, help="Kamailio UDP workers")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per sipp run")
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
