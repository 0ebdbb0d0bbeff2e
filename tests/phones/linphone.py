"""A headless linphonec (Debian linphone-cli) phone, driven through its stdin.

    phone = Linphone(bed, 0, "1001", box=bed.addr(0), workdir=tmp / "l1001").start()
    phone.wait_registered()
    phone.command("call sip:1002@meshsip")
    phone.wait_output("connected")
    phone.stop()

It runs inside a test-bed namespace (it must: it would otherwise reach for STUN and DNS
servers on the machine's real network; here STUN is off and the namespace has no way out).
`route=True` sets the box as the phone's outbound proxy (`reg_route`), the way users set
Linphone up: a domain of their choosing and the box as the proxy that every request is
routed through. linphonec treats a network without a default route as down, so the
namespace gets one (onto the bed's own bridge, which leads nowhere else).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from .nsexec import ns_argv


def linphonec_binary() -> str | None:
    return shutil.which("linphonec")


class Linphone:
    def __init__(self, bed: Any, host: int, extension: str, *, box: str, workdir: Path,
                 sip_port: int = 5070, rtp_port: int = 7078, domain: str = "meshsip",
                 route: bool = True) -> None:
        self.bed, self.host, self.extension = bed, host, extension
        self.workdir = Path(workdir)
        self.home = self.workdir / "home"
        self.log_file = self.workdir / "linphone.log"
        self.rc = self.workdir / "linphonerc"
        # liblinphone skips its setup when this directory is missing (FIELD-NOTES)
        (self.home / ".local" / "share" / "linphone").mkdir(parents=True, exist_ok=True)
        route_line = f"reg_route=<sip:{box}:5060;lr>\n" if route else ""
        self.rc.write_text(
            f"[sip]\nsip_port={sip_port}\nsip_tcp_port=-1\nsip_tls_port=-1\n"
            "default_proxy=0\n"
            "[net]\nstun_server=\nfirewall_policy=0\nipv6_enabled=0\n"
            f"[rtp]\naudio_rtp_port={rtp_port}\n"
            f"[proxy_0]\nreg_proxy=<sip:{box}:5060>\n{route_line}"
            f"reg_identity=sip:{extension}@{domain}\nreg_expires=600\nreg_sendregister=1\n"
            "publish=0\n"
            "[misc]\nenable_lime=0\n"
        )
        self._out: list[str] = []
        self._lock = threading.Lock()
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> Linphone:
        ns = self.bed.ns(self.host)
        subprocess.run(["ip", "-n", ns, "route", "replace", "default", "dev", "eth0"],
                       check=True, capture_output=True)
        self.proc = subprocess.Popen(
            [*ns_argv(ns), "linphonec", "-c", str(self.rc), "-a", "-d", "6",
             "-l", str(self.log_file)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, env=dict(os.environ, HOME=str(self.home)), start_new_session=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        return self

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self._out.append(line)

    def output(self) -> str:
        with self._lock:
            return "".join(self._out)

    def sip_log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def command(self, line: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def _wait(self, what: str, text: str, source: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in source():
            if time.monotonic() > deadline:
                raise AssertionError(f"linphone {self.extension}: no {what} within {timeout}s"
                                     f"\n--- output ---\n{self.output()[-3000:]}")
            time.sleep(0.1)

    def wait_registered(self, timeout: float = 20.0) -> None:
        self._wait("registration", "LinphoneRegistrationOk", self.sip_log, timeout)

    def wait_output(self, text: str, timeout: float = 20.0) -> None:
        self._wait(repr(text), text, self.output, timeout)

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            self.command("quit")
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()  # it can hang unregistering, as baresip does
            self.proc.wait(timeout=5)
        self.proc = None
