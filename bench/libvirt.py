"""libvirt as a peer: install it from Debian, run `libvirtd` + `virtlogd` for one benchmark, stop them.

Without systemd, libvirtd needs a `libvirt-qemu` user to exist (it resolves its built-in default
before reading qemu.conf) and, to run QEMU as root with no security driver, a qemu.conf saying so.
Both are put in place for the run and removed (or restored) afterwards. A libvirtd that was already
running is used as it is and left running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

from bench.common import ensure_debian_packages, is_root, kill_qemu_under, log

URI = "qemu:///system"
PACKAGES = ["libvirt-daemon", "libvirt-daemon-driver-qemu", "libvirt-clients"]
QEMU_CONF = Path("/etc/libvirt/qemu.conf")
OUR_QEMU_CONF = """\
# Written by VoidVM's bench/libvirt.py for a benchmark run; removed (or restored) afterwards.
user = "root"
group = "root"
dynamic_ownership = 0
security_driver = "none"
"""
SOCKET = Path("/run/libvirt/libvirt-sock")


class LibvirtUnavailable(Exception):
    """libvirt cannot run here; the message says why (shown instead of its numbers)."""


@dataclass
class Libvirt:
    workdir: Path
    domains: list[str] = field(default_factory=list)

    def virsh(self, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["virsh", "-q", "-c", URI, *args], capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"virsh {' '.join(args)}: {result.stderr.strip()}")
        return result

    def define(self, name: str, xml: str) -> None:
        path = self.workdir / f"{name}.xml"
        path.write_text(xml)
        self.virsh("define", str(path))
        self.domains.append(name)

    def pid(self, name: str) -> int:
        return int(Path(f"/run/libvirt/qemu/{name}.pid").read_text().strip())

    def destroy(self, name: str) -> None:
        self.virsh("destroy", name, check=False)

    def cleanup(self) -> None:
        for name in self.domains:
            self.virsh("destroy", name, check=False)
            self.virsh("undefine", name, "--nvram", check=False)
            self.virsh("undefine", name, check=False)
        self.domains.clear()


def domain_xml(
    name: str,
    *,
    kernel: Path,
    initrd: Path,
    cmdline: str,
    memory_mb: int,
    cpus: int,
    accel: str,
    disk: Path,
    console_log: Path,
    vnc_socket: Path,
) -> str:
    """The tiny guest as libvirt runs it: same kernel, initrd, cmdline, memory, q35, accelerator,
    disk, user-mode network and video as VoidVM, with libvirt's own defaults for the rest."""
    kind = "kvm" if accel == "kvm" else "qemu"
    cpu = "<cpu mode='host-passthrough'/>" if accel == "kvm" else "<cpu mode='maximum'/>"
    e = escape
    return f"""<domain type='{kind}'>
  <name>{e(name)}</name>
  <memory unit='MiB'>{memory_mb}</memory>
  <vcpu>{cpus}</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{e(str(kernel))}</kernel>
    <initrd>{e(str(initrd))}</initrd>
    <cmdline>{e(cmdline)}</cmdline>
  </os>
  <features><acpi/></features>
  {cpu}
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none' io='threads' discard='unmap'/>
      <source file='{e(str(disk))}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='user'><model type='virtio'/></interface>
    <serial type='file'><source path='{e(str(console_log))}'/><target port='0'/></serial>
    <graphics type='vnc'><listen type='socket' socket='{e(str(vnc_socket))}'/></graphics>
    <video><model type='virtio'/></video>
  </devices>
</domain>
"""


def _responsive() -> bool:
    if not SOCKET.exists():
        return False
    with contextlib.suppress(subprocess.TimeoutExpired, OSError):
        result = subprocess.run(["virsh", "-c", URI, "version"], capture_output=True, timeout=60)
        return result.returncode == 0
    return False


def _stop_daemon(pidfile: Path, name: str) -> None:
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.05)
    if Path(f"/proc/{pid}").exists():
        log(f"{name} ignored SIGTERM; killing it")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextmanager
def libvirt_daemon(workdir: Path) -> Iterator[Libvirt]:
    """libvirtd + virtlogd for the duration of the block. Raises LibvirtUnavailable."""
    if not is_root():
        raise LibvirtUnavailable("not root: libvirt needs root to install and to run its system daemon")
    problem = ensure_debian_packages(PACKAGES, ["libvirtd", "virtlogd", "virsh"])
    if problem:
        raise LibvirtUnavailable(problem)
    lv = Libvirt(workdir)
    with contextlib.ExitStack() as stack:
        stack.callback(kill_qemu_under, workdir)
        if _responsive():
            log("using the libvirtd that is already running (it stays running)")
        else:
            _prepare_host(stack)
            for name in ("virtlogd", "libvirtd"):
                pidfile = workdir / f"{name}.pid"
                subprocess.run([name, "-d", "--pid-file", str(pidfile)], check=True, timeout=30)
                stack.callback(_stop_daemon, pidfile, name)
            deadline = time.monotonic() + 90  # the first connection probes QEMU's capabilities
            while not _responsive():
                if time.monotonic() > deadline:
                    raise LibvirtUnavailable("libvirtd did not answer; see /var/log/libvirt/libvirtd.log")
                time.sleep(0.2)
        stack.callback(lv.cleanup)
        yield lv


def _prepare_host(stack: contextlib.ExitStack) -> None:
    for directory in ("/var/log/libvirt", "/var/lib/libvirt/qemu", "/var/cache/libvirt", "/run/libvirt"):
        Path(directory).mkdir(parents=True, exist_ok=True)
    if subprocess.run(["getent", "passwd", "libvirt-qemu"], capture_output=True).returncode != 0:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/var/lib/libvirt",
                "--shell",
                "/usr/sbin/nologin",
                "libvirt-qemu",
            ],
            check=True,
            timeout=30,
        )
        stack.callback(subprocess.run, ["userdel", "libvirt-qemu"], capture_output=True, timeout=30)
    previous = QEMU_CONF.read_text() if QEMU_CONF.exists() else None
    QEMU_CONF.parent.mkdir(parents=True, exist_ok=True)
    QEMU_CONF.write_text(OUR_QEMU_CONF)
    if previous is None:
        stack.callback(QEMU_CONF.unlink, missing_ok=True)
    else:
        stack.callback(QEMU_CONF.write_text, previous)
