"""`meshsip ca init/issue/revoke`: the files, their modes, idempotency and errors."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from appliance.cli import main
from appliance.config import Config
from appliance.pki import deployment_ca, trust_summary
from overlay.identity import (
    CertificateAuthority,
    NodeIdentity,
    certificate_name,
    create_ca,
    node_id_of_serial,
)
from overlay.revocation import Crl, CrlError, make_crl


def ca_cmd(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str]:
    code = main(["ca", *map(str, args)])
    out, err = capsys.readouterr()
    return code, (out + err).strip()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_makes_a_ca_and_never_overwrites_it(tmp_path, capsys):
    code, said = ca_cmd(capsys, "init", tmp_path / "ca", "--name", "Relief North")
    assert code == 0 and len(said.splitlines()) == 1 and "Relief North" in said
    assert mode(tmp_path / "ca" / "ca.key") == 0o600
    ca = CertificateAuthority.load(tmp_path / "ca")
    assert certificate_name(ca.certificate) == "Relief North"
    before = (tmp_path / "ca" / "ca.key").read_bytes()
    code, said = ca_cmd(capsys, "init", tmp_path / "ca")
    assert code == 1 and "refusing to overwrite" in said and "Traceback" not in said
    assert (tmp_path / "ca" / "ca.key").read_bytes() == before


def test_issue_writes_a_working_ca_mode_data_dir_and_is_idempotent(tmp_path, capsys):
    ca_dir, node_dir = tmp_path / "ca", tmp_path / "box"
    assert ca_cmd(capsys, "init", ca_dir)[0] == 0
    code, said = ca_cmd(capsys, "issue", ca_dir, "--out", node_dir, "--name", "school gym")
    assert code == 0 and "school gym" in said
    assert mode(node_dir / "node.key") == 0o600
    assert (node_dir / "ca.crt").read_bytes() == (ca_dir / "ca.crt").read_bytes()
    # No config at all: DATA_DIR/ca.crt switches CA mode on.
    config = Config(data_dir=node_dir)
    identity = NodeIdentity.load(node_dir, ca_cert=deployment_ca(config))
    assert identity.mode == "ca" and "only boxes certified by" in trust_summary(identity)
    assert certificate_name(identity.certificate) == "school gym"
    assert node_id_of_serial(identity.certificate.serial_number) == identity.node_id
    key = (node_dir / "node.key").read_bytes()
    assert ca_cmd(capsys, "issue", ca_dir, "--out", node_dir)[0] == 0
    assert (node_dir / "node.key").read_bytes() == key  # same key, same Node-ID
    again = NodeIdentity.load(node_dir, ca_cert=deployment_ca(config))
    assert again.node_id == identity.node_id
    assert "any box" in trust_summary(NodeIdentity.load(tmp_path / "open"))
    assert deployment_ca(Config(data_dir=tmp_path / "open")) is None


def test_issue_errors_are_plain(tmp_path, capsys):
    code, said = ca_cmd(capsys, "issue", tmp_path / "nothing", "--out", tmp_path / "box")
    assert code == 1 and "does not exist" in said and "Traceback" not in said
    assert ca_cmd(capsys, "init", tmp_path / "ca")[0] == 0
    (tmp_path / "box").mkdir()
    (tmp_path / "box" / "node.key").write_text("not a key")
    code, said = ca_cmd(capsys, "issue", tmp_path / "ca", "--out", tmp_path / "box")
    assert code == 1 and "corrupt" in said
    with pytest.raises(SystemExit) as usage:
        main(["ca", "issue", str(tmp_path / "ca")])  # no --out
    assert usage.value.code == 2


def read_crl(path: Path) -> x509.CertificateRevocationList:
    return x509.load_pem_x509_crl(path.read_bytes())


def test_revoke_numbers_and_accumulates(tmp_path, capsys):
    ca_dir = tmp_path / "ca"
    assert ca_cmd(capsys, "init", ca_dir)[0] == 0
    for box in ("a", "b"):
        assert ca_cmd(capsys, "issue", ca_dir, "--out", tmp_path / box)[0] == 0
    code, said = ca_cmd(capsys, "revoke", ca_dir, tmp_path / "a" / "node.crt")
    assert code == 0 and "CRL number 1" in said
    assert ca_cmd(capsys, "revoke", ca_dir, tmp_path / "b")[0] == 0  # a data dir will do
    ca = CertificateAuthority.load(ca_dir)
    crl = Crl.verified((ca_dir / "revoked.crl").read_bytes(), ca.certificate)
    ids = {NodeIdentity.load(tmp_path / b, ca_cert=ca_dir / "ca.crt").node_id for b in "ab"}
    assert crl.number == 2 and crl.node_ids == ids
    code, said = ca_cmd(capsys, "revoke", ca_dir, tmp_path / "b")
    assert code == 0 and "already revoked" in said
    assert Crl.verified((ca_dir / "revoked.crl").read_bytes(), ca.certificate).number == 2
    # A revoked key is not certified again.
    code, said = ca_cmd(capsys, "issue", ca_dir, "--out", tmp_path / "a")
    assert code == 1 and "revoked" in said


def test_revoke_refuses_a_foreign_certificate(tmp_path, capsys):
    assert ca_cmd(capsys, "init", tmp_path / "ca")[0] == 0
    assert ca_cmd(capsys, "init", tmp_path / "other")[0] == 0
    assert ca_cmd(capsys, "issue", tmp_path / "other", "--out", tmp_path / "x")[0] == 0
    code, said = ca_cmd(capsys, "revoke", tmp_path / "ca", tmp_path / "x" / "node.crt")
    assert code == 1 and "not issued by" in said
    assert not (tmp_path / "ca" / "revoked.crl").exists()
    code, said = ca_cmd(capsys, "revoke", tmp_path / "ca", tmp_path / "missing.crt")
    assert code == 1 and "cannot read" in said


def test_a_crl_of_another_ca_or_garbage_is_refused():
    ca, other = create_ca(), create_ca()
    foreign = make_crl(other, [5], 9).public_bytes(Encoding.DER)
    with pytest.raises(CrlError) as exc:
        Crl.verified(foreign, ca.certificate)
    assert exc.value.reason == "crl_foreign"
    with pytest.raises(CrlError) as exc:
        Crl.verified(b"\x30\x03junk", ca.certificate)
    assert exc.value.reason == "crl_malformed"
    good = Crl.verified(make_crl(ca, [5], 3).public_bytes(Encoding.DER), ca.certificate)
    assert good.number == 3 and good.serials == {5} and good.node_ids == frozenset()

