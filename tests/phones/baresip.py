"""A headless baresip phone driven over its ctrl_tcp socket (netstring-framed JSON).

    phone = Baresip("1001", node_port, workdir=tmp_path / "p1001").start()
    phone.wait_registered()
    phone.dial("sip:1002@127.0.0.1:5060")
    phone.wait_event("CALL_ESTABLISHED")
    phone.rtp_packets()      # -> RtpCounters(rx=..., tx=...)
    phone.hangup()
    phone.stop()

Inside a network namespace (tests/meshbed): `Baresip(..., netns="ns", bind="10.99.0.12")`
runs it with `ip netns exec`, listens for SIP on the bind address and keeps its control port
on the namespace's own 127.0.0.1 (the harness connects from a socket made in there).

Failures raise AssertionError with the tail of baresip's own output and the events seen.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .nsexec import ns_argv, ns_connect
from .ports import HOST, free_port

MODULE_DIRS = ("/usr/lib/baresip/modules", "/usr/lib/x86_64-linux-gnu/baresip/modules",
               "/usr/local/lib/baresip/modules")


def baresip_binary() -> str | None:
    return shutil.which("baresip")


def module_dir() -> str:
    for d in MODULE_DIRS:
        if os.path.isfile(os.path.join(d, "ctrl_tcp.so")):
            return d
    raise AssertionError(f"baresip modules (ctrl_tcp.so) not found in any of {MODULE_DIRS}")


@dataclass
class RtpCounters:
    rx: int
    tx: int


class Baresip:
    def __init__(
        self,
        extension: str,
        node_port: int,
        *,
        workdir: Path,
        password: str | None = None,
        node_host: str = HOST,
        regint: int = 60,
        answermode: str = "auto",
        tone_hz: int = 440,
        lifetime_s: int = 300,
        netns: str | None = None,
        bind: str = HOST,
        outbound: str | None = None,
        transport: str = "udp",
    ) -> None:
        self.extension = extension
        self.node_port = node_port
        self.node_host = node_host
        self.workdir = Path(workdir)
        self.password = password
        self.regint = regint
        self.answermode = answermode
        self.tone_hz = tone_hz
        self.outbound = outbound  # outbound proxy URI: every request then carries its Route
        self.transport = transport  # "udp", "tcp" or "tls" (then node_port is its TLS port)
        self.lifetime_s = lifetime_s  # baresip -t: it quits by itself after this, whatever happens
        self.netns = netns  # network namespace to run in (None: this one)
        self.bind = bind  # SIP and RTP address
        self.sip_port = free_port()
        self.ctrl_port = free_port(udp=False)
        self.proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self._cond = threading.Condition()
        self._events: list[dict[str, Any]] = []
        self._responses: dict[str, dict[str, Any]] = {}
        self._token = 0
        self._closed = False
        self.log_path = self.workdir / "baresip.log"

    # -- configuration --------------------------------------------------------------------
    @property
    def aor(self) -> str:
        return f"sip:{self.extension}@{self.node_host}:{self.node_port}"

    def account_line(self) -> str:
        line = (f"<{self.aor};transport={self.transport}>;regint={self.regint}"
                f";answermode={self.answermode};audio_codecs=PCMU,PCMA")
        if self.password is not None:
            line += f";auth_pass={self.password}"
        if self.outbound is not None:
            line += f';outbound="{self.outbound}"'
        return line

    def _write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = f"""\
