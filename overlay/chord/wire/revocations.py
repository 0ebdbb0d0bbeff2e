"""Revocation on the wire: CRL numbers advertised, CRLs carried to who lacks them.

In CA mode every message says which CRL its sender holds (`DHT-CRL-Number: <n>`, 0 for
none; signed like every header). A node that hears a peer advertise a lower number than
its own puts its CRL (`DHT-CRL: <base64url DER>`) on every message to that peer until the
peer advertises the number back: a revocation given to one box reaches the whole ring
through the messages the ring exchanges anyway. A carried CRL counts only if the
deployment CA signed it and its number is higher (`overlay/revocation.py`); which CRL
is newer is decided by the number, never by a clock. Messages whose sender's Node-ID
is revoked are refused (reason `revoked`) before anything else of them is checked.
Open mode (no CA) sends and reads neither header.
"""

from __future__ import annotations

from collections import OrderedDict

from ...revocation import MAX_CRL_BYTES, Revocations
from ...sip.message import Request, Response
from .. import messages as m
from .values import DIGITS, b64d, b64e

CRL_NUMBER_HEADER = "DHT-CRL-Number"
CRL_HEADER = "DHT-CRL"

Headers = list[tuple[str, str]]


class CrlExchange:
    """One codec's side of spreading CRLs: `peers` (Node-ID -> the CRL number it last
    advertised, least recent first, at most `remember` of them)."""

    def __init__(self, revocations: Revocations, counters: dict[str, int],
                 remember: int) -> None:
        self.revocations = revocations
        self.counters = counters
        self.remember = remember
        self.peers: OrderedDict[int, int] = OrderedDict()

    @property
    def active(self) -> bool:
        return self.revocations.ca is not None

    def revoked(self, node_id: int) -> bool:
        return self.revocations.revokes(node_id)

    def headers(self, dst: m.NodeRef | tuple[str, int]) -> Headers:
        if not self.active:
            return []
        held = self.revocations.crl
        headers = [(CRL_NUMBER_HEADER, str(held.number if held else 0))]
        if held is not None and isinstance(dst, m.NodeRef) \
                and self.peers.get(dst.id, held.number) < held.number:
            headers.append((CRL_HEADER, b64e(held.der)))
            self.counters["crl_sent"] += 1
        return headers

    def read(self, sip: Request | Response, src: int) -> None:
        """An authentic message: note the number its sender holds, take a CRL it carries.
        A malformed value is counted and ignored (the message itself is good)."""
        if not self.active:
            return
        numbers = sip.get_all(CRL_NUMBER_HEADER)
        if len(numbers) == 1 and DIGITS.match(numbers[0].strip()):
            self.peers[src] = int(numbers[0])
            self.peers.move_to_end(src)
            while len(self.peers) > self.remember:
                self.peers.popitem(last=False)
        elif numbers:
            self.revocations.counters["crl_malformed"] += 1
        carried = sip.get_all(CRL_HEADER)
        if not carried:
            return
        try:
            if len(carried) != 1 or len(carried[0]) > MAX_CRL_BYTES * 4 // 3 + 4:
                raise ValueError("too many or too big")
            data = b64d(carried[0])
        except ValueError:
            self.revocations.counters["crl_malformed"] += 1
            return
        self.revocations.offer(data)
