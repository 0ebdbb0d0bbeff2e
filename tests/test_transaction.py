"""Transaction layer: every state and timer of RFC 3261 section 17 (+ RFC 6026), fake clock."""

from __future__ import annotations

import gc
import heapq
import itertools
import weakref
from collections.abc import Callable

import hypothesis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overlay.sip.message import Request, Response, parse_message
from overlay.sip.transaction import (
    ACCEPTED,
    CALLING,
    COMPLETED,
    CONFIRMED,
    PROCEEDING,
    TRYING,
    Address,
    ClientTimeout,
    Event,
    RequestReceived,
    ResponseReceived,
    ServerKey,
    ServerTerminated,
    StrayResponse,
    TransactionLayer,
    TransportFailed,
    _make_ack,
    client_key_of,
)
from overlay.sip.uri import parse_uri

UAC: Address = ("UDP", "10.0.0.1", 5060)
UAS: Address = ("UDP", "10.0.0.2", 5060)
UAC_TCP: Address = ("TCP", "10.0.0.1", 40001)
UAS_TCP: Address = ("TCP", "10.0.0.2", 5060)

_branches = itertools.count(1)


def make_request(
    method: str = "INVITE",
    branch: str | None = None,
    *,
    transport: str = "UDP",
    cseq: int = 1,
    call_id: str = "call-1@10.0.0.1",
    to_tag: str | None = None,
    extra_vias: tuple[str, ...] = (),
    routes: tuple[str, ...] = (),
    uri: str = "sip:bob@10.0.0.2",
) -> Request:
    if branch is None:
        branch = f"z9hG4bK-{next(_branches)}"
    via_branch = f";branch={branch}" if branch else ""
    headers = [("Via", f"SIP/2.0/{transport} 10.0.0.1:5060{via_branch}")]
    headers += [("Via", v) for v in extra_vias]
    headers += [("Route", r) for r in routes]
    headers += [
        ("Max-Forwards", "69"),
        ("From", "<sip:alice@10.0.0.1>;tag=alice1"),
        ("To", "<sip:bob@10.0.0.2>" + (f";tag={to_tag}" if to_tag else "")),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} {method}"),
        ("Record-Route", "<sip:proxy.example;lr>"),
        ("Contact", "<sip:alice@10.0.0.1>"),
    ]
    return Request(method, parse_uri(uri), headers)


def make_response(request: Request, status: int, to_tag: str | None = "bob1") -> Response:
    headers = [(n, v) for n, v in request.headers if n in ("Via", "From", "Call-ID", "CSeq")]
    to = request.get("To") or ""
    if to_tag and ";tag=" not in to:
        to += f";tag={to_tag}"
    headers.insert(len(request.get_all("Via")) + 1, ("To", to))
    return Response(status, "Reason", headers)


def ack_for_2xx(invite: Request, response: Response) -> Request:
    return make_request("ACK", cseq=invite.cseq[0], to_tag=response.to.tag)


def wire(data: bytes) -> Request | Response:
    return parse_message(data)


def wire_method(data: bytes) -> str:
    message = parse_message(data)
    assert isinstance(message, Request)
    return message.method


def wire_status(data: bytes) -> int:
    message = parse_message(data)
    assert isinstance(message, Response)
    return message.status


def new_server_key(layer: TransactionLayer) -> ServerKey:
    """The server key of the one RequestReceived the layer has queued."""
    [event] = events(layer)
    assert isinstance(event, RequestReceived) and event.server_key is not None
    return event.server_key


def events(layer: TransactionLayer) -> list[Event]:
    out = []
    while (event := layer.next_event()) is not None:
        out.append(event)
    return out


def run_timers(layer: TransactionLayer, until: float) -> list[tuple[float, bytes, Address]]:
    """Fire every timer due up to `until`, exactly at its deadline; log what is sent."""
    sent = []
    while (when := layer.get_timer()) is not None and when <= until:
        layer.handle_timer(when)
        sent += [(when, data, dest) for data, dest in layer.messages_to_send()]
    return sent


def times(sent: list[tuple[float, bytes, Address]]) -> list[float]:
    return [t for t, _, _ in sent]


# --------------------------------------------------------------------------- client INVITE


def test_client_invite_timer_a_schedule_and_timer_b_timeout() -> None:
    layer = TransactionLayer()
    invite = make_request("INVITE")
    key = layer.send_request(invite, UAS, 0.0)
    assert key == (invite.top_via.branch, "INVITE")
    assert layer.client_state(key) == CALLING
    first = layer.messages_to_send()
    assert first == [(invite.encode(), UAS)]
    assert layer.get_timer() == 0.5
    sent = run_timers(layer, 100.0)
    assert times(sent) == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert all(data == invite.encode() and dest == UAS for _, data, dest in sent)
    assert events(layer) == [ClientTimeout(key, invite)]
    assert layer.client_count == 0
    assert layer.get_timer() is None
    assert layer.stats["retransmissions_sent"] == 6
    assert layer.stats["client_timeouts"] == 1


def test_client_invite_tcp_no_retransmissions_timer_b() -> None:
    layer = TransactionLayer()
    invite = make_request("INVITE", transport="TCP")
    key = layer.send_request(invite, UAS_TCP, 10.0)
    assert len(layer.messages_to_send()) == 1
    assert layer.get_timer() == 42.0
    assert run_timers(layer, 100.0) == []
    assert events(layer) == [ClientTimeout(key, invite)]


def test_client_invite_provisional_stops_timer_a_and_b() -> None:
    layer = TransactionLayer()
    invite = make_request("INVITE")
    key = layer.send_request(invite, UAS, 0.0)
    layer.messages_to_send()
    assert times(run_timers(layer, 0.6)) == [0.5]
    ringing = make_response(invite, 180)
    layer.receive(ringing, UAS, 1.0)
    assert events(layer) == [ResponseReceived(ringing, key)]
    assert layer.client_state(key) == PROCEEDING
    # Neither Timer A nor Timer B run in Proceeding: a phone may ring for minutes.
    assert layer.get_timer() is None
    assert run_timers(layer, 1000.0) == []
    layer.receive(make_response(invite, 180), UAS, 200.0)
    assert len(events(layer)) == 1  # further provisionals go up too
    ok = make_response(invite, 200)
    layer.receive(ok, UAS, 300.0)
    assert events(layer) == [ResponseReceived(ok, key)]
    assert layer.client_state(key) == ACCEPTED


