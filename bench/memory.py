"""Node memory: resident set size idle after start and after N distinct registrations.

A last reading --linger seconds later, once Timer J has ended the REGISTER transactions,
shows what the location bindings alone keep.

    python bench/memory.py [--users 1000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import node, rss_kib, run_sipp, session_pids, write_users


def rss_mib(pid: int) -> float:
    """VmRSS summed over the node's processes (its session), in MiB."""
    return sum(rss_kib(p) for p in session_pids(pid) or [pid]) / 1024


def measure(users: int = 1000, linger: float = 33.0, settle: float = 1.0) -> dict[str, str]:
    figures: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="bench-users-") as tmp, node() as server:
        csv = write_users(Path(tmp) / "users.csv", users)
        time.sleep(settle)
        idle = rss_mib(server.pid)
        figures["node RSS idle (MiB)"] = f"{idle:.1f}"
        r = run_sipp(server.port, csv, users, expires=3600, timeout=30)
        time.sleep(settle)
        loaded = rss_mib(server.pid)
        figures[f"node RSS after {r.successful} registrations (MiB)"] = (
            f"{loaded:.1f} (+{loaded - idle:.1f}; {r.failed} failed)"
        )
        if r.successful:
            per = (loaded - idle) * 1024 * 1024 / r.successful
            figures["node RSS per registration (bytes)"] = f"{per:,.0f}"
        if linger > 0:  # completed UDP server transactions live 64*T1 = 32 s (Timer J)
            time.sleep(linger)
            figures[f"node RSS {settle + linger:.0f} s later (MiB)"] = f"{rss_mib(server.pid):.1f}"
    return figures


def main(argv: list[str] | None = None) -> dict[str, str]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=1000, help="distinct users to register")
    p.add_argument("--linger", type=float, default=33.0, help="seconds before a last reading")
    args = p.parse_args(argv)
    print(f"Node memory (VmRSS): idle, then after {args.users} distinct REGISTERs, expires 3600")
    figures = measure(args.users, args.linger)
    for key, value in figures.items():
        print(f"{key}: {value}")
    return figures


if __name__ == "__main__":
    main()
