"""Unit tests of the Chord node's rules on tiny rings, driven message by message."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from overlay.chord.messages import (
    ID_SPACE,
    Ack,
    Error,
    Fetch,
    FindSuccessor,
    Found,
    GetNeighbors,
    Learn,
    Leave,
    Message,
    Neighbors,
    NodeRef,
    Notify,
    Ping,
    Pong,
    Record,
    Records,
    Redirect,
    Store,
    Stored,
    Transfer,
)
from overlay.chord.node import (
    LEFT,
    MEMBER,
    ChordConfig,
    ChordNode,
    GetDone,
    LookupDone,
    PutDone,
    RecordRejected,
    between,
    between_right,
    dist,
)
from overlay.chord.records import (
    KeyedHashKeyring,
    resource_key,
    sign_record,
    signing_bytes,
    verify_record,
)

KEYRING = KeyedHashKeyring("unit")
K = ID_SPACE // 16  # ids at multiples of K make intervals easy to read


def ref(i: int) -> NodeRef:
    return NodeRef(i * K, f"10.0.0.{i}", 5070)


def node(i: int, now: float = 0.0, **cfg: object) -> ChordNode:
    r = ref(i)
    return ChordNode(r, KEYRING.signer(r.id), random.Random(i), ChordConfig(**cfg), now)


def sent(n: ChordNode, kind: type | None = None) -> list[tuple[NodeRef, object]]:
    out = n.messages_to_send()
    if kind is None:
        return out
    return [(d, m) for d, m in out if isinstance(m, kind)]


def events(n: ChordNode) -> list[object]:
    out = []
    while (ev := n.next_event()) is not None:
        out.append(ev)
    return out


def reply(to, cls, src: NodeRef, **fields):
    return cls(src=src, txn=to.txn, **fields)


def run_timer(n: ChordNode, until: float) -> None:
    while (t := n.get_timer()) is not None and t <= until:
        n.handle_timer(t)


def stabilize_now(n: ChordNode, now: float) -> list:
    """Fire the stabilize timer and return what went out."""
    n.messages_to_send()
    n._due.pop("stabilize", None)
    n._stabilize()
    return n.messages_to_send()


# ----------------------------------------------------------------------------- intervals


def test_interval_helpers_wrap_around() -> None:
    assert between(5, 3, 7) and not between(3, 3, 7) and not between(7, 3, 7)
    assert between(1, ID_SPACE - 2, 3)  # wraps past zero
    assert between(9, 4, 4) and not between(4, 4, 4)  # (a, a): the ring without a
    assert between_right(7, 3, 7) and not between_right(3, 3, 7)
    assert between_right(4, 4, 4)  # (a, a]: the whole ring
    assert dist(ID_SPACE - 1, 1) == 2


# ----------------------------------------------------------------------------- small rings


def test_lone_node_is_a_ring_of_one_and_answers_everything_itself() -> None:
    a = node(1)
    rid = a.lookup(12345, 0.0)
    ev = events(a)
    assert ev == [LookupDone(rid, 12345, (a.ref,), 0, 0)]
    assert a.messages_to_send() == []
    rec = Record(resource_key("sip:x@y"), "sip:x@y", 0, "sip:x@10.0.0.1", 1, 300)
    pid = a.put(rec, 0.0)
    assert any(isinstance(e, PutDone) and e.request_id == pid for e in events(a))
    gid = a.get(rec.resource_id, 0.1)
    got = [e for e in events(a) if isinstance(e, GetDone)]
    assert got and got[0].request_id == gid and got[0].records[0].contact == "sip:x@10.0.0.1"


def test_join_learns_only_a_successor_list() -> None:
    a, b = node(1), node(5)
    b.join(a.ref, 0.0)
    assert b.status == MEMBER and b.joining  # a ring of one while it joins
    [(dest, fs)] = sent(b)
    assert dest == a.ref and isinstance(fs, FindSuccessor) and fs.key == b.id
    a.receive(fs, 0.01)
    [(_, found)] = sent(a)
    assert isinstance(found, Found) and found.successors == (a.ref,)
    b.receive(found, 0.02)
    [(_, gn)] = sent(b)  # join checks the candidate's predecessor before committing
    assert isinstance(gn, GetNeighbors)
    a.receive(gn, 0.03)
    [(_, nb)] = sent(a)
    b.receive(nb, 0.04)
    assert b.status == MEMBER and b.successors == [a.ref] and not b.joining
    assert b.predecessor is None
    assert a.predecessor is None and a.successors == []  # a learns nothing from a join


def test_second_node_forms_a_ring_of_two_through_notify_and_stabilize() -> None:
    a, b = node(1), node(5)
    b.successors = [a.ref]
    out = stabilize_now(b, 1.0)
    [(_, gn)] = out
    a.receive(gn, 1.0)
    [(_, nb)] = sent(a)
    b.receive(nb, 1.0)
    [(_, notify)] = sent(b)
    assert isinstance(notify, Notify)
    a.receive(notify, 1.0)
    assert a.predecessor == b.ref  # rectify: a had no predecessor
    [(_, ack)] = sent(a)
    assert isinstance(ack, Ack)
    # a ring of one that was notified adopts its predecessor as successor
    out = stabilize_now(a, 2.0)
    [(dest, gn2)] = out
    assert dest == b.ref and isinstance(gn2, GetNeighbors)
    b.receive(gn2, 2.0)
    [(_, nb2)] = sent(b)
    a.receive(nb2, 2.0)
    assert a.successors == [b.ref]
    [(_, n2)] = sent(a, Notify)
    b.receive(n2, 2.0)
    assert b.predecessor == a.ref


def test_stabilize_adopts_a_closer_successor_only_when_it_lies_between() -> None:
    a = node(1)
    a.successors = [ref(8), ref(10)]
    [(dest, gn)] = stabilize_now(a, 1.0)
    assert dest == ref(8)
    # 8's predecessor is 4: between 1 and 8, so a checks 4 is alive, then adopts it
    a.receive(reply(gn, Neighbors, ref(8), predecessor=ref(4), successors=(ref(10),)), 1.0)
    [(dest, gn4)] = sent(a)
    assert dest == ref(4) and isinstance(gn4, GetNeighbors)
    a.receive(reply(gn4, Neighbors, ref(4), predecessor=ref(15), successors=(ref(8), ref(10))), 1.0)
    assert [s.id for s in a.successors] == [4 * K, 8 * K, 10 * K]  # [4] + 4's list
    [(dest, notify)] = sent(a)
    assert dest == ref(4) and isinstance(notify, Notify)


def test_stabilize_ignores_a_predecessor_that_does_not_lie_between() -> None:
    a = node(4)
    a.successors = [ref(8)]
    [(_, gn)] = stabilize_now(a, 1.0)
    # 8's predecessor is 2: not between 4 and 8: keep 8, and notify it
    a.receive(reply(gn, Neighbors, ref(8), predecessor=ref(2), successors=(ref(12),)), 1.0)
    assert [s.id for s in a.successors] == [8 * K, 12 * K]
    [(dest, notify)] = sent(a)
    assert dest == ref(8) and isinstance(notify, Notify)


def test_successor_list_is_cut_where_it_would_wrap_past_us() -> None:
    a = node(4)
    a.successors = [ref(8)]
    [(_, gn)] = stabilize_now(a, 1.0)
    lst = (ref(12), ref(4), ref(6))  # 8's list wraps round the ring past a
    a.receive(reply(gn, Neighbors, ref(8), predecessor=ref(4), successors=lst), 1.0)
    assert [s.id for s in a.successors] == [8 * K, 12 * K]
    assert a.ring_complete and a.estimated_size() == 3


def test_dead_successor_is_dropped_after_retries_and_the_next_one_asked_at_once() -> None:
    a = node(1, rto=0.5, attempts=3)
    a.successors = [ref(3), ref(6)]
    [(dest, gn)] = stabilize_now(a, 0.0)
    assert dest == ref(3)
    run_timer(a, 0.6)
    retries = sent(a, GetNeighbors)
    assert [d for d, _ in retries] == [ref(3)]  # retransmission, same txn
    assert retries[0][1].txn == gn.txn
    run_timer(a, 1.6)  # third try times out
    out = sent(a, GetNeighbors)
    assert ref(3) not in a.successors and a.successors == [ref(6)]
    assert [d for d, _ in out][-1] == ref(6)


def test_rectify_replaces_the_predecessor_only_if_dead_or_the_notifier_is_between() -> None:
    c = node(10)
    c.successors = [ref(1)]
    c.predecessor = ref(6)
    # notifier 8 lies between 6 and 10: adopted at once
    c.receive(Notify(src=ref(8), txn=1), 0.0)
    assert c.predecessor == ref(8)
    sent(c)
    # notifier 3 does not lie between 8 and 10: ping 8 first
    c.receive(Notify(src=ref(3), txn=2), 0.1)
    pings = sent(c, Ping)
    assert [d for d, _ in pings] == [ref(8)] and c.predecessor == ref(8)
    c.receive(reply(pings[0][1], Pong, ref(8)), 0.2)
    assert c.predecessor == ref(8)  # alive: kept
    c.receive(Notify(src=ref(3), txn=3), 1.0)
    [(_, ping)] = sent(c, Ping)
    run_timer(c, 2.6)  # 8 never answers its three pings
    assert c.predecessor == ref(3)


def test_iterative_lookup_follows_redirects_and_a_dead_node_costs_one_timeout() -> None:
    a = node(1, lookup_timeout=0.5)
    a.successors = [ref(2), ref(3)]
    a.predecessor = ref(15)
    a._learn_finger(ref(6))
    a._learn_finger(ref(9))
    key = 11 * K + 5
    rid = a.lookup(key, 0.0)
    [(dest, fs)] = sent(a, FindSuccessor)
    assert dest == ref(9)  # closest preceding known node
    run_timer(a, 0.6)  # 9 is dead: one timeout, then the next best candidate
    [(dest, fs2)] = sent(a, FindSuccessor)
    assert dest == ref(6)
    a.receive(reply(fs2, Redirect, ref(6), key=key, closer=(ref(10), ref(9))), 0.7)
    [(dest, fs3)] = sent(a, FindSuccessor)
    assert dest == ref(10)  # 9 is not tried twice
    a.receive(reply(fs3, Found, ref(10), key=key, successors=(ref(12), ref(13))), 0.8)
    [done] = [e for e in events(a) if isinstance(e, LookupDone)]
    assert done.request_id == rid and done.successors[0] == ref(12)
    assert done.hops == 2 and done.timeouts == 1


def test_a_node_answers_for_its_range_and_hints_further_successors() -> None:
    b = node(4)
    b.predecessor = ref(2)
    b.successors = [ref(6), ref(9), ref(12)]
    b.receive(FindSuccessor(src=ref(1), txn=7, key=3 * K), 0.0)  # (2, 4]: ours
    [(_, f)] = sent(b)
    assert isinstance(f, Found) and f.successors[0] == b.ref and f.hops == 1
    b.receive(FindSuccessor(src=ref(1), txn=8, key=5 * K), 0.0)  # (4, 6]: first successor
    [(_, f)] = sent(b)
    assert isinstance(f, Found) and f.successors[0] == ref(6)
    b.receive(FindSuccessor(src=ref(1), txn=9, key=10 * K), 0.0)  # further down the list
    [(_, r)] = sent(b)
    assert isinstance(r, Redirect) and r.closer[0] == ref(12)  # ask 12 itself


def test_recursive_lookup_forwards_acks_and_relays_the_answer() -> None:
    a, b = node(1), node(6)
    a.successors = [ref(2), ref(6)]
    b.successors = [ref(9), ref(12)]
    b.predecessor = ref(2)
    key = 10 * K
    rid = a.lookup(key, 0.0, recursive=True)
    [(dest, fs)] = sent(a, FindSuccessor)
    assert dest == ref(6) and fs.recursive
    b.receive(fs, 0.01)
    out = sent(b)
    acks = [m for _, m in out if isinstance(m, Ack)]
    fwd = [(d, m) for d, m in out if isinstance(m, FindSuccessor)]
    assert acks and fwd and fwd[0][0] == ref(12) and fwd[0][1].origin == a.ref
    a.receive(acks[0], 0.02)  # provisional: a keeps waiting
    b.receive(reply(fwd[0][1], Found, ref(12), key=key, successors=(ref(12),), hops=2), 0.05)
    [(dest, found)] = sent(b)
    assert dest == a.ref and isinstance(found, Found) and found.txn == fs.txn
    a.receive(found, 0.06)
    [done] = [e for e in events(a) if isinstance(e, LookupDone)]
    assert done.request_id == rid and done.successors == (ref(12),) and done.hops == 2


def test_a_joining_node_answers_and_points_to_the_ring_it_joins() -> None:
    """Boxes powered on together join through each other: a joiner that refused (503 "not
    on a ring yet") left every box waiting for the others. It answers: a lookup is pointed
    to its bootstrap (answering "me" would start a second ring beside the one it joins),
    and its neighbours are those of a ring of one."""
    a = node(1)
    a.join(ref(5), 0.0)
    sent(a)
    a.receive(FindSuccessor(src=ref(9), txn=4, key=3), 0.0)
    a.receive(GetNeighbors(src=ref(9), txn=5), 0.0)
    [(_, redirect), (_, nb)] = sent(a)
    assert isinstance(redirect, Redirect) and redirect.closer == (ref(5),)
    assert isinstance(nb, Neighbors) and nb.successors == ()


def test_boxes_joining_through_each_other_end_on_one_ring() -> None:
    """Each asks the other, each is pointed back: the lookup ends at the one that answered."""
    a, b = node(1), node(5)
    a.join(b.ref, 0.0)
    b.join(a.ref, 0.0)
    now = 0.0
    for _ in range(400):
        now += 0.01
        for x, y in ((a, b), (b, a)):
            for _, msg in x.messages_to_send():
                y.receive(msg, now)
            x.handle_timer(now)
        if a.predecessor == b.ref and b.predecessor == a.ref:
            break
    assert a.successors == [b.ref] and b.successors == [a.ref]
    assert a.predecessor == b.ref and b.predecessor == a.ref


def _next_sent(a: ChordNode, kind: type, now: float) -> tuple[Message, float]:
    """Run a's timers until it sends a `kind`; (that message, the time)."""
    while True:
        found = sent(a, kind)
        if found:
            return found[0][1], now
        t = a.get_timer()
        assert t is not None and t < now + 60, f"no {kind.__name__} sent"
        now = t
        a.handle_timer(now)


def test_a_join_whose_bootstrap_never_answers_is_retried_with_backoff_then_given_up() -> None:
    a = node(1)
    a.join(ref(5), 0.0)
    starts = [0.0]
    now = 0.0
    while a.joining:
        now = a.get_timer()
        a.handle_timer(now)
        if any(isinstance(m, FindSuccessor) for _, m in sent(a)):
            starts.append(now)
    # each attempt asks the bootstrap twice (a second chance for a lost message); the
    # pauses between attempts grow
    pauses = [b - x for x, b in zip(starts, starts[1:], strict=False) if b - x > 0.9]
    assert len(pauses) == ChordConfig().join_attempts - 1
    assert pauses == sorted(pauses) and pauses[-1] > 4 * pauses[0]
    assert a.status == MEMBER and a.join_failed
    assert any(type(e).__name__ == "JoinFailed" for e in events(a))
    # alone, it goes on answering, and its merge checks keep trying the bootstrap
    run_timer(a, now + 10.0)
    assert any(isinstance(m, Ping) and d == ref(5) for d, m in sent(a))


def test_a_join_answered_with_errors_is_retried_not_left_waiting() -> None:
    """The cold-start deadlock: every box answered the others' join with an error, and
    the join waited for ever on an answer it had already had."""
    a = node(1)
    a.join(ref(5), 0.0)
    fs, now = _next_sent(a, FindSuccessor, 0.0)
    a.receive(reply(fs, Error, ref(5), code=503, reason="not on a ring yet"), now + 0.01)
    gn, now = _next_sent(a, GetNeighbors, now + 0.01)  # the only node that answered
    a.receive(reply(gn, Error, ref(5), code=503, reason="not on a ring yet"), now + 0.01)
    assert a.joining and a.successors == []
    fs, now = _next_sent(a, FindSuccessor, now + 0.01)  # a later attempt
    a.receive(reply(fs, Found, ref(5), key=a.id, successors=(ref(5),), hops=1), now + 0.01)
    gn, now = _next_sent(a, GetNeighbors, now + 0.01)
    a.receive(reply(gn, Neighbors, ref(5), predecessor=None, successors=()), now + 0.01)
    assert a.successors == [ref(5)] and not a.joining


def test_a_join_found_by_the_ring_meanwhile_ends_at_once() -> None:
    """A lone box that a peer adopted (Notify, then its own stabilize takes the peer) is on
    a ring: its pending join is moot and must not keep it joining."""
    a = node(1)
    a.join(ref(5), 0.0)
    sent(a)
    a.receive(Notify(src=ref(5), txn=9), 0.01)  # ref(5) made us its successor
    out = stabilize_now(a, 0.02)  # a ring of one with a predecessor adopts it
    [(_, gn)] = [(d, m) for d, m in out if isinstance(m, GetNeighbors)]
    a.receive(reply(gn, Neighbors, ref(5), predecessor=None, successors=(a.ref,)), 0.03)
    assert a.successors == [ref(5)] and not a.joining


def test_messages_of_another_overlay_are_dropped() -> None:
    a = node(1)
    a.receive(Ping(src=ref(2), txn=1, overlay="elsewhere"), 0.0)
    assert a.messages_to_send() == [] and a.stats["dropped_overlay"] == 1


def test_learn_peer_makes_a_lone_node_join() -> None:
    a = node(1)
    a.learn_peer(ref(7), 0.0)
    [(dest, fs)] = sent(a)
    assert a.joining and dest == ref(7) and isinstance(fs, FindSuccessor)


# ----------------------------------------------------------------------------- records


def _record(owner: ChordNode, aor: str = "sip:alice@meshsip", contact: str = "sip:a@10.0.0.9"):
    rec = Record(resource_key(aor), aor, 0, contact, 1, 300)
    return sign_record(rec, owner.id, owner.signer)


def test_record_signatures_cover_every_field_but_the_remaining_time() -> None:
    a = node(1)
    rec = _record(a)
    assert verify_record(rec, a.signer)
    assert verify_record(replace(rec, remaining=17), a.signer)
    for field, value in (
        ("contact", "sip:evil@10.6.6.6"), ("aor", "sip:bob@meshsip"), ("sequence", 2),
        ("lifetime", 99999), ("owner", 5 * K),
    ):
        assert not verify_record(replace(rec, **{field: value}), a.signer), field
    assert b"sip:a@10.0.0.9" in signing_bytes(rec)


def test_forged_and_altered_records_are_rejected_and_counted() -> None:
    a, mallory, store = node(1), node(3), node(5)
    genuine = _record(a)
    altered = replace(genuine, contact="sip:mallory@10.6.6.6")
    # mallory signs with her own key but names a as the owner
    forged = replace(sign_record(genuine, mallory.id, mallory.signer), owner=a.id)
    store.receive(Store(src=ref(3), txn=1, records=(altered, forged, genuine)), 0.0)
    [(_, st)] = sent(store, Stored)
    assert st.accepted == 1 and st.rejected == 2
    assert store.stats["records_rejected"] == 2
    assert len([e for e in events(store) if isinstance(e, RecordRejected)]) == 2
    assert [r.contact for r in store.store.get(genuine.resource_id, 0.0)] == ["sip:a@10.0.0.9"]
    # a node serving a record checks it again; a getter checks what it is given
    store.store.put(replace(genuine, sequence=9, contact="sip:bad@x"), 0.0)  # corrupt copy
    store.receive(Fetch(src=ref(1), txn=2, resource_id=genuine.resource_id), 0.1)
    [(_, recs)] = sent(store, Records)
    assert all(verify_record(r, store.signer) for r in recs.records)
    assert store.stats["records_rejected"] == 3


def test_higher_sequence_wins_and_tombstones_hide_a_binding() -> None:
    a = node(1)
    rec = _record(a)
    a.put(rec, 0.0)
    events(a)
    # one record per (owner, contact): of two copies the higher sequence wins
    newer = sign_record(replace(rec, sequence=5, lifetime=500), a.id, a.signer)
    older = sign_record(replace(rec, sequence=3, lifetime=50), a.id, a.signer)
    a.receive(Store(src=ref(2), txn=1, records=(newer, older)), 0.1)
    [kept] = a.store.get(rec.resource_id, 0.1)
    assert kept.sequence == 5 and kept.lifetime == 500
    other = sign_record(replace(rec, contact="sip:desk@10.0.0.9"), a.id, a.signer)
    a.receive(Store(src=ref(2), txn=2, records=(other,)), 0.1)
    assert len(a.store.get(rec.resource_id, 0.1)) == 2  # several contacts per AOR
    a.remove(rec.resource_id, rec.aor, rec.contact, 0.2)
    assert {r.contact for r in a.store.get(rec.resource_id, 0.3)} == {"sip:desk@10.0.0.9"}
    a.receive(Store(src=ref(2), txn=3, records=(newer,)), 0.4)  # an old copy comes back
    assert {r.contact for r in a.store.get(rec.resource_id, 0.5)} == {"sip:desk@10.0.0.9"}


def test_records_expire_without_refresh() -> None:
    a = node(1)
    rec = sign_record(
        Record(resource_key("sip:z@m"), "sip:z@m", 0, "sip:z@h", 1, 10), 3 * K,
        KEYRING.signer(3 * K),
    )
    a.receive(Store(src=ref(3), txn=1, records=(rec,)), 0.0)
    assert a.store.get(rec.resource_id, 9.0)
    assert not a.store.get(rec.resource_id, 10.5)


def _served(holder: ChordNode, rec: Record, now: float) -> tuple:
    sent(holder)
    holder.receive(Fetch(src=ref(9), txn=77, resource_id=rec.resource_id), now)
    [(_, recs)] = sent(holder, Records)
    return recs.records


def test_a_re_stored_record_gets_no_new_life() -> None:
    """records.py "Freshness": a copy counts down from when the holder first got that
    version; another node re-storing the signed record, before or after it ran out,
    cannot extend it, and after it ran out the replay is refused and counted."""
    owner, holder = node(1), node(5)
    rec = _record(owner)  # lifetime 300
    holder.receive(Store(src=ref(1), txn=1, records=(rec,)), 0.0)
    # mallory (node 3) captured it and stores it again, claiming a full life, twice
    holder.receive(Store(src=ref(3), txn=2, records=(rec,)), 200.0)
    holder.receive(Store(src=ref(3), txn=3, records=(replace(rec, remaining=300),)), 250.0)
    assert _served(holder, rec, 299.0)
    assert _served(holder, rec, 301.0) == ()
    for t in (310.0, 2000.0):  # before and after the holder swept out the dead copy
        sent(holder)
        holder.receive(Store(src=ref(3), txn=int(t), records=(rec,)), t)
        [(_, st)] = sent(holder, Stored)
        assert st.accepted == 0 and st.rejected == 1
        assert _served(holder, rec, t + 1) == ()
        run_timer(holder, t + 10)
    assert holder.stats["expired_refused"] == 2
    assert not holder.store.all()
    # the owner's next version (a higher sequence) is a new record and lives again
    fresh = sign_record(replace(rec, sequence=2), owner.id, owner.signer)
    holder.receive(Store(src=ref(1), txn=9, records=(fresh,)), 2100.0)
    assert [r.sequence for r in _served(holder, rec, 2101.0)] == [2]


@pytest.mark.parametrize("old", ["removed", "expired"])
def test_an_owner_that_lost_its_counter_jumps_above_its_old_versions(old: str) -> None:
    """A box restarted without its sequence file (counter back at 0) while the ring holds
    a newer version of its record (the tombstone of an unregistration, or a record that
    ran out): the holder that refuses the owner's copy sends the newer one back, and the
    owner goes above it at once."""
    holder = node(5)
    before = node(1)  # the owner's previous run
    rec = _record(before)
    lifetime = 0 if old == "removed" else 300
    prev = sign_record(replace(rec, sequence=5001, lifetime=lifetime), before.id, before.signer)
    holder.receive(Store(src=ref(1), txn=1, records=(prev,)), 0.0)
    t = 400.0
    owner = node(1, now=t)  # restarted: same key, counter lost
    owner.put(rec, t)  # the phone registers again: a ring of one stores it here
    run_timer(owner, t + 0.5)
    sent(owner)
    [mine] = owner.owned_records()
    assert mine.sequence < 5001
    holder.receive(Store(src=ref(1), txn=2, records=(mine,)), t + 1)
    [(dest, back)] = sent(holder, Transfer)
    assert _served(holder, rec, t + 1) == ()  # the old version still wins ...
    assert dest == ref(1) and [r.sequence for r in back.records] == [5001]
    owner.receive(back, t + 1.1)  # ... and goes back to its owner
    run_timer(owner, t + 1.1)
    [now_mine] = owner.owned_records()
    assert now_mine.sequence > 5001 and owner.sequences.value > 5001
    holder.receive(Store(src=ref(1), txn=4, records=(now_mine,)), t + 1.2)
    assert [r.sequence for r in _served(holder, rec, t + 1.3)] == [now_mine.sequence]


def test_a_closer_predecessor_is_handed_the_records_of_its_range() -> None:
    c = node(10)
    c.successors = [ref(1)]
    c.predecessor = ref(2)
    signer = KEYRING.signer(ref(1).id)
    mine = []
    for key in (3 * K, 6 * K, 9 * K):
        rec = Record(key, f"sip:{key}@m", 0, "sip:c@h", 1, 300)
        mine.append(sign_record(rec, ref(1).id, signer))
    c.receive(Store(src=ref(1), txn=1, records=tuple(mine)), 0.0)
    sent(c)
    c.receive(Notify(src=ref(7), txn=2), 0.1)  # 7 joined between 2 and 10
    transfers = sent(c, Transfer)
    assert len(transfers) == 1 and transfers[0][0] == ref(7)
    assert sorted(r.resource_id for r in transfers[0][1].records) == [3 * K, 6 * K]


def test_leave_hands_records_to_the_successor_and_tells_both_neighbours() -> None:
    b = node(5)
    b.successors = [ref(9), ref(12)]
    b.predecessor = ref(2)
    b.receive(Store(src=ref(1), txn=1, records=(_record(node(1)),)), 0.0)
    sent(b)
    b.leave(1.0)
    out = sent(b)
    kinds = sorted((d.id // K, type(m).__name__) for d, m in out)
    assert kinds == [(2, "Leave"), (9, "Leave"), (9, "Transfer")]
    to_pred = next(m for d, m in out if d == ref(2))
    to_succ = next(m for d, m in out if d == ref(9) and isinstance(m, Leave))
    assert to_pred.successors == (ref(9), ref(12)) and to_succ.predecessor == ref(2)
    for d, m in out:
        b.receive(reply(m, Stored if isinstance(m, Transfer) else Ack, d), 1.1)
    assert b.status == LEFT
    # the successor takes the leaver's predecessor; the predecessor its successors
    s = node(9)
    s.predecessor = ref(5)
    s.successors = [ref(12)]
    s.receive(to_succ, 1.2)
    assert s.predecessor == ref(2)
    p = node(2)
    p.successors = [ref(5), ref(9)]
    p.receive(to_pred, 1.2)
    assert [x.id // K for x in p.successors] == [9, 12]


def test_learn_routes_a_candidate_to_its_place_and_zips() -> None:
    a = node(1)
    a.successors = [ref(3), ref(8)]
    a.predecessor = ref(14)
    a.receive(Learn(src=ref(14), txn=1, candidate=ref(10)), 0.0)
    out = sent(a)
    learns = [(d, m) for d, m in out if isinstance(m, Learn)]
    assert learns and learns[0][0] == ref(8)  # 10 is further on: routed to 8
    b = node(8)
    b.successors = [ref(12)]
    b.receive(learns[0][1], 0.1)
    [(dest, gn)] = sent(b, GetNeighbors)
    assert dest == ref(10)  # adopts only after the candidate proves alive
    b.receive(reply(gn, Neighbors, ref(10), predecessor=ref(9), successors=(ref(11),)), 0.2)
    assert [s.id // K for s in b.successors][:3] == [10, 11, 12]
    out = sent(b)
    zipped = [(d, m) for d, m in out if isinstance(m, Learn)]
    # 10 is told about 12 (b's former successor); 9 (10's predecessor) is not told
    # about b because b does not lie between 9 and 10
    assert [(d.id // K, m.candidate.id // K) for d, m in zipped] == [(10, 12)]


def test_real_ed25519_signer_from_identity_plugs_in() -> None:
    from overlay.identity import NodeIdentity

    alice_id, mallory_id = NodeIdentity.generate(), NodeIdentity.generate()
    alice = ChordNode(NodeRef(alice_id.node_id, "10.0.0.1", 5060), alice_id.record_signer)
    store_id = NodeIdentity.generate()
    store = ChordNode(NodeRef(store_id.node_id, "10.0.0.2", 5060), store_id.record_signer)
    rec = sign_record(
        Record(resource_key("sip:a@m"), "sip:a@m", 0, "sip:a@10.0.0.1", 1, 300),
        alice.id, alice.signer,
    )
    forged = replace(sign_record(rec, mallory_id.node_id, mallory_id.record_signer),
                     owner=alice.id)
    store.receive(Store(src=alice.ref, txn=1, records=(rec, forged)), 0.0)
    [(_, st)] = sent(store, Stored)
    assert (st.accepted, st.rejected) == (1, 1)


# ----------------------------------------------------------------------------- cadence


def _drive(n: ChordNode, until: float, answer) -> list[float]:
    """Fire n's timers up to `until`, answering each request it sends with
    answer(time, dest, msg) (None: no answer); returns the times GetNeighbors went out."""
    times = []
    while (t := n.get_timer()) is not None and t <= until:
        n.handle_timer(t)
        out = n.messages_to_send()
        while out:
            dest, msg = out.pop(0)
            if isinstance(msg, GetNeighbors):
                times.append(t)
            r = answer(t, dest, msg)
            if r is not None:
                n.receive(r, t)
                out += n.messages_to_send()
    return times


def test_stabilize_backs_off_while_stable_and_speeds_up_on_change() -> None:
    a = node(1)
    a.successors = [ref(5)]
    a.predecessor = ref(13)  # on a formed ring (a node without one stays at the fast rate)
    view = {"succ": (ref(9),)}

    def answer(t, dest, msg):
        if isinstance(msg, GetNeighbors):
            return reply(msg, Neighbors, dest, predecessor=a.ref, successors=view["succ"])
        if isinstance(msg, FindSuccessor):  # fix-fingers: 13 answers for everything
            return reply(msg, Found, dest, key=msg.key, successors=(ref(13),))
        return reply(msg, Pong if isinstance(msg, Ping) else Ack, dest)

    times = _drive(a, 60.0, answer)
    gaps = [b - x for x, b in zip(times, times[1:], strict=False)]
    c = a.config
    assert all(g <= c.stabilize_max * (1 + c.jitter) + 1e-9 for g in gaps)
    assert gaps[-1] >= c.stabilize_max * (1 - c.jitter)  # backed off to the cap
    assert any(1.5 < g < 3 for g in gaps) and any(3 < g < 5 for g in gaps)  # by doubling
    # the successor's view changes: the next rounds come at the fast rate again
    view["succ"] = (ref(8),)
    end = times[-1]
    later = _drive(a, end + 30.0, answer)
    assert later[1] - later[0] <= c.stabilize_interval * (1 + c.jitter) + 1e-9
    assert [s.id // K for s in a.successors] == [5, 8]


def test_a_node_whose_view_changed_pokes_its_predecessor() -> None:
    c = node(10)
    c.predecessor = ref(2)
    c.successors = [ref(12)]
    [(_, gn)] = stabilize_now(c, 1.0)
    c.receive(reply(gn, Neighbors, ref(12), predecessor=c.ref, successors=(ref(14),)), 1.0)
    run_timer(c, 1.0)
    pokes = sent(c, Ping)
    assert [d for d, _ in pokes] == [ref(2)] and c.stats["pokes_sent"] == 1
    # a node joined between 2 and us: 2 (the old predecessor) should adopt it
    c.receive(Notify(src=ref(6), txn=50), 2.0)
    run_timer(c, 2.0)
    assert c.predecessor == ref(6) and [d for d, _ in sent(c, Ping)] == [ref(2)]
    # pokes are batched: one more change right after waits for half a fast round
    c.receive(Leave(src=ref(12), txn=51, predecessor=c.ref), 2.1)
    run_timer(c, 2.3)
    assert sent(c, Ping) == [] and c.stats["pokes_sent"] == 2
    run_timer(c, 2.6)
    assert ref(6) in [d for d, _ in sent(c, Ping)] and c.stats["pokes_sent"] == 3


def test_a_ping_from_the_first_successor_makes_a_node_stabilize_at_once() -> None:
    b = node(4)
    b.successors = [ref(8)]
    b.predecessor = ref(1)
    b._stab_calm = 10
    b._periodic("stabilize", 100.0)  # backed off: next round far away
    b.receive(Ping(src=ref(12), txn=1), 10.0)  # not our successor: just a pong
    assert [type(m) for _, m in sent(b)] == [Pong] and b._due["stabilize"] == 100.0
    b.receive(Ping(src=ref(8), txn=2), 10.0)
    assert [type(m) for _, m in sent(b)] == [Pong] and b._due["stabilize"] <= 10.05
    run_timer(b, 10.05)
    assert [d for d, _ in sent(b, GetNeighbors)] == [ref(8)] and b._stab_calm == 1


def test_a_notify_from_a_new_node_brings_stabilize_back_to_the_fast_rate() -> None:
    c = node(10)
    c.predecessor = ref(6)
    c.successors = [ref(1)]
    c._stab_calm = 10
    c._periodic("stabilize", 100.0)
    c.receive(Notify(src=ref(6), txn=1), 5.0)  # our own predecessor: nothing new
    assert c._due["stabilize"] == 100.0
    c.receive(Notify(src=ref(3), txn=2), 5.0)  # not between 6 and 10: ping 6 first...
    assert c.predecessor == ref(6)
    assert c._stab_calm == 0 and c._due["stabilize"] <= 5.0 + 1.1  # ... and look soon
    c._periodic("stabilize", 100.0)
    c.learn_peer(ref(13), 6.0)  # discovery: someone not in our tables
    assert c._due["stabilize"] <= 6.0 + 1.1


def test_a_backed_off_predecessor_is_not_pinged_but_a_silent_one_is() -> None:
    c = node(10)
    c.predecessor = ref(6)
    c.successors = [ref(1)]
    c._pred_heard = 0.0
    c._touch(7.0)  # silent for most of a backed-off round: fine
    c._check_predecessor()
    assert sent(c, Ping) == []
    c._touch(12.0)  # longer than its slowest round: ask
    c._check_predecessor()
    assert [d for d, _ in sent(c, Ping)] == [ref(6)]


def test_fix_fingers_checks_a_finger_by_asking_it() -> None:
    a = node(1)
    a.successors = [ref(2)]
    a.predecessor = ref(15)
    a._learn_finger(ref(4))  # the finger for targets 2K and 3K away
    key = 3 * K  # 1K + 2K: the first target past the successor list
    a._fix_fingers()
    [(dest, fs)] = sent(a, FindSuccessor)
    assert dest == ref(4) and fs.key == key and not fs.recursive
    a.receive(reply(fs, Found, ref(4), key=key, successors=(ref(4), ref(5))), 0.1)
    assert sent(a) == [] and a.fingers[a._finger_cursor - 1] == ref(4)  # one hop, no change
    # a finger that answers anything but "it is me" means: look the target up as usual
    a._finger_cursor = 0
    a._fix_fingers()
    [(_, fs)] = sent(a, FindSuccessor)
    a.receive(reply(fs, Redirect, ref(4), key=key, closer=(ref(3),)), 0.2)
    [(dest, fs2)] = sent(a, FindSuccessor)
    assert fs2.key == key and fs2.txn != fs.txn  # a fresh lookup from our own tables
    a.receive(reply(fs2, Found, dest, key=key, successors=(ref(3), ref(4))), 0.3)
    assert a.fingers[a._finger_cursor - 1] == ref(3) and a._fingers_changed
    # a finger that does not answer is dropped, and the target looked up
    a._finger_cursor = 0
    a._fix_fingers()
    [(dest, fs3)] = sent(a, FindSuccessor)
    assert dest == ref(3)
    run_timer(a, 1.0)
    assert ref(3) not in a._unique_fingers() and sent(a, FindSuccessor)


# ----------------------------------------------------------------------------- after a split


def test_a_get_answers_from_its_own_copies_when_the_replicas_are_silent() -> None:
    a = node(1)
    a.successors = [ref(5), ref(9)]
    a.predecessor = ref(13)
    rec = _record(node(5), aor="sip:x@m")
    rec = replace(rec, resource_id=7 * K)
    rec = sign_record(rec, ref(5).id, KEYRING.signer(ref(5).id))
    a.receive(Store(src=ref(9), txn=1, records=(rec,), replica=True), 0.0)
    sent(a)
    rid = a.get(7 * K, 0.0)  # a hint lookup: 9 answers for 7K
    [(dest, fs)] = sent(a, FindSuccessor)
    a.receive(reply(fs, Found, dest, key=7 * K, successors=(ref(9), ref(11), ref(12))), 0.1)
    [(dest, _)] = sent(a, Fetch)
    assert dest == ref(9)
    run_timer(a, 1.2)  # 9 is gone (the other side of a split): two tries, no answer
    [done] = [e for e in events(a) if isinstance(e, GetDone)]
    assert done.request_id == rid and [r.contact for r in done.records] == [rec.contact]
    assert a._avoided(ref(9).id)
    assert any(d == ref(9) for d, _ in sent(a, Ping))  # a neighbour: checked


def test_a_fetch_timeout_moves_on_to_further_successors_then_a_fresh_lookup() -> None:
    a = node(1, rto_min=0.5)  # timeouts as configured, not from the measured round trip
    a.successors = [ref(2), ref(3)]
    a.predecessor = ref(15)
    rid = a.get(7 * K, 0.0)
    [(dest, fs)] = sent(a, FindSuccessor)
    a.receive(
        reply(fs, Found, dest, key=7 * K, successors=(ref(8), ref(9), ref(10), ref(11))),
        0.1,
    )
    asked: list[NodeRef] = []
    now = 0.1
    for _ in range(3):  # the first r successors are silent (two tries each)
        for dest, _ in sent(a, Fetch):
            if dest not in asked:
                asked.append(dest)
        now += 1.0
        run_timer(a, now)
    [(dest, fe)] = [(d, m) for d, m in sent(a, Fetch) if d not in asked]
    assert asked == [ref(8), ref(9), ref(10)] and dest == ref(11)  # the lookup's fourth
    owner = node(6)
    rec = sign_record(replace(_record(owner), resource_id=7 * K), owner.id, owner.signer)
    a.receive(reply(fe, Records, ref(11), resource_id=7 * K, records=(rec,)), now + 0.1)
    [done] = [e for e in events(a) if isinstance(e, GetDone)]
    assert done.request_id == rid and done.records == (rec,)
    assert all(a._avoided(x.id) for x in asked)

    # nodes that just missed a fetch are asked last
    rid = a.get(7 * K, now + 1)
    [(dest, fs)] = sent(a, FindSuccessor)
    a.receive(reply(fs, Found, dest, key=7 * K, successors=(ref(8), ref(12))), now + 1.1)
    [(dest, _)] = sent(a, Fetch)
    assert dest == ref(12)


def test_when_every_successor_found_is_silent_a_fresh_lookup_avoids_them() -> None:
    a = node(1, rto_min=0.5)  # timeouts as configured, not from the measured round trip
    a.successors = [ref(2), ref(3)]
    a.predecessor = ref(15)
    rid = a.get(7 * K, 0.0)
    [(dest, fs)] = sent(a, FindSuccessor)
    a.receive(reply(fs, Found, dest, key=7 * K, successors=(ref(8), ref(9))), 0.1)
    run_timer(a, 2.2)  # 8 and 9 do not answer (two tries each)
    out = sent(a)
    assert {d for d, m in out if isinstance(m, Fetch)} == {ref(8), ref(9)}
    [(dest, fs)] = [
        (d, m) for d, m in out if isinstance(m, FindSuccessor) and m.key == 7 * K
    ]  # a fresh lookup
    assert dest not in (ref(8), ref(9))
    a.receive(reply(fs, Found, dest, key=7 * K, successors=(ref(9), ref(12))), 2.3)
    [(dest, fe)] = sent(a, Fetch)
    assert dest == ref(12)  # 9 is not asked again
    a.receive(reply(fe, Records, ref(12), resource_id=7 * K, records=()), 2.4)
    [done] = [e for e in events(a) if isinstance(e, GetDone)]
    assert done.request_id == rid and done.records == ()


def test_own_records_are_stored_again_soon_after_a_node_is_declared_dead() -> None:
    a = node(1, sync_delay=0.2)  # a ring of one: its own records are stored here
    rec = Record(7 * K, "sip:alice@m", 0, "sip:a@10.0.0.1", 1, 300)
    a.put(rec, 0.0)
    sent(a)
    run_timer(a, 5.0)
    sent(a)
    assert a.stats["republished"] == 0
    seq = a.owned_records()[0].sequence
    a._touch(5.0)
    a._declare_dead(ref(9))
    run_timer(a, 5.1)
    assert a.owned_records()[0].sequence == seq  # batched: not at once
    run_timer(a, 5.3)
    assert a.owned_records()[0].sequence == seq + 1 and a.stats["republished"] == 1
    assert a.store.all()[0].record.sequence == seq + 1  # placed again
    run_timer(a, 30.0)
    assert a.stats["republished"] == 1  # once per death