def test_client_invite_non_2xx_generates_ack() -> None:
    layer = TransactionLayer()
    invite = make_request(
        "INVITE",
        extra_vias=("SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK-upstream",),
        routes=("<sip:p1.example;lr>", "<sip:p2.example;lr>"),
    )
    key = layer.send_request(invite, UAS, 0.0)
    layer.messages_to_send()
    busy = make_response(invite, 486, to_tag="busy9")
    layer.receive(wire(busy.encode()), UAS, 0.2)
    [event] = events(layer)
    assert isinstance(event, ResponseReceived) and event.response.status == 486
    assert event.client_key == key
    assert layer.client_state(key) == COMPLETED
    [(data, dest)] = layer.messages_to_send()
    assert dest == UAS
    ack = wire(data)
    assert isinstance(ack, Request)
    assert ack.method == "ACK"
    assert ack.uri == invite.uri
    assert ack.get_all("Via") == [invite.get("Via")]  # the top Via only, same branch
    assert ack.top_via.branch == invite.top_via.branch
    assert ack.get("Call-ID") == invite.get("Call-ID")
    assert ack.get("From") == invite.get("From")
    assert ack.to.tag == "busy9"
    assert ack.to.uri == invite.to.uri
    assert ack.cseq == (1, "ACK")
    assert ack.get_all("Route") == ["<sip:p1.example;lr>", "<sip:p2.example;lr>"]
    assert ack.get("Record-Route") is None and ack.get("Contact") is None
    assert ack.get("Max-Forwards") == "69"
    assert ack.body == b""
    # Retransmitted 486: absorbed, ACK re-sent.
    layer.receive(wire(busy.encode()), UAS, 1.0)
    assert events(layer) == []
    assert layer.messages_to_send() == [(data, UAS)]
    assert layer.stats["retransmissions_absorbed"] == 1
    # Timer D = 32 s, no retransmissions meanwhile.
    assert layer.get_timer() == pytest.approx(32.2)
    assert run_timers(layer, 32.1) == []
    assert layer.client_state(key) == COMPLETED
    assert run_timers(layer, 32.2) == []
    assert layer.client_state(key) is None
    assert events(layer) == []
    layer.receive(busy, UAS, 40.0)
    assert events(layer) == [StrayResponse(busy, UAS)]


def test_client_invite_non_2xx_in_proceeding_tcp_timer_d_zero() -> None:
    layer = TransactionLayer()
    invite = make_request("INVITE", transport="TCP")
    key = layer.send_request(invite, UAS_TCP, 0.0)
    layer.messages_to_send()
    layer.receive(make_response(invite, 100, to_tag=None), UAS_TCP, 0.1)
    layer.receive(make_response(invite, 603), UAS_TCP, 5.0)
    assert [type(e) for e in events(layer)] == [ResponseReceived, ResponseReceived]
    [(data, dest)] = layer.messages_to_send()
    assert wire_method(data) == "ACK" and dest == UAS_TCP
    assert layer.client_state(key) is None  # Timer D = 0
    assert layer.get_timer() is None


def test_client_invite_2xx_accepted_passes_every_2xx_up() -> None:
    layer = TransactionLayer()
    invite = make_request("INVITE")
    key = layer.send_request(invite, UAS, 0.0)
    layer.messages_to_send()
    ok1 = make_response(invite, 200, to_tag="fork1")
    layer.receive(ok1, UAS, 2.0)
    assert events(layer) == [ResponseReceived(ok1, key)]
    assert layer.client_state(key) == ACCEPTED
    assert layer.messages_to_send() == []  # the TU ACKs a 2xx, not the transaction
    ok1_again = make_response(invite, 200, to_tag="fork1")
    ok2 = make_response(invite, 200, to_tag="fork2")
    layer.receive(ok1_again, UAS, 3.0)
    layer.receive(ok2, UAS, 4.0)
    assert events(layer) == [ResponseReceived(ok1_again, key), ResponseReceived(ok2, key)]
    # Non-2xx and provisionals are absorbed in Accepted.
    layer.receive(make_response(invite, 180), UAS, 4.5)
    layer.receive(make_response(invite, 500), UAS, 4.5)
    assert events(layer) == [] and layer.messages_to_send() == []
    # No Timer A retransmissions after the 2xx; Timer M = 64*T1 ends it.
    assert layer.get_timer() == 34.0
    assert run_timers(layer, 100.0) == []
    assert layer.client_state(key) is None
    assert events(layer) == []  # no ClientTimeout
    layer.receive(ok1, UAS, 40.0)
    assert events(layer) == [StrayResponse(ok1, UAS)]


def test_client_invite_lossy_retransmission_then_final() -> None:
    """The first two INVITEs are lost; the third reaches the server and a 404 comes back."""
    layer = TransactionLayer()
    invite = make_request("INVITE")
    key = layer.send_request(invite, UAS, 0.0)
    layer.messages_to_send()
    assert times(run_timers(layer, 2.0)) == [0.5, 1.5]
    nf = make_response(invite, 404)
    layer.receive(nf, UAS, 1.6)
    assert events(layer) == [ResponseReceived(nf, key)]
    assert wire_method(layer.messages_to_send()[0][0]) == "ACK"
    assert run_timers(layer, 30.0) == []  # Timer A stopped


# ----------------------------------------------------------------------- client non-INVITE


def test_client_non_invite_timer_e_schedule_and_timer_f() -> None:
    layer = TransactionLayer()
    register = make_request("REGISTER")
    key = layer.send_request(register, UAS, 0.0)
    assert layer.client_state(key) == TRYING
    layer.messages_to_send()
    sent = run_timers(layer, 100.0)
    assert times(sent) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert events(layer) == [ClientTimeout(key, register)]
    assert layer.client_count == 0


def test_client_non_invite_proceeding_retransmits_at_t2() -> None:
    layer = TransactionLayer()
    options = make_request("OPTIONS")
    key = layer.send_request(options, UAS, 0.0)
    layer.messages_to_send()
    trying = make_response(options, 100, to_tag=None)
    layer.receive(trying, UAS, 0.2)
    assert events(layer) == [ResponseReceived(trying, key)]
    assert layer.client_state(key) == PROCEEDING
    sent = run_timers(layer, 100.0)
    assert times(sent) == [0.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5]
    assert events(layer) == [ClientTimeout(key, options)]


