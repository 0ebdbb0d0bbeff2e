"""The overlay on a real box: the sans-IO ChordNode driven over the node's SIP transport.

Overlay messages are SIP and share the node's port with the phones: the node hands
every message that carries a DHT-NodeID header to `OverlayService.receive`. Messages
are signed and checked by the wire codec; anything it refuses is counted and dropped.
Over streams boxes speak TLS only ("MTLS", overlay/link_tls.py): a message on a plain
TCP connection is dropped, and one on a link whose TLS peer is another Node-ID than the
message's sender too (`counters["link_refused"]`).
The service turns the Chord node's request ids into awaitables for the appliance.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .chord import node as chord
from .chord.messages import NodeRef, Ping, Pong, Record
from .chord.records import SequenceCounter, resource_key
from .chord.wire import WireCodec
from .identity import NodeIdentity
from .ratelimit import SourceLimiter
from .revocation import Crl, Revocations
from .sip.transaction import Address
from .wakeup import Wakeup

log = logging.getLogger("meshsip.overlay")
UDP_LIMIT = 1300  # larger messages go over TLS: UDP fragments get lost on lossy links
STREAM = "MTLS"  # the transport of box links (overlay/sip/tls.py)
RECORD_LIFETIME = 300  # seconds; the owner refreshes while the phone stays registered
CLAIM_WAIT = 4.0  # seconds a claim waits for the storing node before the box binds anyway
SEED_RETRY = 10.0
REJECTIONS_LOGGED_EVERY = 10.0  # seconds between two "rejected a record" lines at most
SEQUENCE_BLOCK = 10_000  # record sequences reserved per write of the sequence file

Send = Callable[[bytes, Address], None]


@dataclass
class OverlaySettings:
    name: str = "meshsip"
    transport: str = "auto"  # "auto": UDP, TLS for messages too big for one datagram; "tcp": TLS
    chord: chord.ChordConfig = field(default_factory=chord.ChordConfig)
    # Messages a second from one source IP (and a burst), far above what a ring forming or
    # churning sends; more is dropped unread (counted in "rate_limited").
    source_rate: float = 500.0
    source_burst: float = 2000.0
    sources_tracked: int = 4096
    exempt: frozenset[str] = frozenset()


class OverlayService:
    def __init__(self, identity: NodeIdentity, settings: OverlaySettings, send: Send,
                 host: str, port: int, sequences: SequenceCounter | None = None,
                 revocations: Revocations | None = None) -> None:
        self.identity = identity
        self.settings = settings
        self.send = send
        self.ref = NodeRef(identity.node_id, host, port)
        settings.chord.overlay = settings.name
        settings.chord.contact_is_owner = True  # records name their box (claims.py)
        self.codec = WireCodec(identity, settings.name, revocations=revocations)
        self.revocations = self.codec.revocations
        self.node = chord.ChordNode(self.ref, identity.record_signer,
                                    config=settings.chord, now=self._now(),
                                    sequences=sequences)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._seed_txns: dict[int, tuple[str, int]] = {}
        self._wakeup = Wakeup(self._on_timer)
        self._rejections_quiet_until = 0.0
        self._rejections_unsaid = 0
        self._seeds: set[tuple[str, int]] = set()
        self._seed_task: asyncio.Task[None] | None = None
        # ("republished", own records stored again after a death, is in node.stats)
        self.counters = {"received": 0, "sent": 0, "refused": 0, "link_refused": 0,
                         "not_sent_revoked": 0, "rate_limited": 0}
        self.limiter = SourceLimiter(settings.source_rate, settings.source_burst,
                                     settings.sources_tracked, settings.exempt)
        # Told the ring neighbours whenever they change (peer exchange: the box remembers
        # them for its next start, where multicast may be eaten).
        self.on_neighbors: Callable[[list[NodeRef]], None] | None = None
        # Told the AOR of a claim a storing node refused later (another box has it now).
        self.on_lost: Callable[[str], None] | None = None

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        self._seed_task = asyncio.get_running_loop().create_task(self._contact_seeds())
        self._pump()

    async def stop(self) -> None:
        if self._seed_task is not None:
            self._seed_task.cancel()
        if self.node.successors:
            self.node.leave(self._now())
            self._pump()
            await asyncio.sleep(0.2)  # let the hand-over leave the socket
        self._wakeup.cancel()
        for fut in self._waiting.values():
            fut.cancel()

    def contact(self, host: str, port: int) -> None:
        """A seed: an address without a Node-ID. A signed ping tells us who is there."""
        if (host, port) == (self.ref.host, self.ref.port):
            return
        self._seeds.add((host, port))
        if len(self._seed_txns) > 256:  # unanswered pings of a long-lonely node
            self._seed_txns.clear()
        txn = 1 << 40 | len(self._seed_txns) + 1
        self._seed_txns[txn] = (host, port)
        ping = Ping(src=self.ref, txn=txn, overlay=self.settings.name)
        self._transmit(self.codec.encode(ping, (host, port), time.time()), (host, port))

    async def _contact_seeds(self) -> None:
        """Seeds that were down when we started are tried again until we are on a ring."""
        while True:
            await asyncio.sleep(SEED_RETRY)
            if not self.node.successors:
                for host, port in list(self._seeds):
                    self.contact(host, port)

    def add_peer(self, ref: NodeRef) -> None:
        """Discovery or a cache names a node of this overlay."""
        self.node.learn_peer(ref, self._now())
        self._pump()

    # -- message path ---------------------------------------------------------------------
    def receive(self, data: bytes, source: Address, link_peer: object = None) -> None:
        """`link_peer`: the Node-ID the TLS link `source` authenticated (None: none)."""
        if not self.limiter.allow(source[1], self._now()):
            self.counters["rate_limited"] += 1
            return
        if source[0] not in ("UDP", STREAM):
            self.counters["link_refused"] += 1  # boxes' streams are TLS
            return
        # The codec answers what it refuses (403 Stale Date lets a box whose clock is
        # behind catch up; 428 asks a sender we hold no certificate for to send it again)
        # and sends a request again when a 428 answers it: the node sees neither.
        got = self.codec.receive(data, time.time(), self.ref, source=(source[1], source[2]))
        for out in got.send:
            if out.back:
                self.send(out.data, source)  # back where it came from (same TCP connection)
            else:
                self._transmit(out.data, out.to)
        if got.refused is not None:
            self.counters["refused"] += 1
            log.debug("refused overlay message from %s:%d: %s", source[1], source[2],
                      got.refused)
            return
        msg = got.message
        if msg is not None and link_peer is not None and msg.src.id != link_peer:
            self.counters["link_refused"] += 1  # a box speaking for another
            log.info("dropped a message from %s on the TLS link of %032x", _short(msg.src),
                     link_peer)
            return
        self.counters["received"] += 1
        if msg is None:  # handled by the codec (a 428 on which it sent the request again)
            return
        if isinstance(msg, Pong) and msg.txn in self._seed_txns:
            self._seed_txns.pop(msg.txn)
            self.add_peer(msg.src)
            return
        self.node.receive(msg, self._now())
        self._pump()

    def _transmit(self, data: bytes, dest: tuple[str, int]) -> None:
        big = len(data) > UDP_LIMIT
        transport = STREAM if big or self.settings.transport == "tcp" else "UDP"
        self.counters["sent"] += 1
        self.send(data, (transport, dest[0], dest[1]))

    def _pump(self) -> None:
        while (event := self.node.next_event()) is not None:
            self._on_event(event)
        wall = time.time()
        for dest, msg in self.node.messages_to_send():
            if self.revocations.revokes(dest.id):  # the node times it out and drops it
                self.counters["not_sent_revoked"] += 1
                continue
            try:
                data = self.codec.encode(msg, dest, wall)
            except ValueError as exc:
                log.warning("cannot encode %s for %s: %s", type(msg).__name__, dest, exc)
                continue
            self._transmit(data, (dest.host, dest.port))
        self._wakeup.at(self.node.get_timer())

    def _on_timer(self) -> None:
        self.node.handle_timer(self._now())
        self._pump()

    def _on_event(self, event: chord.Event) -> None:
        request_id = getattr(event, "request_id", None)
        if request_id is not None:
            fut = self._waiting.pop(request_id, None)
            if fut is not None and not fut.done():
                fut.set_result(event)
        elif isinstance(event, chord.Joined):
            log.info("joined the overlay %r: successor %s", self.settings.name,
                     _short(event.successor))
        elif isinstance(event, chord.NeighborsChanged):
            log.debug("neighbours: predecessor %s, successors %s",
                      _short(event.predecessor), [_short(s) for s in event.successors])
            if self.on_neighbors is not None:
                self.on_neighbors([*event.successors, *filter(None, [event.predecessor])])
        elif isinstance(event, chord.ClaimLost):
            log.warning("%s is another box's now: no longer published", event.aor)
            if self.on_lost is not None:
                self.on_lost(event.aor)
        elif isinstance(event, chord.RecordRejected):
            self._log_rejection(event)

    def _log_rejection(self, event: chord.RecordRejected) -> None:
        """One line per REJECTIONS_LOGGED_EVERY seconds at most, with how many went unsaid
        (all are counted): a forging or flooding box must not fill the log (SD cards)."""
        now = self._now()
        if now < self._rejections_quiet_until:
            self._rejections_unsaid += 1
            return
        more = f" ({self._rejections_unsaid} more since the last one said)" \
            if self._rejections_unsaid else ""
        log.warning("rejected a record for %s from %s: %s%s", event.record.aor,
                    _short(event.source), event.reason, more)
        self._rejections_quiet_until = now + REJECTIONS_LOGGED_EVERY
        self._rejections_unsaid = 0

    def drop_revoked(self, crl: Crl) -> None:
        """A newer CRL: the boxes it names leave our tables, and their records go."""
        records = self.node.exclude(crl.node_ids, self._now())
        log.info("revocation list %d: %d boxes revoked, %d of their records dropped",
                 crl.number, len(crl.node_ids), records)
        self._pump()

    def _wait(self, request_id: int) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = fut
        self._pump()
        return fut

    # -- what the appliance asks of the overlay ------------------------------------------
    def publish(self, aor: str, contact: str, instance: str = "", verified: bool = False
                ) -> None:
        """Claim `aor` for `contact` (this box), until withdrawn."""
        self._put(aor, contact, instance, verified)
        self._pump()

    def _put(self, aor: str, contact: str, instance: str, verified: bool) -> int:
        record = Record(resource_key(aor), aor, self.ref.id, contact, 0, RECORD_LIFETIME,
                        instance=instance, verified=verified)
        return self.node.put(record, self._now())

    async def claim(self, aor: str, contact: str, instance: str, verified: bool) -> str:
        """Publish and wait for the storing node: "accepted", "in use" (another box's),
        or "unreached" (no answer within CLAIM_WAIT; the record keeps trying)."""
        rid = self._put(aor, contact, instance, verified)  # waited for before any pump
        try:
            event = await asyncio.wait_for(self._wait(rid), CLAIM_WAIT)
        except TimeoutError:
            self._waiting.pop(rid, None)
            return "unreached"
        if isinstance(event, chord.PutDone):
            return "accepted"
        return "in use" if event.reason == "in use" else "unreached"

    def withdraw(self, aor: str, contact: str) -> None:
        self.node.remove(resource_key(aor), aor, contact, self._now())
        self._pump()

    async def find(self, aor: str, timeout: float = 5.0) -> list[Record]:
        """Live records of `aor` anywhere in the overlay (empty when there are none)."""
        rid = self.node.get(resource_key(aor), self._now())
        try:
            event = await asyncio.wait_for(self._wait(rid), timeout)
        except TimeoutError:
            return []
        if isinstance(event, chord.GetDone):
            return [r for r in event.records if r.aor == aor and r.lifetime > 0
                    and not self.revocations.revokes(r.owner)]  # stale copies elsewhere
        return []

    def status(self) -> dict[str, Any]:
        n = self.node
        return {
            "overlay": self.settings.name,
            "node_id": f"{self.ref.id:032x}",
            "address": f"{self.ref.host}:{self.ref.port}",
            "mode": self.identity.mode,
            "crl_number": self.revocations.number,
            "predecessor": _short(n.predecessor),
            "successors": [_short(s) for s in n.successors],
            "ring_complete": n.ring_complete,
            "joining": n.joining,
            "estimated_size": round(n.estimated_size(), 1),
            "records_stored": len(n.store.all()),
            "counters": self.counters | n.stats | dict(self.codec.counters),
        }


def persisted_sequences(path: Path) -> SequenceCounter:
    """The box's record sequence counter, kept in `path` across restarts (see
    `SequenceCounter`): the file holds a bound above every sequence handed out, written
    atomically (a torn write must not leave a smaller number)."""
    try:
        start = int(path.read_text())
    except FileNotFoundError:
        start = 0
    except (OSError, ValueError) as exc:
        # a lost counter heals: the first copy of an old record seen on the ring lifts it
        log.warning("unreadable sequence file %s (%s): starting from 0", path, exc)
        start = 0

    def reserve(bound: int) -> None:
        tmp = path.with_suffix(".tmp")
        try:
            with open(tmp, "w") as f:
                f.write(str(bound))
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(path)
        except OSError as exc:  # a full or read-only card must not stop publishing
            log.error("cannot save the sequence counter to %s: %s", path, exc.strerror)

    return SequenceCounter(max(start, 0), SEQUENCE_BLOCK, reserve)


def _short(ref: NodeRef | None) -> str | None:
    return None if ref is None else f"{ref.id:032x}@{ref.host}:{ref.port}"
