"""The fuzz targets' short pass (tests/fuzz): every stored corpus input, then a bounded
number of random mutations of them, through the SIP parser target and the overlay
receive-path target. The long coverage-guided runs are `make fuzz-sip` and
`make fuzz-overlay` (atheris); this pass needs nothing beyond the test dependencies."""

from __future__ import annotations

import pytest
from fuzz import overlay_target, sip_target
from fuzz.corpus_tools import CORPUS, corpus, mutation_pass

TARGETS = {"sip": (sip_target.one_input, 3000), "overlay": (overlay_target.one_input, 400)}


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_corpus_and_mutations_pass(name: str) -> None:
    one_input, count = TARGETS[name]
    assert mutation_pass(one_input, name, count=count, seed=1) == count


def test_stored_corpus_is_small() -> None:
    files = [p for p in CORPUS.rglob("*") if p.is_file()]
    assert 50 <= len(files) <= 600
    assert sum(p.stat().st_size for p in files) < 2 * 1024 * 1024
    assert {p.parent.name for p in files} == set(TARGETS)
    assert any(p.name.endswith(".dat") for p in corpus("sip"))  # RFC 4475 seeds too


def test_overlay_target_reaches_the_node() -> None:
    """The raw-layer seeds are signed messages the box takes: the target fuzzes past the
    signature check, not only into it."""
    taken = 0
    for path in corpus("overlay"):
        data = path.read_bytes()
        if data[:1] == b"\x00":
            h = overlay_target.Harness()
            with h.clocked():
                taken += h.receive(data[1:], h.peers[0].source)
    assert taken >= 20
