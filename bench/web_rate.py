"""The status page's cost: page weight, and requests per second for `/`, `/api/status` and
`/metrics` on one core.

A node on 127.0.0.1 (no discovery, alone: its survey asks nobody) with 20 phones
registered over UDP; a few keep-alive connections ask one path in a bounded loop
(at most REQUESTS requests or SECONDS seconds per path). The node is one process on one
core: requests per second of its own CPU time is the figure that does not depend on the
client sharing the machine; the wall-clock rate is printed beside it.

    python bench/web_rate.py
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time

from common import HOST, free_port, node

PATHS = ["/", "/api/status", "/metrics"]
REQUESTS = 3000
SECONDS = 10.0
CONNECTIONS = 4
PHONES = 20


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def register_phones(sip_port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        s.settimeout(2)
        for i in range(PHONES):
            ext = f"{3000 + i}"
            s.sendto((f"REGISTER sip:{HOST} SIP/2.0\r\nVia: SIP/2.0/UDP {HOST}:9;"
                      f"branch=z9hG4bKw{ext}\r\nFrom: <sip:{ext}@{HOST}>;tag=t\r\n"
                      f"To: <sip:{ext}@{HOST}>\r\nCall-ID: web-{ext}\r\nCSeq: 1 REGISTER\r\n"
                      f"Max-Forwards: 70\r\nContact: <sip:{ext}@{HOST}:{9000 + i}>\r\n"
                      "Expires: 600\r\n\r\n").encode(), (HOST, sip_port))
            s.recv(65535)


async def _client(port: int, path: str, budget: list[int], deadline: float) -> int:
    reader, writer = await asyncio.open_connection(HOST, port)
    done = 0
    request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    while budget[0] > 0 and time.monotonic() < deadline:
        budget[0] -= 1
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.split(b"Content-Length: ", 1)[1].split(b"\r\n", 1)[0])
        await reader.readexactly(length)
        done += 1
    writer.close()
    return done


async def _rate(port: int, path: str) -> int:
    budget = [REQUESTS]
    deadline = time.monotonic() + SECONDS
    counts = await asyncio.gather(*(_client(port, path, budget, deadline)
                                    for _ in range(CONNECTIONS)))
    return sum(counts)


def fetch(port: int, path: str) -> bytes:
    with socket.create_connection((HOST, port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.partition(b"\r\n\r\n")[2]


def main(argv: list[str]) -> dict[str, str]:
    rows: dict[str, str] = {}
    web_port = free_port()
    with node(web_port=web_port) as server:
        register_phones(server.port)
        for path in PATHS:
            rows[f"web weight {path}"] = f"{len(fetch(web_port, path))} bytes ({PHONES} phones)"
        for path in PATHS:
            cpu0, t0 = cpu_seconds(server.pid), time.monotonic()
            done = asyncio.run(_rate(web_port, path))
            cpu, wall = cpu_seconds(server.pid) - cpu0, time.monotonic() - t0
            per_cpu = done / cpu if cpu > 0 else float("inf")
            rows[f"web rate {path}"] = (f"{per_cpu:.0f} req/s per core of node CPU "
                                        f"({done} requests, {done / wall:.0f} req/s wall, "
                                        f"{1000 * cpu / done:.2f} ms CPU each)")
    for key, value in rows.items():
        print(f"{key:<24} {value}")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
