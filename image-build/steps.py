"""Named build steps: each prints its name, then its time; a failed step says which and why."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path


class StepFailed(Exception):
    pass


class Steps:
    def __init__(self) -> None:
        self.times: list[tuple[str, float]] = []
        self.t0 = time.monotonic()

    def run(self, name: str, action: Callable[[], object]) -> None:
        print(f"==> {name}", flush=True)
        start = time.monotonic()
        try:
            action()
        except StepFailed as exc:
            print(f"!!! step '{name}' failed: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        except subprocess.CalledProcessError as exc:
            cmd = shlex.join(str(a) for a in exc.cmd) if isinstance(exc.cmd, list) else exc.cmd
            print(f"!!! step '{name}' failed: `{cmd}` exited with {exc.returncode}",
                  file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        took = time.monotonic() - start
        self.times.append((name, took))
        print(f"<== {name}: {took:.1f} s", flush=True)

    def summary(self) -> None:
        total = time.monotonic() - self.t0
        print("step times:")
        for name, took in self.times:
            print(f"  {took:7.1f} s  {name}")
        print(f"  {total:7.1f} s  total")


def sh(argv: Sequence[str | Path], *, cwd: Path | None = None, env: dict[str, str] | None = None,
       quiet: bool = False) -> None:
    """Runs a command; its output goes to the build log unless quiet (then only on failure)."""
    args = [str(a) for a in argv]
    if not quiet:
        subprocess.run(args, check=True, cwd=cwd, env=env, stdin=subprocess.DEVNULL)
        return
    done = subprocess.run(args, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        raise subprocess.CalledProcessError(done.returncode, args)


def in_root(root: Path, script: str) -> None:
    """Runs a shell script inside the root file system (qemu-user for a foreign root)."""
    sh(["chroot", root, "/bin/sh", "-euc", script],
       env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8",
            "DEBIAN_FRONTEND": "noninteractive"})
