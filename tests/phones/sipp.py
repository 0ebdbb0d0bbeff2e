"""Runs sipp scenarios from tests/sipp/ against a node on 127.0.0.1.

    rc, logs = run_sipp("register", f"127.0.0.1:{node.port}", service="2001")
    assert rc == 0, logs

    uas = SippUas("uas_answer", service="2002", workdir=tmp_path).start()
    ... uas.port is where it listens; register it as a contact, call it ...
    rc, logs = uas.wait()

Scenario parameters travel as sipp keywords (-key NAME VALUE, [NAME] in the XML). Every run
passes defaults for all the keywords the scenarios in tests/sipp use, so a scenario never
meets an undefined keyword; `keys=` overrides them.

Inside a network namespace (tests/meshbed): pass `netns="ns", host="10.99.0.12"` to run_sipp or
SippUas; sipp then runs with `ip netns exec` and binds its SIP and media to that address.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

from .nsexec import ns_argv
from .ports import HOST, free_port, free_port_block

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "sipp"

# sipp's own exit codes (sipp(1)).
EXIT_CODES = {
    0: "all calls succeeded",
    1: "at least one call failed",
    97: "exit on internal command (calls may have been processed)",
    99: "normal exit without calls processed",
    -1: "fatal error",
    255: "fatal error",
    -2: "fatal error binding a socket",
    254: "fatal error binding a socket",
}


def udp_port_bound(port: int, host: str = HOST, pid: int | None = None) -> bool:
    """Whether some socket is bound to UDP host:port or 0.0.0.0:port (/proc/net/udp; with a
    pid, /proc/PID/net/udp: the sockets of that process's network namespace)."""
    host_hex = socket.inet_aton(host)[::-1].hex().upper()
    wanted = {f"{host_hex}:{port:04X}", f"00000000:{port:04X}"}
    table = Path("/proc/net/udp") if pid is None else Path(f"/proc/{pid}/net/udp")
    try:
        lines = table.read_text().splitlines()[1:]
    except OSError:
        return True  # cannot tell: assume it is
    return any(line.split()[1] in wanted for line in lines if len(line.split()) > 1)


def sipp_binary() -> str | None:
    return shutil.which("sipp")


def scenario_path(scenario: str | Path) -> Path:
    path = Path(scenario)
    if not path.is_absolute() and not path.exists():
        path = SCENARIO_DIR / (path.name if path.suffix == ".xml" else f"{path.name}.xml")
    if not path.is_file():
        raise AssertionError(f"sipp scenario {scenario} not found (looked in {SCENARIO_DIR})")
    return path


class SippResult(NamedTuple):
    """(returncode, logs): logs holds the command line, sipp's screen, its error trace, its
    <log> actions and the full message trace, ready to be an assertion message."""

    returncode: int
    logs: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def _read(path: Path, limit: int = 60_000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(none)"
    if len(text) > limit:
        text = f"... ({len(text) - limit} characters cut) ...\n" + text[-limit:]
    return text.strip() or "(empty)"


class _Sipp:
    """One sipp process and the files it traces into."""

    def __init__(
        self,
        scenario: str | Path,
        target: str | None,
        *,
        service: str | None,
        keys: Mapping[str, str] | None,
        extra_args: Iterable[str],
        timeout: float,
        calls: int,
        workdir: Path | None,
        port: int | None,
        netns: str | None = None,
        host: str = HOST,
    ) -> None:
        binary = sipp_binary()
        if binary is None:
            raise AssertionError("sipp is not installed (apt-get install sip-tester)")
        self.scenario = scenario_path(scenario)
        self.timeout = timeout
        self.port = port or free_port()
        self.netns = netns  # network namespace to run in (None: this one)
        self.host = host  # SIP and media address
        base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="sipp-"))
        self.dir = base / f"sipp-{self.scenario.stem}-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        media = free_port_block(4)
        control = free_port(tcp=False)
        values = {
            # defaults for every keyword used in tests/sipp/*.xml
            "caller": "sipp",
            "proxy": target or "",
            "route": target or "",  # an outbound-proxy phone's Route (host:port)
            "expires": "300",
            "contact_host": host,
            "contact_port": str(self.port),
            "auth_user": service or "service",
            "password": "wrong",
            "realm": "meshsip",
            "instance": "00000000-0000-1000-8000-00000000a001",  # register_instance.xml
            "display": "",  # register.xml: From/To display name, e.g. '"Alice" '
        }
        values.update(keys or {})
        self.files = {
            name: self.dir / f"{name}.log"
            for name in ("screen", "errors", "messages", "calldebug", "logs", "stdout")
        }
        cmd = [*ns_argv(netns), binary]
        if target is not None:
            cmd.append(target)
        cmd += [
            "-sf", str(self.scenario),
            "-i", host, "-p", str(self.port), "-t", "u1",
            "-mi", host, "-mp", str(media), "-cp", str(control),
            "-m", str(calls), "-nostdin",
            "-timeout", f"{int(timeout)}s", "-timeout_error",
            "-max_recv_loops", "1000",
            "-trace_err", "-error_file", str(self.files["errors"]),
            "-trace_msg", "-message_file", str(self.files["messages"]),
            "-trace_calldebug", "-calldebug_file", str(self.files["calldebug"]),
            "-trace_logs", "-log_file", str(self.files["logs"]),
            "-trace_screen", "-screen_file", str(self.files["screen"]),
        ]
        if service is not None:
            cmd += ["-s", service]
        for name, value in values.items():
            cmd += ["-key", name, str(value)]
        # [authentication] takes its credentials from -au / -ap (keywords do not nest in it)
        cmd += ["-au", values["auth_user"], "-ap", values["password"]]
        cmd += list(extra_args)
        self.cmd = cmd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> _Sipp:
        with open(self.files["stdout"], "wb") as out:
            self.proc = subprocess.Popen(
                self.cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=self.dir, start_new_session=True,
            )
        return self

    def wait(self, timeout: float | None = None) -> SippResult:
        """Waits for sipp to end by itself (bounded); kills it if it does not."""
        assert self.proc is not None, "sipp not started"
        limit = self.timeout + 10 if timeout is None else timeout
        note = ""
        try:
            rc = self.proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(timeout=5)
            note = f"sipp did not exit within {limit:.0f}s: killed\n"
        return SippResult(rc, note + self.report(rc))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def report(self, rc: int | None = None) -> str:
        if rc is None and self.proc is not None:
            rc = self.proc.poll()
        parts = [
            f"sipp {self.scenario.name} exit code {rc} ({EXIT_CODES.get(rc, '?')})",
            "command: " + " ".join(self.cmd),
        ]
        for name in ("stdout", "screen", "errors", "calldebug", "logs", "messages"):
            parts.append(f"--- sipp {name} ({self.files[name]}) ---\n{_read(self.files[name])}")
        return "\n".join(parts)


