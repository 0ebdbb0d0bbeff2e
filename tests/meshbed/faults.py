"""The faults a bed's hub applies, and how they are written down for nftables or the delay hub.

One `Faults` value is the whole truth about the links; the bed re-renders it after each
change and applies it in one step (an atomic nftables transaction, or one command to the
user-space hub), so no half-applied state is ever visible to the nodes.

Links are directed: pair (i, j) is the frames node i sends towards node j. A cut of "the
link between i and j" is the two pairs (i, j) and (j, i).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

Pair = tuple[int, int]

NFT_TABLE = "meshbed"
LOSS_RESOLUTION = 10_000  # loss percentages are applied in steps of 0.01 %


def all_pairs(n: int) -> list[Pair]:
    return [(i, j) for i in range(n) for j in range(n) if i != j]


def both_ways(pairs: Iterable[Pair]) -> set[Pair]:
    return {p for i, j in pairs for p in ((i, j), (j, i))}


@dataclass
class Faults:
    cut: set[Pair] = field(default_factory=set)
    loss: dict[Pair, float] = field(default_factory=dict)  # percent, 0 < loss <= 100
    delay: dict[Pair, tuple[float, float]] = field(default_factory=dict)  # (ms, jitter ms)

    def delayed(self) -> bool:
        """Whether some link has delay or jitter (only the user-space hub can do that)."""
        return any(ms > 0 or jitter > 0 for ms, jitter in self.delay.values())

    def set_loss(self, percent: float, pairs: Iterable[Pair]) -> None:
        if not 0 <= percent <= 100:
            raise ValueError(f"loss must be between 0 and 100 %, not {percent}")
        for pair in pairs:
            if percent > 0:
                self.loss[pair] = float(percent)
            else:
                self.loss.pop(pair, None)

    def set_delay(self, ms: float, jitter_ms: float, pairs: Iterable[Pair]) -> None:
        if ms < 0 or jitter_ms < 0:
            raise ValueError(f"delay and jitter must be >= 0 ms, not {ms} / {jitter_ms}")
        for pair in pairs:
            if ms > 0 or jitter_ms > 0:
                self.delay[pair] = (float(ms), float(jitter_ms))
            else:
                self.delay.pop(pair, None)


def render_nft(faults: Faults, port: dict[int, str], table: str = NFT_TABLE) -> str:
    """An `nft -f` script that replaces the hub's bridge table with one enforcing cuts and loss.

    Cuts are a set of (iifname . oifname) looked up in the bridge forward hook; loss is a
    verdict map from the pair to a chain `numgen random mod 10000 < N drop`, one chain per
    distinct percentage (one lookup per frame, however many links are lossy). The forward
    hook runs once per output port, flooded frames included, so a cut or a lossy link acts on
    broadcasts and multicast (mDNS) too.
    """
    def pair(p: Pair) -> str:
        return f'"{port[p[0]]}" . "{port[p[1]]}"'

    lines = [f"table bridge {table}", f"delete table bridge {table}", f"table bridge {table} {{"]
    chains: dict[int, str] = {}
    for percent in sorted(set(faults.loss.values())):
        n = round(percent * LOSS_RESOLUTION / 100)
        chains[n] = f"loss_{n}"
        verdict = "drop" if n >= LOSS_RESOLUTION else (
            f"numgen random mod {LOSS_RESOLUTION} < {n} drop")
        lines.append(f"  chain loss_{n} {{ {verdict}; }}")
    lines.append("  set cut { type ifname . ifname;")
    if faults.cut:
        lines.append("    elements = { " + ", ".join(pair(p) for p in sorted(faults.cut)) + " };")
    lines.append("  }")
    lines.append("  map lossy { type ifname . ifname : verdict;")
    if faults.loss:
        elements = (f"{pair(p)} : jump {chains[round(pc * LOSS_RESOLUTION / 100)]}"
                    for p, pc in sorted(faults.loss.items()))
        lines.append("    elements = { " + ", ".join(elements) + " };")
    lines.append("  }")
    lines += [
        "  chain forward { type filter hook forward priority 0; policy accept;",
        "    iifname . oifname @cut drop",
        "    iifname . oifname vmap @lossy",
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def hub_links(faults: Faults) -> list[list[object]]:
    """The links the user-space hub must treat specially (every other is a plain wire):
    [from, to, delay_ms, jitter_ms, loss_percent, cut] each."""
    pairs = sorted(faults.cut | set(faults.loss) | set(faults.delay))
    return [
        [i, j, *faults.delay.get((i, j), (0.0, 0.0)), faults.loss.get((i, j), 0.0),
         (i, j) in faults.cut]
        for i, j in pairs
    ]
