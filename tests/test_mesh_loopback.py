"""Several real `meshsip` processes on loopback form one ring, store and fetch records
over real UDP and TCP, and carry a phone call from one box to another."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from marks import NEEDS_SIPP
from phones.node import NodeFactory, NodeProcess
from phones.ports import free_port
from phones.sipp import SippUas, run_sipp

from overlay.discovery import CACHE_FILE

REPO = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.phones, NEEDS_SIPP]


def status(node: NodeProcess) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "status", "--json", "--data-dir",
         str(node.data_dir)], cwd=REPO, capture_output=True, text=True, timeout=10,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def wait_for(what: str, check, nodes: list[NodeProcess], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    logs = "\n".join(f"--- node {n.port} ---\n{n.log()[-3000:]}" for n in nodes)
    raise AssertionError(f"{what} did not happen within {timeout}s\n{logs}")


def one_ring(nodes: list[NodeProcess]) -> bool:
    """Following first successors from any node visits every node exactly once."""
    states = {n.port: status(n)["overlay"] for n in nodes}
    by_addr = {s["address"]: s for s in states.values()}
    start = next(iter(by_addr))
    seen, here = [], start
    for _ in range(len(nodes)):
        succs = by_addr[here]["successors"]
        if not succs:
            return False
        here = succs[0].split("@", 1)[1]
        if here not in by_addr:
            return False
        seen.append(here)
    return here == start and len(set(seen)) == len(nodes)


@pytest.fixture(params=["auto", "tcp"])
def ring(request, start_node: NodeFactory, tmp_path: Path) -> list[NodeProcess]:
    """Four boxes; "auto" speaks UDP between boxes (TCP only for big messages), "tcp" TCP."""
    config = f'[overlay]\ntransport = "{request.param}"\n'
    first = start_node(tmp_path, "--overlay", "loop", config=config)
    seed = f"127.0.0.1:{first.port}"
    nodes = [first] + [
        start_node(tmp_path, "--overlay", "loop", "--seed", seed, config=config)
        for _ in range(3)
    ]
    wait_for("a ring of four", lambda: one_ring(nodes), nodes)
    return nodes


def test_boxes_form_one_ring_and_share_records(ring: list[NodeProcess], tmp_path: Path) -> None:
    a, _, _, d = ring
    # A phone registering at box A becomes an overlay record stored on the ring.
    with SippUas("uas_answer", service="3002", keys={"proxy": a.target},
                 workdir=tmp_path) as uas:
        ok = run_sipp("register", a.target, service="3002",
                      keys={"contact_port": str(uas.port)}, workdir=tmp_path)
        assert ok.returncode == 0, ok.logs
        wait_for("the record of 3002 stored with replicas",
                 lambda: sum(status(n)["overlay"]["records_stored"] for n in ring) >= 3, ring)
        # A phone on box D calls 3002: D finds box A through the overlay.
        call = run_sipp("uac_call", d.target, service="3002", keys={"caller": "3001"},
                        workdir=tmp_path)
        assert call.returncode == 0, f"{call.logs}\n--- box D ---\n{d.log()}\n{a.log()}"
        assert uas.wait().returncode == 0
    counters = [status(n)["overlay"]["counters"] for n in ring]
    assert all(c["accepted"] > 0 for c in counters)
    assert sum(c.get("refused", 0) for c in counters) == 0
    if 'transport = "tcp"' in (a.dir / "node.toml").read_text():
        assert sum(status(n)["counters"]["connections_total"] for n in ring) > 0
    assert "call 3001 -> 3002" in d.log()


def test_unknown_extension_is_404_across_the_ring(ring: list[NodeProcess],
                                                  tmp_path: Path) -> None:
    result = run_sipp("uac_404", ring[2].target, service="3999", keys={"caller": "3001"},
                      workdir=tmp_path)
    assert result.returncode == 0, result.logs


def test_a_box_that_leaves_hands_over_its_records(ring: list[NodeProcess],
                                                  tmp_path: Path) -> None:
    a = ring[0]
    port = free_port()
    ok = run_sipp("register", a.target, service="3100", keys={"contact_port": str(port)},
                  workdir=tmp_path)
    assert ok.returncode == 0, ok.logs
    wait_for("the record stored", lambda: sum(
        status(n)["overlay"]["records_stored"] for n in ring) >= 3, ring)
    holders = [n for n in ring[1:] if status(n)["overlay"]["records_stored"] > 0]
    assert holders
    assert holders[0].stop() == 0
    # Peer exchange: with no mDNS at all, the box still remembers its ring neighbours.
    cached = json.loads((holders[0].data_dir / CACHE_FILE).read_text())["peers"]
    assert len(cached) >= 2, cached
    rest = [n for n in ring if n is not holders[0]]
    wait_for("a ring of three", lambda: one_ring(rest), rest)
    wait_for("three copies again", lambda: sum(
        status(n)["overlay"]["records_stored"] for n in rest) >= 3, rest)