def run_sipp(
    scenario: str | Path,
    target: str,
    *,
    service: str | None = None,
    keys: Mapping[str, str] | None = None,
    extra_args: Iterable[str] = (),
    timeout: float = 20.0,
    calls: int = 1,
    workdir: Path | None = None,
    port: int | None = None,
    netns: str | None = None,
    host: str = HOST,
) -> SippResult:
    """Runs a client scenario in the foreground: `calls` calls (-m), then sipp exits.

    target is "host:port" of the node; service is the user part of the Request-URI (-s).
    """
    sipp = _Sipp(scenario, target, service=service, keys=keys, extra_args=extra_args,
                 timeout=timeout, calls=calls, workdir=workdir, port=port, netns=netns, host=host)
    try:
        return sipp.start().wait()
    finally:
        sipp.stop()


class SippUas(_Sipp):
    """A sipp server scenario (a callee) in the background, listening on .host:.port."""

    def __init__(
        self,
        scenario: str | Path,
        *,
        service: str | None = None,
        keys: Mapping[str, str] | None = None,
        extra_args: Iterable[str] = (),
        timeout: float = 20.0,
        calls: int = 1,
        workdir: Path | None = None,
        port: int | None = None,
        netns: str | None = None,
        host: str = HOST,
    ) -> None:
        super().__init__(scenario, None, service=service, keys=keys, extra_args=extra_args,
                         timeout=timeout, calls=calls, workdir=workdir, port=port,
                         netns=netns, host=host)

    def start(self) -> SippUas:
        super().start()
        self._wait_bound()
        return self

    def _wait_bound(self, limit: float = 5.0) -> None:
        """Returns once sipp holds its UDP port (so a call sent to it is not lost)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError("sipp UAS exited at start-up\n" + self.report())
            if udp_port_bound(self.port, self.host,
                              None if self.netns is None else self.proc.pid):
                return
            time.sleep(0.05)
        raise AssertionError(f"sipp UAS did not bind {self.host}:{self.port} in {limit}s\n"
                             + self.report())

    def __enter__(self) -> SippUas:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
