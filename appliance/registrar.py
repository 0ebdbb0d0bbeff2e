"""The registrar and location service (RFC 3261 section 10), sans-IO.

An extension (the user part of the To URI) names one phone across the node,
whatever domain the phone put after the @. Each extension may have several
contacts (forking). In open mode the first phone to bind an extension keeps it
while its binding lives: REGISTERs for it from another IP address get 403.

Bindings are kept across a restart (`save`, `load`) with no wall clock in the rule: a
binding is saved as the seconds it had left, with the kernel's boot id and the boot
clock (CLOCK_BOOTTIME: it counts from power-on, through suspend, and no one sets it).
After a restart within the same boot (the service restarted or crashed) the downtime
is known exactly. After a reboot it is not: it is counted as at least this boot's
uptime plus `REBOOT_MARGIN` (a power cut and a boot), or the wall clock's elapsed time
if that says more (a clock that jumped can only make us drop more, never keep more).
A binding with less left than that is dropped (the phone re-registers when it finds
the box again); a longer one is kept for what is left after it. So a restarted box
does not fork to a phone whose registration ran out, unless a reboot came after more
than `REBOOT_MARGIN` off with a wall clock behind; and it keeps the long-lived bindings
of a box that only blinked.
"""

from __future__ import annotations

import heapq
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from overlay.sip.errors import SipParseError
from overlay.sip.message import Request, Response, parse_delta
from overlay.sip.responses import make_response
from overlay.sip.routing import Address, new_tag
from overlay.sip.uri import NameAddr, parse_name_addr

from .claims import CLAIMS_MAX, IN_USE, PendingClaim, StartClaim, instance_hash

log = logging.getLogger("meshsip.registrar")

# Returns a response (401 challenge, 403) to refuse the request, or None to accept it.
AuthCheck = Callable[[Request, float], Response | None]
REBOOT_MARGIN = 120.0  # seconds a box is assumed off before a boot (see the module doc)
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
NAME_MAX = 64  # characters kept of a phone's display name


@dataclass(frozen=True)
class Clocks:
    """The clocks a save or a load is made at: `now` (monotonic, this process), the boot
    (`boot_id`, `uptime` on CLOCK_BOOTTIME) and the wall clock (a hint, see the module
    doc). `Clocks.read(now)` reads the real ones; tests make their own."""

    now: float
    boot_id: str
    uptime: float
    wall: float

    @classmethod
    def read(cls, now: float) -> Clocks:
        try:
            boot_id = BOOT_ID.read_text().strip()
        except OSError:
            boot_id = ""  # unknown: every restart counts as a reboot
        return cls(now, boot_id, time.clock_gettime(time.CLOCK_BOOTTIME), time.time())


@dataclass
class Binding:
    extension: str
    contact: str  # the Contact URI, as the phone sent it
    expires_at: float
    call_id: str
    cseq: int
    source: Address  # where the REGISTER came from: TCP phones are reached on this flow
    q: str | None = None
    name: str = ""  # the phone's display name (printable, bounded; "" when it sent none)
    # What the refresh lane read from the REGISTER that made it (refresh.py): the same
    # texts again need no second reading. Not saved.
    memo: Any = field(default=None, compare=False, repr=False)

    def contact_uri(self) -> NameAddr:
        return parse_name_addr(f"<{self.contact}>")

    def seconds_left(self, now: float) -> int:
        """What a 200 to a REGISTER says of this binding (its Contact's expires)."""
        return max(0, int(self.expires_at - now))


@dataclass(frozen=True)
class BindingCaps:
    """How many bindings the table holds in all (over it: 503 with Retry-After), per
    source IP but `exempt` ones (over it: that source's oldest bindings go) and per
    extension (over it: 403); how many extensions it remembers as once seen."""

    total: int = 60_000
    per_source: int = 1000
    per_extension: int = 10
    known: int = 100_000
    exempt: frozenset[str] = frozenset()
    retry_after: int = 5