poll_method		epoll
sip_listen		{self.bind}:{self.sip_port}
call_local_timeout	120
call_max_calls		4
audio_player		aubridge,nil-{self.sip_port}
audio_source		ausine,{self.tone_hz}
audio_alert		aubridge,alert-{self.sip_port}
ausrc_srate		48000
ausrc_channels		2
audio_level		no
rtp_ports		10000-40000
rtp_timeout		0
dns_server		{HOST}:53
net_interface		{self.bind}
module_path		{module_dir()}
module			g711.so
module			ausine.so
module			aubridge.so
module_app		account.so
module_app		menu.so
module_app		ctrl_tcp.so
ctrl_tcp_listen		{HOST}:{self.ctrl_port}
"""
        (self.workdir / "config").write_text(config)
        (self.workdir / "accounts").write_text(self.account_line() + "\n")
        (self.workdir / "contacts").write_text("")

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> Baresip:
        binary = baresip_binary()
        if binary is None:
            raise AssertionError("baresip is not installed (apt-get install baresip-core)")
        self._write_config()
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*ns_argv(self.netns), binary, "-f", str(self.workdir), "-t", str(self.lifetime_s)],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            cwd=self.workdir, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        last: OSError | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._fail(f"baresip exited with {self.proc.returncode} during start-up")
            try:
                self._sock = ns_connect(self.netns, (HOST, self.ctrl_port), timeout=1.0)
                break
            except OSError as exc:
                last = exc
                time.sleep(0.05)
        else:
            self._fail(f"ctrl_tcp on {HOST}:{self.ctrl_port} not reachable in {timeout}s ({last})")
        self._sock.settimeout(0.2)
        self._reader = threading.Thread(target=self._read_loop, daemon=True,
                                        name=f"baresip-{self.extension}")
        self._reader.start()
        return self

    def stop(self) -> None:
        """Quit politely, then kill by PID: baresip can hang ~30 s unregistering."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            try:
                self.command("quit", timeout=1.0)
            except AssertionError:
                pass
            try:
                proc.wait(timeout=1.5)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=5)
        self._closed = True
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        if self._reader is not None:
            self._reader.join(timeout=2)
        self._log.close()
        self.proc = None

    def __enter__(self) -> Baresip:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- ctrl_tcp -------------------------------------------------------------------------
    def _read_loop(self) -> None:
        buf = b""
        assert self._sock is not None
        while not self._closed:
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            while True:
                m = re.match(rb"(\d+):", buf)
                if not m:
                    break
                size = int(m.group(1))
                end = m.end() + size
                if len(buf) < end + 1:
                    break
                payload, buf = buf[m.end():end], buf[end + 1:]  # drop the trailing ","
                try:
                    msg = json.loads(payload)
                except ValueError:
                    continue
                with self._cond:
                    if msg.get("event"):
                        msg["_t"] = time.monotonic()
                        self._events.append(msg)
                    elif msg.get("response"):
                        self._responses[str(msg.get("token"))] = msg
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def command(self, command: str, params: str | None = None, timeout: float = 5.0) -> str:
        """Runs a baresip command (as in its menu: "dial", "hangup", "reginfo", ...).

        Returns the command's text output; raises AssertionError if baresip says not ok.
        """
        if self._sock is None:
            self._fail("baresip is not started")
        with self._cond:
            self._token += 1
            token = f"t{self._token}"
        body: dict[str, Any] = {"command": command, "token": token}
        if params is not None:
            body["params"] = params
        data = json.dumps(body).encode()
        try:
            self._sock.sendall(b"%d:%s," % (len(data), data))
        except OSError as exc:
            self._fail(f"cannot send {command!r} to ctrl_tcp: {exc}")
        deadline = time.monotonic() + timeout
        with self._cond:
            while token not in self._responses:
                left = deadline - time.monotonic()
                if left <= 0:
                    self._fail(f"no answer to command {command!r} within {timeout}s")
                self._cond.wait(min(left, 0.2))
            resp = self._responses.pop(token)
        if not resp.get("ok", False):
            self._fail(f"command {command!r} {params or ''} failed: {resp.get('data')!r}")
        return str(resp.get("data") or "")

    # -- events ---------------------------------------------------------------------------
    def events(self) -> list[dict[str, Any]]:
        with self._cond:
            return list(self._events)

    def wait_event(self, type_: str, timeout: float = 10.0) -> dict[str, Any]:
        """The next not yet consumed event of this type (CALL_RINGING, CALL_ESTABLISHED,
        CALL_CLOSED, REGISTER_OK, ...). Events of other types are left for later waits."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for ev in self._events:
                    if ev.get("type") == type_ and not ev.get("_used"):
                        ev["_used"] = True
                        return ev
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc is not None and self.proc.poll() is not None):
                    break
                self._cond.wait(min(left, 0.2))
        self._fail(f"no {type_} event within {timeout}s")

    def wait_registered(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(e.get("type") == "REGISTER_OK" for e in self.events()):
                return
            info = self.command("reginfo", timeout=max(0.5, deadline - time.monotonic()))
            if re.search(r"\bOK\b", _strip_ansi(info)):
                return
            fails = [e for e in self.events() if e.get("type") == "REGISTER_FAIL"]
            if fails and time.monotonic() + 0.5 > deadline:
                break
            time.sleep(0.1)
        self._fail(f"{self.aor} not registered within {timeout}s")

    # -- calls ----------------------------------------------------------------------------
    def dial(self, uri: str) -> str:
        return self.command("dial", uri)

    def answer(self) -> str:
        return self.command("accept")

    def hangup(self) -> str:
        return self.command("hangup")

    def rtp_packets(self) -> RtpCounters:
        """RTP packets received and sent so far by the current call's audio stream.

        From the menu command `audio_debug` (registered only while a call exists): its RTCP
        session section prints "TX: packets=N, octets=M" for what we sent and, per remote
        source, "psent=.. rcvd=N" for what we received.
        """
        text = _strip_ansi(self.command("audio_debug"))
        tx = re.search(r"TX:\s*packets=(\d+)", text)
        if tx is None:
            self._fail(f"no 'TX: packets=' in audio_debug output:\n{text}")
        rx = sum(int(n) for n in re.findall(r"\brcvd=(\d+)", text))
        return RtpCounters(rx=rx, tx=int(tx.group(1)))

    # -- diagnostics ----------------------------------------------------------------------
    def output_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no output)"
        return "\n".join(_strip_ansi(text).splitlines()[-lines:])

    def _fail(self, what: str) -> None:
        evs = [(e.get("type"), e.get("param") or e.get("peeruri")) for e in self.events()]
        rc = self.proc.poll() if self.proc is not None else None
        raise AssertionError(
            f"baresip {self.extension} (sip {self.bind}:{self.sip_port}, ctrl {self.ctrl_port}, "
            f"exit code {rc}): {what}\n"
            f"events seen: {evs}\n--- baresip output (tail) ---\n{self.output_tail()}"
        )


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)
