"""`meshsip enroll`: open enrolment for a while, or make a one-time link (and QR code)
for a softphone. Talks to the running node through its control socket."""

from __future__ import annotations

import argparse
import io
import re
import sys
from pathlib import Path
from typing import Any

from ..config import ConfigError, load_config
from ..control import query

_SPAN = re.compile(r"(\d+)([smh]?)")


def duration(text: str) -> int:
    """argparse type: `10m`, `90s`, `1h`, `600` -> seconds."""
    m = _SPAN.fullmatch(text.strip().lower())
    if m is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 10m, 90s, 1h)")
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def qr_text(url: str) -> str:
    """The URL as a QR code drawn in the terminal (segno)."""
    import segno

    out = io.StringIO()
    segno.make(url, error="m").terminal(out=out, compact=True)
    return out.getvalue()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="meshsip enroll",
                                description="let phones onboard themselves on this box")
    p.add_argument("--config", type=Path, help="TOML config file")
    p.add_argument("--data-dir", type=Path, help="the running node's data directory")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--open", type=duration, metavar="DURATION",
                      help="open enrolment for this long (e.g. 10m)")
    what.add_argument("--close", action="store_true", help="close enrolment now")
    what.add_argument("--linphone", action="store_true",
                      help="print a one-time provisioning URL and its QR code")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config, {"data_dir": args.data_dir})
    except ConfigError as exc:
        print(f"meshsip: {exc}", file=sys.stderr)
        return 2
    command = ("enroll-linphone" if args.linphone else "enroll-open 0" if args.close
               else f"enroll-open {args.open}" if args.open is not None else "enroll-status")
    try:
        reply: dict[str, Any] = query(config.data_dir / "control.sock", command, timeout=30.0)
    except (OSError, ValueError) as exc:
        print(f"meshsip: no node is running with data directory {config.data_dir} ({exc})",
              file=sys.stderr)
        return 1
    if "error" in reply:
        print(f"meshsip: {reply['error']}", file=sys.stderr)
        return 1
    if args.linphone:
        print(f"Extension {reply['extension']}: in Linphone, Assistant > Fetch remote "
              f"configuration, or scan this code. The link works once.\n\n{reply['url']}\n")
        print(qr_text(reply["url"]))
        return 0
    minutes, seconds = divmod(reply["open_seconds_left"], 60)
    state = (f"open for {minutes} min{f' {seconds} s' if seconds else ''}" if reply["open"]
             else "closed")
    print(f"enrolment {state}; {reply['allocations']} phones hold extensions "
          f"({reply['extensions']}) on this box")
    return 0
