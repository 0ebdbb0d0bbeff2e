"""SIP over UDP, TCP and TLS with asyncio (RFC 3261 section 18): a thin adapter.

`SipTransport` binds UDP and TCP on the same port, hands every received message
to `on_message(raw_bytes, source_address)` unparsed, and sends raw bytes to an
`Address`. Stream connections are shared by direction: a connection the peer opened
to us is keyed by its transport and the peer's address, so a response sent to the
address a request came from goes back on that connection (RFC 3261 18.2.2).
With `tls` settings (tls.py) it also listens for SIP over TLS ("TLS") on a port of its
own and takes box links ("MTLS") on the SIP port.

Network failures never raise out of `send`; they are reported to
`on_send_error(dest, exc)` from a later event-loop callback (never from inside
`send`), once per message that was not sent. `exc` is a `SendError` (an
OSError carrying the errno of the cause) whose `data` is that message, so the
node can find the transaction it belongs to (`client_key_of(parse_message(data))`);
`exc.__cause__` is the network error itself (ConnectionRefusedError, TimeoutError...).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from .stream import MAX_WRITE_BUFFER, StreamConnection
from .tls import MTLS, TLS, TlsSettings
from .transaction import Address  # ("UDP" | "TCP" | "TLS" | "MTLS", host, port)

OnMessage = Callable[[bytes, Address], None]
OnSendError = Callable[[Address, Exception], None]

log = logging.getLogger("meshsip.transport")

UDP_RCVBUF = 2 * 1024 * 1024
IDLE_TIMEOUT = 600.0
CONNECT_TIMEOUT = 10.0
MAX_CONNECTIONS = 1000
_BIND_ATTEMPTS = 20
UDP_READ_BATCH = 64  # datagrams read per wake-up at most, so TCP and timers get their turn
_UDP_MAX = 65535
_IP_VERSIONS: dict[str, int | None] = {}  # host text -> IP version (or None: a name)


class SendError(OSError):
    """One message that could not be sent to `dest`; `data` is the message."""

    def __init__(self, dest: Address, data: bytes, cause: Exception) -> None:
        text = f"sending to {dest[0]} {dest[1]}:{dest[2]} failed: {cause}"
        if isinstance(cause, OSError) and cause.errno is not None:
            super().__init__(cause.errno, text)
        else:
            super().__init__(text)
        self.dest = dest
        self.data = data
        self.__cause__ = cause


def _ip_version(host: str) -> int | None:
    version = _IP_VERSIONS.get(host, 0)
    if version != 0:
        return version
    try:
        version = ipaddress.ip_address(host).version
    except ValueError:
        version = None
    if len(_IP_VERSIONS) >= 4096:
        _IP_VERSIONS.clear()
    _IP_VERSIONS[host] = version
    return version


def _normal_host(host: str) -> str:
    """A peer address as the node should see it: no brackets, no IPv4-mapped form."""
    host = host.strip("[]")
    if host.startswith("::ffff:") and _ip_version(host[7:]) == 4:
        return host[7:]
    return host


def _bind_error(proto: str, host: str, port: int, exc: OSError) -> OSError:
    if exc.errno == errno.EADDRINUSE:
        text = f"{proto} port {port} on {host} is already in use"
    elif exc.errno == errno.EACCES:
        text = f"no permission to bind {proto} port {port} on {host}"
    elif exc.errno == errno.EADDRNOTAVAIL:
        text = f"cannot bind {proto} port {port}: {host} is not an address of this machine"
    else:
        text = f"cannot bind {proto} port {port} on {host}: {exc.strerror or exc}"
    return OSError(exc.errno, text)


class SipTransport:
    def __init__(self, on_message: OnMessage, on_send_error: OnSendError | None = None) -> None:
        self.on_message = on_message
        self.on_send_error = on_send_error
        self.idle_timeout = IDLE_TIMEOUT  # seconds; may be changed before start()
        self.connect_timeout = CONNECT_TIMEOUT
        self.max_connections = MAX_CONNECTIONS
        self.counters: dict[str, int] = {
            "received": 0,  # messages handed to on_message (UDP and TCP)
            "sent": 0,  # messages written to a socket
            "framing_errors": 0,  # TCP connections closed for a framing error
            "send_errors": 0,  # failures reported to on_send_error
            "callback_errors": 0,  # exceptions raised by on_message / on_send_error
            "connections": 0,  # TCP connections now open or opening
            "connections_total": 0,  # TCP connections ever accepted or opened
            "connections_rejected": 0,  # accepted over max_connections and closed
            "keepalives": 0,  # CRLF pings answered on TCP, blank UDP datagrams dropped
            "tls_failures": 0,  # TLS connections dropped: handshake, peer check, records
        }
        self.tls: TlsSettings | None = None  # set before start() to offer TLS
        self.tls_port = 0  # where the TLS listener is bound (0: none)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._udp: _UdpEndpoint | None = None
        self._server: asyncio.Server | None = None
        self._tls_server: asyncio.Server | None = None
        self._family = socket.AF_INET
        self._host = ""
        self._port = 0
        self._conns: dict[tuple[str, str, int], StreamConnection] = {}  # by kind, peer address
        self._all: set[StreamConnection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    # -- lifecycle ----------------------------------------------------------------

    async def start(self, host: str, port: int) -> None:
        """Listen on UDP and TCP `port` (0: a free port, the same for both)."""
        if self._loop is not None:
            raise RuntimeError("SipTransport.start() called twice")
        loop = asyncio.get_running_loop()
        host = host.strip("[]") or "0.0.0.0"
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
        family, sockaddr = infos[0][0], infos[0][4]
        udp_sock, tcp_sock = self._bind_both(family, sockaddr, host, port)
        self._loop = loop
        self._family = family
        self._host, self._port = str(udp_sock.getsockname()[0]), udp_sock.getsockname()[1]
        try:
            self._udp = _UdpEndpoint(self, udp_sock, loop)
            self._server = await loop.create_server(lambda: StreamConnection(self), sock=tcp_sock)
        except BaseException:
            self._loop = None
            if self._udp is not None:
                self._udp.close()
            udp_sock.close()
            tcp_sock.close()
            raise
        self._schedule_sweep()
        log.info("listening on UDP and TCP %s port %d", self._host, self._port)

    def _bind_both(
        self, family: int, sockaddr: tuple, host: str, port: int
    ) -> tuple[socket.socket, socket.socket]:
        for _ in range(_BIND_ATTEMPTS if port == 0 else 1):
            udp = socket.socket(family, socket.SOCK_DGRAM)
            try:
                udp.setblocking(False)
                try:
                    udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
                except OSError:
                    pass  # best effort; the kernel caps it at net.core.rmem_max anyway
                udp.bind(sockaddr)
            except OSError as exc:
                udp.close()
                raise _bind_error("UDP", host, port, exc) from exc
            bound = udp.getsockname()[1]
            tcp = socket.socket(family, socket.SOCK_STREAM)
            try:
                tcp.setblocking(False)
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tcp.bind((sockaddr[0], bound, *sockaddr[2:]))
                tcp.listen(128)
            except OSError as exc:
                tcp.close()
                udp.close()
                if port == 0 and exc.errno == errno.EADDRINUSE:
                    continue  # the free UDP port is taken for TCP: try another one
                raise _bind_error("TCP", host, bound, exc) from exc
            return udp, tcp
        raise OSError(
            errno.EADDRINUSE,
            f"no port free for both UDP and TCP on {host} after {_BIND_ATTEMPTS} attempts",
        )

    async def listen_tls(self, port: int) -> None:
        """Listen for SIP over TLS on TCP `port` (0: a free one), after start()."""
        assert self._loop is not None and self.tls is not None and self.tls.server is not None
        try:
            self._tls_server = await self._loop.create_server(
                lambda: StreamConnection(self, kind=TLS), self._host, port,
                family=self._family, reuse_address=True)
        except OSError as exc:
            raise _bind_error("TLS", self._host, port, exc) from exc
        self.tls_port = self._tls_server.sockets[0].getsockname()[1]
        log.info("listening on TLS %s port %d", self._host, self.tls_port)

    def peer_of(self, source: Address) -> object:
        """Who the TLS peer of the connection `source` names is (None: unknown)."""
        conn = self._conns.get(source)
        return None if conn is None or conn.tls is None else conn.tls.peer

    def alias(self, source: Address, port: int) -> None:
        """The stream `source` also serves its peer's `port` (the port a phone on TLS
        names in its Via and Contact), so requests to that address reuse it (cf. RFC 5923);
        only for the peer's own IP, at most a few per connection; the latest connection
        wins (a phone that connected again)."""
        conn = self._conns.get(source)
        key = (source[0], source[1], port)
        if conn is not None and (key in conn.keys or len(conn.keys) < 4):
            conn.register(key)

    @property
    def local_port(self) -> int:
        return self._port

    @property
    def local_host(self) -> str:
        return self._host

    async def close(self) -> None:
        """Close the listeners and every connection; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for server in (self._server, self._tls_server):
            if server is not None:
                server.close()
        if self._udp is not None:
            self._udp.close()
        conns = list(self._all)
        for conn in conns:
            conn.close()
        waits = [c.closed for c in conns if c.transport is not None]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=2.0)
            for conn in conns:
                if conn.closed in pending and conn.transport is not None:
                    conn.transport.abort()  # peer not reading: drop the unsent data
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        for conn in conns:
            conn.forget()  # still connecting when its task was cancelled
        if self._server is not None:
            await self._server.wait_closed()
        if self._tls_server is not None:
            await self._tls_server.wait_closed()
        self._conns.clear()
        self._all.clear()

    # -- sending ------------------------------------------------------------------

    def send(self, data: bytes, dest: Address) -> None:
        """Send one message; failures go to on_send_error(dest, exc), never raise."""
        if self._loop is None:
            raise RuntimeError("SipTransport.send() before start()")
        if self._closed:
            log.debug("dropping a message to %s: transport closed", dest)
            return
        proto, host, port = dest
        proto = proto.upper()
        host = _normal_host(host)
        if proto == "UDP":
            self._send_udp(data, host, port, dest)
        elif proto in ("TCP", TLS, MTLS):
            self._send_tcp(data, proto, host, port, dest)
        else:
            self._send_failed(dest, data, ValueError(f"unsupported transport {dest[0]!r}"))

    def answer_datagram(self, data: bytes, source: Address) -> None:
        """Send `data` back to `source`, the sender of the UDP datagram on_message is
        being given now, at the socket address it came from (not worked out again)."""
        assert self._udp is not None
        self._udp_send(data, self._udp.delivering, source)

    def _send_udp(self, data: bytes, host: str, port: int, dest: Address) -> None:
        version = _ip_version(host)
        if version is None:
            self._spawn(self._resolve_and_send_udp(data, host, port, dest))
            return
        if version == 4 and self._family == socket.AF_INET6:
            host = "::ffff:" + host
        elif version == 6 and self._family == socket.AF_INET:
            self._send_failed(dest, data, OSError(errno.EAFNOSUPPORT, "no IPv6 UDP socket"))
            return
        self._udp_send(data, (host, port), dest)

    def _udp_send(self, data: bytes, addr: Any, dest: Address) -> None:
        assert self._udp is not None
        error = self._udp.sendto(data, addr, dest)
        if error is not None:
            self._send_failed(dest, data, error)
        else:
            self.counters["sent"] += 1

    async def _resolve_and_send_udp(self, data: bytes, host: str, port: int, dest: Address) -> None:
        assert self._loop is not None
        try:
            infos = await self._loop.getaddrinfo(
                host, port, family=self._family, type=socket.SOCK_DGRAM
            )
        except OSError as exc:
            self._send_failed(dest, data, exc)
            return
        if not self._closed:
            self._send_udp(data, _normal_host(str(infos[0][4][0])), port, dest)

    def _send_tcp(self, data: bytes, proto: str, host: str, port: int, dest: Address) -> None:
        conn = self._conns.get((proto, host, port))
        if conn is None or conn.dead or (conn.transport and conn.transport.is_closing()):
            if proto != "TCP" and (self.tls is None or self.tls.context(proto, False) is None):
                self._send_failed(dest, data, ConnectionError(f"{proto} is not configured"))
                return
            conn = StreamConnection(self, outbound=dest, kind=proto)
            conn.register((proto, host, port))
            self._spawn(self._connect(conn, host, port))
        conn.write(data)

    async def _connect(self, conn: StreamConnection, host: str, port: int) -> None:
        assert self._loop is not None
        local_addr = None
        if (
            _ip_version(self._host) == _ip_version(host)
            and not ipaddress.ip_address(self._host).is_unspecified
        ):
            local_addr = (self._host, 0)  # leave from the address we were bound to
        try:
            async with asyncio.timeout(self.connect_timeout):
                await self._loop.create_connection(lambda: conn, host, port, local_addr=local_addr)
        except (OSError, TimeoutError) as exc:
            if isinstance(exc, TimeoutError) and not str(exc):
                exc = TimeoutError(f"TCP connect to {host}:{port} timed out")
            conn.connect_failed(exc)

    def _send_failed(self, dest: Address, data: bytes, exc: Exception) -> None:
        self.counters["send_errors"] += 1
        log.debug("send to %s failed: %s", dest, exc)
        if self.on_send_error is not None and self._loop is not None and not self._closed:
            self._loop.call_soon(self._call_send_error, dest, SendError(dest, data, exc))

    def _call_send_error(self, dest: Address, exc: Exception) -> None:
        if self._closed or self.on_send_error is None:
            return
        try:
            self.on_send_error(dest, exc)
        except Exception:
            self.counters["callback_errors"] += 1
            log.exception("on_send_error raised for %s", dest)

    # -- receiving ----------------------------------------------------------------

    def _deliver(self, data: bytes, source: Address) -> None:
        if self._closed:
            return
        self.counters["received"] += 1
        try:
            self.on_message(data, source)
        except Exception:
            self.counters["callback_errors"] += 1
            log.exception("on_message raised for a message from %s", source)

    # -- housekeeping -------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _schedule_sweep(self) -> None:
        assert self._loop is not None
        period = max(0.05, min(60.0, self.idle_timeout / 2))
        self._sweeper = self._loop.call_later(period, self._sweep)

    def _sweep(self) -> None:
        """Close connections idle for longer than idle_timeout (one pass per period)."""
        if self._closed:
            return
        assert self._loop is not None
        deadline = self._loop.time() - self.idle_timeout
        for conn in list(self._all):
            if conn.transport is not None and conn.last_active < deadline:
                log.debug("closing idle TCP connection to %s", conn.keys)
                conn.close()
        self._schedule_sweep()


