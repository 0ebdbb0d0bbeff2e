"""What the SIP transaction layer's user sees: addresses, transaction keys, states, events.

Shared by the layer (overlay/sip/transaction.py) and its client and server halves
(client_transaction.py, server_transaction.py); everything here is re-exported from
overlay.sip.transaction, which is where callers import it from.
"""

from __future__ import annotations

from dataclasses import dataclass

from .message import Request, Response

Address = tuple[str, str, int]  # (transport "UDP" | "TCP", host, port)
ClientKey = tuple[str, str]  # (top Via branch, CSeq method)
# (branch, sent-by, method) with ACK mapped to INVITE; for RFC 2543 requests (no z9hG4bK
# branch) ("", "rfc2543|<Request-URI>|<To tag>|<From tag>|<Call-ID>|<CSeq num>|<Via>", method).
# The TU should treat it as opaque.
ServerKey = tuple[str, str, str]

MAGIC_COOKIE = "z9hG4bK"

# Transaction states (RFC 3261 figures 5-8, RFC 6026 figures 3 and 5).
CALLING = "Calling"
TRYING = "Trying"
PROCEEDING = "Proceeding"
COMPLETED = "Completed"
ACCEPTED = "Accepted"
CONFIRMED = "Confirmed"

# The two timer slots of every transaction (internal to the layer and its halves).
_RT = 0  # timer slot: retransmission (A, E, G)
_END = 1  # timer slot: lifetime (B, F, D, K, M / H, I, J, L)


def _is_reliable(address: Address) -> bool:
    return address[0].upper() != "UDP"


@dataclass(slots=True)
class RequestReceived:
    """A new request (or an ACK for a 2xx, with server_key None) for the TU."""

    request: Request
    source: Address
    server_key: ServerKey | None


@dataclass(slots=True)
class ResponseReceived:
    response: Response
    client_key: ClientKey


@dataclass(slots=True)
class StrayResponse:
    """A response that matched no client transaction."""

    response: Response
    source: Address


@dataclass(slots=True)
class ClientTimeout:
    """Timer B or F fired (or a cancelled INVITE got no final response): the TU makes a 408."""

    client_key: ClientKey
    request: Request


@dataclass(slots=True)
class TransportFailed:
    client_key: ClientKey
    request: Request


@dataclass(slots=True)
class ServerTerminated:
    """Informative: Timer H fired (a non-2xx final response to an INVITE was never ACKed)."""

    server_key: ServerKey


Event = (
    RequestReceived
    | ResponseReceived
    | StrayResponse
    | ClientTimeout
    | TransportFailed
    | ServerTerminated
)
