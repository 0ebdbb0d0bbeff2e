"""A minimal network-namespace test bed for the discovery and link tests.

One hub namespace holds bridges (`br0`, and more on request); each node namespace has an
`eth0` veth whose other end (`p<i>`) is a port of a hub bridge. Addresses are 10.99.0.<i>/16.
Everything is named `msd<pid>x<n>...`, so parallel runs do not clash, and `Bed.close()` (also
on failure: use it as a context manager) kills the processes it started and deletes its
namespaces. `sweep_stale()` deletes namespaces left by runs whose process is gone.

Run as a script it is also a multicast listener, for checking that nothing is sent:
`python tests/netns.py listen --ip 10.99.0.3 --seconds 4` prints one JSON line per mDNS
packet heard on 224.0.0.251:5353 (run it inside a namespace).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PREFIX = "msd"
ROOT = Path(__file__).resolve().parent.parent
_counter = itertools.count()


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=10)


def unavailable() -> str | None:
    """Why namespace tests cannot run here, or None if they can."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespace tests need root"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is missing"
    probe = f"{PREFIX}{os.getpid()}probe"
    try:
        made = _ip("netns", "add", probe, check=False)
        if made.returncode != 0:
            return f"`ip netns add` fails: {made.stderr.strip()}"
        veth = _ip("-n", probe, "link", "add", "a0", "type", "veth", "peer", "b0", check=False)
        if veth.returncode != 0:
            return f"no veth support: {veth.stderr.strip()}"
    finally:
        _ip("netns", "del", probe, check=False)
    return None


def sweep_stale() -> None:
    """Delete namespaces of this helper whose creating process no longer exists."""
    listed = _ip("netns", "list", check=False).stdout
    for line in listed.splitlines():
        name = line.split()[0] if line.split() else ""
        match = re.match(rf"^{PREFIX}(\d+)", name)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            _ip("netns", "del", name, check=False)


class Proc:
    """A process started in a namespace; its stdout JSON lines collected by a thread."""

    def __init__(self, popen: subprocess.Popen[str], name: str) -> None:
        self.popen = popen
        self.name = name
        self.lines: list[dict[str, Any]] = []
        self.err: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        self._err_thread = threading.Thread(target=self._read_err, daemon=True)
        self._err_thread.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            line["_at"] = time.monotonic()
            self.lines.append(line)

    def _read_err(self) -> None:
        assert self.popen.stderr is not None
        for raw in self.popen.stderr:
            self.err.append(raw)

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float
    ) -> dict[str, Any] | None:
        """The first line (seen so far or arriving within `timeout`) matching `predicate`."""
        deadline = time.monotonic() + timeout
        index = 0
        while True:
            finished = not self._thread.is_alive()  # read before scanning: no line missed
            while index < len(self.lines):
                if predicate(self.lines[index]):
                    return self.lines[index]
                index += 1
            if finished or time.monotonic() >= deadline:
                return None
            time.sleep(0.02)

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("event") == kind]

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, then SIGKILL after `timeout`; waits for the output to be read."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)
        self._thread.join(timeout=2)
        self._err_thread.join(timeout=2)
        return self.popen.returncode

    def stderr(self) -> str:
        return "".join(self.err)


