"""Node configuration: sane defaults, an optional TOML file, and command-line overrides.

Every key is optional; a box with no file at all runs. Mistakes in the file are
reported with the file name and the key, never as a traceback.
"""

from __future__ import annotations

import os
import socket
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from overlay.names import check_overlay_name


class ConfigError(Exception):
    pass


def default_data_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/meshsip")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "meshsip"


@dataclass
class Config:
    bind: str = "0.0.0.0"
    sip_port: int = 5060
    tls_port: int = 5061  # SIP over TLS for phones (0: none); box links use sip_port
    data_dir: Path = field(default_factory=default_data_dir)
    t1_ms: int = 500  # RFC 3261 T1; smaller on fast private links makes timeouts come sooner
    policy: str = "open"  # "open": first come, first bound; "digest": passwords in users_file
    realm: str = "meshsip"
    users_file: Path | None = None
    # Offered in this order. MD5 alone by default: Debian's baresip 1.0.0 rejects a 401
    # that offers SHA-256 at all, and sipp 3.6.1 answers only an MD5 first challenge.
    digest_algorithms: list[str] = field(default_factory=lambda: ["MD5"])
    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 3600
    log_level: str = "info"
    overlay: str = "meshsip"  # boxes of one deployment share it; another name never mixes
    discovery: bool = True  # mDNS; off, the box still uses seeds and its peer cache
    interfaces: list[str] = field(default_factory=list)  # mDNS only on these (empty: all)
    seeds: list[str] = field(default_factory=list)  # "host:port" of boxes to try first
    ca_cert: Path | None = None  # the deployment CA: only boxes it certified may join
    node_cert: Path | None = None  # this box's certificate (default data_dir/node.crt)
    overlay_transport: str = "auto"  # box-to-box: "auto" (UDP, TCP when big) or "tcp"
    box_name: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    web_port: int | None = None  # None: 80 (8080 without the right to bind 80); 0: off
    web_operator_password: str | None = None  # none: the web pages only show, never change
    enroll_window: int = 1800  # seconds enrolment is open after start (appliance/onboard)
    enroll_secret: str | None = None  # shared by every box: passwords of allocated extensions
    enroll_first: int = 2000  # extensions allocated to new phones: first..last
    enroll_last: int = 2999


# TOML layout: section -> {key in the file: Config attribute}
_LAYOUT: dict[str, dict[str, str]] = {
    "sip": {"bind": "bind", "port": "sip_port", "tls_port": "tls_port", "t1_ms": "t1_ms"},
    "node": {"data_dir": "data_dir", "log_level": "log_level", "name": "box_name"},
    "web": {"port": "web_port", "operator_password": "web_operator_password"},
    "enroll": {"window": "enroll_window", "secret": "enroll_secret",
               "first_extension": "enroll_first", "last_extension": "enroll_last"},
    "overlay": {
        "name": "overlay", "discovery": "discovery", "interfaces": "interfaces",
        "seeds": "seeds", "ca_cert": "ca_cert", "node_cert": "node_cert",
        "transport": "overlay_transport",
    },
    "registrar": {
        "policy": "policy", "realm": "realm", "users_file": "users_file",
        "digest_algorithms": "digest_algorithms",
        "min_expires": "min_expires", "max_expires": "max_expires",
        "default_expires": "default_expires",
    },
}
_TYPES = {f.name: f.type for f in fields(Config)}


def load_config(path: Path | None, overrides: dict[str, Any] | None = None) -> Config:
    values: dict[str, Any] = {}
    if path is not None:
        values.update(_read_file(path))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    config = Config(**values)
    _check(config, path)
    return config


def _read_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    values: dict[str, Any] = {}
    for section, table in data.items():
        keys = _LAYOUT.get(section)
        if keys is None or not isinstance(table, dict):
            known = ", ".join(f"[{s}]" for s in _LAYOUT)
            raise ConfigError(f"{path}: unknown section [{section}] (known: {known})")
        for key, value in table.items():
            attr = keys.get(key)
            if attr is None:
                raise ConfigError(
                    f"{path}: unknown key {key!r} in [{section}] (known: {', '.join(keys)})"
                )
            values[attr] = _coerce(path, f"{section}.{key}", attr, value)
    return values


def _coerce(path: Path, where: str, attr: str, value: Any) -> Any:
    kind = str(_TYPES[attr])
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: {where} must be true or false, not {value!r}")
        return value
    if "list" in kind:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{path}: {where} must be a list of strings, not {value!r}")
        return value
    if "int" in kind:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: {where} must be a whole number, not {value!r}")
        return value
    if not isinstance(value, str):
        raise ConfigError(f"{path}: {where} must be a string, not {value!r}")
    if "Path" in kind:
        p = Path(value).expanduser()
        return p if p.is_absolute() else path.parent / p
    return value


def _check(config: Config, path: Path | None) -> None:
    where = f"{path}: " if path else ""
    if not 0 <= config.sip_port <= 65535:
        raise ConfigError(f"{where}SIP port {config.sip_port} is not between 0 and 65535")
    if not 0 <= config.tls_port <= 65535:
        raise ConfigError(f"{where}sip.tls_port {config.tls_port} is not between 0 and 65535")
    if config.web_port is not None and not 0 <= config.web_port <= 65535:
        raise ConfigError(f"{where}web port {config.web_port} is not between 0 and 65535")
    if not 1 <= config.enroll_first <= config.enroll_last or config.enroll_window < 0:
        raise ConfigError(f"{where}[enroll]: need 1 <= first_extension <= last_extension "
                          "and window >= 0")
    if not 1 <= len(config.box_name) <= 64 or not config.box_name.isprintable():
        raise ConfigError(f"{where}node.name must be 1 to 64 printable characters")
    if config.policy not in ("open", "digest"):
        raise ConfigError(
            f"{where}registrar policy must be 'open' or 'digest', not {config.policy!r}"
        )
    if config.policy == "digest" and config.users_file is None:
        raise ConfigError(f"{where}registrar policy 'digest' needs registrar.users_file")
    bad = [a for a in config.digest_algorithms if a not in ("MD5", "SHA-256")]
    if bad or not config.digest_algorithms:
        raise ConfigError(f"{where}registrar.digest_algorithms takes 'MD5' and/or 'SHA-256'")
    try:
        check_overlay_name(config.overlay)
    except ValueError as exc:
        raise ConfigError(f"{where}overlay.name: {exc}") from None
    if config.overlay_transport not in ("auto", "tcp"):
        raise ConfigError(f"{where}overlay.transport must be 'auto' or 'tcp'")
    if not 1 <= config.t1_ms <= 10_000:
        raise ConfigError(f"{where}sip.t1_ms must be between 1 and 10000")
    if not 1 <= config.min_expires <= config.default_expires <= config.max_expires:
        raise ConfigError(f"{where}need 1 <= min_expires <= default_expires <= max_expires")
    if config.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"{where}log_level must be debug, info, warning or error")
