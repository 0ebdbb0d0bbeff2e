"""A REGISTER flood from one source, bounded in count and time (tests/test_flood_bed.py).

    python flood.py HOST PORT --rate N --count N --seconds S [--bind ADDR]

Sends REGISTERs for distinct users (flood00000, flood00001, ...), each its own transaction,
paced at about --rate a second, until --count are sent, --seconds pass or SIGTERM comes;
answers are read and counted, never waited for. Prints one JSON line: sent, answers by
status, seconds.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import time
from collections import Counter


def register(i: int, host: str, port: int, me: str, my_port: int) -> bytes:
    user = f"flood{i:06d}"
    return (f"REGISTER sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {me}:{my_port};branch=z9hG4bK-fl{i}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:{user}@{host}>;tag=f{i}\r\n"
            f"To: <sip:{user}@{host}>\r\nCall-ID: fl{i}@{me}\r\nCSeq: 1 REGISTER\r\n"
            f"Contact: <sip:{user}@{me}:{my_port}>\r\nExpires: 300\r\n"
            f"Content-Length: 0\r\n\r\n").encode()


def drain(sock: socket.socket, answers: Counter[str]) -> None:
    while True:
        try:
            data = sock.recv(65535)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # ICMP unreachable and the like
            answers["error"] += 1
            continue
        answers[data[8:11].decode(errors="replace")] += 1


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--bind", default="0.0.0.0")
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--seconds", type=float, required=True)
    args = p.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((args.bind, 0))
    sock.setblocking(False)
    me, my_port = sock.getsockname()
    dest = (args.host, args.port)
    answers: Counter[str] = Counter()
    sent, batch = 0, 50
    stop: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _: stop.append(signum))
    t0 = time.monotonic()
    while not stop and sent < args.count and (now := time.monotonic() - t0) < args.seconds:
        ahead = sent - now * args.rate  # paced: never more than one batch ahead
        if ahead > 0:
            time.sleep(ahead / args.rate)
        for i in range(sent, min(sent + batch, args.count)):
            try:
                sock.sendto(register(i, args.host, args.port, me, my_port), dest)
            except BlockingIOError:
                answers["send_blocked"] += 1
        sent = min(sent + batch, args.count)
        drain(sock, answers)
    seconds = time.monotonic() - t0
    time.sleep(0.5)
    drain(sock, answers)
    print(json.dumps({"sent": sent, "seconds": round(seconds, 2), "answers": answers}),
          flush=True)


if __name__ == "__main__":
    main()
