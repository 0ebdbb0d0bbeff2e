"""Built images under qemu (TCG) on the namespace test bed: a disk from the published .xz
(through its .bmap), files written onto the FAT partition with mtools (no mount), a VM whose
NIC is a tap on the bed's hub bridge, a DHCP server (dnsmasq) in a bed host, and SIP OPTIONS
and HTTP asked from a bed host."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

from meshbed import stop_process
from phones.nsexec import in_netns, ns_argv, ns_connect

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "image-build" / "out"
OVMF = Path("/usr/share/ovmf/OVMF.fd")


def published(arch: str) -> Path | None:
    """The newest built image for arch (image-build/out/meshsip-*-ARCH.img.xz), if any."""
    found = sorted(OUT.glob(f"meshsip-*-{arch}.img.xz"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def missing_tools(*tools: str) -> str | None:
    absent = [t for t in tools if shutil.which(t) is None]
    return f"not installed: {', '.join(absent)} (make apt-image)" if absent else None


def disk_from(xz: Path, dest: Path, grow_mib: int = 512) -> Path:
    """The raw disk a card would hold: bmaptool copy (checks the .bmap), then a bigger
    'card' so first boot has a root to grow."""
    subprocess.run(["bmaptool", "-q", "copy", str(xz), str(dest)], check=True, timeout=900)
    with open(dest, "r+b") as f:
        f.truncate(dest.stat().st_size + grow_mib * 2**20)
    return dest


def partitions(disk: Path) -> list[dict[str, object]]:
    out = subprocess.run(["sfdisk", "-J", str(disk)], check=True, capture_output=True,
                         text=True, timeout=30).stdout
    table = json.loads(out)["partitiontable"]
    return [dict(p, label_type=table["label"]) for p in table["partitions"]]


def fat_spec(disk: Path) -> str:
    """mtools' name for the first partition: IMAGE@@BYTE_OFFSET."""
    return f"{disk}@@{int(partitions(disk)[0]['start']) * 512}"


def fat_write(disk: Path, name: str, text: str) -> None:
    src = disk.parent / f".{name}.{os.getpid()}"
    src.write_text(text)
    try:
        subprocess.run(["mcopy", "-o", "-i", fat_spec(disk), str(src), f"::{name}"],
                       check=True, timeout=30)
    finally:
        src.unlink()


def fat_read(disk: Path, name: str) -> bytes:
    return subprocess.run(["mtype", "-i", fat_spec(disk), f"::{name}"], check=True,
                          capture_output=True, timeout=30).stdout


def fat_list(disk: Path) -> list[str]:
    out = subprocess.run(["mdir", "-b", "-i", fat_spec(disk), "::/"], check=True,
                         capture_output=True, text=True, timeout=30).stdout
    return [line.strip().removeprefix("::/").rstrip("/") for line in out.splitlines()
            if line.strip()]


class Dhcp:
    """dnsmasq (DHCP only, no DNS) in a bed host, handing out pinned addresses by MAC."""

    def __init__(self, netns: str, workdir: Path, pinned: dict[str, str]) -> None:
        self.log = workdir / "dnsmasq.log"
        workdir.mkdir(parents=True, exist_ok=True)
        argv = [*ns_argv(netns), "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
                "--port=0", "--no-resolv", "--no-hosts", "--interface=eth0",
                "--bind-interfaces", "--user=root", "--log-dhcp",
                f"--log-facility={self.log}", f"--dhcp-leasefile={workdir / 'leases'}",
                f"--pid-file={workdir / 'dnsmasq.pid'}",
                "--dhcp-range=10.99.2.100,10.99.2.200,255.255.0.0,1h",
                *(f"--dhcp-host={mac},{ip}" for mac, ip in pinned.items())]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def acked(self, ip: str) -> bool:
        return self.log.exists() and any("DHCPACK" in line and ip in line
                                         for line in self.log.read_text().splitlines())

    def stop(self) -> None:
        stop_process(self.proc, timeout=5)


