"""SIP URIs, name-addr values and generic parameters (RFC 3261 sections 19.1, 20.10, 25.1).

Parsed values keep user parts and display names unescaped; serialisation
escapes them again, so parse(str(x)) == x.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import SipParseError

Params = dict[str, str | None]

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*\Z")
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9])?\.?\Z")
_IPV6 = re.compile(r"\[[0-9A-Fa-f:.]+\]\Z")
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")
# Characters a user part may carry unescaped: unreserved / user-unreserved.
_USER_SAFE = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'()&=+$,;?/"
)
_PASSWORD_SAFE = (_USER_SAFE - set(";?/")) | set("&=+$,")
# Bytes that never appear raw inside a URI (we reject rather than guess).
_URI_FORBIDDEN = re.compile(r"[\x00-\x20\x7f<>\"]")
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"\Z', re.S)
_BAD_VALUE = re.compile(r'[ \t"<>,]')
# Parameters in their everyday form (tokens, unquoted values free of LWS, quotes, <>, ','
# and ';'): what parse_params' general path accepts and splits the same way.
_TOKEN_CLASS = r"[A-Za-z0-9\-.!%*_+`'~]"
_PLAIN_VALUE = r'[^ \t"<>,;]'
_SIMPLE_PARAMS = re.compile(
    rf"{_TOKEN_CLASS}+(?:={_PLAIN_VALUE}+)?(?:;{_TOKEN_CLASS}+(?:={_PLAIN_VALUE}+)?)*\Z"
)
# A SIP URI in its everyday form: lower-case scheme, a user part without ':', '%', '?'
# (so no password, escapes or headers), a host name or IPv4 address, a port, then params
# without '?' or '@'. Anything else takes parse_uri's general path.
_SIMPLE_SIP_URI = re.compile(
    r"(sips?):(?:([^@:%?]+)@)?"
    r"([A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9])?\.?)(?::([0-9]{1,5}))?(?:;([^?@]*))?\Z"
)
# Narrower still, for the refresh lane (appliance/refresh.py), which answers without
# parsing into objects: every text these match, parse_uri and parse_name_addr accept with
# the groups' values (a port over 65535 aside: check it). User parts hold no escapes, so
# the user group is the parsed user; a quoted display name holds no escapes or ';'.
_PLAIN_URI = (
    r"(sips?:(?:([A-Za-z0-9\-_.!~*'()&=+$,]+)@)?"
    r"[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9])?\.?(?::([0-9]{1,5}))?"
    rf"(?:;{_TOKEN_CLASS}+(?:=[^\x00-\x20\x7f\"<>,;?@]+)?)*)"
)
PLAIN_URI = re.compile(_PLAIN_URI + r"\Z")
PLAIN_NAME_ADDR = re.compile(
    rf"(?:\"([^\"\\\x00-\x1f\x7f;]*)\"[ \t]*|({_TOKEN_CLASS}+(?:[ \t]+{_TOKEN_CLASS}+)*)[ \t]*)?"
    rf"<{_PLAIN_URI}>"
    rf"((?:;{_TOKEN_CLASS}+(?:=(?:{_PLAIN_VALUE}+|\"[^\"\\\x00-\x1f\x7f;]*\"))?)*)\Z"
)


def is_token(text: str) -> bool:
    return bool(_TOKEN.match(text))


def _unescape(text: str, what: str) -> str:
    if "%" not in text:
        return text
    out = bytearray()
    i = 0
    raw = text.encode("utf-8", "surrogateescape")
    while i < len(raw):
        if raw[i] == 0x25:  # '%'
            hexpair = raw[i + 1 : i + 3]
            if len(hexpair) != 2 or not all(c in b"0123456789abcdefABCDEF" for c in hexpair):
                raise SipParseError(f"bad %-escape in {what}")
            out.append(int(hexpair, 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", "surrogateescape")


def _escape(text: str, safe: frozenset[str] | set[str]) -> str:
    if safe.issuperset(text):
        return text
    out = []
    for ch in text:
        if ch in safe:
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8", "surrogateescape"))
    return "".join(out)


def _parse_port(text: str, what: str) -> int:
    # isascii: str.isdigit() also accepts digits such as "²" that int() refuses.
    if not (text.isascii() and text.isdigit()) or len(text) > 5 or int(text) > 65535:
        raise SipParseError(f"bad port in {what}: {text!r}")
    return int(text)


def check_host(host: str, what: str) -> str:
    if not (_HOSTNAME.match(host) or _IPV6.match(host)):
        raise SipParseError(f"bad host in {what}: {host!r}")
    return host


def split_hostport(text: str, what: str) -> tuple[str, int | None]:
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError(f"unterminated IPv6 reference in {what}")
        host, rest = text[: end + 1], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise SipParseError(f"junk after IPv6 reference in {what}")
        port = _parse_port(rest[1:], what) if rest else None
    else:
        host, sep, port_text = text.partition(":")
        port = _parse_port(port_text, what) if sep else None
    return check_host(host, what), port


def uri_host(ip: str) -> str:
    """An address as a URI host: IPv6 literals go in brackets."""
    return f"[{ip}]" if ":" in ip and not ip.startswith("[") else ip


def format_hostport(host: str, port: int | None) -> str:
    return host if port is None else f"{host}:{port}"


def parse_params(text: str, what: str) -> Params:
    """Parse `;name=value;flag` (text starts after the first ';')."""
    if _SIMPLE_PARAMS.match(text):
        return _split_simple_params(text)
    params: Params = {}
    for item in split_quoted(text, ";"):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not name or not is_token(name):
            raise SipParseError(f"bad parameter {item.strip()!r} in {what}")
        if sep:
            value = value.strip()
            if not value:
                raise SipParseError(f"empty value for parameter {name!r} in {what}")
            if value.startswith('"'):
                # The whole value must be one quoted-string: "a\\" is one, "a" "b" is not.
                if not _QUOTED.match(value):
                    raise SipParseError(f"bad quoted value for parameter {name!r} in {what}")
            elif _BAD_VALUE.search(value):
                raise SipParseError(f"bad value for parameter {name!r} in {what}")
            params[name.lower()] = value
        else:
            params[name.lower()] = None
    return params


def _split_simple_params(text: str) -> Params:
    """Parameters already matched by _SIMPLE_PARAMS."""
    params: Params = {}
    for item in text.split(";"):
        name, sep, value = item.partition("=")
        params[name.lower()] = value if sep else None
    return params


def format_params(params: Params) -> str:
    if not params:
        return ""
    return "".join([f";{k}" if v is None else f";{k}={v}" for k, v in params.items()])


def split_quoted(text: str, sep: str) -> list[str]:
    """Split on `sep` outside quoted strings and <...>; an unbalanced quote is an error."""
    if '"' not in text and "<" not in text:
        return text.split(sep)
    parts: list[str] = []
    start = 0
    quoted = False
    angle = False
    i = 0
    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            angle = True
        elif ch == ">":
            angle = False
        elif ch == sep and not angle:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    if quoted:
        raise SipParseError("unterminated quoted string")
    parts.append(text[start:])
    return parts


def unquote(text: str) -> str:
    """Inner text of a quoted-string (with \\-escapes resolved)."""
    inner = text[1:-1]
    if "\\" not in inner:
        return inner
    return re.sub(r"\\(.)", r"\1", inner, flags=re.S)


_QUOTE_SPECIAL = re.compile(r'[\\"\x00-\x08\x0b\x0c\x0e-\x1f\x7f]')


def quote(text: str) -> str:
    # Controls may only appear as quoted-pairs; CR and LF cannot appear at all (they would
    # end the header line), so they become spaces.
    text = text.replace("\r", " ").replace("\n", " ")
    return '"' + _QUOTE_SPECIAL.sub(lambda m: "\\" + m.group(), text) + '"'


@dataclass(eq=True)
class Uri:
    """A SIP/SIPS URI, or any other absolute URI kept opaque (tel:, http:, ...)."""

    scheme: str = "sip"
    user: str | None = None
    host: str = ""
    port: int | None = None
    params: Params = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    password: str | None = None
    opaque: str | None = None  # everything after "scheme:" for non-SIP schemes

    @property
    def is_sip(self) -> bool:
        return self.opaque is None

    @property
    def transport(self) -> str:
        value = self.params.get("transport")
        if value:
            return value.upper()
        return "TLS" if self.scheme == "sips" else "UDP"

    def aor(self) -> str:
        """The address-of-record form used as a location key: scheme:user@host."""
        user = f"{_escape(self.user, _USER_SAFE)}@" if self.user is not None else ""
        return f"{self.scheme}:{user}{self.host.lower()}"

    def copy(self, **changes: object) -> Uri:
        if not changes:
            return Uri(self.scheme, self.user, self.host, self.port, dict(self.params),
                       dict(self.headers), self.password, self.opaque)
        values = {
            "scheme": self.scheme, "user": self.user, "host": self.host, "port": self.port,
            "params": dict(self.params), "headers": dict(self.headers),
            "password": self.password, "opaque": self.opaque,
        }
        values.update(changes)
        return Uri(**values)  # type: ignore[arg-type]

    def __str__(self) -> str:
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        user = self.user
        if user is None:
            userinfo = ""
        else:
            userinfo = _escape(user, _USER_SAFE)
            if self.password is not None:
                userinfo += ":" + _escape(self.password, _PASSWORD_SAFE)
            userinfo += "@"
        port = self.port
        if port is None:
            text = f"{self.scheme}:{userinfo}{self.host}"
        else:
            text = f"{self.scheme}:{userinfo}{self.host}:{port}"
        if self.params:
            text += format_params(self.params)
        if self.headers:
            text += "?" + "&".join(f"{k}={v}" for k, v in self.headers.items())
        return text


def parse_uri(text: str) -> Uri:
    if _URI_FORBIDDEN.search(text):
        raise SipParseError(f"bad character in URI {text!r}")
    m = _SIMPLE_SIP_URI.match(text)
    if m is not None:
        scheme, user, host, port_text, param_text = m.groups()
        port = None
        if port_text is not None:
            port = int(port_text)
            if port > 65535:
                port = -1  # out of range: the general path says so
        if port != -1:
            if param_text is None:
                params: Params = {}
            elif _SIMPLE_PARAMS.match(param_text):
                params = _split_simple_params(param_text)
            else:
                params = parse_params(param_text, f"URI {text!r}")
            return Uri(scheme, user, host, port, params, {}, None)
    scheme, sep, rest = text.partition(":")
    if not sep or not _SCHEME.match(scheme):
        raise SipParseError(f"bad URI scheme in {text!r}")
    scheme = scheme.lower()
    if scheme not in ("sip", "sips"):
        if not rest:
            raise SipParseError(f"empty {scheme} URI")
        return Uri(scheme=scheme, opaque=rest)
    what = f"URI {text!r}"
    user = password = None
    # '@' cannot appear unescaped in params or headers, so the first one ends the userinfo;
    # the user part itself may hold '?', ';', '/' (user-unreserved, RFC 4475 3.1.1.2).
    at = rest.find("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        if ":" in userinfo:
            # A user part may contain ';' (user params) but never an unescaped ':'.
            userinfo, _, pw = userinfo.partition(":")
            password = _unescape(pw, what)
        if not userinfo:
            raise SipParseError(f"empty user part in {what}")
        user = _unescape(userinfo, what)
    headers: dict[str, str] = {}
    rest, qsep, header_text = rest.partition("?")
    if qsep:
        for item in header_text.split("&"):
            name, eq, value = item.partition("=")
            if not name or not eq:
                raise SipParseError(f"bad header {item!r} in {what}")
            headers[name] = value
    hostport, _, param_text = rest.partition(";")
    host, port = split_hostport(hostport, what)
    params = parse_params(param_text, what) if param_text or rest.endswith(";") else {}
    return Uri(scheme, user, host, port, params, headers, password)


@dataclass(eq=True)
class NameAddr:
    """A From/To/Contact/Route value: optional display name, URI, header parameters."""

    uri: Uri
    display: str | None = None
    params: Params = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        display = "" if self.display is None else quote(self.display) + " "
        return f"{display}<{self.uri}>{format_params(self.params)}"


_DISPLAY_TOKENS = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+(?:[ \t]+[A-Za-z0-9\-.!%*_+`'~]+)*\Z")


def parse_name_addr(text: str, what: str = "address") -> NameAddr:
    """Parse name-addr (`"Bob" <sip:..>;tag=x`) or addr-spec (`sip:..;tag=x`) with params."""
    text = text.strip()
    display: str | None = None
    if text.startswith('"'):
        i = 1
        while i < len(text) and text[i] != '"':
            i += 2 if text[i] == "\\" else 1
        if i >= len(text):
            raise SipParseError(f"unterminated display name in {what}")
        display = unquote(text[: i + 1])
        text = text[i + 1 :].lstrip()
        if not text.startswith("<"):
            raise SipParseError(f"quoted display name without <URI> in {what}")
    lt = text.find("<")
    if lt >= 0:
        if display is None and lt > 0:
            words = text[:lt].strip()
            if words and not _DISPLAY_TOKENS.match(words):
                raise SipParseError(f"display name {words!r} must be quoted in {what}")
            display = words or None
        gt = text.find(">", lt)
        if gt < 0:
            raise SipParseError(f"unterminated <URI> in {what}")
        uri = parse_uri(text[lt + 1 : gt])
        rest = text[gt + 1 :].strip()
    else:
        # addr-spec: ';' starts header parameters, and ',', '?' are not allowed (RFC 3261 20.10).
        uri_text, semi, rest = text.partition(";")
        rest = semi + rest
        if "?" in uri_text or "," in uri_text:
            raise SipParseError(f"URI with '?' or ',' must be enclosed in <> in {what}")
        uri = parse_uri(uri_text.strip())
    if rest and not rest.startswith(";"):
        raise SipParseError(f"junk after URI in {what}: {rest[:20]!r}")
    params = parse_params(rest[1:], what) if rest else {}
    return NameAddr(uri, display, params)
