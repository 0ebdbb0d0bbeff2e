"""The playbook applied with `-c local` on a box of the namespace test bed, as an operator
would on the box itself: the box's /etc, /opt, /var and /usr/local are overlays that vanish
with the test (the machine's own files are never touched), the installed unit's command line
runs as its user with its capabilities, and the node joins the ring of two boxes certified by
the same deployment CA (the one the PKI role used) and carries a call.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from marks import BED
from meshbed import MeshBed
from meshbed.fixtures import make_bed_fixture  # noqa: F401  (fixture make_bed)
from provkit import ansible
from test_mesh_calls import FAST, assert_call, callee, one_ring, wait_for

from appliance.control import query
from appliance.pki import main as ca_main

IN_BOX = Path(ansible.__file__).with_name("in_box.sh")
BOX = 2  # the host the playbook provisions; 0 and 1 are boxes certified beforehand
PATIENCE = 60.0  # seconds: a deadline for outcomes, not a figure
pytestmark = [
    *BED,
    pytest.mark.provision,  # about 3 minutes (mostly the playbook): make test-provision
    pytest.mark.skipif(ansible.ansible_missing() is not None,
                       reason=str(ansible.ansible_missing())),
]


class ProvisionedBox:
    """The node the playbook installed, running in host BOX's namespaces (its pid is the
    node's own: every step before it execs)."""

    def __init__(self, bed: MeshBed, proc: subprocess.Popen[bytes]) -> None:
        self.bed, self.proc = bed, proc
        self.host, self.port = bed.addr(BOX), 5060
        self.target = f"{self.host}:{self.port}"
        self._out: list[bytes] = []
        self.ready = threading.Event()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in iter(self.proc.stderr.readline, b""):
            self._out.append(line)
            if b"ready" in line:
                self.ready.set()

    def log(self) -> str:
        return b"".join(self._out).decode(errors="replace")

    def status(self) -> dict[str, Any]:
        """`meshsip status --json` on the box, as its operator runs it (in its namespaces)."""
        done = subprocess.run(["nsenter", "-t", str(self.proc.pid), "-m", "-n", "--",
                               "meshsip", "status", "--json"], capture_output=True, text=True,
                              timeout=20)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


def test_playbook_local_on_a_box_joins_the_ring_and_carries_a_call(make_bed, tmp_path):
    bed = make_bed(3)
    pki = tmp_path / "pki"
    assert ca_main(["init", str(pki / "ca"), "--name", "Provisioning Test CA"]) == 0
    nodes: dict[int, Any] = {}
    for i in (0, 1):
        data = tmp_path / f"box{i}"
        assert ca_main(["issue", str(pki / "ca"), "--out", str(data), "--name", f"box{i}"]) == 0
        nodes[i] = bed.node(i, config=FAST, data_dir=data)

    wheels = ansible.wheelhouse()
    playbook = [str(ansible.BIN / "ansible-playbook"), "-c", "local", "-i", "box2,",
                str(ansible.PROVISIONING / "site.yml"), "-e", "ansible_become=false",
                "-e", f"meshsip_pki_dir={pki}", "-e", f"meshsip_node_wheelhouse_dir={wheels}",
                # the machine's own network and clock stay as they are: those parts are off
                "-e", "meshsip_network_ethernet=false", "-e", "meshsip_network_time=false"]
    log = tmp_path / "playbook.log"
    t0 = time.monotonic()
    proc = bed.run(BOX, ["unshare", "--mount", "--propagation", "private", "sh",
                         str(IN_BOX), str(log), *playbook],
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                   cwd=ansible.PROVISIONING, env=ansible.env())
    box = nodes[BOX] = ProvisionedBox(bed, proc)
    wait_for("the provisioned node says ready", lambda: box.ready.is_set() or
             proc.poll() is not None, {}, 900)
    assert box.ready.is_set(), f"{box.log()}\n{log.read_text() if log.exists() else ''}"
    print(f"provision figures: -c local on a bed box, playbook to ready "
          f"{time.monotonic() - t0:.0f} s")
    assert "starting as meshsip" in box.log()

    def states() -> dict[int, dict[str, Any]]:
        out = {i: query(nodes[i].data_dir / "control.sock", timeout=3.0)["overlay"]
               for i in (0, 1)}
        return {**out, BOX: box.status()["overlay"]}

    wait_for("one ring of the two boxes and the provisioned one",
             lambda: one_ring(states()), nodes, PATIENCE)
    assert states()[BOX]["mode"] == "ca"
    uas = callee(bed, 0, nodes[0], "2001")
    assert_call(bed, BOX, box, "2001", nodes)  # a phone on the provisioned box calls box 0's
    assert uas.wait().ok
    assert os.path.exists(pki / "nodes" / "box2" / "node.crt")  # issued on the controller
