"""The stateful proxy, driven sans-IO: forking, best response, CANCEL, timeouts, routing."""

from __future__ import annotations

from pathlib import Path

from appliance.proxy import Proxy
from appliance.registrar import Location
from overlay.sip.message import Request, Response, parse_message
from overlay.sip.routing import Address, stamp_via
from overlay.sip.transaction import TransactionLayer

CALLER: Address = ("UDP", "10.99.0.11", 5062)
PHONE_A: Address = ("UDP", "10.99.0.12", 5062)
PHONE_B: Address = ("UDP", "10.99.0.12", 5064)
NODE = ("10.99.0.1", 5060)
TORTURE = Path(__file__).resolve().parent / "data" / "rfc4475"


class Bed:
    def __init__(self) -> None:
        self.txl = TransactionLayer(t1=0.5)
        self.location = Location()
        self.proxy = Proxy(self.txl, self.location, lambda p: (p[0], *NODE), "tok")
        self.now = 0.0

    def deliver(self, data: bytes | Request | Response, source: Address) -> list:
        msg = parse_message(data if isinstance(data, bytes) else data.encode())
        if isinstance(msg, Request):
            stamp_via(msg, source)
        self.txl.receive(msg, source, self.now)
        return self.pump()

    def pump(self) -> list[tuple[Request | Response, Address]]:
        while (event := self.txl.next_event()) is not None:
            self.proxy.handle(event, self.now)
        return [(parse_message(d), a) for d, a in self.txl.messages_to_send()]

    def advance(self, seconds: float) -> list:
        out = []
        end = self.now + seconds
        while (t := self._next_timer()) is not None and t <= end:
            self.now = t
            self.txl.handle_timer(t)
            self.proxy.handle_timer(t)
            out += self.pump()
        self.now = end
        return out

    def _next_timer(self) -> float | None:
        timers = [t for t in (self.txl.get_timer(), self.proxy.get_timer()) if t is not None]
        return min(timers, default=None)

    def register(self, ext: str, source: Address, user: str | None = None) -> None:
        host, port = source[1], source[2]
        out = self.deliver(
            f"REGISTER sip:10.99.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {host}:{port};branch=z9hG4bKr"
            f"{port}{ext}\r\nFrom: <sip:{ext}@x>;tag=r\r\nTo: <sip:{ext}@x>\r\n"
            f"Call-ID: reg{ext}{port}\r\nCSeq: 1 REGISTER\r\n"
            f"Contact: <sip:{user or ext}@{host}:{port}>\r\n\r\n".encode(), source)
        assert [m.status for m, _ in out] == [200]


def invite(callee: str = "1002", branch: str = "z9hG4bKinv", method: str = "INVITE",
           extra: str = "") -> bytes:
    return (
        f"{method} sip:{callee}@10.99.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 10.99.0.11:5062;branch={branch};rport\r\n"
        "From: \"Alice\" <sip:1001@10.99.0.1>;tag=alice\r\n"
        f"To: <sip:{callee}@10.99.0.1>\r\nCall-ID: call-1\r\nCSeq: 1 {method}\r\n"
        f"Max-Forwards: 70\r\nContact: <sip:1001@10.99.0.11:5062>\r\n{extra}\r\n"
    ).encode()


def answer(request: Request, status: int, reason: str, tag: str = "b") -> Response:
    headers = [(n, v) for n, v in request.headers if n in ("Via", "From", "To", "Call-ID",
                                                              "CSeq", "Record-Route")]
    response = Response(status, reason, headers)
    if status > 100:
        response.set("To", request.get("To") + f";tag={tag}")
    return response


def split(out: list) -> tuple[list, dict]:
    """Responses going upstream to the caller, and requests per downstream address."""
    up = [m.status for m, a in out if isinstance(m, Response) and a == CALLER]
    down: dict = {}
    for m, a in out:
        if isinstance(m, Request):
            down.setdefault(a, []).append(m)
    return up, down


