"""Reachability, round-trip time and loss between namespaces, measured from the test process.

Every socket is made inside the namespace it belongs to (phones.nsexec), so no helper
program is needed (not even `ping`): ICMP echo from a raw socket, and a UDP echo that
counts what reached the far end (one-way loss) and what came back (round trip).
"""

from __future__ import annotations

import os
import select
import socket
import statistics
import struct
import threading
import time
from dataclasses import dataclass, field

from phones.nsexec import ns_socket

ICMP_ECHO_REQUEST = 8
ICMP_ECHO_REPLY = 0


@dataclass
class Rtt:
    """What a probe measured. rtts_ms holds one entry per answered probe."""

    sent: int
    received: int
    rtts_ms: list[float] = field(default_factory=list)
    forward: int | None = None  # UDP: probes that reached the far end

    @property
    def loss_pct(self) -> float:
        """Round-trip loss, in percent."""
        return 100.0 * (self.sent - self.received) / self.sent if self.sent else 0.0

    @property
    def forward_loss_pct(self) -> float:
        """One-way loss (UDP only), in percent."""
        assert self.forward is not None, "only UDP probes count one-way loss"
        return 100.0 * (self.sent - self.forward) / self.sent if self.sent else 0.0

    @property
    def avg_ms(self) -> float:
        return statistics.fmean(self.rtts_ms) if self.rtts_ms else float("nan")

    def __str__(self) -> str:
        text = f"{self.received}/{self.sent} answered ({self.loss_pct:.1f} % lost round trip"
        if self.forward is not None:
            text += f", {self.forward_loss_pct:.1f} % one way"
        text += ")"
        if self.rtts_ms:
            text += (f", rtt min/avg/max {min(self.rtts_ms):.2f}/{self.avg_ms:.2f}/"
                     f"{max(self.rtts_ms):.2f} ms")
        return text


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


_ident_lock = threading.Lock()
_ident = os.getpid() & 0xFFFF


def _next_ident() -> int:
    global _ident
    with _ident_lock:
        _ident = (_ident + 1) & 0xFFFF
        return _ident


def ping(netns: str, dst: str, count: int = 3, interval: float = 0.05,
         timeout: float = 1.0) -> Rtt:
    """ICMP echo from inside netns to dst: `count` requests `interval` apart, then waits up to
    `timeout` for the last answers. Returns early once every request is answered."""
    sock = ns_socket(netns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = _next_ident()
    sent_at: dict[int, float] = {}
    rtts: list[float] = []
    try:
        sock.setblocking(False)
        start = time.monotonic()
        end = start + (count - 1) * interval + timeout
        seq = 0
        while True:
            now = time.monotonic()
            if seq < count and now >= start + seq * interval:
                header = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident, seq)
                payload = b"meshbed-ping" + bytes(20)
                header = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0,
                                     _checksum(header + payload), ident, seq)
                sent_at[seq] = time.monotonic()
                try:
                    sock.sendto(header + payload, (dst, 0))
                except OSError:
                    pass  # no route / link down: counts as lost
                seq += 1
                continue
            if seq >= count and (len(rtts) == count or now >= end):
                break
            wake = min(start + seq * interval if seq < count else end, end)
            ready, _, _ = select.select([sock], [], [], max(0.0, wake - now))
            if not ready:
                continue
            while True:
                try:
                    packet = sock.recv(65536)
                except BlockingIOError:
                    break
                got = time.monotonic()
                ihl = (packet[0] & 0x0F) * 4
                if len(packet) < ihl + 8:
                    continue
                typ, _, _, pid, pseq = struct.unpack("!BBHHH", packet[ihl:ihl + 8])
                if typ == ICMP_ECHO_REPLY and pid == ident and pseq in sent_at:
                    rtts.append((got - sent_at.pop(pseq)) * 1000.0)
    finally:
        sock.close()
    return Rtt(sent=count, received=len(rtts), rtts_ms=rtts)


class UdpEcho:
    """A UDP echo server living in a namespace, served by a thread of the test process.

    Counts every datagram it receives (so a probe knows one-way loss) and sends it back.
    """

    def __init__(self, netns: str, host: str, port: int = 0) -> None:
        self.sock = ns_socket(netns, socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.settimeout(0.1)
        self.address: tuple[str, int] = self.sock.getsockname()
        self.received: set[bytes] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True,
                                        name=f"udp-echo-{netns}")
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(2048)
            except TimeoutError:
                continue
            except OSError:
                break
            with self._lock:
                self.received.add(data[:16])
            try:
                self.sock.sendto(data, peer)
            except OSError:
                pass

    def seen(self, keys: set[bytes]) -> int:
        with self._lock:
            return len(self.received & keys)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()

    def __enter__(self) -> UdpEcho:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def udp_probe(netns: str, host: str, echo: UdpEcho, count: int = 100,
              interval: float = 0.002, timeout: float = 1.0, size: int = 172) -> Rtt:
    """Sends `count` datagrams of `size` bytes (172: a 20 ms G.711 RTP packet) from netns
    (bound to host) to the echo, `interval` apart; waits up to `timeout` after the last.
    Rtt.forward counts what reached the echo, Rtt.received what came back."""
    sock = ns_socket(netns, socket.AF_INET, socket.SOCK_DGRAM)
    run = os.urandom(8)
    keys: set[bytes] = set()
    sent_at: dict[bytes, float] = {}
    rtts: list[float] = []
    try:
        sock.bind((host, 0))
        sock.setblocking(False)
        start = time.monotonic()
        end = start + (count - 1) * interval + timeout
        seq = 0
        while True:
            now = time.monotonic()
            if seq < count and now >= start + seq * interval:
                key = run + struct.pack("!Q", seq)
                keys.add(key)
                sent_at[key] = time.monotonic()
                try:
                    sock.sendto(key + bytes(max(0, size - len(key))), echo.address)
                except OSError:
                    pass
                seq += 1
                continue
            if seq >= count and (len(rtts) == count or now >= end):
                break
            wake = min(start + seq * interval if seq < count else end, end)
            ready, _, _ = select.select([sock], [], [], max(0.0, wake - now))
            if not ready:
                continue
            while True:
                try:
                    data = sock.recv(2048)
                except BlockingIOError:
                    break
                at = sent_at.pop(data[:16], None)
                if at is not None:
                    rtts.append((time.monotonic() - at) * 1000.0)
    finally:
        sock.close()
    return Rtt(sent=count, received=len(rtts), rtts_ms=rtts, forward=echo.seen(keys))
