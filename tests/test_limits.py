"""Bounds on what the network can make a box hold or do (appliance/limits.py): the per-source
token buckets, 503 when the server transaction table is full, the registrar's caps, the
bounded "known" set and the lookup cache with its negative answers."""

from __future__ import annotations

import asyncio

from test_registrar import register
from test_transaction import UAC, make_request

from appliance.finder import Finder
from appliance.limits import Limits
from appliance.proxy.calls import Calls
from appliance.registrar import BindingCaps, Location
from overlay.ratelimit import SourceLimiter
from overlay.sip.message import Response, parse_message
from overlay.sip.transaction import RequestReceived, TransactionLayer


def test_a_source_gets_its_burst_then_its_rate() -> None:
    lim = SourceLimiter(rate=10, burst=5)
    assert [lim.allow("10.99.0.9", 0.0) for _ in range(7)] == [True] * 5 + [False] * 2
    assert lim.allow("10.99.0.8", 0.0)  # another source is not held back
    assert lim.allow("10.99.0.9", 0.1)  # 0.1 s at 10/s: one token
    assert not lim.allow("10.99.0.9", 0.1)
    assert lim.allow("10.99.0.9", 100.0)  # refilled, to no more than the burst
    assert sum(lim.allow("10.99.0.9", 100.0) for _ in range(10)) == 4
    assert lim.refused == 9


def test_the_bucket_table_is_bounded_and_exempt_sources_never_limited() -> None:
    lim = SourceLimiter(rate=1, burst=1, max_sources=3, exempt=frozenset({"127.0.0.1"}))
    for i in range(100):
        lim.allow(f"10.99.1.{i}", 0.0)
    assert len(lim) == 3
    assert all(lim.allow("127.0.0.1", 0.0) for _ in range(1000))
    assert len(lim) == 3


def _answers(layer: TransactionLayer) -> list[Response]:
    out = []
    for data, _ in layer.messages_to_send():
        msg = parse_message(data)
        assert isinstance(msg, Response)
        out.append(msg)
    return out


def test_full_server_tables_answer_503_with_retry_after_and_keep_no_state() -> None:
    layer = TransactionLayer(max_servers=3, max_invite_servers=1, retry_after=7)
    layer.receive(make_request("INVITE"), UAC, 0.0)
    layer.receive(make_request("INVITE"), UAC, 0.0)  # a second call at once: over 1
    [busy] = _answers(layer)
    assert busy.status == 503 and busy.get("Retry-After") == "7"
    layer.receive(make_request("OPTIONS"), UAC, 0.0)
    layer.receive(make_request("OPTIONS"), UAC, 0.0)
    layer.receive(make_request("OPTIONS"), UAC, 0.0)  # the fourth: over 3
    assert [r.status for r in _answers(layer)] == [503]
    assert layer.server_count == 3 and layer.stats["overload_refused"] == 2
    # The INVITE ends (its 486 is ACKed, Timer I runs out): a new call is taken again.
    [invite, *_] = [e for e in iter(layer.next_event, None) if isinstance(e, RequestReceived)]
    assert invite.server_key is not None
    layer.send_response(_reply(invite.request, 486), invite.server_key, 1.0)
    layer.handle_timer(100.0)
    layer.messages_to_send()
    layer.receive(make_request("INVITE"), UAC, 100.0)
    assert _answers(layer) == [] and layer.server_count == 3


def _reply(request, status: int) -> Response:
    headers = [(n, v) for n, v in request.headers if n in ("Via", "From", "To", "Call-ID", "CSeq")]
    return Response(status, "Busy", headers)


PHONE = ("UDP", "10.99.0.11", 5062)
OTHER = ("UDP", "10.99.0.12", 5062)


def test_bindings_capped_in_all_per_source_and_per_extension() -> None:
    loc = Location(caps=BindingCaps(total=5, per_source=3, per_extension=2, retry_after=9))
    codes = [loc.register(register(f"10{i}", [f"<sip:p{i}@10.99.0.11>"]), PHONE, 0).status
             for i in range(5)]
    assert codes == [200] * 5  # over 3 from one address: its oldest went
    assert sorted(loc.bindings) == ["102", "103", "104"]
    assert loc.count == 3 and loc.stats["bindings_evicted"] == 2
    # A refresh is not a new binding: nothing goes.
    assert loc.register(register("102", ["<sip:p2@10.99.0.11>"], cseq=2), PHONE, 0).status == 200
    assert sorted(loc.bindings) == ["102", "103", "104"]
    other = [loc.register(register(f"20{i}", [f"<sip:q{i}@10.99.0.12>"]),
                          ("UDP", "10.99.0.12", 5062), 0) for i in range(3)]
    assert [r.status for r in other] == [200, 200, 503]  # 5 in all
    assert other[2].get("Retry-After") == "9"
    three = ["<sip:a@10.99.0.13>", "<sip:b@10.99.0.13>", "<sip:c@10.99.0.13>"]
    assert loc.register(register("300", three), ("UDP", "10.99.0.13", 1), 0).status == 403
    assert loc.count == 5 and loc.stats["registrations_refused_full"] == 1
    loc.expire(10_000)  # expiry frees room
    assert loc.count == 0
    assert loc.register(register("205", ["<sip:p4@10.99.0.12>"]), OTHER, 10_000).status == 200


def test_exempt_sources_are_not_capped_per_source() -> None:
    loc = Location(caps=BindingCaps(per_source=1, exempt=frozenset({"127.0.0.1"})))
    local = ("UDP", "127.0.0.1", 5099)
    assert all(loc.register(register(f"5{i}", [f"<sip:x{i}@127.0.0.1>"]), local, 0).status
               == 200 for i in range(5))


def test_known_extensions_are_bounded_oldest_out() -> None:
    loc = Location(caps=BindingCaps(known=3))
    for i in range(5):
        loc.register(register(f"70{i}", [f"<sip:k{i}@10.99.0.11>"]), PHONE, 0)
    assert list(loc.known) == ["702", "703", "704"]


def test_nobody_found_is_remembered_briefly_and_dropped_on_registration() -> None:
    asked: list[str] = []
    answers: dict[str, list[str]] = {}

    async def lookup(extension: str) -> list[str]:
        asked.append(extension)
        await asyncio.sleep(0.01)
        return answers.get(extension, [])

    async def scenario() -> None:
        finder = Finder(lookup, Limits(negative_seconds=0.2, max_cached_lookups=10))
        # A burst of calls to nobody: one lookup, the rest wait for it or hit the cache.
        assert await asyncio.gather(*(finder.find("999") for _ in range(50))) == [[]] * 50
        assert [await finder.find("999") for _ in range(50)] == [[]] * 50
        assert asked == ["999"]
        await asyncio.sleep(0.25)  # remembered only a short while
        await finder.find("999")
        assert asked == ["999", "999"]
        answers["999"] = ["sip:10.99.0.2:5060"]
        finder.invalidate("999")  # it registered: asked again at once
        assert await finder.find("999") == ["sip:10.99.0.2:5060"]
        for i in range(100):  # the table stays bounded
            await finder.find(f"x{i}")
        assert len(finder) == 10

    asyncio.run(scenario())


def test_the_call_table_keeps_the_newest_calls() -> None:
    calls = Calls({"calls": 0}, max_calls=3)
    for i in range(5):
        calls.ringing(f"c{i}", "a", "b", float(i), "(1 contact)")
    assert list(calls.table) == ["c2", "c3", "c4"]