def forked_call() -> tuple[Bed, Request, Request]:
    bed = Bed()
    bed.register("1002", PHONE_A, "a")
    bed.register("1002", PHONE_B, "b")
    up, down = split(bed.deliver(invite(), CALLER))
    assert up == [100]
    assert set(down) == {PHONE_A, PHONE_B}
    (to_a,), (to_b,) = down[PHONE_A], down[PHONE_B]
    assert to_a.uri.user == "a" and to_b.uri.user == "b"
    for req in (to_a, to_b):
        assert req.max_forwards == 69
        assert req.get("Record-Route") == "<sip:10.99.0.1:5060;lr;ms=tok>"
        assert len(req.vias) == 2 and req.vias[1].params["received"] == "10.99.0.11"
    return bed, to_a, to_b


def test_fork_first_2xx_wins_and_ringing_branch_is_cancelled() -> None:
    bed, to_a, to_b = forked_call()
    up, _ = split(bed.deliver(answer(to_a, 180, "Ringing", "a"), PHONE_A))
    assert up == [180]
    up, down = split(bed.deliver(answer(to_b, 200, "OK"), PHONE_B))
    assert up == [200]
    (cancel,) = down[PHONE_A]
    assert cancel.method == "CANCEL" and cancel.top_via.branch == to_a.top_via.branch
    up, _ = split(bed.deliver(answer(to_a, 487, "Request Terminated", "a"), PHONE_A))
    assert up == []  # the 487 of a cancelled branch never reaches the caller
    assert bed.proxy.calls["call-1"].state == "established"
    assert bed.proxy.by_server == {} and bed.proxy.pending == {}  # the request is done


def test_fork_all_fail_best_response_goes_upstream() -> None:
    bed, to_a, to_b = forked_call()
    up, down = split(bed.deliver(answer(to_a, 486, "Busy Here", "a"), PHONE_A))
    assert up == [] and PHONE_A in down and down[PHONE_A][0].method == "ACK"
    up, _ = split(bed.deliver(answer(to_b, 404, "Not Found"), PHONE_B))
    assert up == [486]
    assert "call-1" not in bed.proxy.calls


def test_6xx_ends_the_search() -> None:
    bed, to_a, to_b = forked_call()
    bed.deliver(answer(to_b, 180, "Ringing"), PHONE_B)
    up, down = split(bed.deliver(answer(to_a, 603, "Decline", "a"), PHONE_A))
    assert [m.method for m in down[PHONE_B]] == ["CANCEL"]
    up, _ = split(bed.deliver(answer(to_b, 487, "Request Terminated"), PHONE_B))
    assert up == [603]


def test_cancel_from_caller_goes_down_every_branch_that_has_answered_at_all() -> None:
    bed, to_a, to_b = forked_call()
    bed.deliver(answer(to_a, 180, "Ringing", "a"), PHONE_A)
    up, _ = split(bed.deliver(answer(to_b, 100, "Trying"), PHONE_B))  # B only said Trying
    assert up == []
    up, down = split(bed.deliver(invite(method="CANCEL"), CALLER))
    assert up == [200]
    for phone, sent in ((PHONE_A, to_a), (PHONE_B, to_b)):  # RFC 3261 9.1: 100 is enough
        (cancel,) = down[phone]
        assert cancel.method == "CANCEL" and cancel.top_via.branch == sent.top_via.branch
    up, _ = split(bed.deliver(answer(to_a, 487, "Request Terminated", "a"), PHONE_A))
    assert up == []  # B has not ended yet
    up, _ = split(bed.deliver(answer(to_b, 487, "Request Terminated"), PHONE_B))
    assert up == [487]


