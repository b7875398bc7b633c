"""Build a qemu-system command line from a VM spec. Pure: spec in, argv out (golden-tested).

Only ids, numbers and paths under VoidVM's own data directory reach the command line. Paths are
still escaped (QEMU splits option values on commas; a doubled comma is a literal one).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from voidvm_server.drivers.base import VMSpec


@dataclass(frozen=True)
class RunPaths:
    run_dir: Path

    @property
    def disk(self) -> Path:
        return self.run_dir / "disk.qcow2"

    @property
    def qmp(self) -> Path:
        return self.run_dir / "qmp.sock"

    @property
    def serial(self) -> Path:
        return self.run_dir / "serial.sock"

    @property
    def vnc(self) -> Path:
        return self.run_dir / "vnc.sock"

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "qemu.pid"

    @property
    def console_log(self) -> Path:
        return self.run_dir / "console.log"


def qemu_escape(value: str) -> str:
    return value.replace(",", ",,")


def build_argv(
    spec: VMSpec,
    paths: RunPaths,
    *,
    binary: str,
    accel: str,
    net_fd: int | None,
    standalone: bool = False,
) -> list[str]:
    """`net_fd`: QEMU's end of a socket pair whose other end passt holds; None when the VM gets
    QEMU's own user-mode network, restricted (no host, no outside: see guest_network.py).

    VoidVM's QEMU waits (`-S`) until the driver records its serial console, which then saves the
    log (drivers/qemu/console.py). `standalone` is the bare QEMU the benchmarks compare against:
    it runs at once and writes the serial log itself, unbounded."""
    media = spec.media
    serial = f"socket,id=serial0,path={qemu_escape(str(paths.serial))},server=on,wait=off"
    if standalone:
        serial += f",logfile={qemu_escape(str(paths.console_log))},logappend=on"
    argv = [
        binary,
        "-name", f"guest={spec.vm_id},debug-threads=on",
        "-machine", "q35",
        "-accel", accel,
        "-cpu", "host" if accel == "kvm" else "max",
        "-smp", str(spec.cpu),
        "-m", str(spec.memory_mb),
        "-nodefaults",
        "-no-user-config",
        "-display", "none",
        "-vga", "none",
        "-daemonize",
        *([] if standalone else ["-S"]),
        "-pidfile", str(paths.pidfile),
        "-qmp", f"unix:{qemu_escape(str(paths.qmp))},server=on,wait=off",
        "-chardev", serial,
        "-serial", "chardev:serial0",
        "-device", "virtio-vga",
        "-vnc", f"unix:{qemu_escape(str(paths.vnc))}",
    ]  # fmt: skip
    if media.kernel is not None:
        argv += ["-kernel", str(media.kernel)]
        if media.initrd is not None:
            argv += ["-initrd", str(media.initrd)]
        if media.kernel_cmdline:
            argv += ["-append", media.kernel_cmdline]
    # A write that finds the host's disk full pauses the guest (QMP BLOCK_IO_ERROR, then STOP)
    # and is retried on resume; the guest never sees it fail. Read errors reach the guest.
    argv += [
        "-drive",
        f"file={qemu_escape(str(paths.disk))},if=none,id=disk0,format=qcow2,"
        "cache=none,aio=threads,discard=unmap,werror=enospc,rerror=report",
        "-device", "virtio-blk-pci,drive=disk0,bootindex=1",
    ]  # fmt: skip
    if media.cdrom is not None:
        argv += [
            "-drive",
            f"file={qemu_escape(str(media.cdrom))},if=none,id=cd0,media=cdrom,readonly=on,format=raw",
            "-device", "ide-cd,drive=cd0,bootindex=2",
        ]  # fmt: skip
    if net_fd is not None:
        netdev = f"stream,id=net0,server=off,addr.type=fd,addr.str={net_fd}"
    else:
        netdev = "user,id=net0,restrict=on"
        if spec.ssh_port is not None:
            netdev += f",hostfwd=tcp:127.0.0.1:{spec.ssh_port}-:22"
    # No option ROM: VMs boot from their disk or kernel, never by PXE, and the ROM costs boot time.
    argv += ["-netdev", netdev, "-device", "virtio-net-pci,netdev=net0,romfile="]
    return argv
