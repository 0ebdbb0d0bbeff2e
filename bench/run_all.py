"""Run every benchmark and print a summary table. Always exits 0: a figure that could not be
taken is printed with the reason instead.

    python bench/run_all.py
"""

from __future__ import annotations

import traceback
from collections.abc import Callable

import memory
import parse_rate
import register_rate

BENCHMARKS: list[tuple[str, Callable[[list[str]], dict[str, str]]]] = [
    ("parse_rate", parse_rate.main),
    ("register_rate", register_rate.main),
    ("memory", memory.main),
]


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
    width = max(len(key) for key, _ in rows)
    print("== summary")
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
