"""REGISTER figures beyond the Kamailio ratio (bench/register_rate.py): one meshsip node.

- digest on vs off: 1,000 users refreshed, closed loop; with digest each registration is
  two transactions (REGISTER, 401, REGISTER with the answer, 200);
- rate vs table size: the same 1,000 users refreshed while the table already holds N
  other bindings (restored from a bindings file at start): the rate should not fall with N;
- a REGISTER flood from one source (127.0.0.2, not exempt from the per-source limit) at
  --flood-rate for --flood-seconds: the node's peak RSS, what the limit dropped, and the
  rate a phone source (127.0.0.1) still gets meanwhile.

    python bench/register_load.py [--sizes 1000,10000,40000] [--flood-rate 20000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import BENCH, REPO, free_port, node, run_sipp, write_users
from memory import rss_mib

DIGEST_XML = BENCH / "sipp" / "register_digest.xml"
FLOOD = REPO / "tests" / "phones" / "flood.py"


def rate_line(r) -> str:  # noqa: ANN001  (a SippResult)
    return f"{r.rate:,.0f}/s ({r.successful} ok, {r.failed} failed in {r.elapsed_s:.1f} s)"


def refreshed(server_port: int, csv: Path, args: argparse.Namespace, **kw) -> str:  # noqa: ANN003
    port = free_port()
    run_sipp(server_port, csv, args.users, local_port=port, timeout=args.timeout, **kw)
    return rate_line(run_sipp(server_port, csv, args.count, local_port=port,
                              timeout=args.timeout, **kw))


def digest(args: argparse.Namespace, work: Path) -> dict[str, str]:
    users = work / "users.toml"
    users.write_text('[users]\n"bench" = "secret"\n')
    config = f'[registrar]\npolicy = "digest"\nusers_file = "{users}"\n'
    plain = write_users(work / "plain.csv", args.users)
    figures = {}
    with node() as server:
        figures[f"REGISTER/s, open (no digest), {args.users} users refreshed"] = \
            refreshed(server.port, plain, args)
    with node(config=config) as server:
        figures["registrations/s, digest (2 transactions each), 1 user refreshed"] = \
            refreshed(server.port, plain, args, scenario=DIGEST_XML,
                      extra=("-s", "bench", "-au", "bench", "-ap", "secret"))
    return figures


def table_sizes(args: argparse.Namespace, work: Path) -> dict[str, str]:
    csv = write_users(work / "plain.csv", args.users)
    figures = {}
    for size in args.sizes:
        with node(ready_timeout=30 + size / 500, bindings=size) as server:
            time.sleep(args.settle)  # the restored bindings' first refresh (overlay) passes
            figures[f"REGISTER/s, {args.users} refreshed, {size:,} other bindings held"] = \
                refreshed(server.port, csv, args) + f", RSS {rss_mib(server.pid):.0f} MiB"
    return figures


def flood(args: argparse.Namespace, work: Path) -> dict[str, str]:
    csv = write_users(work / "plain.csv", args.users)
    with node() as server:
        idle = rss_mib(server.pid)
        peak = [idle]
        stop = threading.Event()

        def watch() -> None:
            while not stop.wait(0.2):
                peak[0] = max(peak[0], rss_mib(server.pid))

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        flooder = subprocess.Popen(
            [sys.executable, str(FLOOD), "127.0.0.1", str(server.port), "--bind", "127.0.0.2",
             "--rate", str(args.flood_rate), "--count", str(int(args.flood_rate * 60)),
             "--seconds", str(args.flood_seconds)], stdout=subprocess.PIPE, text=True)
        try:
            time.sleep(1.0)
            phones = run_sipp(server.port, csv, args.count,
                              timeout=max(5.0, args.flood_seconds - 3))
            out, _ = flooder.communicate(timeout=args.flood_seconds + 30)
        finally:
            if flooder.poll() is None:
                flooder.kill()
            stop.set()
            watcher.join()
        sent = json.loads(out.strip().splitlines()[-1])
        status = subprocess.run(
            [sys.executable, "-m", "appliance.cli", "status", "--json", "--data-dir",
             str(Path(server.log).parent / "data")], capture_output=True, text=True,
            cwd=REPO, timeout=20)
        counters = json.loads(status.stdout)["counters"] if status.returncode == 0 else {}
    return {
        "flood sent (one source)": f"{sent['sent']:,} REGISTERs in {sent['seconds']} s "
                                   f"= {sent['sent'] / sent['seconds']:,.0f}/s",
        "flood dropped by the per-source limit": f"{counters.get('sip_rate_limited', '?'):,}",
        "node RSS idle / peak during the flood": f"{idle:.0f} / {peak[0]:.0f} MiB",
        "REGISTER/s of another source during the flood": rate_line(phones),
    }


def main(argv: list[str] | None = None) -> dict[str, str]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--count", type=int, default=60_000, help="REGISTERs per measured run")
    p.add_argument("--sizes", default="1000,10000,40000")
    p.add_argument("--settle", type=float, default=25.0, help="seconds after a restore")
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--flood-rate", type=float, default=20_000.0)
    p.add_argument("--flood-seconds", type=float, default=15.0)
    p.add_argument("--only", choices=("digest", "sizes", "flood"))
    args = p.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    figures: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        for name, part in (("digest", digest), ("sizes", table_sizes), ("flood", flood)):
            if args.only in (None, name):
                figures |= part(args, Path(tmp))
    for key, value in figures.items():
        print(f"{key}: {value}")
    return figures


if __name__ == "__main__":
    main()
