"""SIP messages: parsing, validation and serialisation (RFC 3261 sections 7, 20, 25).

A message keeps its headers as an ordered list of (canonical name, value).
Compact names are expanded and comma-separated list headers (Via, Contact,
Route, ...) are split into one entry per value, so a proxy can push and pop
single values. The headers the core relies on are validated at parse time, so
anything that parses can be handled without further syntax surprises.

Here: the header names (compact forms, canonical spellings, list and single headers),
the message classes with their header access and cached parsed views, serialisation, and
the parser. The typed header values (Via, CSeq, deltas, the per-header checks) live in
headers.py and are re-exported from here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .errors import SipParseError
from .headers import (
    _VALIDATORS,
    MAX_CSEQ,
    MAX_DELTA,
    Via,
    _copy_name_addr,
    _copy_via,
    _is_digits,
    _parse_contacts,
    _parse_from,
    _parse_to,
    parse_cseq,
    parse_delta,
    parse_via,
)
from .uri import NameAddr, Uri, parse_uri, split_quoted

# Typed header values live in headers.py; these stay importable from here.
__all__ = [
    "CANONICAL", "COMPACT", "LIST_HEADERS", "MAX_CSEQ", "MAX_DELTA", "SINGLE_HEADERS",
    "SIP_VERSION", "Message", "Request", "Response", "Via", "canonical_name", "parse_cseq",
    "parse_delta", "parse_headers", "parse_message", "parse_via",
]

COMPACT = {
    "a": "Accept-Contact", "b": "Referred-By", "c": "Content-Type", "d": "Request-Disposition",
    "e": "Content-Encoding", "f": "From", "i": "Call-ID", "j": "Reject-Contact",
    "k": "Supported", "l": "Content-Length", "m": "Contact", "n": "Identity-Info",
    "o": "Event", "r": "Refer-To", "s": "Subject", "t": "To", "u": "Allow-Events",
    "v": "Via", "x": "Session-Expires", "y": "Identity",
}
_KNOWN = [
    "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Authentication-Info",
    "Authorization", "Call-ID", "Call-Info", "Contact", "Content-Disposition", "Content-Encoding",
    "Content-Language", "Content-Length", "Content-Type", "CSeq", "Date", "Error-Info", "Expires",
    "From", "In-Reply-To", "Max-Forwards", "MIME-Version", "Min-Expires", "Organization",
    "Path", "Priority", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require",
    "Record-Route", "Reply-To", "Require", "Retry-After", "Route", "Server", "Subject",
    "Supported", "Timestamp", "To", "Unsupported", "User-Agent", "Via", "Warning",
    "WWW-Authenticate", "Event", "Allow-Events", "Refer-To", "Referred-By", "Session-Expires",
    "Service-Route", "Reason", "RSeq", "RAck", "P-Asserted-Identity",
]
# Compact forms' long names too, so "accept-contact" and "a" land on one spelling.
CANONICAL = {name.lower(): name for name in [*_KNOWN, *COMPACT.values()]} | COMPACT
# Headers whose grammar is a comma-separated list: split into one entry per value.
LIST_HEADERS = frozenset({
    "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Allow-Events",
    "Call-Info", "Contact", "Content-Encoding", "Content-Language", "Error-Info", "In-Reply-To",
    "Path", "Proxy-Require", "Record-Route", "Require", "Route", "Service-Route", "Supported",
    "Unsupported", "Via", "Warning", "P-Asserted-Identity", "Reason",
})
# Headers that may appear at most once.
SINGLE_HEADERS = frozenset({
    "Call-ID", "Content-Length", "Content-Type", "CSeq", "Date", "Expires", "From",
    "Max-Forwards", "Min-Expires", "Retry-After", "To",
})
SIP_VERSION = "SIP/2.0"
_METHOD = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")
_HEADER_NAME = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")
_FOLD = re.compile(r"\r?\n[ \t]+")
_METHODS = {m: m for m in (
    "INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER", "SUBSCRIBE", "NOTIFY", "REFER",
    "MESSAGE", "INFO", "UPDATE", "PRACK", "PUBLISH",
)}


# Canonical spellings map to themselves: the common case skips str.lower().
_CANONICAL_SELF = {name: name for name in CANONICAL.values()}
# Raw header-name spellings (as they came before the colon) already checked and mapped to
# their canonical name by parse_headers; bounded, so odd names cannot make it grow for ever.
_NAME_CACHE: dict[str, str] = {}
_NAME_CACHE_MAX = 512


def canonical_name(name: str) -> str:
    canon = _CANONICAL_SELF.get(name)
    if canon is not None:
        return canon
    return CANONICAL.get(name.lower(), name)


def _key(name: str) -> tuple[str, bool]:
    """What to compare stored header names with, and whether an exact comparison will do.

    Known names are always stored canonically; unknown ones keep the spelling they arrived
    with, so those are compared case-insensitively (header names are case-insensitive).
    """
    canon = _CANONICAL_SELF.get(name)
    if canon is not None:
        return canon, True
    lower = name.lower()
    canon = CANONICAL.get(lower)
    return (canon, True) if canon is not None else (lower, False)


class Message:
    """Header access shared by requests and responses (names are case-insensitive)."""

    headers: list[tuple[str, str]]
    body: bytes
    # Parsed header values kept for reuse: {slot: (the header text, its parsed value)}.
    # A value is reused only while the message still holds exactly that text, however the
    # headers were changed since (set/add/pop_first/remove or the list itself). Not a
    # dataclass field, so never compared, shown or copied by dataclasses.replace().
    _views: dict[str, tuple[Any, Any]] | None = None

    def get(self, name: str) -> str | None:
        key, exact = _key(name)
        if exact:
            for n, v in self.headers:
                if n == key:
                    return v
            return None
        for n, v in self.headers:
            if n.lower() == key:
                return v
        return None

    def get_all(self, name: str) -> list[str]:
        key, exact = _key(name)
        if exact:
            return [v for n, v in self.headers if n == key]
        return [v for n, v in self.headers if n.lower() == key]

    def _positions(self, name: str) -> list[int]:
        key, exact = _key(name)
        if exact:
            return [i for i, (n, _) in enumerate(self.headers) if n == key]
        return [i for i, (n, _) in enumerate(self.headers) if n.lower() == key]

    def set(self, name: str, value: str) -> None:
        """Replace every value of `name` by one, kept at the first one's place."""
        positions = self._positions(name)
        canon = canonical_name(name)
        if not positions:
            self.headers.append((canon, value))
            return
        self.headers[positions[0]] = (canon, value)
        for i in reversed(positions[1:]):
            del self.headers[i]

    def add(self, name: str, value: str, first: bool = False) -> None:
        """Append `value`; with first=True, put it before the other values of `name`."""
        canon = canonical_name(name)
        if first:
            key, exact = _key(name)
            for i, (n, _) in enumerate(self.headers):
                if n == key or (not exact and n.lower() == key):
                    self.headers.insert(i, (canon, value))
                    return
        self.headers.append((canon, value))

    def remove(self, name: str) -> None:
        drop = set(self._positions(name))
        self.headers = [h for i, h in enumerate(self.headers) if i not in drop]

    def pop_first(self, name: str) -> str | None:
        key, exact = _key(name)
        for i, (n, _) in enumerate(self.headers):
            if n == key or (not exact and n.lower() == key):
                return self.headers.pop(i)[1]
        return None

    # Parsed views shared with the message's cache: read-only for the SIP core. The public
    # properties below hand out copies, which callers may change freely.
    def _first(self, name: str) -> str | None:
        """The first value of a header stored under its canonical `name`."""
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def _view(self, slot: str, text: Any, parse: Any) -> Any:
        views = self._views
        if views is None:
            views = self._views = {}
        else:
            hit = views.get(slot)
            if hit is not None and hit[0] == text:
                return hit[1]
        value = parse(text)
        views[slot] = (text, value)
        return value

    def _top_via_view(self) -> Via:
        value = self._first("Via")
        if value is None:
            raise SipParseError("no Via")
        return self._view("Via", value, parse_via)  # type: ignore[no-any-return]

    def _cseq_view(self) -> tuple[int, str]:
        return self._view("CSeq", self._first("CSeq") or "", parse_cseq)  # type: ignore

    def _from_view(self) -> NameAddr:
        return self._view("From", self._first("From") or "", _parse_from)  # type: ignore

    def _to_view(self) -> NameAddr:
        return self._view("To", self._first("To") or "", _parse_to)  # type: ignore

    def _contacts_view(self) -> tuple[NameAddr | None, ...]:
        values = tuple([v for n, v in self.headers if n == "Contact"])
        return self._view("Contact", values, _parse_contacts)  # type: ignore

    # Parsed views of the headers every transaction and dialog needs.
    @property
    def call_id(self) -> str:
        return (self._first("Call-ID") or "").strip()

    @property
    def cseq(self) -> tuple[int, str]:
        return self._cseq_view()

    @property
    def vias(self) -> list[Via]:
        values = self.get_all("Via")
        if not values:
            return []
        top = _copy_via(self._top_via_view())
        return [top, *(parse_via(v) for v in values[1:])]

    @property
    def top_via(self) -> Via:
        return _copy_via(self._top_via_view())

    @property
    def from_(self) -> NameAddr:
        return _copy_name_addr(self._from_view())

    @property
    def to(self) -> NameAddr:
        return _copy_name_addr(self._to_view())

    def contacts(self) -> list[NameAddr | None]:
        """Contact values; None stands for `*`."""
        return [None if na is None else _copy_name_addr(na) for na in self._contacts_view()]

    # Read-only values out of the same parsed views, without a copy (the SIP core's speed
    # for the layers above it): strings and numbers, or views its callers must not change.
    @property
    def to_tag(self) -> str | None:
        return self._to_view().tag

    @property
    def from_tag(self) -> str | None:
        return self._from_view().tag

    @property
    def to_user(self) -> str | None:
        """The user part of the To URI (a REGISTER's extension)."""
        return self._to_view().uri.user

    @property
    def from_user(self) -> str | None:
        return self._from_view().uri.user

    @property
    def via_branch(self) -> str | None:
        """The top Via's branch parameter."""
        return self._top_via_view().branch

    @property
    def via_sent_by(self) -> tuple[str, int | None]:
        """The top Via's sent-by: host as written, port (None when it has none)."""
        via = self._top_via_view()
        return via.host, via.port

    @property
    def contact_views(self) -> tuple[NameAddr | None, ...]:
        """Contact values as parsed (None for `*`), shared with the message: read only.
        `contacts()` gives copies to change."""
        return self._contacts_view()

    def start_line(self) -> str:
        raise NotImplementedError

    def encode(self) -> bytes:
        lines = [self.start_line()]
        lines.extend(f"{n}: {v}" for n, v in self.headers if n != "Content-Length")
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + self.body

    def __bytes__(self) -> bytes:
        return self.encode()


