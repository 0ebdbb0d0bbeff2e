import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.sip import framing
from overlay.sip.errors import SipParseError
from overlay.sip.framing import MAX_BODY, MAX_HEADER_SECTION, StreamFramer, content_length
from overlay.sip.message import parse_message


def sip(
    body: bytes = b"", length_header: str | None = "Content-Length", branch: str = "1"
) -> bytes:
    head = (
        "INVITE sip:bob@example.org SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bK{branch}\r\n"
        "From: <sip:alice@example.org>;tag=a\r\n"
        "To: <sip:bob@example.org>\r\n"
        f"Call-ID: call-{branch}\r\n"
        "CSeq: 1 INVITE\r\n"
    )
    if length_header is not None:
        head += f"{length_header}: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def feed_all(framer: StreamFramer, chunks: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for chunk in chunks:
        out.extend(framer.feed(chunk))
    return out


def split(data: bytes, offsets: list[int]) -> list[bytes]:
    cuts = [0, *sorted({min(o, len(data)) for o in offsets}), len(data)]
    return [data[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]


def test_single_message_with_body() -> None:
    msg = sip(b"v=0\r\n\r\nbody with a blank line\r\n\r\n")
    framer = StreamFramer()
    assert framer.feed(msg) == [msg]
    assert framer.buffered == 0
    assert parse_message(msg).body == b"v=0\r\n\r\nbody with a blank line\r\n\r\n"


def test_several_messages_in_one_chunk() -> None:
    msgs = [sip(b"x" * n, branch=str(n)) for n in (0, 1, 10, 0, 300)]
    framer = StreamFramer()
    assert framer.feed(b"".join(msgs)) == msgs
    assert framer.pings == 0


def test_partial_message_waits_then_completes() -> None:
    msg = sip(b"0123456789")
    framer = StreamFramer()
    assert framer.feed(msg[:-3]) == []
    assert framer.buffered == len(msg) - 3
    assert framer.feed(msg[-3:] + msg[:5]) == [msg]
    assert framer.buffered == 5


STREAM = (
    b"\r\n\r\n".join(
        [sip(b"hello\r\n\r\nworld", branch="a"), sip(branch="b"), sip(b"\r\n", branch="c")]
    )
    + b"\r\n\r\n"
)


@pytest.mark.parametrize("offset", range(len(STREAM) + 1))
def test_split_at_every_offset(offset: int) -> None:
    framer = StreamFramer()
    whole = StreamFramer().feed(STREAM)
    assert len(whole) == 3
    assert feed_all(framer, [STREAM[:offset], STREAM[offset:]]) == whole
    assert framer.pings == 3
    assert framer.buffered == 0


def test_one_byte_at_a_time() -> None:
    framer = StreamFramer()
    out = feed_all(framer, [STREAM[i : i + 1] for i in range(len(STREAM))])
    assert out == StreamFramer().feed(STREAM)
    assert framer.pings == 3


_LENGTH_NAMES = st.sampled_from(
    ["Content-Length", "content-length", "CONTENT-LENGTH", "l", "L", "Content-Length "]
)


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[bytes], int]:
    messages: list[bytes] = []
    data = b""
    pings = 0
    for i in range(draw(st.integers(1, 5))):
        sep = draw(st.sampled_from([b"", b"\r\n", b"\r\n\r\n"]))
        pings += sep == b"\r\n\r\n"
        body = draw(st.binary(max_size=200) | st.sampled_from([b"\r\n\r\n", b"\n\n", b"\r\n"]))
        name = draw(_LENGTH_NAMES | st.none()) if not body else draw(_LENGTH_NAMES)
        msg = sip(body, name, branch=str(i))
        messages.append(msg)
        data += sep + msg
    if draw(st.booleans()):
        data += b"\r\n\r\n"
        pings += 1
    return data, messages, pings


@settings(max_examples=300)
@given(streams(), st.lists(st.integers(min_value=0, max_value=2000), max_size=30))
def test_any_split_gives_the_same_messages(
    stream: tuple[bytes, list[bytes], int], offsets: list[int]
) -> None:
    data, messages, pings = stream
    framer = StreamFramer()
    assert feed_all(framer, split(data, offsets)) == messages
    assert framer.pings == pings
    assert framer.buffered == 0


def test_keepalive_ping_and_pong() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n") == []
    assert framer.pings == 1
    assert framer.feed(b"\r\n") == []  # a pong (single CRLF) is not a ping
    assert framer.pings == 1
    assert framer.feed(b"\r\n") == []  # ... but two of them make a double CRLF
    assert framer.pings == 2
    assert framer.feed(b"\r") == []
    assert framer.feed(b"\n\r") == []
    assert framer.pings == 2
    assert framer.feed(b"\n") == []
    assert framer.pings == 3
    assert framer.buffered == 0


def test_crlf_before_a_message_is_skipped_and_not_a_ping() -> None:
    msg = sip(b"abc")
    framer = StreamFramer()
    assert framer.feed(b"\r\n" + msg + b"\r\n" + msg) == [msg, msg]
    assert framer.pings == 0


