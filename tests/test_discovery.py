"""Discovery: unit tests (no network), then real mDNS between network namespaces.

The namespace tests run each discovery instance as `python -m overlay.discovery` inside its
own namespace (never in the root namespace: mDNS would leave the machine), reading the JSON
lines it prints.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from zeroconf.asyncio import AsyncServiceInfo

from overlay.discovery import (
    CACHE_FILE,
    SERVICE_TYPE,
    Discovery,
    PeerCache,
    PeerInfo,
    instance_name,
    parse_seed,
)

sys.path.insert(0, str(Path(__file__).parent))
import netns  # noqa: E402

PY = sys.executable


# -- unit tests ---------------------------------------------------------------------------------


def test_parse_seed() -> None:
    assert parse_seed("10.0.0.1", 5060) == ("10.0.0.1", 5060)
    assert parse_seed(" 10.0.0.1:5070 ", 5060) == ("10.0.0.1", 5070)
    assert parse_seed("box.example", 5060) == ("box.example", 5060)
    assert parse_seed("box.example:5080", 5060) == ("box.example", 5080)
    assert parse_seed("fd00::1", 5060) == ("fd00::1", 5060)
    assert parse_seed("[fd00::1]:5070", 5060) == ("fd00::1", 5070)
    assert parse_seed("[fe80::1%eth0]", 5060) == ("fe80::1%eth0", 5060)
    for bad in ("", ":5060", "host:0", "host:70000", "host:x", "[fd00::1", "[::1]5060", "1:2:z"):
        with pytest.raises(ValueError):
            parse_seed(bad, 5060)


def test_instance_name_is_a_valid_label() -> None:
    node = "ab" * 16
    assert instance_name(node, "pi-one") == "abababababababab-pi-one"
    assert instance_name(node, "weird host_name.local") == "abababababababab-weird-host-name-local"
    assert len(instance_name(node, "x" * 100).encode()) <= 63
    assert instance_name(node, "___") == "abababababababab-meshsip"


def test_constructor_rejects_bad_config() -> None:
    def nothing(_peer: PeerInfo) -> None:
        pass

    for kwargs in (
        {"node_id": "xyz", "port": 5060},
        {"node_id": "ab", "port": 0},
        {"node_id": "ab", "port": 5060, "overlay": ""},
        {"node_id": "ab", "port": 5060, "refresh_interval": 500.0},
        {"node_id": "ab", "port": 5060, "seeds": ["host:nope"]},
    ):
        with pytest.raises(ValueError):
            Discovery(on_peer=nothing, **kwargs)  # type: ignore[arg-type]


def _peer(n: int, overlay: str = "o", **kw: Any) -> PeerInfo:
    return PeerInfo(f"{n:032x}", [f"10.99.0.{n}"], 5060, overlay, 1, **kw)


def test_peer_cache_round_trip_bounds_and_flash_wear(tmp_path: Path) -> None:
    path = tmp_path / "sub" / CACHE_FILE
    cache = PeerCache(path, max_entries=3, touch_interval=100.0)
    cache.save()
    assert not path.exists()  # nothing learned, nothing written
    for n in range(1, 6):
        assert cache.learn(_peer(n), now=1000.0 + n)
    cache.save()
    assert not cache.dirty
    # bounded: the three most recently seen are kept, newest first
    assert [p.node_id[-1] for p in cache.peers()] == ["5", "4", "3"]
    # the same peer again soon: nothing to write; after touch_interval, or changed: write
    assert not cache.learn(_peer(5), now=1050.0)
    assert cache.learn(_peer(5), now=1200.0)
    moved = PeerInfo(_peer(4).node_id, ["10.99.1.4"], 5060, "o", 1)
    assert cache.learn(moved, now=1060.0)
    assert not cache.learn(PeerInfo("", ["10.0.0.1"], 5060, "o", 1))  # seeds are not cached
    cache.save()
    again = PeerCache(path, max_entries=3)
    again.load(now=2000.0)
    assert [p.node_id[-1] for p in again.peers()] == ["5", "4", "3"]
    assert again.peers()[1].addresses == ["10.99.1.4"]
    assert all(p.source == "cache" for p in again.peers())
    assert again.peers("other") == []
    # too old entries are dropped at load
    old = PeerCache(path, max_age=10.0)
    old.load(now=1205.0)
    assert [p.node_id[-1] for p in old.peers()] == ["5"]
    # a corrupt file is an empty cache, not an error
    path.write_text("{not json")
    broken = PeerCache(path)
    broken.load()
    assert len(broken) == 0
    assert [f.name for f in path.parent.iterdir()] == [CACHE_FILE]  # no temporary files left


def test_disabled_reports_cache_and_seeds_without_network(tmp_path: Path) -> None:
    """enabled=False: the cache (minus ourselves and other overlays) and seeds, no mDNS."""
    me = "ee" * 16
    cache = PeerCache(tmp_path / CACHE_FILE)
    cache.learn(_peer(1))
    cache.learn(_peer(2, overlay="other"))
    cache.learn(PeerInfo(me, ["10.99.0.9"], 5060, "o", 1))
    cache.save()
    seen: list[PeerInfo] = []

    async def main() -> Discovery:
        d = Discovery(me, 5070, seen.append, overlay="o", enabled=False, data_dir=tmp_path,
                      seeds=["10.99.0.7", "[fd00::7]:5080"], ipv6=True)  # fmt: skip
        await d.start()
        assert [p.node_id for p in seen] == [_peer(1).node_id]  # the cache, during start()
        for _ in range(100):
            if len(seen) >= 3:
                break
            await asyncio.sleep(0.01)
        d.add_known_peer(_peer(3))
        d.add_known_peer(_peer(4, overlay="other"))
        await d.stop()
        return d

    d = asyncio.run(main())
    assert d._aiozc is None  # never opened a multicast socket
    assert seen[0].source == "cache"
    seeds = [(p.node_id, p.addresses, p.port, p.source) for p in seen[1:]]
    assert seeds == [("", ["10.99.0.7"], 5070, "seed"), ("", ["fd00::7"], 5080, "seed")]
    written = json.loads((tmp_path / CACHE_FILE).read_text())
    assert {row["node_id"][-1] for row in written["peers"]} == {"1", "2", "3", "e"}
    assert {p.node_id[-1] for p in d.known_peers()} == {"1", "3"}


def test_txt_records_are_checked() -> None:
    me = "ee" * 16
    d = Discovery(me, 5060, lambda p: None, overlay="o", enabled=False)

    def info(**props: str) -> AsyncServiceInfo:
        name = f"{secrets.token_hex(4)}.{SERVICE_TYPE}"
        return AsyncServiceInfo(SERVICE_TYPE, name, port=5062, properties=props,
                                server="x.local.", parsed_addresses=["10.99.0.5"])  # fmt: skip

    node = "12" * 16
    peer = d._peer_from(info(overlay="o", node=node.upper(), sip="5062", v="1"))
    assert peer == PeerInfo(node, ["10.99.0.5"], 5062, "o", 1, "mdns")
    assert d._peer_from(info(overlay="p", node=node, sip="5062", v="1")) is None
    assert d._peer_from(info(overlay="o", node=me, sip="5062", v="1")) is None
    assert d._peer_from(info(overlay="o", node="zz", sip="5062", v="1")) is None
    assert d._peer_from(info(overlay="o", node=node, sip="5062", v="one")) is None
    assert d._peer_from(info(node=node, v="1")) is None
    assert (d.stats["other_overlay"], d.stats["self"], d.stats["malformed"]) == (1, 1, 3)


# -- network namespaces ---------------------------------------------------------------------


_SKIP = netns.unavailable()
needs_netns = pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")


@pytest.fixture
def bed():
    netns.sweep_stale()
    with netns.Bed() as b:
        yield b


class Node:
    """A `python -m overlay.discovery` process in namespace `index` of a bed."""

    def __init__(self, bed: netns.Bed, index: int, *args: str, overlay: str = "alpha") -> None:
        self.index = index
        self.node_id = secrets.token_hex(16)
        self.address = bed.address(index)
        argv = [PY, "-m", "overlay.discovery", "--node-id", self.node_id, "--port", "5060",
                "--overlay", overlay, "--duration", "40", *args]  # fmt: skip
        self.proc = bed.run(bed.ns(index), argv, name=f"n{index}")
        self.started = time.monotonic()

    def peers(self, source: str | None = None) -> set[str]:
        return {
            p["node_id"]
            for p in self.proc.events("peer")
            if source is None or p["source"] == source
        }

    def found(self, other: Node, timeout: float, source: str = "mdns") -> float | None:
        """Seconds from now until `other` was reported, or None."""
        t0 = time.monotonic()
        line = self.proc.wait_for(
            lambda x: x.get("event") == "peer" and x["node_id"] == other.node_id
            and x["source"] == source, timeout)  # fmt: skip
        return None if line is None else max(0.0, line["_at"] - t0)

    def stats(self) -> dict[str, Any]:
        self.proc.stop()
        line = self.proc.wait_for(lambda x: x.get("event") == "stats", 1.0)
        assert line is not None, f"n{self.index} printed no stats:\n{self.proc.stderr()}"
        return line


def _all_found(nodes: list[Node], timeout: float) -> float:
    """Seconds until every node reported every other (fails the test if not in time)."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    for a in nodes:
        for b in nodes:
            if a is not b:
                left = deadline - time.monotonic()
                assert a.found(b, max(0.0, left)) is not None, (
                    f"n{a.index} did not find n{b.index} within {timeout} s:\n{a.proc.stderr()}"
                )
    return time.monotonic() - t0


