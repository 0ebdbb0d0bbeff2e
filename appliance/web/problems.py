"""What is wrong, in plain words, with what to do about it.

The page, `/api/status` and `meshsip status` all show these lines; each is a sentence a
relief worker can act on without knowing what a ring or a Node-ID is.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from .survey import BoxView

CLOCK_LIMIT = 60.0  # seconds of difference worth telling (signed messages allow more)


@dataclass
class Problem:
    text: str
    action: str

    def as_dict(self) -> dict[str, str]:
        return {"text": self.text, "action": self.action}


@dataclass
class LocalFacts:
    """What this box knows of itself for the problem lines."""
    overlay: str
    address: str  # the address other boxes reach it at
    ring_members: int  # other boxes the ring knows right now
    joining: bool


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def duration(seconds: float) -> str:
    """'45 seconds', '2 minutes', '3 hours', '2 days' (the largest unit, rounded)."""
    seconds = abs(seconds)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            return plural(round(seconds / size), unit)
    return plural(int(seconds), "second")


def box_label(box: BoxView) -> str:
    name = box.name or f"{box.node_id[:8]}"
    return f"box {name} ({box.address})"


def find_problems(me: LocalFacts, boxes: list[BoxView], now: float) -> list[Problem]:
    out: list[Problem] = []
    if me.address.startswith("127.") or me.address in ("", "::1"):
        out.append(Problem("this box has no network address",
                           "plug in its cable or join it to the Wi-Fi"))
    answering = [b for b in boxes if b.answering]
    if not boxes and me.ring_members == 0:
        out.append(Problem(
            "no other box heard on any link",
            f"check the cable or Wi-Fi; every box must use the overlay name {me.overlay!r}"))
    elif boxes and not answering:
        out.append(Problem("no other box answers on any link", "check the cable or Wi-Fi"))
    for box in boxes:
        if not box.answering:
            out.append(Problem(
                f"{box_label(box)} has not answered for {duration(box.silent_for(now))}",
                "check that it is switched on and on the same network; phones on it cannot "
                "be called until it answers"))
    if me.joining:
        out.append(Problem("this box is still joining the other boxes",
                           "wait a few seconds; if it lasts, check the cable or Wi-Fi"))
    out += _clock_problems(answering)
    return out


def _clock_problems(answering: list[BoxView]) -> list[Problem]:
    timed = [b for b in answering if b.clock_offset is not None]
    action = ("calls work regardless; set the date on the box that is wrong "
              "(a Raspberry Pi has no clock of its own) so logs show the right time")
    if len(timed) == 1:  # two boxes: no telling which one is right
        box, offset = timed[0], timed[0].clock_offset or 0.0
        if abs(offset) <= CLOCK_LIMIT:
            return []
        return [Problem(f"the clocks of this box and {box_label(box)} differ by "
                        f"{duration(offset)}", action)]
    # the boxes' common time: the median of every clock, this box's included
    middle = statistics.median_low([0.0, *(b.clock_offset or 0.0 for b in timed)])
    out = []
    if abs(middle) > CLOCK_LIMIT:
        out.append(Problem(f"the clock of this box differs by {duration(middle)} from the "
                           "other boxes", action))
    for box in timed:
        if abs((box.clock_offset or 0.0) - middle) > CLOCK_LIMIT:
            out.append(Problem(f"the clock of {box_label(box)} differs by "
                               f"{duration((box.clock_offset or 0.0) - middle)} from the "
                               "other boxes", action))
    return out
