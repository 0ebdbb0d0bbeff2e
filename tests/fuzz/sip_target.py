"""Fuzz target: the SIP parser (overlay/sip/message.py) and stream framing (framing.py).

`one_input(data)` is what a fuzzer calls with each input; it raises AssertionError (or
any other exception) for a finding. What must hold:

- `parse_message` raises nothing but `SipParseError` (what the parser documents), with a
  reason and a status a server may answer (400, 505);
- whatever parses re-encodes to bytes that parse back to the same message (one
  Content-Length, equal to the body's size), and those re-encode to the same bytes;
- the read-only accessors the transaction layer, proxy and registrar use on every
  message (Via, CSeq, From, To, tags, users, Contacts, Max-Forwards, Route, where a
  response goes) do not raise on a parsed message, and a fresh transaction layer takes
  it without raising;
- `StreamFramer` fed the bytes whole or in small pieces frames the same messages (or
  fails with `SipParseError` in both cases), with no byte lost or made up;
- a REGISTER offered to the refresh lane (appliance/refresh.py), on a box where 1001 is
  bound and on one where the lane already read its refresh, is answered as the full path
  answers it, or declined with nothing changed (refresh_oracle.py).
"""

from __future__ import annotations

from functools import cache

from appliance.registrar import Location
from overlay.sip.errors import SipParseError
from overlay.sip.framing import StreamFramer
from overlay.sip.message import Message, Request, Response, parse_message
from overlay.sip.routing import stamp_via, via_address
from overlay.sip.transaction import TransactionLayer
from overlay.sip.uri import parse_name_addr

from . import refresh_oracle

SOURCE = ("UDP", "127.0.0.2", 5062)


def one_input(data: bytes) -> None:
    check_message(data)
    check_framing(data)
    if data.startswith(b"REGISTER "):
        check_refresh_lane(data)


@cache
def lane_states() -> tuple[Location, Location]:
    return refresh_oracle.bound(), refresh_oracle.read_once()


def check_refresh_lane(data: bytes) -> None:
    for state in lane_states():
        refresh_oracle.compare(state, data, refresh_oracle.PHONE, 10.0)


def normalised(message: Message) -> Request | Response:
    """`message` as encode() writes it: one Content-Length, last, equal to the body size."""
    headers = [h for h in message.headers if h[0] != "Content-Length"]
    headers.append(("Content-Length", str(len(message.body))))
    if isinstance(message, Request):
        return Request(message.method, message.uri, headers, message.body)
    assert isinstance(message, Response)
    return Response(message.status, message.reason, headers, message.body)


def check_message(data: bytes) -> None:
    try:
        message = parse_message(data)
    except SipParseError as exc:
        assert exc.reason and exc.status in (400, 505), (exc.reason, exc.status)
        return
    wire = message.encode()
    again = parse_message(wire)
    assert again == normalised(message), "round trip changed the message"
    assert again.encode() == wire, "re-encoding changed the bytes"
    read_accessors(message)
    layer = TransactionLayer()
    layer.receive(parse_message(wire), SOURCE, 1.0)
    while layer.next_event() is not None:
        pass


def read_accessors(message: Request | Response) -> None:
    """What the SIP core, proxy and registrar read from every message they take."""
    _ = (message.call_id, message.cseq, message.vias, message.top_via, message.via_branch,
         message.via_sent_by, message.from_, message.to, message.from_tag, message.to_tag,
         message.from_user, message.to_user, message.contacts(), message.contact_views)
    for via in message.vias:
        via_address(via)
    for name in ("Route", "Record-Route"):
        for value in message.get_all(name):
            parse_name_addr(value, name)
    if isinstance(message, Request):
        _ = (message.max_forwards, str(message.uri), message.uri.user, message.uri.host)
        stamp_via(message, SOURCE)
        parse_message(message.encode())  # a stamped Via still parses


def check_framing(data: bytes) -> None:
    framed, failed, rest = _frame([data])
    in_pieces, failed_in_pieces, _ = _frame([data[i : i + 7] for i in range(0, len(data), 7)])
    assert failed == failed_in_pieces, "framing failed one way only"
    if not failed:
        assert framed == in_pieces, "framing depends on how the bytes arrived"
    assert all(message in data for message in framed), "framed bytes that were not sent"
    assert sum(map(len, framed)) + rest <= len(data)
    for message in in_pieces:
        check_message(message)


def _frame(chunks: list[bytes]) -> tuple[list[bytes], bool, int]:
    framer = StreamFramer(max_header_section=4096, max_body=8192)
    framed: list[bytes] = []
    try:
        for chunk in chunks:
            framed.extend(framer.feed(chunk))
    except SipParseError as exc:
        assert exc.status in (400, 413, 513), exc.status
        return framed, True, framer.buffered
    return framed, False, framer.buffered