def test_a_branch_with_no_answer_gets_its_cancel_with_its_first_provisional() -> None:
    bed, to_a, to_b = forked_call()
    bed.deliver(answer(to_a, 180, "Ringing", "a"), PHONE_A)
    up, down = split(bed.deliver(invite(method="CANCEL"), CALLER))
    assert up == [200] and [m.method for m in down[PHONE_A]] == ["CANCEL"]
    assert PHONE_B not in down  # nothing from B yet: no CANCEL may be sent (9.1)
    up, down = split(bed.advance(1.0))
    assert up == [] and [m.method for m in down[PHONE_B]] == ["INVITE"]  # still asking B
    up, down = split(bed.deliver(answer(to_b, 100, "Trying"), PHONE_B))
    assert up == [] and [m.method for m in down[PHONE_B]] == ["CANCEL"]
    bed.deliver(answer(to_a, 487, "Request Terminated", "a"), PHONE_A)
    up, _ = split(bed.deliver(answer(to_b, 487, "Request Terminated"), PHONE_B))
    assert up == [487]


def test_a_cancelled_branch_that_never_answers_times_out_into_a_487() -> None:
    bed = Bed()
    bed.register("1002", PHONE_A)
    bed.deliver(invite(), CALLER)
    up, down = split(bed.deliver(invite(method="CANCEL"), CALLER))
    assert up == [200] and down == {}
    up, down = split(bed.advance(40.0))  # Timer B (64*T1)
    assert [m.method for m in down[PHONE_A]] == ["INVITE"] * len(down[PHONE_A])
    assert set(up) == {487}


def test_a_callee_ignoring_the_cancel_is_given_up_after_64_t1() -> None:
    bed = Bed()
    bed.register("1002", PHONE_A)
    _, down = split(bed.deliver(invite(), CALLER))
    (to_a,) = down[PHONE_A]
    bed.deliver(answer(to_a, 180, "Ringing"), PHONE_A)
    _, down = split(bed.deliver(invite(method="CANCEL"), CALLER))
    assert [m.method for m in down[PHONE_A]] == ["CANCEL"]
    up, _ = split(bed.advance(40.0))
    assert set(up) == {487}
    assert bed.proxy.by_server == {} and bed.proxy.pending == {}


def test_a_2xx_crossing_the_cancel_goes_up_and_no_487_follows() -> None:
    bed = Bed()
    bed.register("1002", PHONE_A)
    _, down = split(bed.deliver(invite(), CALLER))
    (to_a,) = down[PHONE_A]
    bed.deliver(answer(to_a, 180, "Ringing"), PHONE_A)
    bed.deliver(invite(method="CANCEL"), CALLER)
    up, _ = split(bed.deliver(answer(to_a, 200, "OK"), PHONE_A))
    assert up == [200]  # the callee answered first: the caller ACKs and BYEs it (9.1, 15)
    up, _ = split(bed.advance(40.0))
    assert 487 not in up


def test_a_2xx_after_the_callers_487_is_acked_and_byed_not_forwarded() -> None:
    bed = Bed()
    bed.register("1002", PHONE_A)
    _, down = split(bed.deliver(invite(), CALLER))
    (to_a,) = down[PHONE_A]
    bed.deliver(invite(method="CANCEL"), CALLER)
    up, _ = split(bed.advance(40.0))  # the INVITE times out: the caller gets its 487
    assert set(up) == {487}
    ok = answer(to_a, 200, "OK")
    ok.add("Contact", "<sip:a@10.99.0.12:5062>")
    up, down = split(bed.deliver(ok, PHONE_A))
    assert up == []
    ack, bye = down[PHONE_A]
    assert (ack.method, bye.method) == ("ACK", "BYE")
    assert str(bye.uri) == "sip:a@10.99.0.12:5062" and bye.get("Route") is None
    assert bye.to.tag == "b" and bye.call_id == "call-1" and bye.cseq == (2, "BYE")
    up, down = split(bed.deliver(ok, PHONE_A))  # retransmitted: ACKed again, one BYE only
    assert up == [] and [m.method for m in down[PHONE_A]] == ["ACK"]
    assert bed.proxy.counters["stray_2xx_ended"] == 1
    bed.now += 64 * 0.5
    bed.proxy.expire(bed.now)  # the callee has given up retransmitting by now
    assert len(bed.proxy.closed) == 0


