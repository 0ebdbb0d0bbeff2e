"""`meshsip enroll` against a real node on loopback (no multicast here: plug-and-play is
off without discovery): the window opens and closes, a Linphone link works once, and a
client that is not on one of the box's links gets no password."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from phones.ports import free_port

REPO = Path(__file__).resolve().parent.parent


def enroll(node, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "appliance.cli", "enroll", "--data-dir",
                          str(node.data_dir), *args], cwd=REPO, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_enroll_window_linphone_link_and_own_links_only(start_node, tmp_path):
    web = free_port(tcp=True)
    node = start_node(tmp_path, "--web-port", str(web),
                      config='[enroll]\nwindow = 0\nsecret = "s"\n')
    assert "enrolment closed" in enroll(node)
    assert "enrolment open for 10 min" in enroll(node, "--open", "10m")
    base = f"http://127.0.0.1:{web}/prov/"
    status, text = get(base + "0015657322ff.cfg")  # loopback is no link of the box
    assert status == 403 and "own links" in text and "password" not in text
    assert get(base + "y000000000044.cfg") == (200, "#!version:1.0.0.1\n")  # no secret in it
    assert get(base + "../control.sock")[0] == 404
    out = enroll(node, "--linphone")
    url = re.search(r"http://\S+", out)
    assert url and "█" in out, out
    status, text = get(url.group(0))
    assert status == 200 and "<entry name=\"passwd\"" in text, text
    assert get(url.group(0))[0] == 403  # once
    assert "enrolment closed" in enroll(node, "--close")