def test_client_non_invite_completed_absorbs_until_timer_k() -> None:
    layer = TransactionLayer(t4=5.0)
    register = make_request("REGISTER")
    key = layer.send_request(register, UAS, 0.0)
    layer.messages_to_send()
    ok = make_response(register, 200)
    layer.receive(ok, UAS, 0.7)
    assert events(layer) == [ResponseReceived(ok, key)]
    assert layer.client_state(key) == COMPLETED
    layer.receive(make_response(register, 200), UAS, 1.0)
    layer.receive(make_response(register, 200), UAS, 5.6)
    assert events(layer) == []
    assert layer.messages_to_send() == []
    assert layer.stats["retransmissions_absorbed"] == 2
    assert layer.get_timer() == pytest.approx(5.7)  # Timer K = T4; no Timer E any more
    assert run_timers(layer, 100.0) == []
    assert layer.client_state(key) is None
    assert events(layer) == []
    layer.receive(ok, UAS, 6.0)
    assert isinstance(layer.next_event(), StrayResponse)
    assert layer.stats["stray_responses"] == 1


def test_client_non_invite_tcp_timer_k_zero_no_retransmissions() -> None:
    layer = TransactionLayer()
    register = make_request("REGISTER", transport="TCP")
    key = layer.send_request(register, UAS_TCP, 0.0)
    layer.messages_to_send()
    assert layer.get_timer() == 32.0  # only Timer F
    ok = make_response(register, 200)
    layer.receive(ok, UAS_TCP, 0.1)
    assert events(layer) == [ResponseReceived(ok, key)]
    assert layer.client_state(key) is None
    assert layer.get_timer() is None


def test_client_non_invite_tcp_timeout() -> None:
    layer = TransactionLayer()
    register = make_request("REGISTER", transport="TCP")
    key = layer.send_request(register, UAS_TCP, 0.0)
    layer.messages_to_send()
    assert run_timers(layer, 100.0) == []
    assert events(layer) == [ClientTimeout(key, register)]


def test_timer_values_follow_t1_t2_t4() -> None:
    layer = TransactionLayer(t1=0.1, t2=0.4, t4=1.0)
    register = make_request("REGISTER")
    layer.send_request(register, UAS, 0.0)
    layer.messages_to_send()
    sent = times(run_timers(layer, 10.0))
    assert sent == pytest.approx([0.1, 0.3, 0.7, 1.1, 1.5, 1.9, 2.3, 2.7, 3.1, 3.5, 3.9, 4.3,
                                  4.7, 5.1, 5.5, 5.9, 6.3])
    assert [type(e) for e in events(layer)] == [ClientTimeout]  # Timer F = 6.4


def test_send_request_rejects_ack_and_missing_branch() -> None:
    layer = TransactionLayer()
    with pytest.raises(ValueError):
        layer.send_request(make_request("ACK"), UAS, 0.0)
    with pytest.raises(ValueError):
        layer.send_request(make_request("INVITE", branch="old-style"), UAS, 0.0)
    request = make_request("OPTIONS")
    layer.send_request(request, UAS, 0.0)
    with pytest.raises(ValueError):
        layer.send_request(request, UAS, 0.0)


def test_cancel_and_invite_client_transactions_are_distinct() -> None:
    layer = TransactionLayer()
    invite = make_request("INVITE")
    branch = invite.top_via.branch
    assert branch is not None
    ikey = layer.send_request(invite, UAS, 0.0)
    layer.receive(make_response(invite, 180), UAS, 0.1)
    cancel = make_request("CANCEL", branch=branch)
    ckey = layer.send_request(cancel, UAS, 0.2)
    assert ikey != ckey and ckey == (branch, "CANCEL")
    events(layer)
    ok = make_response(cancel, 200)
    layer.receive(ok, UAS, 0.3)
    assert events(layer) == [ResponseReceived(ok, ckey)]
    terminated = make_response(invite, 487)
    layer.receive(terminated, UAS, 0.4)
    assert events(layer) == [ResponseReceived(terminated, ikey)]


def test_cancel_client_stops_retransmissions_but_acks_the_487() -> None:
    layer = TransactionLayer()
    invite = make_request("INVITE")
    key = layer.send_request(invite, UAS, 0.0)
    layer.messages_to_send()
    assert times(run_timers(layer, 1.0)) == [0.5]
    layer.cancel_client(key)
    assert layer.messages_to_send() == []
    assert run_timers(layer, 20.0) == []  # no more Timer A
    layer.receive(make_response(invite, 180), UAS, 20.0)
    terminated = make_response(invite, 487)
    layer.receive(terminated, UAS, 21.0)
    assert [type(e) for e in events(layer)] == [ResponseReceived, ResponseReceived]
    [(data, _)] = layer.messages_to_send()
    assert wire_method(data) == "ACK"


def test_cancel_client_in_calling_still_times_out_with_timer_b() -> None:
    layer = TransactionLayer()
    invite = make_request("INVITE")
    key = layer.send_request(invite, UAS, 0.0)
    layer.messages_to_send()
    layer.cancel_client(key)
    assert run_timers(layer, 100.0) == []
    assert events(layer) == [ClientTimeout(key, invite)]


def test_cancel_client_in_proceeding_times_out_after_64_t1() -> None:
    layer = TransactionLayer()
    invite = make_request("INVITE")
    key = layer.send_request(invite, UAS, 0.0)
    layer.receive(make_response(invite, 180), UAS, 1.0)
    events(layer)
    layer.receive(make_response(invite, 180), UAS, 100.0)  # the layer's clock is now 100
    events(layer)
    layer.cancel_client(key)
    assert layer.get_timer() == 132.0
    run_timers(layer, 131.9)
    assert layer.client_state(key) == PROCEEDING
    run_timers(layer, 132.0)
    assert events(layer) == [ClientTimeout(key, invite)]
    assert layer.client_count == 0


def test_cancel_client_non_invite_keeps_timer_f() -> None:
    layer = TransactionLayer()
    register = make_request("REGISTER")
    key = layer.send_request(register, UAS, 0.0)
    layer.messages_to_send()
    layer.cancel_client(key)
    assert run_timers(layer, 100.0) == []
    assert events(layer) == [ClientTimeout(key, register)]
    layer.cancel_client(key)  # unknown key: no-op


def test_client_transport_error() -> None:
    layer = TransactionLayer()
    register = make_request("REGISTER", transport="TCP")
    key = layer.send_request(register, UAS_TCP, 0.0)
    [(data, _)] = layer.messages_to_send()
    assert client_key_of(wire(data)) == key  # how the adapter finds the key of a failed send
    layer.client_transport_error(key, 0.01)
    assert events(layer) == [TransportFailed(key, register)]
    assert layer.client_count == 0 and layer.get_timer() is None
    assert layer.stats["transport_failures"] == 1
    layer.client_transport_error(key, 0.02)  # already gone: no-op
    assert events(layer) == []
    layer.receive(make_response(register, 200), UAS_TCP, 0.5)
    assert isinstance(layer.next_event(), StrayResponse)


