"""The stored corpora, their seeds, and a plain mutation pass for machines without atheris.

`corpus(target)` lists the stored inputs of a target (`tests/fuzz/corpus/<target>/`, and
for `sip` the RFC 4475 torture messages in tests/data/rfc4475 too). `mutation_pass` runs
a target on random mutations of its corpus (seeded, bounded by count or time): what
`make test` runs, and what `run.py` falls back to where atheris does not install; it is
not coverage-guided. `write_overlay_seeds` (re)makes the overlay corpus's seeds.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
TORTURE = HERE.parent / "data" / "rfc4475"
INSERTS = (b"\r\n", b"\n", b"\r", b",", b";", b":", b"<", b">", b'"', b"\\", b"%", b"@",
           b" ", b"\t", b"\x00", b"\xff", b"\xc3", b"=", b"\r\n ", b"\r\n\r\n")


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
    An exception is a finding: it propagates with the input attached as a note."""
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
