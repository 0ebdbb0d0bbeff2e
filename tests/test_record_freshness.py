"""A box restarted with its clock an hour behind (a Pi with no RTC) publishes its phone's
record above the versions the ring still holds, so the phone is reachable at once.

Real `meshsip` processes on loopback (no discovery, seeds); the restarted box runs under
libfaketime with its wall clock an hour back and its monotonic clock left alone (see
FIELD-NOTES "A clock that is wrong"). Before the restart the phone unregisters, so the
ring holds a tombstone of its record (kept TOMBSTONE_TTL = 600 s): with sequence numbers
from the wall clock, the re-registered phone's record was older than that tombstone and
every box answered 404 for it for minutes.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from phones.node import NodeFactory, NodeProcess
from phones.sipp import SippUas, run_sipp, sipp_binary
from test_mesh_loopback import one_ring, status, wait_for

from appliance.mesh import SEQUENCE_FILE

FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
pytestmark = [
    pytest.mark.phones,
    pytest.mark.skipif(sipp_binary() is None, reason="sipp not installed"),
    pytest.mark.skipif(not FAKETIME_LIB.exists(), reason="faketime not installed"),
]
HOUR_BEHIND = {"LD_PRELOAD": str(FAKETIME_LIB), "FAKETIME": "-1h",
               "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def call_until_answered(caller: NodeProcess, extension: str, tmp_path: Path,
                        nodes: list[NodeProcess], timeout: float = 30.0) -> int:
    """Calls `extension` from `caller` until one call is answered; returns the attempts."""
    deadline = time.monotonic() + timeout
    attempts = 0
    while True:
        attempts += 1
        call = run_sipp("uac_call", caller.target, service=extension,
                        keys={"caller": "3001"}, workdir=tmp_path)
        if call.returncode == 0:
            return attempts
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- node {n.port} ---\n{n.log()[-3000:]}" for n in nodes)
            raise AssertionError(f"no call to {extension} answered within {timeout}s "
                                 f"({attempts} tries)\n{call.logs}\n{logs}")
        time.sleep(1.0)


@pytest.mark.parametrize("counter", ["kept", "lost"])
def test_a_box_restarted_with_its_clock_behind_keeps_its_phone_reachable(
        start_node: NodeFactory, tmp_path: Path, counter: str) -> None:
    first = start_node(tmp_path, "--overlay", "fresh")
    seed = f"127.0.0.1:{first.port}"
    a, b = first, start_node(tmp_path, "--overlay", "fresh", "--seed", seed)
    owner = start_node(tmp_path, "--overlay", "fresh", "--seed", seed)
    nodes = [a, b, owner]
    wait_for("a ring of three", lambda: one_ring(nodes), nodes)
    phone = {"contact_port": "0"}
    with SippUas("uas_answer", service="3200", keys={"proxy": owner.target},
                 workdir=tmp_path, calls=3, timeout=180) as uas:
        phone["contact_port"] = str(uas.port)
        ok = run_sipp("register", owner.target, service="3200", keys=phone, workdir=tmp_path)
        assert ok.returncode == 0, ok.logs
        call_until_answered(a, "3200", tmp_path, nodes)
        # The phone leaves: its record becomes a tombstone on the ring.
        off = run_sipp("unregister", owner.target, service="3200", keys=phone,
                       workdir=tmp_path)
        assert off.returncode == 0, off.logs
        assert owner.stop() == 0
        if counter == "lost":  # the owner must learn its old versions from the ring
            (owner.data_dir / SEQUENCE_FILE).unlink()
        owner = start_node(tmp_path, "--overlay", "fresh", "--seed", seed, port=owner.port,
                           data_dir=owner.data_dir, env=HOUR_BEHIND)
        nodes = [a, b, owner]
        wait_for("the restarted box back on the ring", lambda: one_ring(nodes), nodes,
                 timeout=60.0)
        # The phone comes back and registers again: every other box reaches it.
        ok = run_sipp("register", owner.target, service="3200", keys=phone, workdir=tmp_path)
        assert ok.returncode == 0, ok.logs
        for caller in (a, b):
            call_until_answered(caller, "3200", tmp_path, nodes)
        assert uas.wait().returncode == 0
    assert status(owner)["overlay"]["counters"]["clock_adjusted"] >= 1  # it ran an hour behind