class Location:
    """Bindings by extension, with the registration rules applied to them."""

    def __init__(
        self,
        *,
        min_expires: int = 60,
        max_expires: int = 3600,
        default_expires: int = 3600,
        open_policy: bool = True,
        auth: AuthCheck | None = None,
        caps: BindingCaps | None = None,
    ) -> None:
        self.bindings: dict[str, list[Binding]] = {}
        # Extensions seen before (480 rather than 404 when away), oldest first, bounded.
        self.known: dict[str, None] = {}
        self.caps = caps or BindingCaps()
        self.count = 0  # bindings held (live or not yet swept)
        # Bindings held by source IP, oldest first: (extension, contact) -> None.
        self._by_source: dict[str, dict[tuple[str, str], None]] = {}
        self.stats = {"registrations_refused_full": 0, "bindings_evicted": 0}
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.default_expires = default_expires
        self.open_policy = open_policy
        self.auth = auth
        self.changed = False  # set on every change, cleared by whoever persists the table
        # Told when an extension gains its first live binding (True) or loses its last
        # (False): the mesh publishes which extensions this box serves.
        self.observer: Callable[[str, bool], None] | None = None
        # Plugged in by the node with its mesh: a new extension is a claim (claims.py).
        self.claims: StartClaim | None = None
        self.claiming: dict[str, PendingClaim] = {}  # bounded by CLAIMS_MAX
        # (expires_at, extension), soonest first: each extension held is due no later than
        # its first binding expires; entries of extensions gone since stay until they come
        # up (or a compaction)
        self._expiry: list[tuple[float, str]] = []

    def _notify(self, extension: str, present: bool) -> None:
        if self.observer is not None:
            self.observer(extension, present)

    def lookup(self, extension: str, now: float) -> list[Binding]:
        held = self.bindings.get(extension, ())
        bindings = [b for b in held if b.expires_at > now]
        if not bindings and held:
            del self.bindings[extension]
            self._count(held, -1)
            self._notify(extension, False)
        return bindings

    def _count(self, bindings: list[Binding], sign: int) -> None:
        by_source = self._by_source
        self.count += sign * len(bindings)
        for b in bindings:
            ip, key = b.source[1], (b.extension, b.contact)
            mine = by_source.get(ip)
            if sign > 0:
                if mine is None:
                    mine = by_source[ip] = {}
                mine[key] = None
            elif mine is not None:
                mine.pop(key, None)
                if not mine:
                    del by_source[ip]

    def expire(self, now: float) -> list[Binding]:
        """Drop the bindings that ran out by `now` (the ones due, not a sweep of all)."""
        gone = []
        due = self._expiry
        while due and due[0][0] <= now:
            ext = heapq.heappop(due)[1]
            held = self.bindings.get(ext)
            if not held:
                continue  # gone since
            live = [b for b in held if b.expires_at > now]
            if live:  # refreshed since: due again at its next expiry
                heapq.heappush(due, (min(b.expires_at for b in live), ext))
                if len(live) == len(held):
                    continue
            expired = [b for b in held if b.expires_at <= now]
            self._count(expired, -1)
            gone.extend(expired)
            if live:
                self.bindings[ext] = live
            else:
                del self.bindings[ext]
                self._notify(ext, False)
        if gone:
            self.changed = True
        return gone

    def register(self, request: Request, source: Address, now: float
                 ) -> Response | PendingClaim:
        try:
            return self._register(request, source, now)
        except SipParseError as exc:
            return make_response(request, 400, exc.reason, new_tag())

    def _register(self, request: Request, source: Address, now: float
                  ) -> Response | PendingClaim:
        tag = new_tag()
        extension = request.to_user
        if not extension:
            return make_response(request, 404, "No extension in To", tag)
        if self.auth is not None:
            refusal = self.auth(request, now)
            if refusal is not None:
                return refusal
        contacts = request.contact_views  # shared with the request: read only
        live = self.lookup(extension, now)
        if contacts:
            busy = self._busy(request, source, extension, live, tag)
            if busy is not None:
                return busy
        expires_header = request.get("Expires")
        default = (parse_delta(expires_header, "Expires") if expires_header is not None
                   else self.default_expires)
        call_id, (cseq, _) = request.call_id, request.cseq
        if None in contacts:
            if len(contacts) != 1 or default != 0:
                return make_response(request, 400, "Contact * needs Expires: 0 and no other", tag)
            if any(_out_of_order(b, call_id, cseq) for b in live):
                return make_response(request, 500, "Out of order CSeq", tag)
            self._set(extension, [])
            log.info("unregistered %s (all contacts) from %s %s:%d", extension, *source)
            return self._ok(request, extension, now, tag)
        current = {b.contact: b for b in live}
        name = display_name(request)
        for na in contacts:
            assert na is not None
            expires = default
            if "expires" in na.params:
                expires = parse_delta(na.params["expires"] or "", "Contact expires")
            if self._too_brief(expires):
                response = make_response(request, 423, None, tag)
                response.add("Min-Expires", str(self.min_expires))
                return response
            contact = str(na.uri)
            old = current.get(contact)
            if old is not None and _out_of_order(old, call_id, cseq):
                return make_response(request, 500, "Out of order CSeq", tag)
            if expires == 0:
                if current.pop(contact, None) is not None:
                    log.info("unregistered %s at %s", extension, contact)
                continue
            expires = min(expires, self.max_expires)
            current[contact] = Binding(extension, contact, now + expires, call_id, cseq, source,
                                       na.params.get("q"), name)
            if old is None:
                log.info("registered %s at %s for %ds from %s %s:%d",
                         extension, contact, expires, *source)
        if contacts:
            bindings = list(current.values())
            refusal = self._over_caps(request, extension, bindings, source[1], tag)
            if refusal is not None:
                return refusal
            if current and not live and self.claims is not None:
                return self._claim(request, source, extension, bindings, tag)
            self._set(extension, bindings)
        return self._ok(request, extension, now, tag)

    def refresh(self, extension: str, contact: str, source: Address, call_id: str, cseq: int,
                expires: int, q: str | None, name: str, now: float, memo: Any = None
                ) -> Binding | None:
        """A plain refresh, as the refresh lane (refresh.py) reads it from a REGISTER with
        one Contact and no credentials: done, and its binding returned, when `_register`
        would bind the same way (the extension's only binding, the same contact from the
        same address, live, in order, no claim under way, no password asked); otherwise
        None and nothing changed: the full path decides."""
        held = self.bindings.get(extension)
        if self.auth is not None or not held or len(held) != 1 or extension in self.claiming:
            return None
        old = held[0]
        if (old.contact != contact or old.source[1] != source[1] or old.expires_at <= now
                or _out_of_order(old, call_id, cseq) or expires == 0
                or self._too_brief(expires)):
            return None
        # changed in place: a new object a refresh would be one more for the garbage
        # collector to go through, thousands a second
        before = old.expires_at
        old.expires_at = now + min(expires, self.max_expires)
        old.call_id, old.cseq, old.source, old.q, old.name, old.memo = (
            call_id, cseq, source, q, name, memo)
        self._refreshed(extension, old, before)
        return old

    def _too_brief(self, expires: int) -> bool:
        """Asked for less than min_expires (0 unregisters): 423 Interval Too Brief."""
        return 0 < expires < self.min_expires

    def _busy(self, request: Request, source: Address, extension: str, live: list[Binding],
              tag: str) -> Response | None:
        """Open mode: another phone holds the extension here (403); a claim on it is
        under way (403 for another phone, 500 with Retry-After for the same one)."""
        claiming = self.claiming.get(extension)
        holder = live[0].source[1] if live else claiming.source[1] if claiming else None
        if self.open_policy and holder is not None and holder != source[1]:
            log.warning("refused REGISTER for %s from %s: bound to a phone at %s",
                        extension, source[1], holder)
            return make_response(request, 403, f"Extension {extension} is in use", tag)
        if claiming is not None:
            response = make_response(request, 500, "Registration in progress", tag)
            response.add("Retry-After", "1")
            return response
        return None

    def _claim(self, request: Request, source: Address, extension: str,
               bindings: list[Binding], tag: str) -> Response | PendingClaim:
        """A first binding of `extension` here: the mesh decides (claims.py)."""
        if len(self.claiming) >= CLAIMS_MAX:
            response = make_response(request, 503, "Too many registrations in progress", tag)
            response.add("Retry-After", "1")
            return response
        pending = PendingClaim(extension, bindings, request, source, tag,
                               instance_hash(request.contact_views), self.auth is not None)
        self.claiming[extension] = pending
        return pending

    def settle(self, pending: PendingClaim, outcome: str, now: float) -> Response:
        """The mesh answered a claim: bind (accepted, or no storing node reached) or 403."""
        pending.answered = True
        if self.claiming.get(pending.extension) is pending:
            del self.claiming[pending.extension]
        extension, request = pending.extension, pending.request
        if outcome == IN_USE:
            log.warning("refused REGISTER for %s from %s: in use on another box",
                        extension, pending.source[1])
            return make_response(request, 403, f"Extension {extension} is in use on another box",
                                 pending.tag)
        live = [b for b in pending.bindings if b.expires_at > now]
        self._set(extension, self.lookup(extension, now) + live)
        return self._ok(request, extension, now, pending.tag)

    def drop(self, extension: str) -> None:
        """The mesh gave `extension` to another box: its phones here lose it."""
        if self.bindings.get(extension):
            log.warning("%s is registered on another box now: dropped here", extension)
            self._set(extension, [])

    def _over_caps(self, request: Request, extension: str, bindings: list[Binding],
                   ip: str, tag: str) -> Response | None:
        """A refusal when the new bindings of `extension` would pass a cap (BindingCaps)."""
        caps, held = self.caps, self.bindings.get(extension, ())
        if len(bindings) > caps.per_extension:
            return make_response(request, 403, "Too many contacts", tag)
        grows = len(bindings) - len(held)
        if grows > 0 and self.count + grows > caps.total:
            return self._full(request, "Registrations full", tag)
        if ip not in caps.exempt and not _same_sources(held, bindings):
            more = sum(b.source[1] == ip for b in bindings) - sum(b.source[1] == ip for b in held)
            if more > 0:
                self._make_room(ip, more, extension)
        return None

    def _make_room(self, ip: str, more: int, extension: str) -> None:
        """Over its cap, a source's oldest bindings go (of other extensions): one address
        cannot fill the table, and once it stops flooding a phone there is served again."""
        mine = self._by_source.get(ip, {})
        over = len(mine) + more - self.caps.per_source
        oldest = islice((k for k in mine if k[0] != extension), max(over, 0))
        for ext, contact in list(oldest):
            held = self.bindings.get(ext, [])
            gone = [b for b in held if b.contact == contact and b.source[1] == ip]
            self._set(ext, [b for b in held if b not in gone])
            self.stats["bindings_evicted"] += 1

    def _full(self, request: Request, reason: str, tag: str) -> Response:
        self.stats["registrations_refused_full"] += 1  # not logged: floods come this way
        response = make_response(request, 503, reason, tag)
        response.add("Retry-After", str(self.caps.retry_after))
        return response

    def _set(self, extension: str, bindings: list[Binding]) -> None:
        self.changed = True
        held = self.bindings.get(extension)
        if held and _same_sources(held, bindings):
            self.bindings[extension] = bindings
            self._refreshed(extension, bindings[0], held[0].expires_at)
            return
        if held:
            self._count(held, -1)
        if bindings:
            self.bindings[extension] = bindings
            self._expiring(extension, bindings)
            self._count(bindings, 1)
            self._remember(extension)
        else:
            self.bindings.pop(extension, None)
        if bool(held) != bool(bindings):
            self._notify(extension, bool(bindings))

    def _refreshed(self, extension: str, binding: Binding, before: float) -> None:
        """`binding` is now the extension's only one, of the same contact from the same
        address as the one that was to expire at `before`: the counts stay, and it moves
        to the end of its source's bindings (the most recently registered: the last to
        go). The extension's entry in _expiry still comes up in time unless it now
        expires sooner."""
        self.changed = True
        if binding.expires_at < before:
            self._expiring(extension, [binding])
        mine = self._by_source[binding.source[1]]
        key = (extension, binding.contact)
        del mine[key]
        mine[key] = None
        self._remember(extension)

    def _expiring(self, extension: str, bindings: list[Binding]) -> None:
        """Bindings set for `extension`: it is due at the first of their expiries."""
        due = self._expiry
        heapq.heappush(due, (min(b.expires_at for b in bindings), extension))
        if len(due) > 2 * len(self.bindings) + 1024:  # mostly stale entries: one each
            due[:] = [(min(b.expires_at for b in bs), ext) for ext, bs in self.bindings.items()]
            heapq.heapify(due)

    def _remember(self, extension: str) -> None:
        known = self.known
        if extension not in known:
            known[extension] = None
            if len(known) > self.caps.known:
                del known[next(iter(known))]

    def _ok(self, request: Request, extension: str, now: float, tag: str) -> Response:
        response = make_response(request, 200, None, tag)
        for b in self.lookup(extension, now):
            response.add("Contact", f"<{b.contact}>;expires={b.seconds_left(now)}")
        return response

    # Persistence: a restarted box keeps its phones until they next re-register (see the
    # module doc for how the time left is counted).
    def save(self, path: Path, clocks: Clocks) -> None:
        # vars() rather than asdict(): the same row, without asdict's deep copy (which took
        # 10 us a binding, with the event loop stopped meanwhile).
        rows = []
        for bs in self.bindings.values():
            for b in bs:
                row = vars(b) | {"expires_in": b.expires_at - clocks.now}
                del row["expires_at"], row["memo"]
                rows.append(row)
        saved = {"boot_id": clocks.boot_id, "uptime": clocks.uptime, "wall": clocks.wall}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"bindings": rows, "known": sorted(self.known),
                                   "saved": saved}))
        tmp.replace(path)
        self.changed = False

    @staticmethod
    def downtime(saved: dict, clocks: Clocks) -> float:
        """Seconds since the save, counted high when not known (see the module doc)."""
        same_boot = bool(clocks.boot_id) and saved["boot_id"] == clocks.boot_id
        if same_boot and clocks.uptime >= saved["uptime"]:
            return clocks.uptime - float(saved["uptime"])
        return max(clocks.uptime + REBOOT_MARGIN, clocks.wall - float(saved["wall"]))

    def load(self, path: Path, clocks: Clocks) -> int:
        now = clocks.now
        try:
            data = json.loads(path.read_text())
            rows = data["bindings"]
            down = self.downtime(data["saved"], clocks)
            for extension in data.get("known", []):
                self._remember(str(extension))
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable bindings file %s: %s", path, exc)
            return 0
        count = 0
        for row in rows:
            try:
                row["source"] = tuple(row["source"])
                row["expires_at"] = now + float(row.pop("expires_in")) - down
                binding = Binding(**row)
            except (KeyError, TypeError) as exc:
                log.warning("skipping a bad binding in %s: %s", path, exc)
                continue
            if binding.expires_at > now:
                if binding.extension not in self.bindings:
                    self._notify(binding.extension, True)
                self.bindings.setdefault(binding.extension, []).append(binding)
                self._expiring(binding.extension, [binding])
                self._count([binding], 1)
                count += 1
        return count


def display_name(request: Request) -> str:
    """The REGISTER's display name (To's, else From's), see `printable_name`."""
    return printable_name(request._to_view().display or request._from_view().display or "")


def printable_name(text: str) -> str:
    """A phone's display name as kept: printable characters only (no control characters
    for a terminal to obey), at most NAME_MAX."""
    text = text[:NAME_MAX]
    return text if text.isprintable() else "".join(c for c in text if c.isprintable())


def _out_of_order(binding: Binding, call_id: str, cseq: int) -> bool:
    """RFC 3261 10.3 step 7: a REGISTER of the binding's Call-ID must raise its CSeq."""
    return binding.call_id == call_id and cseq <= binding.cseq


def _same_sources(held: list[Binding] | tuple[()], bindings: list[Binding]) -> bool:
    """One binding before and after, same contact from the same address (a refresh)."""
    if len(held) != 1 or len(bindings) != 1:
        return False
    old, new = held[0], bindings[0]
    return old.contact == new.contact and old.source[1] == new.source[1]
