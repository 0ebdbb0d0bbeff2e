"""Typed SIP header values: Via, CSeq, delta-seconds, name-addr headers and the checks
the parser runs on the headers the core relies on (RFC 3261 section 20, 25.1).

Split from overlay/sip/message.py, which keeps the message classes, the header list and
its canonical names, and the parser; message.py re-exports the public names (`Via`,
`parse_via`, `parse_cseq`, `parse_delta`, `MAX_CSEQ`, `MAX_DELTA`). `_VALIDATORS` maps a
canonical header name to its check, run once per header at parse time; the parsed To and
Contact values are shared between messages carrying the same text (bounded caches), and
the `_copy_*` helpers give callers copies of those read-only views.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import SipParseError
from .uri import (
    NameAddr,
    Params,
    Uri,
    format_hostport,
    format_params,
    is_token,
    parse_name_addr,
    parse_params,
    split_hostport,
)

_WORD = r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+"
_CALL_ID = re.compile(rf"{_WORD}(?:@{_WORD})?\Z")
_DATE = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"\d{4} \d{2}:\d{2}:\d{2} GMT\Z",
    re.A,
)
# CSeq = 1*DIGIT LWS Method; LWS may be tabs as well as spaces. At most 10 significant
# digits, which also keeps int() clear of its 4300-digit limit.
_CSEQ = re.compile(r"[ \t]*0*([0-9]{1,10})[ \t]+([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*\Z")
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+/[A-Za-z0-9\-.!%*_+`'~]+\s*(;.*)?\Z", re.S)
# A Via value in its usual form: "SIP/2.0/UDP host:port;params" with a host name or IPv4.
_SIMPLE_VIA = re.compile(
    r"SIP/2\.0/([A-Za-z0-9\-.!%*_+`'~]+) "
    r"([A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9])?\.?)(?::([0-9]{1,5}))?(?:;(.*))?\Z"
)
# The refresh lane's Via (appliance/refresh.py): UDP, a host name or IPv4, parameters in
# their everyday form; parse_via accepts each text this matches with these values (a port
# over 65535 and the rport rule aside: check them). Groups: sent-by, host, port, params.
PLAIN_VIA = re.compile(
    r"SIP/2\.0/UDP (([A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9])?\.?)(?::([0-9]{1,5}))?)"
    r"((?:;[A-Za-z0-9\-.!%*_+`'~]+(?:=[^ \t\"<>,;]+)?)*)\Z"
)
MAX_CSEQ = 2**31 - 1
MAX_DELTA = 2**32 - 1


def _is_digits(text: str) -> bool:
    # DIGIT is ASCII: str.isdigit() also takes "²" (which int() refuses) and "١".
    return text.isascii() and text.isdigit()


@dataclass(eq=True)
class Via:
    transport: str
    host: str
    port: int | None = None
    params: Params = field(default_factory=dict)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    def __str__(self) -> str:
        return f"SIP/2.0/{self.transport} {format_hostport(self.host, self.port)}" + format_params(
            self.params
        )


def parse_via(text: str) -> Via:
    stripped = text.strip()
    m = _SIMPLE_VIA.match(stripped)
    if m is not None:
        # The usual spelling: the same result as the general path below, sooner.
        transport, host, port_text, param_text = m.groups()
        port = None if port_text is None else int(port_text)
        if port is None or port <= 65535:
            params = parse_params(param_text, "Via") if param_text is not None else {}
            return Via(transport.upper(), host, port, check_rport(params))
    proto, _, rest = stripped.partition(" ")
    parts = [p.strip() for p in proto.split("/")]
    if len(parts) != 3 or parts[0].upper() != "SIP" or not all(is_token(p) for p in parts):
        # Allow LWS around the slashes ("SIP / 2.0 / UDP"): re-split on the whole text.
        m = re.match(r"\s*SIP\s*/\s*([\w.]+)\s*/\s*([\w\-.!%*+`'~]+)\s+(.*)\Z", text, re.S | re.I)
        if not m:
            raise SipParseError(f"bad Via {text.strip()!r}")
        parts, rest = ["SIP", m.group(1), m.group(2)], m.group(3)
    if parts[1] != "2.0":
        raise SipParseError(f"bad Via version {parts[1]!r}")
    sent_by, semi, param_text = rest.strip().partition(";")
    host, port = split_hostport(sent_by.strip(), "Via")
    params = parse_params(param_text, "Via") if semi else {}
    return Via(parts[2].upper(), host, port, check_rport(params))


def check_rport(params: Params) -> Params:
    """RFC 3581: rport is empty (a request asking for it) or the port a response goes to."""
    rport = params.get("rport")
    if rport is not None:
        digits = rport.lstrip("0") or "0"  # leading zeros are fine, and kept from int()
        if not (_is_digits(rport) and len(digits) <= 5 and int(digits) <= 65535):
            raise SipParseError(f"bad Via rport {rport[:12]!r}")
    return params


def parse_cseq(text: str) -> tuple[int, str]:
    m = _CSEQ.match(text)
    if not m or int(m.group(1)) > MAX_CSEQ:
        raise SipParseError(f"bad CSeq {text!r}")
    return int(m.group(1)), m.group(2)


def parse_delta(text: str, what: str, limit: int = MAX_DELTA) -> int:
    text = text.strip()
    # Leading zeros are fine ("0068"); over 10 other digits is past any limit (and int()'s).
    if not _is_digits(text) or len(text.lstrip("0")) > 10 or int(text) > limit:
        raise SipParseError(f"bad {what} value {text!r}")
    return int(text)


def _check_contact(value: str) -> NameAddr | None:
    """The parsed Contact value (None for `*`), its expires parameter checked."""
    if value.strip() == "*":
        return None
    na = parse_name_addr(value, "Contact")
    if "expires" in na.params:
        parse_delta(na.params["expires"] or "", "Contact expires")
    return na


def _parse_contacts(values: tuple[str, ...]) -> tuple[NameAddr | None, ...]:
    return tuple(
        None if v.strip() == "*" else parse_name_addr(v, "Contact") for v in values
    )


def _parse_from(value: str) -> NameAddr:
    return parse_name_addr(value, "From")


def _parse_to(value: str) -> NameAddr:
    return parse_name_addr(value, "To")


def _copy_uri(uri: Uri) -> Uri:
    return Uri(uri.scheme, uri.user, uri.host, uri.port, dict(uri.params), dict(uri.headers),
               uri.password, uri.opaque)


def _copy_name_addr(na: NameAddr) -> NameAddr:
    return NameAddr(_copy_uri(na.uri), na.display, dict(na.params))


def _copy_via(via: Via) -> Via:
    return Via(via.transport, via.host, via.port, dict(via.params))


def _check_retry_after(value: str) -> None:
    parse_delta(value.split(";", 1)[0].split("(", 1)[0], "Retry-After")


def _check_warning(value: str) -> None:
    code = value.strip().split(" ", 1)[0]
    if len(code) != 3 or not _is_digits(code):
        raise SipParseError(f"bad Warning code {code!r}")


def _check_date(value: str) -> None:
    if not _DATE.match(value.strip()):
        raise SipParseError(f"bad Date {value.strip()!r}")


def is_call_id(text: str) -> bool:
    return _CALL_ID.match(text) is not None


def _check_call_id(value: str) -> None:
    if not is_call_id(value.strip()):
        raise SipParseError(f"bad Call-ID {value.strip()!r}")


def _check_content_type(value: str) -> None:
    if not _MEDIA_TYPE.match(value.strip()):
        raise SipParseError(f"bad Content-Type {value.strip()!r}")


# To and Contact values repeat from message to message (a phone re-registering, requests
# within a dialog): their parsed values are kept, a bounded number of them, and shared by
# the messages that carry the same text. Views are read-only, so sharing them is safe.
_REUSED_MAX = 2048
_TO_SEEN: dict[str, NameAddr] = {}
_CONTACT_SEEN: dict[str, NameAddr] = {}


def _check_to_reused(value: str) -> NameAddr:
    na = _TO_SEEN.get(value)
    if na is None:
        na = _parse_to(value)
        if len(_TO_SEEN) >= _REUSED_MAX:
            _TO_SEEN.clear()
        _TO_SEEN[value] = na
    return na


def _check_contact_reused(value: str) -> NameAddr | None:
    na = _CONTACT_SEEN.get(value)
    if na is None:
        na = _check_contact(value)
        if na is not None:
            if len(_CONTACT_SEEN) >= _REUSED_MAX:
                _CONTACT_SEEN.clear()
            _CONTACT_SEEN[value] = na
    return na


_VALIDATORS = {
    "Via": parse_via,
    "From": _parse_from,
    "To": _check_to_reused,
    "Contact": _check_contact_reused,
    "Route": lambda v: parse_name_addr(v, "Route"),
    "Record-Route": lambda v: parse_name_addr(v, "Record-Route"),
    "CSeq": parse_cseq,
    "Call-ID": _check_call_id,
    "Max-Forwards": lambda v: parse_delta(v, "Max-Forwards", 255),
    "Expires": lambda v: parse_delta(v, "Expires"),
    "Min-Expires": lambda v: parse_delta(v, "Min-Expires"),
    "Content-Length": lambda v: parse_delta(v, "Content-Length"),
    "Retry-After": _check_retry_after,
    "Warning": _check_warning,
    "Date": _check_date,
    "Content-Type": _check_content_type,
}
