"""Real SIP traffic from sipp against a node on 127.0.0.1 (scenarios in tests/sipp/)."""

from __future__ import annotations

import pytest
from marks import NEEDS_SIPP
from phones.node import NodeProcess
from phones.ports import free_port
from phones.sipp import SippResult, SippUas, run_sipp
from test_mesh_loopback import status

pytestmark = [pytest.mark.phones, NEEDS_SIPP]


def ok(result: SippResult, node: NodeProcess, what: str) -> None:
    assert result.returncode == 0, (
        f"{what} failed\n{result.logs}\n--- node output ---\n{node.log()}"
    )


def test_register_and_unregister(start_node, tmp_path):
    node = start_node(tmp_path)
    keys = {"contact_port": str(free_port())}
    ok(run_sipp("register", node.target, service="2001", keys=keys, workdir=tmp_path),
       node, "REGISTER")
    ok(run_sipp("unregister", node.target, service="2001", keys=keys, workdir=tmp_path),
       node, "unregister")
    ok(run_sipp("uac_unavailable", node.target, service="2001", workdir=tmp_path),
       node, "INVITE to 2001 after it unregistered")


def register(node: NodeProcess, extension: str, contact_port: int, tmp_path) -> None:
    keys = {"contact_port": str(contact_port)}
    ok(run_sipp("register", node.target, service=extension, keys=keys, workdir=tmp_path),
       node, f"REGISTER {extension} at 127.0.0.1:{contact_port}")


def finish(uas: SippUas, node: NodeProcess, what: str) -> None:
    ok(uas.wait(), node, what)


def test_call_invite_ringing_ok_ack_bye(start_node, tmp_path):
    node = start_node(tmp_path)
    with SippUas("uas_answer", service="2002", keys={"proxy": node.target},
                 workdir=tmp_path) as uas:
        register(node, "2002", uas.port, tmp_path)
        ok(run_sipp("uac_call", node.target, service="2002", keys={"caller": "2001"},
                    workdir=tmp_path), node, "call 2001 -> 2002 (caller side)")
        finish(uas, node, "call 2001 -> 2002 (callee side)")


def test_a_refreshing_phone_is_answered_by_the_refresh_lane_and_still_called(
        start_node, tmp_path):
    """The second REGISTER of the same Contact is a plain refresh: the lane answers it
    (appliance/refresh.py), sipp checks the 200's Contact and expires, and calls reach
    the phone as before."""
    node = start_node(tmp_path)
    with SippUas("uas_answer", service="2003", keys={"proxy": node.target},
                 workdir=tmp_path) as uas:
        register(node, "2003", uas.port, tmp_path)
        register(node, "2003", uas.port, tmp_path)
        assert status(node)["counters"]["refreshes_in_lane"] == 1
        ok(run_sipp("uac_call", node.target, service="2003", keys={"caller": "2001"},
                    workdir=tmp_path), node, "call 2001 -> 2003 (caller side)")
        finish(uas, node, "call 2001 -> 2003 (callee side)")


def test_cancel_before_answer(start_node, tmp_path):
    node = start_node(tmp_path)
    with SippUas("uas_ring_only", service="2012", workdir=tmp_path) as uas:
        register(node, "2012", uas.port, tmp_path)
        ok(run_sipp("uac_cancel", node.target, service="2012", keys={"caller": "2011"},
                    workdir=tmp_path), node, "CANCEL 2011 -> 2012 (caller side)")
        finish(uas, node, "CANCEL 2011 -> 2012 (callee side)")


def test_cancel_reaches_a_callee_that_only_said_trying(start_node, tmp_path):
    """The caller hangs up 300 ms after the INVITE, when the callee has sent only 100: the
    callee gets a CANCEL (RFC 3261 9.1, 16.10) and the caller the callee's 487."""
    node = start_node(tmp_path)
    with SippUas("uas_trying_only", service="2032", workdir=tmp_path) as uas:
        register(node, "2032", uas.port, tmp_path)
        ok(run_sipp("uac_cancel_early", node.target, service="2032", keys={"caller": "2031"},
                    workdir=tmp_path),
           node, "CANCEL 2031 -> 2032 after 100 (caller side)")
        finish(uas, node, "CANCEL 2031 -> 2032 after 100 (callee side)")


def test_a_2xx_after_the_callers_487_never_reaches_it(start_node, tmp_path):
    """The callee stays silent past Timer B, so the caller gets its 487, and then answers:
    the node ACKs and BYEs that 200 (the callee checks), the caller sees nothing more."""
    node = start_node(tmp_path, config="[sip]\nt1_ms = 100\n")
    with SippUas("uas_silent_then_answer", service="2042", keys={"proxy": node.target},
                 workdir=tmp_path, timeout=30) as uas:
        register(node, "2042", uas.port, tmp_path)
        ok(run_sipp("uac_cancel_early", node.target, service="2042", keys={"caller": "2041"},
                    timeout=30, workdir=tmp_path), node, "CANCEL 2041 -> 2042 (caller side)")
        finish(uas, node, "the late 200 of 2042 (callee side)")
    assert "ACKed and ended with BYE" in node.log()


def test_unknown_user_404(start_node, tmp_path):
    node = start_node(tmp_path)
    ok(run_sipp("uac_404", node.target, service="2999", keys={"caller": "2001"},
                workdir=tmp_path), node, "INVITE to unknown 2999")


def test_unreachable_contact_408_or_480(start_node, tmp_path):
    node = start_node(tmp_path, config="[sip]\nt1_ms = 100\n")
    dead = free_port()  # nothing listens there
    register(node, "2020", dead, tmp_path)
    # with t1_ms=100 the node gives up in ~6.4 s; sipp's 40 s is only the deadline
    ok(run_sipp("uac_timeout", node.target, service="2020", keys={"caller": "2001"},
                timeout=40, workdir=tmp_path), node, "INVITE to unreachable 2020")


USERS = '[users]\n"3001" = "s3cret-3001"\n"3002" = "other"\n'


def digest_node(start_node, tmp_path) -> NodeProcess:
    users = tmp_path / "users.toml"
    users.write_text(USERS)
    return start_node(tmp_path, config=(
        '[registrar]\npolicy = "digest"\nrealm = "meshsip-test"\n'
        f'users_file = "{users}"\n'
    ))


def test_digest_challenge_and_answer(start_node, tmp_path):
    node = digest_node(start_node, tmp_path)
    ok(run_sipp("register_digest", node.target, service="3001", workdir=tmp_path,
                keys={"auth_user": "3001", "password": "s3cret-3001", "realm": "meshsip-test"}),
       node, "digest REGISTER 3001")


def test_digest_wrong_password_refused(start_node, tmp_path):
    node = digest_node(start_node, tmp_path)
    ok(run_sipp("register_digest_wrong", node.target, service="3001", workdir=tmp_path,
                keys={"auth_user": "3001", "password": "not-the-password"}),
       node, "digest REGISTER 3001 with a wrong password")
    # and nothing got bound: a call to 3001 finds nobody
    ok(run_sipp("uac_unavailable", node.target, service="3001", workdir=tmp_path),
       node, "INVITE to 3001 after a refused REGISTER")
