"""Free local ports, picked by binding to port 0 on 127.0.0.1."""

from __future__ import annotations

import socket

HOST = "127.0.0.1"
_handed_out: set[int] = set()


def _kernel_pick(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _all_free(ports: range, *, udp: bool, tcp: bool) -> bool:
    kinds = ([socket.SOCK_DGRAM] if udp else []) + ([socket.SOCK_STREAM] if tcp else [])
    socks: list[socket.socket] = []
    try:
        for port in ports:
            for kind in kinds:
                s = socket.socket(socket.AF_INET, kind)
                socks.append(s)
                s.bind((HOST, port))
        return True
    except OSError:
        return False
    finally:
        for s in socks:
            s.close()


def free_port(*, udp: bool = True, tcp: bool = True, tries: int = 50) -> int:
    """A port on 127.0.0.1 that is free for UDP and/or TCP right now.

    Ports already handed out by this process are not handed out again, so two phones
    started back to back do not get the same port before either has bound it.
    """
    return free_port_block(1, udp=udp, tcp=tcp, tries=tries)


def free_port_block(count: int, *, udp: bool = True, tcp: bool = False, tries: int = 50) -> int:
    """The first of `count` consecutive free ports on 127.0.0.1 (even first port if count > 1:
    RTP on the even port, RTCP on the next)."""
    for _ in range(tries):
        base = _kernel_pick(socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
        if count > 1:
            base &= ~1
        ports = range(base, base + count)
        if base < 1024 or ports[-1] > 65535 or _handed_out.intersection(ports):
            continue
        if _all_free(ports, udp=udp, tcp=tcp):
            _handed_out.update(ports)
            return base
    raise RuntimeError(f"no block of {count} free ports on {HOST} after {tries} tries")
