"""One stream connection of the SIP transport: TCP, or TLS over it (RFC 3261 18).

Frames messages out of the byte stream (framing.py), answers CRLF keep-alive pings, and
drops a peer that stops reading. With TLS, a `TlsSession` (tls.py) sits between the socket
and the framer; a connection accepted on the SIP port becomes a box link ("MTLS") when its
first byte starts a TLS handshake.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from .errors import SipParseError
from .framing import StreamFramer
from .tls import HANDSHAKE_RECORD, MTLS, TlsError, TlsSession
from .transaction import Address

if TYPE_CHECKING:
    from .transport import SipTransport

log = logging.getLogger("meshsip.transport")
MAX_WRITE_BUFFER = 4 * 1024 * 1024
_PONG = b"\r\n"


def _normal_host(host: str) -> str:
    """A peer address as the node should see it: no brackets, no IPv4-mapped form."""
    host = host.strip("[]")
    if host.startswith("::ffff:") and "." in host[7:]:
        return host[7:]
    return host


def _peer(transport: asyncio.BaseTransport) -> tuple[str, int]:
    peername = transport.get_extra_info("peername")
    if not peername:
        return "", 0
    return _normal_host(str(peername[0])), int(peername[1])


class StreamConnection(asyncio.Protocol):
    """One TCP or TLS connection, inbound (accepted) or outbound (opened by send)."""

    def __init__(self, owner: SipTransport, outbound: Address | None = None,
                 kind: str = "TCP") -> None:
        assert owner._loop is not None
        self.owner = owner
        self.outbound = outbound
        self.kind = kind  # "TCP", or "TLS"/"MTLS" with a TlsSession
        self.tls: TlsSession | None = None
        # accepted on the SIP port: a box's link if its first byte starts a TLS handshake
        self.sniff = kind == "TCP" and outbound is None and owner.tls is not None \
            and owner.tls.link_server is not None
        if kind != "TCP":
            self._start_tls(kind)
        self.transport: asyncio.Transport | None = None
        self.framer = StreamFramer()
        self.pings_answered = 0
        self.pending: list[bytes] = []  # written before the connection was up
        self.keys: list[tuple[str, str, int]] = []  # (kind, host, port) it is found by
        self.peer = ("", 0)
        self.dead = False
        self.closed: asyncio.Future[None] = owner._loop.create_future()
        self.last_active = owner._loop.time()
        owner._all.add(self)
        owner.counters["connections"] += 1
        owner.counters["connections_total"] += 1

    def _start_tls(self, kind: str) -> None:
        settings = self.owner.tls
        assert settings is not None
        context = settings.context(kind, self.outbound is None)
        assert context is not None
        check = settings.check_link_peer if kind == MTLS else None
        self.kind = kind
        self.tls = TlsSession(context, self.outbound is None, check)

    def _tls_failed(self, exc: TlsError) -> None:
        assert self.tls is not None
        if self.tls.established:  # else counted when the connection is lost
            self.owner.counters["tls_failures"] += 1
        log.info("%s connection with %s dropped: %s", self.kind, self.peer, exc)
        self._unsent(exc)
        if self.transport is not None:
            self.transport.abort()

    def _unsent(self, exc: Exception) -> None:
        """Messages given to an outbound TLS connection that never carried them."""
        assert self.tls is not None
        dropped, self.pending = self.pending + self.tls.take_queued(), []
        if self.outbound is not None:
            for data in dropped:
                self.owner._send_failed(self.outbound, data, exc)

    def register(self, key: tuple[str, str, int]) -> None:
        if key not in self.keys:
            self.keys.append(key)
        self.owner._conns[key] = self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer = _peer(transport)
        self.last_active = self.owner._loop.time()  # type: ignore[union-attr]
        if self.outbound is None and len(self.owner._all) > self.owner.max_connections:
            self.owner.counters["connections_rejected"] += 1
            log.warning("too many TCP connections: refusing %s", self.peer)
            transport.abort()
            return
        if self.peer[0] and (self.kind, *self.peer) not in self.owner._conns:
            self.register((self.kind, *self.peer))
        if self.tls is not None:
            transport.write(self.tls.start())  # a client's hello
            for data in self.pending:
                self.write(data)  # queued in the session until the handshake is done
            self.pending = []
            return
        pending, self.pending = self.pending, []
        for data in pending:
            self.write(data)

    def write(self, data: bytes, message: bool = True) -> None:
        """Send `data`: a message (counted, its failure reported), or a keep-alive pong."""
        if self.transport is None:
            self.pending.append(data)
            return
        if self.tls is not None:
            try:
                raw = self.tls.send(data)
            except TlsError as exc:
                if message:
                    self.owner._send_failed(self.outbound or (self.kind, *self.peer), data, exc)
                self._tls_failed(exc)
                return
            if raw:
                self.transport.write(raw)
        else:
            self.transport.write(data)
        self.owner.counters["sent"] += message
        self.last_active = self.owner._loop.time()  # type: ignore[union-attr]
        if self.transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            dest = self.outbound or (self.kind, *self.peer)
            log.warning("TCP peer %s is not reading: closing the connection", self.peer)
            self.owner._send_failed(dest, data, ConnectionError("TCP peer is not reading"))
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        owner = self.owner
        self.last_active = owner._loop.time()  # type: ignore[union-attr]
        if self.sniff:
            self.sniff = False
            if data[0] == HANDSHAKE_RECORD:
                self._become_link()
        if self.tls is not None:
            try:
                data, raw = self.tls.receive(data)
            except TlsError as exc:
                self._tls_failed(exc)
                return
            if raw and self.transport is not None:
                self.transport.write(raw)
            if not data:
                return
        try:
            messages = self.framer.feed(data)
        except SipParseError as exc:
            owner.counters["framing_errors"] += 1
            log.warning("closing TCP connection from %s: %s", self.peer, exc)
            assert self.transport is not None
            self.transport.abort()
            return
        if self.framer.pings > self.pings_answered:
            self.pings_answered = self.framer.pings
            owner.counters["keepalives"] += 1
            self.write(_PONG, message=False)  # one pong per read, never a ping back
        source: Address = (self.kind, *self.peer)
        for message in messages:
            if self.dead:
                break
            owner._deliver(message, source)

    def _become_link(self) -> None:
        """An accepted connection whose client speaks TLS: a box's link (see tls.py)."""
        key = ("TCP", *self.peer)
        if self.owner._conns.get(key) is self:
            del self.owner._conns[key]
        self.keys = [k for k in self.keys if k != key]
        self._start_tls(MTLS)
        self.register((MTLS, *self.peer))

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self.tls is not None and not self.tls.established:
            self.owner.counters["tls_failures"] += 1  # refused by either side, or cut short
            log.info("%s handshake with %s did not complete", self.kind, self.peer)
            self._unsent(ConnectionError(f"{self.kind} handshake did not complete"))
        self.forget()
        if not self.closed.done():
            self.closed.set_result(None)

    def connect_failed(self, exc: Exception) -> None:
        dropped, self.pending = self.pending, []
        self.forget()
        if not self.closed.done():
            self.closed.set_result(None)
        log.info(
            "TCP connect to %s failed (%d messages dropped): %s", self.outbound, len(dropped), exc
        )
        assert self.outbound is not None
        for data in dropped:
            self.owner._send_failed(self.outbound, data, exc)

    def forget(self) -> None:
        if self.dead:
            return
        self.dead = True
        owner = self.owner
        for key in self.keys:
            if owner._conns.get(key) is self:
                del owner._conns[key]
        owner._all.discard(self)
        owner.counters["connections"] -= 1

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
