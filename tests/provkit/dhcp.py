"""A DHCPDISCOVER from inside a namespace, and the options of the OFFER that answers it."""

from __future__ import annotations

import os
import socket
import struct
import time

MAGIC = b"\x63\x82\x53\x63"
SO_BINDTODEVICE = 25


def discover_packet(mac: bytes, xid: int) -> bytes:
    # op=1 (request), htype=1 (Ethernet), hlen=6; flags 0x8000: answer by broadcast
    head = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, 0x8000,
                       bytes(4), bytes(4), bytes(4), bytes(4), mac.ljust(16, b"\0"),
                       bytes(64), bytes(128))
    wanted = bytes([1, 3, 6, 15, 66, 120, 150, 160])  # 55: parameter request list
    options = b"\x35\x01\x01" + bytes([55, len(wanted)]) + wanted + b"\xff"
    return head + MAGIC + options


def parse_options(packet: bytes) -> dict[int, bytes]:
    if len(packet) < 240 or packet[236:240] != MAGIC:
        raise ValueError("not a DHCP packet")
    options, i = {}, 240
    while i < len(packet):
        code = packet[i]
        if code == 255:
            break
        if code == 0:
            i += 1
            continue
        length = packet[i + 1]
        options[code] = packet[i + 2:i + 2 + length]
        i += 2 + length
    return options


def offer(ifname: str, timeout: float = 5.0) -> tuple[str, dict[int, bytes]]:
    """Broadcasts DISCOVERs on ifname (call it inside the phone's namespace) until an OFFER
    comes; returns the offered address and the OFFER's options."""
    mac, xid = b"\x02\x00\x5e\x10\x20\x30", int.from_bytes(os.urandom(4), "big")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, ifname.encode())
        s.bind(("0.0.0.0", 68))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s.sendto(discover_packet(mac, xid), ("255.255.255.255", 67))
            s.settimeout(0.5)
            try:
                data = s.recv(4096)
            except TimeoutError:
                continue
            if len(data) >= 240 and struct.unpack("!I", data[4:8])[0] == xid:
                options = parse_options(data)
                if options.get(53) == b"\x02":
                    return socket.inet_ntoa(data[16:20]), options
    raise AssertionError(f"no DHCP OFFER on {ifname} within {timeout}s")
