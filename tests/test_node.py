"""The real `meshsip run` process: start, status, persistence, hostile input, clean stop."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from phones.node import NodeFactory, NodeProcess

from overlay.sip.message import Response, parse_message

REPO = Path(__file__).resolve().parent.parent
TORTURE = REPO / "tests" / "data" / "rfc4475"


def meshsip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=30)


def udp_exchange(port: int, data: bytes, timeout: float = 3.0) -> int | None:
    """The status code of the node's answer (read from the status line alone: an answer
    to a broken request echoes its broken headers), or None when it stays silent."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(timeout)
        s.sendto(data, ("127.0.0.1", port))
        try:
            reply = s.recv(65535)
        except TimeoutError:
            return None
    assert reply.startswith(b"SIP/2.0 "), reply[:80]
    return int(reply[8:11])


def register_msg(ext: str, contact_port: int, cseq: int = 1, transport: str = "UDP") -> bytes:
    return (
        f"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:{contact_port};branch=z9hG4bKreg{ext}{cseq};rport\r\n"
        f"From: <sip:{ext}@127.0.0.1>;tag=t{ext}\r\nTo: <sip:{ext}@127.0.0.1>\r\n"
        f"Call-ID: reg-{ext}\r\nCSeq: {cseq} REGISTER\r\nMax-Forwards: 70\r\n"
        f"Contact: <sip:{ext}@127.0.0.1:{contact_port}>\r\nExpires: 600\r\n\r\n"
    ).encode()


def options_msg(branch: str) -> bytes:
    return (
        f"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{branch}\r\n"
        "From: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:127.0.0.1>\r\nCall-ID: ping-"
        f"{branch}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n\r\n"
    ).encode()


@pytest.fixture
def node(start_node: NodeFactory, tmp_path: Path) -> NodeProcess:
    return start_node(tmp_path)


def test_status_and_clean_stop(node: NodeProcess) -> None:
    assert udp_exchange(node.port, register_msg("1001", 7001)) == 200
    out = meshsip("status", "--data-dir", str(node.data_dir))
    assert out.returncode == 0, out.stderr
    assert "registrations: 1" in out.stdout and "sip:1001@127.0.0.1:7001" in out.stdout
    status = json.loads(meshsip("status", "--data-dir", str(node.data_dir), "--json").stdout)
    assert status["registrations"][0]["extension"] == "1001"
    assert status["node"]["sip_port"] == node.port
    assert node.stop() == 0
    assert "registered 1001 at sip:1001@127.0.0.1:7001" in node.log()
    assert "stopped" in node.log()
    assert not (node.data_dir / "control.sock").exists()


def test_status_without_a_node_says_so(tmp_path: Path) -> None:
    out = meshsip("status", "--data-dir", str(tmp_path))
    assert out.returncode == 1 and "no node is running" in out.stderr


def test_registrations_survive_a_restart(
    node: NodeProcess, start_node: NodeFactory, tmp_path: Path
) -> None:
    assert udp_exchange(node.port, register_msg("1001", 7001)) == 200
    assert node.stop() == 0
    again = start_node(tmp_path, port=node.port, data_dir=node.data_dir)
    assert "1 registrations restored" in again.log()
    status = json.loads(meshsip("status", "--data-dir", str(node.data_dir), "--json").stdout)
    assert [r["extension"] for r in status["registrations"]] == ["1001"]


