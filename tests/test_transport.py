import asyncio
import errno
import os
import socket
from collections.abc import Awaitable, Callable

import pytest

from overlay.sip.message import Request, Response, parse_message
from overlay.sip.transport import Address, SendError, SipTransport

HOST = "127.0.0.1"


def run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(coro_fn(), 20))


def register(transport: str = "UDP", body: bytes = b"", branch: str = "1") -> bytes:
    text = (
        "REGISTER sip:example.org SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:5070;branch=z9hG4bK{branch}\r\n"
        "From: <sip:alice@example.org>;tag=a\r\n"
        "To: <sip:alice@example.org>\r\n"
        f"Call-ID: reg-{branch}\r\n"
        "CSeq: 1 REGISTER\r\n"
        "Contact: <sip:alice@127.0.0.1:5070>\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return text.encode() + body


def ok_for(raw: bytes) -> bytes:
    request = parse_message(raw)
    assert isinstance(request, Request)
    headers = [(n, v) for n, v in request.headers if n in ("Via", "From", "To", "Call-ID", "CSeq")]
    return Response(200, "OK", headers).encode()


class Inbox:
    """Collects (message, source) pairs; optionally answers requests with 200 OK."""

    def __init__(self, reply: bool = False) -> None:
        self.items: asyncio.Queue[tuple[bytes, Address]] = asyncio.Queue()
        self.reply = reply
        self.transport: SipTransport | None = None

    def __call__(self, data: bytes, source: Address) -> None:
        self.items.put_nowait((data, source))
        if self.reply and not data.startswith(b"SIP/2.0"):
            assert self.transport is not None
            self.transport.send(ok_for(data), source)

    async def get(self, timeout: float = 5) -> tuple[bytes, Address]:
        return await asyncio.wait_for(self.items.get(), timeout)


async def pair(
    a_errors: list[tuple[Address, Exception]] | None = None,
) -> tuple[SipTransport, Inbox, SipTransport, Inbox]:
    """Transport A (collects) and transport B (answers every request)."""
    inbox_a, inbox_b = Inbox(), Inbox(reply=True)
    a = SipTransport(inbox_a, None if a_errors is None else lambda d, e: a_errors.append((d, e)))
    b = SipTransport(inbox_b)
    inbox_b.transport = b
    await a.start(HOST, 0)
    await b.start(HOST, 0)
    return a, inbox_a, b, inbox_b


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_udp_round_trip() -> None:
    async def main() -> None:
        a, inbox_a, b, inbox_b = await pair()
        assert a.local_port and b.local_port and a.local_port != b.local_port
        assert a.local_host == HOST
        request = register()
        a.send(request, ("UDP", HOST, b.local_port))
        data, source = await inbox_b.get()
        assert data == request
        assert source == ("UDP", HOST, a.local_port)
        data, source = await inbox_a.get()
        assert isinstance(parse_message(data), Response)
        assert source == ("UDP", HOST, b.local_port)
        assert a.counters["sent"] == 1 and a.counters["received"] == 1
        assert b.counters["received"] == 1 and b.counters["sent"] == 1
        await a.close()
        await b.close()

    run(main)


def test_udp_and_tcp_share_the_port() -> None:
    async def main() -> None:
        t = SipTransport(lambda d, s: None)
        await t.start(HOST, 0)
        port = t.local_port
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            with socket.socket(socket.AF_INET, kind) as s, pytest.raises(OSError) as err:
                s.bind((HOST, port))
            assert err.value.errno == errno.EADDRINUSE
        await t.close()

    run(main)


def test_tcp_reply_comes_back_on_the_same_connection() -> None:
    async def main() -> None:
        a, inbox_a, b, inbox_b = await pair()
        request = register("TCP", b"x" * 100)
        a.send(request, ("TCP", HOST, b.local_port))
        data, source = await inbox_b.get()
        assert data == request
        proto, host, peer_port = source
        assert (proto, host) == ("TCP", HOST)
        assert peer_port not in (0, a.local_port)  # A's ephemeral port
        data, source = await inbox_a.get()  # B answered send(ok, source)
        assert parse_message(data).status == 200  # type: ignore[union-attr]
        assert source == ("TCP", HOST, b.local_port)
        # One connection each way in total: B did not open one back to A.
        assert a.counters["connections_total"] == 1 and a.counters["connections"] == 1
        assert b.counters["connections_total"] == 1 and b.counters["connections"] == 1
        # Later messages reuse it in both directions.
        a.send(register("TCP", branch="2"), ("TCP", HOST, b.local_port))
        assert (await inbox_b.get())[1] == source[:2] + (peer_port,)
        await inbox_a.get()
        assert a.counters["connections_total"] == 1 and b.counters["connections_total"] == 1
        await a.close()
        await b.close()

    run(main)


def test_messages_queued_while_connecting_keep_their_order() -> None:
    async def main() -> None:
        a, inbox_a, b, inbox_b = await pair()
        sent = [register("TCP", str(i).encode() * i, branch=str(i)) for i in range(20)]
        for message in sent:
            a.send(message, ("TCP", HOST, b.local_port))
        got = [(await inbox_b.get())[0] for _ in sent]
        assert got == sent
        assert a.counters["connections_total"] == 1 and a.counters["sent"] == 20
        await a.close()
        await b.close()

    run(main)


def test_tcp_message_split_across_many_writes_and_ping() -> None:
    async def main() -> None:
        inbox = Inbox()
        t = SipTransport(inbox)
        await t.start(HOST, 0)
        reader, writer = await asyncio.open_connection(HOST, t.local_port)
        first, second = register("TCP", b"v=0\r\n\r\n", "1"), register("TCP", branch="2")
        stream = b"\r\n" + first + second
        for i in range(0, len(stream), 7):
            writer.write(stream[i : i + 7])
            await writer.drain()
            await asyncio.sleep(0)
        assert (await inbox.get())[0] == first
        data, source = await inbox.get()
        assert data == second
        assert source == ("TCP", HOST, writer.get_extra_info("sockname")[1])
        writer.write(b"\r\n\r\n")  # RFC 5626 ping
        assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"
        writer.write(b"\r\n")  # a pong is not answered
        t.send(b"OPTIONS", source)  # anything we send now arrives first
        assert await asyncio.wait_for(reader.readexactly(7), 5) == b"OPTIONS"
        writer.close()
        await t.close()

    run(main)


def test_framing_error_closes_only_that_connection() -> None:
    async def main() -> None:
        inbox = Inbox()
        t = SipTransport(inbox)
        await t.start(HOST, 0)
        bad_reader, bad = await asyncio.open_connection(HOST, t.local_port)
        good_reader, good = await asyncio.open_connection(HOST, t.local_port)
        bad.write(b"REGISTER sip:x SIP/2.0\r\nContent-Length: many\r\n\r\n")
        assert await asyncio.wait_for(bad_reader.read(), 5) == b""  # closed by t
        good.write(register("TCP"))
        assert (await inbox.get())[0] == register("TCP")
        assert t.counters["framing_errors"] == 1
        assert t.counters["connections"] == 1
        bad.close()
        good.close()
        await t.close()

    run(main)


def test_on_message_exceptions_are_contained(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        seen: list[bytes] = []

        def explode(data: bytes, source: Address) -> None:
            seen.append(data)
            if len(seen) == 1:
                raise RuntimeError("node bug")

        a = SipTransport(lambda d, s: None)
        b = SipTransport(explode)
        await a.start(HOST, 0)
        await b.start(HOST, 0)
        for proto in ("UDP", "TCP"):
            a.send(register(proto), (proto, HOST, b.local_port))
            a.send(register(proto, branch="2"), (proto, HOST, b.local_port))
        for _ in range(100):
            if len(seen) == 4:
                break
            await asyncio.sleep(0.01)
        assert len(seen) == 4
        assert b.counters["callback_errors"] == 1 and b.counters["received"] == 4
        await a.close()
        await b.close()

    run(main)
    assert any(
        r.name == "meshsip.transport" and r.exc_info and "node bug" in str(r.exc_info[1])
        for r in caplog.records
    )


def refused_port() -> socket.socket:
    """A bound, not listening TCP socket: connecting to its port is refused."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((HOST, 0))
    return s


def test_send_to_closed_tcp_port_calls_on_send_error() -> None:
    async def main() -> None:
        errors: list[tuple[Address, Exception]] = []
        a, _, b, _ = await pair(errors)
        with refused_port() as closed:
            dest = ("TCP", HOST, closed.getsockname()[1])
            first, second = register("TCP"), register("TCP", branch="2")
            a.send(first, dest)
            a.send(second, dest)
            assert errors == []  # reported later, never from inside send()
            for _ in range(200):
                if errors:
                    break
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        # One report per message that was not sent, carrying the message.
        assert [(d, e.data) for d, e in errors] == [(dest, first), (dest, second)]  # type: ignore[attr-defined]
        for _, exc in errors:
            assert isinstance(exc, SendError) and exc.errno == errno.ECONNREFUSED
            assert isinstance(exc.__cause__, ConnectionRefusedError)
        assert a.counters["send_errors"] == 2 and a.counters["connections"] == 0
        assert a.counters["connections_total"] == 1  # both went to the same attempt
        # The transport still works.
        a.send(register("TCP"), ("TCP", HOST, b.local_port))
        await asyncio.sleep(0.1)
        assert b.counters["received"] == 1
        await a.close()
        await b.close()

    run(main)


def test_udp_and_other_send_errors_are_reported() -> None:
    async def main() -> None:
        errors: list[tuple[Address, Exception]] = []
        a, _, b, _ = await pair(errors)
        dest = ("UDP", HOST, b.local_port)
        a.send(b"x" * 70_000, dest)  # larger than any UDP datagram
        a.send(b"OPTIONS", ("SCTP", HOST, 5061))
        await asyncio.sleep(0.05)
        assert [(d, e.data) for d, e in errors] == [  # type: ignore[attr-defined]
            (dest, b"x" * 70_000),
            (("SCTP", HOST, 5061), b"OPTIONS"),
        ]
        assert errors[0][1].errno == errno.EMSGSIZE  # type: ignore[attr-defined]
        assert isinstance(errors[1][1].__cause__, ValueError)
        assert a.counters["send_errors"] == 2 and a.counters["sent"] == 0
        await a.close()
        await b.close()

    run(main)


def test_udp_burst_is_read_in_batches_in_order() -> None:
    async def main() -> None:
        t_inbox = Inbox()
        t = SipTransport(t_inbox)
        await t.start(HOST, 0)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
            raw.bind((HOST, 0))
            sent = [register(branch=f"burst{i}") for i in range(300)]
            for data in sent:
                raw.sendto(data, (HOST, t.local_port))
            raw.sendto(b"\r\n\r\n", (HOST, t.local_port))  # keep-alive: not delivered
            got = [await t_inbox.get() for _ in sent]
            assert [d for d, _ in got] == sent
            assert {s for _, s in got} == {("UDP", HOST, raw.getsockname()[1])}
            await asyncio.sleep(0.05)
        assert t.counters["received"] == 300 and t.counters["keepalives"] == 1
        await t.close()

    run(main)


def test_udp_sends_queue_in_order_while_the_socket_buffer_is_full() -> None:
    async def main() -> None:
        a, _, b, inbox_b = await pair()
        endpoint = a._udp
        assert endpoint is not None
        real = endpoint.sock

        class FullBuffer:
            """The kernel refuses the next two datagrams (EAGAIN), then takes them."""

            refusals = 2

            def sendto(self, data: bytes, addr: object) -> int:
                if FullBuffer.refusals:
                    FullBuffer.refusals -= 1
                    raise BlockingIOError(errno.EAGAIN, "full")
                return real.sendto(data, addr)

            def __getattr__(self, name: str) -> object:
                return getattr(real, name)

        endpoint.sock = FullBuffer()  # type: ignore[assignment]
        requests = [register(branch=f"q{i}") for i in range(3)]
        for data in requests:
            a.send(data, ("UDP", HOST, b.local_port))
        assert len(endpoint.backlog) == 3
        assert [(await inbox_b.get())[0] for _ in requests] == requests
        assert not endpoint.backlog and FullBuffer.refusals == 0
        assert a.counters["sent"] == 3 and a.counters["send_errors"] == 0
        await a.close()
        await b.close()

    run(main)


def test_port_in_use_gives_a_clear_error() -> None:
    async def main() -> None:
        a = SipTransport(lambda d, s: None)
        await a.start(HOST, 0)
        port = a.local_port
        b = SipTransport(lambda d, s: None)
        with pytest.raises(OSError, match=f"UDP port {port} on {HOST} is already in use") as err:
            await b.start(HOST, port)
        assert err.value.errno == errno.EADDRINUSE
        await a.close()

        # Only TCP taken: the error names TCP and the UDP socket is released again.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((HOST, 0))
            tcp.listen()
            port = tcp.getsockname()[1]
            c = SipTransport(lambda d, s: None)
            with pytest.raises(OSError, match=f"TCP port {port} on {HOST} is already in use"):
                await c.start(HOST, port)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.bind((HOST, port))

    run(main)


def test_idle_connections_are_closed() -> None:
    async def main() -> None:
        t = SipTransport(lambda d, s: None)
        t.idle_timeout = 0.2
        await t.start(HOST, 0)
        reader, writer = await asyncio.open_connection(HOST, t.local_port)
        writer.write(register("TCP"))
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert t.counters["connections"] == 0
        writer.close()
        await t.close()

    run(main)


def test_close_leaves_no_sockets_or_tasks() -> None:
    async def main() -> None:
        before, tasks = open_fds(), asyncio.all_tasks()
        a, inbox_a, b, _ = await pair()
        a.send(register("TCP"), ("TCP", HOST, b.local_port))
        await inbox_a.get()  # an established connection on each side
        reader, writer = await asyncio.open_connection(HOST, b.local_port)  # idle inbound
        await asyncio.sleep(0.05)
        assert b.counters["connections"] == 2
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
            listener.bind((HOST, 0))
            listener.listen()
            a.send(register("TCP"), ("TCP", HOST, listener.getsockname()[1]))  # connecting
            assert a.counters["connections"] == 2
            port_a, port_b = a.local_port, b.local_port
            await a.close()
            await b.close()
            await a.close()  # idempotent
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        await writer.wait_closed()
        await asyncio.sleep(0)
        assert open_fds() == before
        assert asyncio.all_tasks() == tasks
        assert a.counters["connections"] == 0 and b.counters["connections"] == 0
        a.send(b"late", ("UDP", HOST, port_b))  # dropped quietly after close
        # Both ports can be bound again at once.
        for port in (port_a, port_b):
            again = SipTransport(lambda d, s: None)
            await again.start(HOST, port)
            await again.close()

    run(main)