# --------------------------------------------------------------------------- server INVITE


def test_server_invite_no_auto_100_and_retransmissions_absorbed() -> None:
    layer = TransactionLayer()
    invite = make_request("INVITE")
    layer.receive(wire(invite.encode()), UAC, 0.0)
    [event] = events(layer)
    assert isinstance(event, RequestReceived) and event.source == UAC
    key = event.server_key
    assert key is not None
    assert key == (invite.top_via.branch, "10.0.0.1:5060", "INVITE")
    assert layer.server_state(key) == PROCEEDING
    assert layer.server_request(key) == event.request
    assert layer.messages_to_send() == []  # no automatic 100 Trying
    assert layer.get_timer() is None
    layer.receive(wire(invite.encode()), UAC, 0.5)  # retransmission before any response
    assert events(layer) == [] and layer.messages_to_send() == []
    trying = make_response(invite, 100, to_tag=None)
    layer.send_response(trying, key, 0.6)
    assert layer.messages_to_send() == [(trying.encode(), UAC)]
    ringing = make_response(invite, 180)
    layer.send_response(ringing, key, 0.7)
    layer.messages_to_send()
    layer.receive(wire(invite.encode()), UAC, 1.5)  # re-sends the last provisional
    assert events(layer) == []
    assert layer.messages_to_send() == [(ringing.encode(), UAC)]
    assert layer.stats["retransmissions_absorbed"] == 2
    assert layer.get_timer() is None  # no timers in Proceeding


def test_server_invite_timer_g_and_h() -> None:
    layer = TransactionLayer()
    invite = make_request("INVITE")
    layer.receive(invite, UAC, 0.0)
    key = new_server_key(layer)
    busy = make_response(invite, 486)
    layer.send_response(busy, key, 0.0)
    assert layer.messages_to_send() == [(busy.encode(), UAC)]
    assert layer.server_state(key) == COMPLETED
    # A retransmitted INVITE in Completed re-sends the final response.
    layer.receive(invite, UAC, 0.2)
    assert layer.messages_to_send() == [(busy.encode(), UAC)]
    assert events(layer) == []
    sent = run_timers(layer, 100.0)
    assert times(sent) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert all(data == busy.encode() and dest == UAC for _, data, dest in sent)
    assert events(layer) == [ServerTerminated(key)]  # Timer H: no ACK
    assert layer.server_count == 0
    assert layer.stats["server_timeouts"] == 1


def test_server_invite_ack_confirms_and_timer_i() -> None:
    layer = TransactionLayer(t4=5.0)
    invite = make_request("INVITE")
    layer.receive(invite, UAC, 0.0)
    key = new_server_key(layer)
    layer.send_response(make_response(invite, 486), key, 0.0)
    layer.messages_to_send()
    assert times(run_timers(layer, 2.0)) == [0.5, 1.5]
    client = TransactionLayer()  # build the ACK the way a client transaction does
    client.send_request(invite, UAS, 0.0)
    client.receive(make_response(invite, 486), UAS, 0.0)
    ack_data = client.messages_to_send()[-1][0]
    layer.receive(wire(ack_data), UAC, 2.0)
    assert events(layer) == []  # absorbed
    assert layer.server_state(key) == CONFIRMED
    assert layer.stats["acks_absorbed"] == 1
    layer.receive(wire(ack_data), UAC, 2.5)  # retransmitted ACK
    layer.receive(invite, UAC, 2.6)  # late INVITE retransmission
    assert events(layer) == [] and layer.messages_to_send() == []
    assert layer.get_timer() == 7.0  # Timer I = T4; G and H are gone
    assert run_timers(layer, 100.0) == []
    assert layer.server_count == 0
    assert events(layer) == []


def test_server_invite_tcp_no_timer_g_and_timer_i_zero() -> None:
    layer = TransactionLayer()
    invite = make_request("INVITE", transport="TCP")
    layer.receive(invite, UAC_TCP, 0.0)
    key = new_server_key(layer)
    busy = make_response(invite, 480)
    layer.send_response(busy, key, 1.0)
    assert layer.messages_to_send() == [(busy.encode(), UAC_TCP)]
    assert layer.get_timer() == 33.0  # only Timer H
    ack = make_request("ACK", branch=invite.top_via.branch, transport="TCP", to_tag="bob1")
    layer.receive(ack, UAC_TCP, 2.0)
    assert layer.server_count == 0  # Timer I = 0
    assert layer.get_timer() is None
    assert events(layer) == []


def test_server_invite_tcp_timer_h() -> None:
    layer = TransactionLayer()
    invite = make_request("INVITE", transport="TCP")
    layer.receive(invite, UAC_TCP, 0.0)
    key = new_server_key(layer)
    layer.send_response(make_response(invite, 480), key, 0.0)
    layer.messages_to_send()
    assert run_timers(layer, 100.0) == []
    assert events(layer) == [ServerTerminated(key)]


def test_server_invite_2xx_accepted() -> None:
    layer = TransactionLayer()
    invite = make_request("INVITE")
    layer.receive(invite, UAC, 0.0)
    key = new_server_key(layer)
    layer.send_response(make_response(invite, 180), key, 0.1)
    ok = make_response(invite, 200)
    layer.send_response(ok, key, 1.0)
    assert layer.messages_to_send()[-1] == (ok.encode(), UAC)
    assert layer.server_state(key) == ACCEPTED
    # Retransmitted INVITEs are absorbed without re-sending anything.
    layer.receive(invite, UAC, 1.2)
    assert events(layer) == [] and layer.messages_to_send() == []
    # The TU (UAS core or proxy) retransmits or forwards further 2xx through the transaction.
    layer.send_response(ok, key, 1.5)
    assert layer.messages_to_send() == [(ok.encode(), UAC)]
    # Non-2xx and provisionals are refused in Accepted.
    layer.send_response(make_response(invite, 180), key, 1.6)
    layer.send_response(make_response(invite, 500), key, 1.6)
    assert layer.messages_to_send() == [] and layer.stats["responses_dropped"] == 2
    # The ACK for a 2xx has its own branch: passed up with no server transaction.
    ack = ack_for_2xx(invite, ok)
    layer.receive(ack, UAC, 2.0)
    assert events(layer) == [RequestReceived(ack, UAC, None)]
    assert layer.get_timer() == 33.0  # Timer L = 64*T1
    assert run_timers(layer, 100.0) == []
    assert layer.server_count == 0
    assert events(layer) == []
    layer.send_response(ok, key, 40.0)  # transaction gone: dropped, counted, no raise
    assert layer.messages_to_send() == [] and layer.stats["responses_dropped"] == 3