@dataclass(eq=True)
class Request(Message):
    method: str
    uri: Uri
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def start_line(self) -> str:
        return f"{self.method} {self.uri} {SIP_VERSION}"

    @property
    def max_forwards(self) -> int:
        value = self.get("Max-Forwards")
        return 70 if value is None else int(value.strip())


@dataclass(eq=True)
class Response(Message):
    status: int
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def start_line(self) -> str:
        # Status-Line = SIP-Version SP Status-Code SP Reason-Phrase: the SP stays even before
        # an empty reason, and stripping would change a reason that ends in spaces.
        return f"{SIP_VERSION} {self.status} {self.reason}"


def _split_header_section(data: bytes) -> tuple[str, bytes]:
    end = data.find(b"\r\n\r\n")
    # A bare-LF header section ends at its first "\n\n", even if the body holds CRLF CRLF.
    lf_end = data.find(b"\n\n", 0, len(data) if end < 0 else end)
    if lf_end >= 0:
        head, body = data[:lf_end].removesuffix(b"\r"), data[lf_end + 2 :]  # "\r\n\n" too
    elif end >= 0:
        head, body = data[:end], data[end + 4 :]
    else:
        # A message with no body may lack the final empty line on UDP.
        head, body = data.rstrip(b"\r\n"), b""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # Reason phrases and display names must be UTF-8, but be lenient elsewhere.
        text = head.decode("utf-8", "surrogateescape")
    return text, body


