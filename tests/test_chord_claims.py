"""Extensions owned mesh-wide (overlay/chord/claims.py): the rule a storing node applies
to records of one AOR from two owners, and what the owner does when it is refused.
Sans-IO: Store messages in, Stored answers and events out."""

from __future__ import annotations

import random
from dataclasses import replace

from test_chord_rules import run_timer

from overlay.chord.events import ClaimLost, PutDone, PutFailed
from overlay.chord.messages import ID_SPACE, NodeRef, Record, Store, Stored, Transfer
from overlay.chord.node import ChordConfig, ChordNode
from overlay.chord.records import KeyedHashKeyring, resource_key, sign_record
from overlay.chord.wire.bodies import decode_records, encode_records

KEYRING = KeyedHashKeyring("claims")
K = ID_SPACE // 16
AOR = "5001"
PHONE = "0123456789abcdef0123456789abcdef"  # an instance hash


def ref(i: int) -> NodeRef:
    return NodeRef(i * K, f"10.0.0.{i}", 5060)


def node(i: int, **cfg: object) -> ChordNode:
    r = ref(i)
    return ChordNode(r, KEYRING.signer(r.id), random.Random(i),
                     ChordConfig(contact_is_owner=True, **cfg), 0.0)


def record(i: int, seq: int, claim: int | None = None, aor: str = AOR, **fields: object
           ) -> Record:
    """Box i's record for aor, version seq of the claim begun at `claim` (fresh: seq)."""
    r = ref(i)
    rec = Record(resource_key(aor), aor, r.id, f"sip:{r.host}:{r.port}", seq, 300,
                 claim=seq if claim is None else claim, **fields)  # type: ignore[arg-type]
    return sign_record(rec, r.id, KEYRING.signer(r.id))


def store(s: ChordNode, src: int, *recs: Record, now: float = 0.0, replica: bool = False,
          kind: type = Store) -> Stored:
    extra = {"replica": replica} if kind is Store else {}
    s.receive(kind(src=ref(src), txn=now * 1000 + 1, records=recs, **extra), now)
    [answer] = [m for _, m in s.messages_to_send() if isinstance(m, Stored)]
    return answer