def test_server_invite_retransmission_after_timer_l_is_a_new_transaction() -> None:
    """RFC 6026 keeps Accepted for 64*T1 only: a copy delayed past that starts afresh."""
    layer = TransactionLayer()
    invite = make_request("INVITE")
    layer.receive(invite, UAC, 1.5)
    key = new_server_key(layer)
    layer.send_response(make_response(invite, 200), key, 1.5)
    layer.receive(invite, UAC, 33.4)
    assert events(layer) == []
    run_timers(layer, 33.5)
    layer.receive(invite, UAC, 33.51)
    assert events(layer) == [RequestReceived(invite, UAC, key)]


def test_server_invite_ack_with_same_branch_in_accepted_goes_up() -> None:
    """Some old UACs reuse the INVITE branch for the 2xx ACK: RFC 6026 passes it up."""
    layer = TransactionLayer()
    invite = make_request("INVITE")
    layer.receive(invite, UAC, 0.0)
    key = new_server_key(layer)
    layer.send_response(make_response(invite, 200), key, 0.0)
    ack = make_request("ACK", branch=invite.top_via.branch, to_tag="bob1")
    layer.receive(ack, UAC, 0.1)
    assert events(layer) == [RequestReceived(ack, UAC, None)]


def test_stray_ack_goes_up() -> None:
    layer = TransactionLayer()
    ack = make_request("ACK", to_tag="x")
    layer.receive(ack, UAC, 0.0)
    assert events(layer) == [RequestReceived(ack, UAC, None)]
    assert layer.server_count == 0


def test_ack_before_final_is_dropped() -> None:
    layer = TransactionLayer()
    invite = make_request("INVITE")
    layer.receive(invite, UAC, 0.0)
    events(layer)
    layer.receive(make_request("ACK", branch=invite.top_via.branch), UAC, 0.1)
    assert events(layer) == []
    assert layer.stats["dropped_unexpected"] == 1


def test_server_invite_response_goes_to_source_not_via() -> None:
    layer = TransactionLayer()
    invite = make_request("INVITE")
    nat: Address = ("UDP", "203.0.113.7", 31337)
    layer.receive(invite, nat, 0.0)
    key = new_server_key(layer)
    layer.send_response(make_response(invite, 100, to_tag=None), key, 0.0)
    assert layer.messages_to_send()[0][1] == nat


# ----------------------------------------------------------------------- server non-INVITE


def test_server_non_invite_states_and_timer_j() -> None:
    layer = TransactionLayer()
    register = make_request("REGISTER")
    layer.receive(register, UAC, 0.0)
    [event] = events(layer)
    assert isinstance(event, RequestReceived)
    key = event.server_key
    assert key is not None and layer.server_state(key) == TRYING
    layer.receive(register, UAC, 0.5)  # Trying: absorbed, nothing to re-send
    assert events(layer) == [] and layer.messages_to_send() == []
    trying = make_response(register, 100, to_tag=None)
    layer.send_response(trying, key, 0.6)
    assert layer.server_state(key) == PROCEEDING
    layer.messages_to_send()
    layer.receive(register, UAC, 1.5)  # Proceeding: re-sends the provisional
    assert layer.messages_to_send() == [(trying.encode(), UAC)]
    ok = make_response(register, 200)
    layer.send_response(ok, key, 2.0)
    assert layer.messages_to_send() == [(ok.encode(), UAC)]
    assert layer.server_state(key) == COMPLETED
    layer.receive(register, UAC, 3.5)  # Completed: re-sends the final response
    assert layer.messages_to_send() == [(ok.encode(), UAC)]
    layer.send_response(make_response(register, 500), key, 3.6)  # ignored in Completed
    assert layer.messages_to_send() == []
    assert events(layer) == []
    assert layer.get_timer() == 34.0  # Timer J = 64*T1, no retransmissions of its own
    assert run_timers(layer, 100.0) == []
    assert layer.server_count == 0
    assert events(layer) == []
    assert layer.stats["retransmissions_absorbed"] == 3


def test_server_non_invite_tcp_timer_j_zero() -> None:
    layer = TransactionLayer()
    register = make_request("REGISTER", transport="TCP")
    layer.receive(register, UAC_TCP, 0.0)
    key = new_server_key(layer)
    layer.send_response(make_response(register, 200), key, 0.0)
    assert len(layer.messages_to_send()) == 1
    assert layer.server_count == 0 and layer.get_timer() is None


# -------------------------------------------------------------------------------- CANCEL


def test_cancel_matching_with_find_invite_server() -> None:
    layer = TransactionLayer()
    invite = make_request("INVITE")
    branch = invite.top_via.branch
    layer.receive(invite, UAC, 0.0)
    ikey = new_server_key(layer)
    layer.send_response(make_response(invite, 180), ikey, 0.0)
    cancel = make_request("CANCEL", branch=branch)
    layer.receive(wire(cancel.encode()), UAC, 1.0)
    [event] = events(layer)
    assert isinstance(event, RequestReceived)
    ckey = event.server_key
    assert ckey is not None and ckey != ikey and ckey[2] == "CANCEL"
    assert layer.find_invite_server(event.request) == ikey
    # Other branch, other sent-by: no match.
    assert layer.find_invite_server(make_request("CANCEL")) is None
    other = make_request("CANCEL", branch=branch)
    other.set("Via", f"SIP/2.0/UDP 10.9.9.9:5060;branch={branch}")
    assert layer.find_invite_server(other) is None
    assert layer.find_invite_server(Request("CANCEL", invite.uri, [])) is None  # no raise
    # The TU answers 200 to the CANCEL and 487 to the INVITE.
    layer.messages_to_send()
    layer.send_response(make_response(cancel, 200), ckey, 1.0)
    layer.send_response(make_response(invite, 487), ikey, 1.0)
    assert [wire_status(d) for d, _ in layer.messages_to_send()] == [200, 487]
    assert layer.server_state(ckey) == COMPLETED
    assert layer.server_state(ikey) == COMPLETED
    layer.receive(cancel, UAC, 1.2)  # retransmitted CANCEL: re-sends its 200
    assert [wire_status(d) for d, _ in layer.messages_to_send()] == [200]