def test_cancel_for_unknown_transaction_gets_481() -> None:
    bed = Bed()
    up, _ = split(bed.deliver(invite(method="CANCEL"), CALLER))
    assert up == [481]


def test_unanswered_contact_times_out_with_408() -> None:
    bed = Bed()
    bed.register("1002", PHONE_A)
    bed.deliver(invite(), CALLER)
    out = bed.advance(40.0)
    up, down = split(out)
    assert len(down[PHONE_A]) >= 5  # Timer A retransmissions on UDP
    assert 408 in up


def test_unknown_and_absent_extensions() -> None:
    bed = Bed()
    up, _ = split(bed.deliver(invite("9999"), CALLER))
    assert up == [100, 404]
    bed.register("1002", PHONE_A)
    bed.location.bindings.clear()  # registered once, gone now
    up, _ = split(bed.deliver(invite("1002", branch="z9hG4bK2"), CALLER))
    assert up == [100, 480]


def test_request_checks() -> None:
    bed = Bed()
    up, _ = split(bed.deliver(invite(extra="Max-Forwards: 0\r\n").replace(
        b"Max-Forwards: 70\r\n", b""), CALLER))
    assert up == [483]
    tel = invite(branch="z9hG4bKt").replace(b"INVITE sip:1002@10.99.0.1", b"INVITE tel:1002")
    up, _ = split(bed.deliver(tel, CALLER))
    assert up == [416]
    up, _ = split(bed.deliver(invite(branch="z9hG4bKp", extra="Proxy-Require: foo\r\n"), CALLER))
    assert up == [420]


def test_options_to_the_node_itself() -> None:
    bed = Bed()
    ping = invite(method="OPTIONS").replace(b"OPTIONS sip:1002@", b"OPTIONS sip:")
    out = bed.deliver(ping, CALLER)
    (resp, _), = out
    assert resp.status == 200 and "INVITE" in resp.get("Allow")


def test_in_dialog_bye_follows_route_and_ends_call() -> None:
    bed, to_a, to_b = forked_call()
    bed.deliver(answer(to_b, 200, "OK"), PHONE_B)
    bye = (
        b"BYE sip:b@10.99.0.12:5064 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 10.99.0.11:5062;branch=z9hG4bKbye\r\n"
        b"Route: <sip:10.99.0.1:5060;lr;ms=tok>\r\n"
        b"From: <sip:1001@10.99.0.1>;tag=alice\r\nTo: <sip:1002@10.99.0.1>;tag=b\r\n"
        b"Call-ID: call-1\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\n\r\n"
    )
    _, down = split(bed.deliver(bye, CALLER))
    (fwd,) = down[PHONE_B]
    assert fwd.method == "BYE" and fwd.get("Route") is None
    up, _ = split(bed.deliver(answer(fwd, 200, "OK"), PHONE_B))
    assert up == [200]
    assert "call-1" not in bed.proxy.calls


def test_ack_for_2xx_is_forwarded_statelessly_and_stray_2xx_goes_upstream() -> None:
    bed, to_a, to_b = forked_call()
    ok = answer(to_b, 200, "OK")
    bed.deliver(ok, PHONE_B)
    ack = (
        b"ACK sip:b@10.99.0.12:5064 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 10.99.0.11:5062;branch=z9hG4bKack\r\n"
        b"Route: <sip:10.99.0.1:5060;lr;ms=tok>\r\n"
        b"From: <sip:1001@10.99.0.1>;tag=alice\r\nTo: <sip:1002@10.99.0.1>;tag=b\r\n"
        b"Call-ID: call-1\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\n\r\n"
    )
    _, down = split(bed.deliver(ack, CALLER))
    (fwd,) = down[PHONE_B]
    assert fwd.method == "ACK" and len(fwd.vias) == 2
    # The same ACK again gets the same branch, so the phone sees a retransmission.
    _, again = split(bed.deliver(ack, CALLER))
    assert again[PHONE_B][0].top_via.branch == fwd.top_via.branch
    bed.advance(60.0)  # the client transaction is long gone now
    up, _ = split(bed.deliver(ok, PHONE_B))
    assert up == [200]


