"""Real `meshsip` processes on loopback in CA mode with box-to-box traffic over TLS only
(`transport = "tcp"`): the certified boxes form one ring over mutual TLS 1.3 and store a
phone's record on it; a box certified by another CA, seeded with a certified box, cannot
complete a single TLS handshake and stays alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from marks import NEEDS_SIPP
from phones.node import NodeFactory, NodeProcess
from phones.ports import free_port
from phones.sipp import run_sipp
from test_mesh_loopback import one_ring, status, wait_for

from overlay.identity import (
    CA_CERT_FILE,
    CERT_FILE,
    KEY_FILE,
    CertificateAuthority,
    create_ca,
    issue_node_certificate,
    load_or_create_key,
)

pytestmark = [pytest.mark.phones, NEEDS_SIPP]


def certified(start_node: NodeFactory, tmp_path: Path, ca: CertificateAuthority, name: str,
              *args: str) -> NodeProcess:
    """A node whose key the CA certified before its first start."""
    data = tmp_path / name
    key = load_or_create_key(data / KEY_FILE)
    cert = issue_node_certificate(ca, key.public_key())
    (data / CERT_FILE).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    ca_dir = tmp_path / f"ca-{name}"
    ca.save(ca_dir)
    config = (f'[overlay]\ntransport = "tcp"\nca_cert = "{ca_dir / CA_CERT_FILE}"\n'
              '[sip]\nt1_ms = 200\n')
    return start_node(tmp_path, "--overlay", "tls", *args, config=config, data_dir=data)


def test_certified_boxes_ring_over_tls_and_a_stranger_cannot_join(start_node: NodeFactory,
                                                                  tmp_path: Path) -> None:
    ca = create_ca()
    first = certified(start_node, tmp_path, ca, "a")
    seed = ("--seed", f"127.0.0.1:{first.port}")
    ring = [first] + [certified(start_node, tmp_path, ca, n, *seed) for n in ("b", "c")]
    stranger = certified(start_node, tmp_path, create_ca(), "x", *seed)
    wait_for("a ring of three", lambda: one_ring(ring), ring)
    ok = run_sipp("register", first.target, service="4001",
                  keys={"contact_port": str(free_port())}, workdir=tmp_path)
    assert ok.returncode == 0, ok.logs
    wait_for("the record of 4001 stored with replicas",
             lambda: sum(status(n)["overlay"]["records_stored"] for n in ring) >= 3, ring)
    wait_for("the stranger's handshakes refused",
             lambda: status(stranger)["counters"]["tls_failures"] > 0, [first, stranger])
    alone = status(stranger)["overlay"]
    assert alone["successors"] == [] and alone["records_stored"] == 0, alone
    for node in ring:
        s = status(node)
        assert s["overlay"]["mode"] == "ca"
        assert s["overlay"]["counters"]["link_refused"] == 0
        assert s["counters"]["connections_total"] > 0
        assert all(f"@127.0.0.1:{stranger.port}" not in ref
                   for ref in s["overlay"]["successors"] + [s["overlay"]["predecessor"]])
    assert sum(status(n)["counters"]["tls_failures"] for n in ring) > 0
