"""Golden tests of drivers/qemu/cmdline.build_argv: a spec in, the exact argv out."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tests.conftest import auth, make_settings, running_api
from voidvm_server.config import Settings
from voidvm_server.drivers.base import BootMedia, VMSpec
from voidvm_server.drivers.fake import FakeDriver
from voidvm_server.drivers.qemu.cmdline import RunPaths, build_argv, qemu_escape

RUN = Path("/var/lib/voidvm/vms/vm-0123456789ab")
IMAGES = Path("/var/lib/voidvm/images")


def common(*, accel: str = "tcg", cpu: int = 2, memory: int = 1024) -> list[str]:
    """The machine: everything before the sockets."""
    return [
        "qemu-system-x86_64",
        "-name", "guest=vm-0123456789ab,debug-threads=on",
        "-machine", "q35",
        "-accel", accel,
        "-cpu", "host" if accel == "kvm" else "max",
        "-smp", str(cpu),
        "-m", str(memory),
        "-nodefaults",
        "-no-user-config",
        "-display", "none",
        "-vga", "none",
        "-daemonize",
        "-S",
    ]  # fmt: skip


def sockets(run: str, escaped: str) -> list[str]:
    return [
        "-pidfile", f"{run}/qemu.pid",
        "-qmp", f"unix:{escaped}/qmp.sock,server=on,wait=off",
        "-chardev", f"socket,id=serial0,path={escaped}/serial.sock,server=on,wait=off",
        "-serial", "chardev:serial0",
        "-device", "virtio-vga",
        "-vnc", f"unix:{escaped}/vnc.sock",
    ]  # fmt: skip


def disk(escaped: str) -> list[str]:
    return [
        "-drive",
        f"file={escaped}/disk.qcow2,if=none,id=disk0,format=qcow2,cache=none,aio=threads,discard=unmap,"
        "werror=enospc,rerror=report",
        "-device", "virtio-blk-pci,drive=disk0,bootindex=1",
    ]  # fmt: skip


def passt_net(fd: int) -> list[str]:
    """The guest's network card talks to passt, which holds the other end of the socket `fd`."""
    return ["-netdev", f"stream,id=net0,server=off,addr.type=fd,addr.str={fd}",
            "-device", "virtio-net-pci,netdev=net0,romfile="]  # fmt: skip


def restricted_net(ssh_port: int | None) -> list[str]:
    """Without passt: QEMU's user-mode network cut off from the host and the outside."""
    netdev = "user,id=net0,restrict=on" + (f",hostfwd=tcp:127.0.0.1:{ssh_port}-:22" if ssh_port else "")
    return ["-netdev", netdev, "-device", "virtio-net-pci,netdev=net0,romfile="]


def test_kernel_image() -> None:
    media = BootMedia(
        kernel=IMAGES / "img-aaaaaaaaaaaa/vmlinuz",
        initrd=IMAGES / "img-aaaaaaaaaaaa/initrd.img",
        kernel_cmdline="console=ttyS0 quiet panic=-1",
    )
    spec = VMSpec("vm-0123456789ab", 2, 1024, media, 22022)
    argv = build_argv(spec, RunPaths(RUN), binary="qemu-system-x86_64", accel="tcg", net_fd=7)
    assert argv == [
        "qemu-system-x86_64",
        "-name", "guest=vm-0123456789ab,debug-threads=on",
        "-machine", "q35",
        "-accel", "tcg",
        "-cpu", "max",
        "-smp", "2",
        "-m", "1024",
        "-nodefaults",
        "-no-user-config",
        "-display", "none",
        "-vga", "none",
        "-daemonize",
        "-S",
        "-pidfile", "/var/lib/voidvm/vms/vm-0123456789ab/qemu.pid",
        "-qmp", "unix:/var/lib/voidvm/vms/vm-0123456789ab/qmp.sock,server=on,wait=off",
        "-chardev",
        "socket,id=serial0,path=/var/lib/voidvm/vms/vm-0123456789ab/serial.sock,server=on,wait=off",
        "-serial", "chardev:serial0",
        "-device", "virtio-vga",
        "-vnc", "unix:/var/lib/voidvm/vms/vm-0123456789ab/vnc.sock",
        "-kernel", "/var/lib/voidvm/images/img-aaaaaaaaaaaa/vmlinuz",
        "-initrd", "/var/lib/voidvm/images/img-aaaaaaaaaaaa/initrd.img",
        "-append", "console=ttyS0 quiet panic=-1",
        "-drive",
        "file=/var/lib/voidvm/vms/vm-0123456789ab/disk.qcow2,if=none,id=disk0,format=qcow2,"
        "cache=none,aio=threads,discard=unmap,werror=enospc,rerror=report",
        "-device", "virtio-blk-pci,drive=disk0,bootindex=1",
        # The SSH forward is passt's (its argv: test_guest_network.py), not QEMU's.
        "-netdev", "stream,id=net0,server=off,addr.type=fd,addr.str=7",
        "-device", "virtio-net-pci,netdev=net0,romfile=",
    ]  # fmt: skip


