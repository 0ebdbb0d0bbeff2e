"""Run every benchmark and print a summary table. Always exits 0: a figure that could not be
taken is printed with the reason instead.

    python bench/run_all.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import memory
import overlay_rate
import parse_rate
import register_load
import register_rate
import web_rate

HERE = Path(__file__).resolve().parent
BENCHMARKS: list[tuple[str, Callable[[list[str]], dict[str, str]]]] = [
    ("parse_rate", parse_rate.main),
    ("register_rate", register_rate.main),  # 1,000 users refreshed
    ("register_rate_40k", lambda argv: register_rate.main(["--users", "40000", *argv])),
    ("register_load", register_load.main),
    ("memory", memory.main),
    ("overlay_rate", overlay_rate.main),
    ("web_rate", web_rate.main),
]
# These print their own tables: the overlay from the simulator, the mesh from real boxes
# in network namespaces (root only).
SCRIPTS = ["overlay_figures.py", "coldstart_figures.py"] + (
    ["mesh_figures.py"] if os.geteuid() == 0 else [])


def main() -> None:
    rows: list[tuple[str, str]] = []
    for name, run in BENCHMARKS:
        print(f"== {name}")
        try:
            rows.extend(run([]).items())
        except Exception as e:  # report and carry on with the next benchmark
            traceback.print_exc()
            rows.append((name, f"n/a ({type(e).__name__}: {e})"))
        print()
    for script in SCRIPTS:
        print(f"== {script}", flush=True)
        code = subprocess.call([sys.executable, str(HERE / script)], timeout=900)
        rows.append((script, "printed above" if code == 0 else f"n/a (exit {code})"))
        print()
    width = max(len(key) for key, _ in rows)
    print("== summary")
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
