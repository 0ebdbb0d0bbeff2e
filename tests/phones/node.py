"""Launches a meshsip node (`python -m appliance.cli run`) as a subprocess on 127.0.0.1.

    @pytest.fixture
    def start_node():
        with NodeFactory() as factory:
            yield factory

    def test_x(start_node, tmp_path):
        node = start_node(tmp_path, config='[sip]\\nt1_ms = 100\\n')
        ... node.port, node.proc, node.log() ...

Inside a network namespace (tests/meshbed): `start_node(tmp_path, netns="ns", host="10.99.0.11")`
runs it with `ip netns exec` and binds it to that address.

Teardown sends SIGTERM, waits, and asserts the node exited with code 0.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .nsexec import ns_argv
from .ports import HOST, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
READY = re.compile(rb"\bready\b", re.IGNORECASE)
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


class NodeProcess:
    def __init__(self, tmp_path: Path, extra_args: tuple[str, ...], config: str | None,
                 port: int | None = None, data_dir: Path | None = None,
                 netns: str | None = None, host: str = HOST,
                 env: dict[str, str] | None = None, tls_port: int = 0) -> None:
        self.port = port or free_port()
        # Nodes side by side on loopback cannot all have 5061: TLS only when asked for.
        self.tls_port = tls_port
        self.env = env or {}  # added to the node's environment (e.g. libfaketime)
        self.host = host  # the address it binds and phones use
        self.netns = netns  # network namespace to run in (None: this one)
        self.dir = Path(tmp_path) / (f"node-{self.port}" if netns is None
                                     else f"node-{netns}-{self.port}")
        self.data_dir = data_dir or self.dir / "data"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cmd = [
            *ns_argv(netns), sys.executable, "-m", "appliance.cli", "run",
            "--bind", host, "--sip-port", str(self.port), "--data-dir", str(self.data_dir),
            "--tls-port", str(tls_port),
            # mDNS in this (the root) namespace would leave the machine: only inside ours.
            *(["--no-discovery"] if netns is None and "--no-discovery" not in extra_args
              else []),
            # as root the status page would take port 80 of this namespace: none, unless asked
            *(["--web-port", "0"] if netns is None and "--web-port" not in extra_args
              else []),
            *extra_args,
        ]
        if config is not None:
            cfg = self.dir / "node.toml"
            cfg.write_text(config)
            self.cmd += ["--config", str(cfg)]
        self._out: list[bytes] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None

    @property
    def target(self) -> str:
        """host:port, as sipp wants it."""
        return f"{self.host}:{self.port}"

    def uri(self, extension: str) -> str:
        return f"sip:{extension}@{self.host}:{self.port}"

    def start(self) -> NodeProcess:
        env = dict(os.environ) | self.env
        # The repository goes last, so an installed (or a stand-in) `appliance` wins.
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (env.get("PYTHONPATH"), str(REPO_ROOT)) if p
        )
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, cwd=self.dir, env=env, start_new_session=True,
        )
        for stream, name in ((self.proc.stdout, "stdout"), (self.proc.stderr, "stderr")):
            threading.Thread(target=self._pump, args=(stream, name == "stderr"), daemon=True,
                             name=f"node-{self.port}-{name}").start()
        deadline = time.monotonic() + READY_TIMEOUT
        while not self._ready.wait(0.05):
            if self.proc.poll() is not None:
                time.sleep(0.2)  # let the pumps drain
                raise AssertionError(
                    f"node exited with {self.proc.returncode} before saying ready\n"
                    f"command: {' '.join(self.cmd)}\n--- node output ---\n{self.log()}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(
                    f"node did not print 'ready' on stderr within {READY_TIMEOUT}s\n"
                    f"command: {' '.join(self.cmd)}\n--- node output ---\n{self.log()}"
                )
        return self

    def _pump(self, stream, is_stderr: bool) -> None:  # noqa: ANN001
        for line in iter(stream.readline, b""):
            with self._lock:
                self._out.append(line)
            if is_stderr and READY.search(line):
                self._ready.set()
        stream.close()

    def log(self) -> str:
        """Everything the node printed so far (stdout and stderr, interleaved by line)."""
        with self._lock:
            return b"".join(self._out).decode(errors="replace")

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, wait (bounded), SIGKILL if needed. Returns the exit code (-9 if killed)."""
        if self.proc is None:
            return self.returncode if self.returncode is not None else 0
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                self.returncode = self.proc.returncode
                self.proc = None
                raise AssertionError(
                    f"node did not exit within {timeout}s of SIGTERM: killed\n{self.log()}"
                ) from None
        self.returncode = self.proc.returncode
        self.proc = None
        return self.returncode

    def kill(self) -> None:
        """SIGKILL the node's process group (its own session: only what it started)."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=5)


class NodeFactory:
    """Starts nodes on demand and stops them all at the end, checking each exits with 0."""

    def __init__(self) -> None:
        self.nodes: list[NodeProcess] = []

    def __call__(self, tmp_path: Path, *extra_args: str, config: str | None = None,
                 port: int | None = None, data_dir: Path | None = None,
                 netns: str | None = None, host: str = HOST,
                 env: dict[str, str] | None = None, tls_port: int = 0) -> NodeProcess:
        node = NodeProcess(tmp_path, extra_args, config, port, data_dir, netns, host, env,
                           tls_port)
        self.nodes.append(node)
        return node.start()

    def close(self) -> None:
        failures = []
        for node in self.nodes:
            try:
                rc = node.stop()
            except AssertionError as exc:
                failures.append(str(exc))
                continue
            if rc != 0:
                failures.append(f"node on port {node.port} exited with {rc} after SIGTERM\n"
                                f"--- node output ---\n{node.log()}")
        self.nodes.clear()
        assert not failures, "\n\n".join(failures)

    def __enter__(self) -> NodeFactory:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:  # the test already failed: stop everything, do not mask its error
            try:
                self.close()
            except AssertionError:
                pass


@pytest.fixture
def start_node() -> Iterator[NodeFactory]:
    """Fixture factory: start_node(tmp_path, *extra_args, config=TOML) -> NodeProcess."""
    with NodeFactory() as factory:
        yield factory
