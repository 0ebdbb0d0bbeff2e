"""SIP messages parsed (and serialised) per second, for a typical REGISTER and INVITE.

    python bench/parse_rate.py [--iterations 20000]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from common import REPO

SDP = (
    "v=0\r\n"
    "o=alice 2890844526 2890844526 IN IP4 10.0.0.11\r\n"
    "s=-\r\n"
    "c=IN IP4 10.0.0.11\r\n"
    "t=0 0\r\n"
    "m=audio 49170 RTP/AVP 0 8 101\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-16\r\n"
    "a=ptime:20\r\n"
    "a=sendrecv\r\n"
)

REGISTER = (
    b"REGISTER sip:10.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.11:5060;rport;branch=z9hG4bK-524287-1---a1b2c3d4e5f6a7b8\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: \"Alice\" <sip:alice@10.0.0.1>;tag=8f4e2b1c\r\n"
    b"To: \"Alice\" <sip:alice@10.0.0.1>\r\n"
    b"Call-ID: 6a5f3d2e1c0b9a88@10.0.0.11\r\n"
    b"CSeq: 42 REGISTER\r\n"
    b"Contact: <sip:alice@10.0.0.11:5060;transport=udp>;expires=3600\r\n"
    b"Expires: 3600\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, MESSAGE, NOTIFY, REFER, UPDATE\r\n"
    b"User-Agent: Yealink SIP-T46S 66.86.0.15\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

INVITE = (
    "INVITE sip:bob@10.0.0.1 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 10.0.0.11:5060;rport;branch=z9hG4bK-524287-1---f00dfeedcafe0001\r\n"
    "Max-Forwards: 70\r\n"
    "From: \"Alice\" <sip:alice@10.0.0.1>;tag=9c3d7e21\r\n"
    "To: <sip:bob@10.0.0.1>\r\n"
    "Call-ID: 0e7c2b9a4d5f6e71@10.0.0.11\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:alice@10.0.0.11:5060;transport=udp>\r\n"
    "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, MESSAGE, NOTIFY, REFER, UPDATE\r\n"
    "Supported: replaces, timer\r\n"
    "User-Agent: Yealink SIP-T46S 66.86.0.15\r\n"
    "Content-Type: application/sdp\r\n"
    f"Content-Length: {len(SDP)}\r\n"
    "\r\n"
    f"{SDP}"
).encode()


def rate(fn: Callable[[], object], iterations: int) -> float:
    """Calls per second of fn over a fixed number of iterations (after a short warm-up)."""
    for _ in range(min(1000, iterations)):
        fn()
    start = time.perf_counter()
    for _ in range(iterations):
        fn()
    return iterations / (time.perf_counter() - start)


def measure(iterations: int = 20_000) -> dict[str, str]:
    sys.path.insert(0, str(REPO))
    from overlay.sip.message import parse_message

    figures: dict[str, str] = {}
    for name, data in (("REGISTER", REGISTER), ("INVITE+SDP", INVITE)):
        msg = parse_message(data)
        figures[f"parse {name} ({len(data)} B) msgs/s"] = (
            f"{rate(lambda d=data: parse_message(d), iterations):,.0f}"
        )
        try:
            again = parse_message(bytes(msg))
        except Exception as e:  # serialisation may be missing or partial
            figures[f"serialise {name} msgs/s"] = f"n/a (bytes(msg) failed: {e!r})"
            continue
        if again.body != msg.body:
            figures[f"serialise {name} msgs/s"] = "n/a (bytes(msg) does not round-trip)"
            continue
        figures[f"serialise {name} msgs/s"] = f"{rate(lambda m=msg: bytes(m), iterations):,.0f}"
    return figures


def main(argv: list[str] | None = None) -> dict[str, str]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=20_000)
    args = p.parse_args(argv)
    print(f"SIP parse/serialise rate: {args.iterations} iterations each, one core, "
          f"Python {sys.version.split()[0]}")
    figures = measure(args.iterations)
    for key, value in figures.items():
        print(f"{key}: {value}")
    return figures


if __name__ == "__main__":
    main()
