"""pytest fixture for beds: `make_bed(n, **kw)` -> a started MeshBed, closed at teardown.

    from meshbed.fixtures import make_bed_fixture  # noqa: F401  (registers `make_bed`)

    def test_x(make_bed):
        bed = make_bed(3)

Skips the test (saying why) when this process cannot build namespaces.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .bed import BedError, MeshBed, netns_available


@pytest.fixture(name="make_bed")
def make_bed_fixture(tmp_path: Path) -> Iterator[Callable[..., MeshBed]]:
    reason = netns_available()
    if reason is not None:
        pytest.skip(f"meshbed: {reason}")
    beds: list[MeshBed] = []

    def make(n: int, **kw: Any) -> MeshBed:
        kw.setdefault("workdir", tmp_path / f"bed{len(beds)}")
        bed = MeshBed(n, **kw)
        beds.append(bed)
        return bed.start()

    yield make
    problems = []
    for bed in beds:
        try:
            bed.close()
        except BedError as exc:
            problems.append(str(exc))
    assert not problems, "\n".join(problems)
