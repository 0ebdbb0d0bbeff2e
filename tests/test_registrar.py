"""Registrar rules (RFC 3261 section 10.3) on the sans-IO location service."""

import json
from pathlib import Path

from appliance.registrar import REBOOT_MARGIN, Clocks, Location
from overlay.sip.message import Request, parse_message

PHONE = ("UDP", "10.99.0.11", 5062)
OTHER = ("UDP", "10.99.0.12", 5062)


def register(ext: str, contacts: list[str], *, expires: int | None = None, cseq: int = 1,
             call_id: str = "c1", to_name: str = "", from_name: str = "") -> Request:
    lines = [
        "REGISTER sip:10.99.0.1 SIP/2.0",
        "Via: SIP/2.0/UDP 10.99.0.11:5062;branch=z9hG4bK" + call_id + str(cseq),
        f"From: {from_name}<sip:{ext}@10.99.0.1>;tag=ft",
        f"To: {to_name}<sip:{ext}@10.99.0.1>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        "Max-Forwards: 70",
    ]
    lines += [f"Contact: {c}" for c in contacts]
    if expires is not None:
        lines.append(f"Expires: {expires}")
    msg = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


def contacts_of(response) -> list[str]:
    return response.get_all("Contact")


def test_register_refresh_and_unregister() -> None:
    loc = Location()
    r = loc.register(register("1001", ["<sip:1001@10.99.0.11:5062>"], expires=120), PHONE, 0)
    assert r.status == 200
    assert contacts_of(r) == ["<sip:1001@10.99.0.11:5062>;expires=120"]
    assert r.to.tag
    assert [b.contact for b in loc.lookup("1001", 1)] == ["sip:1001@10.99.0.11:5062"]
    assert loc.lookup("1001", 121) == []
    r = loc.register(register("1001", ["<sip:1001@10.99.0.11:5062>"], expires=300, cseq=2),
                     PHONE, 100)
    assert contacts_of(r) == ["<sip:1001@10.99.0.11:5062>;expires=300"]
    r = loc.register(register("1001", ["<sip:1001@10.99.0.11:5062>"], expires=0, cseq=3),
                     PHONE, 101)
    assert r.status == 200 and contacts_of(r) == []
    assert loc.lookup("1001", 102) == []
    assert "1001" in loc.known


def test_several_contacts_and_per_contact_expires() -> None:
    loc = Location()
    r = loc.register(register("1001", ["<sip:a@10.99.0.11:5062>;expires=100",
                                       "<sip:b@10.99.0.11:5064>"], expires=200), PHONE, 0)
    assert sorted(contacts_of(r)) == ["<sip:a@10.99.0.11:5062>;expires=100",
                                      "<sip:b@10.99.0.11:5064>;expires=200"]
    assert len(loc.lookup("1001", 150)) == 1


def test_star_unregisters_all_and_needs_expires_zero() -> None:
    loc = Location()
    loc.register(register("1001", ["<sip:a@10.99.0.11:5062>", "<sip:b@10.99.0.11:5064>"]),
                 PHONE, 0)
    assert loc.register(register("1001", ["*"], cseq=2), PHONE, 1).status == 400
    assert loc.register(register("1001", ["*"], expires=0, cseq=3), PHONE, 1).status == 200
    assert loc.lookup("1001", 2) == []


def test_interval_too_brief_and_clamped_maximum() -> None:
    loc = Location(min_expires=60, max_expires=3600)
    r = loc.register(register("1001", ["<sip:a@10.99.0.11>"], expires=10), PHONE, 0)
    assert r.status == 423 and r.get("Min-Expires") == "60"
    r = loc.register(register("1001", ["<sip:a@10.99.0.11>"], expires=99999), PHONE, 0)
    assert contacts_of(r) == ["<sip:a@10.99.0.11>;expires=3600"]


def test_open_mode_first_come_first_bound() -> None:
    loc = Location()
    assert loc.register(register("1001", ["<sip:a@10.99.0.11>"]), PHONE, 0).status == 200
    r = loc.register(register("1001", ["<sip:evil@10.99.0.12>"], call_id="x"), OTHER, 1)
    assert r.status == 403
    r = loc.register(register("1001", ["*"], expires=0, call_id="x"), OTHER, 1)
    assert r.status == 403
    assert [b.contact for b in loc.lookup("1001", 2)] == ["sip:a@10.99.0.11"]
    # Once the owner's binding is gone, the extension is free again.
    assert loc.register(register("1001", ["<sip:b@10.99.0.12>"], call_id="y"), OTHER,
                        4000).status == 200