# ----------------------------------------------------------- RFC 2543 fallback, bad input


def test_rfc2543_fallback_matching() -> None:
    layer = TransactionLayer()
    invite = make_request("INVITE", branch="")
    layer.receive(invite, UAC, 0.0)
    key = new_server_key(layer)
    assert key[0] == ""
    layer.receive(make_request("INVITE", branch=""), UAC, 0.5)  # retransmission
    assert events(layer) == []
    assert layer.stats["retransmissions_absorbed"] == 1
    cancel = make_request("CANCEL", branch="")
    assert layer.find_invite_server(cancel) == key
    assert layer.find_invite_server(make_request("CANCEL", branch="", cseq=2)) is None
    layer.send_response(make_response(invite, 486, to_tag="t486"), key, 1.0)
    # An ACK with another To tag does not match; the one with the response's tag does.
    wrong = make_request("ACK", branch="", to_tag="other")
    layer.receive(wrong, UAC, 1.1)
    assert events(layer) == [RequestReceived(wrong, UAC, None)]
    layer.receive(make_request("ACK", branch="", to_tag="t486"), UAC, 1.2)
    assert events(layer) == []
    assert layer.server_state(key) == CONFIRMED
    # Another CSeq is another transaction.
    layer.receive(make_request("INVITE", branch="", cseq=2), UAC, 2.0)
    assert [type(e) for e in events(layer)] == [RequestReceived]


def test_bad_messages_are_dropped_not_raised() -> None:
    layer = TransactionLayer()
    no_via = Request("OPTIONS", parse_uri("sip:x@y"), [("CSeq", "1 OPTIONS")])
    bad_cseq = make_request("OPTIONS")
    bad_cseq.set("CSeq", "garbage")
    mismatched = make_request("OPTIONS")
    mismatched.set("CSeq", "1 INFO")
    bad_from = make_request("INVITE", branch="")
    bad_from.set("From", "<<<")
    layer.receive(no_via, UAC, 0.0)
    layer.receive(bad_cseq, UAC, 0.0)
    layer.receive(mismatched, UAC, 0.0)
    layer.receive(bad_from, UAC, 0.0)
    layer.receive(Response(200, "OK", []), UAS, 0.0)
    bad_resp = Response(200, "OK", [("Via", "SIP/2.0/UDP h;branch=z9hG4bKx")])
    layer.receive(bad_resp, UAS, 0.0)
    assert events(layer) == []
    assert layer.stats["dropped_malformed"] == 6
    assert layer.server_count == 0


def test_stray_responses() -> None:
    layer = TransactionLayer()
    invite = make_request("INVITE")
    layer.send_request(invite, UAS, 0.0)
    # Right branch, wrong CSeq method: not this transaction (17.1.3).
    wrong_method = make_response(make_request("CANCEL", branch=invite.top_via.branch), 200)
    no_branch = make_response(make_request("OPTIONS", branch=""), 200)
    unknown = make_response(make_request("OPTIONS"), 200)
    for response in (wrong_method, no_branch, unknown):
        layer.receive(response, UAS, 0.1)
    assert events(layer) == [
        StrayResponse(wrong_method, UAS),
        StrayResponse(no_branch, UAS),
        StrayResponse(unknown, UAS),
    ]
    assert layer.stats["stray_responses"] == 3


def test_send_stateless_queues_once() -> None:
    layer = TransactionLayer()
    ack = make_request("ACK", to_tag="a")
    layer.send_stateless(ack, UAS)
    assert layer.messages_to_send() == [(ack.encode(), UAS)]
    assert layer.messages_to_send() == []
    assert layer.get_timer() is None
    assert layer.client_count == 0


def test_many_transactions_stay_cheap() -> None:
    """Thousands of REGISTER transactions: one timer each, all cleaned up, heap drained."""
    layer = TransactionLayer()
    keys = []
    for i in range(5000):
        register = make_request("REGISTER", call_id=f"c{i}", cseq=i + 1)
        now = i / 1000
        layer.receive(register, UAC, now)
        event = layer.next_event()
        assert isinstance(event, RequestReceived) and event.server_key is not None
        layer.send_response(make_response(register, 200), event.server_key, now)
        keys.append(event.server_key)
    assert len(layer.messages_to_send()) == 5000
    assert layer.server_count == 5000
    assert len(layer._heap) + layer.completed_count == 5000
    run_timers(layer, 1000.0)
    assert layer.server_count == 0 and layer.get_timer() is None and not layer._heap


# ------------------------------------------------------------------------ memory bounds


def answer_registers(
    layer: TransactionLayer, count: int, now: float = 0.0, step: float = 0.001
) -> list[tuple[Request, ServerKey, Response]]:
    """`count` REGISTERs received over UDP, each answered 200 at once."""
    done = []
    for i in range(count):
        register = make_request("REGISTER", call_id=f"cap{i}", cseq=i + 1)
        layer.receive(register, UAC, now + i * step)
        key = new_server_key(layer)
        ok = make_response(register, 200)
        layer.send_response(ok, key, now + i * step)
        done.append((register, key, ok))
    layer.messages_to_send()
    return done


def test_completed_table_is_capped_oldest_ended_early() -> None:
    layer = TransactionLayer(max_completed=100)
    assert TransactionLayer().max_completed == 50_000
    done = answer_registers(layer, 250)
    assert layer.completed_count == 100 and layer.server_count == 100
    assert layer.stats["completed_expired_early"] == 150
    # The newest 100 still absorb retransmissions and re-send their exact response...
    for register, key, ok in done[150:]:
        assert layer.server_state(key) == COMPLETED
        layer.receive(register, UAC, 1.0)
        assert layer.messages_to_send() == [(ok.encode(), UAC)]
    assert events(layer) == []
    assert layer.stats["retransmissions_absorbed"] == 100
    # ...the oldest are gone: a late retransmission of one is a new request for the TU.
    register, key, _ = done[0]
    assert layer.server_state(key) is None
    layer.receive(register, UAC, 1.0)
    assert new_server_key(layer) == key and layer.server_state(key) == TRYING
    layer.send_response(make_response(register, 200), key, 1.0)
    assert layer.completed_count == 100 and layer.stats["completed_expired_early"] == 151
    # Timer J still ends the rest, in order, and the heap was never involved.
    assert layer.get_timer() == 151 * 0.001 + 64 * 0.5
    assert not layer._heap
    run_timers(layer, 1000.0)
    assert layer.server_count == 0 and layer.completed_count == 0
    assert layer.get_timer() is None
    assert layer.stats["completed_expired_early"] == 151