@pytest.mark.netns
@needs_netns
def test_two_nodes_find_each_other(bed: netns.Bed) -> None:
    for i in (1, 2):
        bed.add_node(i)
    nodes = [Node(bed, i) for i in (1, 2)]
    took = _all_found(nodes, timeout=5.0)
    print(f"two nodes: all found in {took:.2f} s")
    peer = next(p for p in nodes[0].proc.events("peer") if p["node_id"] == nodes[1].node_id)
    assert peer["addresses"] == [nodes[1].address]
    assert (peer["port"], peer["overlay"], peer["version"]) == (5060, "alpha", 1)
    for node in nodes:
        assert node.node_id not in node.peers()  # never itself
        assert node.stats()["self"] >= 1  # ... though it did hear itself


@pytest.mark.netns
@needs_netns
def test_mdns_stays_on_the_chosen_interfaces(bed: netns.Bed) -> None:
    """n1 has eth0 (with n2) and eth1 (with n3) but is limited to eth0."""
    bed.add_bridge("br1")
    for index, bridge in ((1, "br0"), (2, "br0"), (3, "br1")):
        bed.add_node(index, bridge=bridge)
    bed.add_port(1, "eth1", "br1", "10.99.128.2/24")
    n1 = Node(bed, 1, "--interface", "eth0", "--refresh", "1")
    n2, n3 = Node(bed, 2), Node(bed, 3)
    assert n1.found(n2, 5.0) is not None and n2.found(n1, 5.0) is not None
    time.sleep(max(0.0, n1.started + 4.0 - time.monotonic()))
    assert n3.peers() == set() and n3.node_id not in n1.peers()
    peer = next(p for p in n2.proc.events("peer") if p["node_id"] == n1.node_id)
    assert peer["addresses"] == [n1.address]  # not eth1's


