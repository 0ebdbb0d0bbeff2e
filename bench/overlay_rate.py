"""Overlay messages per second on one core: signatures on and off, over UDP and over TLS.

    .venv/bin/python bench/overlay_rate.py [--seconds 3] [--window 32]

Two boxes in one process (pinned to one core): each has a real `SipTransport` on
127.0.0.1 and a real `OverlayService` (wire codec + Chord node). Box A keeps `window`
signed Pings in flight to box B; B's Chord node answers each with a Pong. Every message is
encoded (signed), sent through the kernel, received, decoded and checked (signature,
freshness, replay) once; the figure counts Pings and Pongs. Over TLS the boxes are in CA
mode (mutual TLS 1.3, Ed25519 certificates) and each direction has its link, as between
real boxes. "Signatures off" replaces the Ed25519 sign and verify by nothing: a switch that
exists only in this script, never in the node's configuration. The figure divides by the
process's CPU time (what one core does when it does nothing else); the wall-clock rate is
printed beside it, lower on a machine busy with other work.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance.phone_tls import tls_settings  # noqa: E402
from overlay.chord.messages import Ping  # noqa: E402
from overlay.chord.wire import codec as wire_codec  # noqa: E402
from overlay.chord.wire.signature import Signature  # noqa: E402
from overlay.identity import NodeIdentity, create_ca  # noqa: E402
from overlay.service import OverlayService, OverlaySettings  # noqa: E402
from overlay.sip.transport import SipTransport  # noqa: E402

HOST = "127.0.0.1"


@contextlib.contextmanager
def signatures_off() -> Iterator[None]:
    """Bench only: sign with a constant, accept every signature."""
    real_sign, real_verifies = wire_codec.sign, Signature.verifies

    def fake_sign(sip, identity, ts_ms, nonce):  # noqa: ANN001, ANN202
        sip.headers.append(("DHT-Signature",
                            f"alg=ed25519;ts={ts_ms};nonce={nonce.hex()};sig=AAAA"))

    wire_codec.sign = fake_sign
    Signature.verifies = lambda self, sip, peer: True  # type: ignore[method-assign]
    try:
        yield
    finally:
        wire_codec.sign = real_sign
        Signature.verifies = real_verifies  # type: ignore[method-assign]


class Box:
    def __init__(self, identity: NodeIdentity, stream: bool) -> None:
        self.identity = identity
        self.transport = SipTransport(self._on_message)
        self.transport.tls = tls_settings(identity, Path("."), phones=False)
        self.service: OverlayService | None = None
        self.stream = stream
        self.on_pong = lambda: None

    async def start(self) -> None:
        await self.transport.start(HOST, 0)
        settings = OverlaySettings(name="bench", transport="tcp" if self.stream else "auto")
        self.service = OverlayService(self.identity, settings, self.transport.send, HOST,
                                      self.transport.local_port)

    def _on_message(self, data: bytes, source: tuple[str, str, int]) -> None:
        assert self.service is not None
        before = self.service.counters["received"]
        self.service.receive(data, source, self.transport.peer_of(source))
        if data.startswith(b"SIP/2.0") and self.service.counters["received"] > before:
            self.on_pong()


async def measure(stream: bool, seconds: float, window: int) -> tuple[float, float, int]:
    """(messages per CPU second, per wall-clock second, messages refused) for one run."""
    ca = create_ca()
    a, b = Box(NodeIdentity.generate(ca), stream), Box(NodeIdentity.generate(ca), stream)
    await a.start()
    await b.start()
    assert a.service is not None and b.service is not None
    dest = ("MTLS" if stream else "UDP", HOST, b.transport.local_port)
    to_b = b.service.ref
    txn = 0
    done = asyncio.get_running_loop().create_future()
    pongs = 0
    deadline = 0.0

    def ping() -> None:
        nonlocal txn
        txn += 1
        msg = Ping(src=a.service.ref, txn=txn, overlay="bench")  # type: ignore[union-attr]
        a.transport.send(a.service.codec.encode(msg, to_b, time.time()), dest)  # type: ignore[union-attr]

    def on_pong() -> None:
        nonlocal pongs
        pongs += 1
        if not deadline:  # warming up
            return
        if time.perf_counter() < deadline:
            ping()
        elif not done.done():
            done.set_result(None)

    a.on_pong = on_pong
    for _ in range(3):  # warm up: handshakes, certificates exchanged
        ping()
        await asyncio.sleep(0.3)
    pongs = 0
    start, cpu = time.perf_counter(), time.process_time()
    deadline = start + seconds
    for _ in range(window):
        ping()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done, seconds + 10)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    refused = a.service.counters["refused"] + b.service.counters["refused"]
    for box in (a, b):
        await box.transport.close()
    return 2 * pongs / cpu, 2 * pongs / elapsed, refused


def ed25519_rates(count: int = 2000) -> tuple[float, float]:
    """(signatures, verifications) per CPU second of a 600-byte input: what a signed
    message costs its sender and its receiver."""
    identity, data = NodeIdentity.generate(), b"x" * 600
    start = time.process_time()
    for _ in range(count):
        sig = identity.sign(data)
    signing = time.process_time() - start
    start = time.process_time()
    for _ in range(count):
        identity.peer.verify(data, sig)
    return count / signing, count / (time.process_time() - start)


def main(argv: list[str] | None = None) -> dict[str, str]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--window", type=int, default=32, help="Pings in flight")
    args = p.parse_args(argv)
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    print(f"Overlay messages per second (Ping + Pong, both boxes in one process on one core, "
          f"{args.window} in flight, {args.seconds:.0f} s each), Python "
          f"{sys.version.split()[0]}")
    figures: dict[str, str] = {}
    for signed in (True, False):
        for stream in (False, True):
            with contextlib.nullcontext() if signed else signatures_off():
                rate, wall, refused = asyncio.run(measure(stream, args.seconds, args.window))
            key = (f"overlay msgs/s {'TLS' if stream else 'UDP'} "
                   f"signatures {'on' if signed else 'off'}")
            figures[key] = f"{rate:,.0f} per CPU second ({wall:,.0f} per wall second)" + (
                f" ({refused} refused)" if refused else "")
            print(f"{key}: {figures[key]}", flush=True)
    signs, verifies = ed25519_rates()
    figures["Ed25519 sign/s, verify/s"] = f"{signs:,.0f}, {verifies:,.0f} per CPU second"
    print(f"Ed25519 sign/s, verify/s: {figures['Ed25519 sign/s, verify/s']}")
    return figures


if __name__ == "__main__":
    main()
