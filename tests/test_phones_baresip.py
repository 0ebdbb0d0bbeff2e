"""Two real soft phones (headless baresip) register to a node and talk through it."""

from __future__ import annotations

import time

import pytest
from marks import NEEDS_BARESIP
from phones.baresip import Baresip
from phones.node import NodeProcess
from phones.sipp import run_sipp, sipp_binary
from test_mesh_loopback import status

pytestmark = [pytest.mark.phones, NEEDS_BARESIP]

TALK_SECONDS = 2.0
MIN_PACKETS = 50  # 20 ms packets: ~100 in 2 s each way


@pytest.fixture
def phones(tmp_path):
    started: list[Baresip] = []

    def make(extension: str, node: NodeProcess, **kw) -> Baresip:
        phone = Baresip(extension, node.port, workdir=tmp_path / f"baresip-{extension}", **kw)
        started.append(phone)
        return phone.start()

    yield make
    for phone in started:
        phone.stop()


def with_node_log(node: NodeProcess):
    """Adds the node's output to any assertion raised inside the block."""

    class _Ctx:
        def __enter__(self):
            return self

        def __exit__(self, exc_type, exc, tb):
            if exc_type is AssertionError:
                raise AssertionError(f"{exc}\n--- node output ---\n{node.log()}") from None
            return False

    return _Ctx()


def test_two_baresip_phones_call_with_audio_both_ways(start_node, phones, tmp_path):
    node = start_node(tmp_path)
    with with_node_log(node):
        alice = phones("1001", node)
        bob = phones("1002", node)
        alice.wait_registered(timeout=10)
        bob.wait_registered(timeout=10)

        alice.dial(node.uri("1002"))
        bob.wait_event("CALL_ESTABLISHED", timeout=10)  # answermode=auto
        alice.wait_event("CALL_ESTABLISHED", timeout=10)

        time.sleep(TALK_SECONDS)
        a, b = alice.rtp_packets(), bob.rtp_packets()
        counts = f"1001 {a}, 1002 {b}"
        print(f"RTP packets after {TALK_SECONDS}s: {counts}")
        assert a.tx > MIN_PACKETS and a.rx > MIN_PACKETS, f"RTP did not flow: {counts}"
        assert b.tx > MIN_PACKETS and b.rx > MIN_PACKETS, f"RTP did not flow: {counts}"

        alice.hangup()
        alice.wait_event("CALL_CLOSED", timeout=10)
        bob.wait_event("CALL_CLOSED", timeout=10)  # the BYE went through the node


def test_baresip_caller_cancels_while_ringing(start_node, phones, tmp_path):
    node = start_node(tmp_path)
    with with_node_log(node):
        alice = phones("1011", node)
        bob = phones("1012", node, answermode="manual")
        alice.wait_registered(timeout=10)
        bob.wait_registered(timeout=10)

        alice.dial(node.uri("1012"))
        bob.wait_event("CALL_INCOMING", timeout=10)
        alice.wait_event("CALL_RINGING", timeout=10)
        alice.hangup()  # before the answer: a CANCEL
        alice.wait_event("CALL_CLOSED", timeout=10)
        closed = bob.wait_event("CALL_CLOSED", timeout=10)
        assert not any(e.get("type") == "CALL_ESTABLISHED" for e in bob.events()), closed


def test_baresip_registers_with_digest(start_node, phones, tmp_path):
    users = tmp_path / "users.toml"
    users.write_text('[users]\n"1101" = "pw-1101"\n"1102" = "pw-1102"\n')
    node = start_node(tmp_path, config=(
        f'[registrar]\npolicy = "digest"\nrealm = "meshsip-test"\nusers_file = "{users}"\n'
    ))
    with with_node_log(node):
        good = phones("1101", node, password="pw-1101")
        good.wait_registered(timeout=10)
        bad = phones("1102", node, password="not-it")
        with pytest.raises(AssertionError, match="not registered"):
            bad.wait_registered(timeout=3)


@pytest.mark.skipif(sipp_binary() is None, reason="sipp not installed (sip-tester)")
def test_a_caller_hanging_up_at_once_stops_a_baresip_callee_ringing(start_node, phones,
                                                                     tmp_path):
    """sipp calls and sends CANCEL as soon as the node's 100 arrives, most likely before
    baresip has said anything: the node must hold the CANCEL until baresip's first
    provisional response and then send it (RFC 3261 9.1), so the phone stops ringing."""
    node = start_node(tmp_path)
    with with_node_log(node):
        bob = phones("1022", node, answermode="manual")
        bob.wait_registered(timeout=10)
        result = run_sipp("uac_cancel_early", node.target, service="1022",
                          keys={"caller": "1021"}, workdir=tmp_path)
        assert result.ok, result.logs
        bob.wait_event("CALL_INCOMING", timeout=10)
        closed = bob.wait_event("CALL_CLOSED", timeout=10)
        assert not any(e.get("type") == "CALL_ESTABLISHED" for e in bob.events()), closed


def test_a_baresip_refresh_is_answered_by_the_refresh_lane(start_node, phones, tmp_path):
    """baresip re-registers as a stock phone does (same Call-ID, CSeq + 1, its own
    headers); the box answers that refresh from the refresh lane (appliance/refresh.py)
    and the phone stays registered."""
    node = start_node(tmp_path)
    with with_node_log(node):
        phone = phones("1201", node, regint=60)  # the box's shortest: refreshed within it
        phone.wait_registered(timeout=10)
        deadline = time.monotonic() + 90  # a deadline for the outcome, not a figure
        while (now := status(node))["counters"]["refreshes_in_lane"] < 1:
            assert time.monotonic() < deadline, f"no refresh in the lane: {now['counters']}"
            time.sleep(1)
        assert [r["extension"] for r in now["registrations"]] == ["1201"]
        phone.wait_registered(timeout=10)
