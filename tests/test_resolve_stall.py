"""Name resolution must not stall the box (issue 7, point 7).

In the field no DNS server answers. Here the box's namespace has a resolv.conf naming a
server inside the bed's subnet that nobody runs (its address has a static neighbour entry,
so the queries leave and vanish, as on a real link). A phone sends INVITEs naming hosts that
do not resolve, over and over, while other phones (sipp) register and call through the same
box: they must succeed, and the senders of the unresolvable names must get a SIP error.
With a blocking lookup on the event loop each of those INVITEs stalls the box for the
resolver's whole timeout (10 s here) and the other phones' transactions time out.
"""

from __future__ import annotations

import socket
import subprocess
import threading

from marks import BED
from meshbed import MeshBed
from meshbed.fixtures import make_bed_fixture  # noqa: F401  (fixture make_bed)
from phones.nsexec import in_netns
from test_mesh_calls import assert_call, callee, logs

pytestmark = BED
DEAD_DNS = "10.99.0.250"  # inside the bed's subnet; nothing answers there
FLOOD_MAX = 300  # INVITEs at most (one each 0.1 s: bounded in count and time)


class Flood:
    """INVITEs from host i with a Route naming a host that does not resolve (a new name
    each time, and one name again and again), until stopped; collects the answers."""

    def __init__(self, bed: MeshBed, i: int, box: str) -> None:
        self.sock = in_netns(bed.ns(i), lambda: socket.socket(socket.AF_INET,
                                                              socket.SOCK_DGRAM))
        self.sock.bind((bed.addr(i), 0))
        self.sock.settimeout(0.1)
        self.box, self.here = box, bed.addr(i)
        self.sent = 0
        self.answers: list[bytes] = []
        self.started = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _invite(self, k: int) -> bytes:
        name = f"dead-{k}.field" if k % 2 else "dead.field"
        port = self.sock.getsockname()[1]
        return (f"INVITE sip:7000@{self.box}:5060 SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {self.here}:{port};branch=z9hG4bKflood{k};rport\r\n"
                f"Route: <sip:{name};lr>\r\nMax-Forwards: 70\r\n"
                f"From: <sip:6000@{self.box}>;tag=f{k}\r\nTo: <sip:7000@{self.box}>\r\n"
                f"Call-ID: flood-{k}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n").encode()

    def _run(self) -> None:
        while not self._stop.is_set() and self.sent < FLOOD_MAX:
            self.sock.sendto(self._invite(self.sent), (self.box, 5060))
            self.sent += 1
            if self.sent == 20:
                self.started.set()
            try:
                while True:
                    self.answers.append(self.sock.recv(65536))
            except (TimeoutError, BlockingIOError):
                pass
        self.started.set()

    def __enter__(self) -> Flood:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.sock.close()


def test_unresolvable_names_do_not_stall_other_phones(make_bed):
    bed: MeshBed = make_bed(2)
    bed.etc_file(0, "resolv.conf", f"nameserver {DEAD_DNS}\noptions timeout:5 attempts:2\n")
    subprocess.run(["ip", "-n", bed.ns(0), "neigh", "replace", DEAD_DNS, "lladdr",
                    "02:00:00:99:02:50", "dev", "eth0", "nud", "permanent"], check=True,
                   timeout=10)
    node = bed.node(0, "--no-discovery", config="[sip]\nt1_ms = 200\n")
    nodes = {0: node}
    with Flood(bed, 1, bed.addr(0)) as flood:
        assert flood.started.wait(30)
        # Meanwhile: a phone registers and another calls it, twice, through the same box.
        uas = callee(bed, 1, node, "2601", calls=2)
        for _ in range(2):
            assert_call(bed, 1, node, "2601", nodes)
        assert uas.wait().ok, logs(nodes)
        assert flood.sent < FLOOD_MAX, "the flood was over before the calls were made"
    failed = [a for a in flood.answers if a.startswith(b"SIP/2.0 503 Cannot resolve dead")]
    assert failed, f"no 503 for the unresolvable names ({len(flood.answers)} answers)\n" \
                   f"{logs(nodes)}"