def test_kernel_without_initrd_or_cmdline() -> None:
    media = BootMedia(kernel=IMAGES / "img-aaaaaaaaaaaa/vmlinuz")
    spec = VMSpec("vm-0123456789ab", 1, 256, media, None)
    argv = build_argv(spec, RunPaths(RUN), binary="qemu-system-x86_64", accel="tcg", net_fd=None)
    assert argv == [
        *common(cpu=1, memory=256),
        *sockets(str(RUN), str(RUN)),
        "-kernel", "/var/lib/voidvm/images/img-aaaaaaaaaaaa/vmlinuz",
        *disk(str(RUN)),
        *restricted_net(None),
    ]  # fmt: skip


def test_qcow2_overlay_with_kvm() -> None:
    """A disk image is the overlay's backing file: QEMU only ever opens the VM's own overlay."""
    media = BootMedia(base_disk=IMAGES / "img-bbbbbbbbbbbb/disk.qcow2", base_format="qcow2")
    spec = VMSpec("vm-0123456789ab", 4, 4096, media, 30000)
    argv = build_argv(spec, RunPaths(RUN), binary="/usr/bin/qemu-system-x86_64", accel="kvm", net_fd=5)
    assert argv == [
        "/usr/bin/qemu-system-x86_64",
        *common(accel="kvm", cpu=4, memory=4096)[1:],
        *sockets(str(RUN), str(RUN)),
        *disk(str(RUN)),
        *passt_net(5),
    ]
    assert not any("img-bbbbbbbbbbbb" in arg for arg in argv)
    assert argv[argv.index("-cpu") + 1] == "host"


def test_iso_installer() -> None:
    media = BootMedia(cdrom=IMAGES / "img-cccccccccccc/cd.iso")
    spec = VMSpec("vm-0123456789ab", 2, 2048, media, 22023)
    argv = build_argv(spec, RunPaths(RUN), binary="qemu-system-x86_64", accel="tcg", net_fd=None)
    assert argv == [
        *common(memory=2048),
        *sockets(str(RUN), str(RUN)),
        *disk(str(RUN)),
        "-drive",
        "file=/var/lib/voidvm/images/img-cccccccccccc/cd.iso,if=none,id=cd0,media=cdrom,"
        "readonly=on,format=raw",
        "-device", "ide-cd,drive=cd0,bootindex=2",
        *restricted_net(22023),
    ]  # fmt: skip


