"""The web server and the status documents (appliance/web/): limits a stranger's browser
cannot pass, the routes, the survey of other boxes, problems in plain words, the page,
the metrics, the terminal view; and a real node's /api/status against `meshsip status`."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from phones.node import NodeFactory
from phones.ports import free_port
from prometheus_client.parser import text_string_to_metric_families

from appliance.web import http
from appliance.web.document import ThisBox, local_summary, overview
from appliance.web.http import HttpServer, Request, Response, Routes
from appliance.web.metrics import NodeMetrics
from appliance.web.page import render_page
from appliance.web.survey import BoxView, Phone, Survey
from appliance.web.terminal import render_terminal

REPO = Path(__file__).resolve().parent.parent


# -- the HTTP server ---------------------------------------------------------------------------
def serve(test: Callable[[int], Awaitable[None]], password: str | None = None,
          routes: Routes | None = None) -> None:
    async def main() -> None:
        table = routes or Routes()
        table.add("/", lambda r: Response(200, b"hello"))
        server = HttpServer(table, password)
        await server.start("127.0.0.1", 0)
        try:
            await test(server.port)
        finally:
            await server.close()

    asyncio.run(main())


async def exchange(port: int, data: bytes, read_all: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    reply = await asyncio.wait_for(reader.read() if read_all else reader.read(65536), 10)
    writer.close()
    return reply


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


def test_routes_and_methods() -> None:
    async def test(port: int) -> None:
        assert status_of(await exchange(port, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")) \
            == 200
        missing = await exchange(port, b"GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert status_of(missing) == 404 and b"status page is at /" in missing
        post = b"POST / HTTP/1.1\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
        assert status_of(await exchange(port, post)) == 405
        head = await exchange(port, b"HEAD / HTTP/1.0\r\n\r\n")
        assert status_of(head) == 200 and head.endswith(b"\r\n\r\n")  # no body
        two = await exchange(port, b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n"
                                   b"Connection: close\r\n\r\n")
        assert two.count(b"HTTP/1.1 200 OK") == 2  # kept alive, then closed as asked

    serve(test)


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GET / HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\n" + b"".join(b"X%d: 1\r\n" % i for i in range(100)) + b"\r\n", 431),
    (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n", 431),
    (b"POST / HTTP/1.1\r\nContent-Length: 999999\r\n\r\n", 413),
    (b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
    (b"GET / HTTP/2.0\r\n\r\n", 505),
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", 400),
    (b"\xff\xfe / HTTP/1.1\r\n\r\n", 400),
])
def test_bad_requests_get_a_plain_error(request_bytes: bytes, status: int) -> None:
    async def test(port: int) -> None:
        assert status_of(await exchange(port, request_bytes)) == status

    serve(test)


def test_slow_and_idle_clients_are_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "REQUEST_TIMEOUT", 0.3)
    monkeypatch.setattr(http, "IDLE_TIMEOUT", 0.3)

    async def test(port: int) -> None:
        assert status_of(await exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n")) == 408
        reply = await exchange(port, b"GET / HTTP/1.1\r\n\r\n")  # kept alive, then idle
        assert status_of(reply) == 200 and reply.count(b"HTTP/1.1") == 1

    serve(test)


def test_connections_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "MAX_CONNECTIONS", 2)

    async def test(port: int) -> None:
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        await asyncio.sleep(0.1)
        assert status_of(await exchange(port, b"GET / HTTP/1.1\r\n\r\n")) == 503
        for _, writer in idle:
            writer.close()
        await asyncio.sleep(0.1)
        ok = await exchange(port, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert status_of(ok) == 200

    serve(test)


def test_a_failing_handler_is_a_500_and_the_server_goes_on() -> None:
    routes = Routes()
    routes.add("/boom", lambda r: 1 / 0)

    async def test(port: int) -> None:
        assert status_of(await exchange(port, b"GET /boom HTTP/1.0\r\n\r\n")) == 500
        assert status_of(await exchange(port, b"GET / HTTP/1.0\r\n\r\n")) == 200

    serve(test, routes=routes)


def basic(password: str) -> bytes:
    return b"Authorization: Basic " + base64.b64encode(f"op:{password}".encode()) + b"\r\n"


def test_actions_need_the_operator_password() -> None:
    changed: list[Request] = []
    routes = Routes()
    routes.add("/api/open", lambda r: changed.append(r) or Response(204), write=True)
    post = b"POST /api/open HTTP/1.0\r\n"

    async def read_only(port: int) -> None:
        reply = await exchange(port, post + basic("x") + b"\r\n")
        assert status_of(reply) == 403 and b"read-only" in reply

    async def with_password(port: int) -> None:
        assert status_of(await exchange(port, post + b"\r\n")) == 401
        assert status_of(await exchange(port, post + basic("wrong") + b"\r\n")) == 401
        assert status_of(await exchange(port, post + b"Authorization: Basic !!\r\n\r\n")) == 401
        assert status_of(await exchange(port, b"GET /api/open HTTP/1.0\r\n" + basic("s3cret")
                                        + b"\r\n")) == 405
        assert status_of(await exchange(port, post + basic("s3cret") + b"\r\n")) == 204

    serve(read_only, routes=routes)
    serve(with_password, password="s3cret", routes=routes)
    assert len(changed) == 1


# -- the survey of other boxes -----------------------------------------------------------------
def summary(node_id: str, **kw: Any) -> dict[str, Any]:
    return {"node_id": node_id, "name": f"box-{node_id[:2]}", "version": "0.1.0",
            "uptime_seconds": 60, "phones": ["2001"], "calls": [], "wall_clock": time.time()} | kw


def make_survey(answers: dict[str, Any],
                members: list[tuple[str, str, bool]]) -> tuple[Survey, list[str]]:
    asked: list[str] = []

    async def fetch(host: str, port: int, path: str) -> dict[str, Any]:
        asked.append(host)
        answer = answers[host]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return Survey(lambda: members, lambda: 80, fetch), asked


def test_survey_answers_silence_and_impostors() -> None:
    members = [("aa" * 16, "10.0.0.1", True), ("bb" * 16, "10.0.0.2", True),
               ("cc" * 16, "10.0.0.3", True), ("dd" * 16, "10.0.0.4", False)]
    answers = {"10.0.0.1": summary("aa" * 16, phones=["1", "<b>", 5, "\x1b[2J9"] + ["x" * 500]),
               "10.0.0.2": ConnectionRefusedError(111, "refused"),
               "10.0.0.3": summary("ee" * 16),  # another box at that address
               "10.0.0.4": summary("dd" * 16, uptime_seconds="long", calls="many",
                                   wall_clock=time.time() + 3 * 3600, phones=[
                                       {"extension": "4001", "name": "Alice\x1b[2J"},
                                       {"extension": 7, "name": "x"}, {"name": "no extension"},
                                       {"extension": "4002", "name": ["not", "text"]},
                                       {"extension": "4003", "name": "y" * 500}])}
    survey, asked = make_survey(answers, members)

    async def run() -> list[BoxView]:
        first = await asyncio.gather(survey.refresh(), survey.refresh())  # one survey
        assert first[0] == first[1] and len(asked) == 4
        await survey.refresh()  # cached
        assert len(asked) == 4
        return first[0]

    boxes = {b.address: b for b in asyncio.run(run())}
    # an older box lists bare extensions: no names; no terminal escapes, bounded
    assert boxes["10.0.0.1"].phones == [Phone("1"), Phone("<b>"), Phone("[2J9"),
                                        Phone("x" * 64)]
    assert not boxes["10.0.0.2"].answering and "refused" in boxes["10.0.0.2"].error
    assert not boxes["10.0.0.3"].answering and "another box" in boxes["10.0.0.3"].error
    odd = boxes["10.0.0.4"]
    assert odd.answering and odd.uptime_seconds is None and odd.calls == []
    assert odd.phones == [Phone("4001", "Alice[2J"), Phone("4002"), Phone("4003", "y" * 64)]
    me = this_box()
    doc = overview(me, list(boxes.values()), time.monotonic())
    texts = [p["text"] for p in doc["problems"]]
    assert any(t.startswith("box bbbbbbbb (10.0.0.2) has not answered for") for t in texts)
    assert "the clock of box box-dd (10.0.0.4) differs by 3 hours from the other boxes" in texts
    assert sorted(d["extension"] for d in doc["directory"]) == sorted(
        ["1", "<b>", "[2J9", "x" * 64, "4001", "4002", "4003", "1001"])
    assert {d["extension"]: d["name"] for d in doc["directory"]}["4001"] == "Alice[2J"


def test_local_summary_names_each_phone_and_the_survey_reads_it() -> None:
    local = local_summary(this_box(phones=[Phone("1001", "Alice"), Phone("1002")]))
    assert local["phones"] == [{"extension": "1001", "name": "Alice"},
                               {"extension": "1002", "name": ""}]
    survey, _ = make_survey({"10.0.0.1": json.loads(json.dumps(local | {"node_id": "aa" * 16}))},
                            [("aa" * 16, "10.0.0.1", True)])
    assert asyncio.run(survey.refresh())[0].phones == [Phone("1001", "Alice"), Phone("1002")]


def test_a_dead_box_stays_known_after_the_ring_drops_it() -> None:
    members = [("aa" * 16, "10.0.0.1", True)]
    answers: dict[str, Any] = {"10.0.0.1": summary("aa" * 16, name="mesh-3")}
    survey, _ = make_survey(answers, members)
    asyncio.run(survey.refresh())
    answers["10.0.0.1"] = TimeoutError()
    members.clear()  # the ring has dropped it
    survey._done_at = -1e9  # past the cache
    boxes = asyncio.run(survey.refresh())
    assert [(b.name, b.answering, b.in_ring) for b in boxes] == [("mesh-3", False, False)]
    doc = overview(this_box(), boxes, time.monotonic() + 125)
    assert "box mesh-3 (10.0.0.1) has not answered for 2 minutes" in [
        p["text"] for p in doc["problems"]]
    assert "no other box answers on any link" in [p["text"] for p in doc["problems"]]


def this_box(**kw: Any) -> ThisBox:
    return ThisBox(**{"name": "mesh-0", "node_id": "00" * 16, "address": "10.0.0.9",
                      "overlay": "meshsip", "mode": "open", "policy": "open",
                      "uptime_seconds": 3700, "web_port": 80,
                      "phones": [Phone("1001", "Alice")],
                      "calls": [{"call_id": "c1", "caller": "1001", "callee": "2001",
                                 "state": "confirmed", "seconds": 12.5}],
                      "ring_members": 0, "joining": False} | kw)


def test_clock_differences_name_the_box_that_is_off() -> None:
    now = time.monotonic()

    def box(i: int, offset: float) -> BoxView:
        return BoxView(f"{i:032x}", f"10.0.0.{i}", name=f"b{i}", answering=True, alive_at=now,
                       clock_offset=offset)

    def texts(*boxes: BoxView) -> list[str]:
        return [p["text"] for p in overview(this_box(), list(boxes), now)["problems"]]

    assert texts(box(1, 5), box(2, -20)) == []
    assert texts(box(1, 7200)) == ["the clocks of this box and box b1 (10.0.0.1) differ by "
                                   "2 hours"]
    assert texts(box(1, 3 * 3600), box(2, 3 * 3600 + 9)) == [
        "the clock of this box differs by 3 hours from the other boxes"]


def test_a_lonely_box_says_what_to_check() -> None:
    doc = overview(this_box(address="127.0.0.1"), [], time.monotonic())
    assert [p["text"] for p in doc["problems"]] == [
        "this box has no network address", "no other box heard on any link"]
    assert "check the cable or Wi-Fi" in doc["problems"][1]["action"]


# -- what the page, the metrics and the terminal show ------------------------------------------
def full_document(others: list[BoxView]) -> dict[str, Any]:
    node_status = {"node": {"sip_port": 5060, "tls_port": 5061, "bind": "0.0.0.0",
                            "data_dir": "/d"},
                   "registrations": [{"extension": "1001", "contact": "sip:1001@10.0.0.50",
                                      "expires_in": 100, "source": "UDP 10.0.0.50:5060"}],
                   "calls": this_box().calls,
                   "counters": {"registrations": 3, "calls": 1, "received": 10, "sent": 9,
                                "parse_errors": 2},
                   "overlay": {"estimated_size": 3.0, "counters": {"received": 5, "sent": 6,
                                                                   "signature": 1},
                               "mode": "ca", "crl_number": 3,
                               "trust": "CA: only boxes certified by 'Relief' may join",
                               "refusals": {"signature": 1, "revoked": 0}}}
    return node_status | overview(this_box(), others, time.monotonic())


def boxes_for_page() -> list[BoxView]:
    now = time.monotonic()
    return [BoxView("aa" * 16, "10.0.0.1", name="<script>alert(1)</script>", answering=True,
                    phones=[Phone("2001", "<b>Bob</b>"), Phone("2002")], uptime_seconds=90,
                    alive_at=now,
                    calls=[{"call_id": "c1", "caller": "1001", "callee": "2001",
                            "state": "confirmed", "seconds": 12}]),
            BoxView("bb" * 16, "10.0.0.2", name="mesh-3", answering=False, alive_at=now - 130)]


def test_page_shows_boxes_phones_calls_and_problems() -> None:
    doc = full_document(boxes_for_page())
    page = render_page(doc)
    assert len(page.encode()) < 100_000 and "<script>alert" not in page
    assert page.count('data-box="') == 3 and page.count('data-phone="') == 3
    assert "box mesh-3 (10.0.0.2) has not answered for 2 minutes" in page
    assert "not answering for 2 minutes" in page and "<svg" in page
    assert "1001 &rarr; 2001" in page and "mesh-0, &lt;script&gt;" in page  # one call, 2 boxes
    assert 'id="enrolment"' in page and "http" not in page.replace("http-equiv", "")  # no asset
    assert "<th>name</th>" in page and "<td>Alice</td>" in page
    assert "&lt;b&gt;Bob&lt;/b&gt;" in page and "<b>Bob" not in page
    assert "mode CA: only boxes certified by &#x27;Relief&#x27; may join" in page


def test_a_big_overlay_still_fits_the_page_budget() -> None:
    now = time.monotonic()
    others = [BoxView(f"{i:032x}", f"10.0.{i}.1", name=f"box-{i}", answering=True,
                      alive_at=now, uptime_seconds=i,
                      phones=[Phone(f"{i}{k:02d}", f"Relief worker {k}") for k in range(20)])
              for i in range(1, 32)]
    assert len(render_page(full_document(others)).encode()) < 100_000  # 32 boxes, 621 phones


def test_metrics_agree_with_the_document() -> None:
    doc = full_document(boxes_for_page())
    metrics = NodeMetrics()
    metrics.lookup_done(0.02, True)
    metrics.lookup_done(1.5, False)
    text = metrics.render(doc, {"status_200": 4, "refused_busy": 1}).decode()
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for family in text_string_to_metric_families(text) for s in family.samples}
    assert values[("meshsip_boxes", (("state", "answering"),))] == 2
    assert values[("meshsip_boxes", (("state", "not_answering"),))] == 1
    assert values[("meshsip_phones_overlay", ())] == len(doc["directory"]) == 3
    assert values[("meshsip_bindings", ())] == 1
    assert values[("meshsip_active_calls", ())] == 1
    assert values[("meshsip_problems", ())] == len(doc["problems"])
    assert values[("meshsip_refusals_total", (("reason", "signature"), ("source", "overlay")))] \
        == 1
    assert values[("meshsip_refusals_total", (("reason", "refused_busy"), ("source", "web")))] \
        == 1
    assert values[("meshsip_messages_total", (("direction", "out"), ("kind", "overlay")))] == 6
    assert values[("meshsip_lookup_seconds_count", (("result", "not_found"),))] == 1
    assert values[("process_resident_memory_bytes", ())] > 0


def test_terminal_view() -> None:
    text = render_terminal(full_document(boxes_for_page()))
    assert "ring: 3 boxes, 2 answering" in text
    assert "  ! box mesh-3 (10.0.0.2) has not answered for 2 minutes" in text
    assert "mesh-0* -> " in text and "mesh-3 (x)" in text
    assert "phones: 3" in text and "  1001         Alice                on mesh-0" in text
    assert "  2002                              on <script>" in text
    assert "SIP port 5060 on 0.0.0.0, TLS for phones on port 5061, status page" in text
    assert "trust: CA: only boxes certified by 'Relief' may join; CRL number 3; refused: " \
           "signature 1" in text
    assert "calls: 1" in text and "registrations: 1" in text


# -- a real node -------------------------------------------------------------------------------
def test_node_serves_the_page_and_status_agrees(start_node: NodeFactory, tmp_path: Path) -> None:
    port = free_port(udp=False)
    node = start_node(tmp_path, "--web-port", str(port), config='[node]\nname = "alpha"\n')
    base = f"http://127.0.0.1:{port}"
    page = urllib.request.urlopen(base + "/", timeout=10).read().decode()
    api = json.loads(urllib.request.urlopen(base + "/api/status", timeout=10).read())
    local = json.loads(urllib.request.urlopen(base + "/api/local", timeout=10).read())
    metrics = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
    assert "meshsip box alpha" in page and api["box"]["name"] == local["name"] == "alpha"
    assert api["box"]["web_port"] == port and api["node"]["sip_port"] == node.port
    assert 'meshsip_boxes{state="answering"} 1.0' in metrics
    cli = [sys.executable, "-m", "appliance.cli", "status", "--data-dir", str(node.data_dir)]
    as_json = json.loads(subprocess.run([*cli, "--json"], cwd=REPO, capture_output=True,
                                        text=True, timeout=30).stdout)
    assert as_json["box"] == api["box"] | {"uptime_seconds": as_json["box"]["uptime_seconds"]}
    shown = subprocess.run(cli, cwd=REPO, capture_output=True, text=True, timeout=30).stdout
    assert "meshsip box alpha" in shown and "ring: 1 boxes, 1 answering" in shown
    assert "no other box heard on any link" in shown
    assert "trust: open: any box on the link may join" in shown
    assert "mode open: any box on the link may join" in page


FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


@pytest.mark.phones
@pytest.mark.skipif(not FAKETIME_LIB.exists(), reason="faketime not installed")
def test_uptime_ignores_the_wall_clock_being_set(start_node: NodeFactory,
                                                 tmp_path: Path) -> None:
    """A Pi boots 3 hours behind, then its peers set its clock: its uptime does not jump."""
    offset = tmp_path / "faketime"
    offset.write_text("-3h\n")
    port = free_port(udp=False)
    start_node(tmp_path, "--web-port", str(port),
               env={"LD_PRELOAD": str(FAKETIME_LIB), "FAKETIME_TIMESTAMP_FILE": str(offset),
                    "FAKETIME_CACHE_DURATION": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"})

    def uptime() -> int:
        url = f"http://127.0.0.1:{port}/api/status"
        doc = json.loads(urllib.request.urlopen(url, timeout=10).read())
        assert abs(doc["box"]["uptime_seconds"] - doc["node"]["uptime_seconds"]) <= 1
        return doc["box"]["uptime_seconds"]

    assert uptime() < 600
    offset.write_text("+0\n")  # the clock set right: 3 hours forward at once
    time.sleep(2.5)  # past libfaketime's cache of the file
    assert uptime() < 600


def test_web_port_in_use_is_explained(start_node: NodeFactory, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(AssertionError, match="exited with 1"):
            start_node(tmp_path, "--web-port", str(taken.getsockname()[1]))
    log = start_node.nodes[-1].log()
    assert "cannot serve the status page on port" in log and "Traceback" not in log
    start_node.nodes.pop()


def test_port_80_without_the_right_falls_back_to_8080(monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    from types import SimpleNamespace

    from appliance.web import site

    tried: list[int] = []

    async def start(self: HttpServer, host: str, port: int) -> None:
        tried.append(port)
        if port < 1024:
            raise PermissionError(13, "Permission denied")
        self.port = port

    monkeypatch.setattr(HttpServer, "start", start)
    node = SimpleNamespace(config=SimpleNamespace(web_operator_password=None), mesh=None)

    async def main() -> None:
        web = site.Website(node, NodeMetrics())  # type: ignore[arg-type]
        await web.start("0.0.0.0", None)  # the default: 80
        assert web.server.port == 8080
        await web.close()
        with pytest.raises(site.WebError, match="needs root or CAP_NET_BIND_SERVICE"):
            await site.Website(node, NodeMetrics()).start("0.0.0.0", 81)  # type: ignore

    asyncio.run(main())
    assert tried == [80, 8080, 81]
    assert "status page on port 8080 instead" in caplog.text
