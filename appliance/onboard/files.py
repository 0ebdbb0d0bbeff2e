"""Provisioning files per vendor: which file a path asks for, and its text.

Minimal files that register line 1 (../shared/FIELD-NOTES.md, "Phone provisioning"):
Yealink `<mac>.cfg` (first line exactly `#!version:1.0.0.1`) and its common file
`y0000000000XX.cfg`, Grandstream `cfg<mac>.xml`, Snom `<MAC>.xml`, Polycom `<mac>.cfg`
(told from Yealink's by the User-Agent) and Linphone's remote provisioning XML. Every
value is escaped for its format; the screen label shows the extension.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

MAC = re.compile(r"[0-9a-f]{12}")
_MAC_FILE = re.compile(r"(cfg)?([0-9a-fA-F]{12})\.(cfg|xml)")
YEALINK_COMMON = re.compile(r"y0000000000[0-9a-fA-F]{2}\.cfg")
VENDORS = ("yealink", "snom", "grandstream", "polycom", "linphone")


def normal_mac(text: str) -> str | None:
    """`00:15:65:73:22:FF`, `MAC%3a0015657322ff`, `0015657322ff` -> `0015657322ff`."""
    text = text.strip().lower()
    text = text.removeprefix("mac").replace("%3a", "").replace(":", "").replace("-", "")
    return text if MAC.fullmatch(text) else None


@dataclass(frozen=True)
class Account:
    extension: str
    password: str
    server: str  # the box's address phones register at
    port: int = 5060
    realm: str = "meshsip"


def vendor_of(user_agent: str, hint: str = "") -> str | None:
    """The vendor named by an HTTP User-Agent (or a PnP `vendor=` parameter)."""
    text = f"{user_agent} {hint}".lower()
    for vendor in ("yealink", "snom", "grandstream", "polycom", "linphone"):
        if vendor in text:
            return vendor
    return None


def wanted(name: str, user_agent: str) -> tuple[str, str | None] | None:
    """(vendor, mac) a file name under /prov/ asks for; mac None for a common file."""
    if YEALINK_COMMON.fullmatch(name):
        return ("yealink", None)
    m = _MAC_FILE.fullmatch(name)
    if m is None:
        return None
    prefix, mac, ext = m.group(1), m.group(2), m.group(3)
    if prefix:
        return ("grandstream", mac.lower()) if ext == "xml" else None
    if ext == "xml":
        return ("snom", mac.lower())
    return ("polycom" if vendor_of(user_agent) == "polycom" else "yealink", mac.lower())


def render(vendor: str, account: Account) -> tuple[str, str]:
    """(text, content type) of the file that gives a phone of `vendor` its account."""
    return _RENDER[vendor](account)


def yealink_common() -> tuple[str, str]:
    return "#!version:1.0.0.1\n", "text/plain; charset=utf-8"


def _yealink(a: Account) -> tuple[str, str]:
    lines = ["#!version:1.0.0.1",
             "account.1.enable = 1",
             f"account.1.label = {a.extension}",
             f"account.1.display_name = {a.extension}",
             f"account.1.user_name = {a.extension}",
             f"account.1.auth_name = {a.extension}",
             f"account.1.password = {a.password}",
             f"account.1.sip_server.1.address = {a.server}",
             f"account.1.sip_server.1.port = {a.port}"]
    return "\n".join(lines) + "\n", "text/plain; charset=utf-8"


def _grandstream(a: Account) -> tuple[str, str]:
    values = {"P271": "1", "P270": a.extension, "P47": f"{a.server}:{a.port}",
              "P35": a.extension, "P36": a.extension, "P34": a.password, "P3": a.extension}
    body = "".join(f"    <{k}>{escape(v)}</{k}>\n" for k, v in values.items())
    text = ('<?xml version="1.0" encoding="UTF-8"?>\n<gs_provision version="1">\n'
            f'  <config version="1">\n{body}  </config>\n</gs_provision>\n')
    return text, "application/xml"


def _snom(a: Account) -> tuple[str, str]:
    values = {"user_active": "on", "user_realname": a.extension, "user_name": a.extension,
              "user_pname": a.extension, "user_pass": a.password,
              "user_host": f"{a.server}:{a.port}"}
    body = "".join(f'    <{k} idx="1" perm="">{escape(v)}</{k}>\n' for k, v in values.items())
    text = ('<?xml version="1.0" encoding="utf-8"?>\n<settings>\n  <phone-settings>\n'
            f"{body}  </phone-settings>\n</settings>\n")
    return text, "application/xml"


def _polycom(a: Account) -> tuple[str, str]:
    attrs = {"reg.1.address": a.extension, "reg.1.label": a.extension,
             "reg.1.auth.userId": a.extension, "reg.1.auth.password": a.password,
             "reg.1.server.1.address": a.server, "reg.1.server.1.port": str(a.port)}
    body = " ".join(f"{k}={quoteattr(v)}" for k, v in attrs.items())
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<polycomConfig>\n  <reg {body}/>\n'
            "</polycomConfig>\n"), "application/xml"


def _linphone(a: Account) -> tuple[str, str]:
    identity = f"sip:{a.extension}@{a.server}"
    sections = {
        "proxy_0": {"reg_identity": identity, "reg_proxy": f"<sip:{a.server}:{a.port}>",
                    "reg_sendregister": "1", "reg_expires": "600"},
        "auth_info_0": {"username": a.extension, "passwd": a.password, "realm": a.realm,
                        "domain": a.server},
    }
    body = "".join(
        f'  <section name="{name}">\n'
        + "".join(f'    <entry name="{k}" overwrite="true">{escape(v)}</entry>\n'
                  for k, v in entries.items())
        + "  </section>\n"
        for name, entries in sections.items())
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<config xmlns="http://www.linphone.org/xsds/lpconfig.xsd">\n'
            f"{body}</config>\n"), "application/xml"


_RENDER = {"yealink": _yealink, "grandstream": _grandstream, "snom": _snom,
           "polycom": _polycom, "linphone": _linphone}
