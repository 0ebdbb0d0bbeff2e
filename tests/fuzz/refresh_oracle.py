"""The refresh lane's oracle: the full path (parse, Via stamping, Location.register) on a
copy of the same state. The lane (appliance/refresh.py) may answer only as the full path
does and leave the same binding, or decline and change nothing. Used by
tests/test_refresh_lane.py and by the SIP fuzz target (sip_target.py)."""

from __future__ import annotations

import copy

from appliance.refresh import RefreshLane
from appliance.registrar import Location
from overlay.sip.errors import SipParseError
from overlay.sip.message import Request, Response, parse_message
from overlay.sip.routing import stamp_via
from overlay.sip.transaction import TransactionLayer

PHONE = ("UDP", "10.99.0.11", 5062)
NATTED = ("UDP", "10.99.0.11", 40123)  # the same phone seen from another port
OTHER = ("UDP", "10.99.0.12", 5062)


def register(*, cseq: int = 2, call_id: str = "c1", branch: str = "z9hG4bKb2",
             extra: tuple[str, ...] = (), **override: str | None) -> bytes:
    """A linphone-like refresh of 1001; `override` replaces (or with None drops) a header."""
    headers = {
        "Via": f"SIP/2.0/UDP 10.99.0.11:5062;branch={branch};rport",
        "From": '"Alice" <sip:1001@10.99.0.1>;tag=f' + str(cseq),
        "To": '"Alice" <sip:1001@10.99.0.1>',
        "Call-ID": call_id,
        "CSeq": f"{cseq} REGISTER",
        "Contact": '<sip:1001@10.99.0.11:5062;transport=udp>;+sip.instance='
                   '"<urn:uuid:0b1e6a2c-1a0e-4a3e-9b55-1f0e2a7d9c11>";expires=600',
        "Expires": "3600",
        "Max-Forwards": "70",
        "User-Agent": "Linphone/5.2",
        "Supported": "outbound, path",
        "Content-Length": "0",
    }
    for name, value in override.items():
        name = name.replace("_", "-")
        if value is None:
            headers.pop(name)
        else:
            headers[name] = value
    lines = ["REGISTER sip:10.99.0.1 SIP/2.0", *(f"{n}: {v}" for n, v in headers.items()),
             *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def full_path(loc: Location, data: bytes, source: tuple[str, str, int], now: float
              ) -> Response | str:
    """What the node does with a REGISTER that takes the full path (node.py, intake.py)."""
    try:
        request = parse_message(data)
    except SipParseError as exc:
        return f"unparsable ({exc.status})"
    if not isinstance(request, Request) or request.method != "REGISTER":
        return "not a REGISTER"
    stamp_via(request, source)
    answer = loc.register(request, source, now)
    return answer if isinstance(answer, Response) else "claim"


def lane_for(loc: Location) -> RefreshLane:
    return RefreshLane(loc, TransactionLayer(), {"requests": 0, "registrations": 0},
                       lambda deadline: None)


def bound(now: float = 0.0, **location: object) -> Location:
    """A location where 1001 is bound from PHONE by the full path (cseq 1)."""
    loc = Location(**location)  # type: ignore[arg-type]
    answer = full_path(loc, register(cseq=1, branch="z9hG4bKb1"), PHONE, now)
    assert isinstance(answer, Response) and answer.status == 200
    return loc


def state(loc: Location) -> dict:
    return {ext: [vars(b) | {"memo": None} for b in bs] for ext, bs in loc.bindings.items()}


def same_answer(lane_bytes: bytes, full: Response) -> None:
    lane = parse_message(lane_bytes)
    assert isinstance(lane, Response) and lane.status == full.status == 200
    assert lane.vias == full.vias
    assert lane.from_ == full.from_ and lane.call_id == full.call_id and lane.cseq == full.cseq
    to_lane, to_full = lane.to, full.to
    assert to_lane.tag and to_full.tag
    to_lane.params.pop("tag")
    to_full.params.pop("tag")
    assert to_lane == to_full
    assert lane.contacts() == full.contacts()
    assert lane.body == full.body == b""


def compare(loc: Location, data: bytes, source: tuple[str, str, int], now: float) -> bool:
    """Lane and full path on copies of `loc`: the lane answers only as the full path
    does, or declines and changes nothing. True when the lane answered."""
    by_lane, by_full = copy.deepcopy(loc), copy.deepcopy(loc)
    before = state(by_lane)
    answer = lane_for(by_lane).answer(data, source, now)
    full = full_path(by_full, data, source, now)
    if answer is None:
        assert state(by_lane) == before, data
        return False
    assert isinstance(full, Response), (data, full)
    same_answer(answer, full)
    assert state(by_lane) == state(by_full), data
    return True


def read_once() -> Location:
    """1001 bound, then refreshed once by the lane: its binding holds the lane's memo."""
    loc = bound()
    assert lane_for(loc).answer(register(cseq=2, branch="z9hG4bKr2"), PHONE, 5.0)
    return loc


VARIANTS = [
    register(cseq=7, branch="z9hG4bKv7"),
    register(cseq=7, branch="z9hG4bKv7", From="<sip:1001@10.99.0.1>;tag=plain",
             To="<sip:1001@10.99.0.1>", Contact="<sip:1001@10.99.0.11:5062;transport=udp>"),
    register(cseq=7, branch="z9hG4bKv7", Via="SIP/2.0/UDP 10.99.0.11:5062;branch=z9hG4bKv7"),
    register(cseq=7, branch="z9hG4bKv7", Via="SIP/2.0/UDP phone.local:5062;branch=z9hG4bKv7"),
    register(cseq=7, branch="z9hG4bKv7", To="Alice Smith <sip:1001@10.99.0.1>"),
    register(cseq=7, branch="z9hG4bKv7", From="<sip:1001@10.99.0.1;user=phone>;tag=x;y=z",
             To="<sip:1001@10.99.0.1;user=phone>", Supported="path"),
    register(cseq=7, branch="z9hG4bKv7", Expires=None),
    register(cseq=7, branch="z9hG4bKv7", Contact="<sip:1001@10.99.0.11:5062;transport=udp>"
                                                 ";q=0.5;expires=120"),
    register(cseq=7, branch="z9hG4bKv7",  # linphone's, with a comma in a quoted value
             Contact='<sip:1001@10.99.0.11:5062;transport=udp>;+sip.instance='
                     '"<urn:uuid:0b1e6a2c-1a0e-4a3e-9b55-1f0e2a7d9c11>";+org.linphone.specs='
                     '"groupchat/1.1,lime";expires=600', Supported="replaces, outbound, gruu",
             Accept="application/sdp, text/plain, application/vnd.gsma.rcs-ft-http+xml"),
]
