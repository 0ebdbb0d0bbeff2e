"""TLS for the SIP transport: sans-IO sessions over memory buffers, and their settings.

Two kinds of TLS stream share the transport's connection code (`stream.StreamConnection`):
- "TLS": SIP over TLS (RFC 3261 26) for phones, on the box's TLS port (5061);
- "MTLS": box-to-box links, on the SIP port itself. A box opening a link starts TLS at
  once; the SIP port tells the two apart by the first byte a client sends (a TLS
  handshake record starts with 0x16, a SIP message with a letter or CRLF), so a box's
  links need no port of their own and no advertisement.

A `TlsSession` wraps `ssl.SSLObject` over `ssl.MemoryBIO`s: bytes from the socket go in,
plain text and bytes to send come out. That lets an accepted connection become TLS after
its first bytes were read (asyncio's start_tls cannot take back bytes already read).
After the handshake `check_peer(der_or_None, server_side)` (set per kind in
`TlsSettings`) says who the peer is, or raises to refuse it; the connection keeps what it
returned (`peer`) for the layers above.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass

TLS = "TLS"  # SIP over TLS (phones)
MTLS = "MTLS"  # box-to-box links on the SIP port
HANDSHAKE_RECORD = 0x16  # first byte of a TLS ClientHello record
MAX_PENDING = 1 << 20  # plain text queued while the handshake runs

# der (None: the peer sent no certificate), server_side -> who the peer is; raises to refuse
CheckPeer = Callable[[bytes | None, bool], object]


class TlsError(Exception):
    """A TLS handshake or record that failed; the connection is dropped."""


@dataclass
class TlsSettings:
    """The contexts of each kind; a kind whose contexts are None is not offered."""

    server: ssl.SSLContext | None = None  # the TLS port, for phones
    client: ssl.SSLContext | None = None  # SIP over TLS toward phones
    link_server: ssl.SSLContext | None = None  # box links accepted on the SIP port
    link_client: ssl.SSLContext | None = None  # box links we open
    check_link_peer: CheckPeer | None = None

    def context(self, kind: str, server_side: bool) -> ssl.SSLContext | None:
        if kind == TLS:
            return self.server if server_side else self.client
        return self.link_server if server_side else self.link_client


class TlsSession:
    """One TLS connection's state: feed it what the socket read, write what it returns."""

    def __init__(self, context: ssl.SSLContext, server_side: bool,
                 check_peer: CheckPeer | None = None) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._in, self._out, server_side=server_side,
                                     server_hostname=None)
        self.server_side = server_side
        self.check_peer = check_peer
        self.established = False
        self.peer: object = None
        self._queued: list[bytes] = []
        self._queued_bytes = 0

    def start(self) -> bytes:
        """The first bytes to send (a client's ClientHello; nothing for a server)."""
        if not self.server_side:
            self._handshake()
        return self._out.read()

    def receive(self, data: bytes) -> tuple[bytes, bytes]:
        """(plain text received, bytes to send). Raises TlsError when the session fails."""
        self._in.write(data)
        if not self.established and not self._handshake():
            return b"", self._out.read()
        chunks = []
        try:
            while chunk := self._ssl.read(65536):
                chunks.append(chunk)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        except ssl.SSLZeroReturnError:
            pass  # the peer closed TLS; the socket's EOF follows
        except ssl.SSLError as exc:
            raise TlsError(f"TLS record failed: {exc.reason or exc}") from None
        return b"".join(chunks), self._out.read()

    def send(self, data: bytes) -> bytes:
        """The bytes to write for plain text `data` (queued until the handshake is done)."""
        if not self.established:
            self._queued_bytes += len(data)
            if self._queued_bytes > MAX_PENDING:
                raise TlsError("TLS handshake stalled with too much queued")
            self._queued.append(data)
            return b""
        try:
            self._ssl.write(data)
        except ssl.SSLError as exc:
            raise TlsError(f"TLS write failed: {exc.reason or exc}") from None
        return self._out.read()

    def take_queued(self) -> list[bytes]:
        """The plain text never sent (the handshake failed), emptied."""
        queued, self._queued, self._queued_bytes = self._queued, [], 0
        return queued

    def _handshake(self) -> bool:
        try:
            self._ssl.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False
        except ssl.SSLError as exc:
            raise TlsError(f"TLS handshake failed: {exc.reason or exc}") from None
        if self.check_peer is not None:
            try:
                self.peer = self.check_peer(self._ssl.getpeercert(binary_form=True),
                                            self.server_side)
            except Exception as exc:  # the check's own refusal, said as is
                raise TlsError(f"TLS peer refused: {exc}") from None
        self.established = True
        queued, self._queued, self._queued_bytes = self._queued, [], 0
        for data in queued:
            self._ssl.write(data)
        return True

    @property
    def version(self) -> str | None:
        return self._ssl.version()
