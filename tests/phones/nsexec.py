"""Running phones and nodes inside a network namespace (as built by tests/meshbed).

A process goes in with `ip netns exec NAME argv...` (which execs argv: the Popen's pid is
the program's own). A socket goes in by creating it on a short-lived thread that has
entered the namespace with setns(2): the socket stays in that namespace for its whole life,
whichever thread later uses it. So the test process can talk to a phone's control port on
the namespace's own 127.0.0.1 without any address outside the namespace.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
NETNS_RUN_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def ns_argv(netns: str | None) -> list[str]:
    """The command prefix that runs a program inside netns ([] for the current one)."""
    return [] if netns is None else ["ip", "netns", "exec", netns]


def in_netns(netns: str | None, fn: Callable[[], T]) -> T:
    """Calls fn() on a thread that has entered netns, and returns (or raises) its result.

    Sockets fn creates live in netns; /proc/sys/net files it opens are netns's own.
    """
    if netns is None:
        return fn()
    result: dict[str, object] = {}

    def run() -> None:
        try:
            fd = os.open(os.path.join(NETNS_RUN_DIR, netns), os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into {netns}: {os.strerror(err)}")
            finally:
                os.close(fd)
            result["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=run, name=f"netns-{netns}", daemon=True)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["value"]  # type: ignore[return-value]


def ns_socket(netns: str | None, family: int = socket.AF_INET, type_: int = socket.SOCK_DGRAM,
              proto: int = 0) -> socket.socket:
    """A socket that lives in netns."""
    return in_netns(netns, lambda: socket.socket(family, type_, proto))


def ns_connect(netns: str | None, address: tuple[str, int], timeout: float) -> socket.socket:
    """socket.create_connection, from inside netns."""
    if netns is None:
        return socket.create_connection(address, timeout=timeout)
    sock = ns_socket(netns, socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(address)
    except OSError:
        sock.close()
        raise
    return sock
