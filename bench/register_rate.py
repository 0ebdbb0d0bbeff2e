"""REGISTER transactions per second: one meshsip node against Kamailio, same sipp load.

Both servers get the same closed-loop load in the same run: sipp keeps at most --limit
REGISTERs outstanding over --users distinct users until --count transactions are done (or
--timeout seconds pass). A warm-up pass registers every user once first. Prints the median of
--rounds rounds and the ratio ours/kamailio (goal: >= 0.5).

    python bench/register_rate.py [--count 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from common import Server, SippResult, kamailio, node, run_sipp, write_users


def load(
    server_cm: Callable[[], AbstractContextManager[Server]], users: Path, args: argparse.Namespace

) -> tuple[Server, list[SippResult]]:
    results = []
    with server_cm() as server:
        run_sipp(server.port, users, args.users, limit=args.limit, timeout=args.timeout)
        for i in range(args.rounds):
            r = run_sipp(server.port, users, args.count, limit=args.limit, timeout=args.timeout)
            print(f"  {server.name} round {i + 1}: {r.successful} ok, {r.failed} failed, "
                  f"{r.retransmissions} retrans in {r.elapsed_s:.2f} s = {r.rate:,.0f}/s "
                  f"{r.note}".rstrip())
            results.append(r)
    return server, results


def measure(args: argparse.Namespace) -> dict[str, str]:
    figures: dict[str, str] = {}
    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-users-") as tmp:
        users = write_users(Path(tmp) / "users.csv", args.users)
        for name, server_cm in (("kamailio", kamailio), ("meshsip", node)):
            try:
                server, results = load(server_cm, users, args)
            except (RuntimeError, OSError) as e:
                figures[f"{name} REGISTER/s"] = f"n/a ({e})"
                continue
            rates[name] = statistics.median(r.rate for r in results)
            failed = sum(r.failed for r in results)
            figures[f"{name} REGISTER/s"] = (
                f"{rates[name]:,.0f} (median of {len(results)}, {failed} failed; "
                f"{server.workers})")
    if len(rates) == 2:
        figures["REGISTER ratio meshsip/kamailio"] = (
            f"{rates['meshsip'] / rates['kamailio']:.3f} (goal >= 0.5)")
    return figures


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=20_000, help="REGISTERs per round")
    p.add_argument("--users", type=int, default=1000, help="distinct users in the CSV")
    p.add_argument("--limit", type=int, default=100, help="outstanding REGISTERs (sipp -l)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per sipp run")
    return p


def main(argv: list[str] | None = None) -> dict[str, str]:
    args = parser().parse_args(argv)
    print(f"REGISTER rate: sipp -m {args.count} -l {args.limit}, {args.users} users, "
          f"UDP loopback")
    figures = measure(args)
    for key, value in figures.items():
        print(f"{key}: {value}")
    return figures


if __name__ == "__main__":
    main()
