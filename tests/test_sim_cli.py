"""`meshsip sim` (overlay.sim.cli.main) and run-to-run reproducibility."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from overlay.sim.cli import main

ROOT = Path(__file__).resolve().parent.parent
KEYS = {
    "nodes", "lookups", "success_rate", "hops_mean", "hops_p99", "invariant_violations",
    "records_lost",
}


def test_cli_prints_one_json_object(capsys) -> None:
    rc = main(["--nodes", "12", "--seed", "3", "--scenario", "churn", "--duration", "10",
               "--json"])
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and len(out) == 1
    data = json.loads(out[0])
    assert KEYS <= set(data)
    assert data["nodes"] == 12 and data["invariant_violations"] == 0
    assert data["records_lost"] == 0 and data["success_rate"] == 1.0


def test_cli_scenarios_and_options(capsys) -> None:
    for scenario in ("grow", "fail", "partition", "merge"):
        rc = main(["--nodes", "10", "--seed", "1", "--scenario", scenario, "--duration", "10",
                   "--r", "3", "--lookups", "50", "--json"])
        data = json.loads(capsys.readouterr().out)
        assert rc == 0, (scenario, data)
        assert data["scenario"] == scenario


def _digest(hashseed: str) -> str:
    code = (
        "import hashlib, json\n"
        "from overlay.sim import scenarios as S\n"
        "r = S.run(5, S.partition(5, 16, duration=10.0, lookups=40), loss=0.02)\n"
        "s = dict(r.summary)\n"
        "print(hashlib.sha256(('\\n'.join(r.log + r.trace) + json.dumps(s, sort_keys=True))"
        ".encode()).hexdigest())\n"
    )
    env = dict(os.environ, PYTHONHASHSEED=hashseed)
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
        check=True, timeout=120,
    )
    return out.stdout.strip()


def test_a_seed_replays_identically_whatever_the_hash_seed() -> None:
    assert _digest("1") == _digest("12345")
