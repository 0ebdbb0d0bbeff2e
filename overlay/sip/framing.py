"""Message framing on stream transports (RFC 3261 section 18.3, RFC 5626 section 4.4.1).

Sans-IO: `StreamFramer.feed` takes whatever bytes a TCP connection delivered and
returns the complete messages (header section plus Content-Length body bytes) it
now holds; the rest is kept for the next call. CRLFs between messages are
skipped; each double CRLF among them is an RFC 5626 keep-alive ping and is
counted in `pings`, so the connection can answer a single CRLF pong.

Each byte is examined a bounded number of times: the search for the end of the
header section resumes where the previous one stopped, and once the header
section is complete the framer only waits for the body length to arrive.
"""

from __future__ import annotations

import re

from .errors import SipParseError

MAX_HEADER_SECTION = 64 * 1024  # start line, header lines and the empty line
MAX_BODY = 1024 * 1024

# The empty line that ends a header section: CRLF CRLF, leniently also bare LFs.
_HEADER_END = re.compile(rb"\n\r?\n")
_CRLFS = re.compile(rb"[\r\n]*")
_CONTENT_LENGTH_NAMES = (b"content-length", b"l")


class StreamFramer:
    """Split a SIP byte stream into messages.

    After `feed` has raised `SipParseError` the stream cannot be resynchronised:
    the connection must be closed (later calls raise the same error again).
    """

    def __init__(
        self, max_header_section: int = MAX_HEADER_SECTION, max_body: int = MAX_BODY
    ) -> None:
        self.max_header_section = max_header_section
        self.max_body = max_body
        self.pings = 0  # double-CRLF keep-alives seen so far (cumulative)
        self._buf = bytearray()
        self._scan = 0  # where the search for the header end resumes
        self._length: int | None = None  # whole length of the current message, once known
        self._newlines = 0  # LFs in the current run of keep-alive CR/LF bytes
        self._error: SipParseError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held back for an incomplete message."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        if self._error is not None:
            raise self._error
        buf = self._buf
        buf += data
        messages: list[bytes] = []
        pos = 0
        try:
            while True:
                if self._length is None:
                    pos = self._skip_keepalives(pos)
                    if pos == len(buf):
                        break
                    length = self._find_length(pos)
                    if length is None:
                        break
                    self._length = length
                end = pos + self._length
                if len(buf) < end:
                    break
                messages.append(bytes(buf[pos:end]))
                pos = end
                self._length = None
                self._scan = pos
        except SipParseError as exc:
            self._error = exc
            raise
        finally:
            if pos:
                del buf[:pos]  # bytearray drops a prefix without moving the rest
                self._scan = max(0, self._scan - pos)
        return messages

    def _skip_keepalives(self, pos: int) -> int:
        buf = self._buf
        end = _CRLFS.match(buf, pos).end()  # type: ignore[union-attr]  # always matches
        if end > pos:
            self._newlines += buf.count(b"\n", pos, end)
            self.pings += self._newlines // 2
            self._newlines %= 2
        if end < len(buf):
            self._newlines = 0  # a message starts here
            self._scan = max(self._scan, end)
        return end

    def _find_length(self, pos: int) -> int | None:
        """Whole length of the message starting at `pos`, or None until its header ends."""
        buf = self._buf
        match = _HEADER_END.search(buf, max(pos, self._scan))
        if match is None:
            # A header end still to come ends past the bytes buffered now.
            self._scan = max(pos, len(buf) - 2)
            if len(buf) - pos >= self.max_header_section:
                raise self._too_long()
            return None
        if match.end() - pos > self.max_header_section:
            raise self._too_long()
        body = content_length(bytes(buf[pos : match.start()]))
        if body > self.max_body:
            raise SipParseError(f"body of {body} bytes exceeds {self.max_body}", status=413)
        return match.end() - pos + body

    def _too_long(self) -> SipParseError:
        return SipParseError(
            f"header section longer than {self.max_header_section} bytes", status=513
        )


def content_length(head: bytes) -> int:
    """Content-Length of a header section (start line and header lines); 0 when absent."""
    values: set[bytes] = set()
    current: list[bytes] | None = None  # value pieces of a Content-Length being unfolded
    for line in head.split(b"\n")[1:]:
        line = line.rstrip(b"\r")
        if line[:1] in (b" ", b"\t"):
            if current is not None:
                current.append(line)
            continue
        if current is not None:
            values.add(b" ".join(current).strip())
            current = None
        name, colon, value = line.partition(b":")
        if colon and name.strip(b" \t").lower() in _CONTENT_LENGTH_NAMES:
            current = [value]
    if current is not None:
        values.add(b" ".join(current).strip())
    if not values:
        return 0  # required on streams (RFC 3261 18.3), but be lenient
    if len(values) > 1:
        raise SipParseError("conflicting Content-Length values")
    text = values.pop().strip(b" \t")
    if not text.isdigit() or len(text) > 10:
        raise SipParseError(f"bad Content-Length {text[:20]!r}")
    return int(text)
