"""The overlay wire codec: abstract Chord messages <-> signed SIP (SOSIMPLE) messages.

Overlay messages are real SIP (sngrep and Wireshark show them as SIP). `WireCodec.encode`
signs a message of `overlay.chord.messages` into bytes; `WireCodec.decode` verifies bytes
back into one, or raises `WireError(reason)`; `WireCodec.receive` also says what the codec
itself sends back (403 Stale Date, 428 Certificate Needed, a request again after a 428).
What travels and why: docs/overlay-wire-format.md. One concern per module:

- `values`: header names, limits, node URIs, `WireError`;
- `mapping`: overlay message <-> SIP request/response;
- `bodies`: record bodies;
- `signature`: what DHT-Signature signs, signing and checking;
- `certificates`: DHT-Cert-Id, the certificates cache, the 428 and the resend;
- `freshness`: time-stamp window, clock following, replay cache;
- `codec`: `WireCodec`, which runs them in order.
"""

from __future__ import annotations

from .bodies import decode_records, encode_records
from .certificates import certificate_id
from .codec import Outgoing, Received, WireCodec
from .signature import UNSIGNED, signing_input
from .values import (
    ALGORITHM,
    CERT_HEADER,
    CERT_ID_HEADER,
    CERT_NEEDED,
    CERT_NEEDED_REASON,
    LINK_HEADER,
    MAX_COUNT,
    MAX_MESSAGE,
    MAX_RECORD_INT,
    MAX_TXN,
    NODEID_HEADER,
    REASONS,
    RECORDS_TYPE,
    SIG_ALG,
    SIG_HEADER,
    STALE,
    STALE_REASON,
    WireError,
    node_uri,
)
from .values import b64e as _b64e

__all__ = [
    "ALGORITHM", "CERT_HEADER", "CERT_ID_HEADER", "CERT_NEEDED", "CERT_NEEDED_REASON",
    "LINK_HEADER", "MAX_COUNT", "MAX_MESSAGE", "MAX_RECORD_INT", "MAX_TXN", "NODEID_HEADER",
    "REASONS", "RECORDS_TYPE", "SIG_ALG", "SIG_HEADER", "STALE", "STALE_REASON", "UNSIGNED",
    "Outgoing", "Received", "WireCodec", "WireError", "_b64e", "certificate_id",
    "decode_records", "encode_records", "node_uri", "signing_input",
]
