"""What the other boxes say about themselves: the survey behind the status page.

Each box serves its own summary at `/api/local` (name, Node-ID, address, uptime,
version, phones with their names, calls, wall clock). The box showing the page asks
every ring member it knows (the Chord node's successors, predecessor and fingers: every
box of a ring of up to 32, where the successor list is the whole ring) over HTTP on the
same web port, with a short timeout, all at once. One survey runs at a time and its
result is kept for a few seconds, so any number of browsers cost one round of requests.
Between surveys the node notes which boxes the ring holds (no request), so a box that
dies while nobody looks is still known. A box that does not answer is shown as not
answering since it last answered or was last on the ring; it stays in the table
(bounded) after the ring has dropped it, so a dead box is seen as dead, not as gone.

Summaries are network input: only known fields of the right type and bounded size are
kept; a summary whose Node-ID is not the one the ring knows at that address is refused.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

CACHE_SECONDS = 3.0
FETCH_TIMEOUT = 1.5
MAX_ASKED = 32  # boxes asked per survey (the ring's one-hop size)
MAX_BOXES = 64  # boxes remembered
FORGET_SECONDS = 3600.0  # a silent box no longer on the ring is dropped after this
MAX_SUMMARY_BYTES = 256 * 1024
MAX_PHONES = 1000  # per box
MAX_CALLS = 200  # per box
MAX_TEXT = 64

# (node id hex, host, neighbour) of a box the ring knows; a neighbour (successor or
# predecessor) is one that stabilize keeps checking, so being one shows it alive; a finger
# may stay long after its box died (a small ring does not refresh fingers)
Member = tuple[str, str, bool]


class Phone(NamedTuple):
    """A phone in the directory: its extension and display name ("" when none)."""
    extension: str
    name: str = ""

Fetch = Callable[[str, int, str], Awaitable[dict[str, Any]]]


@dataclass
class BoxView:
    node_id: str
    address: str
    name: str = ""
    version: str = ""
    uptime_seconds: int | None = None
    phones: list[Phone] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    clock_offset: float | None = None  # its wall clock minus ours, seconds
    answering: bool = False
    in_ring: bool = True
    # monotonic: the last time it answered, or the ring held it (the ring drops a dead box
    # within a stabilisation interval)
    alive_at: float = 0.0
    error: str = ""

    def silent_for(self, now: float) -> float:
        return max(0.0, now - self.alive_at)


class Survey:
    def __init__(self, members: Callable[[], list[Member]], port: Callable[[], int],
                 fetch: Fetch | None = None) -> None:
        self.members = members
        self.port = port  # other boxes serve the web on the same port as this one
        self.fetch = fetch or fetch_json
        self.boxes: dict[str, BoxView] = {}
        self._done_at = -CACHE_SECONDS
        self._running: asyncio.Task[None] | None = None
        self.rounds = 0

    async def refresh(self) -> list[BoxView]:
        """The other boxes, surveyed at most CACHE_SECONDS ago (one survey at a time)."""
        if time.monotonic() - self._done_at >= CACHE_SECONDS:
            if self._running is None or self._running.done():
                self._running = asyncio.get_running_loop().create_task(self._survey())
            await asyncio.shield(self._running)
        return self.view()

    def view(self) -> list[BoxView]:
        return sorted(self.boxes.values(), key=lambda b: b.node_id)

    def note_members(self) -> list[BoxView]:
        """Remember the boxes the ring knows now, without asking them anything (the node
        calls this every few seconds): a box killed while nobody looked is still known,
        and its silence counted from when the ring last held it. Returns the boxes new
        to the table (the node asks each once, to learn its name while it answers)."""
        now = time.monotonic()
        new = []
        members = {node_id: (host, neighbour)
                   for node_id, host, neighbour in self.members()[:MAX_ASKED]}
        for box in self.boxes.values():
            box.in_ring = box.node_id in members
            if box.in_ring and members[box.node_id][1]:
                box.alive_at = now
        for node_id, (host, _) in members.items():
            box = self.boxes.get(node_id)
            if box is None or box.address != host:
                self.boxes[node_id] = BoxView(node_id, host, alive_at=now,
                                              name=box.name if box else "")
                new.append(self.boxes[node_id])
        self._forget(now)
        return new

    async def _survey(self) -> None:
        self.note_members()
        await self.ask(list(self.boxes.values()))
        self._done_at = time.monotonic()
        self.rounds += 1

    async def ask(self, boxes: list[BoxView]) -> None:
        """Asks these boxes for their summaries, all at once."""
        results = await asyncio.gather(*(self._ask(b) for b in boxes))
        done = time.monotonic()
        for box, (summary, sent_wall, error) in zip(boxes, results, strict=True):
            if summary is not None and summary.get("node_id") != box.node_id:
                summary, error = None, "another box answers at this address"
            if summary is None:
                box.answering, box.error = False, error
                continue
            _apply(box, summary, sent_wall)
            box.answering, box.alive_at, box.error = True, done, ""

    async def _ask(self, box: BoxView) -> tuple[dict[str, Any] | None, float, str]:
        sent = time.time()
        try:
            summary = await asyncio.wait_for(self.fetch(box.address, self.port(), "/api/local"),
                                             FETCH_TIMEOUT)
        except TimeoutError:
            return None, sent, "no answer"
        except (OSError, ValueError, RecursionError) as exc:  # RecursionError: nested JSON
            return None, sent, f"{type(exc).__name__}: {exc}"[:120]
        # its clock against ours at the middle of the round trip
        return summary, (sent + time.time()) / 2, ""

    def _forget(self, now: float) -> None:
        for node_id, box in list(self.boxes.items()):
            if not box.in_ring and not box.answering and box.silent_for(now) > FORGET_SECONDS:
                del self.boxes[node_id]
        while len(self.boxes) > MAX_BOXES:  # the longest silent outside the ring go first
            gone = max((b for b in self.boxes.values() if not b.in_ring),
                       key=lambda b: b.silent_for(now), default=None)
            if gone is None:
                break
            del self.boxes[gone.node_id]


def _text(value: Any) -> str:
    """A bounded, printable string (no control characters for a terminal to obey)."""
    if not isinstance(value, str):
        return ""
    return "".join(c for c in value[:MAX_TEXT] if c.isprintable())


def _apply(box: BoxView, summary: dict[str, Any], middle_wall: float) -> None:
    box.name = _text(summary.get("name"))
    box.version = _text(summary.get("version"))
    uptime = summary.get("uptime_seconds")
    box.uptime_seconds = uptime if isinstance(uptime, int) and uptime >= 0 else None
    phones = summary.get("phones")
    box.phones = _phones(phones[:MAX_PHONES]) if isinstance(phones, list) else []
    calls = summary.get("calls")
    box.calls = [
        {"call_id": _text(c.get("call_id")), "caller": _text(c.get("caller")),
         "callee": _text(c.get("callee")), "state": _text(c.get("state")),
         "seconds": c["seconds"] if isinstance(c.get("seconds"), int | float) else 0}
        for c in (calls[:MAX_CALLS] if isinstance(calls, list) else []) if isinstance(c, dict)
    ]
    wall = summary.get("wall_clock")
    box.clock_offset = wall - middle_wall if isinstance(wall, int | float) else None


def _phones(entries: list[Any]) -> list[Phone]:
    """{"extension", "name"} objects; a bare extension (an older box) has no name."""
    phones: dict[str, Phone] = {}
    for entry in entries:
        if isinstance(entry, dict):
            phone = Phone(_text(entry.get("extension")), _text(entry.get("name")))
        else:
            phone = Phone(_text(entry))
        if phone.extension:
            phones.setdefault(phone.extension, phone)
    return sorted(phones.values())


async def fetch_json(host: str, port: int, path: str) -> dict[str, Any]:
    """GET http://host:port/path as JSON (a JSON object, at most MAX_SUMMARY_BYTES)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n"
                     f"Accept: application/json\r\n\r\n".encode())
        await writer.drain()
        data = await reader.read(MAX_SUMMARY_BYTES + 4096)
        while len(data) <= MAX_SUMMARY_BYTES + 4096 and (chunk := await reader.read(65536)):
            data += chunk
    finally:
        writer.close()
    head, sep, body = data.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)
    if not sep or len(status) < 2 or status[1] != b"200":
        raise ValueError(f"answered {head[:40]!r}")
    if len(body) > MAX_SUMMARY_BYTES:
        raise ValueError("summary too large")
    doc = json.loads(body)
    if not isinstance(doc, dict):
        raise ValueError("summary is not a JSON object")
    return doc
