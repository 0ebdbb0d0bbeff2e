"""A small HTTP/1.1 server on asyncio streams: the box's one web server.

It faces strangers' browsers on the box's networks, so everything a client sends is
bounded: connections at once, the size of the request head, the number of headers, the
body, and the time a client may take to send a request or keep an idle connection open.
A request over a bound is answered with a plain error (400, 408, 413, 431, 503) and the
connection closed; nothing a client sends can raise out of the server.

Routes are one table: `routes.add("/path", handler)` adds a page. A handler takes the
`Request` and returns a `Response` (or an awaitable of one). A route added with
`write=True` changes something on the box: it answers only POST, and only with the
operator password (HTTP Basic, any user name) set in the config; a box with no password
set refuses every such request (read-only).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import inspect
import logging
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

log = logging.getLogger("meshsip.web")

MAX_CONNECTIONS = 64
MAX_HEAD_BYTES = 16 * 1024  # request line and headers together
MAX_HEADERS = 64
MAX_BODY = 64 * 1024
REQUEST_TIMEOUT = 10.0  # to send a whole request once it has begun
IDLE_TIMEOUT = 15.0  # a kept-alive connection with nothing more to ask
HANDLER_TIMEOUT = 10.0
MAX_REQUESTS_PER_CONNECTION = 1000
TOKEN = re.compile(r"[A-Za-z]{1,16}")

REASONS = {200: "OK", 204: "No Content", 400: "Bad Request", 401: "Unauthorized",
           403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           408: "Request Timeout", 413: "Content Too Large", 431: "Request Header Fields Too Large",
           500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable",
           505: "HTTP Version Not Supported"}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased; a repeated header keeps its last value
    body: bytes = b""
    peer: str = ""


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def text(cls, status: int, text: str, **kw: object) -> Response:
        return cls(status, (text + "\n").encode(), **kw)  # type: ignore[arg-type]


Handler = Callable[[Request], "Response | Awaitable[Response]"]


class HttpError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass
class Route:
    handler: Handler
    write: bool = False  # changes the box: POST and the operator password only


class Routes:
    def __init__(self) -> None:
        self.table: dict[str, Route] = {}
        self.prefixes: dict[str, Route] = {}  # "/prov/": every path under it

    def add(self, path: str, handler: Handler, *, write: bool = False) -> None:
        self.table[path] = Route(handler, write)

    def add_prefix(self, prefix: str, handler: Handler) -> None:
        self.prefixes[prefix] = Route(handler)

    def find(self, path: str) -> Route | None:
        route = self.table.get(path)
        if route is None:
            route = next((r for p, r in self.prefixes.items() if path.startswith(p)), None)
        return route


class HttpServer:
    def __init__(self, routes: Routes, operator_password: str | None = None) -> None:
        self.routes = routes
        self.operator_password = operator_password or None
        self.counters: Counter[str] = Counter()  # "status_200", "refused_busy", ...
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._accept, host or None, port,
                                                  limit=MAX_HEAD_BYTES, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    # -- connections ------------------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= MAX_CONNECTIONS:
            self.counters["refused_busy"] += 1
            # read what the client sent (briefly, bounded) so that closing does not reset
            # the connection before it reads the answer
            with contextlib.suppress(TimeoutError, ConnectionError):
                await asyncio.wait_for(reader.read(MAX_HEAD_BYTES), 0.2)
            await _send(writer, Response.text(503, "Too many connections; try again."), False)
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        peer = writer.get_extra_info("peername")
        try:
            await self._serve(reader, writer, peer[0] if peer else "")
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:  # the server is closing: end quietly, not as an error
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     peer: str) -> None:
        for served in range(MAX_REQUESTS_PER_CONNECTION):
            try:
                request = await self._read(reader, peer, first=served == 0)
            except HttpError as exc:
                self.counters[f"bad_{exc.status}"] += 1
                await _send(writer, Response.text(exc.status, str(exc)), False)
                return
            if request is None:  # the client closed, or stayed idle too long
                return
            keep = request.headers.get("connection", "").lower() != "close"
            response = await self._answer(request)
            self.counters[f"status_{response.status}"] += 1
            await _send(writer, response, keep, head_only=request.method == "HEAD")
            if not keep:
                return

    async def _read(self, reader: asyncio.StreamReader, peer: str,
                    first: bool) -> Request | None:
        try:  # waiting for the next request on a kept-alive connection is idle time
            start = await asyncio.wait_for(reader.readuntil(b"\n"),
                                           REQUEST_TIMEOUT if first else IDLE_TIMEOUT)
        except TimeoutError:
            if first:
                raise HttpError(408, "The request took too long.") from None
            return None
        except asyncio.IncompleteReadError:
            return None
        except asyncio.LimitOverrunError:
            raise HttpError(431, "Request line too long.") from None
        try:
            rest = await asyncio.wait_for(_read_head(reader, len(start)), REQUEST_TIMEOUT)
            request = parse_head(start + rest, peer)
            length = int(request.headers.get("content-length", "0") or "0")
            if "transfer-encoding" in request.headers:
                raise HttpError(501, "Chunked request bodies are not accepted.")
            if not 0 <= length <= MAX_BODY:
                raise HttpError(413, "Request body too large.")
            if length:
                request.body = await asyncio.wait_for(reader.readexactly(length),
                                                      REQUEST_TIMEOUT)
        except TimeoutError:
            raise HttpError(408, "The request took too long.") from None
        except ValueError:
            raise HttpError(400, "Bad Content-Length.") from None
        return request

    async def _answer(self, request: Request) -> Response:
        route = self.routes.find(request.path)
        if route is None:
            return Response.text(404, f"Nothing at {request.path}. The status page is at /.")
        if route.write:
            refusal = self._check_operator(request)
            if refusal is not None:
                return refusal
        elif request.method not in ("GET", "HEAD"):
            return Response.text(405, "Only GET here.", headers=[("Allow", "GET, HEAD")])
        try:
            result = route.handler(request)
            if inspect.isawaitable(result):
                result = await asyncio.wait_for(result, HANDLER_TIMEOUT)
            return result
        except Exception:  # a handler's bug must not close the server
            log.exception("web handler for %s failed", request.path)
            return Response.text(500, "Internal error; see the box's log.")

    def _check_operator(self, request: Request) -> Response | None:
        if request.method != "POST":
            return Response.text(405, "Only POST here.", headers=[("Allow", "POST")])
        if self.operator_password is None:
            self.counters["refused_read_only"] += 1
            return Response.text(403, "This box is read-only: no operator password is set "
                                      "in its config ([web] operator_password).")
        if not _password_matches(request.headers.get("authorization", ""),
                                 self.operator_password):
            self.counters["refused_password"] += 1
            return Response.text(401, "The operator password is needed.",
                                 headers=[("WWW-Authenticate", 'Basic realm="meshsip operator"')])
        return None


async def _read_head(reader: asyncio.StreamReader, used: int) -> bytes:
    """The header lines up to the blank line, within MAX_HEAD_BYTES and MAX_HEADERS."""
    lines: list[bytes] = []
    while True:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            raise HttpError(431, "Header line too long.") from None
        except asyncio.IncompleteReadError as exc:
            raise HttpError(400, "Connection closed inside the request.") from exc
        used += len(line)
        if used > MAX_HEAD_BYTES:
            raise HttpError(431, "Request headers too large.")
        lines.append(line)
        if line in (b"\r\n", b"\n"):
            return b"".join(lines)
        if len(lines) > MAX_HEADERS:
            raise HttpError(431, "Too many request headers.")


def parse_head(head: bytes, peer: str = "") -> Request:
    """Request line and headers (HTTP/1.0 and 1.1); HttpError(400/505) when malformed."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise HttpError(400, "Bad request.") from None
    lines = text.split("\n")
    parts = lines[0].strip().split(" ")
    if len(parts) != 3 or not TOKEN.fullmatch(parts[0]) or not parts[1].startswith("/"):
        raise HttpError(400, "Bad request line.")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise HttpError(505, "Only HTTP/1.0 and 1.1.")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        line = line.rstrip("\r")
        if not line:
            break
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or " " in name:
            raise HttpError(400, "Bad header line.")
        headers[name.lower()] = value.strip()
    if version == "HTTP/1.0" and headers.get("connection", "").lower() != "keep-alive":
        headers["connection"] = "close"
    url = urlsplit(target)
    return Request(method.upper(), url.path, dict(parse_qsl(url.query)[:32]), headers, b"", peer)


def _password_matches(authorization: str, password: str) -> bool:
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    given = decoded.partition(":")[2]
    return hmac.compare_digest(given.encode(), password.encode())


async def _send(writer: asyncio.StreamWriter, response: Response, keep: bool,
                head_only: bool = False) -> None:
    reason = REASONS.get(response.status, "Unknown")
    head = [f"HTTP/1.1 {response.status} {reason}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
            "Cache-Control: no-store",
            "X-Content-Type-Options: nosniff",
            f"Connection: {'keep-alive' if keep else 'close'}",
            *(f"{k}: {v}" for k, v in response.headers)]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
    if not head_only:
        writer.write(response.body)
    with contextlib.suppress(ConnectionError):
        await writer.drain()