def test_completed_cap_holds_under_a_flood() -> None:
    """A flood far past the cap keeps the table (and the timer queue) at the cap."""
    layer = TransactionLayer(max_completed=1000)
    for i in range(20_000):
        register = make_request("OPTIONS", call_id=f"flood{i}", cseq=1)
        layer.receive(register, UAC, i * 0.0001)
        key = new_server_key(layer)
        layer.send_response(make_response(register, 200), key, i * 0.0001)
        layer.messages_to_send()
        assert layer.completed_count <= 1000
    assert layer.completed_count == 1000 and len(layer._done_fifo) == 1000
    assert layer.stats["completed_expired_early"] == 19_000
    assert layer.server_count == 1000 and not layer._heap


def test_completed_server_transaction_releases_the_request() -> None:
    layer = TransactionLayer()
    register = make_request("REGISTER")
    layer.receive(wire(register.encode()), UAC, 0.0)
    [event] = events(layer)
    assert isinstance(event, RequestReceived) and event.server_key is not None
    key, request = event.server_key, event.request
    assert layer.server_request(key) is request  # the TU may still need it
    ref = weakref.ref(request)
    ok = make_response(register, 200)
    layer.send_response(ok, key, 0.0)
    assert layer.server_request(key) is None  # answered: only the response bytes are kept
    del event, request
    gc.collect()
    assert ref() is None
    assert layer.messages_to_send() == [(ok.encode(), UAC)]
    layer.receive(wire(register.encode()), UAC, 1.0)
    assert layer.messages_to_send() == [(ok.encode(), UAC)]
    assert layer.server_state(key) == COMPLETED


def test_invite_server_transaction_releases_request_and_response() -> None:
    layer = TransactionLayer()
    invite = make_request("INVITE")
    layer.receive(wire(invite.encode()), UAC, 0.0)
    [event] = events(layer)
    assert isinstance(event, RequestReceived) and event.server_key is not None
    key = event.server_key
    ref = weakref.ref(event.request)
    busy = make_response(invite, 486)
    layer.send_response(busy, key, 0.0)
    assert layer.messages_to_send() == [(busy.encode(), UAC)]
    del event
    gc.collect()
    assert ref() is None and layer.server_request(key) is None
    # Completed still re-sends the response (Timer G and retransmitted INVITEs)...
    assert times(run_timers(layer, 0.5)) == [0.5]
    layer.receive(wire(invite.encode()), UAC, 0.6)
    assert layer.messages_to_send() == [(busy.encode(), UAC)]
    # ...Confirmed only absorbs ACKs: the response bytes are let go.
    client = TransactionLayer()
    client.send_request(invite, UAS, 0.0)
    client.receive(busy, UAS, 0.0)
    layer.receive(wire(client.messages_to_send()[-1][0]), UAC, 1.0)
    assert layer.server_state(key) == CONFIRMED
    assert layer._servers[key].last_response is None
    layer.receive(wire(invite.encode()), UAC, 1.1)
    assert layer.messages_to_send() == [] and events(layer) == []


def test_client_transaction_releases_the_request_once_answered() -> None:
    layer = TransactionLayer()
    register = make_request("REGISTER")
    ref = weakref.ref(register)
    key = layer.send_request(register, UAS, 0.0)
    assert len(layer.messages_to_send()) == 1
    ok = make_response(register, 200)
    del register
    gc.collect()
    assert ref() is not None  # Trying: kept for retransmissions and ClientTimeout
    layer.receive(ok, UAS, 0.1)
    gc.collect()
    assert ref() is None
    assert layer.client_state(key) == COMPLETED
    layer.receive(ok, UAS, 0.2)  # still absorbs retransmitted responses until Timer K
    assert layer.stats["retransmissions_absorbed"] == 1
    assert run_timers(layer, 100.0) == [] and layer.client_count == 0


def test_heap_is_compacted_when_dead_entries_pile_up() -> None:
    """INVITEs rejected and ACKed over TCP end at once, each leaving a Timer H entry."""
    layer = TransactionLayer()
    for i in range(20_000):
        invite = make_request("INVITE", transport="TCP", call_id=f"h{i}")
        layer.receive(invite, UAC_TCP, 0.0)
        key = new_server_key(layer)
        busy = make_response(invite, 486)
        layer.send_response(busy, key, 0.0)
        ack = _make_ack(invite, busy)
        layer.receive(ack, UAC_TCP, 0.0)  # Timer I = 0 on TCP: Timer H's entry is dead
        assert len(layer._heap) <= 4096 + 2 * (layer.server_count + 1)
    assert layer.server_count == 0 and layer.get_timer() is None


def test_counters_alias() -> None:
    layer = TransactionLayer()
    assert layer.counters is layer.stats
    assert layer.stats["retransmissions_sent"] == 0


# ---------------------------------------------------------------- lossy network, two layers


class LossyNet:
    """A client and a server layer wired through a network that drops, duplicates, delays."""

    def __init__(
        self, actions: list[tuple[str, float]], server_delay: float, transport: str = "UDP"
    ) -> None:
        self.client = TransactionLayer()
        self.server = TransactionLayer()
        self.actions = iter(actions)
        self.server_delay = server_delay
        self.now = 0.0
        self.inflight: list[tuple[float, int, str, bytes, Address]] = []
        self.seq = itertools.count()
        self.tu_timers: list[tuple[float, int, Callable[[], None]]] = []
        self.client_addr: Address = (transport, "10.0.0.1", 5060)
        self.server_addr: Address = (transport, "10.0.0.2", 5060)
        self.delivered_to_client: list[bytes] = []

    def pump(self) -> None:
        for layer, name, src in (
            (self.client, "server", self.client_addr),
            (self.server, "client", self.server_addr),
        ):
            for data, _dest in layer.messages_to_send():
                action, delay = next(self.actions, ("deliver", 0.05))
                copies = {"drop": 0, "deliver": 1, "dup": 2}[action]
                for i in range(copies):
                    heapq.heappush(
                        self.inflight, (self.now + delay + i * 0.01, next(self.seq), name,
                                        data, src)
                    )

    def run(self, client_tu: TU, server_tu: TU, limit: float = 2000.0) -> None:
        while True:
            self.pump()
            while (e := self.client.next_event()) is not None:
                client_tu(self, e)
            while (e := self.server.next_event()) is not None:
                server_tu(self, e)
            self.pump()
            candidates = [
                t
                for t in (
                    self.inflight[0][0] if self.inflight else None,
                    self.tu_timers[0][0] if self.tu_timers else None,
                    self.client.get_timer(),
                    self.server.get_timer(),
                )
                if t is not None
            ]
            if not candidates:
                return
            self.now = max(self.now, min(candidates))
            assert self.now < limit, "the transactions never ended"
            if self.inflight and self.inflight[0][0] <= self.now:
                _, _, name, data, src = heapq.heappop(self.inflight)
                layer = self.client if name == "client" else self.server
                if name == "client":
                    self.delivered_to_client.append(data)
                layer.receive(parse_message(data), src, self.now)
            elif self.tu_timers and self.tu_timers[0][0] <= self.now:
                _, _, callback = heapq.heappop(self.tu_timers)
                callback()
            else:
                self.client.handle_timer(self.now)
                self.server.handle_timer(self.now)

    def later(self, delay: float, callback: Callable[[], None]) -> None:
        heapq.heappush(self.tu_timers, (self.now + delay, next(self.seq), callback))


