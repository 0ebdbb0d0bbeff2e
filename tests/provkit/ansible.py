"""Runs ansible-playbook from the project venv against provisioning/ and reads its recap."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROVISIONING = REPO / "provisioning"
BIN = Path(sys.executable).parent
RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)",
                   re.MULTILINE)


def ansible_missing() -> str | None:
    """None if ansible-playbook and ansible-lint are installed beside this Python."""
    for tool in ("ansible-playbook", "ansible-lint"):
        if not (BIN / tool).exists():
            return f"{tool} is not installed: make provision-venv (pip install -e '.[provision]')"
    return None


@dataclass
class Run:
    returncode: int
    output: str
    seconds: float

    def recap(self, host: str) -> dict[str, int]:
        for m in RECAP.finditer(self.output):
            if m.group(1) == host:
                return {"ok": int(m.group(2)), "changed": int(m.group(3)),
                        "unreachable": int(m.group(4)), "failed": int(m.group(5))}
        raise AssertionError(f"no recap for {host} in:\n{self.output[-4000:]}")

    def changed_tasks(self) -> list[str]:
        """Names of the tasks that reported a change (for a readable failure)."""
        names, task = [], None
        for line in self.output.splitlines():
            if line.startswith("TASK ["):
                task = line[6:line.find("]")]
            elif line.startswith("changed:") and task and task not in names:
                names.append(task)
        return names


def env() -> dict[str, str]:
    out = dict(os.environ)
    out["PATH"] = f"{BIN}{os.pathsep}{out.get('PATH', '')}"
    out["ANSIBLE_CONFIG"] = str(PROVISIONING / "ansible.cfg")
    out["ANSIBLE_FORCE_COLOR"] = "0"
    out["ANSIBLE_NOCOLOR"] = "1"
    return out


def playbook(inventory: Path, *args: str, playbook: Path | None = None,
             timeout: float = 1200, prefix: list[str] | None = None) -> Run:
    """ansible-playbook -i inventory [playbook] args..., from provisioning/ (its ansible.cfg)."""
    argv = [*(prefix or []), str(BIN / "ansible-playbook"), "-i", str(inventory),
            str(playbook or PROVISIONING / "site.yml"), *args]
    t0 = time.monotonic()
    done = subprocess.run(argv, cwd=PROVISIONING, env=env(), capture_output=True, text=True,
                          timeout=timeout)
    return Run(done.returncode, done.stdout + done.stderr, time.monotonic() - t0)


def tool(name: str) -> str | None:
    return shutil.which(name)


def wheelhouse() -> Path:
    """The controller's wheelhouse for this machine's architecture, in the test cache (built
    once, rebuilt when the sources change): the playbook then finds it ready, even inside a
    namespace with no route to PyPI."""
    from .rootfs import cache_dir

    out = cache_dir() / "wheelhouse"
    arch = os.uname().machine
    script = PROVISIONING / "roles/meshsip_node/files/build_wheelhouse.py"
    subprocess.run([sys.executable, str(script), str(REPO), str(out / arch), arch], check=True,
                   capture_output=True, timeout=600)
    return out
