"""Extensions for new phones come from the overlay, never twice (appliance/onboard/alloc.py):
50 simulated desk phones (tests/onboard_client.py: the PnP SUBSCRIBE, the NOTIFY, the
file) enrol through 5 boxes at once, two of them chosen to want the same number at the
same moment; then two phones that want the same number enrol on either side of a
partition, and after the heal the losing one is re-provisioned (check-sync NOTIFY) with
another number. About 2 minutes (a reason: ten namespaces, five rings forming, a
partition and its heal); the 50 and the partition share the one bed to save a build.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from marks import NEEDS_NETNS
from meshbed import MeshBed
from meshbed.fixtures import make_bed_fixture  # noqa: F401  (fixture make_bed)
from test_mesh_calls import FAST, needs_nft, one_ring, wait_for

from appliance.onboard.alloc import candidates

REPO = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.netns, NEEDS_NETNS]
BOXES, PER_BOX = 5, 10
CONFIG = FAST + '[enroll]\nsecret = "one deployment"\n'
FIRST, LAST = 2000, 2999  # the default [enroll] range


def first_choice(mac: str) -> str:
    return next(candidates(mac, FIRST, LAST))


def rival_macs(count: int, avoid: set[str]) -> list[str]:
    """`count` MACs whose first choice is one same number, outside `avoid`."""
    by_first: dict[str, list[str]] = {}
    for n in range(1, 100_000):
        mac = f"0015650{n:05x}"
        group = by_first.setdefault(first_choice(mac), [])
        if first_choice(mac) not in avoid:
            group.append(mac)
            if len(group) == count:
                return group
    raise AssertionError("no rivals found")


def status(bed: MeshBed, i: int, node: Any) -> dict[str, Any]:
    """`meshsip status --json` in host i (generous: ten namespaces on a busy machine)."""
    out = bed.exec(i, [sys.executable, "-m", "appliance.cli", "status", "--json",
                       "--data-dir", str(node.data_dir)], cwd=REPO, timeout=60)
    assert out.returncode == 0, f"status of host {i}: {out.stderr}"
    return json.loads(out.stdout)


def wait_ring(bed: MeshBed, nodes: dict[int, Any], timeout: float) -> float:
    def ring() -> bool:
        with ThreadPoolExecutor(len(nodes)) as pool:
            states = dict(zip(nodes, pool.map(lambda i: status(bed, i, nodes[i])["overlay"],
                                              nodes), strict=True))
        return one_ring(states)
    return wait_for(f"one ring of hosts {sorted(nodes)}", ring, nodes, timeout, poll=0.5)


def enrol(bed: MeshBed, phone_host: int, box_host: int, macs: list[str],
          resync: float = 0.0) -> Any:
    return bed.run(phone_host, [sys.executable, "tests/onboard_client.py", "--bind",
                                bed.addr(phone_host), "--box", bed.addr(box_host), "--macs",
                                ",".join(macs), "--resync", str(resync)],
                   cwd=REPO, stdout=-1, stderr=-1, text=True)


def rows(proc: Any, timeout: float) -> list[dict[str, Any]]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return [json.loads(line) for line in out.splitlines()]


def enrol_stats(bed: MeshBed, nodes: dict[int, Any]) -> dict[str, int]:
    total: dict[str, int] = {}
    for i, node in nodes.items():
        for k, v in status(bed, i, node)["enroll"]["counters"].items():
            total[k] = total.get(k, 0) + v
    return total


@needs_nft
def test_fifty_phones_on_five_boxes_get_fifty_numbers_also_across_a_partition(make_bed):
    bed = make_bed(2 * BOXES)  # boxes in hosts 0-4, their phones in hosts 5-9
    nodes = {i: bed.node(i, config=CONFIG) for i in range(BOXES)}
    wait_ring(bed, nodes, timeout=90.0)
    rivals = rival_macs(2, set())
    batches = [[f"00156{i:01x}{j:06x}" for j in range(PER_BOX)] for i in range(BOXES)]
    batches[0][0], batches[1][0] = rivals  # the same first choice, asked of two boxes at once
    with ThreadPoolExecutor(BOXES) as pool:
        procs = [enrol(bed, BOXES + i, i, batches[i]) for i in range(BOXES)]
        results = [r for rs in pool.map(lambda p: rows(p, 180), procs) for r in rs]
    extensions = {r["mac"]: r["extension"] for r in results}
    assert len(extensions) == BOXES * PER_BOX
    assert len(set(extensions.values())) == BOXES * PER_BOX, extensions
    stats = enrol_stats(bed, nodes)
    assert stats["probes_in_use"] >= 1, stats  # one rival was refused its first choice
    notify = sorted(r["notify_s"] for r in results)
    print(f"\n50 phones: PnP SUBSCRIBE -> NOTIFY median {notify[25] * 1000:.1f} ms, "
          f"max {notify[-1] * 1000:.1f} ms; {stats}")

    # A partition: two phones that want the same (free) number enrol, one on each side.
    a_side, b_side = [0, 1, 2, 5, 6, 7], [3, 4, 8, 9]
    bed.partition(a_side, b_side)
    wait_ring(bed, {i: nodes[i] for i in (0, 1, 2)}, timeout=90.0)
    wait_ring(bed, {i: nodes[i] for i in (3, 4)}, timeout=90.0)
    mac_a, mac_b = rival_macs(2, set(extensions.values()))
    phone_a = enrol(bed, 5, 0, [mac_a], resync=150.0)
    phone_b = enrol(bed, 8, 3, [mac_b], resync=150.0)
    first_a, first_b = phone_a.stdout.readline(), phone_b.stdout.readline()
    assert first_a and first_b, (phone_a.stderr.read(), phone_b.stderr.read())
    before = {json.loads(first_a)["extension"], json.loads(first_b)["extension"]}
    assert len(before) == 1, before  # apart, each side gave it away: the case to settle
    bed.heal_all()
    healed = time.monotonic()
    took = wait_ring(bed, nodes, timeout=90.0)
    # The loser's box is told by the ring; its phone hears check-sync and fetches again
    # (and its client ends); the winner's phone hears nothing.
    phones = {mac_a: phone_a, mac_b: phone_b}
    wait_for("a phone re-provisioned", lambda: any(p.poll() is not None
                                                   for p in phones.values()), nodes, 200.0, 1.0)
    settled = time.monotonic() - healed
    loser = next(mac for mac, p in phones.items() if p.poll() is not None)
    winner = ({mac_a, mac_b} - {loser}).pop()
    phones[winner].terminate()
    rest, _ = phones[winner].communicate(timeout=10)
    assert not rest.strip(), rest  # no check-sync for the winner
    resync = rows(phones[loser], 10)
    assert len(resync) == 1 and resync[0]["resync"], f"no check-sync for either phone: {resync}"
    new = resync[0]["extension"]
    assert new not in before and new not in extensions.values(), (new, before)
    stats = enrol_stats(bed, nodes)
    assert stats["lost"] == 1 and stats["check_sync_sent"] == 1, stats
    print(f"partition: both sides gave {before.pop()}; one ring again {took:.1f}s after the "
          f"heal; {loser} re-provisioned as {new} within {settled:.1f}s of it, {winner} kept it")
