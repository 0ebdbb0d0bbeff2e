"""A new extension is a claim on the mesh (appliance/claims.py): the registrar binds it
only once the mesh answers, sans-IO."""

from __future__ import annotations

import hashlib

from test_registrar import OTHER, PHONE, register

from appliance.claims import ACCEPTED, IN_USE, UNREACHED, PendingClaim, instance_hash
from appliance.registrar import Location

A = '<sip:5001@10.99.0.11:5062>;+sip.instance="<urn:uuid:00000000-0000-1000-8000-00000000A001>"'


def claiming() -> tuple[Location, list[PendingClaim]]:
    loc = Location()
    started: list[PendingClaim] = []
    loc.claims = lambda pending, answer: started.append(pending)
    return loc, started


def test_a_new_extension_waits_for_the_mesh_and_others_wait_with_it() -> None:
    loc, _ = claiming()
    pending = loc.register(register("5001", [A], expires=120), PHONE, 0)
    assert isinstance(pending, PendingClaim) and loc.lookup("5001", 1) == []
    assert pending.instance == hashlib.sha256(
        b"urn:uuid:00000000-0000-1000-8000-00000000a001").hexdigest()[:32]
    assert not pending.verified  # open mode: no password checked
    # another phone meanwhile: 403 (open mode); the same phone again: try again soon
    assert loc.register(register("5001", ["<sip:b@10.99.0.12:5062>"], call_id="b"),
                        OTHER, 0.1).status == 403
    again = loc.register(register("5001", [A], call_id="c2"), PHONE, 0.1)
    assert again.status == 500 and again.get("Retry-After") == "1"
    ok = loc.settle(pending, ACCEPTED, 0.2)
    assert ok.status == 200 and ok.get_all("Contact")
    assert [b.contact for b in loc.lookup("5001", 1)] == ["sip:5001@10.99.0.11:5062"]
    # a refresh of a bound extension asks nobody
    refresh = loc.register(register("5001", [A], expires=120, cseq=2), PHONE, 10)
    assert refresh.status == 200


def test_in_use_elsewhere_is_403_and_binds_nothing() -> None:
    loc, _ = claiming()
    pending = loc.register(register("5001", ["<sip:5001@10.99.0.11:5062>"]), PHONE, 0)
    assert isinstance(pending, PendingClaim) and pending.instance == ""
    refused = loc.settle(pending, IN_USE, 0.5)
    assert refused.status == 403 and "another box" in refused.reason
    assert loc.lookup("5001", 1) == [] and loc.claiming == {}


def test_unreached_binds_and_a_lost_claim_drops_the_binding() -> None:
    loc, _ = claiming()
    seen: list[tuple[str, bool]] = []
    loc.observer = lambda ext, present: seen.append((ext, present))
    pending = loc.register(register("5001", [A]), PHONE, 0)
    assert isinstance(pending, PendingClaim)
    assert loc.settle(pending, UNREACHED, 4.0).status == 200
    loc.drop("5001")
    assert loc.lookup("5001", 5) == [] and seen == [("5001", True), ("5001", False)]


def test_instance_hash_is_empty_without_an_instance() -> None:
    assert instance_hash([None]) == ""
