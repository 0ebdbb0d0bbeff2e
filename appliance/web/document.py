"""The status documents: this box's own summary (`/api/local`) and the overlay's
(`/api/status`, which the page, the metrics and `meshsip status` all render).

`/api/status` is the node's control-socket status (registrations, calls, counters,
overlay) with the overlay-wide view added: `box`, `boxes` (this one and every other the
survey knows), `directory` (every phone on every answering box), `live_calls`,
`problems` and `enrolment` (the phones' onboarding QR code, once that exists).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from .problems import LocalFacts, find_problems
from .survey import BoxView, Phone


def meshsip_version() -> str:
    try:
        return version("meshsip")
    except PackageNotFoundError:
        return "unknown"


@dataclass
class ThisBox:
    """This box as the documents show it (filled by the node at each request)."""
    name: str
    node_id: str
    address: str
    overlay: str
    mode: str  # "open" or "ca"
    policy: str  # phones: "open" or "digest"
    uptime_seconds: int
    web_port: int
    phones: list[Phone]
    calls: list[dict[str, Any]]
    ring_members: int
    joining: bool


def local_summary(me: ThisBox) -> dict[str, Any]:
    """`/api/local`: what the other boxes' pages show of this one."""
    return {
        "name": me.name, "node_id": me.node_id, "address": me.address, "overlay": me.overlay,
        "mode": me.mode, "version": meshsip_version(), "uptime_seconds": me.uptime_seconds,
        "wall_clock": time.time(), "calls": me.calls,
        "phones": [{"extension": p.extension, "name": p.name} for p in me.phones],
    }


def _box_entry(box: BoxView, now: float) -> dict[str, Any]:
    return {
        "name": box.name, "node_id": box.node_id, "address": box.address, "this": False,
        "answering": box.answering,
        "silent_seconds": None if box.answering else int(box.silent_for(now)),
        "phones": len(box.phones), "uptime_seconds": box.uptime_seconds,
        "version": box.version, "calls": len(box.calls), "in_ring": box.in_ring,
        "clock_offset_seconds": None if box.clock_offset is None else round(box.clock_offset, 1),
    }


def _phone_entry(phone: Phone, box: str, box_id: str) -> dict[str, str]:
    return {"extension": phone.extension, "name": phone.name, "box": box, "box_id": box_id}


def overview(me: ThisBox, others: list[BoxView], now: float) -> dict[str, Any]:
    """The overlay-wide part of `/api/status` (`now`: monotonic)."""
    others = [b for b in others if b.node_id != me.node_id]
    this = {
        "name": me.name, "node_id": me.node_id, "address": me.address, "this": True,
        "answering": True, "silent_seconds": None, "phones": len(me.phones),
        "uptime_seconds": me.uptime_seconds, "version": meshsip_version(),
        "calls": len(me.calls), "in_ring": True, "clock_offset_seconds": 0.0,
    }
    boxes = sorted([this, *(_box_entry(b, now) for b in others)], key=lambda b: b["node_id"])
    directory = [_phone_entry(p, me.name, me.node_id) for p in me.phones]
    calls: dict[str, dict[str, Any]] = {}
    for name, box_calls in [(me.name, me.calls),
                            *((b.name, b.calls) for b in others if b.answering)]:
        for c in box_calls:  # a call between two boxes is on both: one line, two boxes
            key = c.get("call_id") or f"{name}/{len(calls)}"
            entry = calls.setdefault(key, {k: c.get(k) for k in
                                           ("caller", "callee", "state", "seconds")}
                                     | {"boxes": []})
            entry["boxes"].append(name)
    for b in others:
        if b.answering:
            directory += [_phone_entry(p, b.name, b.node_id) for p in b.phones]
    facts = LocalFacts(me.overlay, me.address, me.ring_members, me.joining)
    return {
        "box": {"name": me.name, "node_id": me.node_id, "address": me.address,
                "overlay": me.overlay, "mode": me.mode, "policy": me.policy,
                "version": meshsip_version(), "uptime_seconds": me.uptime_seconds,
                "web_port": me.web_port},
        "boxes": boxes,
        "directory": sorted(directory, key=lambda d: (d["extension"], d["box"])),
        "live_calls": list(calls.values()),
        "problems": [p.as_dict() for p in find_problems(facts, others, now)],
        "enrolment": None,  # "Phones onboard themselves" puts its QR code here
    }
