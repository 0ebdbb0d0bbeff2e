"""Linphone (linphonec, a stock softphone) with the box as its outbound proxy: a domain of
the user's choosing ("meshsip") and `route` set to the box, so every request carries
`Route: <sip:BOX:5060;lr>` and a Request-URI that is not the box. Calls on one box and
across two boxes; the phones are in test-bed namespaces (see tests/phones/linphone.py)."""

from __future__ import annotations

import pytest
import test_mesh_calls
from marks import BED
from meshbed.fixtures import make_bed_fixture  # noqa: F401  (fixture make_bed)
from phones.linphone import Linphone, linphonec_binary

pytestmark = [
    *BED,
    pytest.mark.skipif(linphonec_binary() is None, reason="linphonec not installed (linphone-cli)"),
]


def phone(bed, host: int, extension: str, box: int, tmp_path, port: int = 5070) -> Linphone:
    p = Linphone(bed, host, extension, box=bed.addr(box), workdir=tmp_path / f"l{extension}",
                 sip_port=port, rtp_port=port + 2000)
    p.start()
    return p


def call_and_hang_up(caller: Linphone, callee: Linphone, extension: str) -> None:
    caller.command(f"call sip:{extension}@meshsip")
    callee.wait_output("Receiving new incoming call")
    caller.wait_output("Media streams established")
    caller.command("terminate")
    callee.wait_output("ended")
    invite = caller.sip_log().split(f"INVITE sip:{extension}@meshsip SIP/2.0", 1)
    assert len(invite) == 2, "the caller sent no INVITE to the domain"
    head = invite[1].split("\n\n", 1)[0]
    assert f"Route: <sip:{caller_box(caller)}:5060;lr>" in head, head


def caller_box(p: Linphone) -> str:
    return p.rc.read_text().split("reg_proxy=<sip:", 1)[1].split(":", 1)[0]


def call_between(a: Linphone, b: Linphone) -> None:
    """Both register, a calls b's extension 1002 and hangs up; both are stopped after."""
    try:
        a.wait_registered()
        b.wait_registered()
        call_and_hang_up(a, b, "1002")
    finally:
        a.stop()
        b.stop()


def test_linphone_phones_with_the_box_as_outbound_proxy_call_on_one_box(make_bed, tmp_path):
    bed = make_bed(1)
    node = bed.node(0, "--no-discovery")
    call_between(phone(bed, 0, "1001", 0, tmp_path, 5070), phone(bed, 0, "1002", 0, tmp_path, 5072))
    assert "call 1001 -> 1002 (1 contact)" in node.log()


def test_linphone_phones_with_the_box_as_outbound_proxy_call_across_boxes(make_bed, tmp_path):
    bed = make_bed(2)
    nodes = [bed.node(i, "--no-discovery", "--seed", f"{bed.addr(1 - i)}:5060")
             for i in range(2)]
    test_mesh_calls.wait_ring(bed, dict(enumerate(nodes)), timeout=60)
    call_between(phone(bed, 0, "1001", 0, tmp_path), phone(bed, 1, "1002", 1, tmp_path))
    assert "call 1001 -> 1002 via box" in nodes[0].log()
    assert "call 1001 -> 1002 (1 contact)" in nodes[1].log()