TU = Callable[[LossyNet, Event], None]


ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(["drop", "dup", "deliver"]),
        st.floats(min_value=0.0, max_value=3.0, allow_nan=False),
    ),
    max_size=60,
)


def _run_lossy(
    method: str,
    status: int,
    provisional: bool,
    actions: list[tuple[str, float]],
    server_delay: float,
    transport: str = "UDP",
) -> None:
    net = LossyNet(actions, server_delay, transport)
    finals: list[Response] = []
    timeouts: list[ClientTimeout] = []
    server_requests: list[float] = []
    server_terminated: list[ServerTerminated] = []
    request = make_request(method, transport=transport)

    def client_tu(net: LossyNet, event: Event) -> None:
        if isinstance(event, ResponseReceived):
            if event.response.status >= 200:
                finals.append(event.response)
                if method == "INVITE" and event.response.status < 300:
                    ack = make_request("ACK", transport=transport, to_tag=event.response.to.tag)
                    net.client.send_stateless(ack, net.server_addr)
            elif method == "INVITE":
                # The TU's own give-up timer (a proxy's Timer C, a caller hanging up).
                key = event.client_key
                net.later(180.0, lambda: net.client.cancel_client(key))
        elif isinstance(event, ClientTimeout):
            timeouts.append(event)
        else:
            assert isinstance(event, StrayResponse), event

    def server_tu(net: LossyNet, event: Event) -> None:
        if isinstance(event, RequestReceived):
            if event.server_key is None:
                assert event.request.method == "ACK"
                return
            server_requests.append(net.now)
            if provisional:
                net.server.send_response(
                    make_response(event.request, 100, to_tag=None), event.server_key, net.now
                )
            final = make_response(event.request, status, to_tag="uas")
            key = event.server_key
            net.later(server_delay, lambda: net.server.send_response(final, key, net.now))
        else:
            assert isinstance(event, ServerTerminated), event
            server_terminated.append(event)

    net.client.send_request(request, net.server_addr, 0.0)
    net.run(client_tu, server_tu)

    # Either the final response reached the client TU exactly once or a ClientTimeout did.
    final_copies = 0
    for data in net.delivered_to_client:
        message = parse_message(data)
        if isinstance(message, Response) and message.status == status:
            final_copies += 1
    if method == "INVITE" and status < 300:
        # RFC 6026: every 2xx copy that arrives in Accepted goes up (the network may
        # duplicate), but a 2xx never comes together with a ClientTimeout.
        assert (len(finals) >= 1) != (len(timeouts) == 1), (finals, timeouts)
        assert len(finals) <= final_copies
        assert len(timeouts) <= 1
    else:
        assert (len(finals), len(timeouts)) in ((1, 0), (0, 1)), (finals, timeouts)
        if finals:
            assert finals[0].status == status
    # Retransmitted requests never reach the server TU while its transaction lives (at
    # least 64*T1 after the request arrived). A copy the network delays past the end of
    # Timer L/J makes a new transaction, as in RFC 6026; the TU's merged-request check
    # (RFC 3261 8.2.2.2) deals with it.
    assert all(b - a >= 64 * 0.5 for a, b in itertools.pairwise(server_requests))
    if not server_requests:
        assert timeouts and not finals
    assert len(server_terminated) <= 1
    if server_terminated:
        assert method == "INVITE" and status >= 300
    hypothesis.event("final" if finals else "ClientTimeout")
    if server_terminated:
        hypothesis.event("Timer H")
    if len(server_requests) > 1:
        hypothesis.event("late copy after the server transaction ended")
    if net.client.stats["stray_responses"]:
        hypothesis.event("stray responses")
    if net.client.stats["retransmissions_absorbed"] or net.server.stats["retransmissions_absorbed"]:
        hypothesis.event("absorbed retransmissions")
    # Nothing leaks: every transaction and every timer has ended.
    assert net.client.client_count == 0 and net.client.server_count == 0
    assert net.server.client_count == 0 and net.server.server_count == 0
    assert net.client.get_timer() is None and net.server.get_timer() is None


LOSSY_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@LOSSY_SETTINGS
@given(
    actions=ACTIONS,
    status=st.sampled_from([200, 202, 404, 503]),
    provisional=st.booleans(),
    server_delay=st.floats(min_value=0.0, max_value=40.0, allow_nan=False),
)
def test_lossy_non_invite(
    actions: list[tuple[str, float]], status: int, provisional: bool, server_delay: float
) -> None:
    _run_lossy("REGISTER", status, provisional, actions, server_delay)


@LOSSY_SETTINGS
@given(
    actions=ACTIONS,
    status=st.sampled_from([200, 404, 486, 603]),
    provisional=st.booleans(),
    server_delay=st.floats(min_value=0.0, max_value=40.0, allow_nan=False),
)
def test_lossy_invite(
    actions: list[tuple[str, float]], status: int, provisional: bool, server_delay: float
) -> None:
    _run_lossy("INVITE", status, provisional, actions, server_delay)


@settings(max_examples=50, deadline=None)
@given(
    method=st.sampled_from(["INVITE", "OPTIONS"]),
    status=st.sampled_from([200, 486]),
    server_delay=st.floats(min_value=0.0, max_value=40.0, allow_nan=False),
)
def test_tcp_no_loss(method: str, status: int, server_delay: float) -> None:
    _run_lossy(method, status, True, [], server_delay, transport="TCP")
