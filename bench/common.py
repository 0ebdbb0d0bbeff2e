"""Shared pieces for the benchmarks: ports, the node, Kamailio, sipp.

Every process started here is stopped by the context manager that started it. All traffic
goes to 127.0.0.1, and every wait is bounded in time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
HOST = "127.0.0.1"
REGISTER_XML = BENCH / "sipp" / "register.xml"
KAMAILIO_TEMPLATE = BENCH / "kamailio" / "kamailio.cfg.tmpl"
KAMAILIO_CHILDREN = 2  # UDP worker processes, one per core of the reference machine


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (the node may listen on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((HOST, 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((HOST, port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port found")


def repo_env() -> dict[str, str]:
    """Environment for child Pythons: the repo importable even without the editable install."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _wait_for(log: Path, word: bytes, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if word in log.read_bytes():
            return
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}: {tail(log)}")
        time.sleep(0.05)
    raise RuntimeError(f"not {word.decode()} within {timeout:.0f} s: {tail(log)}")


def tail(log: Path, n: int = 5) -> str:
    lines = log.read_text(errors="replace").strip().splitlines()
    return " | ".join(lines[-n:]) or "(no output)"


def _stop(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM the process we started, then SIGKILL its own process group if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # leftovers in the session we created
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout)


@dataclass
class Server:
    name: str
    port: int
    pid: int
    workers: str
    log: Path


