"""Run a fuzz target: `python tests/fuzz/run.py {sip,overlay} [--seconds N]`.

With atheris (`pip install -e '.[fuzz]'`; `make fuzz-sip`, `make fuzz-overlay`): libFuzzer,
coverage-guided over the overlay package, for N seconds; an input that raises, or that
takes more than 1 s of CPU time (a hang: `corpus_tools.Hang`; CPU time, since on a
loaded machine the wall clock also counts the time others run; libFuzzer's wall-clock
`-timeout=10` backs it up), stops the run and is written to `.fuzz/<target>/crash-*` or `timeout-*`.
New inputs go to `.fuzz/<target>/` (not stored: the stored corpus, tests/fuzz/corpus/,
holds the seeds and the findings). `--replay FILE...` runs the target on given inputs.
Without atheris (or with `--plain`): random mutations of the stored corpus for N seconds.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TARGETS = {"sip": "fuzz.sip_target", "overlay": "fuzz.overlay_target"}

MAX_LEN = {"sip": 4096, "overlay": 4096}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=sorted(TARGETS))
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--plain", action="store_true", help="no atheris: random mutations")
    parser.add_argument("--replay", nargs="+", type=Path, metavar="FILE")
    args = parser.parse_args()
    sys.path[:0] = [str(HERE.parent), str(REPO)]
    logging.disable(logging.CRITICAL)  # refused messages are logged by the million
    try:
        import atheris
    except ImportError:
        atheris = None
    if args.replay:
        target = __import__(TARGETS[args.target], fromlist=["one_input"])
        from fuzz.corpus_tools import bounded

        for path in args.replay:
            bounded(target.one_input)(path.read_bytes())
            print(f"{path}: ok")
        return 0
    if atheris is None or args.plain:
        return plain(args.target, args.seconds)
    with atheris.instrument_imports(include=["overlay"]):
        target = __import__(TARGETS[args.target], fromlist=["one_input"])
    from fuzz.corpus_tools import CORPUS, TORTURE, bounded

    work = REPO / ".fuzz" / args.target
    work.mkdir(parents=True, exist_ok=True)
    seeds = [str(CORPUS / args.target)] + ([str(TORTURE)] if args.target == "sip" else [])
    flags = [f"-max_len={MAX_LEN[args.target]}", "-timeout=10", "-rss_limit_mb=2048",
             f"-artifact_prefix={work}/", "-print_final_stats=1"]
    argv = [sys.argv[0], *flags, f"-max_total_time={args.seconds}", str(work), *seeds]
    atheris.Setup(argv, bounded(target.one_input))
    atheris.Fuzz()
    return 0


def plain(name: str, seconds: int) -> int:
    from fuzz.corpus_tools import mutation_pass

    target = __import__(TARGETS[name], fromlist=["one_input"])
    runs = mutation_pass(target.one_input, name, seconds=seconds)
    print(f"{name}: {runs} inputs in {seconds} s (random mutations, not coverage-guided), "
          "no failure")
    return 0


if __name__ == "__main__":
    sys.exit(main())
