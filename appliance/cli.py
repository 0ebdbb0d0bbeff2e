"""The `meshsip` command: `meshsip run` starts a node, `meshsip status` asks one."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from overlay.names import RULE, check_overlay_name

from .config import ConfigError, load_config
from .control import query
from .web.terminal import render_terminal


def _overlay_name(value: str) -> str:
    """argparse type: a bad --overlay is a usage error (exit 2), never a traceback later."""
    try:
        return check_overlay_name(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meshsip", description="Emergency phone network node")
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="TOML config file (every key optional)")
    common.add_argument("--data-dir", type=Path, help="where the node keeps its state")
    run = sub.add_parser("run", parents=[common], help="run a node in the foreground")
    run.add_argument("--bind", help="address to listen on (default 0.0.0.0: all interfaces)")
    run.add_argument("--sip-port", type=int, help="SIP port, UDP and TCP (default 5060)")
    run.add_argument("--tls-port", type=int,
                     help="SIP over TLS port for phones (default 5061; 0: no TLS port)")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    run.add_argument("--overlay", type=_overlay_name,
                     help=f"overlay name shared by the boxes of one deployment ({RULE})")
    run.add_argument("--no-discovery", dest="discovery", action="store_false", default=None,
                     help="no mDNS: find other boxes only through --seed and the peer cache")
    run.add_argument("--interface", dest="interfaces", action="append", metavar="IF",
                     help="use mDNS only on this interface (repeatable)")
    run.add_argument("--seed", dest="seeds", action="append", metavar="HOST:PORT",
                     help="another box to contact at start (repeatable)")
    run.add_argument("--web-port", type=int, metavar="N",
                     help="status page port (default 80, or 8080 without root; 0: none)")
    status = sub.add_parser("status", parents=[common],
                            help="show the boxes, phones, calls and problems")
    status.add_argument("--json", action="store_true",
                        help="print the status document (as /api/status) as JSON")
    sub.add_parser("ca", add_help=False,
                   help="the deployment CA: init, issue, revoke (meshsip ca --help)")
    sub.add_parser("sim", add_help=False,
                   help="run the deterministic overlay simulator (meshsip sim --help)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sim"]:
        from overlay.sim.cli import main as sim_main  # the simulator loads only when asked

        return sim_main(argv[1:])
    if argv[:1] == ["ca"]:
        from .pki import main as ca_main

        return ca_main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config, {
            "data_dir": args.data_dir,
            "bind": getattr(args, "bind", None),
            "sip_port": getattr(args, "sip_port", None),
            "tls_port": getattr(args, "tls_port", None),
            "log_level": getattr(args, "log_level", None),
            "overlay": getattr(args, "overlay", None),
            "discovery": getattr(args, "discovery", None),
            "interfaces": getattr(args, "interfaces", None),
            "seeds": getattr(args, "seeds", None),
            "web_port": getattr(args, "web_port", None),
        })
    except ConfigError as exc:
        print(f"meshsip: {exc}", file=sys.stderr)
        return 2
    if args.command == "status":
        return _status(config.data_dir, args.json)
    return _run(config)


def _run(config: Any) -> int:
    from .node import NodeError, serve  # here: `meshsip status` need not load the node

    logging.basicConfig(
        level=config.log_level.upper(), stream=sys.stderr,
        format="%(asctime)s %(name)s: %(message)s", datefmt="%Y-%m-%d %H:%M:%S",
    )

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(config, stop)

    try:
        asyncio.run(run())
    except NodeError as exc:
        print(f"meshsip: {exc}", file=sys.stderr)
        return 1
    return 0


def _status(data_dir: Path, as_json: bool) -> int:
    try:
        status = query(data_dir / "control.sock", "overview", timeout=15.0)
    except (OSError, ValueError) as exc:
        print(f"meshsip: no node is running with data directory {data_dir} ({exc})",
              file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(status, indent=2))
        return 0
    print(render_terminal(status, color=sys.stdout.isatty()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