def test_chosen_interfaces_and_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    current = {"eth0": ["10.0.0.1", "fe80::1"], "wlan0": ["10.1.0.1"], "usb0": []}
    monkeypatch.setattr("overlay.links.snapshot", lambda include_loopback=False: current)
    monkeypatch.setattr("socket.if_nametoindex", lambda name: {"eth0": 2}[name])
    d = Discovery("ab", 5060, lambda p: None, enabled=False)
    assert d._wanted() == (["10.0.0.1", "10.1.0.1"], ["10.0.0.1", "10.1.0.1"])
    d = Discovery("ab", 5060, lambda p: None, enabled=False, interfaces=["wlan0", "usb0"])
    assert d._wanted() == (["10.1.0.1"], ["10.1.0.1"])
    d = Discovery("ab", 5060, lambda p: None, enabled=False, interfaces=["eth0"], ipv6=True)
    assert d._wanted() == (["10.0.0.1", "fe80::1"], ["10.0.0.1", 2])


@pytest.mark.netns
@needs_netns
def test_five_nodes_and_a_stranger(bed: netns.Bed) -> None:
    for i in range(1, 7):
        bed.add_node(i)
    nodes = [Node(bed, i, "--refresh", "2") for i in range(1, 6)]
    stranger = Node(bed, 6, "--refresh", "2", overlay="beta")
    took = _all_found(nodes, timeout=6.0)
    print(f"five nodes: all found in {took:.2f} s")
    time.sleep(max(0.0, 3.0 - took))  # at least one refresh round after that
    for node in nodes:
        assert stranger.node_id not in node.peers()
        assert node.stats()["other_overlay"] >= 1
    assert stranger.peers() == set()
    assert stranger.stats()["other_overlay"] >= 5


