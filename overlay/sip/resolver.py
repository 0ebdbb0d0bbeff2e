"""Host names in Route, Contact and Request-URI, resolved without blocking the event loop.

In the field no DNS server answers: a blocking getaddrinfo() on the loop would stall the
whole box for the resolver's full timeout (glibc: 5 s x 2 tries) on every such name. Here
each lookup runs on its own daemon thread (a stuck lookup never keeps the process from
exiting, as a ThreadPoolExecutor's workers would), the waiter is answered after at most
`timeout` seconds, and answers are kept in a small cache, positive and negative, with
lifetimes on the monotonic clock (the wall clock of a box may jump). A late answer from a
thread that outlived its timeout still fills the cache. At most `max_threads` lookups run at
once: past that a name counts as unresolvable at once, so a flood of names bounds the
threads, never the loop.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from .routing import is_ip, literal_address

log = logging.getLogger("meshsip.resolver")
Lookup = Callable[[str], str | None]  # blocking: a name -> an IPv4 address or None


def getaddrinfo_ipv4(host: str) -> str | None:
    try:
        info = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_DGRAM)
    except (OSError, UnicodeError):
        return None
    return str(info[0][4][0]) if info else None


class Resolver:
    """`resolve(hosts, done)` calls `done(now)` once every host has an answer (at once when all
    are IP literals or cached); `address(host)` is then the IP, or None if it does not
    resolve. Use from the event loop's thread only."""

    def __init__(self, *, timeout: float = 1.5, ttl: float = 60.0, negative_ttl: float = 15.0,
                 max_entries: int = 256, max_threads: int = 8,
                 lookup: Lookup = getaddrinfo_ipv4, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.timeout, self.ttl, self.negative_ttl = timeout, ttl, negative_ttl
        self.max_entries, self.max_threads = max_entries, max_threads
        self._lookup, self._clock = lookup, clock
        self._cache: OrderedDict[str, tuple[float, str | None]] = OrderedDict()
        self._waiting: dict[str, list[Callable[[], None]]] = {}  # name -> answer pending
        self._threads = 0
        self.stats = {"resolved": 0, "unresolved": 0, "resolve_timeouts": 0,
                      "resolve_busy": 0}

    @staticmethod
    def _key(host: str) -> str:
        return host.strip("[]").rstrip(".").lower()

    def _cached(self, name: str) -> tuple[bool, str | None]:
        entry = self._cache.get(name)
        if entry is None:
            return False, None
        if entry[0] <= self._clock():
            del self._cache[name]
            return False, None
        return True, entry[1]

    def address(self, host: str) -> str | None:
        literal = literal_address(host)
        return literal if literal is not None else self._cached(self._key(host))[1]

    def unknown(self, hosts: Iterable[str]) -> list[str]:
        """The names among `hosts` that need a lookup (not IP literals, not cached)."""
        out = []
        for host in hosts:
            name = self._key(host)
            if host and not is_ip(host) and not self._cached(name)[0] and name not in out:
                out.append(name)
        return out

    def resolve(self, hosts: Iterable[str], done: Callable[[float], None]) -> None:
        loop = asyncio.get_running_loop()
        names = self.unknown(hosts)
        if not names:
            done(loop.time())
            return
        left = len(names)

        def one_answered() -> None:
            nonlocal left
            left -= 1
            if left == 0:
                done(loop.time())

        for name in names:
            if name in self._waiting:
                self._waiting[name].append(one_answered)
            elif self._threads >= self.max_threads:
                self.stats["resolve_busy"] += 1
                self._store(name, None)
                loop.call_soon(one_answered)
            else:
                self._waiting[name] = [one_answered]
                self._start(loop, name)

    def _start(self, loop: asyncio.AbstractEventLoop, name: str) -> None:
        self._threads += 1
        timer = loop.call_later(self.timeout, self._timed_out, name)

        def work() -> None:
            ip = self._lookup(name)
            try:
                loop.call_soon_threadsafe(self._answered, name, ip, timer)
            except RuntimeError:  # the loop closed while we looked
                pass

        threading.Thread(target=work, name=f"resolve-{name[:20]}", daemon=True).start()

    def _timed_out(self, name: str) -> None:
        if name in self._waiting:
            self.stats["resolve_timeouts"] += 1
            log.info("%s did not resolve within %.1fs", name, self.timeout)
            self._store(name, None)
            self._release(name)

    def _answered(self, name: str, ip: str | None, timer: asyncio.TimerHandle) -> None:
        self._threads -= 1
        timer.cancel()
        if ip is not None or name in self._waiting:  # a late failure keeps the timeout's
            self._store(name, ip)
        self._release(name)

    def _store(self, name: str, ip: str | None) -> None:
        self.stats["resolved" if ip is not None else "unresolved"] += 1
        self._cache.pop(name, None)
        self._cache[name] = (self._clock() + (self.ttl if ip else self.negative_ttl), ip)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)

    def _release(self, name: str) -> None:
        for waiter in self._waiting.pop(name, []):
            waiter()
