"""The refresh lane: a phone's plain re-REGISTER over UDP, answered from the datagram.

Most REGISTERs a box sees refresh a binding it already holds: the same phone, the same
Contact, from the same address, every few minutes, and a box with thousands of phones
sees hundreds a second. The full path parses every header into objects, opens a server
transaction and goes through the proxy to the registrar; this lane reads only what a
refresh needs, as text, and answers in a fraction of the time (bench/register_rate.py).

It answers only when its answer is the one the full path would give, and otherwise
returns None and leaves the datagram to the full path: first registrations,
unregistrations, several or odd Contacts, digest mode, retransmissions, a header it does
not know or cannot check exactly as the parser would (overlay/sip/message.py), a body,
anything outside the everyday spelling of PLAIN_NAME_ADDR (overlay/sip/uri.py). The
registration rules stay in Location (`refresh`); what the lane answers is kept for
Timer J by the transaction layer (`keep_answer`), so a retransmission of the REGISTER
gets the same response from the full path.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from operator import methodcaller

from overlay.sip.errors import SipParseError
from overlay.sip.headers import PLAIN_VIA, check_rport, is_call_id, parse_delta
from overlay.sip.message import MAX_CSEQ
from overlay.sip.routing import Address, new_tag, stamp_via_params
from overlay.sip.transaction import MAGIC_COOKIE, TransactionLayer
from overlay.sip.uri import (
    PLAIN_NAME_ADDR,
    PLAIN_URI,
    _split_simple_params,
    format_hostport,
    format_params,
)

from .registrar import Location, printable_name

# Headers the lane reads or passes over, in their canonical spelling; a REGISTER with any
# other header, or a compact or lower-case name, takes the full path.
_HEADERS = frozenset({
    "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Expires", "Max-Forwards",
    "Content-Length", "User-Agent", "Supported", "Allow", "Allow-Events", "Accept",
})
_NAME_AND_VALUE = methodcaller("split", ": ", 1)
_LISTS = frozenset({"Supported", "Allow", "Allow-Events", "Accept"})
_CSEQ = re.compile(r"0*([0-9]{1,10}) REGISTER\Z")
_URI = PLAIN_URI.pattern.removesuffix(r"\Z")
_START = re.compile(rf"REGISTER {_URI} SIP/2\.0\Z")


class RefreshLane:
    """Answers plain refreshes for `location`; `wake(deadline)` is told each Timer J."""

    def __init__(self, location: Location, txl: TransactionLayer, counters: dict[str, int],
                 wake: Callable[[float], None]) -> None:
        self.location = location
        self.txl = txl
        self.counters = counters  # the proxy's: a refresh counts as it would there
        self.wake = wake
        self.answered = 0

    def answer(self, data: bytes, source: Address, now: float) -> bytes | None:
        """The 200 to a REGISTER datagram that is a plain refresh (the binding refreshed),
        or None: not one, nothing changed."""
        read = _read(data)
        if read is None:
            return None
        try:
            return self._refresh(*read, source, now)
        except (SipParseError, KeyError):
            return None  # a header missing or wrong: the full path says which

    def _refresh(self, start: str, fields: dict[str, str], source: Address, now: float
                 ) -> bytes | None:
        via_text, from_text, call_id, cseq_text = (
            fields["Via"], fields["From"], fields["Call-ID"], fields["CSeq"])
        via = PLAIN_VIA.match(via_text)
        if via is None or not _port_ok(via.group(3)):
            return None
        via_params = check_rport(_params(via.group(4)))
        branch = via_params.get("branch")
        if not branch or not branch.startswith(MAGIC_COOKIE):
            return None  # RFC 2543 matching: the transaction layer's
        port = via.group(3)
        key = (branch, format_hostport(via.group(2).lower(), port and int(port)), "REGISTER")
        if self.txl.server_state(key) is not None:
            return None  # a retransmission, or the full path has it
        from_ = _name_addr(from_text)
        cseq = _CSEQ.match(cseq_text)
        if from_ is None or cseq is None or not is_call_id(call_id):
            return None
        number = int(cseq.group(1))
        if number > MAX_CSEQ:
            return None
        repeated = self._repeated(start, fields)
        if repeated is None:
            return None
        extension, contact, expires, q, to_display = repeated[1]
        binding = self.location.refresh(
            extension, contact, source, call_id, number, expires, q,
            printable_name(to_display or _display(from_) or ""), now, repeated)
        if binding is None:
            return None
        if stamp_via_params(via_params, via.group(2), source):
            via_text = f"SIP/2.0/UDP {via.group(1)}{format_params(via_params)}"
        # The headers make_response copies (their order among themselves is not
        # significant, RFC 3261 7.3.1), then the binding as Location._ok gives it.
        out = (
            f"SIP/2.0 200 OK\r\nVia: {via_text}\r\nFrom: {from_text}\r\n"
            f"To: {fields['To']};tag={new_tag()}\r\nCall-ID: {call_id}\r\nCSeq: {cseq_text}"
            f"\r\nContact: <{contact}>;expires={binding.seconds_left(now)}\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        self.wake(self.txl.keep_answer(key, out, source, now))
        self.counters["requests"] += 1
        self.counters["registrations"] += 1
        self.answered += 1
        return out

    def _repeated(self, start: str, fields: dict[str, str]) -> _Repeated | None:
        """What a phone repeats in every refresh (all but Via, From, Call-ID and CSeq),
        read: from the memo of the binding these texts made, else now."""
        texts = (start, *map(fields.get, _REPEATED))
        to_text = fields["To"]
        guess = to_text[to_text.find(":") + 1 : to_text.find("@")]  # only a key to look up
        held = self.location.bindings.get(guess)
        if held:
            memo = held[0].memo
            if memo is not None and memo[0] == texts:
                return memo  # type: ignore[no-any-return]
        read = _read_repeated(start, fields, self.location.default_expires)
        return None if read is None else (texts, read)


# The headers a phone repeats unchanged in its refreshes, read once (RefreshLane._repeated).
_REPEATED = ("To", "Contact", "Expires", "Max-Forwards", "Content-Length", "User-Agent",
             "Supported", "Allow", "Allow-Events", "Accept")
# Read from them: extension, contact URI, expires asked for, q, To's display name.
_Reading = tuple[str, str, int, str | None, str | None]
# Their texts (the request line, then _REPEATED's values or None) and the reading.
_Repeated = tuple[tuple[str | None, ...], _Reading]


def _read_repeated(start: str, fields: dict[str, str], default_expires: int
                   ) -> _Reading | None:
    """The reading of the repeated headers (see _Repeated), or None if they are not plain;
    a delta value the parser refuses raises SipParseError."""
    uri = _START.match(start)
    if uri is None or not _port_ok(uri.group(3)):
        return None
    if "Max-Forwards" in fields:
        parse_delta(fields["Max-Forwards"], "Max-Forwards", 255)
    if "Content-Length" in fields and parse_delta(fields["Content-Length"], "Content-Length"):
        return None
    for name in _LISTS.intersection(fields):
        value = fields[name]
        # message.parse_headers splits these on commas outside quotes and <>: none here,
        # and no empty item.
        if '"' in value or "<" in value or (value and not all(
                item.strip(" \t") for item in value.split(","))):
            return None
    # one Contact: PLAIN_NAME_ADDR takes no comma outside quotes and <>, where the parser
    # splits a list header
    to, contact = _name_addr(fields["To"]), _name_addr(fields["Contact"])
    if to is None or contact is None or not to.group(4) or "tag" in _params(to.group(6)):
        return None
    params = _params(contact.group(6))
    expires = default_expires
    if "Expires" in fields:
        expires = parse_delta(fields["Expires"], "Expires")
    if "expires" in params:
        expires = parse_delta(params["expires"] or "", "Contact expires")
    return to.group(4), contact.group(3), expires, params.get("q"), _display(to)


def _read(data: bytes) -> tuple[str, dict[str, str]] | None:
    """The request line and the header fields of a REGISTER with no body, by canonical
    name; None if it is not a plain one (see the module doc)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if body or not sep:
        return None
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        return None
    lines = text.split("\r\n")
    ends = len(lines) - 1
    if text.count("\n") != ends or text.count("\r") != ends:
        return None  # a bare CR or LF (a folded line, smuggling): the parser's business
    try:
        fields = dict(map(_NAME_AND_VALUE, lines[1:]))  # no Python code a line: it adds up
    except ValueError:
        return None  # a line with no ": "
    if len(fields) != ends or not _HEADERS.issuperset(fields):
        return None  # a header twice, or one the lane does not know
    return lines[0], fields


def _name_addr(text: str) -> re.Match[str] | None:
    m = PLAIN_NAME_ADDR.match(text)
    return m if m is not None and _port_ok(m.group(5)) else None


def _port_ok(port: str | None) -> bool:
    return port is None or int(port) <= 65535


def _params(text: str) -> dict[str, str | None]:
    return _split_simple_params(text[1:]) if text else {}


def _display(m: re.Match[str]) -> str | None:
    return m.group(1) if m.group(1) is not None else m.group(2)
