"""Record bodies (`Content-Type: application/x-meshsip-records`): one text line per record.

The codec carries records unchanged; each is signed by its owner and checked by the
receiving node (`overlay.chord.records`), whoever relayed it. Line format: see
docs/overlay-wire-format.md, "Record bodies".
"""

from __future__ import annotations

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

_REC_SAFE = "!$&'()*+,/:;=?@"  # printable ASCII left unescaped in record fields, but ' ' and %


def _q(text: str) -> str:
    return quote(text, safe=_REC_SAFE, encoding="utf-8", errors="surrogatepass")


def encode_records(records: tuple[m.Record, ...]) -> bytes:
    lines = []
    for r in records:
        check_id(r.resource_id, "resource_id")
        check_id(r.owner, "owner")
        for name in ("sequence", "lifetime", "remaining"):
            check_count(getattr(r, name), name, MAX_RECORD_INT)
        lines.append(
            f"{r.resource_id:032x} {r.owner:032x} {r.sequence} {r.lifetime} {r.remaining} "
            f"{_q(r.aor)} {_q(r.contact)} {b64e(r.public_key)} {b64e(r.signature)}\n"
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
        if len(f) != 9 or not (HEX_ID.match(f[0]) and HEX_ID.match(f[1])):
            raise ValueError("bad record line")
        if not all(DIGITS.match(x) and int(x) < MAX_RECORD_INT for x in f[2:5]):
            raise ValueError("bad record number")
        out.append(m.Record(
            resource_id=int(f[0], 16), owner=int(f[1], 16), sequence=int(f[2]),
            lifetime=int(f[3]), remaining=int(f[4]),
            aor=unquote(f[5], encoding="utf-8", errors="strict"),
            contact=unquote(f[6], encoding="utf-8", errors="strict"),
            public_key=b64d(f[7]), signature=b64d(f[8]),
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