class Vm:
    """qemu (TCG) booting a disk, its NIC a tap on the bed's bridge (in the hub namespace),
    its serial console in a file."""

    def __init__(self, hub: str, index: int, disk: Path, workdir: Path, arch: str = "amd64",
                 kernel: tuple[Path, Path, str] | None = None, memory_mib: int = 1024) -> None:
        self.hub, self.disk, self.arch = hub, disk, arch
        self.tap = f"imtap{index}"
        self.mac = f"52:54:00:99:02:{index:02x}"
        self.console = workdir / f"console-{index}.log"
        self.kernel = kernel
        self.memory_mib = memory_mib
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def argv(self) -> list[str]:
        net = ["-netdev", f"tap,id=n0,ifname={self.tap},script=no,downscript=no",
               "-device", f"virtio-net-pci,netdev=n0,mac={self.mac}"]
        common = ["-accel", "tcg", "-m", str(self.memory_mib), "-smp", "1", "-display", "none",
                  "-serial", f"file:{self.console}", "-monitor", "none", "-no-reboot",
                  "-drive", f"file={self.disk},format=raw,if=virtio", *net]
        if self.arch == "amd64":
            return ["qemu-system-x86_64", "-machine", "q35", "-bios", str(OVMF), "-vga", "none",
                    *common]
        assert self.kernel is not None
        kernel, initrd, append = self.kernel
        return ["qemu-system-aarch64", "-machine", "virt", "-cpu", "cortex-a72",
                "-kernel", str(kernel), "-initrd", str(initrd), "-append", append, *common]

    def start(self) -> Vm:
        for cmd in (["tuntap", "add", "dev", self.tap, "mode", "tap"],
                    ["link", "set", self.tap, "master", "br0", "up"]):
            subprocess.run(["ip", "-n", self.hub, *cmd], check=True, timeout=10)
        self.started = time.monotonic()
        self.proc = subprocess.Popen([*ns_argv(self.hub), *self.argv()],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(self.console.with_suffix(".qemu"), "wb"))
        return self

    def console_tail(self, chars: int = 4000) -> str:
        text = self.console.read_text(errors="replace") if self.console.exists() else ""
        qemu = self.console.with_suffix(".qemu")
        err = qemu.read_text(errors="replace") if qemu.exists() else ""
        return f"--- console {self.console.name} ---\n{text[-chars:]}\n--- qemu ---\n{err}"

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=10)
        subprocess.run(["ip", "-n", self.hub, "link", "del", self.tap], timeout=10,
                       stderr=subprocess.DEVNULL)


def sip_options(netns: str, src: str, dst: str, port: int = 5060,
                timeout: float = 2.0) -> str | None:
    """One SIP OPTIONS over UDP from src (in netns) to dst; the status line, or None."""
    def ask() -> str | None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((src, 0))
            s.settimeout(timeout)
            lport, call_id = s.getsockname()[1], uuid.uuid4().hex
            msg = (f"OPTIONS sip:{dst}:{port} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP {src}:{lport};branch=z9hG4bK{call_id[:16]};rport\r\n"
                   f"Max-Forwards: 70\r\nFrom: <sip:probe@{src}>;tag={call_id[:8]}\r\n"
                   f"To: <sip:{dst}>\r\nCall-ID: {call_id}@{src}\r\nCSeq: 1 OPTIONS\r\n"
                   f"Contact: <sip:probe@{src}:{lport}>\r\nContent-Length: 0\r\n\r\n")
            s.sendto(msg.encode(), (dst, port))
            try:
                data = s.recv(65535)
            except (TimeoutError, OSError):
                return None
            return data.split(b"\r\n", 1)[0].decode(errors="replace")
    return in_netns(netns, ask)


def http_json(netns: str, host: str, port: int, path: str, timeout: float = 5.0) -> object:
    """GET http://host:port/path from netns, parsed as JSON."""
    with ns_connect(netns, (host, port), timeout) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n", 1)[0]:
        raise OSError(f"GET {path}: {head.splitlines()[0]!r}")
    return json.loads(body)


def wait_until(what: str, check, timeout: float, vms: list[Vm], poll: float = 2.0):  # noqa: ANN001, ANN201
    """check()'s first truthy value; fails with the consoles after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except OSError:
            value = None
        if value:
            return value
        for vm in vms:
            if vm.proc is not None and vm.proc.poll() is not None:
                raise AssertionError(f"{what}: qemu exited\n{vm.console_tail()}")
        if time.monotonic() > deadline:
            tails = "\n".join(vm.console_tail() for vm in vms)
            raise AssertionError(f"{what}: not within {timeout:.0f}s\n{tails}")
        time.sleep(poll)
