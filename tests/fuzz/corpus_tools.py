"""The stored corpora, their seeds, and a plain mutation pass for machines without atheris.

`corpus(target)` lists the stored inputs of a target (`tests/fuzz/corpus/<target>/`, and
for `sip` the RFC 4475 torture messages in tests/data/rfc4475 too). `mutation_pass` runs
a target on random mutations of its corpus (seeded, bounded by count or time): what
`make test` runs, and what `run.py` falls back to where atheris does not install; it is
not coverage-guided. `write_overlay_seeds` (re)makes the overlay corpus's seeds.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
TORTURE = HERE.parent / "data" / "rfc4475"
HANG_CPU_SECONDS = 1.0
INSERTS = (b"\r\n", b"\n", b"\r", b",", b";", b":", b"<", b">", b'"', b"\\", b"%", b"@",
           b" ", b"\t", b"\x00", b"\xff", b"\xc3", b"=", b"\r\n ", b"\r\n\r\n")


class Hang(Exception):
    """An input that took more than HANG_CPU_SECONDS of CPU time."""


@contextlib.contextmanager
def cpu_budget(seconds: float = HANG_CPU_SECONDS) -> Iterator[None]:
    """Raise Hang in the code running when this process has used `seconds` of CPU time
    (SIGVTALRM: user CPU, so the time other processes run on a loaded machine does not
    count). Main thread only."""

    def expired(signum: int, frame: object) -> None:
        raise Hang(f"more than {seconds} s of CPU time for one input")

    previous = signal.signal(signal.SIGVTALRM, expired)
    signal.setitimer(signal.ITIMER_VIRTUAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.signal(signal.SIGVTALRM, previous)


def bounded(one_input: Callable[[bytes], None]) -> Callable[[bytes], None]:
    """`one_input` under a CPU budget per input."""

    def run(data: bytes) -> None:
        with cpu_budget():
            one_input(data)

    return run


def corpus(target: str) -> list[Path]:
    paths = sorted((CORPUS / target).iterdir())
    if target == "sip":
        paths += sorted(TORTURE.glob("*.dat"))
    return paths


def mutate(rng: random.Random, data: bytes, others: list[bytes]) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        pos = rng.randint(0, len(out))
        op = rng.randrange(7)
        if op == 0 and pos < len(out):
            out[pos] ^= 1 << rng.randrange(8)
        elif op == 1:
            out[pos:pos] = rng.choice(INSERTS)
        elif op == 2:
            del out[pos : pos + rng.randint(1, 16)]
        elif op == 3:
            out[pos:pos] = out[pos : pos + rng.randint(1, 64)]  # repeat a stretch
        elif op == 4 and others:  # splice in a stretch of another input
            other = rng.choice(others)
            start = rng.randint(0, len(other))
            out[pos:pos] = other[start : start + rng.randint(1, 128)]
        elif op == 5:
            out[pos:pos] = rng.randbytes(rng.randint(1, 4))
        elif op == 6 and pos < len(out):
            out[pos] = rng.choice(b"0123456789")
    return bytes(out)


def mutation_pass(one_input: Callable[[bytes], None], target: str, *, count: int | None = None,
                  seconds: float | None = None, seed: int = 0) -> int:
    """Run `one_input` on the corpus, then on mutations of it; returns the inputs run.
    An exception is a finding (Hang: more than a second of CPU time for one input): it
    propagates with the input attached as a note."""
    one_input = bounded(one_input)
    seeds = [p.read_bytes() for p in corpus(target)]
    rng = random.Random(seed)
    deadline = None if seconds is None else time.monotonic() + seconds
    runs = 0
    for data in _inputs(rng, seeds):
        if (count is not None and runs >= count) or (deadline and time.monotonic() > deadline):
            break
        try:
            one_input(data)
        except BaseException as exc:
            exc.add_note(f"fuzz input ({target}): {data!r}")
            raise
        runs += 1
    return runs


def _inputs(rng: random.Random, seeds: list[bytes]):  # noqa: ANN202
    yield from seeds
    while True:
        yield mutate(rng, rng.choice(seeds), seeds)


def save(directory: Path, data: bytes, prefix: str = "") -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{prefix}{hashlib.sha1(data).hexdigest()[:12]}").write_bytes(data)


def write_overlay_seeds(count: int = 40) -> None:
    """Seeds of the overlay target: signed messages of every type (raw layer) and
    random programs (program layer), made with the target's own fuzzing peers."""
    from .overlay_fields import Reader
    from .overlay_target import NODE_REF, T0, Harness

    out = CORPUS / "overlay"
    rng = random.Random(7)
    h = Harness()
    for i in range(count):
        peer = h.peers[i % len(h.peers)]
        r = Reader(rng.randbytes(300))
        make = h.maker.request if i % 3 else h.maker.response
        msg = make(r, peer.ref, rng.randrange(1 << 32))
        try:
            data = peer.codec.encode(msg, NODE_REF, T0)
        except ValueError:
            continue
        save(out, b"\x00" + data, "raw-")
    for _ in range(count):
        save(out, b"\x01" + rng.randbytes(rng.randint(20, 600)), "program-")
    for program in _ring_programs(rng, 10):
        save(out, program, "ring-")


def _ring_programs(rng: random.Random, wanted: int, tries: int = 2000) -> list[bytes]:
    """Random programs after which the box is on a ring with a peer (a few in a hundred)."""
    from .overlay_fields import Reader
    from .overlay_target import STEPS, Harness, step

    found: list[bytes] = []
    for _ in range(tries):
        data = rng.randbytes(600)
        h, r = Harness(), Reader(data)
        with h.clocked():
            for _ in range(STEPS):
                step(h, r)
        if h.box.node.successors:
            found.append(b"\x01" + data[: r.pos])
            if len(found) == wanted:
                break
    return found
