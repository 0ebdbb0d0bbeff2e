"""Which boxes serve an extension: ring lookups, with their answers remembered briefly.

An answer is kept `FIND_CACHE_SECONDS` when boxes were found, `Limits.negative_seconds`
when none was (a flood of calls to an extension nobody serves then asks the ring once
per that time), in a table of at most `Limits.max_cached_lookups`, oldest out. Calls for
an extension while its lookup is under way wait for that lookup rather than start one.
An extension registered here drops its "nobody" answer at once (`invalidate`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from .limits import Limits

FIND_CACHE_SECONDS = 5.0  # repeated calls to one extension skip the lookup

# extension -> SIP URIs of the other boxes that serve it (empty: none does)
Lookup = Callable[[str], Awaitable[list[str]]]


class Finder:
    def __init__(self, lookup: Lookup, limits: Limits) -> None:
        self.lookup, self.limits = lookup, limits
        self._found: dict[str, tuple[float, list[str]]] = {}  # extension -> (until, boxes)
        self._finding: dict[str, asyncio.Future[list[str]]] = {}  # lookups under way
        self.stats = {"lookups": 0, "lookups_cached": 0, "lookups_joined": 0}

    def __len__(self) -> int:
        return len(self._found)

    async def find(self, extension: str) -> list[str]:
        now = time.monotonic()
        cached = self._found.get(extension)
        if cached is not None and cached[0] > now:
            self.stats["lookups_cached"] += 1
            return cached[1]
        pending = self._finding.get(extension)
        if pending is not None:
            self.stats["lookups_joined"] += 1
            return await asyncio.shield(pending)
        self.stats["lookups"] += 1
        future = self._finding[extension] = asyncio.get_running_loop().create_future()
        try:
            boxes = await self.lookup(extension)
        except BaseException:
            future.cancel()
            raise
        finally:
            del self._finding[extension]
        future.set_result(boxes)
        self._remember(extension, boxes, now)
        return boxes

    def _remember(self, extension: str, boxes: list[str], now: float) -> None:
        found = self._found
        found.pop(extension, None)  # re-inserted last: the oldest go first
        seconds = FIND_CACHE_SECONDS if boxes else self.limits.negative_seconds
        found[extension] = (now + seconds, boxes)
        while len(found) > self.limits.max_cached_lookups:
            del found[next(iter(found))]

    def forget(self, extension: str) -> None:
        """A box it named did not answer, or the extension is now registered here."""
        self._found.pop(extension, None)

    invalidate = forget

    def clear(self) -> None:
        self._found.clear()
