"""MeshBed: n hosts in network namespaces on one Ethernet segment, with faults on demand.

    with MeshBed(5, workdir=tmp_path) as bed:       # needs root and `ip netns`
        bed.ping(0, 1)                               # -> Rtt (ICMP, from the test process)
        bed.cut(0, 2)                                # 0 and 2 no longer hear each other
        bed.partition([0, 1], [2, 3, 4]); bed.heal_all()
        bed.loss(10)                                 # every directed link drops 10 %
        bed.delay(25, jitter_ms=5)                   # every directed link: 25 +- 5 ms
        node = bed.node(0)                           # `meshsip run` in namespace 0
        phone = bed.baresip(1, "1001", node)         # a soft phone in namespace 1
        bed.run(2, ["tcpdump", "-ni", "eth0"])       # any program in namespace 2

Layout (FIELD-NOTES "A multi-host test bed"): a hub namespace holds bridge br0; host i lives
in namespace names[i] with eth0, one end of a veth whose other end is port p<i> on br0,
address 10.99.0.(10+i)/16, lo up and a route for 224.0.0.0/4 (multicast, mDNS) on eth0.
There is no default route and nothing else on the segment: traffic stays between the
bed's own namespaces. IPv6 is off unless ipv6=True. Hosts are numbered from 0.

Faults live on the hub, so the hosts see only what a real link would show them:
- cuts and loss: an nftables bridge table (forward hook: a set of cut (in . out) port
  pairs, and a verdict map sending lossy pairs to `numgen random` drop chains);
- delay and jitter (no netem in this kernel): the ports leave the bridge and a user-space
  hub (meshbed/hub.py, AF_PACKET) copies frames between them; while it runs it also
  enforces the cuts and loss, so every fault combines with every other;
- link_down(i): port p<i> down, so host i sees its eth0 lose carrier.
Links are directed pairs (i, j): frames from i to j. cut/heal act both ways unless
oneway=True; loss and delay act on the pairs given (default: every directed pair).

Names carry the creating pid, so parallel runs never clash; namespaces of a run whose pid
is gone are removed when the next bed starts. Everything a bed started is stopped, and
every namespace deleted, when the `with` block ends, however it ends.
"""

from __future__ import annotations

import atexit
import ctypes
import fcntl
import ipaddress
import itertools
import json
import os
import queue
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from phones.baresip import Baresip
from phones.node import NodeFactory, NodeProcess
from phones.nsexec import in_netns, ns_argv
from phones.sipp import SippResult, SippUas, run_sipp

from .faults import Faults, Pair, all_pairs, both_ways, hub_links, render_nft
from .probe import Rtt, UdpEcho, ping, udp_probe

ALLOWED = ipaddress.ip_network("10.99.0.0/16")
HUB_SCRIPT = Path(__file__).resolve().parent / "hub.py"
CMD_TIMEOUT = 10.0
HUB_TIMEOUT = 5.0
STALE = re.compile(r"^mb(\d+)-\d+-(hub|n\d+)$")
_counter = itertools.count()


class BedError(RuntimeError):
    """A bed could not be built, changed or torn down; the message says which command."""


