"""Extensions are owned mesh-wide (docs/architecture.md, "Extensions are owned
mesh-wide"): three real boxes in network namespaces, sipp phones, and a laptop that is no
box of ours speaking the real overlay wire format (tests/forge_records.py). Counters are
read the way an operator would, `meshsip status --json` in the box's namespace.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from marks import BED
from meshbed import MeshBed
from meshbed.fixtures import make_bed_fixture  # noqa: F401  (fixture make_bed)
from phones.node import NodeProcess
from phones.sipp import SippUas
from test_mesh_calls import (
    FAST,
    assert_call,
    logs,
    one_ring,
    overlays,
    primary_for,
    status,
    wait_for,
)

REPO = Path(__file__).resolve().parent.parent
pytestmark = BED
EXT = "5001"
FIND_CACHE = 5.5  # a box remembers where an extension is for 5 s (appliance/mesh.py)


def register(bed: MeshBed, i: int, node: NodeProcess, scenario: str, uas: SippUas) -> None:
    """The phone in host i (answering on uas's port) registers EXT at node."""
    done = bed.sipp(i, scenario, node.target, service=EXT,
                    keys={"contact_port": str(uas.port), "contact_host": bed.addr(i)})
    assert done.ok, f"{scenario} from host {i} at {node.target}\n{done.logs}"


def registered_here(bed: MeshBed, i: int, node: NodeProcess) -> bool:
    return any(r["extension"] == EXT for r in status(bed, i, node)["registrations"])


def invites(uas: SippUas) -> int:
    text = uas.files["messages"].read_text(errors="replace") if uas.files[
        "messages"].exists() else ""
    return text.count(f"INVITE sip:{EXT}@")


def test_an_extension_belongs_to_one_box_and_moves_with_its_phone(make_bed):
    bed = make_bed(4)  # boxes in hosts 0-2; host 3 is a laptop that is no box of ours
    nodes = {i: bed.node(i, config=FAST) for i in range(3)}
    wait_for("one ring", lambda: one_ring(overlays(bed, nodes)), nodes, 90.0, poll=0.5)
    # phone A answers one call through box 1, then (moved, on another port) two via box 2
    phone_a = bed.sipp_uas(0, "uas_answer", service=EXT, calls=1, timeout=120,
                           keys={"proxy": nodes[0].target})
    moved_a = bed.sipp_uas(0, "uas_answer", service=EXT, calls=2, timeout=120,
                           keys={"proxy": nodes[1].target})
    phone_b = bed.sipp_uas(1, "uas_answer", service=EXT, calls=1, timeout=120,
                           keys={"proxy": nodes[1].target})
    # A registers 5001 on box 1; B (another address, Call-ID, no instance) on box 2: 403
    register(bed, 0, nodes[0], "register_instance", phone_a)
    register(bed, 1, nodes[1], "register_in_use", phone_b)
    assert not registered_here(bed, 1, nodes[1])
    states = overlays(bed, nodes)
    assert sum(s["counters"]["records_in_use"] for s in states.values()) >= 1
    first_call = time.monotonic()
    assert_call(bed, 2, nodes[2], EXT, nodes)  # from box 3: rings A only
    assert phone_a.wait().ok
    # A moves to box 2 with the same +sip.instance: it keeps 5001, box 1 lets go of it
    register(bed, 0, nodes[1], "register_instance", moved_a)
    wait_for("box 1 drops 5001", lambda: not registered_here(bed, 0, nodes[0]), nodes, 30.0)
    time.sleep(max(0.0, first_call + FIND_CACHE - time.monotonic()))
    assert_call(bed, 2, nodes[2], EXT, nodes)
    assert f"-> {EXT} (1 contact)" in nodes[1].log(), logs(nodes)

    # The laptop in host 3: its own record for 5001, one signed with the wrong key, one
    # naming another box as contact, and a Store replayed byte for byte.
    holder = primary_for(EXT, overlays(bed, nodes))
    before = overlays(bed, {holder: nodes[holder]})[holder]["counters"]
    out = bed.exec(3, [sys.executable, "tests/forge_records.py", bed.addr(3),
                       bed.addr(holder), overlays(bed, nodes)[holder]["node_id"], EXT],
                   cwd=REPO, timeout=30)
    assert out.returncode == 0, out.stderr
    answers = json.loads(out.stdout)
    assert answers["claim"] == {"accepted": 0, "rejected": 1, "in_use": 1}, answers
    assert answers["wrong_key"]["rejected"] == 1 and answers["wrong_key"]["accepted"] == 0
    assert answers["wrong_contact"]["rejected"] == 1, answers
    assert answers["free"]["accepted"] == 1 and answers["replay"] is None, answers
    after = overlays(bed, {holder: nodes[holder]})[holder]["counters"]
    for counter in ("records_in_use", "records_rejected", "records_bad_contact", "replay"):
        assert after[counter] > before[counter], (counter, before, after)
    assert_call(bed, 2, nodes[2], EXT, nodes)  # still A, on box 2
    assert moved_a.wait().ok
    phone_b.stop()
    assert invites(phone_b) == 0


def test_in_digest_mode_the_password_moves_the_extension(make_bed):
    bed = make_bed(2)
    users = bed.workdir / "users.toml"
    users.write_text(f'[users]\n"{EXT}" = "s3cret-{EXT}"\n')
    config = FAST + f'[registrar]\npolicy = "digest"\nusers_file = "{users}"\n'
    nodes = {i: bed.node(i, config=config) for i in range(2)}
    wait_for("one ring", lambda: one_ring(overlays(bed, nodes)), nodes, 90.0, poll=0.5)
    password = {"auth_user": EXT, "password": f"s3cret-{EXT}"}
    for i in (0, 1):  # the phone on box 1, then on box 2 (from another address)
        done = bed.sipp(i, "register_digest", nodes[i].target, service=EXT, keys=password)
        assert done.ok, f"digest REGISTER on box {i + 1}\n{done.logs}\n{logs(nodes)}"
    assert registered_here(bed, 1, nodes[1])
    wait_for("box 1 drops 5001", lambda: not registered_here(bed, 0, nodes[0]), nodes, 30.0)
