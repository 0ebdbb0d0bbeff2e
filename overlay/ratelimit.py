"""Per-source token buckets in a bounded table: how much one address may send us.

Each source (an IP address) has a bucket of `burst` tokens refilled at `rate` a second;
a message takes one token, and a message that finds the bucket empty is refused (the
caller drops it and counts it). The table holds at most `max_sources` buckets, least
recently used first out: an evicted source comes back with a full bucket, which only
gives away `burst` messages per eviction. Times are the caller's monotonic `now`.
"""

from __future__ import annotations

from collections import OrderedDict


class SourceLimiter:
    __slots__ = ("rate", "burst", "max_sources", "exempt", "_buckets", "refused")

    def __init__(self, rate: float, burst: float, max_sources: int = 4096,
                 exempt: frozenset[str] = frozenset()) -> None:
        if rate <= 0 or burst < 1 or max_sources < 1:
            raise ValueError("rate > 0, burst >= 1 and max_sources >= 1 needed")
        self.rate, self.burst, self.max_sources = rate, burst, max_sources
        self.exempt = exempt  # sources never limited (the box's own loopback)
        # source -> [tokens, time of the last refill]
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()
        self.refused = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, source: str, now: float) -> bool:
        """Take a token for one message from `source`; False when it has none left."""
        buckets = self._buckets
        bucket = buckets.get(source)
        if bucket is None:
            if source in self.exempt:
                return True
            if len(buckets) >= self.max_sources:
                buckets.popitem(last=False)
            buckets[source] = [self.burst - 1, now]
            return True
        buckets.move_to_end(source)
        tokens = bucket[0] + (now - bucket[1]) * self.rate
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = min(tokens, self.burst) - 1.0
            return True
        bucket[0] = tokens
        self.refused += 1
        return False
