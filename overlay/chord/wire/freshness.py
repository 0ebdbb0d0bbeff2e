"""Freshness: the time-stamp window, clock following and the replay cache.

Boxes have no RTC and no common clock: the followed clock (`offset` added to the `now`
passed in) moves forward, never back, to any authentic message ahead by more than the
window, so clocks converge on the fastest box's. A (sender, nonce) seen within the
window is a replay. Rules: docs/overlay-wire-format.md, "Freshness and replay".
"""

from __future__ import annotations

from collections import OrderedDict

from .. import messages as m
from .signature import Signature
from .values import WireError


class Freshness:
    """One codec's clock offset and nonce cache. `window` (seconds) bounds time-stamp
    skew and how long nonces are remembered; `capacity` bounds the cache (when it is
    full the oldest entries go and `counters["replay_cache_full"]` counts them)."""

    def __init__(
        self, window: float, capacity: int, follow_clock: bool, counters: dict[str, int],
    ) -> None:
        self.window_ms = int(window * 1000)
        self.capacity = capacity
        self.follow_clock = follow_clock
        self.offset = 0.0  # seconds added to `now`
        self.counters = counters
        self.seen: OrderedDict[bytes, int] = OrderedDict()  # (id, nonce) -> expiry, ms

    def clock(self, now: float) -> float:
        """The followed clock (Unix seconds) at `now`."""
        return now + self.offset

    def stamp(self, now: float) -> int:
        """The time stamp (Unix ms) of a message sent at `now`."""
        return int((now + self.offset) * 1000)

    def check_time(
        self, src: int, sig: Signature, now: float, message: m.Message,
    ) -> None:
        """Refuse (`stale`) an authentic message whose time stamp is out of the window;
        one ahead moves the clock forward (and its nonce is remembered: sent again it is
        in the window, and may be an old message replayed)."""
        now_ms = self.stamp(now)
        ts_ms = int(sig.ts)
        skew = ts_ms - now_ms
        if abs(skew) <= self.window_ms:
            return
        if skew > 0 and self.follow_clock:
            self.offset += skew / 1000
            self.counters["clock_adjusted"] += 1
            self._see(_key(src, sig), ts_ms, ts_ms)
        raise WireError("stale", f"time stamp {skew / 1000:+.1f} s off", message, skew / 1000)

    def check_replay(
        self, src: int, sig: Signature, now: float, message: m.Message,
    ) -> None:
        """Refuse (`replay`) a nonce of this sender seen within the window; else keep it.
        Only for fully verified messages."""
        now_ms = self.stamp(now)
        key = _key(src, sig)
        self._expire(now_ms)
        if key in self.seen:
            raise WireError("replay", "nonce seen before", message)
        self._see(key, int(sig.ts), now_ms)

    def _see(self, key: bytes, ts_ms: int, now_ms: int) -> None:
        self._expire(now_ms)
        self.seen[key] = ts_ms + self.window_ms
        if len(self.seen) > self.capacity:
            self.seen.popitem(last=False)
            self.counters["replay_cache_full"] += 1

    def _expire(self, now_ms: int) -> None:
        seen = self.seen
        while seen:
            key, expiry = next(iter(seen.items()))
            if expiry >= now_ms:
                break
            del seen[key]


def _key(src: int, sig: Signature) -> bytes:
    return src.to_bytes(16, "big") + bytes.fromhex(sig.nonce)