@pytest.mark.netns
@needs_netns
def test_partitioned_node_is_found_after_browsers_went_quiet(bed: netns.Bed) -> None:
    """A zeroconf browser stops querying ~14 s after start: the periodic refresh must heal.

    n3 sits on a second bridge (a partition that leaves every carrier up, so no link event
    helps) for 16 s, then its port moves to the main bridge. A control group (n4, n5, n6 on
    their own bridges, refresh far beyond the test) heals at the same moment and must stay
    apart: that shows the trap is real and the refresh is what gets out of it.
    """
    for bridge in ("br1", "br2", "br3"):
        bed.add_bridge(bridge)
    for index, bridge in ((1, "br0"), (2, "br0"), (3, "br1"), (4, "br2"), (5, "br2"), (6, "br3")):
        bed.add_node(index, bridge=bridge)
    refresh = 3.0
    nodes = [Node(bed, i, "--refresh", str(refresh)) for i in (1, 2, 3)]
    control = [Node(bed, i, "--refresh", "90") for i in (4, 5, 6)]
    a, b, c = nodes
    assert a.found(b, 5.0) is not None and b.found(a, 5.0) is not None
    time.sleep(max(0.0, 16.0 - (time.monotonic() - a.started)))
    assert c.peers() == set() and c.node_id not in a.peers() | b.peers()  # really apart
    healed = time.monotonic()
    bed.move_port(3, "br0")
    bed.move_port(6, "br2")
    took = _all_found(nodes, timeout=refresh * 1.1 + 2.5)
    print(f"partition healed at 16 s: all found {took:.2f} s later (refresh {refresh} s)")
    # found by the refresh, not by a link event (the move leaves every carrier up)
    assert not [x for x in c.proc.events("links") if x["_at"] >= healed]
    time.sleep(max(0.0, healed + 4.0 - time.monotonic()))
    lost = control[2].node_id
    assert control[2].peers() == set() and lost not in control[0].peers() | control[1].peers()
    assert control[0].node_id in control[1].peers()


@pytest.mark.netns
@needs_netns
def test_link_coming_up_finds_peers_within_seconds(bed: netns.Bed) -> None:
    """n1's eth0 is down at start, n2's has no address; both come up 2 s later."""
    bed.add_node(0)
    bed.add_node(1, up=False)
    bed.add_node(2, with_address=False)
    # a refresh interval far beyond the test: only the link watcher can make this work
    nodes = [Node(bed, i, "--refresh", "60") for i in (0, 1, 2)]
    n0, n1, n2 = nodes
    time.sleep(2.0)
    assert n1.peers() == set() and n2.peers() == set()
    bed.link_up(1)
    bed.set_address(2)
    took = _all_found(nodes, timeout=5.0)
    print(f"links came up: all found {took:.2f} s later")
    for node in (n1, n2):
        assert node.proc.events("links"), f"n{node.index} saw no link change"
    assert n1.stats()["link_changes"] >= 1


@pytest.mark.netns
@needs_netns
def test_peer_cache_written_then_read_back_without_mdns(bed: netns.Bed, tmp_path: Path) -> None:
    bed.add_node(1)
    bed.add_node(2)
    a = Node(bed, 1, "--data-dir", str(tmp_path))
    b = Node(bed, 2)
    assert a.found(b, 5.0) is not None
    a.proc.stop()  # SIGTERM: goodbyes, and the cache is written
    rows = json.loads((tmp_path / CACHE_FILE).read_text())["peers"]
    assert [(r["node_id"], r["addresses"], r["overlay"]) for r in rows] == [
        (b.node_id, [b.address], "alpha")
    ]
    again = Node(bed, 1, "--data-dir", str(tmp_path), "--disabled")
    again.node_id = a.node_id
    took = again.found(b, 3.0, source="cache")
    assert took is not None, again.proc.stderr()
    print(f"cached peer reported {time.monotonic() - again.started:.2f} s after process start")
    assert again.peers("mdns") == set()


@pytest.mark.netns
@needs_netns
def test_disabled_sends_no_multicast(bed: netns.Bed) -> None:
    """A listener on 224.0.0.251:5353 hears the enabled node (control) and never the other."""
    for i in (1, 2, 3):
        bed.add_node(i)
    listener = bed.run(bed.ns(3), [PY, "tests/netns.py", "listen", "--ip", bed.address(3),
                                   "--seconds", "4.5"], name="listener")  # fmt: skip
    assert listener.wait_for(lambda x: x["event"] == "listening", 3.0) is not None
    quiet = Node(bed, 1, "--disabled", "--refresh", "1", "--seed", bed.address(2))
    loud = Node(bed, 2, "--refresh", "1")
    seed = quiet.proc.wait_for(lambda x: x.get("source") == "seed", 3.0)
    assert seed is not None and seed["addresses"] == [loud.address]  # it runs; seeds work
    listener.popen.wait(timeout=10)
    listener.stop()
    sources = [x["src"] for x in listener.events("packet")]
    assert loud.address in sources, "control failed: the listener heard nothing"
    assert quiet.address not in sources
    assert loud.node_id not in quiet.peers("mdns")
    assert quiet.stats()["refreshes"] == 0
