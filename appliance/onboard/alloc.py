"""Extensions for new phones, allocated through the overlay, never twice.

An allocation is a claim (appliance/claims.py, overlay/chord/claims.py) by this box on
the ring key `alloc:<extension>`, with a hash of the phone's MAC (or of its one-time
token) as the claim's proof: the storing node refuses a second phone's claim ("in use"),
and the same phone's claim from any box takes the extension back. A phone tries the
extensions of its own probe sequence (a hash of its MAC: the same on every box, so the
same phone comes back to the same number, and two boxes allocating at the same moment
seldom probe the same number; when they do, the storing node takes one). Two claims made
apart during a partition meet when it heals: the earlier (`claim`, owner Node-ID) wins,
the loser's box is told (`lost`) and re-provisions its phone. This box keeps its own
allocations in `allocations.json` and claims them again after a restart.

The password of an allocated extension is derived from the deployment's `[enroll]
secret` and the extension (`password_for`), so every box with that secret checks a
provisioned phone's digest with no record to fetch.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

from ..claims import IN_USE

log = logging.getLogger("meshsip.onboard")
ALLOC_PREFIX = "alloc:"
PROBES = 64  # numbers tried for one phone before giving up (the range is nearly full)
Claim = Callable[[str, str, bool], Awaitable[str]]  # (aor, instance, verified) -> outcome


def candidates(key: str, first: int, last: int) -> Iterator[str]:
    """The extensions phone `key` tries, in order (the same on every box)."""
    span, seen = last - first + 1, set()
    for i in range(PROBES * 4):
        digest = hashlib.sha256(f"meshsip alloc {key} {i}".encode()).digest()
        number = first + int.from_bytes(digest[:8], "big") % span
        if number not in seen:
            seen.add(number)
            yield str(number)
            if len(seen) >= min(PROBES, span):
                return


def proof(key: str) -> str:
    """The claim's proof that it is the same phone (a MAC or a token never leaves the box)."""
    return hashlib.sha256(f"meshsip phone {key}".encode()).hexdigest()[:32]


def password_for(secret: bytes, extension: str) -> str:
    mac = hmac.new(secret, f"meshsip extension {extension}".encode(), hashlib.sha256).digest()
    return base64.b32encode(mac[:10]).decode().lower()


class Allocator:
    def __init__(self, claim: Claim, path: Path, first: int, last: int) -> None:
        self._claim = claim
        self.path = path
        self.first, self.last = first, last
        self.by_key: dict[str, str] = {}  # phone (MAC or token id) -> extension; <= range size
        self.stats = {"allocated": 0, "probes_in_use": 0, "lost": 0, "exhausted": 0}
        self._lock = asyncio.Lock()  # one allocation at a time on this box

    def in_range(self, extension: str) -> bool:
        return extension.isdigit() and self.first <= int(extension) <= self.last

    def load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
            self.by_key = {str(k): str(v) for k, v in data.items() if self.in_range(str(v))}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("ignoring unreadable allocations file %s: %s", self.path, exc)

    def _save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(self.by_key, indent=1, sort_keys=True))
            tmp.replace(self.path)
        except OSError as exc:
            log.error("cannot save allocations to %s: %s", self.path, exc.strerror)

    async def restore(self) -> None:
        """Claim this box's allocations again (after a restart)."""
        for key, extension in list(self.by_key.items()):
            if await self._claim(ALLOC_PREFIX + extension, proof(key), False) == IN_USE:
                self.lost(ALLOC_PREFIX + extension)

    async def allocate(self, key: str) -> str | None:
        """The extension of phone `key`: its own again, else a free one (None: no room)."""
        async with self._lock:
            known = self.by_key.get(key)
            if known is None and len(self.by_key) > self.last - self.first:
                self.stats["exhausted"] += 1
                return None
            order = candidates(key, self.first, self.last)
            for extension in ([known] if known else []) + list(order):
                outcome = await self._claim(ALLOC_PREFIX + extension, proof(key), False)
                if outcome == IN_USE:
                    self.stats["probes_in_use"] += 1
                    continue
                if known != extension:
                    self.by_key[key] = extension
                    self.stats["allocated"] += 1
                    self._save()
                    log.info("allocated extension %s to phone %s", extension, key)
                return extension
            self.stats["exhausted"] += 1
            return None

    def lost(self, aor: str) -> str | None:
        """Another box's phone won `aor` (after a partition): the phone of ours that loses
        it, now without an extension (re-provisioned by the caller)."""
        extension = aor.removeprefix(ALLOC_PREFIX)
        for key, ext in list(self.by_key.items()):
            if ext == extension:
                del self.by_key[key]
                self.stats["lost"] += 1
                self._save()
                log.warning("extension %s went to a phone on another box: phone %s gets "
                            "another", extension, key)
                return key
        return None
