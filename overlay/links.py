"""Link watching: notice within seconds when an interface or address comes or goes.

`LinkWatcher(on_change)` calls `on_change(addresses)` with the usable addresses per interface,
`{"eth0": ["10.99.0.2", "fe80::1"], ...}`, shortly (`debounce`, 0.5 s) after they change. An
interface is usable when it is administratively up and operationally up (IFF_UP and
IFF_RUNNING: carrier present, or a device without carrier state such as a tun); its
addresses are those not tentative (IPv6 duplicate address detection still running) and not
failed. Loopback is left out unless `include_loopback=True`.

Backends:
- **netlink** (Linux, the default there): an rtnetlink socket subscribed to link and address
  events, read by the event loop itself (no thread), and rtnetlink dumps for the snapshot.
  Only the standard library is used: pyroute2 would do the same for 18 MB more memory and
  80 ms more start-up, which matters on a Raspberry Pi. Netlink is also right inside any
  network namespace, where /sys/class/net may describe another namespace (setns without a
  sysfs remount). A slow safety poll (`safety_poll`, 30 s) covers lost events (ENOBUFS).
- **poll** (elsewhere, or when netlink cannot be opened): `ifaddr` every `poll_interval`
  seconds. It sees addresses but not carrier, so an interface that loses carrier but keeps
  its address stays listed, and it lists only interfaces that have an address (netlink also
  lists usable interfaces with none, as `name: []`).

`on_change` is called when the snapshot differs from the last one reported, and also when an
interface in the last snapshot lost its carrier or an address and got it back within one
debounce window (a flap): the snapshot is then equal, but what was sent during the gap is
lost, so the listener should announce itself again. Bursts of events (Wi-Fi drivers send
link messages for scans) cause no calls when nothing usable changed.

`on_change` may be a plain function or a coroutine function; calls never overlap, and an
exception in it is logged, not raised.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Literal

log = logging.getLogger("meshsip.links")

Addresses = dict[str, list[str]]
OnChange = Callable[[Addresses], Awaitable[None] | None]
Mode = Literal["auto", "netlink", "poll"]

# rtnetlink constants (linux/rtnetlink.h, linux/if_addr.h, linux/if.h)
_NETLINK_ROUTE = 0
_RTMGRP_LINK = 0x1
_RTMGRP_IPV4_IFADDR = 0x10
_RTMGRP_IPV6_IFADDR = 0x100
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_NLMSG_OVERRUN = 4
_RTM_NEWLINK = 16
_RTM_DELLINK = 17
_RTM_GETLINK = 18
_RTM_NEWADDR = 20
_RTM_DELADDR = 21
_RTM_GETADDR = 22
_NLM_F_REQUEST = 0x1
_NLM_F_DUMP = 0x300
_IFLA_IFNAME = 3
_IFA_ADDRESS = 1
_IFA_LOCAL = 2
_IFA_FLAGS = 8
_IFA_F_DADFAILED = 0x08
_IFA_F_TENTATIVE = 0x40
_IFF_UP = 0x1
_IFF_LOOPBACK = 0x8
_IFF_RUNNING = 0x40
_IFF_LOWER_UP = 0x10000
_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTATTR = struct.Struct("=HH")
_DUMP_TIMEOUT = 2.0


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attributes(data: bytes, offset: int, end: int) -> dict[int, bytes]:
    attrs: dict[int, bytes] = {}
    while offset + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size:
            break
        attrs[kind & 0x3FFF] = data[offset + _RTATTR.size : offset + length]
        offset += _align(length)
    return attrs


def _messages(data: bytes) -> list[tuple[int, bytes, int]]:
    """Split a netlink datagram into (type, whole message, sequence number) triples."""
    out = []
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _flags, seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > len(data):
            break
        out.append((kind, data[offset : offset + length], seq))
        offset += _align(length)
    return out


def _netlink_socket(groups: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_ROUTE)
    try:
        sock.bind((0, groups))
    except OSError:
        sock.close()
        raise
    return sock


def _dump(sock: socket.socket, kind: int, body: bytes, seq: int) -> list[bytes]:
    header = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, _NLM_F_REQUEST | _NLM_F_DUMP, seq, 0)
    sock.send(header + body)
    out: list[bytes] = []
    deadline = time.monotonic() + _DUMP_TIMEOUT
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        data = sock.recv(65536)
        for msg_kind, msg, msg_seq in _messages(data):
            if msg_seq != seq:
                continue
            if msg_kind == _NLMSG_DONE:
                return out
            if msg_kind == _NLMSG_ERROR:
                (code,) = struct.unpack_from("=i", msg, _NLMSGHDR.size)
                if code:
                    raise OSError(-code, os.strerror(-code))
                continue
            out.append(msg)


def _netlink_snapshot(include_loopback: bool) -> tuple[Addresses, dict[int, str]]:
    """Usable addresses per interface, and the index -> name map of usable interfaces."""
    sock = _netlink_socket()
    try:
        links = _dump(sock, _RTM_GETLINK, _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0), 1)
        addrs = _dump(sock, _RTM_GETADDR, _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0), 2)
    finally:
        sock.close()
    names: dict[int, str] = {}
    for msg in links:
        _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(msg, _NLMSGHDR.size)
        if not flags & _IFF_UP or not flags & _IFF_RUNNING:
            continue
        if flags & _IFF_LOOPBACK and not include_loopback:
            continue
        start = _NLMSGHDR.size + _IFINFOMSG.size
        name = _attributes(msg, start, len(msg)).get(_IFLA_IFNAME, b"").split(b"\0")[0]
        if name:
            names[index] = name.decode(errors="replace")
    result: Addresses = {name: [] for name in names.values()}
    for msg in addrs:
        family, _prefix, flags, _scope, index = _IFADDRMSG.unpack_from(msg, _NLMSGHDR.size)
        if index not in names or family not in (socket.AF_INET, socket.AF_INET6):
            continue
        attrs = _attributes(msg, _NLMSGHDR.size + _IFADDRMSG.size, len(msg))
        if _IFA_FLAGS in attrs:
            (flags,) = struct.unpack("=I", attrs[_IFA_FLAGS][:4])
        if flags & (_IFA_F_TENTATIVE | _IFA_F_DADFAILED):
            continue
        raw = attrs.get(_IFA_LOCAL) or attrs.get(_IFA_ADDRESS)
        if not raw:
            continue
        address = socket.inet_ntop(family, raw)
        if address not in result[names[index]]:
            result[names[index]].append(address)
    return result, names


def _ifaddr_snapshot(include_loopback: bool) -> Addresses:
    import ifaddr

    result: Addresses = {}
    for adapter in ifaddr.get_adapters():
        name = adapter.name if isinstance(adapter.name, str) else adapter.nice_name
        name = name.split(":")[0]  # IPv4 labels such as eth0:1
        for ip in adapter.ips:
            address = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            try:
                loopback = ipaddress.ip_address(address.split("%")[0]).is_loopback
            except ValueError:
                continue
            if loopback and not include_loopback:
                continue
            if address not in result.setdefault(name, []):
                result[name].append(address)
    return result


def snapshot(include_loopback: bool = False) -> Addresses:
    """The usable addresses per interface right now (netlink on Linux, else ifaddr)."""
    if sys.platform.startswith("linux"):
        try:
            return _netlink_snapshot(include_loopback)[0]
        except OSError as exc:
            log.debug("netlink snapshot failed (%s), using ifaddr", exc)
    return _ifaddr_snapshot(include_loopback)


def _normalise(addresses: Addresses) -> Addresses:
    return {name: sorted(ips) for name, ips in sorted(addresses.items())}


class LinkWatcher:
    """Calls `on_change(addresses)` when usable interfaces or addresses change."""

    def __init__(
        self,
        on_change: OnChange,
        *,
        include_loopback: bool = False,
        debounce: float = 0.5,
        mode: Mode = "auto",
        poll_interval: float = 2.0,
        safety_poll: float = 30.0,
    ) -> None:
        self._on_change = on_change
        self.include_loopback = include_loopback
        self.debounce = debounce
        self.requested_mode: Mode = mode
        self.mode: Literal["netlink", "poll"] | None = None  # chosen at start()
        self.poll_interval = poll_interval
        self.safety_poll = safety_poll
        self.addresses: Addresses = {}  # the last snapshot reported (or taken at start)
        self.changes = 0  # on_change calls so far
        self._names: dict[int, str] = {}  # ifindex -> name, usable interfaces
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._flapped = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> Addresses:
        """Start watching; returns the current usable addresses (on_change is not called)."""
        if self._task is not None:
            return self.addresses
        self._loop = asyncio.get_running_loop()
        mode = self.requested_mode
        if mode == "auto":
            mode = "netlink" if sys.platform.startswith("linux") else "poll"
        if mode == "netlink":
            try:
                groups = _RTMGRP_LINK | _RTMGRP_IPV4_IFADDR | _RTMGRP_IPV6_IFADDR
                self._sock = _netlink_socket(groups)
                self._sock.setblocking(False)
                self._loop.add_reader(self._sock.fileno(), self._on_readable)
            except OSError as exc:
                if self.requested_mode == "netlink":
                    raise
                log.warning("netlink unavailable (%s): polling interfaces instead", exc)
                self._close_socket()
                mode = "poll"
        self.mode = mode
        self.addresses = self._snapshot()
        self._task = asyncio.create_task(self._run(), name="link-watcher")
        return self.addresses

    async def stop(self) -> None:
        task, self._task = self._task, None
        self._close_socket()
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    def _close_socket(self) -> None:
        if self._sock is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def _snapshot(self) -> Addresses:
        if self.mode == "netlink":
            try:
                addresses, self._names = _netlink_snapshot(self.include_loopback)
                return _normalise(addresses)
            except OSError as exc:
                log.warning("netlink dump failed: %s", exc)
        return _normalise(_ifaddr_snapshot(self.include_loopback))

    def _on_readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                return
            except OSError as exc:  # ENOBUFS: events were lost; take a fresh look
                log.debug("netlink receive: %s", exc)
                self._flapped = True
                self._wake.set()
                return
            for kind, msg, _seq in _messages(data):
                self._note(kind, msg)
            self._wake.set()

    def _note(self, kind: int, msg: bytes) -> None:
        """Mark a flap when a reported interface lost carrier, an address or itself."""
        if kind in (_RTM_NEWLINK, _RTM_DELLINK) and len(msg) >= _NLMSGHDR.size + _IFINFOMSG.size:
            _fam, _type, index, flags, _chg = _IFINFOMSG.unpack_from(msg, _NLMSGHDR.size)
            lost = kind == _RTM_DELLINK or not (flags & _IFF_UP and flags & _IFF_LOWER_UP)
            if lost and index in self._names:
                self._flapped = True
        elif kind == _RTM_DELADDR and len(msg) >= _NLMSGHDR.size + _IFADDRMSG.size:
            index = _IFADDRMSG.unpack_from(msg, _NLMSGHDR.size)[4]
            if index in self._names:
                self._flapped = True
        elif kind == _NLMSG_OVERRUN:
            self._flapped = True

    async def _run(self) -> None:
        interval = self.safety_poll if self.mode == "netlink" else self.poll_interval
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=interval)
                # An event: let the burst settle (a fixed window from its first event, so a
                # storm of events cannot postpone the report forever).
                await asyncio.sleep(self.debounce)
            except TimeoutError:
                pass
            self._wake.clear()
            flapped, self._flapped = self._flapped, False
            current = self._snapshot()
            if current == self.addresses and not flapped:
                continue
            self.addresses = current
            self.changes += 1
            try:
                result = self._on_change({k: list(v) for k, v in current.items()})
                if result is not None:
                    await result
            except Exception:
                log.exception("link change callback failed")


async def _main(argv: list[str] | None = None) -> None:
    """`python -m overlay.links`: print one JSON line per change (for trials and tests)."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description="Print usable interface addresses as they change")
    parser.add_argument("--mode", choices=["auto", "netlink", "poll"], default="auto")
    parser.add_argument("--duration", type=float, default=3600.0, help="exit after this many s")
    parser.add_argument("--debounce", type=float, default=0.5)
    parser.add_argument("--poll-interval", type=float, default=2.0)
    parser.add_argument("--loopback", action="store_true", help="include loopback")
    args = parser.parse_args(argv)
    start = time.monotonic()

    def emit(event: str, addresses: Addresses) -> None:
        line = {"event": event, "t": round(time.monotonic() - start, 3), "addresses": addresses}
        print(json.dumps(line), flush=True)

    watcher = LinkWatcher(
        lambda addresses: emit("change", addresses),
        include_loopback=args.loopback,
        debounce=args.debounce,
        mode=args.mode,
        poll_interval=args.poll_interval,
    )
    initial = await watcher.start()
    emit(f"start:{watcher.mode}", initial)
    try:
        await asyncio.sleep(args.duration)
    finally:
        await watcher.stop()


if __name__ == "__main__":
    try:
        asyncio.run(_main())
    except KeyboardInterrupt:
        pass
