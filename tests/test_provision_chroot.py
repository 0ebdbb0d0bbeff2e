"""The playbook applied through the community.general.chroot connection to a Debian 12
minbase root built with mmdebstrap, with its defaults alone: it succeeds, a second run
changes nothing, and the root then holds a node ready to boot (enabled unit, config, user,
certificate with a 0600 key and no CA key, a working `meshsip` command).

Minutes long: marked `provision`, run by `make test-provision` (not `make test`).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from provkit import ansible, rootfs

pytestmark = [
    pytest.mark.provision,
    pytest.mark.skipif(ansible.ansible_missing() is not None,
                       reason=str(ansible.ansible_missing())),
    pytest.mark.skipif(rootfs.missing() is not None, reason=str(rootfs.missing())),
]


def chroot_inventory(tmp_path: Path, root: Path) -> Path:
    inventory = tmp_path / "inventory" / "hosts.json"
    inventory.parent.mkdir()
    inventory.write_text(json.dumps({"all": {"hosts": {"box1": {
        "ansible_host": str(root), "ansible_connection": "community.general.chroot"}}}}))
    return inventory


def test_playbook_applied_twice_to_a_debian_root(tmp_path: Path) -> None:
    root = rootfs.fresh_root(tmp_path / "root")
    inventory = chroot_inventory(tmp_path, root)
    wheelhouse = tmp_path / "wheelhouse"
    args = ("-e", f"meshsip_node_wheelhouse_dir={wheelhouse}")

    first = ansible.playbook(inventory, *args)
    assert first.returncode == 0, first.output[-6000:]
    second = ansible.playbook(inventory, *args)
    assert second.returncode == 0, second.output[-6000:]
    assert second.recap("box1")["changed"] == 0, second.changed_tasks()
    # In a chroot services are enabled, never started: the restart handler ran and skipped.
    handler = first.output.split("RUNNING HANDLER [meshsip_node : Restart meshsip]", 1)
    assert len(handler) == 2 and handler[1].split("\n", 2)[1].startswith("skipping:"), \
        first.output[-3000:]

    unit = root / "etc/systemd/system/meshsip.service"
    assert "ExecStart=/opt/meshsip/bin/meshsip run --config /etc/meshsip/meshsip.toml" \
        in unit.read_text()
    verify = subprocess.run(["systemd-analyze", "verify", f"--root={root}",
                             "/etc/systemd/system/meshsip.service"],
                            capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    security = subprocess.run(["systemd-analyze", "security", "--offline=true", f"--root={root}",
                               "meshsip.service"], capture_output=True, text=True, timeout=120)
    exposure = security.stdout.strip().splitlines()[-1] if security.stdout.strip() else "?"
    wants = root / "etc/systemd/system/multi-user.target.wants/meshsip.service"
    assert wants.is_symlink() and os.readlink(wants) == "/etc/systemd/system/meshsip.service"
    assert 'name = "meshsip"' in (root / "etc/meshsip/meshsip.toml").read_text()
    passwd = (root / "etc/passwd").read_text()
    user = next(line.split(":") for line in passwd.splitlines() if line.startswith("meshsip:"))
    data = root / "var/lib/meshsip"
    key = (data / "node.key").stat()
    assert stat.S_IMODE(key.st_mode) == 0o600 and key.st_uid == int(user[2])
    assert (data / "node.crt").exists() and (data / "ca.crt").exists()
    assert not [p for p in root.rglob("ca.key")], "a CA key reached the box"
    assert (tmp_path / "inventory/pki/ca/ca.key").exists()  # it stays on the controller
    done = subprocess.run(["/usr/sbin/chroot", str(root), "/opt/meshsip/bin/meshsip", "--help"],
                          capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert done.returncode == 0 and "usage: meshsip" in done.stdout, done.stderr

    size = sum(f.stat().st_size for f in wheelhouse.glob("*/*.whl"))
    print(f"provision figures: first run {first.seconds:.0f} s, second run "
          f"{second.seconds:.0f} s (changed=0), wheelhouse {size / 2**20:.1f} MiB; "
          f"systemd-analyze security: {exposure}")
