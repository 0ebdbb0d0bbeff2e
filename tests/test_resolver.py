"""overlay/sip/resolver.py: lookups off the event loop, with a timeout, a bounded cache
(positive and negative, monotonic lifetimes) and a bound on the threads."""

from __future__ import annotations

import asyncio
import threading

from overlay.sip.resolver import Resolver, getaddrinfo_ipv4


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Lookups:
    """A blocking lookup the test holds up (`gate`) and counts."""

    def __init__(self, answers: dict[str, str | None]) -> None:
        self.answers = answers
        self.gate = threading.Event()
        self.gate.set()
        self.asked: list[str] = []

    def __call__(self, name: str) -> str | None:
        self.asked.append(name)
        self.gate.wait(10)
        return self.answers.get(name)


async def resolved(resolver: Resolver, hosts: list[str]) -> None:
    done = asyncio.get_running_loop().create_future()
    resolver.resolve(hosts, lambda now: done.set_result(now))
    await asyncio.wait_for(done, 10)


def test_literals_are_known_names_resolve_once_and_are_cached() -> None:
    lookups = Lookups({"pbx.lan": "10.99.0.5"})
    clock = Clock()
    resolver = Resolver(lookup=lookups, clock=clock, ttl=60)
    assert resolver.address("10.99.0.1") == "10.99.0.1"
    assert resolver.address("[fe80::1]") == "fe80::1"
    assert resolver.unknown(["10.99.0.1", "PBX.lan.", "pbx.lan"]) == ["pbx.lan"]
    assert resolver.address("pbx.lan") is None  # not looked up yet

    async def main() -> None:
        await resolved(resolver, ["pbx.lan", "nowhere.lan"])
        await resolved(resolver, ["pbx.lan"])  # cached: no second lookup

    asyncio.run(main())
    assert resolver.address("Pbx.Lan") == "10.99.0.5"
    assert resolver.address("nowhere.lan") is None
    assert sorted(lookups.asked) == ["nowhere.lan", "pbx.lan"]
    assert resolver.unknown(["pbx.lan", "nowhere.lan"]) == []
    clock.now += 20  # past the negative lifetime, within the positive one
    assert resolver.unknown(["pbx.lan", "nowhere.lan"]) == ["nowhere.lan"]
    clock.now += 60
    assert resolver.unknown(["pbx.lan"]) == ["pbx.lan"]


def test_a_lookup_that_hangs_times_out_without_stalling_the_loop() -> None:
    lookups = Lookups({"slow.lan": "10.99.0.6"})
    lookups.gate.clear()
    resolver = Resolver(lookup=lookups, timeout=0.3)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async def main() -> None:
        task = asyncio.create_task(ticker())
        await resolved(resolver, ["slow.lan"])
        task.cancel()
        assert resolver.address("slow.lan") is None  # timed out: unresolvable for now
        assert resolver.stats["resolve_timeouts"] == 1
        lookups.gate.set()  # the late answer still fills the cache
        for _ in range(200):
            if resolver.address("slow.lan") is not None:
                break
            await asyncio.sleep(0.01)

    asyncio.run(main())
    assert ticks > 5  # the loop ran while the lookup hung
    assert resolver.address("slow.lan") == "10.99.0.6"


def test_waiters_for_one_name_share_a_lookup_and_threads_are_bounded() -> None:
    lookups = Lookups({})
    lookups.gate.clear()
    resolver = Resolver(lookup=lookups, timeout=0.3, max_threads=2)
    answered: list[str] = []

    async def main() -> None:
        futures = []
        for name in ("a.lan", "a.lan", "b.lan", "c.lan"):
            done = asyncio.get_running_loop().create_future()
            resolver.resolve([name], lambda now, d=done: d.set_result(now))
            futures.append(done)
        await asyncio.wait_for(futures[3], 1)  # c.lan: no thread left, refused at once
        answered.append("c")
        assert not futures[0].done()
        await asyncio.wait_for(asyncio.gather(*futures), 5)
        lookups.gate.set()

    asyncio.run(main())
    assert sorted(lookups.asked) == ["a.lan", "b.lan"]
    assert resolver.stats["resolve_busy"] == 1 and answered == ["c"]


def test_the_cache_is_bounded() -> None:
    resolver = Resolver(lookup=lambda name: "10.99.0.1", max_entries=3)

    async def main() -> None:
        await resolved(resolver, [f"h{i}.lan" for i in range(5)])

    asyncio.run(main())
    assert len(resolver.unknown([f"h{i}.lan" for i in range(5)])) == 2


def test_the_real_lookup_reads_the_hosts_file() -> None:
    assert getaddrinfo_ipv4("localhost") == "127.0.0.1"
