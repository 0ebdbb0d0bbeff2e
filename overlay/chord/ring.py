"""Ring geometry: clockwise distance and intervals on the 2^128 identifier circle, the
finger targets and the backoff every adaptive cadence uses. Pure functions, shared by the
node and the simulator's invariant checker (one home for "between")."""

from __future__ import annotations

from .messages import ID_SPACE

MASK = ID_SPACE - 1


def dist(a: int, b: int) -> int:
    """Clockwise distance from a to b on the ring."""
    return (b - a) & MASK


def between(x: int, a: int, b: int) -> bool:
    """x in the open interval (a, b) going clockwise; (a, a) is the ring without a."""
    if a == b:
        return x != a
    return 0 < ((x - a) & MASK) < ((b - a) & MASK)


def between_right(x: int, a: int, b: int) -> bool:
    """x in (a, b]; (a, a] is the whole ring."""
    if a == b:
        return True
    return 0 < ((x - a) & MASK) <= ((b - a) & MASK)


def backoff(base: float, cap: float, calm: int) -> float:
    """`base` for the first two rounds after a change, then doubling up to `cap`."""
    return min(max(cap, base), base * 2.0 ** min(max(0, calm - 1), 30))


_TARGET_CACHE: dict[int, list[int]] = {}


def finger_targets(base: int) -> list[int]:
    """Sorted clockwise distances j*b^i (j = 1..b-1) below 2^128."""
    if base not in _TARGET_CACHE:
        out = []
        step = 1
        while step < ID_SPACE:
            for j in range(1, base):
                if j * step < ID_SPACE:
                    out.append(j * step)
            step *= base
        _TARGET_CACHE[base] = sorted(set(out))
    return _TARGET_CACHE[base]
