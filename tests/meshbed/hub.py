"""A user-space Ethernet hub with per-link delay, jitter and loss (the kernel here has no netem).

Runs inside the bed's hub namespace, on hub ports that have been taken off the bridge:

    python hub.py 0=p0 1=p1 2=p2

It opens an AF_PACKET socket on each port, learns source MACs like a switch, and copies
every frame to its output port(s) after the delay of that directed link (from port i to
port j). Broadcast, multicast and unknown unicast go to every other port, each copy with
its own link's delay, jitter, loss and cut. Jitter is uniform in [delay - jitter,
delay + jitter]; frames of one link are never reordered (a frame leaves no earlier than
the one before it on the same link).

Control: one JSON line per command on stdin, one answer line on stdout.
    {"seq": 3, "links": [[i, j, delay_ms, jitter_ms, loss_percent, cut], ...]}  -> "ok 3"
        (links not listed are plain wires; the first "links" command starts forwarding:
        until then every frame is dropped, so a port still on the bridge is never doubled)
    {"seq": 4, "stats": true}  -> "stats 4 {json}"  (frames per link: sent, lost, cut)
It exits when stdin closes, so it never outlives the bed that started it.
Only the standard library: it must start fast and anywhere.
"""

from __future__ import annotations

import heapq
import json
import random
import select
import socket
import sys
import threading
import time
from typing import Any

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23
PACKET_OUTGOING = 4
MAX_FRAME = 65536
BURST = 64  # frames read from one port per wake-up before looking at the clock again


class Link:
    __slots__ = ("delay", "jitter", "loss", "cut", "last_due", "sent", "lost", "dropped")

    def __init__(self, delay_ms: float = 0.0, jitter_ms: float = 0.0, loss: float = 0.0,
                 cut: bool = False) -> None:
        self.delay = delay_ms / 1000.0
        self.jitter = jitter_ms / 1000.0
        self.loss = loss / 100.0
        self.cut = cut
        self.last_due = 0.0
        self.sent = self.lost = self.dropped = 0


class Hub:
    def __init__(self, ports: dict[int, str], seed: int | None = None) -> None:
        self.ports = ports
        self.socks: dict[int, socket.socket] = {}
        self.by_fd: dict[int, int] = {}
        self.macs: dict[bytes, int] = {}
        self.links: dict[tuple[int, int], Link] = {}
        self.config: dict[tuple[int, int], tuple[float, float, float, bool]] = {}
        self.forwarding = False
        self.rng = random.Random(seed)
        self.queue: list[tuple[float, int, int, bytes]] = []  # (due, seq, port, frame)
        self.seq = 0
        self.lock = threading.Lock()
        self.epoll = select.epoll()
        for index, name in ports.items():
            # protocol 0 at creation: nothing is received until bind names the port
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            try:
                sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            except OSError:
                pass  # older kernel: outgoing copies are filtered by pkttype below
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.bind((name, ETH_P_ALL))
            sock.setblocking(False)
            self.socks[index] = sock
            self.by_fd[sock.fileno()] = index
            self.epoll.register(sock.fileno(), select.EPOLLIN)

    def configure(self, links: list[list[Any]]) -> None:
        config = {(int(i), int(j)): (float(d), float(jt), float(ls), bool(c))
                  for i, j, d, jt, ls, c in links}
        with self.lock:
            for key in set(self.links) | set(config):
                old = self.links.get(key)
                new = Link(*config.get(key, (0.0, 0.0, 0.0, False)))
                if old is not None:
                    new.last_due, new.sent, new.lost, new.dropped = (
                        old.last_due, old.sent, old.lost, old.dropped)
                self.links[key] = new
            self.forwarding = True

    def stats(self) -> dict[str, dict[str, int]]:
        with self.lock:
            return {f"{i}>{j}": {"sent": k.sent, "lost": k.lost, "cut": k.dropped}
                    for (i, j), k in sorted(self.links.items()) if k.sent or k.lost or k.dropped}

    def _link(self, src: int, dst: int) -> Link:
        link = self.links.get((src, dst))
        if link is None:
            link = self.links[(src, dst)] = Link()
        return link

    def _forward(self, src: int, frame: bytes, now: float) -> None:
        if len(frame) < 14:
            return
        dst_mac, src_mac = frame[0:6], frame[6:12]
        self.macs[src_mac] = src
        out = self.macs.get(dst_mac) if not dst_mac[0] & 1 else None
        if out == src:
            return  # the destination sits behind the port it came from
        targets = [out] if out is not None else [p for p in self.socks if p != src]
        for dst in targets:
            link = self._link(src, dst)
            if link.cut:
                link.dropped += 1
                continue
            if link.loss and self.rng.random() < link.loss:
                link.lost += 1
                continue
            due = now + link.delay
            if link.jitter:
                due += self.rng.uniform(-link.jitter, link.jitter)
            due = max(due, link.last_due, now)
            link.last_due = due
            link.sent += 1
            if due <= now and not self.queue:
                self._send(dst, frame)
            else:
                self.seq += 1
                heapq.heappush(self.queue, (due, self.seq, dst, frame))

    def _send(self, dst: int, frame: bytes) -> None:
        try:
            self.socks[dst].send(frame)
        except OSError:
            pass  # port down (link_down) or its queue full: the frame is lost, as on a wire

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            now = time.monotonic()
            while self.queue and self.queue[0][0] <= now:
                _, _, dst, frame = heapq.heappop(self.queue)
                self._send(dst, frame)
            timeout = min(self.queue[0][0] - now, 0.2) if self.queue else 0.2
            for fd, _ in self.epoll.poll(max(timeout, 0.0)):
                src = self.by_fd[fd]
                sock = self.socks[src]
                for _ in range(BURST):
                    try:
                        frame, addr = sock.recvfrom(MAX_FRAME)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        break  # port went down
                    if addr[2] == PACKET_OUTGOING:
                        continue
                    with self.lock:
                        if self.forwarding:
                            self._forward(src, frame, time.monotonic())


def _control(hub: Hub, stop: threading.Event) -> None:
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            cmd = json.loads(line)
            seq = cmd.get("seq", 0)
            if "links" in cmd:
                hub.configure(cmd["links"])
                print(f"ok {seq}", flush=True)
            elif cmd.get("stats"):
                print(f"stats {seq} {json.dumps(hub.stats())}", flush=True)
            else:
                print(f"error {seq} unknown command", flush=True)
        except (ValueError, TypeError, KeyError) as exc:
            print(f"error 0 {exc}", flush=True)
    stop.set()


def main(argv: list[str]) -> int:
    ports: dict[int, str] = {}
    seed = None
    for arg in argv:
        key, _, value = arg.partition("=")
        if key == "seed":
            seed = int(value)
        else:
            ports[int(key)] = value
    hub = Hub(ports, seed)
    stop = threading.Event()
    threading.Thread(target=_control, args=(hub, stop), daemon=True, name="control").start()
    print("ready", flush=True)
    hub.run(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
