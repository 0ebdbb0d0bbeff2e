"""`python -m overlay.discovery`: run one discovery instance, print what it finds as JSON lines.

Lines: {"event": "started"}, {"event": "peer", "t": seconds, ...PeerInfo fields},
{"event": "links", "addresses": {...}} on each link change, {"event": "stats", ...} at exit.
Runs until --duration elapses or SIGTERM/SIGINT, then stops cleanly (mDNS goodbyes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import signal
import sys
import time

from ..links import LinkWatcher
from . import DEFAULT_OVERLAY, Discovery, PeerInfo


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m overlay.discovery", description=__doc__)
    p.add_argument("--node-id", default=None, help="hex Node-ID (default: random)")
    p.add_argument("--port", type=int, default=5060, help="SIP port to advertise")
    p.add_argument("--overlay", default=DEFAULT_OVERLAY)
    p.add_argument("--interface", action="append", default=None, help="limit mDNS (repeat)")
    p.add_argument("--disabled", action="store_true", help="no mDNS: seeds and cache only")
    p.add_argument("--data-dir", default=None, help="where the peer cache lives")
    p.add_argument("--seed", action="append", default=[], help="host[:port] (repeat)")
    p.add_argument("--refresh", type=float, default=20.0, help="re-announce/re-query interval")
    p.add_argument("--fallback", type=float, default=120.0, help="seed/cache report interval")
    p.add_argument("--no-link-watch", action="store_true", help="do not run a LinkWatcher")
    p.add_argument("--ipv6", action="store_true")
    p.add_argument("--duration", type=float, default=3600.0, help="exit after this many s")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


async def _run(args: argparse.Namespace) -> None:
    t0 = time.monotonic()

    def emit(event: str, **fields: object) -> None:
        line = {"event": event, "t": round(time.monotonic() - t0, 3), **fields}
        print(json.dumps(line), flush=True)

    def on_peer(peer: PeerInfo) -> None:
        emit("peer", **peer.to_json())

    node_id = args.node_id or secrets.token_hex(16)
    discovery = Discovery(
        node_id,
        args.port,
        on_peer,
        overlay=args.overlay,
        interfaces=args.interface,
        enabled=not args.disabled,
        data_dir=args.data_dir,
        seeds=args.seed,
        refresh_interval=args.refresh,
        fallback_interval=args.fallback,
        ipv6=args.ipv6,
    )

    def links_changed(addresses: dict[str, list[str]]) -> None:
        emit("links", addresses=addresses)
        discovery.links_changed(addresses)

    watcher = None if args.no_link_watch else LinkWatcher(links_changed)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    await discovery.start()
    if watcher is not None:
        await watcher.start()
    emit("started", node_id=node_id, instance=discovery.instance)
    try:
        await asyncio.wait_for(done.wait(), timeout=args.duration)
    except TimeoutError:
        pass
    if watcher is not None:
        await watcher.stop()
    await discovery.stop()
    emit("stats", **discovery.stats)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    asyncio.run(_run(args))


if __name__ == "__main__":
    main()
