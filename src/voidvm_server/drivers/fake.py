"""FakeDriver: an in-memory hypervisor for fast unit tests. Never used by end-to-end tests."""

from __future__ import annotations

import itertools
from pathlib import Path

from voidvm_server.drivers.base import (
    BootMedia,
    ConsoleHandler,
    ExitHandler,
    PauseHandler,
    VMSpec,
    VMStats,
)
from voidvm_server.drivers.console_log import ConsoleLimits, RotatingLog, start_new_log
from voidvm_server.errors import DriverError, InvalidStateError


class FakeDriver:
    accel = "fake"

    def __init__(self, data_dir: Path, console: ConsoleLimits | None = None) -> None:
        self.root = data_dir / "vms"
        self.console_limits = console or ConsoleLimits()
        self.disks: dict[str, int] = {}
        self.running: dict[str, str] = {}  # vm_id -> "running" | "paused"
        self.fail_next_start: str | None = None
        self.deaf_to_power_button: set[str] = set()  # guests that never answer ACPI (still booting)
        self.console_input: dict[str, bytes] = {}
        self._recent: dict[str, bytes] = {}
        self._logs: dict[str, RotatingLog] = {}
        self._pids = itertools.count(10_000)
        self._on_exit: ExitHandler = lambda vm_id, pid, clean, reason: None
        self.pids: dict[str, int] = {}  # the running VMs' pids
        self._on_pause: PauseHandler = lambda vm_id, reason: None
        self._on_console: ConsoleHandler = lambda vm_id, data: None

    def set_exit_handler(self, handler: ExitHandler) -> None:
        self._on_exit = handler

    def set_pause_handler(self, handler: PauseHandler) -> None:
        self._on_pause = handler

    def set_console_handler(self, handler: ConsoleHandler) -> None:
        self._on_console = handler

    async def prepare_disk(self, vm_id: str, media: BootMedia, size_gb: int) -> None:
        self.disks[vm_id] = size_gb

    def has_disk(self, vm_id: str) -> bool:
        return vm_id in self.disks

    async def grow_disk(self, vm_id: str, size_gb: int) -> None:
        self.disks[vm_id] = size_gb

    def disk_allocated_bytes(self, vm_id: str) -> int | None:
        return 196_608 if vm_id in self.disks else None  # what an empty qcow2 takes

    async def destroy(self, vm_id: str) -> None:
        self.disks.pop(vm_id, None)

    async def start(self, spec: VMSpec) -> int:
        if self.fail_next_start:
            message, self.fail_next_start = self.fail_next_start, None
            raise DriverError(message)
        self.running[spec.vm_id] = "running"
        pid = self.pids[spec.vm_id] = next(self._pids)
        self._recent[spec.vm_id] = b""
        old = self._logs.pop(spec.vm_id, None)
        if old is not None:
            old.close()
        start_new_log(self.console_log(spec.vm_id))
        return pid

    async def attach(self, vm_id: str) -> int | None:
        return None

    def is_running(self, vm_id: str) -> bool:
        return vm_id in self.running

    def crash(self, vm_id: str) -> None:
        """Simulate QEMU dying on its own."""
        self.running.pop(vm_id, None)
        self._on_exit(vm_id, self.pids.pop(vm_id, 0), False, "the QEMU process exited unexpectedly")

    def pause_on_its_own(self, vm_id: str, reason: str) -> None:
        """Simulate QEMU pausing the guest itself (a disk write found the host's disk full)."""
        self._need(vm_id)
        self.running[vm_id] = "paused"
        self._on_pause(vm_id, reason)

    def guest_prints(self, vm_id: str, data: bytes) -> None:
        """Simulate serial output: saved to the rotating log, kept for replay, handed on."""
        self._need(vm_id)
        self._recent[vm_id] = (self._recent[vm_id] + data)[-self.console_limits.replay_bytes :]
        self._on_console(vm_id, data)
        saved = self._logs.get(vm_id)
        if saved is None:
            self.run_dir(vm_id).mkdir(parents=True, exist_ok=True)
            saved = self._logs[vm_id] = RotatingLog(
                self.console_log(vm_id), self.console_limits.log_max_bytes
            )
        saved.append(data)

    def _need(self, vm_id: str) -> None:
        if vm_id not in self.running:
            raise InvalidStateError("The VM is not running", code="VM_NOT_RUNNING", current="stopped")

    async def powerdown(self, vm_id: str) -> None:
        self._need(vm_id)
        if vm_id in self.deaf_to_power_button:
            return  # pressed; nobody in the guest handles it
        self.running.pop(vm_id)
        self._on_exit(vm_id, self.pids.pop(vm_id, 0), True, "powered off")

    async def kill(self, vm_id: str) -> None:
        if self.running.pop(vm_id, None) is not None:
            self._on_exit(vm_id, self.pids.pop(vm_id, 0), True, "powered off")

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

    def console_recent(self, vm_id: str) -> bytes:
        return self._recent.get(vm_id, b"") if vm_id in self.running else b""

    async def console_write(self, vm_id: str, data: bytes) -> None:
        self._need(vm_id)
        self.console_input[vm_id] = self.console_input.get(vm_id, b"") + data

    def run_dir(self, vm_id: str) -> Path:
        return self.root / vm_id

    def vnc_socket(self, vm_id: str) -> Path:
        return self.run_dir(vm_id) / "vnc.sock"

    def console_log(self, vm_id: str) -> Path:
        return self.run_dir(vm_id) / "console.log"

    def known_run_dirs(self) -> list[str]:
        return sorted(self.disks)

    async def close(self) -> None:
        self.running.clear()
        for saved in self._logs.values():
            saved.close()
        self._logs.clear()
