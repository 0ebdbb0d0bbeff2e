"""The CI rule in conftest.py, on a tiny test file run by a real pytest: under CI=true a
skipped real-phone or namespace test (or one skipped for a missing sipp, baresip or root)
fails the run; elsewhere skips are counted with their reasons."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
TINY = '''
import pytest

@pytest.mark.phones
def test_phone():
    pytest.skip("sipp not installed (sip-tester)")

@pytest.mark.netns
@pytest.mark.skipif(True, reason="meshbed: needs root")
def test_namespace():
    pass

@pytest.mark.skipif(True, reason="baresip not installed (baresip-core)")
def test_unmarked_but_needs_a_phone():
    pass

def test_namespace_by_fixture(bed):
    pass

@pytest.fixture
def bed():
    pytest.skip("no network namespaces here")

def test_plain_skip():
    pytest.skip("only on Tuesdays")

def test_passes():
    pass

@pytest.mark.xfail(reason="known")
def test_expected_failure():
    assert False
'''


def run_tiny(tmp_path: Path, ci: str | None) -> tuple[int, dict[str, int], str]:
    (tmp_path / "test_tiny.py").write_text(TINY)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(TESTS.parent)])
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "conftest", "-q", "-rs", "-p", "no:cacheprovider",
         "-o", "markers=phones\n netns", "test_tiny.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    last = out.stdout.strip().splitlines()[-1]
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", last)}
    return out.returncode, counts, out.stdout


def test_under_ci_a_skipped_real_part_test_fails_the_run(tmp_path: Path) -> None:
    rc, counts, out = run_tiny(tmp_path, "true")
    assert rc == 1, out
    # (a skip in setup, by a skipif mark or a fixture, turns into an error: it fails too)
    assert counts.get("failed", 0) + counts.get("errors", 0) == 4, out
    assert (counts["passed"], counts["skipped"], counts["xfailed"]) == (1, 1, 1), out
    assert "CI=true: test_tiny.py::test_phone needs real phones or namespaces" in out
    assert "sipp not installed" in out and "baresip not installed" in out
    assert "no network namespaces here" in out  # the fixture's skip, marked by its fixture


def test_elsewhere_skips_are_counted_with_their_reasons(tmp_path: Path) -> None:
    rc, counts, out = run_tiny(tmp_path, None)
    assert rc == 0, out
    assert counts == {"passed": 1, "skipped": 5, "xfailed": 1}, out
    assert "5 tests skipped (under CI=true the real-phone and namespace ones fail):" in out
    assert re.search(r"1\s+only on Tuesdays", out) and re.search(r"1\s+meshbed: needs root", out)
    rc, counts, out = run_tiny(tmp_path, "false")
    assert rc == 0 and counts["skipped"] == 5, out
