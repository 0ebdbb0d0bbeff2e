"""Capture real phones' SIP messages as seeds of the SIP parser's fuzz corpus.

    .venv/bin/python tests/fuzz/capture_seeds.py   # writes tests/fuzz/corpus/sip/phone-*

A bare answering machine on loopback (UDP, 127.0.0.1) says 200 to every request (100,
180 and 200 with SDP to an INVITE) and keeps every datagram it receives; real baresip
registers and calls it and hangs up, real sipp runs the repository's REGISTER and call
scenarios against it. Run by hand when the phones' versions change; not part of the tests.
"""

from __future__ import annotations

import hashlib
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parents[1])]

from phones.baresip import Baresip  # noqa: E402
from phones.sipp import run_sipp  # noqa: E402

from overlay.sip.errors import SipParseError  # noqa: E402
from overlay.sip.message import Request, Response, parse_message  # noqa: E402

SDP = (b"v=0\r\no=mock 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


class Machine:
    """Answers every request on a loopback UDP port and keeps what it received."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self.stopped = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped:
            try:
                data, source = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            self.received.append(data)
            try:
                msg = parse_message(data)
            except SipParseError:
                continue
            if isinstance(msg, Request) and msg.method != "ACK":
                codes = (100, 180, 200) if msg.method == "INVITE" else (200,)
                for code in codes:
                    self.sock.sendto(answer(msg, code).encode(), source)

    def stop(self) -> None:
        self.stopped = True
        self.thread.join()
        self.sock.close()


def answer(req: Request, code: int) -> Response:
    reason = {100: "Trying", 180: "Ringing", 200: "OK"}[code]
    resp = Response(code, reason)
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        for value in req.get_all(name):
            resp.add(name, value)
    if code > 100 and req.to_tag is None:
        resp.set("To", req.get("To") + ";tag=mock")  # type: ignore[operator]
    if req.method == "REGISTER":
        for value in req.get_all("Contact"):
            resp.add("Contact", value)
    if req.method == "INVITE" and code == 200:
        resp.add("Contact", "<sip:mock@127.0.0.1>")
        resp.add("Content-Type", "application/sdp")
        resp.body = SDP
    return resp


def main() -> None:
    out = HERE / "corpus" / "sip"
    out.mkdir(parents=True, exist_ok=True)
    machine = Machine()
    with tempfile.TemporaryDirectory() as tmp:
        phone = Baresip("1001", machine.port, workdir=Path(tmp) / "baresip").start()
        try:
            time.sleep(1.5)
            phone.command(f"dial sip:1002@127.0.0.1:{machine.port}")
            time.sleep(1.5)
            phone.command("hangup")
            time.sleep(1.0)
        finally:
            phone.stop()
        target = f"127.0.0.1:{machine.port}"
        for scenario in ("register.xml", "uac_call.xml"):
            run_sipp(scenario, target, service="1002", timeout=10,
                     workdir=Path(tmp) / scenario)
    machine.stop()
    for data in machine.received:
        name = hashlib.sha1(data).hexdigest()[:12]
        (out / f"phone-{name}").write_bytes(data)
    print(f"{len(machine.received)} messages kept in {out}")


if __name__ == "__main__":
    main()
