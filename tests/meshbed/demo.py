"""`make mesh-demo`: a bed of namespaces with a meshsip node in each, until Ctrl-C.

    sudo .venv/bin/python tests/meshbed/demo.py [--nodes 5] [--phones-to N]

Prints the addresses, writes a ready baresip config per namespace and says how to run it
and a shell in any namespace; then takes fault commands (cut, heal, partition, loss, delay,
down, up, ping, reset) until Ctrl-C or end of input, and tears everything down.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from phones.baresip import Baresip  # noqa: E402

from meshbed.bed import BedError, MeshBed, netns_available  # noqa: E402

HELP = """\
commands:  ping A B | cut A B | heal A B | partition 0,1 2,3,4 | heal_all
           loss PCT | delay MS [JITTER] | down A | up A | stats | reset | help
           (hosts by number; Ctrl-C or Ctrl-D ends the demo and tears everything down)"""


def say(text: str = "") -> None:
    print(text, flush=True)


def write_phone(bed: MeshBed, i: int, node_i: int, workdir: Path) -> Path:
    """A baresip config dir for a phone in namespace i, registered to the node on host
    node_i, with the stdio UI so it can be driven by hand (/dial sip:...)."""
    phone = Baresip(f"{1001 + i}", 5060, workdir=workdir / f"phone-{1001 + i}",
                    node_host=bed.addr(node_i), netns=bed.ns(i), bind=bed.addr(i))
    phone._write_config()  # the test harness's own config: the same phone as in the tests
    with open(phone.workdir / "config", "a") as f:
        f.write("module\t\t\tstdio.so\n")
    return phone.workdir


def command(bed: MeshBed, line: str) -> None:
    words = line.split()
    if not words:
        return
    cmd, args = words[0], words[1:]
    nums = [int(a) for a in args if a.lstrip("-").replace(".", "", 1).isdigit()]
    if cmd == "ping":
        say(f"  {args[0]} -> {args[1]}: {bed.ping(nums[0], nums[1], count=3, timeout=1.0)}")
    elif cmd == "cut":
        bed.cut(nums[0], nums[1])
    elif cmd == "heal":
        bed.heal(nums[0], nums[1])
    elif cmd == "partition":
        bed.partition([int(x) for x in args[0].split(",")], [int(x) for x in args[1].split(",")])
    elif cmd == "heal_all":
        bed.heal_all()
    elif cmd == "loss":
        bed.loss(float(args[0]))
    elif cmd == "delay":
        bed.delay(float(args[0]), float(args[1]) if len(args) > 1 else 0.0)
    elif cmd == "down":
        bed.link_down(nums[0])
    elif cmd == "up":
        bed.link_up(nums[0])
    elif cmd == "stats":
        say(f"  {bed.hub_stats() or 'kernel bridge (no user-space hub running)'}")
    elif cmd == "reset":
        bed.reset()
    else:
        say(HELP)
        return
    say("  ok")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5, help="namespaces, one node in each")
    parser.add_argument("--phones-to", type=int, default=None, metavar="N",
                        help="phone configs register to the node on host N (default: each "
                             "to its own namespace's node)")
    args = parser.parse_args(argv)
    reason = netns_available()
    if reason is not None:
        say(f"mesh-demo: {reason} (run it as root: sudo make mesh-demo)")
        return 1

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGINT too: a background
        signal.signal(sig, terminate)  # job starts with it ignored
    workdir = Path(tempfile.mkdtemp(prefix="mesh-demo-"))
    say(f"mesh-demo: building {args.nodes} namespaces on a bridge (work files in {workdir})")
    try:
        with MeshBed(args.nodes, workdir=workdir) as bed:
            say(f"  hub namespace {bed.hub}: bridge br0, ports "
                f"{', '.join(bed.ports.values())}  (built in {bed.build_seconds * 1000:.0f} ms)")
            say("starting `python -m appliance.cli run` (no config file) in each namespace")
            nodes = []
            for i in range(args.nodes):
                t0 = time.monotonic()
                nodes.append(bed.node(i))
                say(f"  host {i}: {bed.ns(i):<16} {bed.addr(i):<12} node on "
                    f"{nodes[i].target}, ready in {time.monotonic() - t0:.1f}s")
            say()
            say("in another terminal (as root):")
            say(f"  a shell in host 1:     ip netns exec {bed.ns(1)} bash")
            say(f"  ping host 2 from 1:    ip netns exec {bed.ns(1)} ping {bed.addr(2)}")
            say(f"  node 0 status:         {sys.executable} -m appliance.cli status "
                f"--data-dir {nodes[0].data_dir}")
            say(f"  node 0 status page:    ip netns exec {bed.ns(0)} chromium --headless "
                f"--no-sandbox --dump-dom http://{bed.addr(0)}/  (or curl, on port 80)")
            say("  a phone (baresip, tone as microphone, stdio UI; one per namespace):")
            for i in range(args.nodes):
                target = i if args.phones_to is None else args.phones_to
                phone_dir = write_phone(bed, i, target, workdir)
                say(f"    ip netns exec {bed.ns(i)} baresip -f {phone_dir}"
                    f"   # {1001 + i} on node {target}")
            say("    then type  /dial sip:1002@<its node's address>  in phone 1001's terminal")
            if args.phones_to is None:
                say("  (calls between phones on different nodes need the overlay; for a call"
                    " today: make mesh-demo ARGS='--phones-to 0')")
            say()
            say(HELP)
            say("waiting; Ctrl-C tears everything down")
            interactive = sys.stdin.isatty()
            while True:
                try:
                    line = input("mesh> " if interactive else "")
                except EOFError:
                    if interactive:
                        break  # Ctrl-D
                    while True:  # commands were piped in (or none): wait for Ctrl-C
                        time.sleep(3600)
                if not interactive:
                    say(f"mesh> {line}")
                try:
                    command(bed, line)
                except (BedError, ValueError, IndexError) as exc:
                    say(f"  error: {exc}")
    except KeyboardInterrupt:
        say()
    except BedError as exc:
        say(f"mesh-demo: {exc}")
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    say("mesh-demo: nodes stopped, namespaces deleted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
