"""The deployment's users file for digest auth: TOML, `[users]` then `"1001" = "secret"` lines."""

from __future__ import annotations

import os
import re
import tomllib

_EXTENSION = re.compile(r"[A-Za-z0-9._+-]+")
_TOML_TYPES = {dict: "a table", list: "an array", bool: "a boolean", int: "an integer"}


class UsersFileError(Exception):
    """The users file is missing or wrong; the message names the file and the problem."""


def load_users(path: str | os.PathLike[str]) -> dict[str, str]:
    """Return {extension: password} from the users file at path."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise UsersFileError(f"{name}: users file not found") from None
    except OSError as e:
        raise UsersFileError(f"{name}: cannot read users file: {e.strerror}") from None
    except UnicodeDecodeError:
        raise UsersFileError(f"{name}: not valid UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        raise UsersFileError(f"{name}: invalid TOML: {e}") from None  # e names line and column

    users = data.get("users")
    if users is None:
        raise UsersFileError(f"{name}: missing [users] table")
    if not isinstance(users, dict):
        raise UsersFileError(f"{name}: 'users' must be a table, e.g. [users]")
    for extension, password in users.items():
        if not _EXTENSION.fullmatch(extension):
            raise UsersFileError(
                f"{name}: [users] extension {extension!r} may only contain "
                "letters, digits and . _ + -"
            )
        if not isinstance(password, str):
            kind = _TOML_TYPES.get(type(password), type(password).__name__)
            raise UsersFileError(
                f"{name}: [users] password for {extension!r} must be a string, not {kind}"
            )
        if not password:  # an empty password would let anyone take over the extension
            raise UsersFileError(f"{name}: [users] password for {extension!r} is empty")
    return dict(users)