def parse_headers(lines: list[str]) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    append = headers.append
    cache = _NAME_CACHE
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon:
            raise SipParseError(f"bad header line {line[:40]!r}")
        canon = cache.get(name)
        if canon is None:
            stripped = name.rstrip(" \t")
            if not _HEADER_NAME.match(stripped):
                raise SipParseError(f"bad header line {line[:40]!r}")
            canon = canonical_name(stripped)
            if len(cache) < _NAME_CACHE_MAX:
                cache[name] = canon
        value = value.strip(" \t")
        if canon in LIST_HEADERS and value:  # an empty Allow, Supported, Accept... is allowed
            if "," not in value and '"' not in value:  # what split_quoted would give
                append((canon, value))
                continue
            for item in split_quoted(value, ","):
                item = item.strip(" \t")
                if not item:
                    raise SipParseError(f"empty value in {canon}")
                append((canon, item))
        else:
            append((canon, value))
    return headers


def _validate(
    headers: list[tuple[str, str]],
) -> tuple[dict[str, str], dict[str, tuple[Any, Any]]]:
    """Check the headers the core relies on.

    Returns the single-valued ones by name, and the parsed values worth keeping (top Via,
    From, To, CSeq, Contacts) as Message._views entries.
    """
    singles: dict[str, str] = {}
    views: dict[str, tuple[Any, Any]] = {}
    contact_texts: list[str] = []
    contacts: list[NameAddr | None] = []
    has_via = False
    for name, value in headers:
        if name in SINGLE_HEADERS:
            if name in singles:
                raise SipParseError(f"{name} appears more than once")
            singles[name] = value
        elif name == "Via" and not has_via:
            has_via = True
            views["Via"] = (value, parse_via(value))
            continue
        check = _VALIDATORS.get(name)
        if check is not None:
            result = check(value)
            if name == "Contact":
                contact_texts.append(value)
                contacts.append(result)
            elif name in _KEPT_VIEWS:
                views[name] = (value, result)
    missing = ([] if has_via else ["Via"]) + [
        n for n in ("From", "To", "Call-ID", "CSeq") if n not in singles
    ]
    if missing:
        raise SipParseError("missing " + ", ".join(missing))
    views["Contact"] = (tuple(contact_texts), tuple(contacts))
    return singles, views