def test_missing_content_length_means_empty_body() -> None:
    msg = sip(length_header=None)
    framer = StreamFramer()
    assert framer.feed(msg + msg) == [msg, msg]


@pytest.mark.parametrize(
    "header",
    [b"l: 3", b"L:3", b"CONTENT-LENGTH:   3  ", b"content-length\t: 3", b"Content-Length:\r\n  3"],
)
def test_content_length_spellings(header: bytes) -> None:
    msg = b"MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n" + header + b"\r\n\r\nabc"
    assert StreamFramer().feed(msg + b"OPTIONS") == [msg]


def test_header_that_merely_contains_content_length_is_ignored() -> None:
    head = b"MESSAGE sip:a@b SIP/2.0\r\nX-Content-Length: 99\r\nSubject: l: 5\r\n"
    assert content_length(head) == 0


def test_bare_lf_line_endings() -> None:
    msg = b"OPTIONS sip:a@b SIP/2.0\nVia: SIP/2.0/TCP h\nl: 2\n\nok"
    assert StreamFramer().feed(msg + msg) == [msg, msg]


@pytest.mark.parametrize("value", [b"abc", b"-1", b"", b"1 2", b"+4", b"0x10", b"99999999999"])
def test_bad_content_length(value: bytes) -> None:
    framer = StreamFramer()
    with pytest.raises(SipParseError):
        framer.feed(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: " + value + b"\r\n\r\n")
    with pytest.raises(SipParseError):  # the stream is out of sync for good
        framer.feed(sip())


def test_conflicting_content_lengths() -> None:
    with pytest.raises(SipParseError, match="conflicting"):
        StreamFramer().feed(b"OPTIONS sip:a@b SIP/2.0\r\nl: 1\r\nContent-Length: 2\r\n\r\nab")
    # The same value twice frames unambiguously (the parser may still reject it).
    msg = b"OPTIONS sip:a@b SIP/2.0\r\nl: 2\r\nContent-Length: 2\r\n\r\nab"
    assert StreamFramer().feed(msg) == [msg]


def test_header_section_too_long_without_end() -> None:
    framer = StreamFramer()
    line = b"X-Filler: " + b"a" * 1000 + b"\r\n"
    framer.feed(b"OPTIONS sip:a@b SIP/2.0\r\n")
    with pytest.raises(SipParseError):
        for _ in range(MAX_HEADER_SECTION // len(line) + 2):
            framer.feed(line)
    assert framer.buffered <= MAX_HEADER_SECTION + 2 * len(line)


def test_header_section_limit_is_independent_of_chunking() -> None:
    start = b"OPTIONS sip:a@b SIP/2.0\r\nX: "
    ok = start + b"a" * (MAX_HEADER_SECTION - len(start) - 4) + b"\r\n\r\n"
    assert len(ok) == MAX_HEADER_SECTION
    assert StreamFramer().feed(ok) == [ok]
    framer = StreamFramer()
    assert feed_all(framer, [ok[i : i + 4096] for i in range(0, len(ok), 4096)]) == [ok]
    too_long = start + b"a" * (MAX_HEADER_SECTION - len(start) - 3) + b"\r\n\r\n"
    with pytest.raises(SipParseError):
        StreamFramer().feed(too_long)
    with pytest.raises(SipParseError):
        feed_all(StreamFramer(), [too_long[:-3], too_long[-3:]])
    for cut in range(len(too_long) - 6, len(too_long)):
        with pytest.raises(SipParseError):
            feed_all(StreamFramer(), [too_long[:cut], too_long[cut:]])


def test_body_too_large_is_refused_before_it_arrives() -> None:
    framer = StreamFramer()
    head = b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: " + str(MAX_BODY + 1).encode()
    with pytest.raises(SipParseError):
        framer.feed(head + b"\r\n\r\n")
    body = b"x" * MAX_BODY
    msg = b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: " + str(MAX_BODY).encode()
    msg += b"\r\n\r\n" + body
    assert StreamFramer().feed(msg) == [msg]


class CountingPattern:
    """Stands in for the header-end pattern and counts the bytes each search may scan."""

    def __init__(self, pattern: re.Pattern[bytes]) -> None:
        self.pattern = pattern
        self.scanned = 0

    def search(self, buf: bytearray, pos: int = 0) -> re.Match[bytes] | None:
        self.scanned += len(buf) - pos
        return self.pattern.search(buf, pos)


def test_small_chunks_do_not_rescan_the_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    counting = CountingPattern(framing._HEADER_END)
    monkeypatch.setattr(framing, "_HEADER_END", counting)
    head = b"OPTIONS sip:a@b SIP/2.0\r\nX: " + b"a" * 60_000 + b"\r\nl: 1048576\r\n\r\n"
    msg = head + b"b" * MAX_BODY
    framer = StreamFramer()
    out: list[bytes] = []
    for i in range(len(head)):
        out += framer.feed(head[i : i + 1])
    for i in range(len(head), len(msg), 1024):
        out += framer.feed(msg[i : i + 1024])
    assert out == [msg]
    assert counting.scanned < 3 * len(head)  # each header byte looked at a bounded number of times
