"""The status page on a 5-box test bed, read by a real browser (headless Chromium).

Five boxes in network namespaces (tests/meshbed), real mDNS between them, phones
registered by sipp on three of them, one box's clock 3 hours behind (libfaketime). Two
phones register with a display name (one on box 0, one on box 4): the page names them.
Chromium runs inside box 0's namespace (the bed has no route out) and loads box 0's page
on port 80, the default: with JavaScript on (it saves a screenshot, phone-sized) and off;
the DOM must show all five boxes, every phone with its name and the clock line, and
`/api/status` and `/metrics` must say the same. Then one box loses its power (SIGKILL):
the other boxes' pages show it as not answering, with the plain-words line, and keep
showing it after the ring has dropped it. Timings are printed (run with -s); nothing is
asserted on time but generous deadlines.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Callable
from html import escape
from pathlib import Path
from typing import Any

import pytest
from marks import BED
from meshbed import MeshBed
from meshbed.fixtures import make_bed_fixture  # noqa: F401  (fixture make_bed)
from phones.chromium import chromium_binary, page_dom
from phones.nsexec import in_netns

FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
pytestmark = [
    *BED,
    pytest.mark.skipif(not FAKETIME_LIB.exists(), reason="faketime not installed"),
    pytest.mark.skipif(chromium_binary() is None, reason="chromium not installed (apt-get install "
                                                "chromium; `make test` does)"),
]
PHONES = {0: ["1001", "1002"], 2: ["2001"], 4: ["4001", "4002"]}
# display names the phones register with (the others send none); "<" and "&" to escape
NAMES = {"1001": "Alice Field", "4001": "Dr. <Bob> & Co"}
# box 4 is a Pi that booted without its clock: 3 hours behind (monotonic clock untouched)
CLOCK_3H_BEHIND = {"LD_PRELOAD": str(FAKETIME_LIB), "FAKETIME": "-3h",
                   "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def get(bed: MeshBed, i: int, path: str, host: int | None = None) -> bytes:
    """GET http://<host's address>:80<path>, from inside host i's namespace."""
    url = f"http://{bed.addr(i if host is None else host)}{path}"
    return in_netns(bed.ns(i), lambda: urllib.request.urlopen(url, timeout=15).read())


def status(bed: MeshBed, i: int) -> dict[str, Any]:
    return json.loads(get(bed, i, "/api/status"))


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.5)
    return time.monotonic() - start


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def test_page_shows_every_box_and_phone_then_a_dead_box(make_bed: Callable[..., MeshBed],
                                                        tmp_path: Path) -> None:
    bed = make_bed(5)
    nodes = {i: bed.node(i, config=f'[node]\nname = "mesh-{i}"\n[sip]\nt1_ms = 200\n',
                         env=CLOCK_3H_BEHIND if i == 4 else None)
             for i in range(5)}
    port = 7000
    for i, extensions in PHONES.items():
        for ext in extensions:
            port += 1
            display = f'"{NAMES[ext]}" ' if ext in NAMES else ""
            result = bed.sipp(i, "register", nodes[i].target, service=ext,
                              keys={"contact_port": str(port), "display": display})
            assert result.ok, result.logs
    phones = sorted(e for exts in PHONES.values() for e in exts)

    def complete(i: int) -> bool:
        doc = status(bed, i)
        return (sum(b["answering"] for b in doc["boxes"]) == 5
                and sorted(p["extension"] for p in doc["directory"]) == phones)

    formed = wait_for("box 0 sees 5 boxes answering and every phone", lambda: complete(0), 60)
    print(f"\nbox 0's page complete {formed:.1f}s after the last REGISTER")

    url = f"http://{bed.addr(0)}/"
    html = get(bed, 0, "/")
    shot = tmp_path / "status-page.png"
    dom_js, js_seconds = page_dom(url, netns=bed.ns(0), workdir=tmp_path, png=shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dom_off, off_seconds = page_dom(url, netns=bed.ns(0), workdir=tmp_path, javascript=False)
    print(f"page weight {len(html)} bytes; Chromium from start to the load event: JS on "
          f"{js_seconds:.2f}s, off {off_seconds:.2f}s; screenshot {shot}")
    assert len(html) < 100_000

    doc = status(bed, 0)
    assert {p["extension"]: p["name"] for p in doc["directory"]} == {
        ext: NAMES.get(ext, "") for ext in phones}
    ids = sorted(b["node_id"] for b in doc["boxes"])
    assert len(ids) == 5 and {b["name"] for b in doc["boxes"]} == {f"mesh-{i}" for i in range(5)}
    for dom in (dom_js, dom_off):
        assert sorted(re.findall(r'data-box="([0-9a-f]+)"', dom)) == ids
        assert sorted(re.findall(r'data-phone="([^"]+)"', dom)) == phones
        assert all(f"mesh-{i}" in dom for i in range(5))
        assert "<svg" in dom
        named = dict(re.findall(r'data-phone="(\d+)"><td>\d+</td><td>([^<]*)</td>', dom))
        assert named == {ext: escape(NAMES.get(ext, ""), quote=False) for ext in phones}, named
    live = re.compile(r'id="live">Live: updated')  # the page's script has run
    assert live.search(dom_js) and not live.search(dom_off), dom_off[-800:]

    clock = "the clock of box mesh-4 (10.99.0.14) differs by 3 hours from the other boxes"
    assert clock in [p["text"] for p in doc["problems"]] and clock in dom_off

    metrics = get(bed, 0, "/metrics").decode()
    assert metric(metrics, 'meshsip_boxes{state="answering"}') == 5
    assert metric(metrics, 'meshsip_boxes{state="not_answering"}') == 0
    assert metric(metrics, "meshsip_phones_overlay") == len(phones) == len(doc["directory"])
    assert metric(metrics, "meshsip_bindings") == len(PHONES[0])
    assert metric(metrics, "process_resident_memory_bytes") > 0

    bed.kill_node(nodes[3])  # power lost: no goodbye
    dead = next(b for b in doc["boxes"] if b["name"] == "mesh-3")

    def shown_dead(i: int) -> bool:
        d = status(bed, i)
        box = next((b for b in d["boxes"] if b["node_id"] == dead["node_id"]), None)
        return (box is not None and not box["answering"]
                and any(p["text"].startswith("box mesh-3 (10.99.0.13) has not answered for")
                        for p in d["problems"]))

    for i in (0, 1):
        seen = wait_for(f"box {i} shows mesh-3 not answering", lambda i=i: shown_dead(i), 60)
        print(f"box {i} shows the killed box as not answering after {seen:.1f}s")

    def ring_dropped(i: int) -> bool:
        ring = status(bed, i)["overlay"]
        return not any(dead["node_id"] in ref for ref in
                       [*ring["successors"], ring["predecessor"] or ""])

    dropped = wait_for("the ring drops mesh-3", lambda: ring_dropped(1), 120)
    time.sleep(4)
    print(f"box 1's ring dropped the killed box {dropped:.1f}s later; its page still shows it")
    assert shown_dead(1)  # the page keeps a box its neighbours no longer hold ...
    silent = next(b for b in status(bed, 1)["boxes"] if b["node_id"] == dead["node_id"])
    assert silent["silent_seconds"] >= 4  # ... silent since they last held it
    dom, _ = page_dom(f"http://{bed.addr(1)}/", netns=bed.ns(1), workdir=tmp_path,
                      javascript=False)
    assert "box mesh-3 (10.99.0.13) has not answered for" in dom
    assert re.search(r"mesh-3.*not answering for", dom, re.DOTALL)
