"""Record bodies (`Content-Type: application/x-meshsip-records`): one text line per record.

The codec carries records unchanged; each is signed by its owner and checked by the
receiving node (`overlay.chord.records`), whoever relayed it. Line format: see
docs/overlay-wire-format.md, "Record bodies".
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

from ...sip.message import Request, Response
from .. import messages as m
from .values import (
    DIGITS,
    HEX_ID,
    MAX_RECORD_INT,
    RECORDS_TYPE,
    b64d,
    b64e,
    check_count,
    check_id,
)

_INSTANCE = re.compile(r"(-|[0-9a-f]{32})\Z")  # no instance, or its hash (claims.py)
_REC_SAFE = "!$&'()*+,/:;=?@"  # printable ASCII left unescaped in record fields, but ' ' and %


def _q(text: str) -> str:
    return quote(text, safe=_REC_SAFE, encoding="utf-8", errors="surrogatepass")


def encode_records(records: tuple[m.Record, ...]) -> bytes:
    lines = []
    for r in records:
        check_id(r.resource_id, "resource_id")
        check_id(r.owner, "owner")
        for name in ("sequence", "lifetime", "remaining", "claim"):
            check_count(getattr(r, name), name, MAX_RECORD_INT)
        instance = r.instance or "-"
        if not _INSTANCE.match(instance):
            raise ValueError("record instance must be 32 lower-case hex digits")
        lines.append(
            f"{r.resource_id:032x} {r.owner:032x} {r.sequence} {r.lifetime} {r.remaining} "
            f"{_q(r.aor)} {_q(r.contact)} {b64e(r.public_key)} {b64e(r.signature)} "
            f"{r.claim} {instance} {int(r.verified)}\n"
        )
    return "".join(lines).encode("ascii")


def decode_records(body: bytes) -> tuple[m.Record, ...]:
    text = body.decode("ascii")
    if not text:
        return ()
    if not text.endswith("\n"):
        raise ValueError("record body does not end with a line end")
    out = []
    for line in text[:-1].split("\n"):
        f = line.split(" ")
        if len(f) != 12 or not (HEX_ID.match(f[0]) and HEX_ID.match(f[1])):
            raise ValueError("bad record line")
        if not all(DIGITS.match(x) and int(x) < MAX_RECORD_INT for x in (*f[2:5], f[9])):
            raise ValueError("bad record number")
        if not _INSTANCE.match(f[10]) or f[11] not in ("0", "1"):
            raise ValueError("bad record claim")
        out.append(m.Record(
            resource_id=int(f[0], 16), owner=int(f[1], 16), sequence=int(f[2]),
            lifetime=int(f[3]), remaining=int(f[4]),
            aor=unquote(f[5], encoding="utf-8", errors="strict"),
            contact=unquote(f[6], encoding="utf-8", errors="strict"),
            public_key=b64d(f[7]), signature=b64d(f[8]), claim=int(f[9]),
            instance="" if f[10] == "-" else f[10], verified=f[11] == "1",
        ))
    return tuple(out)


def records_of(sip: Request | Response) -> tuple[m.Record, ...]:
    """The records a message's body carries (none without a body)."""
    if not sip.body:
        return ()
    ctype = (sip.get("Content-Type") or "").split(";", 1)[0].strip().lower()
    if ctype != RECORDS_TYPE:
        raise ValueError(f"records in a {ctype or 'missing'} Content-Type")
    return decode_records(sip.body)