def test_retransmitted_2xx_goes_upstream_after_the_call_is_answered() -> None:
    bed = Bed()
    bed.register("1002", PHONE_A)
    _, down = split(bed.deliver(invite(), CALLER))
    (to_a,) = down[PHONE_A]
    ok = answer(to_a, 200, "OK")
    up, _ = split(bed.deliver(ok, PHONE_A))
    assert up == [200]
    # That 200 was lost on its way to the caller: the phone retransmits it (no ACK came),
    # and every copy must reach the caller, not only one after the transaction ended.
    for _ in range(3):
        bed.advance(0.5)
        up, _ = split(bed.deliver(ok, PHONE_A))
        assert up == [200]


def test_the_200_for_our_cancel_is_not_forwarded() -> None:
    bed, to_a, to_b = forked_call()
    bed.deliver(answer(to_a, 180, "Ringing", "a"), PHONE_A)
    _, down = split(bed.deliver(answer(to_b, 200, "OK"), PHONE_B))
    (cancel,) = down[PHONE_A]
    up, _ = split(bed.deliver(answer(cancel, 200, "OK", "a"), PHONE_A))
    assert up == []


def test_timer_c_gives_up_a_call_nobody_answers() -> None:
    bed = Bed()
    bed.register("1002", PHONE_A)
    _, down = split(bed.deliver(invite(), CALLER))
    (to_a,) = down[PHONE_A]
    bed.deliver(answer(to_a, 180, "Ringing"), PHONE_A)
    bed.now = 200.0
    bed.proxy.expire(bed.now)
    _, down = split(bed.pump())
    assert [m.method for m in down[PHONE_A]] == ["CANCEL"]
    up, _ = split(bed.deliver(answer(to_a, 487, "Request Terminated"), PHONE_A))
    assert up == [487]


def test_local_408_keeps_every_via_of_a_request_from_another_box() -> None:
    bed = Bed()
    bed.register("1002", PHONE_A)
    via = "Via: SIP/2.0/UDP 10.99.0.14:5060;branch=z9hG4bKbox;rport\r\n"
    relayed = invite().replace(b"Via: ", via.encode() + b"Via: ", 1)
    bed.deliver(relayed, CALLER)
    up = [m for m, a in bed.advance(40.0) if isinstance(m, Response) and a == CALLER]
    assert up and {m.status for m in up} == {408}  # (retransmitted: nobody ACKs here)
    assert [v.host for v in up[0].vias] == ["10.99.0.14", "10.99.0.11"]


# -- calls to phones on other boxes ----------------------------------------------------------
BOX_1: Address = ("UDP", "10.99.0.14", 5060)
BOX_2: Address = ("UDP", "10.99.0.15", 5060)


class Mesh:
    """Stands in for the node's mesh: records the lookups and answers them when told."""

    def __init__(self, bed: Bed) -> None:
        self.bed = bed
        self.asked: list[tuple[str, object]] = []
        self.forgotten: list[str] = []
        bed.proxy.find_remote = lambda ext, reply: self.asked.append((ext, reply))
        bed.proxy.forget_remote = self.forgotten.append

    def answer(self, *boxes: Address) -> list:
        _, reply = self.asked[-1]
        reply([f"sip:{b[1]}:{b[2]}" for b in boxes], self.bed.now)
        return self.bed.pump()