def test_out_of_order_cseq_refused() -> None:
    loc = Location()
    loc.register(register("1001", ["<sip:a@10.99.0.11>"], cseq=5), PHONE, 0)
    assert loc.register(register("1001", ["<sip:a@10.99.0.11>"], cseq=4), PHONE, 1).status == 500


def _saved(tmp_path: Path, expires: list[int]) -> Path:
    """Bindings 1000, 1001, ... registered for `expires` s, saved at once (boot "A", up
    1000 s, wall clock 1,000,000)."""
    loc = Location()
    for i, exp in enumerate(expires):
        loc.register(register(str(1000 + i), [f"<sip:p{i}@10.99.0.11>"], expires=exp,
                              call_id=f"c{i}"), PHONE, 0)
    loc.save(tmp_path / "b.json", Clocks(now=0.0, boot_id="A", uptime=1000.0,
                                         wall=1_000_000.0))
    return tmp_path / "b.json"


def left(loc: Location, now: float) -> dict[str, int]:
    return {e: round(b.expires_at - now) for e in list(loc.bindings)
            for b in loc.lookup(e, now)}


def test_bindings_survive_a_restart_in_the_same_boot(tmp_path: Path) -> None:
    path = _saved(tmp_path, [600, 90])
    again = Location()
    # 100 s later on the boot clock; the new process's monotonic clock starts elsewhere
    # and the wall clock went back an hour (a Pi with no RTC): only the boot clock counts
    clocks = Clocks(now=50.0, boot_id="A", uptime=1100.0, wall=1_000_100.0 - 3600)
    assert again.load(path, clocks) == 1
    assert left(again, 50.0) == {"1000": 500}  # 1001 ran out while the box was down
    assert again.bindings["1000"][0].source == PHONE


def test_a_reboot_counts_the_unknown_downtime_high(tmp_path: Path) -> None:
    path = _saved(tmp_path, [3600, 150])
    # another boot, up 30 s: at least 30 + REBOOT_MARGIN s went by; a wall clock behind
    # (or at 1970) cannot make a binding live longer
    for wall in (1_000_010.0, 0.0):
        again = Location()
        assert again.load(path, Clocks(now=5.0, boot_id="B", uptime=30.0, wall=wall)) == 1
        assert left(again, 5.0) == {"1000": round(3600 - 30 - REBOOT_MARGIN)}
    # a wall clock that says more time went by is believed: it only drops more
    again = Location()
    assert again.load(path, Clocks(now=5.0, boot_id="B", uptime=30.0,
                                   wall=1_003_000.0)) == 1
    assert left(again, 5.0) == {"1000": 600}
    # no boot id to compare: a restart counts as a reboot
    again = Location()
    again.load(path, Clocks(now=5.0, boot_id="", uptime=1100.0, wall=1_000_100.0))
    assert left(again, 5.0) == {"1000": round(3600 - 1100 - REBOOT_MARGIN)}


def test_unreadable_bindings_file_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "b.json").write_text("{not json")
    assert Location().load(tmp_path / "b.json", Clocks(0.0, "A", 0.0, 0.0)) == 0


def test_display_name_kept_bounded_and_saved(tmp_path: Path) -> None:
    loc = Location()
    loc.register(register("1001", ["<sip:a@10.99.0.11>"], to_name='"Alice" '), PHONE, 0)
    loc.register(register("1002", ["<sip:b@10.99.0.11>"], from_name='"Bob\x1b[2J" '), PHONE, 0)
    loc.register(register("1003", ["<sip:c@10.99.0.11>"], to_name='"' + "x" * 300 + '" '),
                 PHONE, 0)
    loc.register(register("1004", ["<sip:d@10.99.0.11>"]), PHONE, 0)
    names = {e: loc.lookup(e, 1)[0].name for e in ("1001", "1002", "1003", "1004")}
    assert names == {"1001": "Alice", "1002": "Bob[2J", "1003": "x" * 64, "1004": ""}
    path = tmp_path / "b.json"
    clocks = Clocks(now=0.0, boot_id="A", uptime=1000.0, wall=1_000_000.0)
    loc.save(path, clocks)
    again = Location()
    assert again.load(path, clocks) == 4
    assert again.lookup("1001", 1)[0].name == "Alice"
    data = json.loads(path.read_text())  # a file from before names: no name, still loads
    for row in data["bindings"]:
        del row["name"]
    path.write_text(json.dumps(data))
    old = Location()
    assert old.load(path, clocks) == 4 and old.lookup("1001", 1)[0].name == ""
