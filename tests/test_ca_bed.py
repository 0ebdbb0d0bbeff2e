"""Only our boxes join: a deployment in CA mode on the namespace test bed.

Real node processes with discovery on (real mDNS, one overlay name for all), real sipp
phones. Three deployment boxes certified with `meshsip ca issue`, a fourth that is
revoked halfway, and two intruders: one with no certificate (open mode) and one certified
by another CA. The intruders, and the fourth box once revoked, must not be in any
deployment box's ring, must not store (a phone registered on them cannot be called),
fetch (their phones cannot reach deployment phones) or route (no call through them
reaches a deployment phone); deployment calls keep working throughout. The revocation
list is given to ONE running box: the others must get it through the overlay.
"""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from marks import BED
from meshbed import MeshBed
from meshbed.fixtures import make_bed_fixture  # noqa: F401  (fixture make_bed)
from phones.node import NodeProcess
from test_mesh_calls import (
    FAST,
    assert_call,
    call,
    callee,
    logs,
    one_ring,
    primary_for,
    wait_for,
)

from appliance.control import query
from appliance.pki import main as ca_main

pytestmark = BED
DEPLOYMENT = (0, 1, 2)
NO_CERT, OTHER_CA, REVOKED = 3, 4, 5
PATIENCE = 60.0  # seconds: a deadline for outcomes, not a figure


def overlay(node: NodeProcess) -> dict[str, Any]:
    return query(node.data_dir / "control.sock", timeout=3.0)["overlay"]


def states(nodes: dict[int, NodeProcess], hosts: tuple[int, ...]) -> dict[int, dict[str, Any]]:
    return {i: overlay(nodes[i]) for i in hosts}


def neighbours(state: dict[str, Any]) -> set[str]:
    """Addresses of the boxes a node lists as successors or predecessor."""
    listed = [*state["successors"], *filter(None, [state["predecessor"]])]
    return {ref.split("@", 1)[1] for ref in listed}


def provision(tmp: Path) -> dict[int, Path]:
    """Data directories: the deployment's (and the box to be revoked) from one CA, one
    from another CA, and one with nothing (open mode)."""
    assert ca_main(["init", str(tmp / "ca"), "--name", "Relief Test CA"]) == 0
    assert ca_main(["init", str(tmp / "other-ca")]) == 0
    dirs = {i: tmp / f"box{i}" for i in range(6)}
    for i in (*DEPLOYMENT, REVOKED):
        assert ca_main(["issue", str(tmp / "ca"), "--out", str(dirs[i]), "--name", f"box {i}"]) == 0
    assert ca_main(["issue", str(tmp / "other-ca"), "--out", str(dirs[OTHER_CA])]) == 0
    return dirs


def refused(bed: MeshBed, i: int, node: NodeProcess, extension: str,
            nodes: dict[int, NodeProcess]) -> None:
    """A call from host i through `node` to `extension` gets a final failure (403, 404, 480)."""
    result, _ = call(bed, i, node, extension, scenario="uac_refused")
    assert result.ok, f"host {i} -> {extension} was not refused\n{result.logs}\n{logs(nodes)}"


def assert_outside(nodes: dict[int, NodeProcess], bed: MeshBed, out: tuple[int, ...],
                   inside: tuple[int, ...]) -> None:
    """No box of `inside` lists a box of `out`; `inside` forms one ring."""
    st = states(nodes, inside)
    assert one_ring(st), f"no ring of {inside}: {st}"
    outsiders = {f"{bed.addr(i)}:5060" for i in out}
    for i, s in st.items():
        assert not neighbours(s) & outsiders, f"host {i} lists an intruder: {s}\n{logs(nodes)}"