def test_a_silent_box_is_given_up_and_the_extension_looked_up_again() -> None:
    bed = Bed()
    mesh = Mesh(bed)
    up, _ = split(bed.deliver(invite("2002"), CALLER))
    assert up == [100] and [ext for ext, _ in mesh.asked] == ["2002"]
    _, down = split(mesh.answer(BOX_1))
    (to_box,) = down[BOX_1]
    assert to_box.get("Meshsip-Hop") == "tok"
    up, down = split(bed.advance(1.9))
    assert up == [] and len(mesh.asked) == 1  # Timer A retransmits to the box meanwhile
    bed.advance(0.2)  # 2 s of silence: the box is taken for gone
    assert mesh.forgotten == ["2002"] and len(mesh.asked) == 2
    # The second lookup names the same box and another one: only the other is tried.
    up, down = split(mesh.answer(BOX_1, BOX_2))
    assert up == [] and set(down) == {BOX_2}
    (to_box_2,) = down[BOX_2]
    up, _ = split(bed.deliver(answer(to_box_2, 100, "Trying"), BOX_2))
    up, down = split(bed.advance(5.0))
    assert up == [] and BOX_1 not in down  # it answered: no giving up, box 1 stays abandoned
    up, _ = split(bed.deliver(answer(to_box_2, 200, "OK"), BOX_2))
    assert up == [200]


def test_a_call_to_a_dead_box_fails_fast_with_480() -> None:
    bed = Bed()
    mesh = Mesh(bed)
    bed.deliver(invite("2002"), CALLER)
    mesh.answer(BOX_1)
    bed.advance(2.1)
    up, down = split(mesh.answer(BOX_1))  # the record still names the dead box
    assert up == [480] and down == {}
    assert len(mesh.asked) == 2  # looked up again once, not more


def test_a_box_that_says_trying_is_waited_for() -> None:
    bed = Bed()
    mesh = Mesh(bed)
    bed.deliver(invite("2002"), CALLER)
    _, down = split(mesh.answer(BOX_1))
    (to_box,) = down[BOX_1]
    bed.deliver(answer(to_box, 100, "Trying"), BOX_1)
    up, _ = split(bed.advance(10.0))
    assert up == [] and mesh.forgotten == [] and len(mesh.asked) == 1
    up, _ = split(bed.deliver(answer(to_box, 180, "Ringing"), BOX_1))
    assert up == [180]


def test_a_late_2xx_from_a_box_given_up_after_the_cancel_is_ended_there() -> None:
    bed = Bed()
    mesh = Mesh(bed)
    bed.deliver(invite("2002"), CALLER)
    _, down = split(mesh.answer(BOX_1))
    (to_box,) = down[BOX_1]
    up, down = split(bed.deliver(invite("2002", method="CANCEL"), CALLER))
    assert up == [200] and BOX_1 not in down  # the box said nothing yet
    up, _ = split(bed.advance(2.1))  # silent: given up, and the caller has its 487
    assert up == [487]
    # The box was only slow: its phone answers. Nothing may reach the caller now.
    ok = answer(to_box, 200, "OK")
    ok.add("Contact", "<sip:2002@10.99.0.30:5062>")
    ok.add("Record-Route", "<sip:10.99.0.14:5060;lr;ms=box1>", first=True)
    up, down = split(bed.deliver(ok, BOX_1))
    assert up == []
    ack, bye = down[BOX_1]
    assert (ack.method, bye.method) == ("ACK", "BYE")
    assert bye.get_all("Route") == ["<sip:10.99.0.14:5060;lr;ms=box1>"]
    assert str(bye.uri) == "sip:2002@10.99.0.30:5062"