def test_port_in_use_is_explained(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        n = NodeProcess(tmp_path, (), None, port=port)
        with pytest.raises(AssertionError, match="exited with 1"):
            n.start()
    assert "already in use" in n.log() and "Traceback" not in n.log()


def test_bad_config_is_explained(tmp_path: Path) -> None:
    config = tmp_path / "meshsip.toml"
    config.write_text("[sip]\nport = 'x'\n")
    out = meshsip("run", "--config", str(config), "--data-dir", str(tmp_path))
    assert out.returncode == 2
    assert "sip.port must be a whole number" in out.stderr and "Traceback" not in out.stderr


def test_register_over_tcp(node: NodeProcess) -> None:
    with socket.create_connection(("127.0.0.1", node.port), timeout=3) as s:
        s.sendall(register_msg("2001", s.getsockname()[1], transport="TCP"))
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(4096)
    reply = parse_message(data)
    assert isinstance(reply, Response) and reply.status == 200


def test_torture_messages_never_crash_the_node(node: NodeProcess) -> None:
    """Every RFC 4475 message and some garbage: bad requests get 400/505, the node lives on."""
    statuses: dict[str, int | None] = {}
    for path in sorted(TORTURE.glob("*.dat")):
        # Several messages share a branch: keep each its own transaction, not a retransmission.
        data = path.read_bytes().replace(b"z9hG4bK", b"z9hG4bK" + path.stem.encode())
        statuses[path.stem] = udp_exchange(node.port, data, timeout=0.3)
    for junk in (b"\x00" * 100, b"INVITE\r\n\r\n", os.urandom(1400), b"SIP/2.0 200 OK\r\n\r\n"):
        udp_exchange(node.port, junk, timeout=0.1)
    assert statuses["badvers"] == 505
    for name in ("lwsstart", "trws", "ltgtruri", "escruri", "mismatch01", "badaspec", "quotbal"):
        assert statuses[name] == 400, (name, statuses[name])
    assert statuses["zeromf"] == 483
    assert statuses["unkscm"] == 416
    assert statuses["bext01"] == 420
    assert node.proc.poll() is None, node.log()
    assert "Traceback" not in node.log()
    assert udp_exchange(node.port, options_msg("alive")) == 200
    status = json.loads(meshsip("status", "--data-dir", str(node.data_dir), "--json").stdout)
    assert status["counters"]["parse_errors"] >= 15


def counters(node: NodeProcess) -> dict[str, int]:
    out = meshsip("status", "--data-dir", str(node.data_dir), "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["counters"]


def test_a_response_that_is_not_ours_is_dropped_and_counted(node: NodeProcess) -> None:
    """RFC 4475 3.3.10: a 200 whose top Via is someone else's, the next one 255.255.255.255."""
    before = counters(node)
    bcast = (TORTURE / "bcast.dat").read_bytes()
    assert udp_exchange(node.port, bcast, timeout=0.5) is None
    own_ip_other_port = bcast.replace(b"192.0.2.198", b"127.0.0.1:9")
    assert udp_exchange(node.port, own_ip_other_port, timeout=0.5) is None
    after = counters(node)
    assert after["responses_not_ours"] == before["responses_not_ours"] + 2
    assert after["stray_responses"] == before["stray_responses"] + 2  # they did arrive
    assert after["sent"] == before["sent"] and after["send_errors"] == before["send_errors"]


def request_msg(method: str, uri: str, branch: str) -> bytes:
    return (
        f"{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{branch}\r\n"
        f"From: <sip:probe@127.0.0.1>;tag=p\r\nTo: <{uri}>\r\nCall-ID: {branch}\r\n"
        f"CSeq: 1 {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def test_an_unknown_method_for_the_box_gets_405_and_for_a_phone_is_proxied(
    node: NodeProcess,
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(3.0)
        s.sendto(request_msg("FROB", "sip:127.0.0.1", "frob1"), ("127.0.0.1", node.port))
        reply = parse_message(s.recv(65535))
    assert isinstance(reply, Response) and reply.status == 405
    assert "INVITE" in (reply.get("Allow") or "") and "FROB" not in (reply.get("Allow") or "")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phone:
        phone.bind(("127.0.0.1", 0))
        phone.settimeout(3.0)
        port = phone.getsockname()[1]
        assert udp_exchange(node.port, register_msg("4001", port)) == 200
        uri = f"sip:4001@127.0.0.1:{node.port}"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.sendto(request_msg("FROB", uri, "frob2"), ("127.0.0.1", node.port))
            forwarded = parse_message(phone.recv(65535))
    assert not isinstance(forwarded, Response) and forwarded.method == "FROB"
    assert str(forwarded.uri) == f"sip:4001@127.0.0.1:{port}"


@pytest.mark.parametrize("how", ["flag", "file"])
@pytest.mark.parametrize("name", ["café", "x" * 65, "a b", "a;b=c", 'a"b', ""])
def test_a_bad_overlay_name_is_explained(tmp_path: Path, how: str, name: str) -> None:
    """(Before one rule, "café" and 65 characters passed the config and the node died at
    start with a traceback from the wire codec.)"""
    if how == "flag":
        args = ["--overlay", name]
    else:
        config = tmp_path / "meshsip.toml"
        config.write_text(f"[overlay]\nname = {json.dumps(name)}\n", encoding="utf-8")
        args = ["--config", str(config)]
    out = meshsip("run", "--bind", "127.0.0.1", "--sip-port", "0", "--no-discovery",
                  "--data-dir", str(tmp_path), *args)
    assert out.returncode == 2, out.stderr
    assert "overlay name" in out.stderr and "ASCII letters, digits" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_valid_unusual_overlay_name_starts(start_node: NodeFactory, tmp_path: Path) -> None:
    name = "Relief-2024.north_camp." + "x" * 41  # 64 characters, dots, case, '-' and '_'
    node = start_node(tmp_path, "--overlay", name)
    assert udp_exchange(node.port, options_msg("named")) == 200
    status = json.loads(meshsip("status", "--data-dir", str(node.data_dir), "--json").stdout)
    assert status["overlay"]["overlay"] == name
    assert "Traceback" not in node.log()
