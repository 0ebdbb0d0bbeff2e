"""A REGISTER flood from one source does not take a box down (issue 9, part 5).

A real node in a namespace; a flooder in another sends REGISTERs for distinct users at
about ten times what the box can handle (bounded in count and time, tests/phones/flood.py).
Meanwhile phones in other namespaces register and call through the box (sipp). They must
succeed, the box's resident memory must stay bounded, and once the flood stops a phone at
the flooder's address registers again. Figures (rates, RSS) are printed (run with -s).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from marks import BED
from meshbed.fixtures import make_bed_fixture  # noqa: F401  (fixture make_bed)

pytestmark = BED
FLOOD = Path(__file__).resolve().parent / "phones" / "flood.py"
FLOOD_RATE = 10_000  # REGISTERs a second: about 10x what one box handles from all sources
FLOOD_COUNT, FLOOD_SECONDS = 400_000, 40.0  # bounds; stopped once the phones are done
RSS_BOUND_MIB = 200  # an idle node is about 40 MiB


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


class RssWatch(threading.Thread):
    """Samples a process's RSS every 0.2 s until stopped; keeps the highest."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            self.peak = max(self.peak, rss_mib(self.pid))


def counters(bed, node) -> dict[str, int]:  # noqa: ANN001
    out = bed.exec(0, [sys.executable, "-m", "appliance.cli", "status", "--json",
                       "--data-dir", str(node.data_dir)], timeout=20)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["counters"]


def test_a_register_flood_from_one_source_leaves_other_phones_working(make_bed):
    bed = make_bed(4)  # 0: the box, 1: the flooder, 2: a callee, 3: a caller
    node = bed.node(0, config="[sip]\nt1_ms = 200\n")
    assert node.proc is not None
    uas = bed.sipp_uas(2, "uas_answer", service="2001", calls=1, timeout=120,
                       keys={"proxy": node.target})
    done = bed.sipp(2, "register", node.target, service="2001",
                    keys={"contact_port": str(uas.port)})
    assert done.ok, done.logs
    idle = rss_mib(node.proc.pid)
    watch = RssWatch(node.proc.pid)
    watch.start()
    flooder = bed.run(1, [sys.executable, str(FLOOD), bed.addr(0), str(node.port),
                          "--bind", bed.addr(1), "--rate", str(FLOOD_RATE),
                          "--count", str(FLOOD_COUNT), "--seconds", str(FLOOD_SECONDS)],
                      stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(3.0)  # the flood is on, the per-source cap reached
        during = bed.sipp(3, "register", node.target, service="3001", timeout=30)
        assert during.ok, f"a phone could not register during the flood\n{during.logs}"
        call = bed.sipp(3, "uac_call", node.target, service="2001",
                        keys={"caller": "3001"}, timeout=30)
        assert call.ok, (f"a call failed during the flood\n{call.logs}\n--- callee ---\n"
                         f"{uas.report()}\n--- node ---\n{node.log()[-3000:]}")
        still_on = flooder.poll() is None  # else the bounds ended it first (a slow machine)
        flooder.terminate()
        out, _ = flooder.communicate(timeout=FLOOD_SECONDS + 30)
    finally:
        watch.done.set()
        watch.join()
    flood = json.loads(out.strip().splitlines()[-1])
    seen = counters(bed, node)
    print(f"\nflood: {flood['sent']} REGISTERs in {flood['seconds']} s "
          f"({flood['sent'] / flood['seconds']:,.0f}/s), answers {flood['answers']}; "
          f"box RSS idle {idle:.0f} MiB, peak {watch.peak:.0f} MiB; "
          f"dropped by the per-source limit {seen['sip_rate_limited']}, "
          f"registrations {seen['registrations']}"
          f"{'' if still_on else '; the flood ended before the phones did'}")
    assert seen["sip_rate_limited"] > 0
    assert watch.peak < RSS_BOUND_MIB, f"RSS reached {watch.peak:.0f} MiB"
    # The flood is over: a phone at the flooder's address is served again.
    after = bed.sipp(1, "register", node.target, service="1001", timeout=30)
    assert after.ok, f"the flooder's address stayed locked out\n{after.logs}"
