"""The overlay service (the Chord node on a box's event loop), with boxes wired in-process."""

from __future__ import annotations

import asyncio

from overlay.identity import NodeIdentity
from overlay.service import OverlayService, OverlaySettings


class Wire:
    """Delivers what each service sends to the service at that address, unless cut."""

    def __init__(self) -> None:
        self.services: dict[tuple[str, int], OverlayService] = {}
        self.down: set[tuple[str, int]] = set()

    def add(self, host: str, port: int) -> OverlayService:
        def send(data: bytes, dest: tuple[str, str, int]) -> None:
            to = (dest[1], dest[2])
            if to in self.services and to not in self.down and (host, port) not in self.down:
                asyncio.get_running_loop().call_soon(self.services[to].receive, data,
                                                      ("UDP", host, port))

        service = OverlayService(NodeIdentity.generate(), OverlaySettings(name="t"), send,
                                 host, port)
        self.services[(host, port)] = service
        return service


async def _until(check, timeout: float) -> None:  # noqa: ANN001
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "not in time"
        await asyncio.sleep(0.05)


async def _ring_of_two(wire: Wire) -> tuple[OverlayService, OverlayService]:
    a, b = wire.add("10.0.0.1", 5060), wire.add("10.0.0.2", 5060)
    for s in (a, b):
        s.start()
    a.add_peer(b.ref)
    await _until(lambda: a.node.successors and b.node.successors, 10)
    return a, b


def test_own_records_are_stored_again_when_nodes_are_declared_dead() -> None:
    async def main() -> None:
        wire = Wire()
        a, b = await _ring_of_two(wire)
        a.publish("1001", "sip:10.0.0.1:5060")
        await asyncio.sleep(0.5)
        before = a.node.owned_records()[0].sequence
        assert a.node.stats["republished"] == 0
        wire.down.add(("10.0.0.2", 5060))  # b loses power, holding the record or a copy
        await _until(lambda: a.node.stats["republished"] > 0, 15)
        assert a.status()["counters"]["republished"] > 0
        assert a.node.owned_records()[0].sequence > before
        await _until(lambda: a.node.store.all(), 5)  # a ring of one: stored here now
        for s in (a, b):
            await s.stop()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_record_sequences_never_go_back_across_restarts(tmp_path) -> None:  # noqa: ANN001
    """The counter file holds a bound above every sequence handed out, written once per
    block (an SD card wears out), so a restart (any clock) starts above all of them."""
    from overlay.service import SEQUENCE_BLOCK, persisted_sequences

    path = tmp_path / "record-sequence"
    run = persisted_sequences(path)
    issued = [run.next() for _ in range(3)]
    assert issued == [1, 2, 3] and int(path.read_text()) == 1 + SEQUENCE_BLOCK
    written = path.stat().st_mtime_ns
    run.witness(SEQUENCE_BLOCK)  # a copy of an old version of ours seen on the ring
    assert run.next() == SEQUENCE_BLOCK + 1 and path.stat().st_mtime_ns == written
    again = persisted_sequences(path)  # restarted (the file is all it keeps)
    assert again.next() > SEQUENCE_BLOCK + 1
    path.write_text("garbage")
    assert persisted_sequences(path).next() == 1  # lost: the ring lifts it (see records.py)


def test_a_peer_that_lost_our_certificate_is_sent_the_request_again() -> None:
    """b restarts its codec (it holds no certificate of a's any more): a's next request
    is answered 428, a's codec sends it again with the certificate, and it gets through.
    a's Chord node never sees the 428."""
    from overlay.chord.messages import Error
    from overlay.chord.wire import WireCodec

    async def main() -> None:
        wire = Wire()
        a, b = await _ring_of_two(wire)
        await _until(lambda: a.codec.peer_has_certificate(b.ref.id), 10)
        seen = []
        receive = a.node.receive

        def spy(msg, now):  # noqa: ANN001, ANN202
            seen.append(msg)
            receive(msg, now)

        a.node.receive = spy  # type: ignore[method-assign]
        b.codec = WireCodec(b.identity, "t")  # b lost every certificate
        a.publish("1001", "sip:10.0.0.1:5060")
        await _until(lambda: a.codec.counters["certificate_resends"] > 0, 10)
        assert b.codec.counters["certificate_needed"] >= 1
        assert not any(isinstance(x, Error) for x in seen)
        await _until(lambda: any(r.record.aor == "1001" for r in b.node.store.all())
                     or any(r.record.aor == "1001" for r in a.node.store.all()), 10)
        assert a.node.stats["timeouts"] == 0
        for s in (a, b):
            await s.stop()

    asyncio.run(asyncio.wait_for(main(), 40))


def test_record_rejections_are_all_counted_but_said_at_most_every_ten_seconds(
        caplog) -> None:  # noqa: ANN001
    """A forging or flooding box must not fill the log: one line per window, saying how
    many went unsaid."""
    from overlay.chord.events import RecordRejected
    from overlay.chord.messages import NodeRef, Record

    async def main() -> None:
        service = Wire().add("10.0.0.1", 5060)
        rec = Record(1, "5001", 2, "sip:10.0.0.9:5060", 1, 300)
        event = RecordRejected(rec, NodeRef(2, "10.0.0.9", 5060), "bad signature")
        with caplog.at_level("WARNING", logger="meshsip.overlay"):
            for _ in range(500):
                service._on_event(event)
            service._rejections_quiet_until = 0.0  # the window is over
            service._on_event(event)
        lines = [r.getMessage() for r in caplog.records if "rejected a record" in r.message]
        assert len(lines) == 2 and "(499 more since the last one said)" in lines[1]

    asyncio.run(main())
