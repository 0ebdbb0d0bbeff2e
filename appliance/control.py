"""The node's local control socket: `meshsip status` asks it for the node's state.

A Unix socket in the data directory, so only local users with access to that
directory can read it. Unix socket paths are limited to about 100 bytes; a
longer one is reached through its directory (chdir) instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

MAX_SOCKET_PATH = 100
Command = Callable[..., "dict[str, Any] | Awaitable[dict[str, Any]]"]


def _short_path(path: Path) -> str:
    if len(str(path)) <= MAX_SOCKET_PATH:
        return str(path)
    os.chdir(path.parent)
    return path.name


class ControlServer:
    def __init__(self, path: Path, status: Callable[[], dict[str, Any]],
                 commands: dict[str, Command] | None = None) -> None:
        self.path = path
        # more commands by name (`overview`: the status page's document, which asks the
        # other boxes and so is awaited)
        self.commands: dict[str, Command] = {"status": status, **(commands or {})}
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = await asyncio.start_unix_server(self._serve, _short_path(self.path))
        self.path.chmod(0o660)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = (await asyncio.wait_for(reader.readline(), 5)).decode().strip()
            command, *args = line.split()[:4] or [""]  # a command and its words
            handler = self.commands.get(command)
            if handler is None:
                reply: Any = {"error": f"unknown command {command!r}"}
            else:
                reply = handler(*args)
                if inspect.isawaitable(reply):
                    reply = await asyncio.wait_for(reply, 10)
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def query(path: Path, command: str = "status", timeout: float = 5.0) -> dict[str, Any]:
    """Ask a running node; raises OSError when no node answers at `path`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(_short_path(path))
        sock.sendall(command.encode() + b"\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return json.loads(data)
