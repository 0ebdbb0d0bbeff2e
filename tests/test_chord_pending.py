"""Every kind of pending request of the Chord node finishes, whichever way it ends: an
answer, an error answer, or no answer at all (every try timed out). Each case drives
one request of a node through the three endings, checks the follow-up the rule asks for,
then lets the node run with nobody answering and checks nothing is left in flight
(`ChordNode.pending_work()`)."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from overlay.chord.messages import (
    ID_SPACE,
    Error,
    Fetch,
    FindSuccessor,
    Found,
    GetNeighbors,
    Learn,
    Message,
    Neighbors,
    NodeRef,
    Notify,
    Ping,
    Pong,
    Record,
    Records,
    Store,
    Stored,
)
from overlay.chord.node import (
    ChordConfig,
    ChordNode,
    GetDone,
    GetFailed,
    Joined,
    JoinFailed,
    LookupDone,
    LookupFailed,
    PutDone,
    PutFailed,
)
from overlay.chord.records import KeyedHashKeyring, sign_record

KEYRING = KeyedHashKeyring("pending")
K = ID_SPACE // 16
ENDINGS = ("answer", "error", "timeout")
# periodic work far away, so that only the request under test (and what follows from it)
# is in flight
QUIET = dict(
    stabilize_interval=1000.0, stabilize_max=1000.0, fix_fingers_interval=1000.0,
    fix_fingers_max=1000.0, sync_interval=1000.0, merge_check_interval=1000.0,
)


def ref(i: int) -> NodeRef:
    return NodeRef(i * K, f"10.0.0.{i}", 5070)


def node(i: int) -> ChordNode:
    r = ref(i)
    n = ChordNode(r, KEYRING.signer(r.id), random.Random(i), ChordConfig(**QUIET), 0.0)
    # nothing periodic soon (but "refresh", which has no records to refresh)
    assert min(n._due[k] for k in ("stabilize", "fingers", "sync", "merge")) > 100
    return n


def events(n: ChordNode) -> list[object]:
    out = []
    while (ev := n.next_event()) is not None:
        out.append(ev)
    return out


def the_request(n: ChordNode, kind: type, to: NodeRef) -> Message:
    [msg] = [m for d, m in n.messages_to_send() if isinstance(m, kind) and d.id == to.id]
    return msg


def end(n: ChordNode, req: Message, to: NodeRef, ending: str,
        answer: Callable[[], Message]) -> None:
    """End req: `answer()` (built for req), an error answer, or silence until every try
    of req timed out (nothing else is answered meanwhile)."""
    if ending == "answer":
        n.receive(answer(), n.now)
    elif ending == "error":
        n.receive(Error(src=to, txn=req.txn, code=500, reason="test"), n.now)
    else:
        while req.txn in n._pending:
            t = n.get_timer()
            assert t is not None
            n.handle_timer(t)


def drain(n: ChordNode, seconds: float = 60.0) -> None:
    """Run with nobody answering, then check nothing is left in flight."""
    until = n.now + seconds
    while (t := n.get_timer()) is not None and t <= until:
        n.handle_timer(t)
        n.messages_to_send()
    assert not any(n.pending_work().values()), n.pending_work()


def on_ring(n: ChordNode, *succs: NodeRef, pred: NodeRef | None = None) -> ChordNode:
    n._set_successors(list(succs))  # a node with these neighbours, as the simulator builds
    if pred is not None:
        n._set_predecessor(pred)
    n.messages_to_send()
    events(n)
    return n


# ----------------------------------------------------------------------------- lookup hop


@pytest.mark.parametrize("ending", ENDINGS)
def test_lookup_hop(ending: str) -> None:
    a, b, c = on_ring(node(1), ref(5)), ref(5), ref(13)
    rid = a.lookup(12 * K, 0.0)
    req = the_request(a, FindSuccessor, b)
    end(a, req, b, ending, lambda: Found(src=b, txn=req.txn, key=12 * K, successors=(c,)))
    evs = [e for e in events(a) if isinstance(e, LookupDone | LookupFailed)]
    if ending == "answer":
        assert [(type(e), e.successors) for e in evs] == [(LookupDone, (c,))]
    elif ending == "error":
        # nobody else to ask: the closest node that answered is the best guess
        assert [(type(e), e.successors) for e in evs] == [(LookupDone, (b,))]
    else:
        # b is asked once more (messages get lost), then the lookup fails
        assert evs == []
        req = the_request(a, FindSuccessor, b)
        end(a, req, b, "timeout", lambda: req)
        [e] = [e for e in events(a) if isinstance(e, LookupDone | LookupFailed)]
        assert isinstance(e, LookupFailed) and e.request_id == rid and e.timeouts == 2
        assert a._avoided(b.id)  # routed around, and as a neighbour pinged
        assert any(isinstance(m, Ping) and d == b for d, m in a.messages_to_send())
    drain(a)
    if ending == "timeout":
        assert a.successors == []  # the pings failed too: declared dead


# ----------------------------------------------------------------------------- join


@pytest.mark.parametrize("ending", ENDINGS)
def test_join_verify(ending: str) -> None:
    a, b, c = node(1), ref(5), ref(9)
    a.join(b, 0.0)
    look = the_request(a, FindSuccessor, b)
    a.receive(Found(src=b, txn=look.txn, key=a.id, successors=(c,)), 0.0)
    req = the_request(a, GetNeighbors, c)  # the verify walk asks the found successor
    end(a, req, c, ending, lambda: Neighbors(src=c, txn=req.txn, predecessor=ref(15),
                                             successors=(ref(13),)))
    if ending == "answer":
        assert [type(e) for e in events(a)][-1:] == [Joined]
        assert [s.id for s in a.successors] == [c.id, 13 * K] and not a.joining
    else:
        assert a.joining and not [e for e in events(a) if isinstance(e, Joined)]
        drain(a)  # retried with backoff, nobody answers: gives up, a ring of one
        assert [type(e) for e in events(a) if isinstance(e, JoinFailed)] == [JoinFailed]
        assert a.join_failed and a.successors == []
    drain(a)


# ----------------------------------------------------------------------------- stabilize


@pytest.mark.parametrize("ending", ENDINGS)
def test_stabilize_get_neighbors(ending: str) -> None:
    a, b = on_ring(node(1), ref(5), pred=ref(13)), ref(5)
    a._stabilize()
    req = the_request(a, GetNeighbors, b)
    end(a, req, b, ending, lambda: Neighbors(src=b, txn=req.txn, predecessor=a.ref,
                                             successors=(ref(9),)))
    assert a.pending_work()["stabilize"] == 0
    if ending == "answer":
        assert [s.id for s in a.successors] == [b.id, 9 * K]
    elif ending == "error":
        assert [s.id for s in a.successors] == [b.id]  # asked again next round
    else:
        assert a.successors == [] and a._is_suspect(b.id)  # dead: dropped
    drain(a)


# ----------------------------------------------------------------------------- rectify


@pytest.mark.parametrize("ending", ENDINGS)
def test_rectify_ping(ending: str) -> None:
    p, n = ref(15), ref(14)  # a notifier that does not lie between p and us
    a = on_ring(node(1), ref(5), pred=p)
    a.receive(Notify(src=n, txn=77), 0.0)
    req = the_request(a, Ping, p)
    assert a.pending_work()["predecessor_ping"] == 1
    end(a, req, p, ending, lambda: Pong(src=p, txn=req.txn))
    assert a.pending_work()["predecessor_ping"] == 0
    if ending == "timeout":
        assert a.predecessor == n  # p is dead: the notifier takes its place
    else:
        assert a.predecessor == p  # any answer shows p alive: it stays
    drain(a)


# ----------------------------------------------------------------------------- adopt


@pytest.mark.parametrize("ending", ENDINGS)
def test_adopt(ending: str) -> None:
    b, c = ref(5), ref(9)
    a = on_ring(node(1), c)
    a.receive(Learn(src=ref(12), txn=78, candidate=b), 0.0)  # b falls just after us
    req = the_request(a, GetNeighbors, b)
    assert a.pending_work()["adoptions"] == 1
    end(a, req, b, ending, lambda: Neighbors(src=b, txn=req.txn, predecessor=None,
                                             successors=(c,)))
    assert a.pending_work()["adoptions"] == 0
    if ending == "answer":
        assert [s.id for s in a.successors] == [b.id, c.id]
        learns = [m for d, m in a.messages_to_send() if isinstance(m, Learn)]
        assert [m.candidate for m in learns] == [c]  # zip: b learns our former successor
    elif ending == "error":
        assert [s.id for s in a.successors] == [c.id]
    else:
        assert [s.id for s in a.successors] == [c.id] and a._is_suspect(b.id)
    drain(a)


# ----------------------------------------------------------------------------- fetch


@pytest.mark.parametrize("ending", ENDINGS)
def test_fetch(ending: str) -> None:
    b = ref(5)
    a = on_ring(node(1), b)
    key = 3 * K  # b's range: the lookup ends here, b is asked
    holder = KEYRING.signer(b.id)
    rec = sign_record(Record(key, "sip:x@meshsip", b.id, "sip:x@10.0.0.5", 1, 300), b.id,
                      holder)
    a.get(key, 0.0)
    req = the_request(a, Fetch, b)
    end(a, req, b, ending, lambda: Records(src=b, txn=req.txn, resource_id=key,
                                           records=(rec,)))
    evs = [e for e in events(a) if isinstance(e, GetDone | GetFailed)]
    if ending == "answer":
        assert [(type(e), e.records) for e in evs] == [(GetDone, (rec,))]
    elif ending == "error":
        assert [(type(e), e.records) for e in evs] == [(GetDone, ())]  # b answered
    else:
        assert [type(e) for e in evs] == [GetFailed] and a._avoided(b.id)
    drain(a)


# ----------------------------------------------------------------------------- store


@pytest.mark.parametrize("ending", ENDINGS)
def test_store(ending: str) -> None:
    b = ref(5)
    a = on_ring(node(1), b)
    key = 3 * K
    rid = a.put(Record(key, "sip:a@meshsip", 0, "sip:a@10.0.0.1", 1, 300), 0.0)
    req = the_request(a, Store, b)
    end(a, req, b, ending, lambda: Stored(src=b, txn=req.txn, accepted=1))
    [e] = [e for e in events(a) if isinstance(e, PutDone | PutFailed)]
    assert e.request_id == rid
    assert a.pending_work()["requests"] == 0 and a.pending_work()["lookups"] == 0
    if ending == "answer":
        assert isinstance(e, PutDone) and e.primary == b
        return  # (then refreshed at first_refresh)
    assert isinstance(e, PutFailed)
    # ours and still wanted: stored again within seconds, not at the next refresh
    now = a.now
    while (t := a.get_timer()) is not None and t <= now + 3.0:
        a.handle_timer(t)
        if any(isinstance(m, Store) for _, m in a.messages_to_send()):
            break
    else:
        raise AssertionError("the failed put was not retried")