def owners(s: ChordNode, now: float = 0.0) -> list[int]:
    return sorted({r.owner // K for r in s.store.get(resource_key(AOR), now)})


def test_the_live_owner_keeps_the_extension_and_a_second_box_is_refused() -> None:
    s = node(1)
    assert store(s, 2, record(2, 5)).accepted == 1
    answer = store(s, 3, record(3, 1))  # another phone, no instance id: a fresh claim
    assert (answer.rejected, answer.in_use) == (1, 1)
    assert s.stats["records_in_use"] == 1 and owners(s) == [2]
    # a refresh from box 3 (not fresh) fares no better, whatever its claim number
    assert store(s, 3, record(3, 9, claim=0), now=1.0).in_use == 1
    # once box 2 removes its binding, the extension is free
    gone = sign_record(replace(record(2, 6, claim=5), lifetime=0), 2 * K, KEYRING.signer(2 * K))
    assert store(s, 2, gone, now=2.0).accepted == 1
    assert store(s, 3, record(3, 10), now=3.0).accepted == 1 and owners(s, 3.0) == [3]


def test_the_same_phone_moves_with_its_instance_and_the_old_box_loses_it() -> None:
    s = node(1)
    store(s, 2, record(2, 5, instance=PHONE))
    assert store(s, 3, record(3, 1, instance="f" * 32)).in_use == 1  # another phone
    assert store(s, 3, record(3, 2, instance=PHONE)).accepted == 1  # the same one: moved
    assert owners(s) == [3] and s.stats["records_taken_over"] == 1
    # box 2's refreshes of its old claim are refused: it learns it lost the extension
    assert store(s, 2, record(2, 8, claim=5, instance=PHONE), now=1.0).in_use == 1
    # a refresh (not a fresh claim) never takes over, even with the instance
    assert store(s, 4, record(4, 7, claim=3, instance=PHONE), now=1.0).in_use == 1
    # the phone going back to box 2 is a new claim there: it takes the extension back
    assert store(s, 2, record(2, 9, instance=PHONE), now=2.0).accepted == 1
    assert owners(s, 2.0) == [2]


def test_a_password_checked_claim_takes_over() -> None:
    s = node(1)
    store(s, 2, record(2, 5, verified=True))
    assert store(s, 3, record(3, 1)).in_use == 1
    assert store(s, 3, record(3, 2, verified=True)).accepted == 1 and owners(s) == [3]


def test_copies_from_other_storing_nodes_settle_deterministically() -> None:
    s = node(1)
    store(s, 2, record(2, 5, claim=4))
    # a hand-over (two claims meeting after a partition): the earlier claim prevails
    assert store(s, 6, record(3, 9, claim=7), kind=Transfer).in_use == 1
    assert store(s, 6, record(3, 9, claim=2), kind=Transfer).accepted == 1
    assert owners(s) == [3]
    # a primary's push is its decision: the replica follows it
    assert store(s, 6, record(2, 11, claim=10), replica=True).accepted == 1
    assert owners(s) == [2]


def test_a_record_must_name_its_owner_box_as_contact() -> None:
    s = node(1)
    r = ref(3)
    elsewhere = sign_record(replace(record(3, 1), contact="sip:10.0.0.9:5060"), r.id,
                            KEYRING.signer(r.id))
    answer = store(s, 3, elsewhere)
    assert answer.rejected == 1 and answer.in_use == 0
    assert s.stats["records_bad_contact"] == 1 and owners(s) == []


def test_store_bounds_per_message_per_owner_and_in_all() -> None:
    s = node(1, max_records_per_message=2, max_records_per_owner=2, max_records=3)
    recs = [record(2, 1, aor=f"50{i:02}") for i in range(3)]
    answer = store(s, 2, *recs)
    assert (answer.accepted, answer.rejected) == (2, 1)
    assert store(s, 2, recs[2]).rejected == 1  # box 2 holds its two
    assert store(s, 3, record(3, 1, aor="6001")).accepted == 1
    assert store(s, 4, record(4, 1, aor="7001")).rejected == 1  # three in all
    assert s.stats["records_over_cap"] == 3 and len(s.store) == 3


def test_an_owner_refused_as_in_use_stops_publishing_and_says_so() -> None:
    x = node(3)
    x.learn_peer(ref(1), 0.0)
    x.handle_timer(0.0)
    x.messages_to_send()
    rid = x.put(Record(resource_key(AOR), AOR, 0, "sip:10.0.0.3:5060", 0, 300), 0.0)
    x.messages_to_send()
    [(rec, _)] = x._owned.values()
    assert rec.claim == rec.sequence  # a put is a fresh claim
    x._stored_at(rec, rid, [ref(1)], Stored(src=ref(1), txn=1, rejected=1, in_use=1))
    evs = []
    while (e := x.next_event()) is not None:
        evs.append(e)
    assert PutFailed(rid, rec.resource_id, "in use") in evs
    assert ClaimLost(rec.resource_id, AOR) in evs
    assert x._owned == {} and x.stats["claims_lost"] == 1


def test_a_claim_stays_fresh_until_accepted_then_refreshes_keep_its_number() -> None:
    x = node(3)
    x.put(Record(resource_key(AOR), AOR, 0, "sip:10.0.0.3:5060", 0, 300), 0.0)
    assert isinstance(x.next_event(), PutDone)  # a ring of one stores it itself
    [(first, _)] = x._owned.values()
    y = node(4)
    y.put(Record(resource_key(AOR), AOR, 0, "sip:10.0.0.4:5060", 0, 300), 0.0)
    [(unconfirmed, _)] = y._owned.values()
    y._unconfirmed.add(unconfirmed.identity)
    for n in (x, y):
        ident = next(iter(n._owned))
        n._own(n._owned[ident][0], 0.0)  # due now
        n._refresh_owned()
    [(refreshed, _)] = x._owned.values()
    assert refreshed.sequence > first.sequence and refreshed.claim == first.claim
    [(retried, _)] = y._owned.values()
    assert retried.claim == retried.sequence > unconfirmed.sequence


def test_record_lines_carry_the_claim() -> None:
    rec = record(2, 7, claim=3, instance=PHONE, verified=True)
    assert decode_records(encode_records((rec,))) == (rec,)
    plain = record(2, 7)
    assert decode_records(encode_records((plain,))) == (plain,)


def test_the_loser_of_a_take_over_is_told_and_re_stores_at_once() -> None:
    s = node(1)
    store(s, 2, record(2, 5, instance=PHONE))
    s.receive(Store(src=ref(3), txn=9, records=(record(3, 2, instance=PHONE),)), 1.0)
    told = [(d, m) for d, m in s.messages_to_send() if isinstance(m, Transfer)]
    assert [(d, m.records[0].owner) for d, m in told] == [(ref(2), 3 * K)]
    # box 2, told, re-stores its own record now (to be refused and drop the binding)
    x = node(2)
    x.put(Record(resource_key(AOR), AOR, 0, "sip:10.0.0.2:5060", 0, 300), 0.0)
    ident = next(iter(x._owned))
    x._owned[ident] = (x._owned[ident][0], 50.0)
    x.receive(told[0][1], 2.0)
    assert x._owned[ident][1] == 2.0


def test_a_claim_bound_while_alone_is_lost_when_the_ring_heals_and_refuses_it() -> None:
    x = node(3)  # alone (a partition): its own storing node, so the claim is accepted
    x.put(Record(resource_key(AOR), AOR, 0, "sip:10.0.0.3:5060", 0, 300), 0.0)
    assert isinstance(x.next_event(), PutDone)
    [(rec, _)] = x._owned.values()
    # healed: its next refresh reaches a storing node that holds another box's claim
    x._stored_at(rec, None, [ref(1)], Stored(src=ref(1), txn=1, rejected=1, in_use=1))
    assert x.next_event() == ClaimLost(rec.resource_id, AOR) and x.next_event() is None
    assert x._owned == {}


def test_the_first_re_store_places_the_same_signed_copy_unless_the_claim_is_unanswered(
) -> None:
    """owned.py: a put is placed again first_refresh (20 s) later as signed, with the life
    it has left; every later refresh, and a first one whose claim no node accepted yet,
    signs a new version."""
    x = node(3)  # a ring of one: it stores its own records and accepts its claims
    x.put(Record(resource_key(AOR), AOR, 0, "sip:10.0.0.3:5060", 0, 300), 0.0)
    [(first, _)] = x._owned.values()
    x.messages_to_send()
    run_timer(x, 21.0)
    [(again, _)] = x._owned.values()
    assert again == first  # the same version and signature: nothing signed again
    [stored] = x.store.all()
    assert stored.record.sequence == first.sequence and stored.expires == 300.0  # not extended
    run_timer(x, 151.0)  # lifetime * refresh_fraction after the put
    [(later, _)] = x._owned.values()
    assert later.sequence > first.sequence and later.claim == first.claim

    y = node(4)
    y.put(Record(resource_key(AOR), AOR, 0, "sip:10.0.0.4:5060", 0, 300), 0.0)
    [(unanswered, _)] = y._owned.values()
    y._unconfirmed.add(unanswered.identity)  # as if no storing node had answered
    run_timer(y, 21.0)
    [(retried, _)] = y._owned.values()
    assert retried.claim == retried.sequence > unanswered.sequence


def test_a_record_due_again_for_another_reason_is_signed_again() -> None:
    x = node(3)
    x.put(Record(resource_key(AOR), AOR, 0, "sip:10.0.0.3:5060", 0, 300), 0.0)
    [(first, _)] = x._owned.values()
    x._own(first, 1.0)  # what a re-check of its claim or a sighting of a newer copy does
    run_timer(x, 2.0)
    [(again, _)] = x._owned.values()
    assert again.sequence > first.sequence


def test_own_records_are_held_to_the_store_total_only() -> None:
    """The per-owner cap keeps other boxes from filling our store; our own records are
    bounded by our registrar (a box with many phones publishes them all)."""
    s = node(1, max_records_per_owner=2, max_records=4)
    for i in range(3):
        s.put(Record(resource_key(f"80{i}"), f"80{i}", 0, "sip:10.0.0.1:5060", 0, 300), 0.0)
    assert len(s.store) == 3 and s.stats["records_over_cap"] == 0
    answer = store(s, 2, *[record(2, 1, aor=f"90{i}") for i in range(2)])
    assert (answer.accepted, answer.rejected) == (1, 1)  # four in all
    assert s.stats["records_over_cap"] == 1

