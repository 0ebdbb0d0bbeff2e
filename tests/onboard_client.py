"""A light-weight enrolling desk phone, many at once: for each MAC, the plug-and-play
SUBSCRIBE a Yealink multicasts at boot, the NOTIFY from the chosen box, the file fetched
from the URL in it. Run inside a test-bed namespace (it multicasts):

    python tests/onboard_client.py --bind 10.99.0.15 --box 10.99.0.10 --macs m1,m2 \
        [--resync SECONDS]

Prints one JSON object per phone: {"mac", "extension", "password", "notify_s"}. With
--resync it then waits (bounded) for a `check-sync` NOTIFY to any of its phones and prints
{"mac", "resync": true, "extension"} after fetching that phone's file again.
"""

from __future__ import annotations

import argparse
import json
import secrets
import select
import socket
import sys
import time
import urllib.request

GROUP = ("224.0.1.75", 5060)
AGENT = "Yealink SIP-T46S 66.86.0.15"


def subscribe(mac: str, ip: str, port: int) -> bytes:
    tag, call_id = secrets.token_hex(4), secrets.token_hex(8)
    return (f"SUBSCRIBE sip:MAC{mac}@224.0.1.75 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {ip}:{port};branch=z9hG4bK{secrets.token_hex(6)}\r\n"
            f"From: <sip:MAC{mac}@224.0.1.75>;tag={tag}\r\n"
            f"To: <sip:MAC{mac}@224.0.1.75>\r\nCall-ID: {call_id}\r\nCSeq: 1 SUBSCRIBE\r\n"
            f"Contact: <sip:MAC{mac}@{ip}:{port}>\r\nAccept: application/url\r\n"
            f"Max-Forwards: 70\r\nUser-Agent: {AGENT}\r\nExpires: 0\r\n"
            'Event: ua-profile;profile-type="all";vendor="Yealink";model="T46S"\r\n'
            "Content-Length: 0\r\n\r\n").encode()


def header(text: str, name: str) -> str:
    for line in text.split("\r\n"):
        if line.lower().startswith(name.lower() + ":"):
            return line.split(":", 1)[1].strip()
    return ""


def receive(sock: socket.socket, box: str, until: float) -> tuple[str, str] | None:
    """The next NOTIFY from `box` before `until`: (Event, body)."""
    while (left := until - time.monotonic()) > 0:
        if not select.select([sock], [], [], left)[0]:
            return None
        data, (src, _) = sock.recvfrom(65535)
        text = data.decode(errors="replace")
        if src == box and text.startswith("NOTIFY "):
            return header(text, "Event"), text.split("\r\n\r\n", 1)[1]
    return None


def fetch(url: str) -> tuple[str, str]:
    req = urllib.request.Request(url, headers={"User-Agent": AGENT})
    with urllib.request.urlopen(req, timeout=20) as answer:
        text = answer.read().decode()
    assert text.splitlines()[0] == "#!version:1.0.0.1", text
    keys = dict(line.split(" = ", 1) for line in text.splitlines()[1:])
    return keys["account.1.user_name"], keys["account.1.password"]


def enroll(mac: str, ip: str, box: str) -> tuple[socket.socket, dict[str, object], str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((ip, 0))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(ip))
    t0 = time.monotonic()
    sock.sendto(subscribe(mac, ip, sock.getsockname()[1]), GROUP)
    got = receive(sock, box, t0 + 5.0)  # a phone waits about 5 s
    if got is None:
        raise SystemExit(f"{mac}: no NOTIFY from {box}")
    took, url = time.monotonic() - t0, got[1].strip()
    extension, password = fetch(f"{url}{mac}.cfg")
    return sock, {"mac": mac, "extension": extension, "password": password,
                  "notify_s": round(took, 4)}, url


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--bind", required=True)
    p.add_argument("--box", required=True)
    p.add_argument("--macs", required=True)
    p.add_argument("--resync", type=float, default=0.0)
    args = p.parse_args()
    phones = {}
    for mac in args.macs.split(","):
        sock, row, url = enroll(mac, args.bind, args.box)
        phones[sock] = (mac, url)
        print(json.dumps(row), flush=True)
    until = time.monotonic() + args.resync
    while args.resync and (left := until - time.monotonic()) > 0:
        for sock in select.select(list(phones), [], [], left)[0]:
            got = receive(sock, args.box, time.monotonic() + 0.1)
            if got is not None and got[0].startswith("check-sync"):
                mac, url = phones[sock]
                extension, _ = fetch(f"{url}{mac}.cfg")
                print(json.dumps({"mac": mac, "resync": True, "extension": extension}),
                      flush=True)
                return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
