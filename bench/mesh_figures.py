"""Mesh figures on the namespace test bed: real nodes, real mDNS, sipp phones (prints; never
asserts). Needs root (network namespaces), sipp and nftables.

    sudo .venv/bin/python bench/mesh_figures.py [--calls 100] [--quick]

1. call setup time, INVITE sent -> 180 and -> 200 (median, p99), through the overlay with
   2, 5 and 10 boxes (caller on box 1, callee on the last box), against the same call with
   caller and callee on one box. Two overlay runs per size: every call to a new extension
   (each call looks the extension up in the ring), and every call to one extension (after
   the first, the box's 5 s lookup cache answers). The callee is a sipp that answers at
   once; calls are paced (20/s, at most 5 at a time) so the figure is latency, not queueing.
2. time from a node's start to "ready" for the 1st, 5th and 10th box started (one after
   the other, each once the one before was ready): "on the ring" is the moment the ring
   of all boxes started so far is whole as their status shows it; "routes" the end of the
   first call from a phone on the new box to a phone on box 1 that succeeds.
3. time to heal a partition of 10 boxes into 5 + 5: the two rings form, stay apart
   `--apart` seconds, then the cut is removed: seconds until one ring of ten, and until
   a call across succeeds.
4. call setup as in 1 from a phone with the box as its outbound proxy (every INVITE with
   `Route: <sip:BOX;lr>`), one box and 5 boxes (`--outbound` runs this figure alone).

Every wait is bounded; a figure that could not be taken prints as n/a with the reason.
Only the bed's own addresses (10.99.0.0/16 inside namespaces) carry traffic.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from meshbed import MeshBed, netns_available, nft_available  # noqa: E402
from phones.node import NodeProcess  # noqa: E402
from phones.ports import free_port  # noqa: E402
from phones.sipp import SippUas, sipp_binary  # noqa: E402

from appliance.control import query  # noqa: E402

UAC = BENCH / "sipp" / "uac_setup.xml"
UAC_OUTBOUND = BENCH / "sipp" / "uac_setup_outbound.xml"
UAS = BENCH / "sipp" / "uas_at_once.xml"
REGISTER = BENCH / "sipp" / "register_many.xml"
RATE, LIMIT = 20, 5  # calls per second, calls at a time
SIZES = (2, 5, 10)
CONFIG = "[sip]\nt1_ms = 200\n"


class Unmeasured(Exception):
    """A figure could not be taken (the message says why)."""


# -- helpers ----------------------------------------------------------------------------------
def ring_whole(nodes: list[NodeProcess]) -> bool:
    """Following first successors from box 1 visits every box given once, and no successor
    list names a box outside them (status read through each node's control socket: no
    network involved)."""
    try:
        states = [query(n.data_dir / "control.sock", timeout=2.0)["overlay"] for n in nodes]
    except (OSError, ValueError, KeyError):
        return False
    by_addr = {s["address"]: s for s in states}
    if len(nodes) == 1:
        return len(by_addr) == 1
    here, seen = states[0]["address"], set()
    for _ in range(len(nodes)):
        succs = by_addr.get(here, {}).get("successors") or []
        if not succs:
            return False
        here = succs[0].split("@", 1)[1]
        seen.add(here)
    listed = {x.split("@", 1)[1] for st in states for x in st["successors"]}
    return here == states[0]["address"] and seen == set(by_addr) and listed <= seen


def wait(check: Callable[[], bool], timeout: float, what: str, poll: float = 0.05) -> float:
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            raise Unmeasured(f"{what}: not within {timeout:.0f}s")
        time.sleep(poll)
    return time.monotonic() - t0


def quantiles(values: list[float]) -> str:
    if not values:
        return "n/a (no answers)"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return f"median {statistics.median(ordered):5.2f} ms, p99 {p99:6.2f} ms (n={len(ordered)})"


class Phones:
    """One answering sipp per host, registering any number of extensions to its box."""

    def __init__(self, bed: MeshBed, workdir: Path) -> None:
        self.bed = bed
        self.workdir = workdir
        self.uas: dict[int, SippUas] = {}

    def register(self, i: int, node: NodeProcess, extensions: list[str]) -> None:
        uas = self.uas.get(i)
        if uas is None:
            uas = self.uas[i] = self.bed.sipp_uas(i, UAS, calls=1_000_000, timeout=3600)
        inf = self.workdir / f"ext-{i}-{extensions[0]}.csv"
        inf.write_text("SEQUENTIAL\n" + "".join(f"{e};\n" for e in extensions))
        done = self.bed.sipp(i, REGISTER, node.target, calls=len(extensions),
                             keys={"contact_port": str(uas.port)},
                             extra_args=["-inf", str(inf), "-r", "50"], timeout=30)
        if not done.ok:
            raise Unmeasured(f"registering {len(extensions)} extensions failed: "
                             f"{done.logs[:2000]}")

    def call_ok(self, i: int, node: NodeProcess, extension: str) -> bool:
        """One call from host i through node to the extension (no talking): did it work?"""
        inf = self.workdir / f"one-{extension}.csv"
        inf.write_text(f"SEQUENTIAL\n{extension};\n")
        return self.bed.sipp(i, UAC, node.target, extra_args=["-inf", str(inf)],
                             timeout=10).ok

    def setup_times(self, i: int, node: NodeProcess, extensions: list[str],
                    calls: int, scenario: Path = UAC) -> tuple[list[float], list[float], int]:
        """Calls from host i through node to the extensions in turn: (ms to 180, ms to 200,
        failed calls)."""
        inf = self.workdir / f"call-{i}-{extensions[0]}-{len(extensions)}.csv"
        inf.write_text("SEQUENTIAL\n" + "".join(
            f"{extensions[k % len(extensions)]};\n" for k in range(calls)))
        port = free_port()
        result = self.bed.sipp(i, scenario, node.target, calls=calls, port=port, timeout=120,
                               extra_args=["-inf", str(inf), "-r", str(RATE), "-l", str(LIMIT)])
        trace = self.bed.workdir / f"sipp-{scenario.stem}-{port}" / "messages.log"
        ringing, answered = setup_delays(trace.read_text(errors="replace") if trace.exists()
                                         else "")
        failed = calls - len(answered) if result.returncode in (0, 1) else calls
        return ringing, answered, failed


BLOCK = re.compile(r"^-{20,} (\S+ \S+)\n\w+ message (sent|received)[^\n]*\n\n([^\n]*)\n"
                   r"(.*?)(?=^-{20,} |\Z)", re.M | re.S)


def setup_delays(trace: str) -> tuple[list[float], list[float]]:
    """From a sipp message trace (microsecond time stamps): per call, ms from the first
    INVITE sent to the first 180 and to the first 200 of that INVITE."""
    sent: dict[str, datetime] = {}
    ringing: dict[str, float] = {}
    answered: dict[str, float] = {}
    for stamp, direction, first, rest in BLOCK.findall(trace):
        call_id = re.search(r"^Call-ID:\s*(\S+)", rest, re.M | re.I)
        cseq = re.search(r"^CSeq:\s*\d+\s+(\w+)", rest, re.M | re.I)
        if call_id is None or cseq is None or cseq.group(1) != "INVITE":
            continue
        cid, when = call_id.group(1), datetime.fromisoformat(stamp)
        if direction == "sent" and first.startswith("INVITE"):
            sent.setdefault(cid, when)
        elif direction == "received" and cid in sent:
            ms = (when - sent[cid]).total_seconds() * 1000
            if first.startswith("SIP/2.0 180"):
                ringing.setdefault(cid, ms)
            elif first.startswith("SIP/2.0 200"):
                answered.setdefault(cid, ms)
    return list(ringing.values()), list(answered.values())


# -- the figures ------------------------------------------------------------------------------
def figures(workdir: Path, calls: int, apart: float, quick: bool) -> None:
    sizes = (2, 5) if quick else SIZES
    n = max(sizes)
    with MeshBed(n, workdir=workdir) as bed:
        phones = Phones(bed, workdir)
        nodes: list[NodeProcess] = []
        ready: dict[int, tuple[float, float, float]] = {}
        setup: dict[str, str] = {}

        def start_box() -> None:
            """Starts the next box; its start -> up / on the ring / routing times."""
            k = len(nodes)
            t0 = time.monotonic()
            node = bed.node(k, config=CONFIG)
            up = time.monotonic() - t0
            nodes.append(node)
            if k == 0:  # box 1 holds the phone every box calls to show that it routes
                phones.register(0, node, ["7999"])
            wait(lambda: ring_whole(nodes), 60, f"a ring of {k + 1}")
            on_ring = time.monotonic() - t0
            wait(lambda: phones.call_ok(k, node, "7999"), 60,
                 f"box {k + 1} routing a call to box 1", poll=0.2)
            ready[k + 1] = (up, on_ring, time.monotonic() - t0)

        try:
            start_box()
        except Unmeasured as exc:
            print(f"box 1: {exc}")
            return
        node0 = nodes[0]
        local = [f"71{j:03d}" for j in range(calls)]
        phones.register(0, node0, local)
        r180, r200, failed = phones.setup_times(0, node0, local, calls)
        setup["1 box (caller and callee on it)"] = (
            f"-> 180 {quantiles(r180)}; -> 200 {quantiles(r200)}; failed {failed}")

        for size in sizes:
            while len(nodes) < size:
                try:
                    start_box()
                except Unmeasured as exc:
                    print(f"box {len(nodes)}: {exc}")
                    return
            last = size - 1
            fresh = [f"7{size:02d}{j:03d}" for j in range(calls)]
            phones.register(last, nodes[last], fresh)
            time.sleep(1.0)  # records placed and replicated
            for label, extensions in ((f"{size} boxes, new extension each call", fresh),
                                      (f"{size} boxes, one extension (cached)", fresh[:1])):
                r180, r200, failed = phones.setup_times(0, nodes[0], extensions, calls)
                setup[label] = (f"-> 180 {quantiles(r180)}; -> 200 {quantiles(r200)}; "
                                f"failed {failed}")

        print(f"\n1. call setup, INVITE sent -> 180 / -> 200, {calls} calls each "
              f"({RATE}/s, at most {LIMIT} at a time)")
        for label, text in setup.items():
            print(f"   {label:<40} {text}")

        print("\n2. node start -> ready (seconds: process up / on the ring / first call "
              "routed to box 1)")
        for k in (1, 5, 10):
            if k in ready:
                up, on_ring, routes = ready[k]
                print(f"   box {k:>2}: up {up:5.2f}  on the ring {on_ring:5.2f}  "
                      f"routes {routes:5.2f}")

        print(f"\n3. partition of {n} boxes into {n // 2} + {n - n // 2}, apart {apart:.0f}s, "
              "then healed")
        try:
            heal_figure(bed, nodes, phones, apart)
        except Unmeasured as exc:
            print(f"   n/a: {exc}")


def outbound_figure(workdir: Path, calls: int, size: int = 5) -> None:
    """Figure 4: call setup from outbound-proxy phones, on one box and across `size`."""
    print(f"\n4. call setup with outbound-proxy phones (Route: <sip:BOX;lr>), INVITE sent "
          f"-> 180 / -> 200, {calls} calls each ({RATE}/s, at most {LIMIT} at a time)")
    with MeshBed(size, workdir=workdir / "outbound") as bed:
        phones = Phones(bed, workdir)
        nodes = [bed.node(k, config=CONFIG) for k in range(size)]
        try:
            wait(lambda: ring_whole(nodes), 60, f"a ring of {size}")
        except Unmeasured as exc:
            print(f"   n/a: {exc}")
            return
        for label, host in (("1 box (caller and callee on it)", 0),
                            (f"{size} boxes, new extension each call", size - 1)):
            extensions = [f"74{host}{j:03d}" for j in range(calls)]
            phones.register(host, nodes[host], extensions)
            time.sleep(1.0)  # records placed and replicated
            r180, r200, failed = phones.setup_times(0, nodes[0], extensions, calls,
                                                    UAC_OUTBOUND)
            print(f"   {label:<40} -> 180 {quantiles(r180)}; -> 200 {quantiles(r200)}; "
                  f"failed {failed}")


def heal_figure(bed: MeshBed, nodes: list[NodeProcess], phones: Phones, apart: float) -> None:
    if nft_available() is not None:
        raise Unmeasured(nft_available() or "")
    n = len(nodes)
    a_side, b_side = list(range(n // 2)), list(range(n // 2, n))
    phones.register(n - 1, nodes[n - 1], ["7888"])
    bed.partition(a_side, b_side)
    t0 = time.monotonic()
    wait(lambda: ring_whole([nodes[i] for i in a_side]) and
         ring_whole([nodes[i] for i in b_side]), 60, "two rings after the cut", poll=0.1)
    two = time.monotonic() - t0
    time.sleep(max(0.0, apart - two))
    bed.heal_all()
    t1 = time.monotonic()
    whole = wait(lambda: ring_whole(nodes), 60, "one ring after the heal", poll=0.1)
    across = whole + wait(lambda: phones.call_ok(0, nodes[0], "7888"), 60, "a call across",
                          poll=0.2)
    print(f"   two rings {two:.1f}s after the cut; after the heal: one ring in {whole:.1f}s, "
          f"a call across done {time.monotonic() - t1:.1f}s (first success at {across:.1f}s)")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100, help="calls per setup figure")
    parser.add_argument("--apart", type=float, default=20.0,
                        help="seconds the two halves stay apart")
    parser.add_argument("--quick", action="store_true", help="2 and 5 boxes only, 30 calls")
    parser.add_argument("--outbound", action="store_true",
                        help="only figure 4 (outbound-proxy phones)")
    args = parser.parse_args(argv)
    reason = netns_available() or (None if sipp_binary() else "sipp is not installed")
    if reason is not None:
        print(f"mesh figures: n/a ({reason})")
        return {}
    calls = min(args.calls, 30) if args.quick else max(1, min(args.calls, 500))
    t0 = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="mesh-fig-"))
    try:
        if not args.outbound:
            figures(workdir, calls, args.apart, args.quick)
        outbound_figure(workdir, calls)
    except Exception:
        print(f"(logs and traces kept in {workdir})")
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n(mesh figures took {time.monotonic() - t0:.0f}s)")
    return {}


if __name__ == "__main__":
    main()
