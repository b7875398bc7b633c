"""FakeDriver: an in-memory hypervisor for fast unit tests. Never used by end-to-end tests."""

from __future__ import annotations

import itertools
from pathlib import Path

from voidvm_server.drivers.base import BootMedia, ExitHandler, VMSpec, VMStats
from voidvm_server.errors import DriverError, InvalidStateError


class FakeDriver:
    accel = "fake"

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "vms"
        self.disks: dict[str, int] = {}
        self.running: dict[str, str] = {}  # vm_id -> "running" | "paused"
        self.fail_next_start: str | None = None
        self._pids = itertools.count(10_000)
        self._on_exit: ExitHandler = lambda vm_id, clean, reason: None

    def set_exit_handler(self, handler: ExitHandler) -> None:
        self._on_exit = handler

    async def prepare_disk(self, vm_id: str, media: BootMedia, size_gb: int) -> None:
        self.disks[vm_id] = size_gb

    def has_disk(self, vm_id: str) -> bool:
        return vm_id in self.disks

    async def grow_disk(self, vm_id: str, size_gb: int) -> None:
        self.disks[vm_id] = size_gb

    async def destroy(self, vm_id: str) -> None:
        self.disks.pop(vm_id, None)

    async def start(self, spec: VMSpec) -> int:
        if self.fail_next_start:
            message, self.fail_next_start = self.fail_next_start, None
            raise DriverError(message)
        self.running[spec.vm_id] = "running"
        return next(self._pids)

    async def attach(self, vm_id: str) -> int | None:
        return None

    def is_running(self, vm_id: str) -> bool:
        return vm_id in self.running

    def crash(self, vm_id: str) -> None:
        """Simulate QEMU dying on its own."""
        self.running.pop(vm_id, None)
        self._on_exit(vm_id, False, "the QEMU process exited unexpectedly")

    def _need(self, vm_id: str) -> None:
        if vm_id not in self.running:
            raise InvalidStateError("The VM is not running", code="VM_NOT_RUNNING", current="stopped")

    async def powerdown(self, vm_id: str) -> None:
        self._need(vm_id)
        self.running.pop(vm_id)
        self._on_exit(vm_id, True, "powered off")

    async def kill(self, vm_id: str) -> None:
        if self.running.pop(vm_id, None) is not None:
            self._on_exit(vm_id, True, "powered off")

    async def wait_exit(self, vm_id: str, timeout: float) -> bool:
        return vm_id not in self.running

    async def pause(self, vm_id: str) -> None:
        self._need(vm_id)
        self.running[vm_id] = "paused"

    async def resume(self, vm_id: str) -> None:
        self._need(vm_id)
        self.running[vm_id] = "running"

    async def reset(self, vm_id: str) -> None:
        self._need(vm_id)

    async def query_status(self, vm_id: str) -> str:
        return self.running.get(vm_id, "shutdown")

    async def stats(self, vm_id: str) -> VMStats:
        self._need(vm_id)
        return VMStats(1.0, 64.0, 0, 0, None, None, 1.0)

    def run_dir(self, vm_id: str) -> Path:
        return self.root / vm_id

    def serial_socket(self, vm_id: str) -> Path:
        return self.run_dir(vm_id) / "serial.sock"

    def vnc_socket(self, vm_id: str) -> Path:
        return self.run_dir(vm_id) / "vnc.sock"

    def console_log(self, vm_id: str) -> Path:
        return self.run_dir(vm_id) / "console.log"

    def known_run_dirs(self) -> list[str]:
        return sorted(self.disks)

    async def close(self) -> None:
        self.running.clear()
