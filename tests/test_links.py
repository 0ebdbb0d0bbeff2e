"""LinkWatcher: unit tests of the netlink parsing, then real interfaces in a namespace."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest

from overlay import links

sys.path.insert(0, str(Path(__file__).parent))
import netns  # noqa: E402

PY = sys.executable


def _rtattr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return links._RTATTR.pack(length, kind) + payload + b"\0" * (links._align(length) - length)


def test_netlink_message_parsing() -> None:
    body = links._IFINFOMSG.pack(0, 1, 7, links._IFF_UP, 0) + _rtattr(links._IFLA_IFNAME, b"eth7\0")
    msg = links._NLMSGHDR.pack(16 + len(body), links._RTM_NEWLINK, 0, 5, 0) + body
    parsed = links._messages(msg + msg)
    assert [(kind, seq) for kind, _m, seq in parsed] == [(links._RTM_NEWLINK, 5)] * 2
    attrs = links._attributes(parsed[0][1], 16 + links._IFINFOMSG.size, len(msg))
    assert attrs[links._IFLA_IFNAME] == b"eth7\0"
    assert links._messages(msg[:-3]) == []  # truncated: ignored, no exception


def test_snapshot_of_this_host_has_no_loopback_unless_asked() -> None:
    plain = links.snapshot()
    assert all(not ip.startswith("127.") and ip != "::1" for ips in plain.values() for ip in ips)
    with_lo = links.snapshot(include_loopback=True)
    assert "127.0.0.1" in {ip for ips in with_lo.values() for ip in ips}


def test_watcher_starts_and_stops_in_both_modes() -> None:
    async def main(mode: links.Mode) -> links.LinkWatcher:
        watcher = links.LinkWatcher(lambda a: None, mode=mode, include_loopback=True)
        first = await watcher.start()
        await asyncio.sleep(0.05)
        await watcher.stop()
        assert "127.0.0.1" in {ip for ips in first.values() for ip in ips}
        return watcher

    assert asyncio.run(main("netlink")).mode == "netlink"
    assert asyncio.run(main("poll")).mode == "poll"


_SKIP = netns.unavailable()


@pytest.mark.netns
@pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")
def test_changes_reported_within_two_seconds() -> None:
    """Address added, removed, flapped; carrier lost: netlink and polling watchers both."""
    netns.sweep_stale()
    with netns.Bed() as bed:
        # IPv4 only, so that every change below is ours (no IPv6 duplicate address detection
        # finishing at its own pace) and the exact sequence of reports can be checked
        ns = bed.add_lone(1, ipv6=False)
        bed.exec(ns, "ip", "link", "add", "a0", "type", "veth", "peer", "name", "a1")
        bed.exec(ns, "ip", "link", "set", "a1", "up")
        watchers = {
            mode: bed.run(ns, [PY, "-m", "overlay.links", "--mode", mode, "--duration", "15",
                               "--poll-interval", "0.5"], name=mode)  # fmt: skip
            for mode in ("netlink", "poll")
        }
        for mode, proc in watchers.items():
            started = f"start:{mode}"
            assert proc.wait_for(lambda x, s=started: x["event"] == s, 5.0), proc.stderr()

        def expect(what: str, predicate, modes=("netlink", "poll")) -> None:  # type: ignore[no-untyped-def]
            t0 = time.monotonic()
            for mode in modes:
                line = watchers[mode].wait_for(
                    lambda x: x["event"] == "change" and x["_at"] >= t0 and predicate(x),
                    max(0.0, t0 + 10.0 - time.monotonic()),  # a deadline; the time is printed
                )
                assert line is not None, f"{mode}: no change for {what} within 10 s"
                print(f"{mode}: {what} reported after {line['_at'] - t0:.2f} s")

        def v4(x: dict) -> list[str]:  # type: ignore[type-arg]
            return [ip for ip in x["addresses"].get("a0", []) if "." in ip]

        bed.exec(ns, "ip", "link", "set", "a0", "up")
        bed.exec(ns, "ip", "addr", "add", "10.99.7.1/24", "dev", "a0")
        expect("address added", lambda x: v4(x) == ["10.99.7.1"])
        bed.exec(ns, "ip", "addr", "add", "10.99.8.1/24", "dev", "a0")
        expect("second address", lambda x: v4(x) == ["10.99.7.1", "10.99.8.1"])
        bed.exec(ns, "ip", "addr", "del", "10.99.8.1/24", "dev", "a0")
        expect("address removed", lambda x: v4(x) == ["10.99.7.1"])
        # removed and put back at once: same snapshot, but reported (a flap) by netlink
        before = watchers["netlink"].events("change")[-1]["addresses"]
        bed.batch(ns, "addr del 10.99.7.1/24 dev a0", "addr add 10.99.7.1/24 dev a0")
        expect("address flap", lambda x: x["addresses"] == before, modes=("netlink",))
        # the peer end goes down: a0 keeps its address but loses its carrier
        bed.exec(ns, "ip", "link", "set", "a1", "down")
        expect("carrier lost", lambda x: "a0" not in x["addresses"], modes=("netlink",))
        bed.exec(ns, "ip", "link", "set", "a1", "up")
        expect("carrier back", lambda x: v4(x) == ["10.99.7.1"], modes=("netlink",))
        for proc in watchers.values():
            proc.stop()
        # nothing else was reported
        a0 = ["10.99.7.1"]
        assert [x["addresses"] for x in watchers["netlink"].events("change")] == [
            {"a0": a0, "a1": []}, {"a0": a0 + ["10.99.8.1"], "a1": []}, {"a0": a0, "a1": []},
            {"a0": a0, "a1": []}, {}, {"a0": a0, "a1": []},
        ]  # fmt: skip
        assert [x["addresses"] for x in watchers["poll"].events("change")] == [
            {"a0": a0}, {"a0": a0 + ["10.99.8.1"]}, {"a0": a0},
        ]
