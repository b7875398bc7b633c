"""Boot the built-in tiny guest under real QEMU (tcg) and drive it over serial and QMP."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from voidvm_server.drivers.qemu.tiny_image import (
    TINY_KERNEL_CMDLINE,
    TinyImageError,
    TinyImageFiles,
    build_tiny_image,
)

pytestmark = pytest.mark.qemu

QEMU = "qemu-system-x86_64"
BOOT_TIMEOUT = 120.0  # tcg on a busy 2-core box; an idle one needs ~4 s
CMD_TIMEOUT = 30.0
POWERDOWN_TIMEOUT = 60.0


class SerialConsole:
    """Line-agnostic reader/writer on QEMU's serial unix socket."""

    def __init__(self, path: Path, deadline: float) -> None:
        while not path.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path} never appeared")
            time.sleep(0.01)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.sock.settimeout(0.2)
        self.buf = b""
        self.first_byte_at: float | None = None

    def read_until(self, needle: bytes, timeout: float, start: int = 0) -> int:
        """Wait until needle appears at or after offset start; return the offset past it."""
        deadline = time.monotonic() + timeout
        while (idx := self.buf.find(needle, start)) < 0:
            if time.monotonic() > deadline:
                tail = self.buf[-2000:].decode(errors="replace")
                raise AssertionError(f"{needle!r} not seen within {timeout}s; console tail:\n{tail}")
            with contextlib.suppress(TimeoutError):
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise AssertionError("serial socket closed")
                if self.first_byte_at is None:
                    self.first_byte_at = time.monotonic()
                self.buf += chunk
        return idx + len(needle)

    def run(self, command: str, timeout: float = CMD_TIMEOUT) -> str:
        """Send a shell command; return what the guest printed until our end marker."""
        start = len(self.buf)
        # The arithmetic makes the marker differ between the echoed input and the output.
        self.sock.sendall(command.encode() + b"; echo END-$((40+2))-MARK\n")
        end = self.read_until(b"END-42-MARK", timeout, start)
        return self.buf[start:end].decode(errors="replace")

    def close(self) -> None:
        self.sock.close()


def qmp_command(path: Path, command: str) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        f = sock.makefile("rwb")

        def reply() -> dict[str, Any]:
            while True:  # skip asynchronous events
                msg: dict[str, Any] = json.loads(f.readline())
                if "return" in msg or "error" in msg or "QMP" in msg:
                    return msg

        assert "QMP" in reply()
        for cmd in ("qmp_capabilities", command):
            f.write(json.dumps({"execute": cmd}).encode() + b"\n")
            f.flush()
            answer = reply()
            assert "return" in answer, answer
        return answer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[Path]:
    # Unix socket paths are limited to 107 bytes; pytest's tmp_path can be long.
    if len(str(tmp_path)) < 80:
        yield tmp_path
    else:
        with tempfile.TemporaryDirectory(prefix="vv-tiny-") as d:
            yield Path(d)


@pytest.fixture
def tiny(tmp_path: Path) -> TinyImageFiles:
    if shutil.which(QEMU) is None or shutil.which("qemu-img") is None:
        pytest.skip(f"{QEMU}/qemu-img not installed (apt: qemu-system-x86 qemu-utils)")
    try:
        return build_tiny_image(tmp_path / "image")
    except TinyImageError as exc:
        pytest.skip(f"cannot build the tiny image on this host: {exc}")


def qemu_command(files: TinyImageFiles, d: Path, port: int) -> list[str]:
    return [
        QEMU, "-name", "guest=vm-test", "-machine", "q35", "-accel", "tcg", "-cpu", "max",
        "-smp", "1", "-m", "256", "-nodefaults", "-no-user-config", "-display", "none",
        "-kernel", str(files.kernel), "-initrd", str(files.initrd),
        "-append", TINY_KERNEL_CMDLINE,
        "-chardev", f"socket,id=serial0,path={d}/serial.sock,server=on,wait=off",
        "-serial", "chardev:serial0",
        "-qmp", f"unix:{d}/qmp.sock,server=on,wait=off",
        "-drive", f"file={d}/disk.qcow2,if=none,id=disk0,format=qcow2,cache=none,aio=threads",
        "-device", "virtio-blk-pci,drive=disk0",
        "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", "virtio-net-pci,netdev=net0",
    ]  # fmt: skip


def test_tiny_guest_boots_works_and_powers_off(tiny: TinyImageFiles, run_dir: Path) -> None:
    assert tiny.kernel.stat().st_size > 1_000_000
    assert tiny.initrd.read_bytes()[:2] == b"\x1f\x8b"  # gzip
    subprocess.run(
        ["qemu-img", "create", "-f", "qcow2", str(run_dir / "disk.qcow2"), "1G"],
        check=True,
        capture_output=True,
    )
    started = time.monotonic()
    qemu_log = (run_dir / "qemu.log").open("wb")
    proc = subprocess.Popen(
        qemu_command(tiny, run_dir, free_port()), stdout=qemu_log, stderr=subprocess.STDOUT
    )
    console: SerialConsole | None = None
    try:
        console = SerialConsole(run_dir / "serial.sock", started + 30)
        booting = console.read_until(b"VoidVM tiny guest booting", BOOT_TIMEOUT)
        console.read_until(b"VoidVM tiny guest ready", BOOT_TIMEOUT, booting)
        ready_at = time.monotonic()
        console.read_until(b"root@voidvm:~# ", CMD_TIMEOUT)
        assert console.first_byte_at is not None
        print(f"first serial byte {console.first_byte_at - started:.2f}s, ready {ready_at - started:.2f}s")

        assert "MARKER-42" in console.run("echo MARKER-$((6*7))")
        out = console.run("mkfs.ext2 /dev/vda && mount /dev/vda /mnt && echo ok > /mnt/f && cat /mnt/f")
        assert re.search(r"^ok\r?$", out, re.MULTILINE), out
        assert "inet 10.0.2.15/" in console.run("ip addr show eth0")
        assert "nameserver 10.0.2.3" in console.run("cat /etc/resolv.conf")
        assert "default via 10.0.2.2" in console.run("ip route")
        # Job control: the shell owns ttyS0 as its controlling terminal.
        jobs = console.run("sleep 30 & jobs; kill %1")
        assert "[1]" in jobs and "job control turned off" not in console.buf.decode(errors="replace")

        t0 = time.monotonic()
        qmp_command(run_dir / "qmp.sock", "system_powerdown")
        try:
            proc.wait(timeout=POWERDOWN_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"guest ignored system_powerdown for {POWERDOWN_TIMEOUT}s")
        print(f"powered off {time.monotonic() - t0:.2f}s after system_powerdown")
        assert proc.returncode == 0
        with contextlib.suppress(AssertionError):  # the socket may close before we read it all
            console.read_until(b"reboot: Power down", 2)
        assert b"power button pressed" in console.buf
    finally:
        if console is not None:
            console.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        qemu_log.close()