_KEPT_VIEWS = frozenset({"From", "To", "CSeq"})


def parse_message(data: bytes) -> Request | Response:
    """Parse one complete message (a UDP datagram or a framed stream message)."""
    data = data.lstrip(b"\r\n")  # CRLF keep-alives before the start line
    if not data:
        raise SipParseError("empty message")
    text, body = _split_header_section(data)
    if "\n " in text or "\n\t" in text:
        text = _FOLD.sub(" ", text)
    text = text.replace("\r\n", "\n")
    if "\r" in text:
        # Other parsers may take a lone CR for a line end and so read other headers than we
        # do (header smuggling through a proxy): refuse the message instead.
        raise SipParseError("bare CR in the header section")
    lines = text.split("\n")
    start, header_lines = lines[0], lines[1:]
    # The start line first, so an unsupported version gets its 505 whatever the headers hold.
    message: Request | Response
    if start[:4].upper() == "SIP/":  # SIP-Version is case-insensitive (RFC 3261 7.1)
        message = _parse_status_line(start, [])
    else:
        message = _parse_request_line(start, [])
    message.headers = headers = parse_headers(header_lines)
    singles, views = _validate(headers)
    if isinstance(message, Request):
        number, method = views["CSeq"][1]
        if method != message.method:
            raise SipParseError(f"CSeq method {method} does not match {message.method}")
    length_text = singles.get("Content-Length")
    if length_text is not None:
        length = int(length_text.strip())
        if length > len(body):
            raise SipParseError(f"Content-Length {length} exceeds the {len(body)} body bytes")
        body = body[:length]
    message.body = body
    message._views = views
    return message


def _parse_request_line(line: str, headers: list[tuple[str, str]]) -> Request:
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise SipParseError(f"bad request line {line[:80]!r}")
    method, uri_text, version = parts
    known = _METHODS.get(method)
    if known is not None:
        method = known  # one shared string, not one per message kept in each transaction key
    elif not _METHOD.match(method):
        raise SipParseError(f"bad method {method!r}")
    if version.upper() != SIP_VERSION:
        if re.fullmatch(r"SIP/\d+\.\d+", version, re.I):
            raise SipParseError(f"SIP version {version} not supported", status=505)
        raise SipParseError(f"bad SIP version {version!r}")
    if uri_text.startswith("<"):
        raise SipParseError("Request-URI must not be enclosed in <>")
    uri = parse_uri(uri_text)
    if uri.headers:
        raise SipParseError("Request-URI must not carry headers")
    return Request(method, uri, headers)


def _parse_status_line(line: str, headers: list[tuple[str, str]]) -> Response:
    version, _, rest = line.partition(" ")
    code, _, reason = rest.partition(" ")
    if version.upper() != SIP_VERSION:
        raise SipParseError(f"bad SIP version {version!r}", status=505)
    if len(code) != 3 or not _is_digits(code) or not 100 <= int(code) <= 699:
        raise SipParseError(f"bad status code {code[:12]!r}")
    return Response(int(code), reason, headers)