def test_cancel_while_looking_again() -> None:
    bed = Bed()
    mesh = Mesh(bed)
    bed.deliver(invite("2002"), CALLER)
    mesh.answer(BOX_1)
    bed.advance(2.1)
    up, _ = split(bed.deliver(invite("2002", method="CANCEL"), CALLER))
    assert sorted(up) == [200, 487]
    up, down = split(mesh.answer(BOX_2))  # too late: nobody is called any more
    assert up == [] and down == {}


def test_the_first_lookup_ends_one_way_each_boxes_none_or_the_caller_gone() -> None:
    # The answer names a box: the INVITE goes there.
    bed = Bed()
    mesh = Mesh(bed)
    bed.deliver(invite("2002"), CALLER)
    up, down = split(mesh.answer(BOX_1))
    assert up == [] and set(down) == {BOX_1}
    # The mesh found nothing (or failed, or timed out: it answers empty then): 404.
    bed = Bed()
    mesh = Mesh(bed)
    bed.deliver(invite("2002"), CALLER)
    up, down = split(mesh.answer())
    assert up == [404] and down == {}
    assert bed.proxy.by_server == {} and bed.proxy.calls == {}
    # The caller cancelled while the mesh looked: 200 and 487 at once, nothing sent later.
    bed = Bed()
    mesh = Mesh(bed)
    bed.deliver(invite("2002"), CALLER)
    up, _ = split(bed.deliver(invite("2002", method="CANCEL"), CALLER))
    assert sorted(up) == [200, 487]
    up, down = split(mesh.answer(BOX_1))
    assert up == [] and down == {} and bed.proxy.by_server == {}


# -- responses that are not ours, methods aimed at the box -----------------------------------
def test_a_response_whose_top_via_is_not_ours_is_dropped_and_counted() -> None:
    bed = Bed()
    # RFC 4475 3.3.10: stripping the top Via would send it on to 255.255.255.255.
    bcast = (TORTURE / "bcast.dat").read_bytes()
    assert bed.deliver(bcast, CALLER) == []
    for top in ("10.99.0.1:5070", "10.99.0.2:5060"):  # our address, not our port; a neighbour
        assert bed.deliver(bcast.replace(b"192.0.2.198", top.encode()), CALLER) == []
    assert bed.proxy.counters["responses_not_ours"] == 3
    assert bed.proxy.counters["stray_forwarded"] == 0


def test_a_stray_response_with_our_via_goes_on_along_the_next_via() -> None:
    bed = Bed()
    response = (
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.99.0.1:5060;branch=z9hG4bKgone\r\n"
        b"Via: SIP/2.0/UDP 10.99.0.11:5062;branch=z9hG4bKup\r\n"
        b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>;tag=2\r\n"
        b"Call-ID: later\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    ((out, dest),) = bed.deliver(response, PHONE_A)
    assert dest == CALLER and [v.host for v in out.vias] == ["10.99.0.11"]
    assert bed.proxy.counters["responses_not_ours"] == 0


def test_an_unknown_method_for_the_box_gets_405_with_allow() -> None:
    bed = Bed()
    frob = invite(method="FROB").replace(b"FROB sip:1002@", b"FROB sip:")
    ((response, dest),) = bed.deliver(frob, CALLER)
    assert dest == CALLER and response.status == 405
    assert "INVITE" in response.get("Allow") and "FROB" not in response.get("Allow")
    # A method we know that needs a user: still 404.
    message = invite(method="MESSAGE").replace(b"MESSAGE sip:1002@", b"MESSAGE sip:")
    up, _ = split(bed.deliver(message, CALLER))
    assert up == [404]


def test_an_unknown_method_for_a_phone_is_proxied() -> None:
    bed = Bed()
    bed.register("1002", PHONE_A)
    up, down = split(bed.deliver(invite(method="FROB"), CALLER))
    assert up == []
    (fwd,) = down[PHONE_A]
    assert fwd.method == "FROB" and fwd.max_forwards == 69
    up, _ = split(bed.deliver(answer(fwd, 200, "OK"), PHONE_A))
    assert up == [200]