def netns_available() -> str | None:
    """None if this process can build beds, else why not (for pytest.skip)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) is not installed"
    try:
        done = subprocess.run(["ip", "netns", "list"], capture_output=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`ip netns list` failed: {exc}"
    if done.returncode != 0:
        return f"`ip netns list` failed: {done.stderr.decode(errors='replace').strip()}"
    return None


def nft_available() -> str | None:
    """None if nftables can be used for cuts and loss, else why not."""
    return None if shutil.which("nft") else "nftables is not installed (apt-get install nftables)"


def _run(argv: Sequence[str], *, input_: str | None = None,
         timeout: float = CMD_TIMEOUT) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(list(argv), input=input_, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BedError(f"`{' '.join(argv)}` did not finish in {timeout}s") from None
    except OSError as exc:
        raise BedError(f"`{' '.join(argv)}` could not run: {exc}") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip()
        extra = f"\n--- input ---\n{input_}" if input_ else ""
        raise BedError(f"`{' '.join(argv)}` failed ({done.returncode}): {detail}{extra}")
    return done


def _netns_list() -> list[str]:
    out = _run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def cleanup_stale() -> list[str]:
    """Deletes bed namespaces (default names) whose creating process no longer exists.

    Only the names are removed; no process is signalled.
    """
    removed = []
    for name in _netns_list():
        m = STALE.match(name)
        if m is None:
            continue
        pid = int(m.group(1))
        try:
            os.kill(pid, 0)
            continue  # alive (or reused pid): not ours to touch
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=CMD_TIMEOUT)
        removed.append(name)
    return removed


# ethtool's legacy SIOCETHTOOL set commands: the same as `ethtool -K IF tx off sg off tso off
# gso off gro off`, without needing the ethtool program. With tx checksumming on, a veth
# hands over UDP/TCP frames whose checksum is not filled in yet ("partial"); copied by the
# user-space hub they would arrive broken (ICMP would still work: a misleading ping).
SIOCETHTOOL = 0x8946
OFFLOAD_OFF = (0x17, 0x19, 0x1F, 0x24, 0x2C)  # STXCSUM, SSG, STSO, SGSO, SGRO


def _offloads_off(netns: str, ifname: str) -> None:
    def work() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for cmd in OFFLOAD_OFF:
                value = ctypes.create_string_buffer(struct.pack("II", cmd, 0))
                ifreq = struct.pack("16sP", ifname.encode(), ctypes.addressof(value))
                fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifreq)

    in_netns(netns, work)


def _sysctl(netns: str, key: str, value: str) -> None:
    path = "/proc/sys/" + key.replace(".", "/")

    def work() -> None:
        with open(path, "w") as f:
            f.write(value)

    in_netns(netns, work)


class MeshBed:
    def __init__(self, n: int, prefix: str | None = None, *, workdir: Path | None = None,
                 ipv6: bool = False, subnet: str = "10.99.0.0/16", first_host: int = 10,
                 seed: int | None = None) -> None:
        if n < 1:
            raise ValueError("a bed needs at least one host")
        self.n = n
        self.prefix = prefix or f"mb{os.getpid()}-{next(_counter)}"
        self.hub = f"{self.prefix}-hub"
        self.names = [f"{self.prefix}-n{i}" for i in range(n)]
        self.network = ipaddress.ip_network(subnet)
        if not self.network.subnet_of(ALLOWED):
            raise ValueError(f"bed addresses must lie inside {ALLOWED}, not {subnet}")
        hosts = [self.network.network_address + first_host + i for i in range(n)]
        if hosts[-1] not in self.network or hosts[-1] == self.network.broadcast_address:
            raise ValueError(f"{n} hosts from .{first_host} do not fit in {subnet}")
        self._addrs = [str(h) for h in hosts]
        self.ports = {i: f"p{i}" for i in range(n)}
        self.ipv6 = ipv6
        self.seed = seed
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.gettempdir()) / self.prefix
        self.faults = Faults()
        self.down: set[int] = set()
        self._nft_loaded = False
        self._hub_proc: subprocess.Popen[str] | None = None
        self._hub_lines: queue.Queue[str] = queue.Queue()
        self._hub_seq = 0
        self._hub_lock = threading.Lock()
        self._procs: list[subprocess.Popen[Any]] = []
        self._phones: list[Baresip] = []
        self._sipps: list[SippUas] = []
        self._echoes: list[UdpEcho] = []
        self._nodes = NodeFactory()
        self._created: list[str] = []
        self._etc_dirs: list[Path] = []
        self._started = False
        self.build_seconds: float | None = None

    # -- naming ---------------------------------------------------------------------------
    def ns(self, i: int) -> str:
        """The namespace name of host i."""
        return self.names[i]

    def addr(self, i: int) -> str:
        """Host i's address (10.99.0.(10+i) by default)."""
        return self._addrs[i]

    def __len__(self) -> int:
        return self.n

    # -- building and tearing down ----------------------------------------------------------
    def start(self) -> MeshBed:
        if self._started:
            return self
        self._started = True
        atexit.register(self.close)
        t0 = time.monotonic()
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)  # logs: hub.log, node-*, baresip-*
            cleanup_stale()
            self._build()
        except BaseException:
            self.close(check=False)
            raise
        self.build_seconds = time.monotonic() - t0
        return self

    def _build(self) -> None:
        hub = self.hub
        _run(["ip", "netns", "add", hub])
        self._created.append(hub)
        _sysctl(hub, "net.ipv6.conf.all.disable_ipv6", "1")
        _sysctl(hub, "net.ipv6.conf.default.disable_ipv6", "1")
        # no STP, no multicast snooping: a plain shared segment (mDNS floods to everyone)
        _run(["ip", "-n", hub, "link", "add", "br0", "type", "bridge", "stp_state", "0",
              "mcast_snooping", "0", "forward_delay", "0"])
        _run(["ip", "-n", hub, "link", "set", "br0", "up"])
        for i, name in enumerate(self.names):
            port = self.ports[i]
            _run(["ip", "netns", "add", name])
            self._created.append(name)
            if not self.ipv6:
                _sysctl(name, "net.ipv6.conf.all.disable_ipv6", "1")
                _sysctl(name, "net.ipv6.conf.default.disable_ipv6", "1")
            _run(["ip", "link", "add", "eth0", "netns", name, "type", "veth",
                  "peer", "name", port, "netns", hub])
            _offloads_off(name, "eth0")
            _offloads_off(hub, port)
            _run(["ip", "-n", hub, "link", "set", port, "master", "br0", "up"])
            _run(["ip", "-n", name, "addr", "add", f"{self.addr(i)}/{self.network.prefixlen}",
                  "dev", "eth0"])
            _run(["ip", "-n", name, "link", "set", "lo", "up"])
            _run(["ip", "-n", name, "link", "set", "eth0", "up"])
            _run(["ip", "-n", name, "route", "add", "224.0.0.0/4", "dev", "eth0"])

    def close(self, check: bool = True) -> None:
        """Stops everything the bed started and deletes its namespaces. Idempotent.

        With check, raises BedError afterwards if something would not stop cleanly (a node
        exiting non-zero, a process left in a namespace); the teardown itself always runs to
        the end.
        """
        if not self._started:
            return
        self._started = False
        atexit.unregister(self.close)
        problems: list[str] = []

        def attempt(what: str, fn: Any, *args: Any) -> None:
            try:
                fn(*args)
            except BaseException as exc:  # keep tearing down whatever happens
                problems.append(f"{what}: {exc}")

        for phone in self._phones:
            attempt(f"stopping baresip {phone.extension}", phone.stop)
        for uas in self._sipps:
            attempt("stopping sipp", uas.stop)
        attempt("stopping nodes", self._nodes.close)
        for echo in self._echoes:
            attempt("closing UDP echo", echo.close)
        for proc in self._procs:
            attempt(f"stopping pid {proc.pid}", stop_process, proc)
        attempt("stopping the delay hub", self._stop_hub_process)
        for name in reversed(self._created):
            try:
                pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True,
                                      text=True, timeout=CMD_TIMEOUT).stdout.split()
            except (OSError, subprocess.TimeoutExpired):
                pids = []
            if pids:
                problems.append(f"processes still in namespace {name}: {' '.join(pids)} "
                                "(not started through the bed; not signalled)")
            attempt(f"deleting namespace {name}", _run, ["ip", "netns", "delete", name])
        for etc in self._etc_dirs:
            shutil.rmtree(etc, ignore_errors=True)
        self._etc_dirs.clear()
        self._created.clear()
        self._phones.clear()
        self._sipps.clear()
        self._echoes.clear()
        self._procs.clear()
        if self._own_workdir and not problems:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if problems and check:
            raise BedError("bed teardown: " + "\n".join(problems))

    def __enter__(self) -> MeshBed:
        return self.start()

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.close(check=exc_type is None)  # a failing test's own error is not masked

    def leftovers(self) -> list[str]:
        """The bed's namespaces that still exist (empty after close)."""
        mine = {self.hub, *self.names}
        return [name for name in _netns_list() if name in mine]

    def etc_file(self, i: int, name: str, text: str) -> None:
        """/etc/NAME as seen by programs started in host i from now on (`ip netns exec`
        bind-mounts /etc/netns/NS/NAME over it): a hosts or resolv.conf of the host's own.
        Removed at teardown."""
        etc = Path("/etc/netns") / self.ns(i)
        if etc not in self._etc_dirs:
            etc.mkdir(parents=True, exist_ok=True)
            self._etc_dirs.append(etc)
        (etc / name).write_text(text)

    # -- processes ----------------------------------------------------------------------------
    def run(self, i: int, argv: Sequence[str], **popen: Any) -> subprocess.Popen[Any]:
        """Starts argv inside host i's namespace (its own session); stopped at teardown."""
        popen.setdefault("stdin", subprocess.DEVNULL)
        popen.setdefault("start_new_session", True)
        proc = subprocess.Popen([*ns_argv(self.ns(i)), *argv], **popen)
        self._procs.append(proc)
        return proc

    def exec(self, i: int, argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[Any]:
        """Runs argv inside host i's namespace to the end (output captured as text)."""
        if "stdout" not in kw and "stderr" not in kw:
            kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("timeout", 30)
        return subprocess.run([*ns_argv(self.ns(i)), *argv], **kw)

    # -- probes -------------------------------------------------------------------------------
    def ping(self, i: int, j: int, count: int = 3, interval: float = 0.05,
             timeout: float = 1.0) -> Rtt:
        """ICMP echo from host i to host j (round trip)."""
        return ping(self.ns(i), self.addr(j), count=count, interval=interval, timeout=timeout)

    def reachable(self, i: int, j: int, timeout: float = 0.5) -> bool:
        """Whether host j answers host i's ping (2 tries) within timeout."""
        return self.ping(i, j, count=2, interval=0.02, timeout=timeout).received > 0

    def udp_echo(self, j: int, port: int = 0) -> UdpEcho:
        """A UDP echo on host j (closed at teardown)."""
        echo = UdpEcho(self.ns(j), self.addr(j), port)
        self._echoes.append(echo)
        return echo

    def udp_probe(self, i: int, j: int, count: int = 100, interval: float = 0.002,
                  timeout: float = 1.0, echo: UdpEcho | None = None) -> Rtt:
        """UDP datagrams from host i to an echo on host j: one-way loss (Rtt.forward),
        round-trip loss and RTT."""
        echo = echo or self.udp_echo(j)
        return udp_probe(self.ns(i), self.addr(i), echo, count=count, interval=interval,
                         timeout=timeout)

    # -- faults -------------------------------------------------------------------------------
    def cut(self, i: int, j: int, *, oneway: bool = False) -> None:
        """Host i and host j stop hearing each other (only i -> j with oneway); every other
        link stays as it is, so non-transitive reachability is possible."""
        self.faults.cut |= {(i, j)} if oneway else both_ways([(i, j)])
        self._apply()

    def heal(self, i: int, j: int, *, oneway: bool = False) -> None:
        self.faults.cut -= {(i, j)} if oneway else both_ways([(i, j)])
        self._apply()

    def partition(self, group_a: Iterable[int], group_b: Iterable[int]) -> None:
        """Cuts every link between the two groups (links inside a group stay)."""
        self.faults.cut |= both_ways((a, b) for a in group_a for b in group_b)
        self._apply()

    def heal_all(self) -> None:
        """Removes every cut and brings every downed link back up (loss and delay stay)."""
        self.faults.cut.clear()
        self._apply()
        for i in sorted(self.down):
            self.link_up(i)

    def link_down(self, i: int) -> None:
        """Takes hub port p<i> down: host i's eth0 loses carrier (as an unplugged cable)."""
        _run(["ip", "-n", self.hub, "link", "set", self.ports[i], "down"])
        self.down.add(i)

    def link_up(self, i: int) -> None:
        _run(["ip", "-n", self.hub, "link", "set", self.ports[i], "up"])
        self.down.discard(i)

    def loss(self, percent: float, pairs: Iterable[Pair] | None = None) -> None:
        """Each directed pair given (default: all) drops `percent` % of its frames, chosen at
        random per frame (0 removes the loss)."""
        self.faults.set_loss(percent, self._pairs(pairs))
        self._apply()

    def delay(self, ms: float, jitter_ms: float = 0.0, loss: float | None = None,
              pairs: Iterable[Pair] | None = None) -> None:
        """Each directed pair given (default: all) delays frames by ms +- jitter_ms (uniform,
        no reordering within a link), so an all-pairs delay(50) gives a ~100 ms RTT.
        loss, when given, also sets those pairs' loss. delay(0) on every delayed pair
        returns the ports to the kernel bridge."""
        pairs = self._pairs(pairs)
        self.faults.set_delay(ms, jitter_ms, pairs)
        if loss is not None:
            self.faults.set_loss(loss, pairs)
        self._apply()

    def reset(self) -> None:
        """No cuts, no loss, no delay, every link up."""
        self.faults = Faults()
        self._apply()
        for i in sorted(self.down):
            self.link_up(i)

    def hub_stats(self) -> dict[str, dict[str, int]]:
        """Frames per directed link counted by the user-space hub ({} when it is not running):
        {"0>1": {"sent": .., "lost": .., "cut": ..}}."""
        if self._hub_proc is None:
            return {}
        reply = self._hub_command({"stats": True})
        return json.loads(reply.split(" ", 2)[2])

    def _pairs(self, pairs: Iterable[Pair] | None) -> list[Pair]:
        if pairs is None:
            return all_pairs(self.n)
        out = [(int(i), int(j)) for i, j in pairs]
        for i, j in out:
            if i == j or not (0 <= i < self.n and 0 <= j < self.n):
                raise ValueError(f"no link ({i}, {j}) in a bed of {self.n}")
        return out

    def _apply(self) -> None:
        if not self._started:
            raise BedError("the bed is not started")
        if self.faults.delayed():
            if self._hub_proc is None:
                self._start_hub_process()
            self._hub_command({"links": hub_links(self.faults)})
            return
        if self._nft_loaded or self.faults.cut or self.faults.loss:
            reason = nft_available()
            if reason:
                raise BedError(f"cuts and loss need nftables: {reason}")
            _run([*ns_argv(self.hub), "nft", "-f", "-"], input_=render_nft(self.faults,
                                                                          self.ports))
            self._nft_loaded = True
        if self._hub_proc is not None:  # back to the kernel bridge, its rules already in place
            self._stop_hub_process()

    # -- the user-space delay hub ---------------------------------------------------------
    def _start_hub_process(self) -> None:
        argv = [sys.executable, "-u", str(HUB_SCRIPT),
                *(f"{i}={p}" for i, p in self.ports.items())]
        if self.seed is not None:
            argv.append(f"seed={self.seed}")
        log = open(self.workdir / "hub.log", "ab")  # noqa: SIM115 - owned by the process
        try:
            proc = subprocess.Popen([*ns_argv(self.hub), *argv], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=log, text=True,
                                    start_new_session=True)
        finally:
            log.close()
        self._hub_proc = proc
        self._hub_lines = queue.Queue()
        threading.Thread(target=_pump_lines, args=(proc.stdout, self._hub_lines), daemon=True,
                         name=f"{self.hub}-stdout").start()
        line = self._hub_readline(HUB_TIMEOUT)
        if line != "ready":
            self._stop_hub_process()
            raise BedError(f"delay hub did not start (said {line!r}); see "
                           f"{self.workdir / 'hub.log'}")
        # It drops everything until configured: leave the bridge, then configure (caller).
        for port in self.ports.values():
            _run(["ip", "-n", self.hub, "link", "set", port, "nomaster"])

    def _stop_hub_process(self) -> None:
        proc = self._hub_proc
        if proc is None:
            return
        self._hub_proc = None
        try:
            if proc.stdin is not None:
                proc.stdin.close()  # it exits when its stdin closes
            proc.wait(timeout=HUB_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired):
            stop_process(proc)
        if self._created:  # ports back on the kernel bridge (their up/down state is kept)
            for port in self.ports.values():
                _run(["ip", "-n", self.hub, "link", "set", port, "master", "br0"])

    def _hub_readline(self, timeout: float) -> str:
        try:
            return self._hub_lines.get(timeout=timeout).strip()
        except queue.Empty:
            return f"(nothing within {timeout}s)"

    def _hub_command(self, cmd: dict[str, Any]) -> str:
        with self._hub_lock:
            proc = self._hub_proc
            assert proc is not None and proc.stdin is not None
            self._hub_seq += 1
            seq = self._hub_seq
            try:
                proc.stdin.write(json.dumps({**cmd, "seq": seq}) + "\n")
                proc.stdin.flush()
            except OSError as exc:
                raise BedError(f"delay hub is gone ({exc}); see {self.workdir / 'hub.log'}") \
                    from None
            reply = self._hub_readline(HUB_TIMEOUT)
            if not reply.startswith(("ok ", "stats ")) or reply.split()[1] != str(seq):
                raise BedError(f"delay hub answered {reply!r} to command {seq}")
            return reply

    # -- phones and nodes -----------------------------------------------------------------
    def node(self, i: int, *extra_args: str, config: str | None = None,
             port: int = 5060, data_dir: Path | None = None,
             env: dict[str, str] | None = None) -> NodeProcess:
        """`python -m appliance.cli run` in host i's namespace, bound to its address, on the
        standard SIP and TLS ports, with no config file (unless config= gives one). Waits for ready;
        stopped at teardown (which asserts it exits with 0). The data directory is the
        host's own (kept across restarts, as a box's SD card) unless data_dir= gives one;
        env= adds to its environment (libfaketime, for a box whose clock is wrong)."""
        return self._nodes(self.workdir, *extra_args, config=config, port=port,
                           netns=self.ns(i), host=self.addr(i), data_dir=data_dir,
                           tls_port=5061, env=env)

    def stop_node(self, node: NodeProcess) -> int:
        """SIGTERM a node (a box switched off) and wait; returns its exit code."""
        if node in self._nodes.nodes:
            self._nodes.nodes.remove(node)
        return node.stop()

    def kill_node(self, node: NodeProcess) -> None:
        """SIGKILL a node (a box losing power: no goodbye, no hand-over); teardown then no
        longer expects it to exit cleanly."""
        node.kill()
        if node in self._nodes.nodes:
            self._nodes.nodes.remove(node)

    def baresip(self, i: int, extension: str, node: NodeProcess, **kw: Any) -> Baresip:
        """A started headless baresip in host i's namespace, registering `extension` to node.

        One phone per namespace is the safe rule (FIELD-NOTES); several work too, as each
        harness phone has its own SIP and control ports.
        """
        kw.setdefault("workdir", self.workdir / f"baresip-{extension}-n{i}")
        port = node.tls_port if kw.get("transport") == "tls" else node.port
        phone = Baresip(extension, port, node_host=node.host, netns=self.ns(i),
                        bind=self.addr(i), **kw)
        self._phones.append(phone)
        return phone.start()

    def sipp(self, i: int, scenario: str | Path, target: str, **kw: Any) -> SippResult:
        """Runs a sipp client scenario from host i's namespace to target ("host:port")."""
        kw.setdefault("workdir", self.workdir)
        return run_sipp(scenario, target, netns=self.ns(i), host=self.addr(i), **kw)

    def sipp_uas(self, i: int, scenario: str | Path, **kw: Any) -> SippUas:
        """A started sipp server scenario in host i's namespace (stopped at teardown)."""
        kw.setdefault("workdir", self.workdir)
        uas = SippUas(scenario, netns=self.ns(i), host=self.addr(i), **kw)
        self._sipps.append(uas)
        return uas.start()


def _pump_lines(stream: Any, lines: queue.Queue[str]) -> None:
    for line in iter(stream.readline, ""):
        lines.put(line)
    stream.close()


def _signal(proc: subprocess.Popen[Any], sig: int) -> None:
    """Signals the process's own group when it leads one (start_new_session), else the
    process alone: never a group the test process belongs to."""
    try:
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)
    except ProcessLookupError:
        pass


def stop_process(proc: subprocess.Popen[Any], timeout: float = 3.0) -> None:
    """SIGTERM, bounded wait, then SIGKILL."""
    if proc.poll() is not None:
        return
    _signal(proc, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
        return
    except subprocess.TimeoutExpired:
        pass
    _signal(proc, signal.SIGKILL)
    proc.wait(timeout=5)