def session_pids(sid: int) -> list[int]:
    """Processes in the session `sid` (each server is started as a session leader)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid:  # fields after "(comm)": state ppid pgrp session
                pids.append(int(stat.parent.name))
    return sorted(pids)


@contextlib.contextmanager
def node(ready_timeout: float = 20.0, web_port: int = 0) -> Iterator[Server]:
    """A meshsip node on a free loopback port with a fresh data dir; SIGTERM on exit.
    Its status page is off unless web_port is given."""
    with tempfile.TemporaryDirectory(prefix="meshsip-bench-") as tmp:
        work, port = Path(tmp), free_port()
        log = work / "node.log"
        cmd = [sys.executable, "-m", "appliance.cli", "run", "--bind", HOST,
               "--sip-port", str(port), "--tls-port", "0", "--data-dir", str(work / "data"),
               "--no-discovery", "--web-port", str(web_port)]
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, cwd=REPO, env=repo_env(), stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=out, start_new_session=True)
        try:
            _wait_for(log, b"ready", proc, ready_timeout)
            n = len(session_pids(proc.pid))
            yield Server("meshsip", port, proc.pid, f"{n} Python process(es)", log)
        finally:
            _stop(proc)


@contextlib.contextmanager
def kamailio(children: int = KAMAILIO_CHILDREN, ready_timeout: float = 10.0) -> Iterator[Server]:
    """Kamailio in the foreground (-DD -E) on a free loopback port, config from the template."""
    with tempfile.TemporaryDirectory(prefix="kamailio-bench-") as tmp:
        work, port = Path(tmp), free_port()
        cfg, log = work / "kamailio.cfg", work / "kamailio.log"
        text = string.Template(KAMAILIO_TEMPLATE.read_text())
        cfg.write_text(text.substitute(port=port, children=children))
        cmd = ["kamailio", "-f", str(cfg), "-DD", "-E", "-w", tmp, "-Y", tmp,
               "-P", str(work / "kamailio.pid")]  # memory: package defaults (-m 64, -M 8)
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, cwd=tmp, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=out, start_new_session=True)
        try:
            _wait_for(log, b"Listening on", proc, ready_timeout)
            probe(port, ready_timeout)
            n = len(session_pids(proc.pid))
            workers = f"{children} UDP workers ({n} processes with main/timer/helpers)"
            yield Server("kamailio", port, proc.pid, workers, log)
        finally:
            _stop(proc)


def probe(port: int, timeout: float) -> None:
    """Wait until something answers a SIP OPTIONS on the UDP port (any response will do)."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        s.settimeout(0.2)
        me = s.getsockname()[1]
        msg = (f"OPTIONS sip:{HOST}:{port} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP {HOST}:{me};branch=z9hG4bK-probe{me}\r\n"
               f"Max-Forwards: 70\r\nFrom: <sip:probe@{HOST}>;tag=p\r\nTo: <sip:{HOST}>\r\n"
               f"Call-ID: probe-{me}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()
        while time.monotonic() < deadline:
            s.sendto(msg, (HOST, port))
            try:
                if s.recv(65535).startswith(b"SIP/2.0 "):
                    return
            except OSError:  # timeout, or ICMP port unreachable while it starts
                time.sleep(0.05)
    raise RuntimeError(f"no SIP answer on UDP port {port} within {timeout:.0f} s")


def write_users(path: Path, count: int) -> Path:
    """A sipp injection CSV of distinct users, read sequentially (wraps after the last)."""
    path.write_text("SEQUENTIAL\n" + "".join(f"bench{i:05d}\n" for i in range(count)))
    return path


@dataclass
class SippResult:
    successful: int
    failed: int
    retransmissions: int
    elapsed_s: float
    returncode: int
    note: str = ""

    @property
    def rate(self) -> float:
        return self.successful / self.elapsed_s if self.elapsed_s > 0 else 0.0


def run_sipp(port: int, csv: Path, count: int, *, concurrent: int = 20, expires: int = 3600,
             timeout: float = 30.0, local_port: int | None = None) -> SippResult:
    """Drive `count` REGISTER transactions, `concurrent` at a time, stopping after `timeout`.

    Closed loop (`-users N`): sipp starts N transactions and a new one as each one ends.
    Reusing `local_port` across runs keeps each user's Contact the same (refreshes).
    Each stuck transaction fails after 5 s (-recv_timeout), so sipp ends by timeout + 5 s.
    Figures come from sipp's -trace_stat CSV (dumped every second and at exit): successful
    and failed transactions, and the span from its StartTime to its last CurrentTime.
    """
    with tempfile.TemporaryDirectory(prefix="sipp-bench-") as tmp:
        stat = Path(tmp) / "stat.csv"
        cmd = ["sipp", f"{HOST}:{port}", "-sf", str(REGISTER_XML), "-inf", str(csv),
               "-key", "expires", str(expires), "-m", str(count), "-users", str(concurrent),
               "-t", "u1", "-i", HOST, "-p", str(local_port or free_port()), "-nostdin",
               "-recv_timeout", "5000", "-timeout", f"{timeout:.0f}s",
               "-trace_stat", "-stf", str(stat), "-fd", "1"]
        proc = subprocess.Popen(cmd, cwd=tmp, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        try:
            _, err = proc.communicate(timeout=timeout + 10)
        except subprocess.TimeoutExpired:
            _stop(proc)
            _, err = proc.communicate()
        if not stat.exists():
            raise RuntimeError(f"sipp rc={proc.returncode}, no statistics: {err.decode()[-300:]}")
        lines = stat.read_text().strip().splitlines()
        if len(lines) < 2:
            raise RuntimeError(f"sipp rc={proc.returncode}, empty statistics")
        row = dict(zip(lines[0].split(";"), lines[-1].split(";"), strict=False))
        start = float(row["StartTime"].split("\t")[-1])
        now = float(row["CurrentTime"].split("\t")[-1])
        ok, failed = int(row["SuccessfulCall(C)"]), int(row["FailedCall(C)"])
        note = "" if ok + failed >= count else f"stopped at {ok + failed}/{count} (timeout)"
        return SippResult(ok, failed, int(row["Retransmissions(C)"]), now - start,
                          proc.returncode if proc.returncode is not None else -1, note)


def rss_kib(pid: int) -> int:
    """Resident set size of one process, from /proc/PID/status (VmRSS, in KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")
