"""The one rule for an overlay name, shared by the config, discovery and the wire codec.

The name travels as a SIP URI parameter and a DHT-NodeID header parameter
(`overlay=<name>`, chord/wire/) and in the mDNS TXT record (`overlay=<name>`,
discovery): characters that are safe in all three without quoting or escaping, and short
enough for every header. ASCII only: `str.isalnum` would let "café" through, which the
wire cannot carry.
"""

from __future__ import annotations

import re

MAX_LENGTH = 64
# A leading letter or digit: "-x" would read as an option on the command line.
_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_LENGTH - 1}}}")
RULE = (f"1 to {MAX_LENGTH} ASCII letters, digits, '-', '_' or '.', "
        "starting with a letter or digit")


def check_overlay_name(name: str) -> str:
    """Return `name` when it is a valid overlay name; else raise ValueError saying why."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"overlay name {name!r} must be {RULE}")
    return name