class Bed:
    """Hub namespace with bridges, node namespaces joined to them by veth pairs."""

    def __init__(self) -> None:
        self.tag = f"{PREFIX}{os.getpid()}x{next(_counter)}"
        self.hub = f"{self.tag}h"
        self.namespaces: list[str] = []
        self.procs: list[Proc] = []
        self.bridges: set[str] = set()
        _ip("netns", "add", self.hub)
        self.namespaces.append(self.hub)
        self.add_bridge("br0")

    def __enter__(self) -> Bed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add_bridge(self, name: str) -> None:
        _ip("-n", self.hub, "link", "add", name, "type", "bridge")
        _ip("-n", self.hub, "link", "set", name, "up")
        self.bridges.add(name)

    def ns(self, index: int) -> str:
        return f"{self.tag}n{index}"

    @staticmethod
    def address(index: int) -> str:
        return f"10.99.{index // 250}.{index % 250 + 1}"

    def add_node(
        self,
        index: int,
        *,
        up: bool = True,
        with_address: bool = True,
        bridge: str = "br0",
        ipv6: bool = False,
    ) -> str:
        """Namespace `index` with eth0 on `bridge`; IPv6 off unless asked (DAD finishing
        a second or two after link-up would otherwise be a link change of its own)."""
        ns = self.add_lone(index, ipv6=ipv6)
        _ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", f"p{index}",
            "netns", self.hub)  # fmt: skip
        _ip("-n", self.hub, "link", "set", f"p{index}", "master", bridge, "up")
        if with_address:
            self.set_address(index)
        if up:
            _ip("-n", ns, "link", "set", "eth0", "up")
        return ns

    def add_lone(self, index: int, *, ipv6: bool = True) -> str:
        """A namespace with only its loopback up, joined to nothing."""
        ns = self.ns(index)
        _ip("netns", "add", ns)
        self.namespaces.append(ns)
        if not ipv6:
            for key in ("all", "default"):
                self.exec(ns, "sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1")
        _ip("-n", ns, "link", "set", "lo", "up")
        return ns

    def add_port(self, index: int, ifname: str, bridge: str, address: str) -> None:
        """Another interface for node `index`, on `bridge`, with `address` (CIDR), up."""
        ns, port = self.ns(index), f"p{index}{ifname}"[:15]
        _ip("link", "add", ifname, "netns", ns, "type", "veth", "peer", "name", port,
            "netns", self.hub)  # fmt: skip
        _ip("-n", self.hub, "link", "set", port, "master", bridge, "up")
        _ip("-n", ns, "addr", "add", address, "dev", ifname)
        _ip("-n", ns, "link", "set", ifname, "up")

    def set_address(self, index: int) -> None:
        _ip("-n", self.ns(index), "addr", "add", f"{self.address(index)}/16", "dev", "eth0")

    def link_up(self, index: int) -> None:
        _ip("-n", self.ns(index), "link", "set", "eth0", "up")

    def move_port(self, index: int, bridge: str) -> None:
        """Partition or heal without touching the node's carrier."""
        _ip("-n", self.hub, "link", "set", f"p{index}", "master", bridge)

    def run(self, ns: str, argv: list[str], name: str = "") -> Proc:
        popen = subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        proc = Proc(popen, name or ns)
        self.procs.append(proc)
        return proc

    def exec(self, ns: str, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", ns, *argv], check=True, capture_output=True, text=True,
            timeout=10,
        )  # fmt: skip

    def batch(self, ns: str, *commands: str) -> None:
        """Several `ip` commands in one process (microseconds apart), in namespace `ns`."""
        subprocess.run(["ip", "-n", ns, "-batch", "-"], input="\n".join(commands) + "\n",
                       check=True, capture_output=True, text=True, timeout=10)  # fmt: skip

    def close(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is None:
                proc.popen.kill()
                proc.popen.wait(timeout=5)
        for ns in reversed(self.namespaces):
            _ip("netns", "del", ns, check=False)
        self.namespaces.clear()


def _listen(ip: str, seconds: float) -> None:
    """Print a JSON line for every packet sent to 224.0.0.251:5353 on the interface of `ip`."""
    import socket
    import struct

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("224.0.0.251", 5353))
    membership = struct.pack("4s4s", socket.inet_aton("224.0.0.251"), socket.inet_aton(ip))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
    print(json.dumps({"event": "listening"}), flush=True)
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data, (src, _port) = sock.recvfrom(9000)
        except TimeoutError:
            break
        print(json.dumps({"event": "packet", "src": src, "len": len(data)}), flush=True)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["listen"])
    parser.add_argument("--ip", required=True)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    _listen(args.ip, args.seconds)
