"""Headless Chromium (Debian `chromium`) as a real browser for the tests, in a namespace.

    html, seconds = page_dom(url, netns="ns", workdir=tmp, javascript=False)  # after load
    html, seconds = page_dom(url, netns="ns", workdir=tmp, png=tmp / "page.png")

The DOM (and the screenshot) is read over the DevTools protocol on a pipe
(`--remote-debugging-pipe`: JSON messages separated by NUL bytes on file descriptors 3
and 4), because `--dump-dom`
prints nothing once scripts are disabled with `--blink-settings=scriptEnabled=false`;
`Emulation.setScriptExecutionDisabled` turns the page's scripts off instead. Each run has
a fresh profile and runs as root with --no-sandbox; nothing else is fetched (no first-run,
sync, component updates or background networking).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from .nsexec import ns_argv

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--mute-audio"]


def chromium_binary() -> str | None:
    return shutil.which("chromium")


def _argv(netns: str | None, workdir: Path, *args: str) -> list[str]:
    binary = chromium_binary()
    assert binary is not None, "chromium is not installed"
    profile = workdir / f"chromium-profile-{time.monotonic_ns()}"
    return [*ns_argv(netns), binary, *FLAGS, f"--user-data-dir={profile}", *args]


def _env(workdir: Path) -> dict[str, str]:
    return os.environ | {"HOME": str(workdir)}


class _Pipe:
    def __init__(self, proc: subprocess.Popen[bytes], to_browser: int, from_browser: int,
                 deadline: float) -> None:
        self.proc, self.out, self.inp, self.deadline = proc, to_browser, from_browser, deadline
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self.out, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self.next_id:
                assert "error" not in reply, f"{method}: {reply['error']}"
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str) -> dict[str, Any]:
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method:
                    return self.events.pop(i)
            self.events.append(self._read())

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            assert time.monotonic() < self.deadline, "chromium did not answer in time"
            chunk = os.read(self.inp, 65536)
            assert chunk, f"chromium closed its pipe (exit {self.proc.poll()})"
            self.buffer += chunk
        message, _, self.buffer = self.buffer.partition(b"\0")
        return json.loads(message)


def _onto_3_and_4(a: int, b: int) -> None:
    """In the child: a becomes fd 3, b fd 4 (through fds >= 10, so neither clobbers the
    other whatever numbers they had)."""
    high_a, high_b = fcntl.fcntl(a, fcntl.F_DUPFD, 10), fcntl.fcntl(b, fcntl.F_DUPFD, 10)
    os.dup2(high_a, 3)
    os.dup2(high_b, 4)


def page_dom(url: str, *, netns: str | None, workdir: Path, javascript: bool = True,
             settle: float = 0.5, timeout: float = 90, png: Path | None = None,
             size: tuple[int, int] = (412, 915)) -> tuple[str, float]:
    """The page's DOM as HTML once loaded (and `settle` seconds later, for its scripts),
    and the seconds from the browser's start to the load event. With `png`, also a
    screenshot of the whole page in a phone-sized window (`size`, CSS pixels)."""
    to_browser, browser_in = os.pipe()  # chromium reads fd 3, writes fd 4
    browser_out, from_browser = os.pipe()
    start = time.monotonic()
    proc = subprocess.Popen(
        _argv(netns, workdir, "--remote-debugging-pipe", "about:blank"),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=_env(workdir), start_new_session=True,
        pass_fds=(3, 4), preexec_fn=lambda: _onto_3_and_4(to_browser, from_browser),
    )
    os.close(to_browser)
    os.close(from_browser)
    pipe = _Pipe(proc, browser_in, browser_out, start + timeout)
    try:
        targets = pipe.call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        session = pipe.call("Target.attachToTarget", targetId=page["targetId"],
                            flatten=True)["sessionId"]
        pipe.call("Page.enable", session)
        pipe.call("Emulation.setDeviceMetricsOverride", session, width=size[0],
                  height=size[1], deviceScaleFactor=1, mobile=True)
        if not javascript:
            pipe.call("Emulation.setScriptExecutionDisabled", session, value=True)
        pipe.call("Page.navigate", session, url=url)
        pipe.wait_event("Page.loadEventFired")
        loaded = time.monotonic() - start
        time.sleep(settle)
        root = pipe.call("DOM.getDocument", session, depth=-1)["root"]
        html = pipe.call("DOM.getOuterHTML", session, nodeId=root["nodeId"])["outerHTML"]
        if png is not None:
            shot = pipe.call("Page.captureScreenshot", session, format="png",
                             captureBeyondViewport=True)
            png.write_bytes(base64.b64decode(shot["data"]))
        pipe.call("Browser.close")
        proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        os.close(browser_in)
        os.close(browser_out)
    return html, loaded
