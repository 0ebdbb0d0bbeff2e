"""Fixtures shared by the test files, and the rule that real parts are never skipped on CI.

Under CI=true every real-phone (`phones`) and namespace (`netns`) test must run: a skip of
such a test, or of any test skipped because sipp, baresip, nftables, namespaces or root
are missing, is turned into a failure. Elsewhere the summary says how many tests were
skipped and why (and `make test` lists each with -rs).
"""

from __future__ import annotations

import os
from collections import Counter

import pytest
from phones.node import start_node  # noqa: F401  (fixture: starts real meshsip nodes)

REAL_MARKERS = ("phones", "netns")
# what a skip reason names when a real part is missing
MISSING_PARTS = ("sipp", "sip-tester", "baresip", "root", "namespace", "netns", "meshbed",
                 "nft", "iproute2")
NETNS_FIXTURES = ("bed", "make_bed")  # a test using these runs in namespaces


def on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:  # a namespace test without its marker would escape the CI rule
        if any(f in getattr(item, "fixturenames", ()) for f in NETNS_FIXTURES):
            item.add_marker("netns")
    # `provision` and `image` tests take minutes: only `make test-provision` (-m provision)
    # and `make test-image` (-m image) run them.
    for marker in ("provision", "image"):
        if marker not in (config.option.markexpr or ""):
            slow = [item for item in items if item.get_closest_marker(marker)]
            if slow:
                config.hook.pytest_deselected(items=slow)
                items[:] = [item for item in items if item not in slow]


def _reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    text = str(longrepr[2]) if isinstance(longrepr, tuple) else str(longrepr)
    return text.removeprefix("Skipped: ")


def _needs_real_parts(item: pytest.Item, reason: str) -> bool:
    lowered = reason.lower()
    return (any(item.get_closest_marker(m) for m in REAL_MARKERS)
            or any(word in lowered for word in MISSING_PARTS))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # noqa: ANN201
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not on_ci() or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = _reason(report)
    if _needs_real_parts(item, reason):
        report.outcome = "failed"
        report.longrepr = (f"CI=true: {item.nodeid} needs real phones or namespaces and must "
                           f"run, but it was skipped: {reason}")


def pytest_terminal_summary(terminalreporter, exitstatus: int) -> None:  # noqa: ANN001
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    why = Counter(_reason(r) for r in skipped)
    terminalreporter.write_line(
        f"{len(skipped)} tests skipped (under CI=true the real-phone and namespace ones fail):"
    )
    for reason, count in why.most_common():
        terminalreporter.write_line(f"  {count:4d}  {reason}")
