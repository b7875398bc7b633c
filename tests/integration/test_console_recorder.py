"""The QEMU driver records a VM's console from the guest's very first byte (real QEMU, no server).

QEMU starts paused (`-S`) and runs the guest only once the driver holds its serial console, so
the saved log begins where a bare QEMU's own `logfile=` begins. A QEMU left paused that way (the
server died between the spawn and the continue) runs when a restarted server re-attaches.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.conftest import BOOT_TIMEOUT, BOOTING_LINE, poll, wait_gone
from voidvm_server.drivers.base import BootMedia, VMSpec
from voidvm_server.drivers.qemu.cmdline import RunPaths, build_argv
from voidvm_server.drivers.qemu.driver import QemuDriver
from voidvm_server.drivers.qemu.process import spawn_daemonized
from voidvm_server.drivers.qemu.tiny_image import TINY_KERNEL_CMDLINE

pytestmark = pytest.mark.qemu


@pytest.fixture
async def driver(tmp_path: Path) -> AsyncIterator[QemuDriver]:
    qemu = QemuDriver(tmp_path / "data", accel="tcg")
    try:
        yield qemu
    finally:
        for vm_id in qemu.known_run_dirs():
            await qemu.kill(vm_id)
        # Let the exits' own clean-up (QMP, console) finish rather than be cut short by close().
        await asyncio.gather(*qemu._tasks, return_exceptions=True)
        await qemu.close()


def tiny_spec(vm_id: str, tiny: tuple[Path, Path]) -> VMSpec:
    media = BootMedia(kernel=tiny[0], initrd=tiny[1], kernel_cmdline=TINY_KERNEL_CMDLINE)
    return VMSpec(vm_id, 1, 256, media, None)


async def spawn(spec: VMSpec, run_dir: Path, *, standalone: bool) -> int:
    paths = RunPaths(run_dir)
    argv = build_argv(
        spec, paths, binary="qemu-system-x86_64", accel="tcg", net_fd=None, standalone=standalone
    )
    old_umask = os.umask(0o077)
    try:
        return await spawn_daemonized(argv, paths.pidfile, timeout=60)
    finally:
        os.umask(old_umask)


async def logged(path: Path, needle: bytes) -> bytes:
    async def seen() -> bytes | None:
        data = path.read_bytes() if path.exists() else b""
        return data if needle in data else None

    return await poll(seen, timeout=BOOT_TIMEOUT, interval=0.1, what=f"{needle!r} in {path}")


async def test_the_saved_log_begins_with_the_guests_first_byte(
    driver: QemuDriver, tiny_image: tuple[Path, Path], tmp_path: Path
) -> None:
    spec = tiny_spec("vm-0000000000a1", tiny_image)
    await driver.prepare_disk(spec.vm_id, spec.media, 1)
    bare_dir = tmp_path / "bare"
    bare_dir.mkdir()
    (bare_dir / "disk.qcow2").write_bytes((driver.run_dir(spec.vm_id) / "disk.qcow2").read_bytes())
    bare_pid = await spawn(spec, bare_dir, standalone=True)  # QEMU logs everything itself
    try:
        await driver.start(spec)
        recorded = await logged(driver.console_log(spec.vm_id), BOOTING_LINE.encode())
        bare = await logged(RunPaths(bare_dir).console_log, BOOTING_LINE.encode())
    finally:
        os.kill(bare_pid, signal.SIGKILL)
        await wait_gone(bare_pid)
    first_line = bare.split(b"\n", 1)[0]
    assert first_line and recorded.startswith(first_line), (recorded[:200], bare[:200])


async def test_a_qemu_left_before_its_guest_ran_runs_when_reattached(
    driver: QemuDriver, tiny_image: tuple[Path, Path]
) -> None:
    spec = tiny_spec("vm-0000000000a2", tiny_image)
    await driver.prepare_disk(spec.vm_id, spec.media, 1)
    run_dir = driver.run_dir(spec.vm_id)
    pid = await spawn(spec, run_dir, standalone=False)  # as a start the server did not finish
    assert not driver.console_log(spec.vm_id).exists()  # nothing ran, nothing recorded
    assert await driver.attach(spec.vm_id) == pid
    await logged(driver.console_log(spec.vm_id), BOOTING_LINE.encode())
    assert await driver.query_status(spec.vm_id) == "running"