class _UdpEndpoint:
    """The UDP socket, served straight from the event loop's selector.

    asyncio's datagram transport reads one datagram per pass of the event loop (a poll
    each); this drains up to UDP_READ_BATCH per wake-up, and sends without queueing unless
    the socket buffer is full.
    """

    def __init__(
        self, owner: SipTransport, sock: socket.socket, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.owner = owner
        self.sock = sock
        self.loop = loop
        self.fd = sock.fileno()
        self.backlog: deque[tuple[bytes, Any, Address]] = deque()
        self.backlog_bytes = 0
        self.closed = False
        # Source addresses by socket address: one shared tuple per peer, not one per datagram.
        self.sources: dict[Any, Address] = {}
        self.delivering: Any = None  # the socket address of the datagram being delivered
        loop.add_reader(self.fd, self._readable)

    def _readable(self) -> None:
        owner = self.owner
        recvfrom = self.sock.recvfrom
        counters = owner.counters
        sources = self.sources
        for _ in range(UDP_READ_BATCH):
            if self.closed:
                return
            try:
                data, addr = recvfrom(_UDP_MAX)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # An ICMP error for an earlier datagram: no way to tell which destination.
                counters["send_errors"] += 1
                log.debug("UDP socket error: %s", exc)
                continue
            if not data.strip(b"\r\n \t\0"):
                counters["keepalives"] += 1  # CRLF keep-alive: nothing to parse
                continue
            source = sources.get(addr)
            if source is None:
                if len(sources) >= 4096:
                    sources.clear()
                source = sources[addr] = ("UDP", _normal_host(str(addr[0])), int(addr[1]))
            self.delivering = addr
            owner._deliver(data, source)

    def sendto(self, data: bytes, addr: Any, dest: Address) -> Exception | None:
        """Send or queue one datagram; the error when it cannot be sent at all."""
        if self.closed:
            return ConnectionError("UDP socket closed")
        if not self.backlog:
            try:
                self.sock.sendto(data, addr)
                return None
            except (BlockingIOError, InterruptedError):
                self.loop.add_writer(self.fd, self._writable)
            except OSError as exc:
                return exc
        if self.backlog_bytes + len(data) > MAX_WRITE_BUFFER:
            return ConnectionError("UDP send buffer full")
        self.backlog.append((data, addr, dest))
        self.backlog_bytes += len(data)
        return None

    def _writable(self) -> None:
        backlog = self.backlog
        while backlog and not self.closed:
            data, addr, dest = backlog[0]
            try:
                self.sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.owner._send_failed(dest, data, exc)
            backlog.popleft()
            self.backlog_bytes -= len(data)
        self.loop.remove_writer(self.fd)

    def close(self) -> None:
        if self.closed:
            return
        self._writable()  # what the socket takes now; the rest is dropped
        self.closed = True
        self.loop.remove_reader(self.fd)
        self.loop.remove_writer(self.fd)
        self.backlog.clear()
        self.sock.close()