def test_a_comma_in_the_data_dir_is_doubled_in_option_values() -> None:
    data = Path("/srv/vm,file=evil")
    run = data / "vms" / "vm-0123456789ab"
    media = BootMedia(cdrom=data / "images/img-cccccccccccc/cd.iso")
    spec = VMSpec("vm-0123456789ab", 2, 1024, media, None)
    argv = build_argv(spec, RunPaths(run), binary="qemu-system-x86_64", accel="tcg", net_fd=3)
    assert argv == [
        *common(),
        "-pidfile", "/srv/vm,file=evil/vms/vm-0123456789ab/qemu.pid",  # a plain path: not escaped
        "-qmp", "unix:/srv/vm,,file=evil/vms/vm-0123456789ab/qmp.sock,server=on,wait=off",
        "-chardev",
        "socket,id=serial0,path=/srv/vm,,file=evil/vms/vm-0123456789ab/serial.sock,server=on,wait=off",
        "-serial", "chardev:serial0",
        "-device", "virtio-vga",
        "-vnc", "unix:/srv/vm,,file=evil/vms/vm-0123456789ab/vnc.sock",
        "-drive",
        "file=/srv/vm,,file=evil/vms/vm-0123456789ab/disk.qcow2,if=none,id=disk0,format=qcow2,"
        "cache=none,aio=threads,discard=unmap,werror=enospc,rerror=report",
        "-device", "virtio-blk-pci,drive=disk0,bootindex=1",
        "-drive",
        "file=/srv/vm,,file=evil/images/img-cccccccccccc/cd.iso,if=none,id=cd0,media=cdrom,"
        "readonly=on,format=raw",
        "-device", "ide-cd,drive=cd0,bootindex=2",
        *passt_net(3),
    ]  # fmt: skip


def test_a_standalone_qemu_runs_at_once_and_logs_its_serial_output_itself() -> None:
    """The benchmarks' bare QEMU: no VoidVM records its console, so it starts the guest without
    waiting (`-S`) and QEMU writes the log itself."""
    media = BootMedia(kernel=IMAGES / "img-aaaaaaaaaaaa/vmlinuz")
    spec = VMSpec("vm-0123456789ab", 1, 256, media, None)
    paths = RunPaths(RUN)
    managed = build_argv(spec, paths, binary="qemu-system-x86_64", accel="tcg", net_fd=None)
    bare = build_argv(spec, paths, binary="qemu-system-x86_64", accel="tcg", net_fd=None, standalone=True)
    serial = f"socket,id=serial0,path={RUN}/serial.sock,server=on,wait=off"
    assert managed[managed.index("-chardev") + 1] == serial
    assert bare[bare.index("-chardev") + 1] == f"{serial},logfile={RUN}/console.log,logappend=on"
    assert "-S" in managed and "-S" not in bare
    assert [arg for arg in managed if arg != "-S" and not arg.startswith("socket,")] == [
        arg for arg in bare if not arg.startswith("socket,")
    ]


def test_qemu_escape() -> None:
    assert qemu_escape("a,b,,c") == "a,,b,,,,c"
    assert qemu_escape("plain") == "plain"


class RecordingDriver(FakeDriver):
    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self.specs: list[VMSpec] = []

    async def start(self, spec: VMSpec) -> int:
        self.specs.append(spec)
        return await super().start(spec)


async def test_name_and_description_never_reach_the_command_line(tmp_path: Path) -> None:
    # The spec carries no user text at all: only ids, numbers and VoidVM's own paths.
    assert {f.name for f in dataclasses.fields(VMSpec)} == {"vm_id", "cpu", "memory_mb", "media", "ssh_port"}
    drivers: list[RecordingDriver] = []

    def factory(settings: Settings, data_dir: Path) -> RecordingDriver:
        drivers.append(RecordingDriver(data_dir))
        return drivers[-1]

    name, description = "Secret-Name_42.vm", "desc,file=/etc/passwd -drive 'x' Secret-Description"
    async with running_api(make_settings(tmp_path), factory, None) as api:
        token = await api.login()
        response = await api.client.post(
            "/api/v1/vms",
            json={"name": name, "description": description, "cpu": 1, "memory": 128, "disk": 1},
            headers=auth(token),
        )
        assert response.status_code == 201, response.text
        vm_id = response.json()["data"]["id"]
        response = await api.client.post(f"/api/v1/vms/{vm_id}/start", headers=auth(token))
        assert response.status_code == 200, response.text

    [spec] = drivers[0].specs
    argv = build_argv(spec, RunPaths(tmp_path / "vms" / vm_id), binary="qemu-system-x86_64", accel="tcg",
                      net_fd=None)  # fmt: skip
    for arg in argv:
        for secret in ("Secret", "passwd", "-drive 'x'", name, description):
            assert secret not in arg, (secret, arg)
    assert f"guest={vm_id},debug-threads=on" in argv