def test_only_certified_unrevoked_boxes_join_store_fetch_and_route(make_bed, tmp_path):
    bed = make_bed(6)
    dirs = provision(tmp_path)
    with ThreadPoolExecutor(6) as pool:
        nodes = dict(enumerate(pool.map(
            lambda i: bed.node(i, config=FAST, data_dir=dirs[i]), range(6))))
    members = (*DEPLOYMENT, REVOKED)
    intruders = (NO_CERT, OTHER_CA)
    wait_for("one ring of the certified boxes",
             lambda: one_ring(states(nodes, members)), nodes, PATIENCE)
    st = states(nodes, tuple(range(6)))
    assert [st[i]["mode"] for i in range(6)] == ["ca", "ca", "ca", "open", "ca", "ca"]
    assert "only boxes certified by 'Relief Test CA' may join" in nodes[0].log()
    assert "open: any box on the link may join" in nodes[NO_CERT].log()

    # Phones: one on a deployment box, one on the box to be revoked, one on each intruder.
    # The deployment phone's record lives on the box to be revoked, which will still hold
    # it when revoked: its calls must be refused by the boxes they reach.
    ext = next(e for e in (f"2{k:03d}" for k in range(1000))
               if primary_for(e, states(nodes, members)) == REVOKED)
    deployment_calls = 3
    uas = callee(bed, 1, nodes[1], ext, calls=deployment_calls)
    uas_revoked = callee(bed, REVOKED, nodes[REVOKED], "5001", calls=1)
    for i in intruders:
        reg = bed.sipp(i, "register", nodes[i].target, service=f"{i}001",
                       keys={"contact_port": "5999"})
        assert reg.ok, reg.logs
    assert_call(bed, 0, nodes[0], ext, nodes)  # 1
    assert_call(bed, 2, nodes[2], "5001", nodes)  # the fourth box is in, for now
    assert uas_revoked.wait().ok

    # Intruders: not on the ring, their records not found, they find nothing.
    assert_outside(nodes, bed, intruders, members)
    for i in intruders:
        assert overlay(nodes[i])["successors"] == [], f"intruder {i} is on a ring"
        refused(bed, 0, nodes[0], f"{i}001", nodes)  # cannot store
        refused(bed, i, nodes[i], ext, nodes)  # cannot fetch, cannot route
    # (which boxes the intruders tried depends on mDNS timing: counted over the deployment)
    assert sum(s["refusals"]["certificate"] for s in states(nodes, DEPLOYMENT).values()) > 0

    # Revoke the fourth box; the list goes to box 2 only, while it runs.
    assert ca_main(["revoke", str(tmp_path / "ca"), str(dirs[REVOKED] / "node.crt")]) == 0
    shutil.copy(tmp_path / "ca" / "revoked.crl", dirs[2] / "revoked.crl")
    wait_for("the revocation on every deployment box, and a ring without the revoked box",
             lambda: all(s["crl_number"] == 1 for s in states(nodes, DEPLOYMENT).values())
             and one_ring(states(nodes, DEPLOYMENT)), nodes, PATIENCE)
    assert_call(bed, 0, nodes[0], ext, nodes)  # 2
    assert_outside(nodes, bed, (*intruders, REVOKED), DEPLOYMENT)
    refused(bed, 1, nodes[1], "5001", nodes)  # its record is not served any more
    refused(bed, REVOKED, nodes[REVOKED], ext, nodes)  # no call through it
    for i in (*intruders, REVOKED):
        assert f"caller{i} -> {ext}" not in nodes[1].log(), f"a call from host {i} got through"
    # counted once the revoked box speaks again (its stabilize or merge check, on its own time)
    wait_for("a message of the revoked box refused and counted",
             lambda: sum(s["refusals"]["revoked"]
                         for s in states(nodes, DEPLOYMENT).values()) > 0, nodes, PATIENCE)
    for i in (0, 1):
        assert (dirs[i] / "revoked.crl").exists(), f"host {i} did not keep the list it got"
    assert_call(bed, 2, nodes[2], ext, nodes)  # 3: deployment calls kept working
    assert uas.wait().ok
